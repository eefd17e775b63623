package trust

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

// ExplainInput is what `crivm trust explain` judges.
type ExplainInput struct {
	// Pod is a PodSandboxConfig as JSON, as in crictl's pod-config.json.
	Pod []byte
	// RuntimeHandler is the RuntimeClass handler the kubelet would send.
	RuntimeHandler string
	// Images are checked as CreateContainer would check them.
	Images []string
	// Container, optional, is a ContainerConfig as JSON, as in crictl's
	// container-config.json: its image is checked too, and its hostPath
	// mounts and devices are judged by the mount policy, on this host.
	Container []byte
}

// Explain classifies the pod in in.Pod as RunPodSandbox would, then checks
// each image as CreateContainer would, and the container's mounts and
// devices as the mount policy would, and prints the outcome to w. It
// returns the first refusal.
func Explain(w io.Writer, cfg *configs.Config, policy *Policy, in ExplainInput) error {
	var pod runtimeapi.PodSandboxConfig
	if err := protojson.Unmarshal(in.Pod, &pod); err != nil {
		return errdefs.InvalidArgument("parsing pod config: %w", err)
	}
	var ctr *runtimeapi.ContainerConfig
	images := in.Images
	if in.Container != nil {
		ctr = &runtimeapi.ContainerConfig{}
		if err := protojson.Unmarshal(in.Container, ctr); err != nil {
			return errdefs.InvalidArgument("parsing container config: %w", err)
		}
		img := ctr.GetImage().GetUserSpecifiedImage()
		if img == "" {
			img = ctr.GetImage().GetImage()
		}
		if img != "" && !slices.Contains(images, img) {
			images = append(slices.Clone(images), img)
		}
	}
	c := New(cfg, policy)
	pin := PodInputFromConfig(&pod, in.RuntimeHandler)
	fmt.Fprintf(w, "pod:      %s/%s\n", pin.Namespace, pin.Name)
	if in.RuntimeHandler != "" {
		fmt.Fprintf(w, "asked:    runtime handler %s\n", in.RuntimeHandler)
	}
	v, err := c.Classify(pin)
	if err != nil {
		fmt.Fprintf(w, "refused:  %v (%s)\n", err, errdefs.Code(err))
		return err
	}
	fmt.Fprintf(w, "handler:  %s (%s)\n", v.Handler, v.HandlerType)
	fmt.Fprintf(w, "trusted:  %t\n", v.Trusted)
	rule := v.Rule
	if rule == "" {
		rule = "(none)"
	}
	fmt.Fprintf(w, "rule:     %s\n", rule)
	fmt.Fprintf(w, "reasons:\n  - %s\n", strings.Join(v.Reasons, "\n  - "))
	var first error
	for _, img := range images {
		ci := pin
		ci.Images = []string{img}
		j, err := c.checkImage(v, ci, img)
		if err != nil {
			fmt.Fprintf(w, "image %s: refused: %v (%s)\n", strconv.Quote(img), err, errdefs.Code(err))
			if first == nil {
				first = err
			}
			continue
		}
		fmt.Fprintf(w, "image %s: admitted, trusted %t (%s)\n", strconv.Quote(img), j.trusted, strings.Join(j.reasons, "; "))
	}
	if ctr == nil {
		return first
	}
	if err := explainMounts(w, c, v, pin, ctr); err != nil && first == nil {
		first = err
	}
	return first
}

// explainMounts prints the mount policy's decision for each hostPath mount
// and device of ctr, and returns the first refusal.
func explainMounts(w io.Writer, c *Classifier, v Verdict, in PodInput, ctr *runtimeapi.ContainerConfig) error {
	name := ctr.GetMetadata().GetName()
	if name == "" {
		name = "(unnamed)"
	}
	fmt.Fprintf(w, "container %s:\n", strconv.Quote(name))
	n := len(ctr.GetMounts()) + len(ctr.GetDevices())
	if n == 0 {
		fmt.Fprintf(w, "  no hostPath mounts or devices\n")
		return nil
	}
	if v.Trusted {
		fmt.Fprintf(w, "  %d hostPath mounts and devices: not restricted (the mount policy applies to untrusted pods only)\n", n)
		return nil
	}
	ds := c.JudgeMounts(v, in, ctr.GetMounts(), ctr.GetDevices())
	defer CloseDecisions(ds)
	var first error
	for _, d := range ds {
		kind := "mount "
		if d.Device {
			kind = "device"
		}
		resolved := ""
		if d.Resolved != "" && d.Resolved != d.HostPath {
			resolved = " -> " + strconv.Quote(d.Resolved)
		}
		if d.Err == nil {
			fmt.Fprintf(w, "  %s %s%s: allowed by %s\n", kind, strconv.Quote(d.HostPath), resolved, d.Rule)
			continue
		}
		fmt.Fprintf(w, "  %s %s%s: refused: %v (%s)\n", kind, strconv.Quote(d.HostPath), resolved, d.Err, errdefs.Code(d.Err))
		if first == nil {
			first = d.Err
		}
	}
	return first
}

// CheckPolicy loads the policy at path against cfg and returns its number of
// rules.
func CheckPolicy(path string, cfg *configs.Config) (int, error) {
	p, err := LoadPolicy(path, cfg)
	if err != nil {
		return 0, err
	}
	return p.Len(), nil
}

package trust

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/errdefs"
)

// Explain classifies the pod in podJSON (a PodSandboxConfig as in crictl's
// pod-config.json) as RunPodSandbox would, then checks each of images as
// CreateContainer would, and prints the outcome to w. It returns the first
// refusal.
func Explain(w io.Writer, cfg *configs.Config, policy *Policy, podJSON []byte, runtimeHandler string, images []string) error {
	var pod runtimeapi.PodSandboxConfig
	if err := protojson.Unmarshal(podJSON, &pod); err != nil {
		return errdefs.InvalidArgument("parsing pod config: %w", err)
	}
	c := New(cfg, policy)
	in := PodInputFromConfig(&pod, runtimeHandler)
	fmt.Fprintf(w, "pod:      %s/%s\n", in.Namespace, in.Name)
	if runtimeHandler != "" {
		fmt.Fprintf(w, "asked:    runtime handler %s\n", runtimeHandler)
	}
	v, err := c.Classify(in)
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
		ci := in
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

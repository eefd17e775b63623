package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/trust"
)

// stringList collects a repeated flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// runTrust implements `crivm trust explain` and `crivm trust check-policy`.
func runTrust(g globalFlags, args []string, stdout, stderr io.Writer) error {
	usage := func() error {
		fmt.Fprintln(stderr, "usage: crivm [--config F] trust explain --pod pod.json [--container container.json] [--handler NAME] [--image REF]...\n       crivm [--config F] trust check-policy FILE|DIR")
		return errUsage
	}
	if len(args) == 0 {
		return usage()
	}
	loaded, err := configs.Load(g.loadOptions())
	if err != nil {
		return err
	}
	cfg := loaded.Config
	switch args[0] {
	case "explain":
		fs := flag.NewFlagSet("crivm trust explain", flag.ContinueOnError)
		fs.SetOutput(stderr)
		pod := fs.String("pod", "", "PodSandboxConfig JSON, as crictl's pod-config.json")
		handler := fs.String("handler", "", "the RuntimeClass handler the kubelet would send")
		policy := fs.String("policy", "", "policy file or dir (default: trust_policy from the config)")
		ctr := fs.String("container", "", "ContainerConfig JSON, as crictl's container-config.json: its image is checked and its hostPath mounts and devices judged by the mount policy, on this host")
		var images stringList
		fs.Var(&images, "image", "a container image to check as CreateContainer would (repeatable)")
		if err := fs.Parse(args[1:]); err != nil || *pod == "" {
			return usage()
		}
		data, err := os.ReadFile(*pod)
		if err != nil {
			return fmt.Errorf("reading pod config: %w", err)
		}
		var ctrData []byte
		if *ctr != "" {
			if ctrData, err = os.ReadFile(*ctr); err != nil {
				return fmt.Errorf("reading container config: %w", err)
			}
		}
		path := cfg.Runtime.TrustPolicy
		if *policy != "" {
			path = *policy
		}
		p, err := trust.LoadPolicy(path, cfg)
		if err != nil {
			return err
		}
		if err := trust.Explain(stdout, cfg, p, trust.ExplainInput{Pod: data, RuntimeHandler: *handler, Images: images, Container: ctrData}); err != nil {
			if *ctr != "" {
				return errors.New("the pod or its container would be refused")
			}
			return errors.New("the pod would be refused")
		}
		return nil
	case "check-policy":
		if len(args) != 2 {
			return usage()
		}
		n, err := trust.CheckPolicy(args[1], cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok, %d rules\n", args[1], n)
		return nil
	}
	return usage()
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func runVersion(ctx context.Context, c *cli, args []string) error {
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	v, err := rs.Version(ctx, "v1")
	if err != nil {
		return fmt.Errorf("version: %w", err)
	}
	if c.output == "json" {
		return c.printJSON(v)
	}
	fmt.Fprintf(c.stdout, "Version:  %s\nRuntimeName:  %s\nRuntimeVersion:  %s\nRuntimeApiVersion:  %s\n",
		v.Version, v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
	return nil
}

func runInfo(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	verbose := fs.Bool("v", false, "include the runtime's effective config")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	st, err := rs.Status(ctx, *verbose)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	// crictl info prints {"status": ..., <info keys>: ...} as JSON always.
	out := map[string]any{}
	var status any
	if b, err := json.Marshal(st.GetStatus()); err == nil {
		_ = json.Unmarshal(b, &status)
	}
	out["status"] = status
	out["runtimeHandlers"] = st.GetRuntimeHandlers()
	for k, v := range st.GetInfo() {
		var parsed any
		if json.Unmarshal([]byte(v), &parsed) == nil {
			out[k] = parsed
		} else {
			out[k] = v
		}
	}
	return c.printAnyJSON(out)
}

func runPods(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("pods", flag.ContinueOnError)
	name := fs.String("name", "", "filter by pod name (substring)")
	ns := fs.String("namespace", "", "filter by namespace")
	state := fs.String("state", "", "ready or notready")
	quiet := fs.Bool("q", false, "print only pod IDs")
	labels := labelFlags{}
	fs.Var(labels, "label", "filter by label key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	filter := &runtimeapi.PodSandboxFilter{LabelSelector: labels}
	switch strings.ToLower(*state) {
	case "":
	case "ready":
		filter.State = &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}
	case "notready":
		filter.State = &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}
	default:
		return fmt.Errorf("--state %q: want ready or notready", *state)
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	pods, err := rs.ListPodSandbox(ctx, filter)
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	var kept []*runtimeapi.PodSandbox
	for _, p := range pods {
		if (*name == "" || strings.Contains(p.GetMetadata().GetName(), *name)) &&
			(*ns == "" || p.GetMetadata().GetNamespace() == *ns) {
			kept = append(kept, p)
		}
	}
	switch {
	case *quiet:
		for _, p := range kept {
			fmt.Fprintln(c.stdout, p.Id)
		}
		return nil
	case c.output == "json":
		return c.printJSON(&runtimeapi.ListPodSandboxResponse{Items: kept})
	}
	w := c.table("POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME")
	for _, p := range kept {
		m := p.GetMetadata()
		rt := p.RuntimeHandler
		if rt == "" {
			rt = "(default)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", truncID(p.Id), ago(p.CreatedAt),
			strings.TrimPrefix(p.State.String(), "SANDBOX_"), m.GetName(), m.GetNamespace(), m.GetAttempt(), rt)
	}
	return w.Flush()
}

func runPs(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	all := fs.Bool("a", false, "show all containers, not only running ones")
	pod := fs.String("pod", "", "filter by pod sandbox ID")
	state := fs.String("state", "", "created, running, exited or unknown")
	quiet := fs.Bool("q", false, "print only container IDs")
	labels := labelFlags{}
	fs.Var(labels, "label", "filter by label key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	filter := &runtimeapi.ContainerFilter{PodSandboxId: *pod, LabelSelector: labels}
	switch s := strings.ToUpper(*state); {
	case s != "":
		v, ok := runtimeapi.ContainerState_value["CONTAINER_"+s]
		if !ok {
			return fmt.Errorf("--state %q: want created, running, exited or unknown", *state)
		}
		filter.State = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState(v)}
	case !*all:
		filter.State = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	ctrs, err := rs.ListContainers(ctx, filter)
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	switch {
	case *quiet:
		for _, ct := range ctrs {
			fmt.Fprintln(c.stdout, ct.Id)
		}
		return nil
	case c.output == "json":
		return c.printJSON(&runtimeapi.ListContainersResponse{Containers: ctrs})
	}
	w := c.table("CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID")
	for _, ct := range ctrs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", truncID(ct.Id), ct.GetImage().GetImage(), ago(ct.CreatedAt),
			strings.TrimPrefix(ct.State.String(), "CONTAINER_"), ct.GetMetadata().GetName(), ct.GetMetadata().GetAttempt(), truncID(ct.PodSandboxId))
	}
	return w.Flush()
}

func runRunp(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("runp", flag.ContinueOnError)
	handler := fs.String("runtime", "", "RuntimeClass handler (empty: let the trust classifier choose)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(c.stderr, "usage: crivmctl runp [--runtime H] pod-config.json")
		return errUsage
	}
	var cfg runtimeapi.PodSandboxConfig
	if err := readProtoJSON(fs.Arg(0), &cfg); err != nil {
		return err
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	id, err := rs.RunPodSandbox(ctx, &cfg, *handler)
	if err != nil {
		return fmt.Errorf("running pod sandbox: %w", err)
	}
	fmt.Fprintln(c.stdout, id)
	return nil
}

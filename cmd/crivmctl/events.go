package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runEvents follows GetContainerEvents until interrupted.
func runEvents(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	ch := make(chan *runtimeapi.ContainerEventResponse, 64)
	errc := make(chan error, 1)
	go func() { errc <- rs.GetContainerEvents(ctx, ch, nil) }()
	if c.output != "json" {
		fmt.Fprintf(c.stdout, "%-30s  %-26s  %-13s  %s\n", "TIME", "EVENT", "ID", "POD")
	}
	for {
		select {
		case ev := <-ch:
			if c.output == "json" {
				b, err := protojson.Marshal(ev)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.stdout, string(b))
				continue
			}
			md := ev.GetPodSandboxStatus().GetMetadata()
			fmt.Fprintf(c.stdout, "%-30s  %-26s  %-13s  %s/%s\n", time.Unix(0, ev.CreatedAt).Format(time.RFC3339Nano),
				strings.TrimSuffix(ev.ContainerEventType.String(), "_EVENT"), truncID(ev.ContainerId), md.GetNamespace(), md.GetName())
		case err := <-errc:
			return fmt.Errorf("event stream: %w", err)
		}
	}
}

// runStatsp lists pod stats.
func runStatsp(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("statsp", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	stats, err := rs.ListPodSandboxStats(ctx, &runtimeapi.PodSandboxStatsFilter{})
	if err != nil {
		return fmt.Errorf("listing pod stats: %w", err)
	}
	if c.output == "json" {
		return c.printJSON(&runtimeapi.ListPodSandboxStatsResponse{Stats: stats})
	}
	w := c.table("POD", "NAME", "CPU NS", "MEM", "RX", "TX")
	for _, s := range stats {
		l := s.GetLinux()
		n := l.GetNetwork().GetDefaultInterface()
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", truncID(s.GetAttributes().GetId()), s.GetAttributes().GetMetadata().GetName(),
			l.GetCpu().GetUsageCoreNanoSeconds().GetValue(), humanSize(l.GetMemory().GetWorkingSetBytes().GetValue()),
			humanSize(n.GetRxBytes().GetValue()), humanSize(n.GetTxBytes().GetValue()))
	}
	return w.Flush()
}

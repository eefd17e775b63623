package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"
)

func (c *cli) images(ctx context.Context) (internalapi.ImageManagerService, error) {
	is, err := criclient.NewRemoteImageServiceBuilder().
		WithEndpoint(c.endpoint).
		WithConnectionTimeout(c.timeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", c.endpoint, err)
	}
	return is, nil
}

func runPull(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	creds := fs.String("creds", "", "USER:PASSWORD for the registry")
	ref, err := oneArg(fs, args, "pull [--creds USER:PASS] IMAGE", c)
	if err != nil {
		return err
	}
	var auth *runtimeapi.AuthConfig
	if *creds != "" {
		u, p, _ := strings.Cut(*creds, ":")
		auth = &runtimeapi.AuthConfig{Username: u, Password: p}
	}
	is, err := c.images(ctx)
	if err != nil {
		return err
	}
	id, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, auth, nil)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	fmt.Fprintf(c.stdout, "Image is up to date for %s\n", id)
	return nil
}

func runImages(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	quiet := fs.Bool("q", false, "print only image IDs")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	is, err := c.images(ctx)
	if err != nil {
		return err
	}
	var filter *runtimeapi.ImageFilter
	if fs.NArg() == 1 {
		filter = &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: fs.Arg(0)}}
	}
	imgs, err := is.ListImages(ctx, filter)
	if err != nil {
		return fmt.Errorf("listing images: %w", err)
	}
	switch {
	case *quiet:
		for _, i := range imgs {
			fmt.Fprintln(c.stdout, i.Id)
		}
		return nil
	case c.output == "json":
		return c.printJSON(&runtimeapi.ListImagesResponse{Images: imgs})
	}
	w := c.table("IMAGE", "TAG", "IMAGE ID", "SIZE")
	for _, i := range imgs {
		tags := i.RepoTags
		if len(tags) == 0 {
			tags = []string{"<none>:<none>"}
		}
		for _, t := range tags {
			repo, tag := t, "<none>"
			if k := strings.LastIndex(t, ":"); k > strings.LastIndex(t, "/") {
				repo, tag = t[:k], t[k+1:]
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", repo, tag, truncID(i.Id), humanSize(i.Size))
		}
	}
	return w.Flush()
}

func humanSize(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fkB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

var runRmi = idVerb("rmi", func(ctx context.Context, c *cli, ref string) error {
	is, err := c.images(ctx)
	if err != nil {
		return err
	}
	return is.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref})
})

func runStats(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	pod := fs.String("pod", "", "only containers of this pod")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	stats, err := rs.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{PodSandboxId: *pod})
	if err != nil {
		return fmt.Errorf("listing stats: %w", err)
	}
	if c.output == "json" {
		return c.printJSON(&runtimeapi.ListContainerStatsResponse{Stats: stats})
	}
	w := c.table("CONTAINER", "NAME", "CPU NS", "MEM", "DISK")
	for _, s := range stats {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", truncID(s.GetAttributes().GetId()), s.GetAttributes().GetMetadata().GetName(),
			s.GetCpu().GetUsageCoreNanoSeconds().GetValue(), humanSize(s.GetMemory().GetWorkingSetBytes().GetValue()),
			humanSize(s.GetWritableLayer().GetUsedBytes().GetValue()))
	}
	return w.Flush()
}

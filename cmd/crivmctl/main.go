// Command crivmctl is a crictl-style client for crivm (or any CRI runtime),
// built on k8s.io/cri-client, the kubelet's own client.
//
//	crivmctl [--runtime-endpoint EP] [--timeout D] [-o table|json] VERB [args]
//
// Verbs: version, info, pods, ps, runp, create, run, start, stop, rm,
// stopp, rmp, inspect, inspectp, exec, logs, stats, statsp, events, pull,
// images, rmi.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/klog/v2"
)

const defaultEndpoint = "unix:///run/crivm/crivm.sock"

// cli carries the global flags to the verbs.
type cli struct {
	endpoint string
	timeout  time.Duration
	output   string
	stdout   io.Writer
	stderr   io.Writer
}

type verb struct {
	name, usage string
	run         func(ctx context.Context, c *cli, args []string) error
}

// longVerbs may outlast --timeout (pulls, pod starts, streams, log follows);
// the timeout then bounds only the connection.
var longVerbs = map[string]bool{"pull": true, "run": true, "runp": true, "exec": true, "logs": true, "events": true}

var verbs = []verb{
	{"version", "print the runtime's name and version", runVersion},
	{"info", "print the runtime's status conditions and, with -v, its config", runInfo},
	{"pods", "list pod sandboxes [--name N] [--namespace NS] [--state ready|notready] [--label k=v] [-q]", runPods},
	{"ps", "list containers [-a] [--pod ID] [--state S] [--label k=v] [-q]", runPs},
	{"runp", "run a pod sandbox from a pod-config.json [--runtime HANDLER]", runRunp},
	{"create", "create a container: POD-ID container-config.json pod-config.json", runCreate},
	{"run", "run a pod and start a container in it: container-config.json pod-config.json", runRun},
	{"start", "start containers", runStart},
	{"stop", "stop containers (10s grace)", runStop},
	{"rm", "remove containers", runRm},
	{"stopp", "stop pod sandboxes", runStopp},
	{"rmp", "remove pod sandboxes", runRmp},
	{"inspect", "a container's verbose status", runInspect},
	{"inspectp", "a pod's verbose status", runInspectp},
	{"exec", "run a command in a container [-i] [-t]", runExec},
	{"logs", "print a container's log [-f]", runLogs},
	{"stats", "container resource usage [--pod ID]", runStats},
	{"statsp", "pod resource usage, with network counters", runStatsp},
	{"events", "follow container and pod events", runEvents},
	{"pull", "pull an image [--creds USER:PASS]", runPull},
	{"images", "list images [-q] [IMAGE]", runImages},
	{"rmi", "remove images", runRmi},
}

var errUsage = errors.New("usage")

func main() {
	quietKlog()
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var code exitCodeError
		if errors.As(err, &code) {
			os.Exit(int(code))
		}
		if !errors.Is(err, errUsage) {
			fmt.Fprintf(os.Stderr, "crivmctl: %v\n", err)
			os.Exit(1)
		}
		os.Exit(2)
	}
}

// quietKlog silences the client library's own error lines: crivmctl reports
// every failure itself.
func quietKlog() {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
}

func run(args []string, stdout, stderr io.Writer) error {
	c := &cli{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("crivmctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ep := os.Getenv("CONTAINER_RUNTIME_ENDPOINT")
	if ep == "" {
		ep = defaultEndpoint
	}
	fs.StringVar(&c.endpoint, "runtime-endpoint", ep, "CRI endpoint (env CONTAINER_RUNTIME_ENDPOINT)")
	fs.StringVar(&c.endpoint, "r", ep, "shorthand for --runtime-endpoint")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-call timeout")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: crivmctl [flags] VERB [args]\n\nverbs:\n")
		for _, v := range verbs {
			fmt.Fprintf(stderr, "  %-8s %s\n", v.name, v.usage)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if c.output != "table" && c.output != "json" {
		fmt.Fprintf(stderr, "crivmctl: -o %q: want table or json\n", c.output)
		return errUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	for _, v := range verbs {
		if v.name == fs.Arg(0) {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if !longVerbs[v.name] {
				ctx, cancel = context.WithTimeout(ctx, c.timeout)
			}
			defer cancel()
			return v.run(ctx, c, fs.Args()[1:])
		}
	}
	fmt.Fprintf(stderr, "crivmctl: unknown verb %q\n", fs.Arg(0))
	fs.Usage()
	return errUsage
}

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func oneArg(fs *flag.FlagSet, args []string, usage string, c *cli) (string, error) {
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(c.stderr, "usage: crivmctl "+usage)
		return "", errUsage
	}
	return fs.Arg(0), nil
}

// runCreate: crivmctl create POD-ID container-config.json pod-config.json
func runCreate(ctx context.Context, c *cli, args []string) error {
	if len(args) != 3 {
		fmt.Fprintln(c.stderr, "usage: crivmctl create POD-ID container-config.json pod-config.json")
		return errUsage
	}
	var ctr runtimeapi.ContainerConfig
	var pod runtimeapi.PodSandboxConfig
	if err := readProtoJSON(args[1], &ctr); err != nil {
		return err
	}
	if err := readProtoJSON(args[2], &pod); err != nil {
		return err
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	id, err := rs.CreateContainer(ctx, args[0], &ctr, &pod)
	if err != nil {
		return fmt.Errorf("creating container: %w", err)
	}
	fmt.Fprintln(c.stdout, id)
	return nil
}

// runRun: crivmctl run [--runtime H] container-config.json pod-config.json
// runs the pod, pulls nothing, creates and starts the container.
func runRun(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	handler := fs.String("runtime", "", "RuntimeClass handler (empty: the trust classifier chooses)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fmt.Fprintln(c.stderr, "usage: crivmctl run [--runtime H] container-config.json pod-config.json")
		return errUsage
	}
	var ctr runtimeapi.ContainerConfig
	var pod runtimeapi.PodSandboxConfig
	if err := readProtoJSON(fs.Arg(0), &ctr); err != nil {
		return err
	}
	if err := readProtoJSON(fs.Arg(1), &pod); err != nil {
		return err
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	sb, err := rs.RunPodSandbox(ctx, &pod, *handler)
	if err != nil {
		return fmt.Errorf("running pod sandbox: %w", err)
	}
	id, err := rs.CreateContainer(ctx, sb, &ctr, &pod)
	if err != nil {
		return fmt.Errorf("creating container: %w", err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		return fmt.Errorf("starting container: %w", err)
	}
	fmt.Fprintln(c.stdout, id)
	return nil
}

// idVerb runs fn for each ID argument.
func idVerb(name string, fn func(ctx context.Context, c *cli, id string) error) func(ctx context.Context, c *cli, args []string) error {
	return func(ctx context.Context, c *cli, args []string) error {
		if len(args) == 0 {
			fmt.Fprintf(c.stderr, "usage: crivmctl %s ID...\n", name)
			return errUsage
		}
		var errs []error
		for _, id := range args {
			if err := fn(ctx, c, id); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", name, id, err))
				continue
			}
			fmt.Fprintln(c.stdout, id)
		}
		return errors.Join(errs...)
	}
}

var (
	runStart = idVerb("start", func(ctx context.Context, c *cli, id string) error {
		rs, err := c.runtime(ctx)
		if err != nil {
			return err
		}
		return rs.StartContainer(ctx, id)
	})
	runStop = idVerb("stop", func(ctx context.Context, c *cli, id string) error {
		rs, err := c.runtime(ctx)
		if err != nil {
			return err
		}
		return rs.StopContainer(ctx, id, 10)
	})
	runRm = idVerb("rm", func(ctx context.Context, c *cli, id string) error {
		rs, err := c.runtime(ctx)
		if err != nil {
			return err
		}
		return rs.RemoveContainer(ctx, id)
	})
	runStopp = idVerb("stopp", func(ctx context.Context, c *cli, id string) error {
		rs, err := c.runtime(ctx)
		if err != nil {
			return err
		}
		return rs.StopPodSandbox(ctx, id)
	})
	runRmp = idVerb("rmp", func(ctx context.Context, c *cli, id string) error {
		rs, err := c.runtime(ctx)
		if err != nil {
			return err
		}
		return rs.RemovePodSandbox(ctx, id)
	})
)

func runInspect(ctx context.Context, c *cli, args []string) error {
	id, err := oneArg(flag.NewFlagSet("inspect", flag.ContinueOnError), args, "inspect CONTAINER", c)
	if err != nil {
		return err
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	st, err := rs.ContainerStatus(ctx, id, true)
	if err != nil {
		return fmt.Errorf("container status: %w", err)
	}
	return c.printJSON(st)
}

func runInspectp(ctx context.Context, c *cli, args []string) error {
	id, err := oneArg(flag.NewFlagSet("inspectp", flag.ContinueOnError), args, "inspectp POD", c)
	if err != nil {
		return err
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	st, err := rs.PodSandboxStatus(ctx, id, true)
	if err != nil {
		return fmt.Errorf("pod status: %w", err)
	}
	return c.printJSON(st)
}

// runExec: without -i/-t, ExecSync; with them, a streaming session.
func runExec(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	interactive := fs.Bool("i", false, "keep stdin open")
	tty := fs.Bool("t", false, "allocate a terminal")
	timeout := fs.Duration("timeout", 0, "timeout for a non-interactive exec")
	if err := fs.Parse(args); err != nil || fs.NArg() < 2 {
		fmt.Fprintln(c.stderr, "usage: crivmctl exec [-i] [-t] CONTAINER CMD [ARG...]")
		return errUsage
	}
	id, cmd := fs.Arg(0), fs.Args()[1:]
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	if !*interactive && !*tty {
		stdout, stderr, err := rs.ExecSync(ctx, id, cmd, *timeout)
		c.stdout.Write(stdout)
		c.stderr.Write(stderr)
		var ee interface{ ExitStatus() int }
		if errors.As(err, &ee) {
			return exitCodeError(ee.ExitStatus())
		}
		return err
	}
	resp, err := rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Stdin: *interactive, Stdout: true, Stderr: !*tty, Tty: *tty})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return stream(resp.Url, *interactive, *tty, c)
}

// exitCodeError makes main exit with the command's code.
type exitCodeError int

func (e exitCodeError) Error() string { return fmt.Sprintf("command exited with %d", int(e)) }

func stream(rawURL string, stdin, tty bool, c *cli) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	ex, err := remotecommand.NewSPDYExecutor(&restclient.Config{}, "POST", u)
	if err != nil {
		return err
	}
	so := remotecommand.StreamOptions{Stdout: c.stdout, Stderr: c.stderr, Tty: tty}
	if stdin {
		so.Stdin = os.Stdin
	}
	if tty && term.IsTerminal(int(os.Stdin.Fd())) {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err == nil {
			defer term.Restore(int(os.Stdin.Fd()), old)
		}
		if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
			so.TerminalSizeQueue = &onceSize{size: &remotecommand.TerminalSize{Width: uint16(w), Height: uint16(h)}}
		}
	}
	return ex.StreamWithContext(context.Background(), so)
}

type onceSize struct{ size *remotecommand.TerminalSize }

func (o *onceSize) Next() *remotecommand.TerminalSize {
	s := o.size
	o.size = nil
	return s
}

// runLogs prints a container's log from its CRI log file, as crictl does.
func runLogs(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	follow := fs.Bool("f", false, "follow the log")
	id, err := oneArg(fs, args, "logs [-f] CONTAINER", c)
	if err != nil {
		return err
	}
	rs, err := c.runtime(ctx)
	if err != nil {
		return err
	}
	st, err := rs.ContainerStatus(ctx, id, false)
	if err != nil {
		return fmt.Errorf("container status: %w", err)
	}
	f, err := os.Open(st.Status.LogPath)
	if err != nil {
		return fmt.Errorf("opening log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var partial strings.Builder
	for {
		line, err := r.ReadString('\n')
		if line != "" && strings.HasSuffix(line, "\n") {
			// <time> <stream> <P|F> <msg>
			parts := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
			if len(parts) == 4 {
				out := c.stdout
				if parts[1] == "stderr" {
					out = c.stderr
				}
				partial.WriteString(parts[3])
				if parts[2] == "F" {
					fmt.Fprintln(out, partial.String())
					partial.Reset()
				}
			}
			continue
		}
		if err == io.EOF {
			if !*follow {
				return nil
			}
			if line != "" {
				r = bufio.NewReader(io.MultiReader(strings.NewReader(line), f))
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
	}
}

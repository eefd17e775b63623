package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/hostcheck"
	"github.com/crivm/crivm/internal/log"
)

// runCheck prints what this host supports and a verdict per handler. It
// exits non-zero when the default handler or the untrusted handler is not
// usable, since pods would then be refused.
func runCheck(g globalFlags, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("crivm check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	probe := fs.Bool("probe", true, "boot a probe guest to find out whether KVM really works (cached per host boot)")
	output := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	loaded, err := configs.Load(g.loadOptions())
	if err != nil {
		return err
	}
	cfg := loaded.Config
	ctx := log.WithLogger(context.Background(), log.New(stderr, "text", nil))
	rep := hostcheck.Run(ctx, cfg, hostcheck.Options{Probe: *probe})
	switch *output {
	case "json":
		err = rep.WriteJSON(stdout)
	case "text":
		err = rep.WriteText(stdout)
	default:
		fmt.Fprintf(stderr, "crivm check: -o %q: want text or json\n", *output)
		return errUsage
	}
	if err != nil {
		return err
	}
	var unusable []error
	for _, name := range []string{cfg.Runtime.DefaultRuntime, cfg.Runtime.RuntimeUntrustedWorkload} {
		if v, ok := rep.Verdict(name); ok && !v.Usable {
			unusable = append(unusable, fmt.Errorf("handler %q is not usable: %s", name, v.Summary))
		}
	}
	if len(unusable) > 0 {
		return errors.Join(unusable...)
	}
	return nil
}

// Command crivm is the CRI runtime daemon and its admin subcommands.
//
//	crivm [flags]                 run the daemon
//	crivm [flags] config          print the full commented default config
//	crivm [flags] version         print the version
//	crivm [flags] check [--probe] [-o json]
//	                              print what this host supports, per handler
//	crivm [flags] trust explain --pod pod.json [--container ctr.json] [--handler H] [--image REF]...
//	crivm [flags] trust check-policy FILE|DIR
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.podman.io/storage/pkg/reexec"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/version"
)

// globalFlags are the flags that override config keys.
type globalFlags struct {
	configFile, configDir                      string
	root, runroot, listen, logLevel, logFormat string
}

func (g *globalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.configFile, "config", "", "config file (default "+configs.DefaultConfigFile+" if present)")
	fs.StringVar(&g.configDir, "config-dir", "", "drop-in dir of *.conf files (default "+configs.DefaultDropInDir+" if present)")
	fs.StringVar(&g.root, "root", "", "override crivm.root")
	fs.StringVar(&g.runroot, "runroot", "", "override crivm.runroot")
	fs.StringVar(&g.listen, "listen", "", "override crivm.listen (the CRI socket)")
	fs.StringVar(&g.logLevel, "log-level", "", "override crivm.log_level")
	fs.StringVar(&g.logFormat, "log-format", "", "override crivm.log_format")
}

func (g *globalFlags) loadOptions() configs.LoadOptions {
	opts := configs.LoadOptions{
		File: g.configFile, FileExplicit: g.configFile != "",
		DropInDir: g.configDir, DropInDirExplicit: g.configDir != "",
	}
	for _, o := range []struct{ flag, key, val string }{
		{"root", "crivm.root", g.root},
		{"runroot", "crivm.runroot", g.runroot},
		{"listen", "crivm.listen", g.listen},
		{"log-level", "crivm.log_level", g.logLevel},
		{"log-format", "crivm.log_format", g.logFormat},
	} {
		if o.val != "" {
			opts.Overrides = append(opts.Overrides, configs.Override{Key: o.key, Value: o.val, Source: "flag --" + o.flag})
		}
	}
	return opts
}

// errUsage makes main exit 2 without printing more.
var errUsage = errors.New("usage")

func main() {
	// containers/storage re-executes this binary to unpack layers in a
	// chroot; the child must run its own entry point, not crivm's.
	if reexec.Init() {
		return
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "crivm: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	var g globalFlags
	fs := flag.NewFlagSet("crivm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: crivm [flags] [config|version|check|trust]\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return runDaemon(g)
	}
	switch rest[0] {
	case "config":
		_, err := io.WriteString(stdout, configs.DefaultTemplate)
		return err
	case "version":
		fmt.Fprintf(stdout, "crivm version %s\n", version.String())
		return nil
	case "check":
		return runCheck(g, rest[1:], stdout, stderr)
	case "trust":
		return runTrust(g, rest[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "crivm: unknown command %q\n", rest[0])
	fs.Usage()
	return errUsage
}

package main

import (
	"errors"
	"flag"
	"io"
)

func runCheck(g globalFlags, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("crivm check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return errors.New("check: not wired yet")
}

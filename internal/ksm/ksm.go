// Package ksm turns the kernel's same-page merging on for VMs whose handler
// opts in (ksm = true), and puts the host's setting back afterwards.
//
// KSM is host-wide: /sys/kernel/mm/ksm/run. crivm records the value it
// found in a file under its runroot before it first changes it, so a
// daemon that crashed and restarts restores the host's value, not its own.
// Which VMs are merged is per handler: QEMU marks guest RAM mergeable only
// with -machine mem-merge=on, which the vm handler passes for handlers
// with ksm = true (and mem-merge=off for the others).
package ksm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SysDir is the kernel's KSM control directory.
const SysDir = "/sys/kernel/mm/ksm"

// savedName is the file under runroot that holds the host's run value.
const savedName = "ksm-run-before"

// Control enables and restores KSM through Dir (SysDir outside tests),
// recording the host's value under Runroot.
type Control struct {
	Dir, Runroot string
}

// Enable records the host's run value (unless a previous daemon already
// did) and sets run to 1.
func (c Control) Enable() error {
	run := filepath.Join(c.Dir, "run")
	cur, err := os.ReadFile(run)
	if err != nil {
		return fmt.Errorf("reading %s (ksm = true needs a kernel with KSM): %w", run, err)
	}
	saved := filepath.Join(c.Runroot, savedName)
	if _, err := os.Stat(saved); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(saved, cur, 0o600); err != nil {
			return fmt.Errorf("recording the host's KSM setting: %w", err)
		}
	}
	if err := os.WriteFile(run, []byte("1\n"), 0); err != nil {
		return fmt.Errorf("enabling KSM: %w", err)
	}
	return nil
}

// Restore puts back the run value Enable recorded. Merged pages stay
// merged (run = 0 stops the scanning, it does not unmerge). Nothing to do
// when nothing was recorded.
func (c Control) Restore() error {
	saved := filepath.Join(c.Runroot, savedName)
	b, err := os.ReadFile(saved)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	v := strings.TrimSpace(string(b))
	if v != "0" && v != "1" && v != "2" {
		return fmt.Errorf("%s holds %q, not a KSM run value", saved, v)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "run"), []byte(v+"\n"), 0); err != nil {
		return fmt.Errorf("restoring the host's KSM setting: %w", err)
	}
	return os.Remove(saved)
}

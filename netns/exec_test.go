package netns

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// writePlugin writes an executable shell script as a fake plugin.
func writePlugin(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPluginExec(t *testing.T) {
	e := newExec()
	ctx := context.Background()

	// 1. Output and environment reach the caller.
	out, err := e.ExecPlugin(ctx, writePlugin(t, `cat; echo "$CNI_COMMAND"`), []byte("in\n"), []string{"CNI_COMMAND=ADD"})
	if err != nil || string(out) != "in\nADD\n" {
		t.Errorf("ExecPlugin = %q, %v; want %q", out, err, "in\nADD\n")
	}

	// 2. A plugin's JSON error comes back as a *types.Error.
	_, err = e.ExecPlugin(ctx, writePlugin(t, `echo '{"cniVersion":"1.0.0","code":11,"msg":"try again"}'; exit 1`), nil, nil)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 11 || te.Msg != "try again" {
		t.Errorf("plugin error: %v, want code 11 %q", err, "try again")
	}

	// 2b. A plugin that dies without a word: the error says how it ended.
	for _, tt := range []struct{ script, want string }{
		{`exit 3`, "exit status 3"},
		{`kill -9 $$`, "signal: killed"},
		{`echo not-json; exit 1`, `stdout "not-json\n"`},
	} {
		_, err = e.ExecPlugin(ctx, writePlugin(t, tt.script), nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("plugin %q: %v, want an error saying %s", tt.script, err, tt.want)
		}
	}

	// 3. A hanging plugin whose child holds its stdout: at the deadline
	//    both die and the call returns (libcni's exec waits forever).
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	hang := writePlugin(t, `sleep 1000 & echo $! > `+pidFile+`; sleep 1000`)
	tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = e.ExecPlugin(tctx, hang, nil, nil)
	if took := time.Since(start); err == nil || took > pluginWaitDelay+2*time.Second {
		t.Fatalf("hanging plugin: err %v after %v, want an error within the deadline", err, took)
	}
	if !strings.Contains(err.Error(), "killed") {
		t.Errorf("hanging plugin: %v, want it to say the plugin was killed", err)
	}
	b, _ := os.ReadFile(pidFile)
	var pid int
	for _, c := range strings.TrimSpace(string(b)) {
		pid = pid*10 + int(c-'0')
	}
	time.Sleep(100 * time.Millisecond)
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		if st, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat"); !strings.Contains(string(st), ") Z ") {
			t.Errorf("the plugin's child (pid %d) outlived the deadline", pid)
		}
	}
}

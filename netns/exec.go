package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// pluginWaitDelay bounds the wait for a killed plugin's output pipes.
const pluginWaitDelay = 5 * time.Second

// pluginExec runs CNI plugins like libcni's RawExec, except that a plugin
// whose context ends is killed with every process it started (its own
// process group: portmap's iptables, say), and the wait for its output
// is bounded. libcni's exec kills only the plugin and waits for its
// stdout to close, which never happens while a child that inherited it
// lives: a CNI ADD then outlives its deadline forever.
type pluginExec struct {
	version.PluginDecoder
}

var _ invoke.Exec = (*pluginExec)(nil)

func newExec() invoke.Exec { return &pluginExec{} }

func (e *pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// ExecPlugin runs pluginPath with stdinData and environ and returns its
// stdout. A plugin's error result (JSON on stdout) comes back as a
// *types.Error, as libcni's does.
func (e *pluginExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	for attempt := 0; ; attempt++ {
		stdout.Reset()
		stderr.Reset()
		c := exec.Command(pluginPath)
		c.Env = environ
		c.Stdin = bytes.NewReader(stdinData)
		c.Stdout, c.Stderr = &stdout, &stderr
		c.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
		c.WaitDelay = pluginWaitDelay
		err := runKillingGroup(ctx, c)
		if err == nil {
			if stderr.Len() > 0 {
				os.Stderr.Write(stderr.Bytes())
			}
			return stdout.Bytes(), nil
		}
		// A plugin binary being replaced: libcni retries too.
		if strings.Contains(err.Error(), "text file busy") && attempt < 5 && ctx.Err() == nil {
			time.Sleep(time.Second)
			continue
		}
		return nil, pluginErr(err, stdout.Bytes(), stderr.Bytes())
	}
}

// runKillingGroup runs c (which must have Setpgid) and SIGKILLs its whole
// process group when ctx ends first.
func runKillingGroup(ctx context.Context, c *exec.Cmd) error {
	if err := c.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = unix.Kill(-c.Process.Pid, unix.SIGKILL) // the group: the plugin and its children
		case <-done:
		}
	}()
	err := c.Wait()
	close(done)
	if ctx.Err() != nil {
		// Children outside the group's reach are gone with it too, or
		// WaitDelay ended the wait for their pipes.
		return fmt.Errorf("plugin %s killed: %w", c.Path, ctx.Err())
	}
	return err
}

func pluginErr(err error, stdout, stderr []byte) error {
	var e types.Error
	if len(stdout) > 0 && json.Unmarshal(stdout, &e) == nil && e.Code != 0 {
		return &e
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		// How it ended (an exit code or a signal) and whatever it printed:
		// a plugin that dies silently says nothing else.
		msg := fmt.Sprintf("netplugin failed (%s): %q", ee.ProcessState, stderr)
		if len(stdout) > 0 {
			msg += fmt.Sprintf(", stdout %q", stdout)
		}
		return &types.Error{Code: types.ErrInternal, Msg: msg}
	}
	return err
}

//go:build crivm_crashpoints

package crashpoint

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

var target = os.Getenv(EnvVar)

// After kills the process with SIGKILL when step is the one EnvVar names.
func After(step string) {
	if target == "" || step != target {
		return
	}
	fmt.Fprintf(os.Stderr, "%s %q\n", Marker, step)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not deliverable late, but never return from here
}

var (
	dropMu    sync.Mutex
	dropHooks []func()
	dropOnce  sync.Once
)

// OnDrop registers f to run on every DropSignal (SIGUSR2) the process gets.
func OnDrop(f func()) {
	dropMu.Lock()
	dropHooks = append(dropHooks, f)
	dropMu.Unlock()
	dropOnce.Do(func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR2)
		go func() {
			for range c {
				dropMu.Lock()
				hooks := append([]func(){}, dropHooks...)
				dropMu.Unlock()
				for _, h := range hooks {
					h()
				}
			}
		}()
	})
}

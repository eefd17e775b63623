package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// deadPID is the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestFlockOrWaitForDead(t *testing.T) {
	tests := []struct {
		name    string
		holder  func(t *testing.T) int
		release time.Duration // 0: never
		wantErr string
	}{
		{name: "free", holder: nil},
		{name: "held by a live crivm", holder: func(*testing.T) int { return os.Getpid() }, wantErr: "another crivm"},
		{name: "holder gone, lock released soon", holder: deadPID, release: 200 * time.Millisecond},
		{name: "holder gone, lock never released", holder: deadPID, wantErr: "is gone, but the lock is still held"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "crivm.lock")
			if tt.holder != nil {
				// 1. Another open file of the lock holds it, with the
				// holder's pid recorded.
				other, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				defer other.Close()
				if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
					t.Fatal(err)
				}
				fmt.Fprint(other, tt.holder(t))
				if tt.release > 0 {
					fd, released := int(other.Fd()), make(chan struct{})
					time.AfterFunc(tt.release, func() { unix.Flock(fd, unix.LOCK_UN); close(released) })
					defer func() { <-released }() // before other closes
				}
			}
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// 2. Lock it as a starting crivm does.
			start := time.Now()
			err = flockOrWaitForDead(f, time.Second)
			took := time.Since(start)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want the lock", err)
				}
				if took < tt.release {
					t.Errorf("locked after %v, before the holder released it at %v", took, tt.release)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantErr == "another crivm" && took > 100*time.Millisecond {
				t.Errorf("a live holder's lock was refused after %v, want at once", took)
			}
		})
	}
}

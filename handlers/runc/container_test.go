package runc

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/proc"
	"github.com/crivm/crivm/store"
)

// TestWaitReopened: ReopenLog returns once conmon has put a new file at the
// log path (conmon writes <path>.tmp and renames it over the path), whether
// the kubelet moved the old file away first or not; not while the old file
// is still there, and not for a container that is gone.
func TestWaitReopened(t *testing.T) {
	self := &store.Process{Pid: os.Getpid(), BootID: proc.BootID()}
	self.StartTime, _ = proc.StartTime(os.Getpid())
	gone := &store.Process{Pid: 1 << 30, BootID: proc.BootID()}
	tests := []struct {
		name    string
		moved   bool          // the kubelet renamed the log away before the call
		reopen  time.Duration // when the fake conmon reopens; <0: never
		p       *store.Process
		wantErr error // nil: success; else an errdefs class, or errTimeout
	}{
		{"moved away, then reopened", true, 50 * time.Millisecond, self, nil},
		{"reopened in place", false, 50 * time.Millisecond, self, nil},
		{"never reopened", false, -1, self, errTimeout},
		{"moved away, never reopened", true, -1, self, errTimeout},
		{"the container is gone", true, -1, gone, errdefs.ErrFailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.log")
			if err := os.WriteFile(path, []byte("old\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			if tt.moved {
				if err := os.Rename(path, path+".1"); err != nil {
					t.Fatal(err)
				}
			}
			before := fileIno(path)
			if tt.reopen >= 0 {
				go func() {
					time.Sleep(tt.reopen)
					os.WriteFile(path+".tmp", nil, 0o640)
					os.Rename(path+".tmp", path)
				}()
			}
			start := time.Now()
			err := waitReopened(context.Background(), path, before, tt.p, 300*time.Millisecond)
			switch {
			case tt.wantErr == nil:
				if err != nil {
					t.Fatal(err)
				}
				if time.Since(start) < tt.reopen {
					t.Errorf("returned after %v, before the reopen at %v", time.Since(start), tt.reopen)
				}
				if _, err := os.Stat(path); err != nil {
					t.Errorf("no log file on return: %v", err)
				}
			case tt.wantErr == errTimeout:
				if err == nil || errdefs.IsClass(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("err = %v, want a timeout", err)
				}
			default:
				if !errdefs.IsClass(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
			}
		})
	}
}

// errTimeout marks the cases that must time out.
var errTimeout = &timeoutMarker{}

type timeoutMarker struct{}

func (*timeoutMarker) Error() string { return "timeout" }

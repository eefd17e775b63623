package store

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestNames(t *testing.T) {
	pod := PodMetadata{Name: "web", Namespace: "default", UID: "u1", Attempt: 2}
	tests := []struct{ got, want string }{
		{SandboxName(pod), "k8s_POD_web_default_u1_2"},
		{ContainerName(ContainerMetadata{Name: "nginx", Attempt: 0}, pod), "k8s_nginx_web_default_u1_0"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	if id := NewID(); len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("NewID: got %q, want 64 hex chars", id)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	sb := &Sandbox{ID: NewID(), Name: "k8s_POD_a_ns_u_0", Metadata: PodMetadata{Name: "a", Namespace: "ns", UID: "u"},
		Handler: "runc", State: SandboxReady, CreatedAt: created, Labels: map[string]string{"app": "a"},
		Process: &Process{Pid: 42, StartTime: 99}}
	ctr := &Container{ID: NewID(), Name: "k8s_c_a_ns_u_0", SandboxID: sb.ID, State: ContainerRunning, CreatedAt: created}
	gone := &Container{ID: NewID(), Name: "k8s_gone_a_ns_u_0", SandboxID: sb.ID}
	for _, err := range []error{s.Sandboxes.Add(sb), s.Containers.Add(ctr), s.Containers.Add(gone)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Containers.Update(ctr.ID, func(c *Container) error {
		c.State, c.ExitCode = ContainerExited, 3
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Containers.Delete(gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gotSB, err := s.Sandboxes.Get(sb.ID[:8])
	if err != nil {
		t.Fatal(err)
	}
	gotCtr, err := s.Containers.Get(ctr.ID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"sandbox name", gotSB.Name, sb.Name},
		{"sandbox created", gotSB.CreatedAt.Equal(created), true},
		{"sandbox label", gotSB.Labels["app"], "a"},
		{"sandbox pid", gotSB.Process.Pid, 42},
		{"container state", gotCtr.State, ContainerExited},
		{"container exit code", gotCtr.ExitCode, int32(3)},
		{"containers listed", len(s.Containers.List(nil)), 1},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	// Names survive the reopen: the sandbox name is still taken, the deleted
	// container's name is free again.
	if err := s.Sandboxes.Reserve(sb.Name, NewID()); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), sb.ID) {
		t.Errorf("reserving a persisted name: got %v, want AlreadyExists naming %s", err, sb.ID)
	}
	if err := s.Containers.Reserve(gone.Name, NewID()); err != nil {
		t.Errorf("reserving a deleted container's name: %v", err)
	}
}

func TestGet(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, id := range []string{"abc1" + strings.Repeat("0", 60), "abc2" + strings.Repeat("0", 60), "def0" + strings.Repeat("0", 60)} {
		if err := s.Sandboxes.Add(&Sandbox{ID: id, Name: fmt.Sprint("n", i)}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		query   string
		wantID  string
		wantErr error
	}{
		{"def", "def0" + strings.Repeat("0", 60), nil},
		{"abc1", "abc1" + strings.Repeat("0", 60), nil},
		{"abc", "", errdefs.ErrInvalidArgument},
		{"zzz", "", errdefs.ErrNotFound},
		{"", "", errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		got, err := s.Sandboxes.Get(tt.query)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Get(%q): got err %v, want %v", tt.query, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.ID != tt.wantID {
			t.Errorf("Get(%q): got %v, %v; want %s", tt.query, got, err, tt.wantID)
		}
	}
}

func TestCopiesAreIndependent(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sb := &Sandbox{ID: NewID(), Name: "x", Labels: map[string]string{"a": "1"}}
	if err := s.Sandboxes.Add(sb); err != nil {
		t.Fatal(err)
	}
	sb.Labels["a"] = "mutated"
	got, _ := s.Sandboxes.Get(sb.ID)
	got.Labels["a"] = "mutated too"
	again, _ := s.Sandboxes.Get(sb.ID)
	if again.Labels["a"] != "1" {
		t.Fatalf("cache shares memory with callers: label is %q", again.Labels["a"])
	}
}

// TestRacingReservations runs under -race in make test: of N goroutines that
// reserve the same name, exactly one wins.
func TestRacingReservations(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 32
	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			id := NewID()
			err := s.Containers.Reserve("k8s_c_p_ns_u_0", id)
			switch {
			case err == nil:
				wins.Add(1)
				if err := s.Containers.Add(&Container{ID: id, Name: "k8s_c_p_ns_u_0"}); err != nil {
					t.Errorf("adding the winner: %v", err)
				}
			case errors.Is(err, errdefs.ErrAlreadyExists):
				conflicts.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	if got, want := wins.Load(), int32(1); got != want {
		t.Errorf("winners: got %d, want %d", got, want)
	}
	if got, want := conflicts.Load(), int32(n-1); got != want {
		t.Errorf("conflicts: got %d, want %d", got, want)
	}
	if got := len(s.Containers.List(nil)); got != 1 {
		t.Errorf("records: got %d, want 1", got)
	}
}

func TestAddDuplicateNameFails(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := &Sandbox{ID: NewID(), Name: "dup"}
	if err := s.Sandboxes.Add(first); err != nil {
		t.Fatal(err)
	}
	err = s.Sandboxes.Add(&Sandbox{ID: NewID(), Name: "dup"})
	if !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("got %v, want AlreadyExists naming %s", err, first.ID)
	}
	if got := len(s.Sandboxes.List(nil)); got != 1 {
		t.Errorf("records after refused add: got %d, want 1", got)
	}
}

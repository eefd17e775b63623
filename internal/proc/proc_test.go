package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestAlive(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	st, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		pid       int
		start     uint64
		boot      string
		wantAlive bool
	}{
		{"running", pid, st, BootID(), true},
		{"start time unchecked", pid, 0, "", true},
		{"pid reused", pid, st + 1, BootID(), false},
		{"other boot", pid, st, "another-boot", false},
		{"no pid", 0, 0, "", false},
	}
	for _, tt := range tests {
		if got := Alive(tt.pid, tt.start, tt.boot); got != tt.wantAlive {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.wantAlive)
		}
	}
	cmd.Process.Kill()
	// Before Wait the child is a zombie: it must count as dead.
	for range 200 {
		if !Alive(pid, st, "") {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if Alive(pid, st, "") {
		t.Error("killed process still alive (zombie counted as alive)")
	}
	cmd.Wait()
	if Alive(pid, st, "") {
		t.Error("reaped process still alive")
	}
}

func TestReadExitFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		body    string
		want    int32
		wantErr bool
	}{
		{"0", 0, false},
		{"137\n", 137, false},
		{"garbage", 0, true},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, "exit")
		os.WriteFile(p, []byte(tt.body), 0o600)
		got, err := ReadExitFile(p)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%q: got %d, %v; want %d, err=%v", tt.body, got, err, tt.want, tt.wantErr)
		}
	}
}

package assets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindKernel(t *testing.T) {
	tests := []struct {
		name       string
		files      []string // created non-empty in the fake /boot
		guest      []string // created non-empty in the fake GuestKernelDir
		noGuest    bool     // findKernel gets no guest dir, as FindHostKernel
		empty      []string // created empty
		dirs       []string
		configured string // relative to the fake /boot when not absolute
		release    string
		want       string
		wantErr    string
	}{
		{
			name:    "running release wins over newer",
			files:   []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64"},
			release: "6.1.0-9-amd64",
			want:    "vmlinuz-6.1.0-9-amd64",
		},
		{
			name:    "numeric version order, not lexical",
			files:   []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64", "vmlinuz-5.10.0-30-amd64"},
			release: "6.18.44-other",
			want:    "vmlinuz-6.1.0-10-amd64",
		},
		{
			name:  "6.10 after 6.9",
			files: []string{"vmlinuz-6.9.1", "vmlinuz-6.10.0"},
			want:  "vmlinuz-6.10.0",
		},
		{
			name:    "leftovers, empty files and directories skipped",
			files:   []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-11-amd64.dpkg-tmp", "vmlinuz.old", "config-6.1.0-12-amd64"},
			empty:   []string{"vmlinuz-6.1.0-12-amd64"},
			dirs:    []string{"vmlinuz-6.1.0-13-amd64"},
			release: "6.1.0-12-amd64",
			want:    "vmlinuz-6.1.0-9-amd64",
		},
		{
			name:       "configured path used as is",
			files:      []string{"vmlinuz-6.1.0-10-amd64", "custom-kernel"},
			configured: "custom-kernel",
			want:       "custom-kernel",
		},
		{
			name:       "configured path missing",
			files:      []string{"vmlinuz-6.1.0-10-amd64"},
			configured: "nope",
			wantErr:    "nope: no such file or directory",
		},
		{
			name:    "crivm's guest kernel wins over the host's",
			files:   []string{"vmlinuz-6.1.0-9-amd64"},
			guest:   []string{"vmlinuz-6.1.192-crivm", "vmlinuz-6.1.99-crivm"},
			release: "6.1.0-9-amd64",
			want:    "guest/vmlinuz-6.1.192-crivm",
		},
		{
			name:       "a configured path wins over crivm's guest kernel",
			files:      []string{"custom-kernel"},
			guest:      []string{"vmlinuz-6.1.192-crivm"},
			configured: "custom-kernel",
			want:       "custom-kernel",
		},
		{
			name:    "no guest kernel dir (FindHostKernel)",
			files:   []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64"},
			guest:   []string{"vmlinuz-6.1.192-crivm"},
			noGuest: true,
			want:    "vmlinuz-6.1.0-10-amd64",
		},
		{
			name:    "nothing installed",
			files:   []string{"config-6.1.0-10-amd64"},
			release: "6.1.0-10-amd64",
			wantErr: "no guest kernel found in",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			boot, guest := t.TempDir(), t.TempDir()
			for _, f := range tt.guest {
				if err := os.WriteFile(filepath.Join(guest, f), []byte("MZ"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range tt.files {
				if err := os.WriteFile(filepath.Join(boot, f), []byte("MZ"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range tt.empty {
				if err := os.WriteFile(filepath.Join(boot, f), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range tt.dirs {
				if err := os.Mkdir(filepath.Join(boot, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			configured := tt.configured
			if configured != "" {
				configured = filepath.Join(boot, configured)
			}
			guestDir := guest
			if tt.noGuest {
				guestDir = ""
			}
			got, err := findKernel(configured, guestDir, boot, tt.release)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := filepath.Join(boot, tt.want)
			if g, ok := strings.CutPrefix(tt.want, "guest/"); ok {
				want = filepath.Join(guest, g)
			}
			if got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestFindKernelDefaultBootMessage(t *testing.T) {
	// The message for the real /boot is fixed: it tells the user what to do.
	if errNoKernel.Error() != "no guest kernel found in /boot (install linux-image-amd64 or set kernel = ...)" {
		t.Errorf("message changed: %q", errNoKernel)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"6.1.0-10-amd64", "6.1.0-9-amd64", 1},
		{"6.1.0-9-amd64", "6.1.0-10-amd64", -1},
		{"6.10.0", "6.9.0", 1},
		{"6.1.0-9-amd64", "6.1.0-9-amd64", 0},
		{"6.1.0-09", "6.1.0-9", 0},
		{"6.1.0-9-cloud-amd64", "6.1.0-9-amd64", 1},
		{"6.1.0", "6.1.0-1", -1},
		{"6.1.10", "6.1.0-rc1", 1},
	}
	for _, tt := range tests {
		got := compareVersions(tt.a, tt.b)
		if sign(got) != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n > 0:
		return 1
	case n < 0:
		return -1
	}
	return 0
}

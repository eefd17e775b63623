package hostprobe

import (
	"context"
	"os/exec"
	"regexp"
	"testing"
)

func TestParseQEMUVersion(t *testing.T) {
	tests := []struct {
		name, out, want string
		wantErr         bool
	}{
		{
			name: "debian 7.2",
			out:  "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
			want: "7.2.22",
		},
		{name: "upstream", out: "QEMU emulator version 8.2.0\n", want: "8.2.0"},
		{name: "two components", out: "QEMU emulator version 9.1 (v9.1)\n", want: "9.1"},
		{name: "not qemu", out: "runc version 1.1.5\n", wantErr: true},
		{name: "empty", out: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseQEMUVersion(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestQEMUVersionReal(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	v, err := QEMUVersion(context.Background(), qemu)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d+\.\d+(\.\d+)?$`).MatchString(v) {
		t.Errorf("version %q", v)
	}
}

func TestQEMUVersionNotQEMU(t *testing.T) {
	if _, err := QEMUVersion(context.Background(), "/bin/true"); err == nil {
		t.Error("no error for a binary that prints nothing")
	}
}

package oci

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestPathsOrDefault(t *testing.T) {
	if got := pathsOrDefault(nil, defaultMaskedPaths); !slices.Equal(got, defaultMaskedPaths) {
		t.Errorf("nil list: %v", got)
	}
	if got := pathsOrDefault([]string{}, defaultMaskedPaths); got == nil || len(got) != 0 {
		t.Errorf("empty list: %v, want empty non-nil", got)
	}
	if got := pathsOrDefault([]string{"/proc/x"}, defaultMaskedPaths); !slices.Equal(got, []string{"/proc/x"}) {
		t.Errorf("explicit list: %v", got)
	}
}

func TestSeccompSelection(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "p.json")
	if err := os.WriteFile(prof, []byte(`{"defaultAction":"SCMP_ACT_LOG"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rd := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	unc := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	local := func(ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	const (
		none   = "none"
		def    = "default"
		loaded = "loaded"
	)
	tests := []struct {
		name       string
		typed      *runtimeapi.SecurityProfile
		legacy     string
		privileged bool
		root       string
		// useDefault is Host.SeccompUseDefaultWhenEmpty.
		useDefault bool
		want       string
		invalid    bool
	}{
		{name: "unset is Unconfined (the CRI's empty profile)", want: none},
		{name: "unset with seccomp_use_default_when_empty", useDefault: true, want: def},
		{name: "typed Unconfined with seccomp_use_default_when_empty", typed: unc, useDefault: true, want: none},
		{name: "legacy unconfined with seccomp_use_default_when_empty", legacy: "unconfined", useDefault: true, want: none},
		{name: "privileged with seccomp_use_default_when_empty", privileged: true, useDefault: true, want: none},
		{name: "typed RuntimeDefault", typed: rd, want: def},
		{name: "typed Unconfined", typed: unc, want: none},
		{name: "typed Localhost", typed: local(prof), want: loaded},
		{name: "typed Localhost missing", typed: local(filepath.Join(dir, "missing.json")), invalid: true},
		{name: "typed Localhost empty", typed: local(""), invalid: true},
		{name: "typed wins over legacy", typed: unc, legacy: "runtime/default", want: none},
		{name: "legacy runtime/default", legacy: "runtime/default", want: def},
		{name: "legacy docker/default", legacy: "docker/default", want: def},
		{name: "legacy unconfined", legacy: "unconfined", want: none},
		{name: "legacy localhost", legacy: "localhost/" + prof, want: loaded},
		{name: "relative localhost under root", legacy: "localhost/p.json", root: dir, want: loaded},
		{name: "relative localhost escaping root", legacy: "localhost/../p.json", root: dir, invalid: true},
		{name: "relative localhost without root", typed: local("p.json"), invalid: true},
		{name: "legacy junk", legacy: "bogus", invalid: true},
		{name: "privileged ignores RuntimeDefault", typed: rd, privileged: true, want: none},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Host{SeccompProfileRoot: tt.root, SeccompUseDefaultWhenEmpty: tt.useDefault}
			got, err := seccompProfile(h, tt.typed, tt.legacy, tt.privileged, nil)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kind string
			switch {
			case got == nil:
				kind = none
			case got.DefaultAction == specs.ActLog:
				kind = loaded
			case got.DefaultAction == specs.ActErrno && len(got.Syscalls) > 10:
				kind = def
			}
			if kind != tt.want {
				t.Errorf("got %s profile, want %s", kind, tt.want)
			}
		})
	}

	// A missing Localhost profile's error names the file.
	_, err := seccompProfile(&Host{}, local("/no/such/profile.json"), "", false, nil)
	if err == nil || !strings.Contains(err.Error(), "/no/such/profile.json") {
		t.Errorf("missing profile error %v does not name the file", err)
	}
}

func TestAppArmorSelection(t *testing.T) {
	local := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "my-prof"}
	rd := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	unc := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	tests := []struct {
		name       string
		host       Host
		typed      *runtimeapi.SecurityProfile
		legacy     string
		privileged bool
		want       string
		warn       bool
	}{
		{name: "no apparmor, nothing asked", want: ""},
		{name: "no apparmor, localhost asked", typed: local, want: "", warn: true},
		{name: "no apparmor, legacy asked", legacy: "localhost/x", want: "", warn: true},
		{name: "no apparmor, unconfined asked", typed: unc, want: ""},
		{name: "localhost", host: Host{HostHasAppArmor: true}, typed: local, want: "my-prof"},
		{name: "legacy localhost", host: Host{HostHasAppArmor: true}, legacy: "localhost/other", want: "other"},
		{name: "default configured", host: Host{HostHasAppArmor: true, AppArmorDefault: "crivm-default"}, typed: rd, want: "crivm-default"},
		{name: "unset means default", host: Host{HostHasAppArmor: true, AppArmorDefault: "crivm-default"}, want: "crivm-default"},
		{name: "default not configured", host: Host{HostHasAppArmor: true}, typed: rd, want: "", warn: true},
		{name: "unconfined", host: Host{HostHasAppArmor: true, AppArmorDefault: "crivm-default"}, typed: unc, want: ""},
		{name: "privileged gets no default", host: Host{HostHasAppArmor: true, AppArmorDefault: "crivm-default"}, privileged: true, want: ""},
		{name: "privileged keeps localhost", host: Host{HostHasAppArmor: true}, typed: local, privileged: true, want: "my-prof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var warned bool
			tt.host.Warnf = func(string, ...any) { warned = true }
			got, err := apparmorProfile(&tt.host, tt.typed, tt.legacy, tt.privileged)
			if err != nil || got != tt.want || warned != tt.warn {
				t.Errorf("got %q, %v, warned %v; want %q, warned %v", got, err, warned, tt.want, tt.warn)
			}
		})
	}
}

func TestSysctls(t *testing.T) {
	tests := []struct {
		name             string
		in               map[string]string
		hostNet, hostIPC bool
		invalid          bool
	}{
		{name: "namespaced", in: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1", "kernel.msgmax": "1", "kernel.sem": "1 2 3 4", "fs.mqueue.msg_max": "10"}},
		{name: "vlan interface with slash", in: map[string]string{"net.ipv4.conf.eth0/100.rp_filter": "1"}},
		{name: "net with host network", in: map[string]string{"net.core.somaxconn": "1024"}, hostNet: true, invalid: true},
		{name: "ipc with host ipc", in: map[string]string{"kernel.shmmax": "1"}, hostIPC: true, invalid: true},
		{name: "ipc with host network is fine", in: map[string]string{"kernel.shmmax": "1"}, hostNet: true},
		{name: "not namespaced", in: map[string]string{"kernel.panic": "1"}, invalid: true},
		{name: "vm not namespaced", in: map[string]string{"vm.swappiness": "1"}, invalid: true},
		{name: "bad name", in: map[string]string{"net..core": "1"}, invalid: true},
		{name: "path traversal", in: map[string]string{"net./../../kernel/panic": "1"}, invalid: true},
		{name: "shell chars", in: map[string]string{"net.core.x;y": "1"}, invalid: true},
		{name: "value with NUL", in: map[string]string{"net.core.somaxconn": "1\x00"}, invalid: true},
		{name: "value with spaces", in: map[string]string{"net.ipv4.ip_local_port_range": "1024\t65535"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sysctls(tt.in, tt.hostNet, tt.hostIPC)
			if tt.invalid {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.in) {
				t.Errorf("got %v, %v", got, err)
			}
		})
	}
	if got, err := sysctls(nil, false, false); got != nil || err != nil {
		t.Errorf("empty: %v, %v", got, err)
	}
}

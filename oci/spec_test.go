package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	imgspec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func testSandboxConfig() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web-0", Uid: "uid-1", Namespace: "default"},
		Hostname:     "web-0",
		LogDirectory: "/var/log/pods/default_web-0_uid-1",
		Annotations:  map[string]string{"a": "b"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/burstable/poduid-1",
			Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: ctr},
			},
		},
	}
}

// roundTrip checks that s survives JSON encoding: decoding and encoding
// again gives the same document. (Empty lists and nil lists encode alike;
// both mean "none" to the runtime.)
func roundTrip(t *testing.T, s *specs.Spec) {
	t.Helper()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back specs.Spec
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(&back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) {
		t.Errorf("spec does not round-trip through JSON:\n%s\n%s", data, again)
	}
}

func TestSandboxSpec(t *testing.T) {
	in := SandboxSpecInput{
		Host:       Host{DaemonOOMScoreAdj: 0, Cgroups: CgroupFeatures{Swap: true}},
		ID:         "sb1",
		Config:     testSandboxConfig(),
		Image:      &imgspec.ImageConfig{Entrypoint: []string{"/pause"}, User: "65535:65535", Env: []string{"PATH=/"}},
		ImageName:  "registry.k8s.io/pause:3.10",
		RootfsPath: "/var/lib/crivm/sb1/rootfs",
		NetNSPath:  "/run/netns/cni-1",
		ShmPath:    "/run/crivm/sb1/shm",
		HostsPath:  "/run/crivm/sb1/hosts", ResolvConfPath: "/run/crivm/sb1/resolv.conf",
		OOMScoreAdj: -998,
	}
	s, err := SandboxSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)

	p := s.Process
	if !slices.Equal(p.Args, []string{"/pause"}) || p.User.UID != 65535 || p.User.GID != 65535 || !p.NoNewPrivileges {
		t.Errorf("process: %+v", p)
	}
	if *p.OOMScoreAdj != 0 {
		t.Errorf("oom_score_adj = %d, want -998 clamped to the daemon's 0", *p.OOMScoreAdj)
	}
	if len(p.Capabilities.Bounding) != 0 {
		t.Errorf("sandbox capabilities: %v", p.Capabilities.Bounding)
	}
	if !s.Root.Readonly || s.Root.Path != in.RootfsPath || s.Hostname != "web-0" {
		t.Errorf("root/hostname: %+v %q", s.Root, s.Hostname)
	}
	if s.Linux.CgroupsPath != "/kubepods/burstable/poduid-1/crivm-sb1" {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	wantNS := []specs.LinuxNamespace{ns("pid", ""), ns("network", "/run/netns/cni-1"), ns("ipc", ""), ns("uts", ""), ns("mount", "")}
	if !reflect.DeepEqual(s.Linux.Namespaces, wantNS) {
		t.Errorf("namespaces %v", s.Linux.Namespaces)
	}
	if s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Errorf("sysctls %v", s.Linux.Sysctl)
	}
	if !slices.Equal(s.Linux.MaskedPaths, defaultMaskedPaths) || !slices.Equal(s.Linux.ReadonlyPaths, defaultReadonlyPaths) {
		t.Errorf("masked/readonly: %v %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Linux.Seccomp != nil {
		t.Errorf("sandbox seccomp for an unset request: %+v, want none (unconfined)", s.Linux.Seccomp)
	}
	in.SeccompUseDefaultWhenEmpty = true
	if d, err := SandboxSpec(in); err != nil {
		t.Error(err)
	} else if d.Linux.Seccomp == nil || d.Linux.Seccomp.DefaultAction != specs.ActErrno {
		t.Errorf("sandbox seccomp with seccomp_use_default_when_empty: %+v, want the default profile", d.Linux.Seccomp)
	}
	want := map[string]string{
		"a":                        "b",
		AnnotationContainerType:    ContainerTypeSandbox,
		AnnotationSandboxID:        "sb1",
		AnnotationSandboxName:      "web-0",
		AnnotationSandboxNamespace: "default",
		AnnotationSandboxUID:       "uid-1",
		AnnotationSandboxLogDir:    "/var/log/pods/default_web-0_uid-1",
		AnnotationSandboxImageName: "registry.k8s.io/pause:3.10",
	}
	if !reflect.DeepEqual(s.Annotations, want) {
		t.Errorf("annotations %v", s.Annotations)
	}
	var shm *specs.Mount
	for i := range s.Mounts {
		if s.Mounts[i].Destination == "/dev/shm" {
			shm = &s.Mounts[i]
		}
	}
	if shm == nil || shm.Source != in.ShmPath {
		t.Errorf("/dev/shm: %+v", shm)
	}
}

func TestSandboxSpecHostNamespacesAndPrivileged(t *testing.T) {
	cfg := testSandboxConfig()
	cfg.Linux.Sysctls = nil
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		Privileged:       true,
		NamespaceOptions: &runtimeapi.NamespaceOption{Network: node, Pid: node, Ipc: node},
	}
	s, err := SandboxSpec(SandboxSpecInput{ID: "sb2", Config: cfg, NetNSPath: "/ignored", Host: Host{CgroupDriver: "systemd", DaemonOOMScoreAdj: -1000}, CgroupParent: "kubepods-besteffort-pod1.slice", OOMScoreAdj: -998})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	if !reflect.DeepEqual(s.Linux.Namespaces, []specs.LinuxNamespace{ns("mount", "")}) {
		t.Errorf("namespaces %v", s.Linux.Namespaces)
	}
	if s.Hostname != "" {
		t.Errorf("hostname %q set without a UTS namespace", s.Hostname)
	}
	if s.Linux.CgroupsPath != "kubepods-besteffort-pod1.slice:crivm:sb2" {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	if *s.Process.OOMScoreAdj != -998 {
		t.Errorf("oom_score_adj %d, want -998 (floor -1000)", *s.Process.OOMScoreAdj)
	}
	if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil || s.Linux.Seccomp != nil || len(s.Process.Capabilities.Bounding) != len(allCapabilities) {
		t.Errorf("privileged sandbox: masked %v ro %v seccomp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp)
	}
	for _, m := range s.Mounts {
		if m.Destination == "/dev/shm" && (m.Type != "bind" || m.Source != "/dev/shm") {
			t.Errorf("host IPC /dev/shm: %+v", m)
		}
	}
	// Sysctls that would change the host are refused.
	cfg.Linux.Sysctls = map[string]string{"net.core.somaxconn": "1"}
	if _, err := SandboxSpec(SandboxSpecInput{ID: "sb2", Config: cfg}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("net sysctl with host network: err = %v", err)
	}
}

func testContainerInput(t *testing.T) ContainerSpecInput {
	return ContainerSpecInput{
		Host:       Host{DaemonOOMScoreAdj: -500, PidsLimit: 4096},
		ID:         "c1",
		SandboxID:  "sb1",
		Sandbox:    testSandboxConfig(),
		RootfsPath: fakeRootfs(t),
		SandboxPid: 100,
		Image: &imgspec.ImageConfig{
			User: "app", Entrypoint: []string{"/entry"}, Cmd: []string{"serve"},
			Env: []string{"PATH=/usr/bin:/bin", "MODE=image"}, WorkingDir: "/srv",
		},
		Config: &runtimeapi.ContainerConfig{
			Metadata:    &runtimeapi.ContainerMetadata{Name: "app"},
			Image:       &runtimeapi.ImageSpec{Image: "sha256:abc", UserSpecifiedImage: "docker.io/library/app:1"},
			Args:        []string{"--port", "80"},
			Envs:        []*runtimeapi.KeyValue{{Key: "MODE", Value: []byte("cri")}},
			Annotations: map[string]string{"x": "y"},
			Tty:         true,
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuShares: 256, MemoryLimitInBytes: 64 << 20, OomScoreAdj: -997},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					NamespaceOptions:   &runtimeapi.NamespaceOption{Pid: ctr},
					SupplementalGroups: []int64{5000},
					NoNewPrivs:         true,
				},
			},
		},
		HostsPath: "/run/crivm/sb1/hosts",
		ShmPath:   "/run/crivm/sb1/shm",
	}
}

func TestContainerSpec(t *testing.T) {
	in := testContainerInput(t)
	s, err := ContainerSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	p := s.Process
	if !slices.Equal(p.Args, []string{"/entry", "--port", "80"}) {
		t.Errorf("args %q", p.Args)
	}
	if !slices.Equal(p.Env, []string{"PATH=/usr/bin:/bin", "MODE=cri", "HOSTNAME=web-0", "TERM=xterm"}) {
		t.Errorf("env %q", p.Env)
	}
	if p.Cwd != "/srv" || !p.Terminal || !p.NoNewPrivileges {
		t.Errorf("cwd %q terminal %v nnp %v", p.Cwd, p.Terminal, p.NoNewPrivileges)
	}
	if !reflect.DeepEqual(p.User, specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1, 29, 2000, 5000}}) {
		t.Errorf("user %+v", p.User)
	}
	if *p.OOMScoreAdj != -500 {
		t.Errorf("oom_score_adj %d, want -997 clamped to -500", *p.OOMScoreAdj)
	}
	if !slices.Equal(p.Capabilities.Bounding, inCapabilityOrder(defaultCapabilities)) {
		t.Errorf("caps %v", p.Capabilities.Bounding)
	}
	wantNS := []specs.LinuxNamespace{ns("pid", ""), ns("network", "/proc/100/ns/net"), ns("ipc", "/proc/100/ns/ipc"), ns("uts", "/proc/100/ns/uts"), ns("mount", "")}
	if !reflect.DeepEqual(s.Linux.Namespaces, wantNS) {
		t.Errorf("namespaces %v", s.Linux.Namespaces)
	}
	if s.Hostname != "" {
		t.Errorf("container sets hostname %q", s.Hostname)
	}
	if s.Linux.CgroupsPath != "/kubepods/burstable/poduid-1/crivm-c1" {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	r := s.Linux.Resources
	if *r.CPU.Shares != 256 || *r.Memory.Limit != 64<<20 || r.Memory.Swap != nil || *r.Pids.Limit != 4096 || r.Devices[0].Allow {
		t.Errorf("resources %+v", r)
	}
	if s.Linux.Seccomp != nil {
		t.Error("a seccomp profile for an unset request: want none (unconfined)")
	}
	if s.Annotations[AnnotationContainerName] != "app" || s.Annotations[AnnotationImageName] != "docker.io/library/app:1" ||
		s.Annotations[AnnotationContainerType] != ContainerTypeContainer || s.Annotations[AnnotationSandboxID] != "sb1" || s.Annotations["x"] != "y" {
		t.Errorf("annotations %v", s.Annotations)
	}
	if s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Errorf("sysctls %v", s.Linux.Sysctl)
	}
}

func TestContainerSpecSecurityVariants(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*ContainerSpecInput)
		check  func(*testing.T, *specs.Spec)
		errIs  error
	}{
		{
			name: "explicit masked and readonly lists",
			modify: func(in *ContainerSpecInput) {
				sc := in.Config.Linux.SecurityContext
				sc.MaskedPaths = []string{"/proc/kcore"}
				sc.ReadonlyPaths = []string{}
			},
			check: func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Linux.MaskedPaths, []string{"/proc/kcore"}) || s.Linux.ReadonlyPaths == nil || len(s.Linux.ReadonlyPaths) != 0 {
					t.Errorf("masked %v readonly %#v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
				}
			},
		},
		{
			name: "privileged",
			modify: func(in *ContainerSpecInput) {
				in.Sandbox.Linux.SecurityContext.Privileged = true
				in.Config.Linux.SecurityContext.Privileged = true
				in.Config.Linux.SecurityContext.MaskedPaths = []string{"/proc/kcore"}
				in.Config.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil || s.Linux.Seccomp != nil {
					t.Errorf("privileged: masked %v readonly %v seccomp %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp)
				}
				if len(s.Process.Capabilities.Bounding) != len(allCapabilities) {
					t.Errorf("privileged caps %v", s.Process.Capabilities.Bounding)
				}
				for _, m := range s.Mounts {
					if m.Destination == "/sys" && !slices.Contains(m.Options, "rw") {
						t.Errorf("privileged /sys %+v", m)
					}
				}
				if d := s.Linux.Resources.Devices; len(d) != 2 || !d[1].Allow {
					t.Errorf("privileged device rules %+v", d)
				}
			},
		},
		{
			name: "privileged container in unprivileged sandbox",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.SecurityContext.Privileged = true
			},
			errIs: errdefs.ErrInvalidArgument,
		},
		{
			name: "unset seccomp with seccomp_use_default_when_empty",
			modify: func(in *ContainerSpecInput) {
				in.SeccompUseDefaultWhenEmpty = true
			},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
					t.Errorf("seccomp %+v, want the default profile", s.Linux.Seccomp)
				}
			},
		},
		{
			name: "SYS_ADMIN widens the default seccomp profile",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}}
				in.Config.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			},
			check: func(t *testing.T, s *specs.Spec) {
				found := false
				for _, r := range s.Linux.Seccomp.Syscalls {
					found = found || (r.Action == specs.ActAllow && len(r.Args) == 0 && slices.Contains(r.Names, "unshare"))
				}
				if !found {
					t.Error("unshare not allowed with CAP_SYS_ADMIN")
				}
			},
		},
		{
			name: "unconfined seccomp",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
			},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Seccomp != nil {
					t.Error("seccomp set for Unconfined")
				}
			},
		},
		{
			name: "readonly rootfs makes etc mounts read-only",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.SecurityContext.ReadonlyRootfs = true
			},
			check: func(t *testing.T, s *specs.Spec) {
				if !s.Root.Readonly {
					t.Error("root not read-only")
				}
				for _, m := range s.Mounts {
					if m.Destination == "/etc/hosts" && !slices.Contains(m.Options, "ro") {
						t.Errorf("/etc/hosts %+v", m)
					}
				}
			},
		},
		{
			name: "CRI mount replaces /etc/hosts and sets propagation",
			modify: func(in *ContainerSpecInput) {
				dir := t.TempDir()
				hosts := filepath.Join(dir, "hosts")
				os.WriteFile(hosts, nil, 0o644)
				in.Config.Mounts = []*runtimeapi.Mount{
					{ContainerPath: "/etc/hosts", HostPath: hosts},
					{ContainerPath: "/mnt", HostPath: dir, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
				}
			},
			check: func(t *testing.T, s *specs.Spec) {
				n := 0
				for _, m := range s.Mounts {
					if m.Destination == "/etc/hosts" {
						n++
						if m.Source == "/run/crivm/sb1/hosts" {
							t.Error("default /etc/hosts kept")
						}
					}
				}
				if n != 1 || s.Linux.RootfsPropagation != "rslave" {
					t.Errorf("%d /etc/hosts mounts, propagation %q", n, s.Linux.RootfsPropagation)
				}
			},
		},
		{
			name: "device",
			modify: func(in *ContainerSpecInput) {
				in.Config.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/xnull", Permissions: "r"}}
			},
			check: func(t *testing.T, s *specs.Spec) {
				if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/xnull" {
					t.Errorf("devices %+v", s.Linux.Devices)
				}
				last := s.Linux.Resources.Devices[len(s.Linux.Resources.Devices)-1]
				if !last.Allow || last.Access != "r" || *last.Major != 1 || *last.Minor != 3 {
					t.Errorf("device rule %+v", last)
				}
			},
		},
		{
			name: "unknown image user",
			modify: func(in *ContainerSpecInput) {
				in.Image.User = "ghost"
			},
			errIs: errdefs.ErrInvalidArgument,
		},
		{
			name: "unknown capability",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"CAP_TELEPORT"}}
			},
			errIs: errdefs.ErrInvalidArgument,
		},
		{
			name: "missing localhost seccomp profile",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/nonexistent/profile.json"}
			},
			errIs: errdefs.ErrInvalidArgument,
		},
		{
			name: "oom_score_adj out of range",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.Resources.OomScoreAdj = 1001
			},
			errIs: errdefs.ErrInvalidArgument,
		},
		{
			name: "no resources leaves oom_score_adj inherited",
			modify: func(in *ContainerSpecInput) {
				in.Config.Linux.Resources = nil
			},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Process.OOMScoreAdj != nil {
					t.Errorf("oom_score_adj %d", *s.Process.OOMScoreAdj)
				}
			},
		},
		{
			name: "vm: namespaces from paths",
			modify: func(in *ContainerSpecInput) {
				in.SandboxPid = 0
				in.NamespacePaths = map[specs.LinuxNamespaceType]string{"network": "/g/net", "ipc": "/g/ipc", "uts": "/g/uts"}
			},
			check: func(t *testing.T, s *specs.Spec) {
				want := []specs.LinuxNamespace{ns("pid", ""), ns("network", "/g/net"), ns("ipc", "/g/ipc"), ns("uts", "/g/uts"), ns("mount", "")}
				if !reflect.DeepEqual(s.Linux.Namespaces, want) {
					t.Errorf("namespaces %v", s.Linux.Namespaces)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testContainerInput(t)
			tt.modify(&in)
			s, err := ContainerSpec(in)
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) {
					t.Fatalf("err = %v, want %v", err, tt.errIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, s)
			tt.check(t, s)
		})
	}
}

func TestSpecInputErrors(t *testing.T) {
	if _, err := SandboxSpec(SandboxSpecInput{ID: "x"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("sandbox without config: %v", err)
	}
	if _, err := ContainerSpec(ContainerSpecInput{ID: "x", Config: &runtimeapi.ContainerConfig{}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("container without sandbox: %v", err)
	}
	in := testContainerInput(t)
	in.Image = nil
	in.Config.Args = nil
	if _, err := ContainerSpec(in); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no command: %v", err)
	}
}

func TestWriteSpec(t *testing.T) {
	dir := t.TempDir()
	s, err := ContainerSpec(testContainerInput(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSpec(dir, s); err != nil {
		t.Fatal(err)
	}
	// Overwriting replaces the file.
	s.Hostname = "changed"
	if err := WriteSpec(dir, s); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "config.json" {
		t.Fatalf("bundle holds %v", entries)
	}
	fi, _ := os.Stat(filepath.Join(dir, "config.json"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config.json mode %v", fi.Mode())
	}
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	var back specs.Spec
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(&back, s) {
		t.Errorf("config.json does not hold the spec: %v", err)
	}
	if err := WriteSpec(filepath.Join(dir, "missing"), s); err == nil {
		t.Error("writing into a missing bundle succeeded")
	}
}

// Configs without optional parts (no linux section, no metadata) work.
func TestMinimalConfigs(t *testing.T) {
	s, err := SandboxSpec(SandboxSpecInput{ID: "sb", Config: &runtimeapi.PodSandboxConfig{}})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	if s.Linux.CgroupsPath != "/crivm/crivm-sb" || !slices.Equal(s.Process.Args, []string{"/pause"}) || s.Process.Cwd != "/" {
		t.Errorf("minimal sandbox: %q %q %q", s.Linux.CgroupsPath, s.Process.Args, s.Process.Cwd)
	}
	c, err := ContainerSpec(ContainerSpecInput{
		ID: "c", Sandbox: &runtimeapi.PodSandboxConfig{}, SandboxPid: 1,
		Config: &runtimeapi.ContainerConfig{Command: []string{"/bin/true"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	if !slices.Equal(c.Process.Env, []string{defaultPathEnv}) || c.Process.OOMScoreAdj != nil || c.Linux.Seccomp != nil {
		t.Errorf("minimal container: env %q oom %v seccomp %v", c.Process.Env, c.Process.OOMScoreAdj, c.Linux.Seccomp != nil)
	}
}

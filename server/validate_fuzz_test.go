package server

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/podhost"
)

// fuzzPodSeeds are realistic pod configs (the kubelet's, critest's) and
// edge cases of each field the validators look at.
func fuzzPodSeeds() []*runtimeapi.PodSandboxConfig {
	const uid = "0b7c7e8e-5b0f-4a43-9d0c-2b7f1e0c9a11"
	kubelet := func() *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{
			Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web-7d9f8c6b5-x2x4q", Namespace: "default", Uid: uid, Attempt: 1},
			Hostname:     "web-7d9f8c6b5-x2x4q",
			LogDirectory: "/var/log/pods/default_web-7d9f8c6b5-x2x4q_" + uid,
			DnsConfig: &runtimeapi.DNSConfig{
				Servers:  []string{"10.96.0.10"},
				Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
				Options:  []string{"ndots:5"},
			},
			PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080, HostIp: "127.0.0.1"}},
			Labels:       map[string]string{"app": "web", "io.kubernetes.pod.name": "web-7d9f8c6b5-x2x4q"},
			Annotations:  map[string]string{"kubernetes.io/config.source": "api"},
			Linux: &runtimeapi.LinuxPodSandboxConfig{
				CgroupParent: "/kubepods/burstable/pod" + uid,
				SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions:   &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER},
					RunAsUser:          &runtimeapi.Int64Value{Value: 1000},
					SupplementalGroups: []int64{2000},
					Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				},
				Sysctls:   map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
				Resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, MemoryLimitInBytes: 128 << 20},
				Overhead:  &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 160 << 20},
			},
		}
	}
	seeds := []*runtimeapi.PodSandboxConfig{kubelet(), {}, {Metadata: &runtimeapi.PodSandboxMetadata{Name: "a", Namespace: "b", Uid: "c"}}}
	for _, mutate := range []func(*runtimeapi.PodSandboxConfig){
		// critest: upper case, no hostname, no log directory, a slice.
		func(c *runtimeapi.PodSandboxConfig) {
			c.Metadata.Name, c.Hostname, c.LogDirectory = "create-PodSandbox-with-DNS-config8f0e2d3c", "", ""
			c.Linux.CgroupParent = "kubepods-burstable-pod0b7c7e8e_5b0f.slice"
		},
		func(c *runtimeapi.PodSandboxConfig) { c.Hostname, c.Metadata.Name = "", strings.Repeat("a", 62)+"-.x" },
		func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web-0.web.default.svc.cluster.local" },
		func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a;IP=10.0.0.9" },
		func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/../../etc" },
		func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "../../../../evil" },
		func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"fd00::10", "fe80::1%eth0"} },
		func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"ndots:5\nnameserver 6.6.6.6"} },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE,
			}
			c.Linux.SecurityContext.Privileged = true
			c.Linux.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1", "net.core.somaxconn": "1024"}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
				Mode: runtimeapi.NamespaceMode_POD,
				Uids: []*runtimeapi.IDMapping{{HostId: 65536, ContainerId: 0, Length: 65536}},
				Gids: []*runtimeapi.IDMapping{{HostId: 65536, ContainerId: 0, Length: 65536}},
			}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}
		},
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: 1, CpusetCpus: "0-3,6", CpusetMems: "0",
				HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}, Unified: map[string]string{"memory.high": "max"}}
		},
		func(c *runtimeapi.PodSandboxConfig) { c.PortMappings = []*runtimeapi.PortMapping{{HostPort: 70000}} },
		func(c *runtimeapi.PodSandboxConfig) { c.Annotations = map[string]string{"a\x00b": "v"} },
		func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/var/lib/kubelet/seccomp/p.json"}
			c.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 3000}
		},
	} {
		c := kubelet()
		mutate(c)
		seeds = append(seeds, c)
	}
	return seeds
}

// fuzzContainerSeeds are what the kubelet and critest send, and edge cases.
func fuzzContainerSeeds() []*runtimeapi.ContainerConfig {
	kubelet := func() *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{
			Metadata:   &runtimeapi.ContainerMetadata{Name: "app", Attempt: 1},
			Image:      &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1.36", UserSpecifiedImage: "busybox:1.36"},
			Command:    []string{"/bin/sh", "-c"},
			Args:       []string{"sleep 3600"},
			WorkingDir: "/srv",
			Envs:       []*runtimeapi.KeyValue{{Key: "PATH", Value: []byte("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")}, {Key: "EMPTY"}},
			Mounts: []*runtimeapi.Mount{
				{ContainerPath: "/etc/hosts", HostPath: "/var/lib/kubelet/pods/u/etc-hosts"},
				{ContainerPath: "/dev/termination-log", HostPath: "/var/lib/kubelet/pods/u/containers/app/0", Propagation: runtimeapi.MountPropagation_PROPAGATION_PRIVATE},
				{ContainerPath: "/vol", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "sha256:4f6c", UserSpecifiedImage: "registry.example/data:1"}, ImageSubPath: "usr/share"},
			},
			Devices:     []*runtimeapi.Device{{HostPath: "/dev/fuse", ContainerPath: "/dev/fuse", Permissions: "rwm"}},
			LogPath:     "app/1.log",
			Labels:      map[string]string{"io.kubernetes.container.name": "app"},
			Annotations: map[string]string{"io.kubernetes.container.restartCount": "1"},
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuShares: 102, CpuPeriod: 100000, CpuQuota: 20000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 999},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					Capabilities:     &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"ALL"}},
					RunAsUser:        &runtimeapi.Int64Value{Value: 1000},
					MaskedPaths:      []string{"/proc/kcore"},
					ReadonlyPaths:    []string{"/proc/sys"},
					NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
					Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
					Apparmor:         &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined},
				},
			},
		}
	}
	seeds := []*runtimeapi.ContainerConfig{kubelet(), {}, {Metadata: &runtimeapi.ContainerMetadata{Name: "c"}}}
	for _, mutate := range []func(*runtimeapi.ContainerConfig){
		func(c *runtimeapi.ContainerConfig) { c.LogPath = "container-for-DNS-config-test-8f0e2d3c.log" },
		func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/../../x.log" },
		func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/.." },
		func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "../app" },
		func(c *runtimeapi.ContainerConfig) { c.Mounts[2].ImageSubPath = "etc/../../x" },
		func(c *runtimeapi.ContainerConfig) { c.Mounts[2].Readonly = false },
		func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "/" },
		func(c *runtimeapi.ContainerConfig) {
			c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: "A=B", Value: []byte("c")})
		},
		func(c *runtimeapi.ContainerConfig) { c.Args = []string{"sleep", "1\x00; rm -rf /"} },
		func(c *runtimeapi.ContainerConfig) { c.Devices[0].Permissions = "rwx" },
		func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuQuota: -1, MemorySwapLimitInBytes: -1, CpusetCpus: "0,2-1"}
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"CAP_SYS_ADMIN", "ALL", "NOT_A_CAP"}}
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.RunAsUser, c.Linux.SecurityContext.RunAsUsername = nil, "nobody"
			c.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 65534}
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "profiles/audit.json"}
			c.Linux.SecurityContext.ApparmorProfile = "localhost/k8s-apparmor-example-deny-write"
		},
		func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources.Unified = map[string]string{"cgroup.procs": "1"}
		},
	} {
		c := kubelet()
		mutate(c)
		seeds = append(seeds, c)
	}
	return seeds
}

// The bounds an accepted config stays within, stated here rather than
// taken from validate.go: a Kubernetes name (a DNS subdomain) and the
// kernel's nodename.
const (
	fuzzMaxNameBytes     = 253
	fuzzMaxHostnameBytes = 64
)

// checkClassified wants err nil, InvalidArgument or ResourceExhausted.
func checkClassified(t *testing.T, err error) {
	t.Helper()
	switch code := errdefs.Code(err); code {
	case codes.OK, codes.InvalidArgument, codes.ResourceExhausted:
	default:
		t.Fatalf("refusal %q has code %v, want InvalidArgument or ResourceExhausted", err, code)
	}
}

// reload is m marshalled and unmarshalled again.
func reload[M proto.Message](t *testing.T, m M, fresh M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshalling a config that unmarshalled: %v", err)
	}
	if err := proto.Unmarshal(b, fresh); err != nil {
		t.Fatalf("unmarshalling a config just marshalled: %v", err)
	}
	return fresh
}

// safeName is what a name that reaches the host (file names, conmon's
// command line) must be; a pod's names, which become CNI_ARGS values, have
// no ';' or '=' either.
func safeName(s string, cniArg bool) bool {
	if cniArg && strings.ContainsAny(s, ";=") {
		return false
	}
	return s != "" && len(s) <= fuzzMaxNameBytes && utf8.ValidString(s) && !strings.Contains(s, "/") &&
		strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) < 0
}

// FuzzValidatePodSandboxConfig decodes a PodSandboxConfig (skipping bytes
// that are not one) and validates it as RunPodSandbox does. Whatever the
// config: no panic; a refusal is InvalidArgument or ResourceExhausted;
// the config marshalled and unmarshalled again gets the same answer; an
// accepted config has safe names, a non-empty hostname that fits the
// kernel's nodename, an absolute clean log directory and a cgroup parent
// without a ".." element.
func FuzzValidatePodSandboxConfig(f *testing.F) {
	for _, c := range fuzzPodSeeds() {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := &runtimeapi.PodSandboxConfig{}
		if err := proto.Unmarshal(data, cfg); err != nil {
			return
		}
		err := validatePodConfig(cfg)
		checkClassified(t, err)
		again := validatePodConfig(reload(t, cfg, &runtimeapi.PodSandboxConfig{}))
		if errdefs.Code(err) != errdefs.Code(again) {
			t.Fatalf("the same config, re-encoded: %v, then %v", err, again)
		}
		if err != nil {
			return
		}
		md := cfg.GetMetadata()
		for _, n := range []string{md.GetName(), md.GetNamespace(), md.GetUid()} {
			if !safeName(n, true) {
				t.Fatalf("accepted the metadata name, namespace or uid %q", n)
			}
		}
		if h := podhost.Hostname(cfg); h == "" || len(h) > fuzzMaxHostnameBytes || !utf8.ValidString(h) ||
			strings.IndexFunc(h, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 {
			t.Fatalf("accepted a pod whose hostname is %q", h)
		}
		if d := cfg.GetLogDirectory(); d != "" && (!filepath.IsAbs(d) || filepath.Clean(d) != d || strings.IndexByte(d, 0) >= 0) {
			t.Fatalf("accepted the log directory %q", d)
		}
		if p := cfg.GetLinux().GetCgroupParent(); slices.Contains(strings.Split(p, "/"), "..") || strings.IndexByte(p, 0) >= 0 {
			t.Fatalf("accepted the cgroup parent %q", p)
		}
	})
}

// FuzzValidateContainerConfig decodes a ContainerConfig (skipping bytes
// that are not one) and validates it as CreateContainer does. Whatever
// the config: no panic; a refusal is InvalidArgument or
// ResourceExhausted; the config re-encoded gets the same answer; an
// accepted config has a safe name, a log path that names a file strictly
// inside the pod's log directory, mounts at absolute paths other than the
// root, and read-only image volumes whose sub path stays inside the image.
func FuzzValidateContainerConfig(f *testing.F) {
	for _, c := range fuzzContainerSeeds() {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := &runtimeapi.ContainerConfig{}
		if err := proto.Unmarshal(data, cfg); err != nil {
			return
		}
		err := validateContainerConfig(cfg)
		checkClassified(t, err)
		again := validateContainerConfig(reload(t, cfg, &runtimeapi.ContainerConfig{}))
		if errdefs.Code(err) != errdefs.Code(again) {
			t.Fatalf("the same config, re-encoded: %v, then %v", err, again)
		}
		if err != nil {
			return
		}
		if n := cfg.GetMetadata().GetName(); !safeName(n, false) {
			t.Fatalf("accepted the container name %q", n)
		}
		if p := cfg.GetLogPath(); p != "" {
			const dir = "/var/log/pods/ns_pod_uid"
			if full := filepath.Join(dir, p); !strings.HasPrefix(full, dir+"/") || strings.IndexByte(p, 0) >= 0 {
				t.Fatalf("accepted the log path %q: the log file would be %s", p, full)
			}
		}
		for _, m := range cfg.GetMounts() {
			if dst := m.GetContainerPath(); !filepath.IsAbs(dst) || filepath.Clean(dst) == "/" {
				t.Fatalf("accepted a mount at %q", dst)
			}
			if m.GetImage() == nil {
				if m.GetImageSubPath() != "" {
					t.Fatalf("accepted image_sub_path %q on a mount without an image", m.GetImageSubPath())
				}
				continue
			}
			const root = "/run/crivm/image-volumes/v"
			sub := filepath.Join(root, m.GetImageSubPath())
			if !m.GetReadonly() || m.GetHostPath() != "" || (sub != root && !strings.HasPrefix(sub, root+"/")) {
				t.Fatalf("accepted the image volume %v", m)
			}
		}
	})
}

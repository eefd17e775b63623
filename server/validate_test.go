package server

import (
	"errors"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// kubeletPod is what the kubelet sends for a pod: every rule must accept it.
func kubeletPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web-7d9f8c6b5-x2x4q", Namespace: "default", Uid: "0b7c7e8e-5b0f-4a43-9d0c-2b7f1e0c9a11"},
		Hostname:     "web-7d9f8c6b5-x2x4q",
		LogDirectory: "/var/log/pods/default_web-7d9f8c6b5-x2x4q_0b7c7e8e-5b0f-4a43-9d0c-2b7f1e0c9a11",
		DnsConfig: &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10"},
			Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			Options:  []string{"ndots:5"},
		},
		Labels:      map[string]string{"app": "web", "io.kubernetes.pod.name": "web-7d9f8c6b5-x2x4q"},
		Annotations: map[string]string{"kubernetes.io/config.source": "api"},
		Linux:       &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/burstable/pod0b7c7e8e-5b0f-4a43-9d0c-2b7f1e0c9a11"},
	}
}

func TestValidatePodConfig(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name   string
		mutate func(*runtimeapi.PodSandboxConfig)
		// wantField is "" for an accepted config, else a word the
		// InvalidArgument message must hold (the CRI field).
		wantField string
	}{
		{"kubelet pod", func(*runtimeapi.PodSandboxConfig) {}, ""},
		// critest's names: upper case, dashes and a UUID suffix.
		{"critest pod", func(c *runtimeapi.PodSandboxConfig) {
			c.Metadata = &runtimeapi.PodSandboxMetadata{Name: "create-PodSandbox-with-DNS-config" + "8f0e2d3c-6a3b-4b8e-9c55-0d1f2e3a4b5c", Namespace: "cri-test-namespace8f0e2d3c-6a3b-4b8e-9c55-0d1f2e3a4b5c", Uid: "cri-test-uid8f0e2d3c-6a3b-4b8e-9c55-0d1f2e3a4b5c"}
			c.Hostname, c.LogDirectory = "", ""
			c.Linux.CgroupParent = "/kubepods.slice"
		}, ""},

		// metadata: empty, '/', NUL, control characters, whitespace, 253 bytes.
		{"name empty", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "" }, "metadata.name"},
		{"name of 253 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name, c.Hostname = long(253), "" }, ""},
		{"name of 254 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = long(254) }, "metadata.name"},
		{"name with slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a/../b" }, "metadata.name"},
		{"name with NUL", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\x00b" }, "metadata.name"},
		{"name with newline", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\nb" }, "metadata.name"},
		{"name with space", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a b" }, "metadata.name"},
		{"name with CNI_ARGS separator", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a;IP=10.0.0.9" }, "metadata.name"},
		{"namespace empty", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "" }, "metadata.namespace"},
		{"namespace with slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "../etc" }, "metadata.namespace"},
		{"namespace with tab", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "a\tb" }, "metadata.namespace"},
		{"uid empty", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "" }, "metadata.uid"},
		{"uid with NUL", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "u\x00" }, "metadata.uid"},
		{"uid of 254 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = long(254) }, "metadata.uid"},

		// hostname: an RFC 1123 label, or an FQDN of at most 64 bytes.
		{"hostname of 63 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = long(63) }, ""},
		{"hostname of 64 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = long(64) }, "hostname"},
		{"hostname as FQDN", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web-0.web.default.svc.cluster.local" }, ""},
		{"hostname FQDN of 64 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = long(31) + "." + long(32) }, ""},
		{"hostname FQDN of 65 bytes", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = long(32) + "." + long(32) }, "hostname"},
		{"hostname upper case", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "Web" }, "hostname"},
		{"hostname with newline", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web\n10.0.0.1 evil" }, "hostname"},
		{"hostname starting with dash", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "-web" }, "hostname"},
		{"hostname with empty label", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web..x" }, "hostname"},
		{"no hostname, long name derives one", func(c *runtimeapi.PodSandboxConfig) { c.Hostname, c.Metadata.Name = "", long(70) }, ""},
		{"no hostname, name derives nothing", func(c *runtimeapi.PodSandboxConfig) { c.Hostname, c.Metadata.Name = "", strings.Repeat("-", 70) }, "hostname"},

		// log_directory: absolute and clean.
		{"log_directory unset", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "" }, ""},
		{"log_directory relative", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "var/log/pods/x" }, "log_directory"},
		{"log_directory not clean", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/../../etc" }, "log_directory"},
		{"log_directory trailing slash", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/x/" }, "log_directory"},
		{"log_directory with NUL", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/x\x00" }, "log_directory"},
		{"log_directory too long", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/" + long(4096) }, "log_directory"},

		// linux.cgroup_parent.
		{"cgroup_parent unset", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "" }, ""},
		{"cgroup_parent systemd slice name", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.CgroupParent = "kubepods-burstable-pod0b7c7e8e_5b0f_4a43_9d0c_2b7f1e0c9a11.slice"
		}, ""},
		{"cgroup_parent systemd expanded path", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.CgroupParent = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice"
		}, ""},
		{"cgroup_parent relative dotdot", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "../../../../evil" }, "cgroup_parent"},
		{"cgroup_parent absolute dotdot", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods/../../evil" }, "cgroup_parent"},
		{"cgroup_parent dotdot slice", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "../x.slice" }, "cgroup_parent"},
		{"cgroup_parent not clean", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods//pod" }, "cgroup_parent"},
		{"cgroup_parent relative path", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "kubepods/pod" }, "cgroup_parent"},
		{"cgroup_parent with newline", func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods\n" }, "cgroup_parent"},

		// dns_config.
		{"dns IPv6 server", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"fd00::10", "fe80::1%eth0"} }, ""},
		{"dns server not an IP", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"10.96.0.10\nnameserver 1.2.3.4"} }, "dns_config.servers[0]"},
		{"dns server hostname", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"8.8.8.8", "dns.example"} }, "dns_config.servers[1]"},
		{"dns 16 servers", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = repeat("10.0.0.1", 16) }, ""},
		{"dns 17 servers", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = repeat("10.0.0.1", 17) }, "dns_config.servers"},
		{"dns search with newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a.local\nnameserver 6.6.6.6"} }, "dns_config.searches[0]"},
		{"dns search with space", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a.local b.local"} }, "dns_config.searches[0]"},
		{"dns search empty", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{""} }, "dns_config.searches[0]"},
		{"dns 32 searches", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = repeat("svc.cluster.local", 32) }, ""},
		{"dns 33 searches", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = repeat("a", 33) }, "dns_config.searches"},
		{"dns searches over 2048 bytes", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = repeat(long(200), 11) }, "dns_config.searches"},
		{"dns options", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig.Options = []string{"ndots:5", "timeout:2", "attempts:3", "single-request-reopen", "edns0", "trust-ad"}
		}, ""},
		{"dns option with newline", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"ndots:5\nnameserver 6.6.6.6"} }, "dns_config.options[0]"},
		{"dns option with tab", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = []string{"ndots:5", "a\tb"} }, "dns_config.options[1]"},
		{"dns 33 options", func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Options = repeat("edns0", 33) }, "dns_config.options"},

		// labels + annotations: 256 KiB of keys and values, no NUL in a key.
		{"metadata of 256 KiB", func(c *runtimeapi.PodSandboxConfig) {
			c.Labels = map[string]string{"k": long(128<<10 - 1)}
			c.Annotations = map[string]string{"a": long(128<<10 - 1)}
		}, ""},
		{"metadata over 256 KiB", func(c *runtimeapi.PodSandboxConfig) {
			c.Labels = map[string]string{"k": long(128 << 10)}
			c.Annotations = map[string]string{"a": long(128 << 10)}
		}, "labels and annotations"},
		{"label key with NUL", func(c *runtimeapi.PodSandboxConfig) { c.Labels = map[string]string{"a\x00b": "v"} }, "labels"},
		{"annotation key with NUL", func(c *runtimeapi.PodSandboxConfig) { c.Annotations = map[string]string{"a\x00b": "v"} }, "annotations"},
		{"annotation value with newline", func(c *runtimeapi.PodSandboxConfig) { c.Annotations = map[string]string{"a": "line1\nline2"} }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kubeletPod()
			tc.mutate(cfg)
			checkValidation(t, validatePodConfig(cfg), tc.wantField)
		})
	}
}

func TestValidatePodConfigMissing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       *runtimeapi.PodSandboxConfig
		wantField string
	}{
		{"no config", nil, "config"},
		{"no metadata", &runtimeapi.PodSandboxConfig{}, "metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidation(t, validatePodConfig(tc.cfg), tc.wantField)
		})
	}
}

func TestValidateContainerConfig(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mutate    func(*runtimeapi.ContainerConfig)
		wantField string
	}{
		{"kubelet container", func(*runtimeapi.ContainerConfig) {}, ""},
		{"critest container", func(c *runtimeapi.ContainerConfig) {
			c.Metadata.Name = "container-for-DNS-config-test-8f0e2d3c-6a3b-4b8e-9c55-0d1f2e3a4b5c"
			c.LogPath = "container-for-DNS-config-test-8f0e2d3c.log"
		}, ""},

		{"name empty", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "" }, "metadata.name"},
		{"no metadata", func(c *runtimeapi.ContainerConfig) { c.Metadata = nil }, "metadata.name"},
		{"name of 253 bytes", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = strings.Repeat("c", 253) }, ""},
		{"name of 254 bytes", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = strings.Repeat("c", 254) }, "metadata.name"},
		{"name with slash", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "../app" }, "metadata.name"},
		{"name with NUL", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "app\x00" }, "metadata.name"},
		{"name with escape", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "app\x1b[2J" }, "metadata.name"},

		{"log_path unset", func(c *runtimeapi.ContainerConfig) { c.LogPath = "" }, ""},
		{"log_path flat file", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app.log" }, ""},
		{"log_path dotdot inside", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/../app.log" }, ""},
		{"log_path escaping", func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../../x.log" }, "log_path"},
		{"log_path escaping midway", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/../../x.log" }, "log_path"},
		{"log_path absolute", func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/cron.d/x" }, "log_path"},
		{"log_path the directory itself", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/.." }, "log_path"},
		{"log_path with NUL", func(c *runtimeapi.ContainerConfig) { c.LogPath = "app/0.log\x00" }, "log_path"},
		{"log_path of 4096 bytes", func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l", 4096) }, ""},
		{"log_path of 4097 bytes", func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l", 4097) }, "log_path"},

		{"metadata of 256 KiB", func(c *runtimeapi.ContainerConfig) {
			c.Labels = map[string]string{"k": strings.Repeat("v", 256<<10-1)}
			c.Annotations = nil
		}, ""},
		{"metadata over 256 KiB", func(c *runtimeapi.ContainerConfig) {
			c.Labels = nil
			c.Annotations = map[string]string{"k": strings.Repeat("v", 256<<10)}
		}, "labels and annotations"},
		{"label key with NUL", func(c *runtimeapi.ContainerConfig) { c.Labels = map[string]string{"\x00": ""} }, "labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{
				Metadata:    &runtimeapi.ContainerMetadata{Name: "app", Attempt: 1},
				Image:       &runtimeapi.ImageSpec{Image: "busybox"},
				LogPath:     "app/1.log",
				Labels:      map[string]string{"io.kubernetes.container.name": "app"},
				Annotations: map[string]string{"io.kubernetes.container.restartCount": "1"},
			}
			tc.mutate(cfg)
			checkValidation(t, validateContainerConfig(cfg), tc.wantField)
		})
	}
}

func TestValidateImageVolumes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*runtimeapi.Mount)
		// want is "" for an accepted mount, else a word the
		// InvalidArgument message must hold.
		want string
	}{
		{"kubelet image volume", func(*runtimeapi.Mount) {}, ""},
		{"sub path", func(m *runtimeapi.Mount) { m.ImageSubPath = "etc" }, ""},
		{"nested sub path", func(m *runtimeapi.Mount) { m.ImageSubPath = "usr/share/doc" }, ""},
		{"sub path with dotdot inside", func(m *runtimeapi.Mount) { m.ImageSubPath = "etc/../usr" }, ""},
		{"host to container", func(m *runtimeapi.Mount) { m.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER }, ""},
		{"recursive read-only", func(m *runtimeapi.Mount) { m.RecursiveReadOnly = true }, ""},

		{"readonly false", func(m *runtimeapi.Mount) { m.Readonly = false }, "readonly"},
		{"bidirectional", func(m *runtimeapi.Mount) { m.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL }, "bidirectional"},
		{"sub path escaping", func(m *runtimeapi.Mount) { m.ImageSubPath = "../../etc" }, "image_sub_path"},
		{"sub path escaping midway", func(m *runtimeapi.Mount) { m.ImageSubPath = "etc/../../x" }, "image_sub_path"},
		{"sub path dotdot", func(m *runtimeapi.Mount) { m.ImageSubPath = ".." }, "image_sub_path"},
		{"sub path absolute", func(m *runtimeapi.Mount) { m.ImageSubPath = "/etc" }, "image_sub_path"},
		{"sub path with NUL", func(m *runtimeapi.Mount) { m.ImageSubPath = "etc\x00" }, "image_sub_path"},
		{"sub path of 4097 bytes", func(m *runtimeapi.Mount) { m.ImageSubPath = strings.Repeat("s", 4097) }, "image_sub_path"},
		{"host path too", func(m *runtimeapi.Mount) { m.HostPath = "/var/lib/crivm" }, "host_path"},
		{"empty image", func(m *runtimeapi.Mount) { m.Image = &runtimeapi.ImageSpec{} }, "image.image"},
		{"sub path without image", func(m *runtimeapi.Mount) { m.Image, m.HostPath, m.ImageSubPath = nil, "/srv", "etc" }, "image_sub_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := &runtimeapi.Mount{
				ContainerPath: "/vol",
				Readonly:      true,
				Image:         &runtimeapi.ImageSpec{Image: "sha256:4f6c", UserSpecifiedImage: "registry.example/data:1"},
			}
			tc.mutate(vol)
			cfg := &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
				Image:    &runtimeapi.ImageSpec{Image: "busybox"},
				Mounts:   []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data"}, vol},
			}
			checkValidation(t, validateContainerConfig(cfg), tc.want)
		})
	}
}

// checkValidation wants err nil when wantField is "", else InvalidArgument
// naming wantField.
func checkValidation(t *testing.T, err error, wantField string) {
	t.Helper()
	switch {
	case wantField == "" && err != nil:
		t.Errorf("got %v, want accepted", err)
	case wantField == "":
	case err == nil:
		t.Errorf("got accepted, want InvalidArgument naming %q", wantField)
	case !errors.Is(err, errdefs.ErrInvalidArgument):
		t.Errorf("got %v, want InvalidArgument", err)
	case !strings.Contains(err.Error(), wantField):
		t.Errorf("got %q, want a message naming %q", err, wantField)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

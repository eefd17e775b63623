package server

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

		// Names and log directories are in conmon's command line: ASCII.
		{"name not ASCII", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "ünïcode" }, "metadata.name"},
		{"namespace not ASCII", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "nämespace" }, "metadata.namespace"},
		{"log_directory not ASCII", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/ü" }, "log_directory"},
		{"log_directory element of 255 bytes", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/" + long(255) }, ""},
		{"log_directory element of 256 bytes", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/" + long(256) }, "log_directory"},

		// port_mappings.
		{"port mapping", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 5353, HostIp: "127.0.0.1"}}
		}, ""},
		{"port without host port", func(c *runtimeapi.PodSandboxConfig) { c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80}} }, ""},
		{"host port 65536", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 65536}}
		}, "port_mappings[0].host_port"},
		{"host port negative", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: -1}}
		}, "port_mappings[0].host_port"},
		{"host port without container port", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{HostPort: 8080}}
		}, "port_mappings[0].container_port"},
		{"container port 70000", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 70000}}
		}, "port_mappings[0].container_port"},
		{"unknown protocol", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{Protocol: 99, ContainerPort: 80, HostPort: 8080}}
		}, "port_mappings[0].protocol"},
		{"host IP not an address", func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: 8080, HostIp: "garbage"}}
		}, "port_mappings[0].host_ip"},

		// linux.sysctls, as the spec generator checks them.
		{"sysctl", func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"} }, ""},
		{"sysctl with empty element", func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"net..ipv4": "1"} }, "linux.sysctls"},
		{"sysctl with NUL", func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"net.ipv4\x00": "1"} }, "linux.sysctls"},
		{"sysctl value with NUL", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1\x00"}
		}, "linux.sysctls"},
		{"sysctl not namespaced", func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{"vm.swappiness": "1"} }, "linux.sysctls"},
		{"net sysctl with host network", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
			c.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
		}, "linux.sysctls"},

		// linux.security_context.
		{"run_as_user 2^31-1", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext = podUser(1<<31-1, nil) }, ""},
		{"run_as_user 2^31", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext = podUser(1<<31, nil) }, "run_as_user"},
		{"run_as_user negative", func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext = podUser(-1, nil) }, "run_as_user"},
		{"run_as_group negative", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = podUser(0, &runtimeapi.Int64Value{Value: -1})
		}, "run_as_group"},
		{"run_as_group without user", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{RunAsGroup: &runtimeapi.Int64Value{Value: 1}}
		}, "run_as_group"},
		{"supplemental group of 2^32", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{SupplementalGroups: []int64{1 << 32}}
		}, "supplemental_groups[0]"},
		{"unknown network mode", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: 99}}
		}, "namespace_options.network"},
		{"unknown seccomp profile type", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: 99}}
		}, "seccomp"},
		{"seccomp profile path with NUL", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/p\x00"}}
		}, "seccomp"},

		// linux.resources and linux.overhead (checkResources has the rest).
		{"pod resources", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, MemoryLimitInBytes: 128 << 20}
		}, ""},
		{"pod memory limit negative", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1 << 20}
		}, "linux.resources.memory_limit_in_bytes"},
		{"pod overhead negative", func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Overhead = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}
		}, "linux.overhead.memory_limit_in_bytes"},
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
		{"log_path of 4095 bytes", func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l/", 2047) + "l" }, ""},
		{"log_path of 4096 bytes", func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l/", 2048) }, "log_path"},
		{"log_path element of 256 bytes", func(c *runtimeapi.ContainerConfig) { c.LogPath = strings.Repeat("l", 256) }, "log_path"},
		{"log_path not ASCII", func(c *runtimeapi.ContainerConfig) { c.LogPath = "ü.log" }, "log_path"},
		{"name not ASCII", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "äpp" }, "metadata.name"},

		// command, args, envs, working_dir: the process runc starts.
		{"command with NUL", func(c *runtimeapi.ContainerConfig) { c.Command = []string{"sh", "-c\x00"} }, "command[1]"},
		{"args with NUL", func(c *runtimeapi.ContainerConfig) { c.Args = []string{"a\x00b"} }, "args[0]"},
		{"arg of MAX_ARG_STRLEN-1 bytes", func(c *runtimeapi.ContainerConfig) { c.Args = []string{strings.Repeat("a", 131071)} }, ""},
		{"arg of MAX_ARG_STRLEN bytes", func(c *runtimeapi.ContainerConfig) { c.Args = []string{strings.Repeat("a", 131072)} }, "args[0]"},
		{"env", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b=c")}} }, ""},
		{"env key empty", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{{Key: "", Value: []byte("v")}} }, "envs[0]"},
		{"env key with =", func(c *runtimeapi.ContainerConfig) { c.Envs = []*runtimeapi.KeyValue{{Key: "A=B", Value: []byte("v")}} }, "envs[0]"},
		{"env key with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "A\x00", Value: []byte("v")}}
		}, "envs[0]"},
		{"env value with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "A", Value: []byte("v")}, {Key: "B", Value: []byte("v\x00")}}
		}, "envs[1]"},
		{"env too long", func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "A", Value: []byte(strings.Repeat("v", 131070))}}
		}, "envs[0]"},
		{"working_dir", func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "/srv/app" }, ""},
		{"working_dir relative", func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "srv" }, "working_dir"},
		{"working_dir with NUL", func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "/srv\x00" }, "working_dir"},
		{"working_dir element of 256 bytes", func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "/" + strings.Repeat("w", 256) }, "working_dir"},

		// mounts and devices.
		{"mount", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}}
		}, ""},
		{"mount container path relative", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "data", HostPath: "/srv/data"}}
		}, "mounts[0].container_path"},
		{"mount at the root", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/", HostPath: "/srv/data"}}
		}, "mounts[0].container_path"},
		{"mount container path with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data\x00", HostPath: "/srv/data"}}
		}, "mounts[0].container_path"},
		{"mount host path empty", func(c *runtimeapi.ContainerConfig) { c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data"}} }, "mounts[0].host_path"},
		{"mount host path with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv\x00"}}
		}, "mounts[0].host_path"},
		{"mount propagation unknown", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data", Propagation: 99}}
		}, "mounts[0].propagation"},
		{"mount bidirectional", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
		}, "mounts[0].propagation"},
		{"mount bidirectional, privileged", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}}
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{Privileged: true})
		}, ""},
		{"mount options", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data", MountOptions: []string{"ro", "nosuid"}}}
		}, ""},
		{"mount option not allowed", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/srv/data", MountOptions: []string{"rbind"}}}
		}, "mounts[0].mount_options"},
		{"device", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/fuse", HostPath: "/dev/fuse", Permissions: "rw"}}
		}, ""},
		{"device permissions", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/fuse", Permissions: "rwx"}}
		}, "devices[0].permissions"},
		{"device host path relative", func(c *runtimeapi.ContainerConfig) { c.Devices = []*runtimeapi.Device{{HostPath: "dev/fuse"}} }, "devices[0].host_path"},
		{"device container path with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/x\x00", HostPath: "/dev/fuse"}}
		}, "devices[0].container_path"},

		// linux: resources (checkResources has the rest) and security.
		{"resources", func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 2, MemoryLimitInBytes: 6 << 20, OomScoreAdj: -997}}
		}, ""},
		{"cpuset garbage", func(c *runtimeapi.ContainerConfig) {
			c.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpusetCpus: "garbage-9999"}}
		}, "linux.resources.cpuset_cpus"},
		{"run_as_user 2^31", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: 1 << 31}})
		}, "run_as_user"},
		{"run_as_username with colon", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "a:b"})
		}, "run_as_username"},
		{"run_as_username with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "a\x00"})
		}, "run_as_username"},
		{"masked path relative", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{MaskedPaths: []string{"/proc/kcore", "proc/x"}})
		}, "masked_paths[1]"},
		{"readonly path with NUL", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{ReadonlyPaths: []string{"/proc/sys\x00"}})
		}, "readonly_paths[0]"},
		{"capabilities", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}, DropCapabilities: []string{"ALL"}}})
		}, ""},
		{"unknown capability", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"CAP_GARBAGE"}}})
		}, "capabilities"},
		{"unknown apparmor profile type", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: 99}})
		}, "apparmor"},
		{"unknown pid mode", func(c *runtimeapi.ContainerConfig) {
			c.Linux = ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: 99}})
		}, "namespace_options.pid"},

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

func podUser(uid int64, gid *runtimeapi.Int64Value) *runtimeapi.LinuxSandboxSecurityContext {
	return &runtimeapi.LinuxSandboxSecurityContext{RunAsUser: &runtimeapi.Int64Value{Value: uid}, RunAsGroup: gid}
}

func ctrSecurity(sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.LinuxContainerConfig {
	return &runtimeapi.LinuxContainerConfig{SecurityContext: sc}
}

// The total of command, args and envs is bounded: ResourceExhausted.
func TestValidateArgvTotal(t *testing.T) {
	// Each arg counts with its NUL: 128 KiB.
	arg := strings.Repeat("a", 128<<10-1)
	for _, tc := range []struct {
		name string
		args int
		want error
	}{
		{"2 MiB", 16, nil},
		{"over 2 MiB", 17, errdefs.ErrResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Args: repeat(arg, tc.args)}
			err := validateContainerConfig(cfg)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCheckResources(t *testing.T) {
	res := func(mutate func(*runtimeapi.LinuxContainerResources)) *runtimeapi.LinuxContainerResources {
		// What the kubelet sends for a burstable container.
		r := &runtimeapi.LinuxContainerResources{CpuShares: 102, CpuPeriod: 100000, CpuQuota: 50000, MemoryLimitInBytes: 128 << 20, OomScoreAdj: 968}
		mutate(r)
		return r
	}
	for _, tc := range []struct {
		name string
		r    *runtimeapi.LinuxContainerResources
		// want is "" for accepted resources, else the field the
		// InvalidArgument message must name.
		want string
	}{
		{"none", nil, ""},
		{"all zero", &runtimeapi.LinuxContainerResources{}, ""},
		{"kubelet burstable", res(func(*runtimeapi.LinuxContainerResources) {}), ""},
		{"every field", res(func(r *runtimeapi.LinuxContainerResources) {
			r.MemorySwapLimitInBytes, r.CpusetCpus, r.CpusetMems = 256<<20, "0-3,6", "0"
			r.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}, {PageSize: "1GB"}, {PageSize: "64KB"}}
			r.Unified = map[string]string{"memory.high": "max", "hugetlb.2MB.max": "0", "memory.swap.max": "0"}
		}), ""},

		{"cpu_shares 1", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 1 }), "linux.cpu_shares"},
		{"cpu_shares 2", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 2 }), ""},
		{"cpu_shares 262144", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 262144 }), ""},
		{"cpu_shares 262145", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 262145 }), "linux.cpu_shares"},
		{"cpu_shares negative", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = -5 }), "linux.cpu_shares"},
		{"cpu_period 999", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = 999 }), "linux.cpu_period"},
		{"cpu_period 1000", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = 1000 }), ""},
		{"cpu_period 1000000", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = 1000000 }), ""},
		{"cpu_period 1000001", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = 1000001 }), "linux.cpu_period"},
		{"cpu_period negative", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = -1 }), "linux.cpu_period"},
		{"cpu_quota -1", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = -1 }), ""},
		{"cpu_quota -5", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = -5 }), "linux.cpu_quota"},
		{"cpu_quota 999", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = 999 }), "linux.cpu_quota"},
		{"cpu_quota 1000", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = 1000 }), ""},
		{"cpu_quota 2^44-1", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = 1<<44 - 1 }), ""},
		{"cpu_quota 2^44", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = 1 << 44 }), "linux.cpu_quota"},
		{"memory negative", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = -1 }), "linux.memory_limit_in_bytes"},
		{"memory 1 byte", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = 1 }), "linux.memory_limit_in_bytes"},
		{"memory below 6 MiB", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = 6<<20 - 1 }), "linux.memory_limit_in_bytes"},
		{"memory 6 MiB", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = 6 << 20 }), ""},
		{"memory 2^62", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = 1 << 62 }), ""},
		{"swap unlimited", res(func(r *runtimeapi.LinuxContainerResources) { r.MemorySwapLimitInBytes = -1 }), ""},
		{"swap negative", res(func(r *runtimeapi.LinuxContainerResources) { r.MemorySwapLimitInBytes = -5 }), "linux.memory_swap_limit_in_bytes"},
		{"swap equal to memory", res(func(r *runtimeapi.LinuxContainerResources) { r.MemorySwapLimitInBytes = 128 << 20 }), ""},
		{"swap below memory", res(func(r *runtimeapi.LinuxContainerResources) { r.MemorySwapLimitInBytes = 64 << 20 }), "linux.memory_swap_limit_in_bytes"},
		{"oom_score_adj -1000", res(func(r *runtimeapi.LinuxContainerResources) { r.OomScoreAdj = -1000 }), ""},
		{"oom_score_adj -1001", res(func(r *runtimeapi.LinuxContainerResources) { r.OomScoreAdj = -1001 }), "linux.oom_score_adj"},
		{"oom_score_adj 1001", res(func(r *runtimeapi.LinuxContainerResources) { r.OomScoreAdj = 1001 }), "linux.oom_score_adj"},

		{"cpuset one CPU", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "1" }), ""},
		{"cpuset up to 8191", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "0-8191" }), ""},
		{"cpuset garbage", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "garbage-9999" }), "linux.cpuset_cpus"},
		{"cpuset 8192", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "8192" }), "linux.cpuset_cpus"},
		{"cpuset reversed range", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "1-0" }), "linux.cpuset_cpus"},
		{"cpuset trailing comma", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "0," }), "linux.cpuset_cpus"},
		{"cpuset negative", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "-1" }), "linux.cpuset_cpus"},
		{"cpuset space", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = " 0" }), "linux.cpuset_cpus"},
		{"cpuset plus sign", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "+1" }), "linux.cpuset_cpus"},
		{"cpuset huge", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetCpus = "99999999999999999999" }), "linux.cpuset_cpus"},
		{"mems newline", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetMems = "0\n" }), "linux.cpuset_mems"},
		{"mems 1024", res(func(r *runtimeapi.LinuxContainerResources) { r.CpusetMems = "1024" }), "linux.cpuset_mems"},

		{"hugepage size empty", res(func(r *runtimeapi.LinuxContainerResources) {
			r.HugepageLimits = []*runtimeapi.HugepageLimit{{Limit: 1}}
		}), "linux.hugepage_limits[0].page_size"},
		{"hugepage size path", res(func(r *runtimeapi.LinuxContainerResources) {
			r.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "../../x"}}
		}), "linux.hugepage_limits[1].page_size"},
		{"hugepage size leading zero", res(func(r *runtimeapi.LinuxContainerResources) {
			r.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "02MB"}}
		}), "linux.hugepage_limits[0].page_size"},
		{"unified path", res(func(r *runtimeapi.LinuxContainerResources) { r.Unified = map[string]string{"../memory.max": "1"} }), "linux.unified"},
		{"unified core file", res(func(r *runtimeapi.LinuxContainerResources) { r.Unified = map[string]string{"cgroup.procs": "1"} }), "linux.unified"},
		{"unified empty key", res(func(r *runtimeapi.LinuxContainerResources) { r.Unified = map[string]string{"": "1"} }), "linux.unified"},
		{"unified value with NUL", res(func(r *runtimeapi.LinuxContainerResources) { r.Unified = map[string]string{"memory.high": "1\x00"} }), "linux.unified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidation(t, checkResources("linux", tc.r), tc.want)
		})
	}
}

func TestCheckContainerInPod(t *testing.T) {
	privileged := func(ctr, pod bool) (*runtimeapi.ContainerConfig, *runtimeapi.PodSandboxConfig) {
		return &runtimeapi.ContainerConfig{Linux: ctrSecurity(&runtimeapi.LinuxContainerSecurityContext{Privileged: ctr})},
			&runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{Privileged: pod}}}
	}
	for _, tc := range []struct {
		name     string
		ctr, pod bool
		want     string
	}{
		{"neither", false, false, ""},
		{"both", true, true, ""},
		{"pod only", false, true, ""},
		{"container only", true, false, "privileged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidation(t, checkContainerInPod(privileged(tc.ctr, tc.pod)), tc.want)
		})
	}
}

func TestCheckExecCmd(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  []string
		want string
	}{
		{"command", []string{"sh", "-c", "echo hi"}, ""},
		{"empty argument", []string{"echo", ""}, ""},
		{"none", nil, "exec cmd"},
		{"empty command", []string{"", "true"}, "exec cmd"},
		{"NUL", []string{"true", "a\x00b"}, "exec cmd[1]"},
		{"argument of MAX_ARG_STRLEN bytes", []string{"echo", strings.Repeat("a", 131072)}, "exec cmd[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidation(t, checkExecCmd(tc.cmd), tc.want)
		})
	}
	if err := checkExecCmd(repeat(strings.Repeat("a", 128<<10-1), 17)); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("an exec of more than 2 MiB: got %v, want ResourceExhausted", err)
	}
}

func TestCheckLogFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "a-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "a-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, logDir, logPath string
		want                  string
	}{
		{"new file", dir, "app/0.log", ""},
		{"new dirs", dir, "a/b/c/0.log", ""},
		{"existing file", dir, "a-file", ""},
		{"no log directory", "", "app/0.log", ""},
		{"no log path", dir, "", ""},
		{"a directory", dir, "a-dir", "is a directory"},
		{"below a file", dir, "a-file/0.log", "is not a directory"},
		{"deep below a file", dir, "a-file/x/y/0.log", "is not a directory"},
		{"a fifo", dir, "a-fifo", "not a regular file"},
		{"log directory is a file", filepath.Join(dir, "a-file"), "0.log", "is not a directory"},
		{"full path of 4095 bytes", dir, longPath(4095 - len(dir) - 1), ""},
		{"full path of 4096 bytes", dir, longPath(4096 - len(dir) - 1), "more than 4095"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidation(t, checkLogFile(tc.logDir, tc.logPath), tc.want)
		})
	}
}

// longPath is a relative path of n bytes of short elements.
func longPath(n int) string {
	p := strings.Repeat("p/", n/2)
	if n%2 == 1 {
		p += "p"
	} else {
		p = p[:len(p)-1] + "q"
	}
	return p
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

package server

import (
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/podhost"
	"github.com/crivm/crivm/oci"
)

// The pod spec is hostile: a tenant writes it. What follows checks every
// path, string and number of a CRI request that reaches the host (the pod
// files, conmon's command line and log path, runc's process, cgroups and
// sysctls, CNI's port mappings, the guest's hostname) before anything is
// written or created, against what those helpers take. Each refusal is
// InvalidArgument naming the CRI field, or ResourceExhausted for a total
// size over a bound.

const (
	// maxNameBytes caps metadata names, namespaces and UIDs: a Kubernetes
	// DNS subdomain (the longest of them) is 253 bytes.
	maxNameBytes = 253
	// maxPathBytes is PATH_MAX (4096) less the terminating NUL: the
	// longest path a system call takes.
	maxPathBytes = 4095
	// maxPathElemBytes is NAME_MAX, the longest element of a path.
	maxPathElemBytes = 255
	// maxHostnameBytes is the kernel's nodename (64 bytes without the NUL),
	// the longest FQDN the kubelet sends with setHostnameAsFQDN.
	maxHostnameBytes = 64
	// maxLabelBytes is the longest RFC 1123 label.
	maxLabelBytes = 63
	// maxMetadataBytes caps the keys and values of labels plus annotations
	// together, as the API server does (TotalAnnotationSizeLimitB).
	maxMetadataBytes = 256 << 10
	// DNS: the kubelet sends at most 3 servers (glibc's MAXNS) and 32
	// searches of 2048 bytes in all (MaxDNSSearchPaths and
	// MaxDNSSearchListChars); servers and options get room to spare.
	maxDNSServers     = 16
	maxDNSSearches    = 32
	maxDNSSearchChars = 2048
	maxDNSOptions     = 32
	maxDNSEntryBytes  = 253
)

// Bounds of the process runc starts (execve's) and of its cgroup (the
// kernel's, as runc 1.1.5 writes them; each was checked by running runc).
const (
	// maxArgBytes is MAX_ARG_STRLEN (32 pages) less the NUL: the longest
	// argv or envp string execve takes ("KEY=value" for an env).
	maxArgBytes = 32<<12 - 1
	// maxArgvEnvBytes bounds command, args and envs together: ARG_MAX,
	// a quarter of the default 8 MiB stack limit.
	maxArgvEnvBytes = 2 << 20
	// cpu.shares: the kernel's MIN_SHARES and MAX_SHARES, which runc
	// enforces itself (and maps onto cpu.weight on cgroup v2).
	minCPUShares, maxCPUShares = 2, 262144
	// CFS bandwidth, in µs: the period is within min_cfs_quota_period
	// (1 ms) and max_cfs_quota_period (1 s); a quota is at least 1 ms
	// and at most max_cfs_runtime (2^44-1 µs), or -1 for none.
	minCFSPeriod, maxCFSPeriod = 1000, 1000000
	minCFSQuota, maxCFSQuota   = 1000, 1<<44 - 1
	// minMemoryLimit is the lowest memory limit a container gets: runc
	// sets the limit while its init runs in the cgroup and fails when the
	// limit is below that usage (2.5 MiB measured with runc 1.1.5, 2 MiB
	// refused); docker's floor of 6 MiB leaves room above it.
	minMemoryLimit = 6 << 20
	// The largest CPU and memory node numbers a kernel has (NR_CPUS and
	// MAX_NUMNODES at their largest): cpusets beyond are not lists the
	// kernel could take on any host.
	maxCPUs, maxMemNodes = 8192, 1024
)

// validatePodFields checks the pod config's names, paths and strings; the
// caller has checked that metadata is present.
func validatePodFields(cfg *runtimeapi.PodSandboxConfig) error {
	md := cfg.GetMetadata()
	for _, f := range []struct{ field, value string }{
		{"metadata.name", md.GetName()},
		{"metadata.namespace", md.GetNamespace()},
		{"metadata.uid", md.GetUid()},
	} {
		if err := checkName("pod sandbox", f.field, f.value); err != nil {
			return err
		}
		// They become CNI_ARGS values, which ';' and '=' would split.
		if strings.ContainsAny(f.value, ";=") {
			return errdefs.InvalidArgument("pod sandbox %s %q: may not contain ';' or '='", f.field, f.value)
		}
	}
	if err := checkHostname(cfg); err != nil {
		return err
	}
	if err := checkLogDirectory(cfg.GetLogDirectory()); err != nil {
		return err
	}
	if err := checkCgroupParent(cfg.GetLinux().GetCgroupParent()); err != nil {
		return err
	}
	if err := checkDNS(cfg.GetDnsConfig()); err != nil {
		return err
	}
	if err := checkPortMappings(cfg.GetPortMappings()); err != nil {
		return err
	}
	if err := checkPodLinux(cfg.GetLinux()); err != nil {
		return err
	}
	return checkMetadataSize("pod sandbox", cfg.GetLabels(), cfg.GetAnnotations())
}

// checkPodLinux checks the pod's sysctls (as the spec generator would,
// before CNI and the sandbox run), its security context, and its
// resources and overhead (the vm handler sizes the VM from them).
func checkPodLinux(l *runtimeapi.LinuxPodSandboxConfig) error {
	sc := l.GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	hostNet, hostIPC := ns.GetNetwork() == runtimeapi.NamespaceMode_NODE, ns.GetIpc() == runtimeapi.NamespaceMode_NODE
	if err := oci.CheckSysctls(l.GetSysctls(), hostNet, hostIPC); err != nil {
		return fmt.Errorf("pod sandbox linux.sysctls: %w", err)
	}
	const field = "pod sandbox linux.security_context"
	if err := checkNamespaceModes(field, ns); err != nil {
		return err
	}
	if err := checkUser(field, sc.GetRunAsUser(), sc.GetRunAsGroup(), "", sc.GetSupplementalGroups()); err != nil {
		return err
	}
	if err := checkProfiles(field, sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetApparmor(), ""); err != nil {
		return err
	}
	if err := checkResources("pod sandbox linux.resources", l.GetResources()); err != nil {
		return err
	}
	return checkResources("pod sandbox linux.overhead", l.GetOverhead())
}

// validateContainerConfig checks what CreateContainer takes from the
// container config before it looks at the sandbox.
func validateContainerConfig(cfg *runtimeapi.ContainerConfig) error {
	if cfg.GetMetadata().GetName() == "" {
		return errdefs.InvalidArgument("container metadata.name is empty")
	}
	if err := checkName("container", "metadata.name", cfg.GetMetadata().GetName()); err != nil {
		return err
	}
	if err := checkLogPath(cfg.GetLogPath()); err != nil {
		return err
	}
	if err := checkProcess(cfg); err != nil {
		return err
	}
	if err := checkMounts(cfg.GetMounts(), cfg.GetLinux().GetSecurityContext().GetPrivileged()); err != nil {
		return err
	}
	if err := checkDevices(cfg.GetDevices()); err != nil {
		return err
	}
	if err := checkResources("container linux.resources", cfg.GetLinux().GetResources()); err != nil {
		return err
	}
	if err := checkContainerSecurity(cfg.GetLinux().GetSecurityContext()); err != nil {
		return err
	}
	return checkMetadataSize("container", cfg.GetLabels(), cfg.GetAnnotations())
}

// checkProcess: command, args and envs become the argv and envp of the
// container's process, and working_dir its cwd, as runc and execve take
// them: no NUL in any string, each at most maxArgBytes and all together at
// most maxArgvEnvBytes; an env key is non-empty and has no '='; the
// working directory is an absolute path.
func checkProcess(cfg *runtimeapi.ContainerConfig) error {
	total := 0
	for _, list := range []struct {
		field string
		args  []string
	}{{"command", cfg.GetCommand()}, {"args", cfg.GetArgs()}} {
		for i, a := range list.args {
			if err := checkArg(fmt.Sprintf("container %s[%d]", list.field, i), a); err != nil {
				return err
			}
			total += len(a) + 1
		}
	}
	for i, kv := range cfg.GetEnvs() {
		k, v := kv.GetKey(), string(kv.GetValue())
		field := fmt.Sprintf("container envs[%d]", i)
		switch {
		case k == "":
			return errdefs.InvalidArgument("%s: the key is empty", field)
		case strings.ContainsRune(k, '='):
			return errdefs.InvalidArgument("%s: the key %q contains '='", field, k)
		case strings.IndexByte(k, 0) >= 0:
			return errdefs.InvalidArgument("%s: the key %q contains NUL", field, k)
		}
		if err := checkArg(field+" "+k, k+"="+v); err != nil {
			return err
		}
		total += len(k) + len(v) + 2
	}
	if total > maxArgvEnvBytes {
		return errdefs.Newf(errdefs.ErrResourceExhausted, "container command, args and envs: %d bytes in all, more than %d", total, maxArgvEnvBytes)
	}
	if d := cfg.GetWorkingDir(); d != "" {
		return checkAbsPath("container working_dir", d)
	}
	return nil
}

// checkExecCmd: the argv of an exec (ExecSync, Exec) names a command and,
// like a container's, has no NUL and fits execve's bounds.
func checkExecCmd(cmd []string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return errdefs.InvalidArgument("exec cmd names no command")
	}
	total := 0
	for i, a := range cmd {
		if err := checkArg(fmt.Sprintf("exec cmd[%d]", i), a); err != nil {
			return err
		}
		total += len(a) + 1
	}
	if total > maxArgvEnvBytes {
		return errdefs.Newf(errdefs.ErrResourceExhausted, "exec cmd: %d bytes in all, more than %d", total, maxArgvEnvBytes)
	}
	return nil
}

// checkArg: one argv or envp string.
func checkArg(field, a string) error {
	switch {
	case strings.IndexByte(a, 0) >= 0:
		return errdefs.InvalidArgument("%s %.64q: contains NUL", field, a)
	case len(a) > maxArgBytes:
		return errdefs.InvalidArgument("%s is %d bytes, more than %d", field, len(a), maxArgBytes)
	}
	return nil
}

// checkAbsPath: an absolute path the kernel takes.
func checkAbsPath(field, p string) error {
	switch {
	case strings.IndexByte(p, 0) >= 0:
		return errdefs.InvalidArgument("%s %q: may not contain NUL", field, p)
	case !path.IsAbs(p):
		return errdefs.InvalidArgument("%s %q: must be an absolute path", field, p)
	}
	return checkPathLength(field, p)
}

// checkPathLength: at most PATH_MAX bytes, each element at most NAME_MAX.
func checkPathLength(field, p string) error {
	if len(p) > maxPathBytes {
		return errdefs.InvalidArgument("%s is %d bytes, more than %d", field, len(p), maxPathBytes)
	}
	for _, e := range strings.Split(p, "/") {
		if len(e) > maxPathElemBytes {
			return errdefs.InvalidArgument("%s: the path element %.32q... is %d bytes, more than %d", field, e, len(e), maxPathElemBytes)
		}
	}
	return nil
}

// checkMounts: container paths are absolute paths below "/"; host paths
// (of mounts without an image) are absolute; the propagation is one the
// CRI defines, bidirectional only for a privileged container (whose
// mounts may reach the host). Image volumes have more rules
// (checkImageVolumes).
func checkMounts(ms []*runtimeapi.Mount, privileged bool) error {
	for i, m := range ms {
		field := fmt.Sprintf("container mounts[%d]", i)
		if err := checkAbsPath(field+".container_path", m.GetContainerPath()); err != nil {
			return err
		}
		if path.Clean(m.GetContainerPath()) == "/" {
			return errdefs.InvalidArgument("%s.container_path %q: may not be the container's root", field, m.GetContainerPath())
		}
		if m.GetImage() == nil {
			if err := checkAbsPath(field+".host_path", m.GetHostPath()); err != nil {
				return err
			}
		}
		if err := oci.CheckMountOptions(m); err != nil {
			return fmt.Errorf("%s.mount_options: %w", field, err)
		}
		switch p := m.GetPropagation(); {
		case runtimeapi.MountPropagation_name[int32(p)] == "":
			return errdefs.InvalidArgument("%s.propagation %d: unknown", field, p)
		case p == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL && !privileged && m.GetImage() == nil:
			return errdefs.InvalidArgument("%s.propagation: bidirectional needs a privileged container", field)
		}
	}
	return checkImageVolumes(ms)
}

// checkDevices: host and container paths are absolute, the permissions a
// subset of "rwm" (empty: all three).
func checkDevices(ds []*runtimeapi.Device) error {
	for i, d := range ds {
		field := fmt.Sprintf("container devices[%d]", i)
		if err := checkAbsPath(field+".host_path", d.GetHostPath()); err != nil {
			return err
		}
		if d.GetContainerPath() != "" {
			if err := checkAbsPath(field+".container_path", d.GetContainerPath()); err != nil {
				return err
			}
		}
		if strings.Trim(d.GetPermissions(), "rwm") != "" {
			return errdefs.InvalidArgument("%s.permissions %q: not a subset of \"rwm\"", field, d.GetPermissions())
		}
	}
	return nil
}

// checkContainerSecurity: the ids, user name, masked and read-only paths,
// capabilities, profiles and namespace modes of a container.
func checkContainerSecurity(sc *runtimeapi.LinuxContainerSecurityContext) error {
	const field = "container linux.security_context"
	if err := checkNamespaceModes(field, sc.GetNamespaceOptions()); err != nil {
		return err
	}
	if err := checkUser(field, sc.GetRunAsUser(), sc.GetRunAsGroup(), sc.GetRunAsUsername(), sc.GetSupplementalGroups()); err != nil {
		return err
	}
	for _, list := range []struct {
		name  string
		paths []string
	}{{"masked_paths", sc.GetMaskedPaths()}, {"readonly_paths", sc.GetReadonlyPaths()}} {
		for i, p := range list.paths {
			if err := checkAbsPath(fmt.Sprintf("%s.%s[%d]", field, list.name, i), p); err != nil {
				return err
			}
		}
	}
	if err := oci.CheckCapabilities(sc.GetCapabilities()); err != nil {
		return fmt.Errorf("%s.capabilities: %w", field, err)
	}
	return checkProfiles(field, sc.GetSeccomp(), sc.GetSeccompProfilePath(), sc.GetApparmor(), sc.GetApparmorProfile())
}

// maxID is the largest uid or gid: Kubernetes' (math.MaxInt32), which is
// runc's too.
const maxID = 1<<31 - 1

// checkUser: run_as_user, run_as_group and the supplemental groups are ids
// in [0, maxID]; run_as_group needs a user; a user name has no ':' or NUL.
func checkUser(field string, user, group *runtimeapi.Int64Value, username string, groups []int64) error {
	for _, id := range []struct {
		name string
		v    *runtimeapi.Int64Value
	}{{"run_as_user", user}, {"run_as_group", group}} {
		if id.v != nil && (id.v.GetValue() < 0 || id.v.GetValue() > maxID) {
			return errdefs.InvalidArgument("%s.%s %d is outside [0, %d]", field, id.name, id.v.GetValue(), maxID)
		}
	}
	for i, g := range groups {
		if g < 0 || g > maxID {
			return errdefs.InvalidArgument("%s.supplemental_groups[%d] %d is outside [0, %d]", field, i, g, maxID)
		}
	}
	switch {
	case group != nil && user == nil && username == "":
		return errdefs.InvalidArgument("%s.run_as_group is set without run_as_user or run_as_username", field)
	case strings.ContainsAny(username, ":\x00"):
		return errdefs.InvalidArgument("%s.run_as_username %q: may not contain ':' or NUL", field, username)
	}
	return nil
}

// checkProfiles: known seccomp and AppArmor profile types or legacy
// strings; no NUL in a profile's name or path.
func checkProfiles(field string, seccomp *runtimeapi.SecurityProfile, seccompPath string, apparmor *runtimeapi.SecurityProfile, apparmorName string) error {
	for _, p := range []struct {
		what   string
		typed  *runtimeapi.SecurityProfile
		legacy string
	}{{"seccomp", seccomp, seccompPath}, {"apparmor", apparmor, apparmorName}} {
		if strings.IndexByte(p.typed.GetLocalhostRef()+p.legacy, 0) >= 0 {
			return errdefs.InvalidArgument("%s.%s: the profile's name contains NUL", field, p.what)
		}
		if err := oci.CheckSecurityProfile(p.what, p.typed, p.legacy); err != nil {
			return fmt.Errorf("%s.%s: %w", field, p.what, err)
		}
	}
	return nil
}

// checkNamespaceModes: the network, PID and IPC modes are ones the CRI
// defines.
func checkNamespaceModes(field string, ns *runtimeapi.NamespaceOption) error {
	for _, m := range []struct {
		name string
		mode runtimeapi.NamespaceMode
	}{{"network", ns.GetNetwork()}, {"pid", ns.GetPid()}, {"ipc", ns.GetIpc()}} {
		if _, ok := runtimeapi.NamespaceMode_name[int32(m.mode)]; !ok {
			return errdefs.InvalidArgument("%s.namespace_options.%s %d: unknown mode", field, m.name, m.mode)
		}
	}
	return nil
}

// checkResources checks cgroup resources (of a container, an update, or
// a pod) against what runc and the kernel take; field names them. Zero
// means unset throughout.
func checkResources(field string, r *runtimeapi.LinuxContainerResources) error {
	if r == nil {
		return nil
	}
	shares, period, quota := r.GetCpuShares(), r.GetCpuPeriod(), r.GetCpuQuota()
	mem, swap := r.GetMemoryLimitInBytes(), r.GetMemorySwapLimitInBytes()
	switch {
	case shares != 0 && (shares < minCPUShares || shares > maxCPUShares):
		return errdefs.InvalidArgument("%s.cpu_shares %d is outside [%d, %d]", field, shares, minCPUShares, maxCPUShares)
	case period != 0 && (period < minCFSPeriod || period > maxCFSPeriod):
		return errdefs.InvalidArgument("%s.cpu_period %d is outside [%d, %d] µs", field, period, minCFSPeriod, maxCFSPeriod)
	case quota != 0 && quota != -1 && (quota < minCFSQuota || quota > maxCFSQuota):
		return errdefs.InvalidArgument("%s.cpu_quota %d is neither -1 nor within [%d, %d] µs", field, quota, minCFSQuota, maxCFSQuota)
	case mem < 0:
		return errdefs.InvalidArgument("%s.memory_limit_in_bytes %d is negative", field, mem)
	case mem > 0 && mem < minMemoryLimit:
		return errdefs.InvalidArgument("%s.memory_limit_in_bytes %d is below %d (%d MiB), the least a container starts with", field, mem, minMemoryLimit, minMemoryLimit>>20)
	case swap < -1:
		return errdefs.InvalidArgument("%s.memory_swap_limit_in_bytes %d is negative and not -1 (unlimited)", field, swap)
	case swap > 0 && mem > 0 && swap < mem:
		return errdefs.InvalidArgument("%s.memory_swap_limit_in_bytes %d is below memory_limit_in_bytes %d: it limits memory and swap together", field, swap, mem)
	case r.GetOomScoreAdj() < -1000 || r.GetOomScoreAdj() > 1000:
		return errdefs.InvalidArgument("%s.oom_score_adj %d is outside [-1000, 1000]", field, r.GetOomScoreAdj())
	}
	if err := checkCPUList(field+".cpuset_cpus", r.GetCpusetCpus(), maxCPUs); err != nil {
		return err
	}
	if err := checkCPUList(field+".cpuset_mems", r.GetCpusetMems(), maxMemNodes); err != nil {
		return err
	}
	for i, hp := range r.GetHugepageLimits() {
		if !hugePageSize.MatchString(hp.GetPageSize()) {
			return errdefs.InvalidArgument("%s.hugepage_limits[%d].page_size %q: not a page size such as \"2MB\" or \"1GB\"", field, i, hp.GetPageSize())
		}
	}
	for k, v := range r.GetUnified() {
		switch {
		case !unifiedKey.MatchString(k):
			return errdefs.InvalidArgument("%s.unified: key %q is not a cgroup interface file such as \"memory.high\"", field, k)
		case strings.HasPrefix(k, "cgroup."):
			return errdefs.InvalidArgument("%s.unified: key %q is a file of the cgroup core (membership, state), not a resource", field, k)
		case strings.IndexByte(v, 0) >= 0:
			return errdefs.InvalidArgument("%s.unified[%q] %q: contains NUL", field, k, v)
		}
	}
	return nil
}

var (
	// hugePageSize is how the kernel names a page size in hugetlb's files
	// (hugetlb.2MB.limit_in_bytes), which runc builds from it.
	hugePageSize = regexp.MustCompile(`^[1-9][0-9]*[KMG]B$`)
	// unifiedKey is a cgroup v2 interface file: controller.name.
	unifiedKey = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[A-Za-z0-9_.]+$`)
)

// checkCPUList: a cpuset list in the kubelet's form of the kernel's list
// format: comma-separated numbers and ranges N-M (N <= M) of non-negative
// integers below limit, such as "0-3,6".
func checkCPUList(field, v string, limit int) error {
	if v == "" {
		return nil
	}
	for _, item := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(item, "-")
		if !isRange {
			hi = lo
		}
		a, okA := listNumber(lo)
		b, okB := listNumber(hi)
		switch {
		case !okA || !okB || a > b:
			return errdefs.InvalidArgument("%s %q: not a list of numbers and ranges such as \"0-3,6\"", field, v)
		case b >= limit:
			return errdefs.InvalidArgument("%s %q: %d is beyond the largest a kernel has (%d)", field, v, b, limit-1)
		}
	}
	return nil
}

// listNumber parses a non-negative decimal of at most 9 digits.
func listNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// checkPortMappings: ports within [0, 65535], a container port when a host
// port is mapped (a mapping without a host port is not set up), a known
// protocol, a host IP that is an address.
func checkPortMappings(pms []*runtimeapi.PortMapping) error {
	for i, pm := range pms {
		field := fmt.Sprintf("pod sandbox port_mappings[%d]", i)
		switch hp, cp := pm.GetHostPort(), pm.GetContainerPort(); {
		case hp < 0 || hp > 65535:
			return errdefs.InvalidArgument("%s.host_port %d is outside [0, 65535]", field, hp)
		case cp < 0 || cp > 65535 || (hp != 0 && cp == 0):
			return errdefs.InvalidArgument("%s.container_port %d is outside [1, 65535]", field, cp)
		}
		if _, ok := runtimeapi.Protocol_name[int32(pm.GetProtocol())]; !ok {
			return errdefs.InvalidArgument("%s.protocol %d: unknown", field, pm.GetProtocol())
		}
		if ip := pm.GetHostIp(); ip != "" {
			if _, err := netip.ParseAddr(ip); err != nil {
				return errdefs.InvalidArgument("%s.host_ip %q: not an IP address", field, ip)
			}
		}
	}
	return nil
}

// checkContainerInPod: what a container asks that its pod must allow. A
// privileged container needs a privileged pod.
func checkContainerInPod(cfg *runtimeapi.ContainerConfig, pod *runtimeapi.PodSandboxConfig) error {
	if cfg.GetLinux().GetSecurityContext().GetPrivileged() && !pod.GetLinux().GetSecurityContext().GetPrivileged() {
		return errdefs.InvalidArgument("container linux.security_context.privileged: the pod sandbox is not privileged")
	}
	return nil
}

// checkLogFile checks, on the host, the file conmon will write a
// container's log to: logDir/logPath (the caller has checked logPath with
// checkLogPath). The whole path is at most PATH_MAX; it is not a
// directory or another file that is not a regular one; its existing
// parents are directories, so that they can be created and the file
// opened.
func checkLogFile(logDir, logPath string) error {
	if logDir == "" || logPath == "" {
		return nil
	}
	full := filepath.Join(logDir, logPath)
	if len(full) > maxPathBytes {
		return errdefs.InvalidArgument("container log_path %q: the log file's path is %d bytes, more than %d", logPath, len(full), maxPathBytes)
	}
	for dir := filepath.Dir(full); ; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil {
			if !fi.IsDir() {
				return errdefs.InvalidArgument("container log_path %q: %s is not a directory", logPath, dir)
			}
			break
		}
		if dir == "/" {
			break
		}
	}
	switch fi, err := os.Stat(full); {
	case err != nil:
		return nil // conmon creates it
	case fi.IsDir():
		return errdefs.InvalidArgument("container log_path %q: %s is a directory", logPath, full)
	case !fi.Mode().IsRegular():
		return errdefs.InvalidArgument("container log_path %q: %s is not a regular file", logPath, full)
	}
	return nil
}

// checkImageVolumes: an image volume (a mount with image set) names an
// image and no host_path; it is readonly (image volumes are read-only by
// definition: containerd and CRI-O refuse readonly false too); it does not
// ask for bidirectional propagation (nothing a container mounts may reach
// crivm's storage); its image_sub_path, when set, is a relative path that
// stays inside the image. A mount without an image has no image_sub_path.
func checkImageVolumes(ms []*runtimeapi.Mount) error {
	for _, m := range ms {
		dst, sub := m.GetContainerPath(), m.GetImageSubPath()
		if m.GetImage() == nil {
			if sub != "" {
				return errdefs.InvalidArgument("mount at %q: image_sub_path %q is set without an image", dst, sub)
			}
			continue
		}
		switch {
		case m.GetImage().GetImage() == "":
			return errdefs.InvalidArgument("image volume at %q: image.image is empty", dst)
		case m.GetHostPath() != "":
			return errdefs.InvalidArgument("image volume at %q: host_path %q must be empty when an image is set", dst, m.GetHostPath())
		case !m.GetReadonly():
			return errdefs.InvalidArgument("image volume at %q: readonly must be true: image volumes are read-only", dst)
		case m.GetPropagation() == runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			return errdefs.InvalidArgument("image volume at %q: bidirectional propagation is not allowed: an image volume propagates no mount", dst)
		case sub == "":
		case len(sub) > maxPathBytes:
			return errdefs.InvalidArgument("image volume at %q: image_sub_path is %d bytes, more than %d", dst, len(sub), maxPathBytes)
		case hasControl(sub):
			return errdefs.InvalidArgument("image volume at %q: image_sub_path %q may not contain control characters", dst, sub)
		case !filepath.IsLocal(sub):
			return errdefs.InvalidArgument("image volume at %q: image_sub_path %q must be a relative path inside the image", dst, sub)
		}
	}
	return nil
}

// checkName refuses a name the host would misread: a path separator, a
// control character (NUL and newline included), whitespace, or more than
// maxNameBytes. Empty names are the caller's to refuse.
func checkName(kind, field, v string) error {
	switch {
	case len(v) > maxNameBytes:
		return errdefs.InvalidArgument("%s %s is %d bytes, more than %d", kind, field, len(v), maxNameBytes)
	case strings.Contains(v, "/"):
		return errdefs.InvalidArgument("%s %s %q: may not contain '/'", kind, field, v)
	case hasControlOrSpace(v):
		return errdefs.InvalidArgument("%s %s %q: may not contain whitespace or control characters", kind, field, v)
	case !isASCII(v):
		return errdefs.InvalidArgument("%s %s %q: may contain only ASCII characters (names are in conmon's command line, which takes no others)", kind, field, v)
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// checkHostname: a hostname the pod gives must be an RFC 1123 label (at
// most 63 bytes), or, as the kubelet sends with setHostnameAsFQDN, dotted
// labels of at most 64 bytes in all. Without one, the hostname is derived
// from the pod name (podhost.Derive), which must leave something.
func checkHostname(cfg *runtimeapi.PodSandboxConfig) error {
	h := cfg.GetHostname()
	if h == "" {
		if podhost.Derive(cfg.GetMetadata().GetName()) == "" {
			return errdefs.InvalidArgument("pod sandbox hostname is empty and metadata.name %q leaves none to derive", cfg.GetMetadata().GetName())
		}
		return nil
	}
	if len(h) > maxHostnameBytes {
		return errdefs.InvalidArgument("pod sandbox hostname %q is %d bytes, more than %d", h, len(h), maxHostnameBytes)
	}
	for _, label := range strings.Split(h, ".") {
		if !isDNS1123Label(label) {
			return errdefs.InvalidArgument("pod sandbox hostname %q: not an RFC 1123 DNS label (lower case letters, digits and '-', at most %d, starting and ending with a letter or digit)", h, maxLabelBytes)
		}
	}
	return nil
}

// isDNS1123Label is apimachinery's IsDNS1123Label:
// [a-z0-9]([-a-z0-9]*[a-z0-9])? of at most 63 bytes.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > maxLabelBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return false
		}
	}
	return true
}

// checkLogDirectory: when set, the pod's log directory is an absolute,
// clean path.
func checkLogDirectory(dir string) error {
	switch {
	case dir == "":
		return nil
	case len(dir) > maxPathBytes:
		return errdefs.InvalidArgument("pod sandbox log_directory is %d bytes, more than %d", len(dir), maxPathBytes)
	case hasControl(dir):
		return errdefs.InvalidArgument("pod sandbox log_directory %q: may not contain control characters", dir)
	case !isASCII(dir):
		return errdefs.InvalidArgument("pod sandbox log_directory %q: may contain only ASCII characters (log paths are in conmon's command line)", dir)
	case !filepath.IsAbs(dir) || filepath.Clean(dir) != dir:
		return errdefs.InvalidArgument("pod sandbox log_directory %q: must be an absolute, clean path", dir)
	}
	return checkPathLength("pod sandbox log_directory", dir)
}

// checkLogPath: a container's log path is relative to the pod's log
// directory and stays inside it ("ctr/0.log" as the kubelet sends it).
func checkLogPath(p string) error {
	if p == "" {
		return nil
	}
	switch {
	case len(p) > maxPathBytes:
		return errdefs.InvalidArgument("container log_path is %d bytes, more than %d", len(p), maxPathBytes)
	case hasControl(p):
		return errdefs.InvalidArgument("container log_path %q: may not contain control characters", p)
	case !isASCII(p):
		return errdefs.InvalidArgument("container log_path %q: may contain only ASCII characters (log paths are in conmon's command line)", p)
	case filepath.IsAbs(p):
		return errdefs.InvalidArgument("container log_path %q: must be relative to the pod's log_directory", p)
	}
	if !filepath.IsLocal(p) || filepath.Clean(p) == "." {
		return errdefs.InvalidArgument("container log_path %q: must name a file inside the pod's log_directory", p)
	}
	return checkPathLength("container log_path", p)
}

// checkCgroupParent accepts what oci's cgroupsPath turns into a cgroup
// under the hierarchy: "" (the daemon's default), a clean absolute path
// ("/kubepods/burstable/pod<uid>", "/kubepods.slice/...") or a systemd
// slice name ("kubepods-burstable-pod<uid>.slice"). No ".." element, no
// control character.
func checkCgroupParent(p string) error {
	switch {
	case p == "":
		return nil
	case len(p) > maxPathBytes:
		return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent is %d bytes, more than %d", len(p), maxPathBytes)
	case hasControl(p):
		return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: may not contain control characters", p)
	case hasDotDot(p):
		return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: may not contain a '..' element", p)
	case filepath.IsAbs(p):
		if filepath.Clean(p) != p {
			return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: must be a clean path", p)
		}
		return nil
	case !strings.Contains(p, "/") && strings.HasSuffix(p, ".slice") && p != ".slice":
		return nil
	}
	return errdefs.InvalidArgument("pod sandbox linux.cgroup_parent %q: must be an absolute path or a systemd slice name", p)
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// checkDNS: servers are IP addresses; searches and options are single
// words (each is written on a resolv.conf line, so a newline would add a
// line); their counts are capped.
func checkDNS(dns *runtimeapi.DNSConfig) error {
	if dns == nil {
		return nil
	}
	if n := len(dns.GetServers()); n > maxDNSServers {
		return errdefs.InvalidArgument("pod sandbox dns_config.servers: %d entries, more than %d", n, maxDNSServers)
	}
	for i, s := range dns.GetServers() {
		if _, err := netip.ParseAddr(s); err != nil {
			return errdefs.InvalidArgument("pod sandbox dns_config.servers[%d] %q: not an IP address", i, s)
		}
	}
	if n := len(dns.GetSearches()); n > maxDNSSearches {
		return errdefs.InvalidArgument("pod sandbox dns_config.searches: %d entries, more than %d", n, maxDNSSearches)
	}
	if n := len(strings.Join(dns.GetSearches(), " ")); n > maxDNSSearchChars {
		return errdefs.InvalidArgument("pod sandbox dns_config.searches: %d bytes, more than %d", n, maxDNSSearchChars)
	}
	if err := checkDNSWords("searches", dns.GetSearches()); err != nil {
		return err
	}
	if n := len(dns.GetOptions()); n > maxDNSOptions {
		return errdefs.InvalidArgument("pod sandbox dns_config.options: %d entries, more than %d", n, maxDNSOptions)
	}
	return checkDNSWords("options", dns.GetOptions())
}

func checkDNSWords(field string, words []string) error {
	for i, w := range words {
		switch {
		case w == "":
			return errdefs.InvalidArgument("pod sandbox dns_config.%s[%d] is empty", field, i)
		case len(w) > maxDNSEntryBytes:
			return errdefs.InvalidArgument("pod sandbox dns_config.%s[%d] is %d bytes, more than %d", field, i, len(w), maxDNSEntryBytes)
		case hasControlOrSpace(w):
			return errdefs.InvalidArgument("pod sandbox dns_config.%s[%d] %q: may not contain whitespace or control characters", field, i, w)
		}
	}
	return nil
}

// checkMetadataSize caps labels plus annotations at maxMetadataBytes
// (keys and values) and refuses a NUL in a key.
func checkMetadataSize(kind string, labels, annotations map[string]string) error {
	total := 0
	for _, m := range []struct {
		field string
		kv    map[string]string
	}{{"labels", labels}, {"annotations", annotations}} {
		for k, v := range m.kv {
			if strings.IndexByte(k, 0) >= 0 {
				return errdefs.InvalidArgument("%s %s: key %q contains NUL", kind, m.field, k)
			}
			total += len(k) + len(v)
		}
	}
	if total > maxMetadataBytes {
		return errdefs.InvalidArgument("%s labels and annotations: %s in all, more than %s", kind, sizeString(total), sizeString(maxMetadataBytes))
	}
	return nil
}

func sizeString(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func hasControlOrSpace(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0
}

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Defaults for Options fields left empty.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultCacheDir = "/var/lib/cni"
	DefaultIfName   = "eth0"
)

// DefaultPluginDirs is where Debian (/usr/lib/cni) and upstream
// (/opt/cni/bin) install CNI plugins.
var DefaultPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// cleanupTimeout bounds the DEL that undoes a failed ADD. It runs on a context
// detached from the caller's, which may be the reason ADD failed.
const cleanupTimeout = time.Minute

// Options configure a Manager. Empty fields take the Default* values.
type Options struct {
	ConfDir    string   // network configs; the lexically first usable one is the default network
	PluginDirs []string // searched in order for plugin binaries
	CacheDir   string   // libcni's result cache; DEL reads what ADD stored here
	// AddTimeout bounds a CNI ADD; 0: DefaultAddTimeout. A plugin that
	// hangs (seen here: ADD not returning for 10 minutes) then fails the
	// pod with a message that says so, and its DEL undoes what ran.
	AddTimeout time.Duration
}

// DefaultAddTimeout is below the kubelet's 4-minute RunPodSandbox deadline,
// so the kubelet sees crivm's error rather than its own timeout.
const DefaultAddTimeout = 2 * time.Minute

// PortMapping is a host port forwarded to a port of the pod, implemented by
// the portmap plugin through the portMappings capability.
type PortMapping struct {
	Protocol      string // tcp (default), udp or sctp
	ContainerPort int32
	HostPort      int32 // 0: no mapping; the entry is ignored
	HostIP        string
}

// SetupRequest names a pod's network attachment. Teardown takes the same
// request; ContainerID and IfName identify the attachment.
type SetupRequest struct {
	ContainerID  string // the sandbox ID; CNI_CONTAINERID
	NetNSPath    string // the pod's namespace, e.g. (*NetNS).Path()
	PodName      string
	PodNamespace string
	PodUID       string
	PortMappings []PortMapping
	IfName       string // default DefaultIfName
}

// Result is what Setup gave the pod.
type Result struct {
	// IPs are the pod's addresses on interfaces inside its namespace, IPv4
	// before IPv6, each family in plugin order. IPs[0] is the primary IP.
	IPs        []net.IP
	Interfaces []*types100.Interface
	Routes     []*types.Route
	DNS        types.DNS
	Raw        types100.Result
}

// Manager attaches pod network namespaces to the default CNI network. It is
// safe for concurrent use: ADD and DEL for one container ID are serialized,
// different container IDs proceed in parallel.
type Manager struct {
	opts Options
	cni  *libcni.CNIConfig
	// noCache runs single plugins during a best-effort DEL without touching
	// the result cache; its cache dir is never created.
	noCache *libcni.CNIConfig
	locks   keyedMutex

	confMu sync.Mutex    // guards conf
	conf   *loadedConfig // the last load of ConfDir; nil before the first
}

// NewManager returns a Manager for opts. It does not read ConfDir; Status
// and Setup do, on every call, reloading it when it changed.
func NewManager(opts Options) *Manager {
	if opts.ConfDir == "" {
		opts.ConfDir = DefaultConfDir
	}
	if len(opts.PluginDirs) == 0 {
		opts.PluginDirs = DefaultPluginDirs
	}
	opts.PluginDirs = append([]string(nil), opts.PluginDirs...)
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.AddTimeout <= 0 {
		opts.AddTimeout = DefaultAddTimeout
	}
	return &Manager{
		opts: opts,
		// An explicit exec: libcni creates a missing one lazily, unlocked,
		// which races when pods are set up in parallel.
		cni:     libcni.NewCNIConfigWithCacheDir(opts.PluginDirs, opts.CacheDir, newExec()),
		noCache: libcni.NewCNIConfigWithCacheDir(opts.PluginDirs, filepath.Join(opts.CacheDir, "crivm-nocache"), newExec()),
	}
}

// portMapEntry is the portmap plugin's runtimeConfig.portMappings entry.
type portMapEntry struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// runtimeConf validates req and turns it into the libcni invocation
// arguments. netnsPath replaces req.NetNSPath.
func runtimeConf(req *SetupRequest, netnsPath string) (*libcni.RuntimeConf, error) {
	if req.ContainerID == "" {
		return nil, errdefs.InvalidArgument("container ID is empty")
	}
	if e := utils.ValidateContainerID(req.ContainerID); e != nil {
		return nil, errdefs.InvalidArgument("container ID %q: %s", req.ContainerID, e.Msg)
	}
	ifName := req.IfName
	if ifName == "" {
		ifName = DefaultIfName
	}
	if e := utils.ValidateInterfaceName(ifName); e != nil {
		return nil, errdefs.InvalidArgument("interface name %q: %s", ifName, e.Msg)
	}
	args := [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", req.PodNamespace},
		{"K8S_POD_NAME", req.PodName},
		{"K8S_POD_INFRA_CONTAINER_ID", req.ContainerID},
		{"K8S_POD_UID", req.PodUID},
	}
	for _, a := range args {
		if strings.ContainsAny(a[1], ";=") {
			return nil, errdefs.InvalidArgument("%s %q: CNI_ARGS values may not contain ';' or '='", a[0], a[1])
		}
	}
	rt := &libcni.RuntimeConf{
		ContainerID: req.ContainerID,
		NetNS:       netnsPath,
		IfName:      ifName,
		Args:        args,
	}
	var pms []portMapEntry
	for _, pm := range req.PortMappings {
		if pm.HostPort == 0 {
			continue
		}
		proto := strings.ToLower(pm.Protocol)
		switch proto {
		case "":
			proto = "tcp"
		case "tcp", "udp", "sctp":
		default:
			return nil, errdefs.InvalidArgument("port mapping %d->%d: unknown protocol %q", pm.HostPort, pm.ContainerPort, pm.Protocol)
		}
		if pm.HostPort < 0 || pm.HostPort > 65535 || pm.ContainerPort <= 0 || pm.ContainerPort > 65535 {
			return nil, errdefs.InvalidArgument("port mapping %d->%d: port out of range", pm.HostPort, pm.ContainerPort)
		}
		if pm.HostIP != "" && net.ParseIP(pm.HostIP) == nil {
			return nil, errdefs.InvalidArgument("port mapping %d->%d: invalid host IP %q", pm.HostPort, pm.ContainerPort, pm.HostIP)
		}
		pms = append(pms, portMapEntry{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: proto, HostIP: pm.HostIP})
	}
	if len(pms) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": pms}
	}
	return rt, nil
}

// Check fails when Setup would fail before running any plugin: a bad
// request, a missing namespace, no network config, a missing plugin. It
// lets a caller run Setup in the background and still refuse such a pod
// at once.
func (m *Manager) Check(ctx context.Context, req SetupRequest) error {
	if req.NetNSPath == "" {
		return errdefs.InvalidArgument("network namespace path is empty")
	}
	if _, err := runtimeConf(&req, req.NetNSPath); err != nil {
		return err
	}
	if err := ns.IsNSorErr(req.NetNSPath); err != nil {
		return errdefs.InvalidArgument("network namespace %s: %v", req.NetNSPath, err)
	}
	lc, err := m.defaultNetwork(ctx)
	if err != nil {
		return err
	}
	return m.checkPlugins(lc)
}

// Setup attaches the namespace at req.NetNSPath to the default network (CNI
// ADD). When ADD fails, Setup runs DEL for the same attachment before it
// returns, so a failed Setup leaves no IP allocation, interface or port
// mapping behind.
func (m *Manager) Setup(ctx context.Context, req SetupRequest) (*Result, error) {
	if req.NetNSPath == "" {
		return nil, errdefs.InvalidArgument("network namespace path is empty")
	}
	rt, err := runtimeConf(&req, req.NetNSPath)
	if err != nil {
		return nil, err
	}
	if err := ns.IsNSorErr(req.NetNSPath); err != nil {
		return nil, errdefs.InvalidArgument("network namespace %s: %v", req.NetNSPath, err)
	}
	lc, err := m.defaultNetwork(ctx)
	if err != nil {
		return nil, err
	}
	if err := m.checkPlugins(lc); err != nil {
		return nil, err
	}
	// libcni writes into the list it runs (runtime config injection), so
	// every operation gets its own copy; sharing one races between pods.
	list, err := libcni.NetworkConfFromBytes(lc.list.Bytes)
	if err != nil {
		return nil, fmt.Errorf("copying network config %s: %w", lc.list.Name, err)
	}
	ctx = log.With(ctx, "container", req.ContainerID, "network", list.Name)

	unlock, err := m.locks.lock(ctx, req.ContainerID)
	if err != nil {
		return nil, fmt.Errorf("waiting for network operations on %s: %w", req.ContainerID, err)
	}
	defer unlock()

	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, m.opts.AddTimeout)
	defer cancel()
	res, err := m.cni.AddNetworkList(actx, list, rt)
	if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("CNI ADD did not finish within %s (a plugin hangs; its process was killed): %w", m.opts.AddTimeout, context.DeadlineExceeded)
	}
	if err == nil {
		var r *types100.Result
		if r, err = types100.NewResultFromResult(res); err == nil {
			out := toResult(r)
			log.G(ctx).Debug("CNI ADD done", "ips", out.IPs, "duration", time.Since(start))
			return out, nil
		}
		err = fmt.Errorf("converting CNI result: %w", err)
	}
	// Undo what the plugins that succeeded did.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if derr := m.del(cctx, list, rt); derr != nil {
		log.G(ctx).Error("CNI DEL after failed ADD", "error", derr)
		err = errors.Join(err, fmt.Errorf("cleaning up: %w", derr))
	}
	return nil, fmt.Errorf("adding network %s: %w", list.Name, err)
}

// Teardown detaches the pod from the network (CNI DEL). It prefers the
// network config, CNI_ARGS and port mappings that ADD recorded in the libcni
// cache, and falls back to the current default network and req. It is
// idempotent. When req.NetNSPath is empty, missing or no longer a namespace,
// DEL still runs with an empty CNI_NETNS so that host-side state (IP
// allocations, port mappings) is released. Without a cached attachment and
// without a usable config there is nothing to run; Teardown logs that and
// returns nil.
func (m *Manager) Teardown(ctx context.Context, req SetupRequest) error {
	nsPath := req.NetNSPath
	if nsPath != "" {
		if err := ns.IsNSorErr(nsPath); err != nil {
			log.G(ctx).Debug("CNI DEL without network namespace", "container", req.ContainerID, "netns", nsPath, "reason", err)
			nsPath = ""
		}
	}
	rt, err := runtimeConf(&req, nsPath)
	if err != nil {
		return err
	}
	ctx = log.With(ctx, "container", req.ContainerID)

	unlock, err := m.locks.lock(ctx, req.ContainerID)
	if err != nil {
		return fmt.Errorf("waiting for network operations on %s: %w", req.ContainerID, err)
	}
	defer unlock()

	start := time.Now()
	atts, err := m.cni.GetCachedAttachments(req.ContainerID)
	if err != nil {
		log.G(ctx).Warn("reading CNI cache", "error", err)
	}
	var errs []error
	cached := 0
	for _, a := range atts {
		if a.IfName != rt.IfName {
			continue
		}
		cached++
		list, err := libcni.ConfListFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("parsing cached config of network %s: %w", a.Network, err))
			continue
		}
		crt := *rt
		if a.CniArgs != nil {
			crt.Args = a.CniArgs
		}
		crt.CapabilityArgs = a.CapabilityArgs
		if err := m.del(ctx, list, &crt); err != nil {
			errs = append(errs, fmt.Errorf("removing network %s: %w", list.Name, err))
		}
	}
	if cached == 0 {
		lc, err := m.defaultNetwork(ctx)
		if err != nil {
			log.G(ctx).Warn("CNI DEL skipped: no cached attachment and no usable network config", "error", err)
			return nil
		}
		list, err := libcni.NetworkConfFromBytes(lc.list.Bytes)
		if err != nil {
			return fmt.Errorf("copying network config %s: %w", lc.list.Name, err)
		}
		if err := m.del(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("removing network %s: %w", lc.list.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.G(ctx).Debug("CNI DEL done", "duration", time.Since(start))
	return nil
}

// del runs DEL for list. libcni stops at the first plugin whose DEL fails; del
// then runs DEL for every plugin on its own, in reverse order, so that one
// failing plugin does not leak the state of the others. The cached result
// stays in place until a DEL of the whole list succeeded, so a retry sees the
// same arguments.
func (m *Manager) del(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	err := m.cni.DelNetworkList(ctx, list, rt)
	if err == nil || len(list.Plugins) < 2 {
		return err
	}
	log.G(ctx).Warn("CNI DEL failed, retrying plugin by plugin", "error", err)
	prev, _ := m.cni.GetNetworkListCachedResult(list, rt)
	var errs []error
	for i := len(list.Plugins) - 1; i >= 0; i-- {
		p := list.Plugins[i]
		if prev != nil {
			injected, ierr := libcni.InjectConf(p, map[string]any{"prevResult": prev})
			if ierr == nil {
				p = injected
			}
		}
		one := &libcni.NetworkConfigList{Name: list.Name, CNIVersion: list.CNIVersion, Plugins: []*libcni.PluginConfig{p}, Bytes: list.Bytes}
		if perr := m.noCache.DelNetworkList(ctx, one, rt); perr != nil {
			errs = append(errs, perr)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Every plugin is done; drop the cached result. A list without plugins
	// only removes the cache entry.
	empty := &libcni.NetworkConfigList{Name: list.Name, CNIVersion: list.CNIVersion, Bytes: list.Bytes}
	return m.cni.DelNetworkList(ctx, empty, rt)
}

// toResult extracts the pod's addresses from r.
func toResult(r *types100.Result) *Result {
	out := &Result{
		Interfaces: r.Interfaces,
		Routes:     r.Routes,
		DNS:        r.DNS,
		Raw:        *r,
	}
	var v6 []net.IP
	for _, ipc := range r.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i >= 0 && i < len(r.Interfaces) && r.Interfaces[i].Sandbox == "" {
				continue // a host-side address
			}
		}
		if v4 := ipc.Address.IP.To4(); v4 != nil {
			out.IPs = append(out.IPs, v4)
		} else {
			v6 = append(v6, ipc.Address.IP)
		}
	}
	out.IPs = append(out.IPs, v6...)
	return out
}

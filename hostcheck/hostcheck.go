// Package hostcheck reports what this host supports for crivm's handlers:
// runtime and monitor binaries, cgroups, overlayfs, KVM (probed by booting a
// guest), vhost-vsock, the guest kernel and CNI plugins, and from those a
// verdict per configured handler. It never fails: every problem is a line in
// the Report.
package hostcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/internal/log"
)

// Item names. Items marked per handler carry Item.Handler.
const (
	ItemRuntime     = "runtime"         // per oci handler: runtime_path --version
	ItemMonitor     = "monitor"         // per oci handler: monitor_path --version
	ItemCrun        = "crun"            // only when crun is installed
	ItemCgroups     = "cgroups"         // v1, v2 or hybrid, and controllers
	ItemOverlay     = "overlay"         // a real mount as root, /proc/filesystems otherwise
	ItemQEMU        = "qemu"            // per vm handler: hypervisor_path version
	ItemKVM         = "kvm"             // per vm handler: the accelerator VMs will use
	ItemVhostVsock  = "vhost-vsock"     // /dev/vhost-vsock usable
	ItemTransport   = "agent transport" // per vm handler: the transport agent_transport resolves to
	ItemSharedFS    = "shared fs"       // per vm handler: 9p or virtio-fs, as shared_fs resolves
	ItemGuestKernel = "guest kernel"    // per vm handler: FindKernel(kernel)
	ItemCNIPlugins  = "cni plugins"     // bridge, host-local, loopback, portmap in cni_plugin_dirs
	ItemCNIConfig   = "cni config"      // a network config in network_dir
)

// Options tunes Run.
type Options struct {
	// Probe boots a probe guest under KVM (up to ProbeTimeout) when /dev/kvm
	// exists, instead of only looking for the device.
	Probe bool
	// CacheDir holds the accel probe verdict. Empty: cfg.Runroot when it is
	// writable, else a temporary directory removed before Run returns.
	CacheDir string
	// ProbeTimeout bounds the probe boot. Zero: hostprobe.DefaultProbeTimeout.
	ProbeTimeout time.Duration
}

// Item is one checked fact. OK is true only when the check passed; Value is
// the short answer and Detail the explanation.
type Item struct {
	Name    string `json:"name"`
	Handler string `json:"handler,omitempty"`
	OK      bool   `json:"ok"`
	Value   string `json:"value"`
	Detail  string `json:"detail,omitempty"`
}

// Verdict says whether one configured handler can run pods on this host.
// Usable is true iff Problems is empty.
type Verdict struct {
	Handler  string   `json:"handler"`
	Type     string   `json:"type"`
	Usable   bool     `json:"usable"`
	Summary  string   `json:"summary"`
	Problems []string `json:"problems,omitempty"`
}

// Report is the result of Run. Verdicts are sorted by handler name.
type Report struct {
	Items    []Item    `json:"items"`
	Verdicts []Verdict `json:"verdicts"`
}

// Item returns the item with name for handler ("" for host-wide items).
func (r Report) Item(name, handler string) (Item, bool) {
	for _, it := range r.Items {
		if it.Name == name && it.Handler == handler {
			return it, true
		}
	}
	return Item{}, false
}

// Verdict returns the verdict for handler.
func (r Report) Verdict(handler string) (Verdict, bool) {
	for _, v := range r.Verdicts {
		if v.Handler == handler {
			return v, true
		}
	}
	return Verdict{}, false
}

// Run checks the host against cfg.
func Run(ctx context.Context, cfg *configs.Config, opts Options) Report {
	c := &checker{ctx: ctx, cfg: cfg, opts: opts, versions: map[string]versionResult{}}
	defer c.cleanup()
	var r Report

	cg := checkCgroups(hostCgroupFS())
	ov := checkOverlay(ctx)
	vsock := checkVhostVsock()

	names := cfg.HandlerNames()
	for _, name := range names {
		if h := cfg.Runtime.Runtimes[name]; h.RuntimeType == configs.RuntimeTypeOCI {
			r.Items = append(r.Items, c.binary(ItemRuntime, name, h.RuntimePath), c.binary(ItemMonitor, name, h.MonitorPath))
		}
	}
	if p := findCrun(); p != "" {
		r.Items = append(r.Items, c.binary(ItemCrun, "", p))
	}
	r.Items = append(r.Items, cg, ov)

	vms := map[string]vmItems{}
	for _, name := range names {
		if h := cfg.Runtime.Runtimes[name]; h.RuntimeType == configs.RuntimeTypeVM {
			vms[name] = c.vmHandler(name, h)
		}
	}
	for _, name := range names {
		if v, ok := vms[name]; ok {
			r.Items = append(r.Items, v.qemu, v.kernel, v.kvm)
		}
	}
	r.Items = append(r.Items, vsock)
	for _, name := range names {
		if v, ok := vms[name]; ok {
			r.Items = append(r.Items, v.transport, v.sharedFS)
		}
	}
	r.Items = append(r.Items, checkCNIPlugins(cfg.Network.CNIPluginDirs), checkCNIConfig(cfg.Network.NetworkDir))

	for _, name := range names {
		h := cfg.Runtime.Runtimes[name]
		switch h.RuntimeType {
		case configs.RuntimeTypeOCI:
			rt, _ := r.Item(ItemRuntime, name)
			mon, _ := r.Item(ItemMonitor, name)
			r.Verdicts = append(r.Verdicts, ociVerdict(name, h, rt, mon, cg, ov))
		case configs.RuntimeTypeVM:
			r.Verdicts = append(r.Verdicts, vms[name].verdict(name, h))
		default:
			r.Verdicts = append(r.Verdicts, Verdict{
				Handler: name, Type: h.RuntimeType,
				Summary:  "not usable: unknown runtime_type",
				Problems: []string{fmt.Sprintf("runtime_type %q is neither oci nor vm", h.RuntimeType)},
			})
		}
	}
	for _, it := range r.Items {
		log.G(ctx).Debug("host check", "name", it.Name, "handler", it.Handler, "ok", it.OK, "value", it.Value, "detail", it.Detail)
	}
	return r
}

type checker struct {
	ctx      context.Context
	cfg      *configs.Config
	opts     Options
	versions map[string]versionResult // by binary path

	cacheDir    string
	cacheChosen bool
	tempCache   string // removed by cleanup
}

func (c *checker) cleanup() {
	if c.tempCache != "" {
		os.RemoveAll(c.tempCache)
	}
}

// probeCacheDir picks, once, where accel verdicts are cached.
func (c *checker) probeCacheDir() string {
	if c.cacheChosen {
		return c.cacheDir
	}
	c.cacheChosen = true
	switch {
	case c.opts.CacheDir != "":
		c.cacheDir = c.opts.CacheDir
	case c.cfg.Runroot != "" && dirWritable(c.cfg.Runroot):
		c.cacheDir = c.cfg.Runroot
	default:
		d, err := os.MkdirTemp("", "crivm-check-")
		if err != nil {
			log.G(c.ctx).Warn("creating a temporary accel cache dir", "error", err)
			return ""
		}
		c.tempCache, c.cacheDir = d, d
	}
	return c.cacheDir
}

type versionResult struct {
	line string
	err  error
}

// binary checks that path is an executable file and that `path --version`
// prints something.
func (c *checker) binary(name, handler, path string) Item {
	it := Item{Name: name, Handler: handler, Detail: path}
	if path == "" {
		it.Detail = "not configured"
		return it
	}
	if err := checkExecutable(path); err != nil {
		it.Value = "missing"
		it.Detail = fmt.Sprintf("%s: %v", path, err)
		return it
	}
	v, ok := c.versions[path]
	if !ok {
		line, err := versionLine(c.ctx, path)
		v = versionResult{line, err}
		c.versions[path] = v
	}
	if v.err != nil {
		it.Value = "broken"
		it.Detail = fmt.Sprintf("%s: %v", path, v.err)
		return it
	}
	it.OK, it.Value = true, v.line
	return it
}

// versionTimeout bounds one `--version` run.
const versionTimeout = 10 * time.Second

func versionLine(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	line := firstNonBlank(string(out))
	if err != nil {
		return "", fmt.Errorf("running --version: %w: %s", err, line)
	}
	if line == "" {
		return "", fmt.Errorf("running --version: no output")
	}
	return line, nil
}

func firstNonBlank(s string) string {
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

func findCrun() string {
	if p, err := exec.LookPath("crun"); err == nil {
		return p
	}
	// The daemon's PATH may lack the sbin directories.
	for _, p := range []string{"/usr/bin/crun", "/usr/sbin/crun", "/usr/local/bin/crun", "/usr/local/sbin/crun"} {
		if checkExecutable(p) == nil {
			return p
		}
	}
	return ""
}

func ociVerdict(name string, h *configs.RuntimeHandler, rt, mon, cg, ov Item) Verdict {
	v := Verdict{Handler: name, Type: h.RuntimeType}
	if !rt.OK {
		v.Problems = append(v.Problems, "runtime_path "+rt.Detail)
	}
	if !mon.OK {
		v.Problems = append(v.Problems, "monitor_path "+mon.Detail)
	}
	if !cg.OK {
		v.Problems = append(v.Problems, "cgroups: "+cg.Detail)
	}
	if !ov.OK {
		v.Problems = append(v.Problems, "overlay: "+ov.Detail)
	}
	v.Usable = len(v.Problems) == 0
	if v.Usable {
		v.Summary = fmt.Sprintf("usable: %s, %s, cgroups %s", rt.Value, mon.Value, cg.Value)
	} else {
		v.Summary = notUsable(v.Problems)
	}
	return v
}

func notUsable(problems []string) string {
	if len(problems) == 1 {
		return "not usable: " + problems[0]
	}
	return fmt.Sprintf("not usable: %s (and %d more)", problems[0], len(problems)-1)
}

// WriteText prints the items as an aligned table, then one line per
// handler verdict with its problems below it.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tHANDLER\tOK\tVALUE\tDETAIL")
	for _, it := range r.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Name, it.Handler, yesNo(it.OK, "ok", "NO"), it.Value, it.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HANDLER\tTYPE\tUSABLE\tSUMMARY")
	for _, v := range r.Verdicts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Handler, v.Type, yesNo(v.Usable, "yes", "NO"), v.Summary)
		for _, p := range v.Problems {
			fmt.Fprintf(tw, "\t\t\t- %s\n", p)
		}
	}
	return tw.Flush()
}

// WriteJSON writes the report as one indented JSON document.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// sortedUnique sorts s in place and drops duplicates.
func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

//go:build nodee2e

package nodee2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one cluster process (etcd, kube-apiserver, kubelet) in its own
// process group, logging to a file. The kernel kills it if the test process
// dies without its cleanups (a go test timeout): Pdeathsig, from a thread
// that lives until the process is reaped.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, log: logPath, done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		defer close(p.done)
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			p.err = err
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p.cmd = cmd
	t.Logf("%s started, pid %d, log %s", name, cmd.Process.Pid, logPath)
	t.Cleanup(func() { p.stop(t, 30*time.Second) })
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the group, then SIGKILL after timeout.
func (p *proc) stop(t *testing.T, timeout time.Duration) {
	if p.cmd == nil || p.exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Logf("%s still running %v after SIGTERM: killing", p.name, timeout)
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// tailLog is the end of the process's log, for failure messages.
func (p *proc) tailLog(lines int) string {
	b, _ := os.ReadFile(p.log)
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeServiceAccountKeys writes an RSA key pair for the API server's
// service-account token signer (it refuses to start without one).
func writeServiceAccountKeys(t *testing.T, dir string) (pub, priv string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o644); err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// cleanEnv is the test's environment without variables that would steer
// etcd, kubectl or the proxy settings of the cluster's clients.
func cleanEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "ETCD"), strings.HasPrefix(k, "KUBE"),
			strings.EqualFold(k, "http_proxy"), strings.EqualFold(k, "https_proxy"), strings.EqualFold(k, "no_proxy"):
			continue
		}
		out = append(out, kv)
	}
	return append(out, extra...)
}

// ---- host state the kubelet changes -------------------------------------

// kubeletSysctls are the tunables the kubelet sets (setupKernelTunables in
// pkg/kubelet/cm/container_manager_linux.go) unless protectKernelDefaults.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// hostState is what the kubelet changes on the host and the test puts back:
// sysctls, KUBE-* iptables chains, kubepods cgroups, and mounts under its
// root dir (it bind-mounts the root dir onto itself, shared).
type hostState struct {
	sysctls  map[string]string
	chains   map[string]map[string]bool // "iptables nat" -> chains before
	cgroups  map[string]bool            // kubepods dirs that existed before
	cgGlobs  []string
	tables   []string
	iptables []string
}

func snapshotHost(t *testing.T) *hostState {
	h := &hostState{
		sysctls:  map[string]string{},
		chains:   map[string]map[string]bool{},
		cgroups:  map[string]bool{},
		cgGlobs:  []string{"/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/*/kubepods"},
		tables:   []string{"filter", "nat", "mangle"},
		iptables: []string{"iptables", "ip6tables"},
	}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			h.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, bin := range h.iptables {
		for _, tbl := range h.tables {
			h.chains[bin+" "+tbl] = iptChains(bin, tbl)
		}
	}
	for _, g := range h.cgGlobs {
		m, _ := filepath.Glob(g)
		for _, d := range m {
			h.cgroups[d] = true
		}
	}
	return h
}

func iptChains(bin, table string) map[string]bool {
	out, err := exec.Command(bin, "-w", "-t", table, "-S").Output()
	m := map[string]bool{}
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "-N" || f[0] == "-P") {
			m[f[1]] = true
		}
	}
	return m
}

// restore puts back the sysctls, removes the KUBE-* chains the kubelet
// added (and the jumps to them), and removes kubepods cgroups that did not
// exist before. Run after the kubelet has stopped.
func (h *hostState) restore(t *testing.T) {
	for k, v := range h.sysctls {
		if b, _ := os.ReadFile("/proc/sys/" + k); strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				t.Logf("restoring sysctl %s=%s: %v", k, v, err)
			}
		}
	}
	for _, bin := range h.iptables {
		for _, tbl := range h.tables {
			h.removeChains(t, bin, tbl)
		}
	}
	h.removeCgroups(t)
}

func (h *hostState) removeChains(t *testing.T, bin, table string) {
	before := h.chains[bin+" "+table]
	now := iptChains(bin, table)
	var added []string
	for c := range now {
		if !before[c] && strings.HasPrefix(c, "KUBE-") {
			added = append(added, c)
		}
	}
	if len(added) == 0 {
		return
	}
	isAdded := map[string]bool{}
	for _, c := range added {
		isAdded[c] = true
	}
	out, _ := exec.Command(bin, "-w", "-t", table, "-S").Output()
	for _, l := range strings.Split(string(out), "\n") {
		args := splitQuoted(l)
		if len(args) < 2 || args[0] != "-A" || isAdded[args[1]] {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if (args[i] == "-j" || args[i] == "-g") && isAdded[args[i+1]] {
				del := append([]string{"-w", "-t", table, "-D"}, args[1:]...)
				if o, err := exec.Command(bin, del...).CombinedOutput(); err != nil {
					t.Logf("%s %v: %v %s", bin, del, err, o)
				}
				break
			}
		}
	}
	for _, c := range added {
		exec.Command(bin, "-w", "-t", table, "-F", c).Run()
	}
	for _, c := range added {
		if o, err := exec.Command(bin, "-w", "-t", table, "-X", c).CombinedOutput(); err != nil {
			t.Logf("%s -t %s -X %s: %v %s", bin, table, c, err, o)
		}
	}
	t.Logf("removed the kubelet's %s %s chains %v", bin, table, added)
}

// splitQuoted splits an iptables -S line into arguments, honouring the
// double quotes around comments.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && inQ && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQ, have = !inQ, true
		case c == ' ' && !inQ:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

func (h *hostState) removeCgroups(t *testing.T) {
	for _, g := range h.cgGlobs {
		m, _ := filepath.Glob(g)
		for _, top := range m {
			if h.cgroups[top] {
				continue
			}
			var dirs []string
			filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
			for _, d := range dirs {
				var err error
				for range 20 {
					if err = unix.Rmdir(d); err == nil || err == unix.ENOENT {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil && err != unix.ENOENT {
					t.Logf("removing cgroup %s: %v", d, err)
				}
			}
		}
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(t *testing.T, dir string) {
	ms := mountsUnder(dir)
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	for _, m := range ms {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			t.Logf("unmounting %s: %v", m, err)
		}
	}
}

// mountsUnder lists mount points at or below any of dirs (one entry per
// mount, so a path mounted twice is listed twice).
func mountsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, d+"/")) {
				out = append(out, mp)
				break
			}
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// addNodeIP puts ip/32 on one end of a new veth pair (these hosts' kernels
// have no dummy interface): the kubelet's --node-ip (it refuses a loopback
// one), which the API server dials with
// --kubelet-preferred-address-types=InternalIP. The pair leads nowhere;
// nothing leaves the host. Its names do not start with "veth", so it is not
// mistaken for a pod's by leak checks.
func addNodeIP(t *testing.T, name, peer, ip string) {
	t.Helper()
	for _, args := range [][]string{
		{"link", "add", name, "type", "veth", "peer", "name", peer},
		{"addr", "add", ip + "/32", "dev", name},
		{"link", "set", name, "up"},
		{"link", "set", peer, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", name).Run()
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
}

//go:build nodee2e

package nodee2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/framework"
	"github.com/crivm/crivm/test/registry"
	"github.com/crivm/crivm/test/testutil"
)

const (
	k8sVersion = "v1.37.2"
	// podTimeout bounds a pod's way to Ready: VMs boot under TCG here, on
	// two cores shared with other builds.
	podTimeout = 4 * time.Minute
	nodeName   = "crivm-nodee2e"
)

// env is the cluster: crivm (framework daemon, loopback registry, bridge
// CNI), etcd, kube-apiserver and the kubelet, and what the test learnt
// about crivm's sandboxes on the way.
type env struct {
	t      *testing.T
	rep    *report
	dir    string // artifacts: logs, configs, certs, the report
	k8sBin string

	d     *framework.Daemon
	reg   *framework.Registry
	br    *framework.Bridge
	rs    internalapi.RuntimeService
	image string

	node, nodeIP string
	kubeconfig   string
	etcdURL      string
	kubeletRoot  string
	staticDir    string
	hostKernel   string
	netBefore    framework.NetState
	host         *hostState
	kubelet      *proc
	apiserver    *proc
	etcd         *proc

	mu         sync.Mutex
	sandboxes  map[string]sandboxRec // sandbox ID -> what it was
	containers map[string]string     // container ID -> sandbox ID
	live       map[string]hostScan   // handler -> the scan while its pods ran
}

type sandboxRec struct {
	handler, ns, name, uid string
	pid                    int
	extra                  map[string]string
}

func (e *env) bin(name string) string { return filepath.Join(e.k8sBin, name) }

func k8sBinDir() string {
	if d := os.Getenv("K8S_BIN_DIR"); d != "" {
		return d
	}
	tools := os.Getenv("CRIVM_TOOLS_DIR")
	if tools == "" {
		tools = "/var/cache/crivm-tools"
	}
	return filepath.Join(tools, "k8s-"+k8sVersion, "bin")
}

// TestNode runs the node scenarios: a real kubelet v1.37.2 against crivm,
// for the runc and the vm handler.
func TestNode(t *testing.T) {
	testutil.RequiresRoot(t)
	e := &env{t: t, rep: newReport(), k8sBin: k8sBinDir(), node: nodeName,
		sandboxes: map[string]sandboxRec{}, containers: map[string]string{}, live: map[string]hostScan{}}
	for _, b := range []string{"kubelet", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(e.bin(b)); err != nil {
			t.Skipf("%s missing in %s: scripts/k8s-build.sh builds it (make node-e2e runs it)", b, e.k8sBin)
		}
	}
	for _, b := range []string{"etcd", registry.Binary, "runc", "conmon", "/usr/lib/cni/bridge", "qemu-system-x86_64", "iptables", "ip"} {
		testutil.RequiresBinary(t, b)
	}
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
		t.Skip("no guest kernel: /boot/vmlinuz-* missing (install linux-image-amd64)")
	}

	// The report is written last, whatever happens.
	var setupMsgs []string
	setup := &sc{T: t, msgs: &setupMsgs}
	t.Cleanup(func() {
		if t.Failed() && len(setupMsgs) > 0 {
			e.rep.fatal = strings.Join(setupMsgs, " / ")
		}
		e.rep.write(t, os.Getenv("NODE_E2E_REPORT"))
	})
	e.dir = os.Getenv("NODE_E2E_ARTIFACTS")
	if e.dir == "" {
		d, err := os.MkdirTemp("", "crivm-node-e2e-")
		if err != nil {
			t.Fatal(err)
		}
		e.dir = d
	}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifacts (logs, configs, report) in %s", e.dir)
	out, _ := exec.Command("uname", "-r").Output()
	e.hostKernel = strings.TrimSpace(string(out))

	// What the kubelet changes on the host is put back after everything
	// else has stopped: registered first, it runs after the other cleanups.
	e.host = snapshotHost(t)
	t.Cleanup(func() { e.host.restore(t) })

	// 1. crivm: its own root and socket, the loopback registry holding the
	//    busybox and pause fixtures, and a private CNI bridge.
	e.startCrivm(setup)
	// 2. etcd (Debian's), on loopback with a temp data dir.
	e.startEtcd(setup)
	// 3. kube-apiserver, on loopback, token auth, AlwaysAllow.
	e.startAPIServer(setup)
	// 4. The kubelet against crivm; the node registers and gets Ready.
	e.startKubelet(setup)
	e.waitNode(setup)
	e.recordFacts()
	// 5. RuntimeClasses runc and vm (and one whose handler crivm lacks),
	//    and a namespace per handler.
	e.createClasses(setup)

	// 6-7. The scenarios, for each handler.
	for _, h := range []string{"runc", "vm"} {
		t.Run(h, func(t *testing.T) { e.runHandler(t, h) })
	}
	// 8. A static pod: no RuntimeClass, crivm's default handler.
	e.scenario(t, "node", "12", "static-pod", e.staticPod)
	// 9. A RuntimeClass whose handler crivm does not have.
	e.scenario(t, "node", "13", "unknown-handler", e.unknownHandler)
	// 10. Everything deleted: nothing left, per handler.
	e.noLeaks(t)
	e.kubeletNotes()
}

var unknownHandlerLog = regexp.MustCompile(`"Unknown runtime handler" runtimeHandlerName="([^"]*)"`)

// kubeletNotes reports which handlers the kubelet found missing from
// crivm's RuntimeStatus (it logs "Unknown runtime handler" per pod).
func (e *env) kubeletNotes() {
	if e.kubelet == nil {
		return
	}
	b, err := os.ReadFile(e.kubelet.log)
	if err != nil {
		return
	}
	n := map[string]int{}
	for _, m := range unknownHandlerLog.FindAllStringSubmatch(string(b), -1) {
		n[fmt.Sprintf("%q", m[1])]++
	}
	if len(n) == 0 {
		e.rep.note("the kubelet logged no \"Unknown runtime handler\"")
		return
	}
	var parts []string
	for h, c := range n {
		parts = append(parts, fmt.Sprintf("%s %d times", h, c))
	}
	sort.Strings(parts)
	e.rep.note("the kubelet logged \"Unknown runtime handler\" (a handler missing from RuntimeStatus) for: %s", strings.Join(parts, ", "))
}

// ---- 1-5: the cluster -----------------------------------------------------

func (e *env) startCrivm(c *sc) {
	ctx := context.Background()
	var err error
	if e.netBefore, err = framework.NetSnapshot(); err != nil {
		c.Fatal(err)
	}
	kr, err := os.MkdirTemp("", "crivm-nodee2e-kubelet-")
	if err != nil {
		c.Fatal(err)
	}
	e.kubeletRoot = kr
	// Removed last but for the host state (the kubelet's cleanup unmounts
	// what it mounted there first).
	c.Cleanup(func() {
		if left := mountsUnder(kr); len(left) > 0 {
			c.Logf("mounts left under %s, not removing it: %v", kr, left)
			return
		}
		os.RemoveAll(kr)
	})
	// The framework keeps a failed test's daemon dir (root with its image
	// store, ~75 MB); its log is in the artifacts, so it goes. Registered
	// before NewDaemon: runs after the framework's own cleanup.
	c.Cleanup(func() {
		if e.d == nil || len(mountsUnder(e.d.Dir)) > 0 {
			return
		}
		if _, err := os.Stat(filepath.Join(e.dir, "crivm.log")); err == nil {
			os.RemoveAll(e.d.Dir)
		}
	})
	e.reg = framework.StartRegistry(c, registry.Options{})
	e.d = framework.NewDaemon(c, framework.DaemonOptions{})
	e.d.TrustRegistry(e.reg.Host)
	e.d.UsePauseImage(e.reg.Ref("pause", "latest"))
	e.br = e.d.UseBridgeNetwork()
	// crivm's hostPath policy for untrusted pods lets them mount below
	// <kubelet_root_dir>/pods/<their UID>: the kubelet's dir here.
	conf := fmt.Sprintf("[crivm.runtime]\nkubelet_root_dir = %q\n", e.kubeletRoot)
	if err := os.WriteFile(filepath.Join(e.d.DropIn, "30-kubelet.conf"), []byte(conf), 0o644); err != nil {
		c.Fatal(err)
	}
	// Keep crivm's log with the artifacts (the framework removes its dir
	// after a passing test); registered after NewDaemon, so it runs first.
	c.Cleanup(func() {
		if b, err := os.ReadFile(e.d.LogPath); err == nil {
			os.WriteFile(filepath.Join(e.dir, "crivm.log"), b, 0o644)
		}
	})
	e.d.Start(ctx)
	e.rs = e.d.RuntimeService(ctx)
	e.image = e.reg.Ref("busybox", "latest")
	c.Logf("crivm on %s (dir %s), registry %s, bridge %s %s", e.d.Socket, e.d.Dir, e.reg.Host, e.br.Name, e.br.Subnet)
}

func (e *env) startEtcd(c *sc) {
	cport, pport := freePort(c.T), freePort(c.T)
	curl := fmt.Sprintf("http://127.0.0.1:%d", cport)
	purl := fmt.Sprintf("http://127.0.0.1:%d", pport)
	data := filepath.Join(e.dir, "etcd-data")
	os.RemoveAll(data)
	e.etcd = startProc(c.T, "etcd", filepath.Join(e.dir, "etcd.log"), cleanEnv(), "etcd",
		"--name", "nodee2e", "--data-dir", data,
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "nodee2e="+purl, "--logger", "zap", "--log-outputs", "stderr")
	c.Cleanup(func() { os.RemoveAll(data) })
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if e.etcd.exited() {
			c.Fatalf("etcd exited: %v\n%s", e.etcd.err, e.etcd.tailLog(30))
		}
		if resp, err := client.Get(curl + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			c.Fatalf("etcd not healthy on %s after 60s:\n%s", curl, e.etcd.tailLog(30))
		}
	}
	e.etcdURL = curl
}

func (e *env) startAPIServer(c *sc) {
	port := freePort(c.T)
	token := randHex(16)
	pki := filepath.Join(e.dir, "pki")
	os.MkdirAll(pki, 0o700)
	tokens := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		c.Fatal(err)
	}
	pub, priv := writeServiceAccountKeys(c.T, pki)
	e.apiserver = startProc(c.T, "kube-apiserver", filepath.Join(e.dir, "kube-apiserver.log"), cleanEnv(), e.bin("kube-apiserver"),
		"--etcd-servers="+e.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(pki, "apiserver"),
		"--token-auth-file="+tokens, "--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+pub, "--service-account-signing-key-file="+priv,
		"--service-cluster-ip-range=10.96.0.0/24",
		// No controller-manager: no endpoints reconciler, no ServiceAccount
		// tokens, no node lifecycle controller to lift condition taints.
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
		// The apiserver reaches the kubelet (logs, exec, attach,
		// port-forward, stats) at the node's InternalIP, the --node-ip address.
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true", "--profiling=false", "--v=1")
	e.kubeconfig = filepath.Join(e.dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: nodee2e
  cluster:
    server: https://127.0.0.1:%d
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: nodee2e
  context:
    cluster: nodee2e
    user: admin
current-context: nodee2e
`, port, token)
	if err := os.WriteFile(e.kubeconfig, []byte(kc), 0o600); err != nil {
		c.Fatal(err)
	}
	var last error
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		if e.apiserver.exited() {
			c.Fatalf("kube-apiserver exited: %v\n%s", e.apiserver.err, e.apiserver.tailLog(40))
		}
		out, err := e.k("get", "--raw", "/readyz")
		if err == nil && strings.TrimSpace(out) == "ok" {
			if _, err = e.k("get", "namespace", "default", "kube-node-lease"); err == nil {
				break
			}
		}
		last = err
		if time.Now().After(deadline) {
			c.Fatalf("kube-apiserver not ready after 3m: %v\n%s", last, e.apiserver.tailLog(40))
		}
	}
	c.Logf("kube-apiserver ready on 127.0.0.1:%d", port)
}

func (e *env) startKubelet(c *sc) {
	// The node IP: a /32 on an interface of its own (the kubelet refuses
	// a loopback --node-ip).
	e.nodeIP = fmt.Sprintf("10.253.%d.%d", rand.IntN(256), 1+rand.IntN(254))
	n := rand.IntN(10000)
	addNodeIP(c.T, fmt.Sprintf("crvnode%d", n), fmt.Sprintf("crvnodep%d", n), e.nodeIP)
	e.staticDir = filepath.Join(e.dir, "manifests")
	logsDir := filepath.Join(e.dir, "pod-logs")
	for _, d := range []string{e.staticDir, logsDir} {
		os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.Fatal(err)
		}
	}
	resolv := filepath.Join(e.dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644)
	port, healthz := freePort(c.T), freePort(c.T)
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %s
# cgroup v1 here: 1.37 refuses to start on it unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
# The default -999 needs CAP_SYS_RESOURCE, which root lacks here.
oomScoreAdj: 0
resolvConf: %s
staticPodPath: %s
fileCheckFrequency: 5s
podLogsDir: %s
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
# No image GC in the middle of a run.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
runtimeRequestTimeout: 5m
`, e.d.Endpoint(), resolv, e.staticDir, logsDir, e.nodeIP, port, healthz)
	cfgPath := filepath.Join(e.dir, "kubelet-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		c.Fatal(err)
	}
	// After the kubelet stops (this cleanup is registered first): its
	// mounts (it makes its root dir a shared bind of itself), its dir, and
	// the container log symlinks it keeps in /var/log/containers.
	c.Cleanup(func() {
		unmountUnder(c.T, e.kubeletRoot)
		for _, ns := range []string{"e2e-runc", "e2e-vm", "default"} {
			links, _ := filepath.Glob("/var/log/containers/*_" + ns + "_*.log")
			for _, l := range links {
				if dst, err := os.Readlink(l); err == nil && strings.HasPrefix(dst, logsDir) {
					os.Remove(l)
				}
			}
		}
	})
	e.kubelet = startProc(c.T, "kubelet", filepath.Join(e.dir, "kubelet.log"), cleanEnv(), e.bin("kubelet"),
		"--config="+cfgPath, "--kubeconfig="+e.kubeconfig, "--root-dir="+e.kubeletRoot,
		"--hostname-override="+e.node, "--node-ip="+e.nodeIP, "--v=2")
}

type nodeJSON struct {
	Status struct {
		Conditions []condition `json:"conditions"`
		NodeInfo   struct {
			KubeletVersion          string `json:"kubeletVersion"`
			ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
			KernelVersion           string `json:"kernelVersion"`
			OSImage                 string `json:"osImage"`
		} `json:"nodeInfo"`
		RuntimeHandlers []struct {
			Name string `json:"name"`
		} `json:"runtimeHandlers"`
		Addresses []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
	} `json:"status"`
}

func (e *env) getNode() (*nodeJSON, error) {
	out, err := e.k("get", "node", e.node, "-o", "json")
	if err != nil {
		return nil, err
	}
	var n nodeJSON
	return &n, json.Unmarshal([]byte(out), &n)
}

func (e *env) waitNode(c *sc) {
	var last string
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(2 * time.Second) {
		if e.kubelet.exited() {
			c.Fatalf("the kubelet exited: %v\n%s", e.kubelet.err, e.kubelet.tailLog(60))
		}
		n, err := e.getNode()
		if err == nil {
			last = ""
			for _, cd := range n.Status.Conditions {
				if cd.Type == "Ready" {
					if cd.Status == "True" {
						c.Logf("node %s Ready: %+v", e.node, n.Status.NodeInfo)
						return
					}
					last = cd.Reason + ": " + cd.Message
				}
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			c.Fatalf("node %s not Ready after 3m: %s\nkubelet log:\n%s", e.node, last, e.kubelet.tailLog(60))
		}
	}
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "?"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func (e *env) recordFacts() {
	r := e.rep
	r.fact("Kubernetes: kubelet `%s`, kube-apiserver `%s`, kubectl `%s` (built by `scripts/k8s-build.sh`)",
		firstLine(e.bin("kubelet"), "--version"), firstLine(e.bin("kube-apiserver"), "--version"),
		firstLine(e.bin("kubectl"), "version", "--client"))
	r.fact("etcd: `%s` (Debian `etcd-server`)", firstLine("etcd", "--version"))
	crivm, _ := framework.Bin("crivm")
	r.fact("crivm: `%s` (git `%s`); runc `%s`; conmon `%s`; QEMU `%s`",
		firstLine(crivm, "version"), firstLine("git", "-C", repoDir(), "describe", "--always", "--dirty"),
		firstLine("runc", "--version"), firstLine("conmon", "--version"), firstLine("qemu-system-x86_64", "--version"))
	cg := "v2"
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		cg = "v1"
	}
	r.fact("host: kernel %s, cgroup %s, %s CPUs", e.hostKernel, cg, firstLine("nproc"))
	if n, err := e.getNode(); err == nil {
		var hs []string
		for _, h := range n.Status.RuntimeHandlers {
			hs = append(hs, fmt.Sprintf("%q", h.Name))
		}
		r.fact("the node reports runtime `%s`, kubelet `%s`, runtime handlers [%s]",
			n.Status.NodeInfo.ContainerRuntimeVersion, n.Status.NodeInfo.KubeletVersion, strings.Join(hs, ", "))
	}
}

func repoDir() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

// The RuntimeClass vm's overhead.podFixed, as the README recommends.
const (
	vmOverheadMemory = "256Mi"
	vmOverheadCPU    = "250m"
)

func (e *env) createClasses(c *sc) {
	var b strings.Builder
	for _, rc := range [][2]string{{"runc", "runc"}, {"vm", "vm"}, {"bogus", "nosuch"}} {
		fmt.Fprintf(&b, "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: %s\nhandler: %s\n", rc[0], rc[1])
		if rc[0] == "vm" {
			// QEMU runs in the pod's cgroup: the kubelet adds this to the
			// pod cgroup's limits, and crivm refuses a VM pod whose limit
			// cannot hold guest RAM plus QEMU (README, "Pointing a kubelet
			// at crivm").
			fmt.Fprintf(&b, "overhead:\n  podFixed:\n    memory: %s\n    cpu: %s\n", vmOverheadMemory, vmOverheadCPU)
		}
		b.WriteString("---\n")
	}
	for _, ns := range []string{"e2e-runc", "e2e-vm"} {
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n---\n", ns)
	}
	if err := e.apply(b.String()); err != nil {
		c.Fatal(err)
	}
}

// ---- pods -------------------------------------------------------------------

// manifest is a Pod on this node; body holds the spec's other fields,
// indented by two spaces, with IMAGE for the busybox fixture.
func (e *env) manifest(ns, name, runtimeClass, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  nodeName: %s\n", name, ns, e.node)
	b.WriteString("  dnsPolicy: Default\n  enableServiceLinks: false\n  terminationGracePeriodSeconds: 2\n")
	if runtimeClass != "" {
		fmt.Fprintf(&b, "  runtimeClassName: %s\n", runtimeClass)
	}
	b.WriteString(strings.ReplaceAll(body, "IMAGE", e.image))
	return b.String()
}

// ctr is one container entry: busybox running script under sh -c; extra
// lines are indented by four spaces.
func ctr(name, script, extra string) string {
	cmd, _ := json.Marshal([]string{"sh", "-c", script})
	return fmt.Sprintf("  - name: %s\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    command: %s\n%s", name, cmd, extra)
}

func (e *env) deletePod(ns, name string) {
	e.remember()
	e.k("delete", "pod", "-n", ns, name, "--grace-period=2", "--wait=false", "--ignore-not-found")
}

// remember records every sandbox and container crivm has, with the
// handler crivm says it used: the leak check needs them after the kubelet
// has removed them.
func (e *env) remember() {
	ctx := context.Background()
	sbs, err := e.rs.ListPodSandbox(ctx, nil)
	if err != nil {
		e.t.Logf("ListPodSandbox: %v", err)
		return
	}
	for _, sb := range sbs {
		e.mu.Lock()
		_, known := e.sandboxes[sb.Id]
		e.mu.Unlock()
		if known {
			continue
		}
		rec := sandboxRec{ns: sb.Labels["io.kubernetes.pod.namespace"], name: sb.Labels["io.kubernetes.pod.name"], uid: sb.Labels["io.kubernetes.pod.uid"]}
		if st, err := e.rs.PodSandboxStatus(ctx, sb.Id, true); err == nil {
			var info struct {
				Handler string `json:"handler"`
				Process struct {
					Pid int `json:"pid"`
				} `json:"process"`
				Extra map[string]string `json:"extra"`
			}
			json.Unmarshal([]byte(st.Info["info"]), &info)
			rec.handler, rec.pid, rec.extra = info.Handler, info.Process.Pid, info.Extra
		}
		e.mu.Lock()
		e.sandboxes[sb.Id] = rec
		e.mu.Unlock()
	}
	ctrs, err := e.rs.ListContainers(ctx, nil)
	if err != nil {
		return
	}
	e.mu.Lock()
	for _, c := range ctrs {
		e.containers[c.Id] = c.PodSandboxId
	}
	e.mu.Unlock()
}

// sandboxFor is crivm's newest sandbox of pod ns/name.
func (e *env) sandboxFor(ns, name string) (string, sandboxRec, bool) {
	e.remember()
	sbs, err := e.rs.ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{
		"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": name}})
	if err != nil || len(sbs) == 0 {
		return "", sandboxRec{}, false
	}
	sort.Slice(sbs, func(i, j int) bool { return sbs[i].CreatedAt > sbs[j].CreatedAt })
	e.mu.Lock()
	defer e.mu.Unlock()
	return sbs[0].Id, e.sandboxes[sbs[0].Id], true
}

func (e *env) logs(c *sc, ns, name, container string) string {
	c.Helper()
	out, err := e.k("logs", "-n", ns, name, "-c", container)
	if err != nil {
		c.Errorf("kubectl logs %s/%s -c %s: %v", ns, name, container, err)
	}
	return out
}

// waitLogs polls kubectl logs until it holds want.
func (e *env) waitLogs(c *sc, ns, name, container, want string, timeout time.Duration) string {
	c.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Second) {
		if out, err = e.k("logs", "-n", ns, name, "-c", container); err == nil && strings.Contains(out, want) {
			return out
		}
	}
	c.Errorf("kubectl logs %s/%s -c %s: no %q after %v: %q %v", ns, name, container, want, timeout, out, err)
	return out
}

func (e *env) exec(c *sc, ns, name, container string, cmd ...string) string {
	c.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _, err := e.kubectl(ctx, "", append([]string{"exec", "-n", ns, name, "-c", container, "--"}, cmd...)...)
	if err != nil {
		c.Errorf("kubectl exec %s/%s -c %s %v: %v", ns, name, container, cmd, err)
	}
	return out
}

func (e *env) noLeaks(t *testing.T) {
	var delErr string
	t.Run("14-delete-all", func(t *testing.T) {
		// Everything the scenarios made goes: the API objects through the
		// kubelet, then crivm's sandboxes through the kubelet's GC.
		e.remember()
		for _, ns := range []string{"e2e-runc", "e2e-vm", "default"} {
			e.k("delete", "pods", "--all", "-n", ns, "--grace-period=2", "--wait=false")
		}
		os.Remove(filepath.Join(e.staticDir, "static-web.yaml"))
		var errs []string
		if err := e.waitGone(4*time.Minute, "e2e-runc", "e2e-vm", "default"); err != nil {
			errs = append(errs, err.Error())
		}
		if left := e.waitSandboxesGone(4 * time.Minute); len(left) > 0 {
			errs = append(errs, fmt.Sprintf("the kubelet's GC had not removed crivm sandboxes after 4m (removed by the test through CRI so the leak check still measures crivm's teardown): %s", strings.Join(left, ", ")))
		}
		if len(errs) > 0 {
			delErr = strings.Join(errs, "; ")
			t.Error(delErr)
		}
	})
	for _, h := range []string{"runc", "vm"} {
		e.scenario(t, h, "14", h+"-no-leaks", func(c *sc) {
			if delErr != "" {
				c.Errorf("deleting everything: %s", delErr)
			}
			e.checkLeaks(c, h)
		})
	}
}

// waitSandboxesGone waits until crivm lists none of the test's sandboxes,
// then stops and removes what is left itself and returns what it removed.
func (e *env) waitSandboxesGone(timeout time.Duration) []string {
	ctx := context.Background()
	var sbs []*runtimeapi.PodSandbox
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		var err error
		sbs, err = e.rs.ListPodSandbox(ctx, nil)
		if err == nil && len(sbs) == 0 {
			return nil
		}
	}
	var left []string
	for _, sb := range sbs {
		left = append(left, fmt.Sprintf("%s (%s/%s %s)", sb.Id[:12], sb.Metadata.Namespace, sb.Metadata.Name, sb.State))
		e.rs.StopPodSandbox(ctx, sb.Id)
		if err := e.rs.RemovePodSandbox(ctx, sb.Id); err != nil {
			left = append(left, "RemovePodSandbox: "+err.Error())
		}
	}
	return left
}

// hostScan is what the scan finds of one handler's sandboxes on the host.
type hostScan struct {
	net, veths, procs, mounts, cgroups []string
}

func (s hostScan) empty() bool {
	return len(s.net)+len(s.veths)+len(s.procs)+len(s.mounts)+len(s.cgroups) == 0
}

func (s hostScan) counts() string {
	return fmt.Sprintf("%d network entries (netns, nsfs mounts, IP allocations), %d veths on the bridge, %d processes, %d mounts, %d cgroups",
		len(s.net), len(s.veths), len(s.procs), len(s.mounts), len(s.cgroups))
}

// owners are the strings that name the handler's sandboxes and containers
// in process arguments, mount points, netns and cgroup names, and the
// UIDs of their pods.
func (e *env) owners(handler string) (subs, uids []string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, rec := range e.sandboxes {
		if rec.handler != handler {
			continue
		}
		n++
		subs = append(subs, id[:32], "crivm-"+id[:12])
		if rec.uid != "" {
			uids = append(uids, rec.uid)
		}
	}
	for cid, sid := range e.containers {
		if e.sandboxes[sid].handler == handler {
			subs = append(subs, cid)
		}
	}
	return subs, uids, n
}

// scanHost looks for what the handler's sandboxes have (or left) on the
// host: network state, processes naming them or in their pods' cgroups,
// mounts under crivm's and the kubelet's dirs, and cgroups.
func (e *env) scanHost(handler string) (hostScan, error) {
	subs, uids, _ := e.owners(handler)
	owned := func(s string) bool {
		for _, x := range append(subs, uids...) {
			if strings.Contains(s, x) {
				return true
			}
		}
		return false
	}
	var s hostScan
	leaks, err := e.netBefore.Leaks(0)
	if err != nil {
		return s, err
	}
	s.net = framework.Matching(leaks, subs...)
	s.veths = framework.Matching(leaks, "master="+e.br.Name)

	skip := map[int]bool{os.Getpid(): true, e.d.Pid(): true}
	if e.kubelet != nil && e.kubelet.cmd != nil {
		skip[e.kubelet.cmd.Process.Pid] = true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		var pid int
		fmt.Sscan(filepath.Base(p), &pid)
		if skip[pid] {
			continue
		}
		cmdline, _ := os.ReadFile(p + "/cmdline")
		args := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		cg, _ := os.ReadFile(p + "/cgroup")
		if owned(args) {
			s.procs = append(s.procs, fmt.Sprintf("%d %s", pid, truncate(args, 300)))
			continue
		}
		for _, u := range uids {
			if strings.Contains(string(cg), "pod"+u) {
				s.procs = append(s.procs, fmt.Sprintf("%d %s (in pod %s's cgroup)", pid, truncate(args, 200), u))
				break
			}
		}
	}

	// Mounts under crivm's root and runroot and the kubelet's root, but
	// the overlay driver's home (kept while the daemon runs) and the
	// kubelet's shared bind of its root onto itself. Rootfs mounts are
	// named by layer, not container: those count for both handlers.
	driverHome := filepath.Join(e.d.Root, "storage", "overlay")
	for _, m := range mountsUnder(e.d.Root, e.d.Runroot, e.kubeletRoot) {
		if m == driverHome || m == e.kubeletRoot {
			continue
		}
		if !owned(m) {
			m += " (not attributable to one handler)"
		}
		s.mounts = append(s.mounts, m)
	}

	// Cgroups: crivm-<id> of any sandbox or container, pod<uid> of any pod
	// (the kubelet removes those only when no process is left in them).
	for _, top := range cgroupRoots() {
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.Count(strings.TrimPrefix(p, top), "/") > 6 {
				return filepath.SkipDir
			}
			if b := d.Name(); (strings.HasPrefix(b, "crivm-") || strings.HasPrefix(b, "pod")) && owned(b) {
				s.cgroups = append(s.cgroups, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return s, nil
}

// checkLeaks asserts the scan finds nothing of the handler's sandboxes
// now, and that it found them while they ran (runHandler's scan), so an
// empty result means something.
func (e *env) checkLeaks(c *sc, handler string) {
	_, uids, n := e.owners(handler)
	if n == 0 {
		c.Fatalf("no %s sandbox was recorded: nothing to check", handler)
	}
	// The kernel frees a namespace (and its veth) asynchronously after its
	// last reference: give what is going a moment.
	var s hostScan
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var err error
		if s, err = e.scanHost(handler); err != nil {
			c.Fatal(err)
		}
		if s.empty() || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range []struct {
		what  string
		items []string
	}{
		{"network state", s.net}, {"veths on the test bridge (not attributable to one handler)", s.veths},
		{"processes", s.procs}, {"mounts", s.mounts}, {"cgroups", s.cgroups},
	} {
		if len(l.items) > 0 {
			c.Errorf("%s left: %s", l.what, strings.Join(l.items, "; "))
		}
	}
	e.mu.Lock()
	live, ok := e.live[handler]
	e.mu.Unlock()
	if !ok {
		c.Errorf("no scan while the %s pods ran: the check is unproven", handler)
		return
	}
	c.Logf("%d %s sandboxes (%d pods); while they ran the scan found %s; now %s", n, handler, len(uids), live.counts(), s.counts())
	if len(live.net) == 0 || len(live.procs) == 0 || len(live.mounts) == 0 || len(live.cgroups) == 0 {
		c.Errorf("the scan found too little while the %s pods ran (%s): it would miss leaks", handler, live.counts())
	}
}

// cgroupRoots are the hierarchies to search: each v1 controller (and the
// unified one of a hybrid host) or the v2 root.
func cgroupRoots() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

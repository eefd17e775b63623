//go:build nodee2e

package nodee2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// hctx is one handler's run: its RuntimeClass and namespace, and whether
// its long-lived web pod came up (scenarios 02, 04 and 11 use it).
type hctx struct {
	handler, ns string
	webReady    bool
}

// runHandler runs scenarios 01-11 for one RuntimeClass. Each scenario
// makes its own pod (but 02, 04 and 11, which reuse 01's), so one failure
// does not hide the others.
func (e *env) runHandler(t *testing.T, h string) {
	hc := &hctx{handler: h, ns: "e2e-" + h}
	e.scenario(t, h, "01", "ready-logs", func(c *sc) { e.readyLogs(c, hc) })
	e.scenario(t, h, "02", "exec-stdin-exit", func(c *sc) { e.execStdin(c, hc) })
	e.scenario(t, h, "03", "attach", func(c *sc) { e.attach(c, hc) })
	e.scenario(t, h, "04", "port-forward", func(c *sc) { e.portForward(c, hc) })
	e.scenario(t, h, "05", "exit-code", func(c *sc) { e.exitCode(c, hc) })
	e.scenario(t, h, "06", "oom-killed", func(c *sc) { e.oomKilled(c, hc) })
	e.scenario(t, h, "07", "liveness-restart", func(c *sc) { e.liveness(c, hc) })
	e.scenario(t, h, "08", "init-container", func(c *sc) { e.initContainer(c, hc) })
	e.scenario(t, h, "09", "shared-emptydir", func(c *sc) { e.sharedEmptyDir(c, hc) })
	e.scenario(t, h, "10", "resource-limits", func(c *sc) { e.limits(c, hc) })
	e.scenario(t, h, "11", "stats-summary", func(c *sc) { e.stats(c, hc) })
	// What the leak check must not find later, it must find now.
	e.remember()
	if scan, err := e.scanHost(h); err == nil {
		t.Logf("%s pods running: the host scan finds %s", h, scan.counts())
		e.mu.Lock()
		e.live[h] = scan
		e.mu.Unlock()
	}
	e.k("delete", "pods", "--all", "-n", hc.ns, "--grace-period=2", "--wait=false")
}

// needWeb fails at once when 01's pod never got Ready, rather than wait
// for it again.
func (e *env) needWeb(c *sc, hc *hctx) {
	c.Helper()
	if !hc.webReady {
		c.Fatalf("pod %s/web never got Ready (scenario 01 failed): nothing to run this on", hc.ns)
	}
}

// 01: a pod gets Ready on the handler its RuntimeClass names; kubectl logs
// shows its output, and its kernel is the host's for runc and another for
// the VM.
func (e *env) readyLogs(c *sc, hc *hctx) {
	m := e.manifest(hc.ns, "web", hc.handler, "  containers:\n"+
		ctr("app", "echo hello-from-$(hostname); uname -r; exec nc -ll -p 8080 -e echo pong", "    ports:\n    - containerPort: 8080\n"))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	start := time.Now()
	p := e.waitReady(c, hc.ns, "web")
	hc.webReady = true
	c.Logf("web Ready in %v, IP %s", time.Since(start).Round(time.Millisecond), p.Status.PodIP)
	id, rec, ok := e.sandboxFor(hc.ns, "web")
	if !ok {
		c.Errorf("crivm lists no sandbox for %s/web", hc.ns)
	} else if rec.handler != hc.handler {
		c.Errorf("crivm ran %s/web (sandbox %s) on handler %q, want %q", hc.ns, id[:12], rec.handler, hc.handler)
	}
	if hc.handler == "vm" && ok {
		e.rep.note("vm: sandboxes boot under %s (%s ms for web, guest kernel %s)", rec.extra["accel"], rec.extra["boot_ms"], rec.extra["guest_kernel"])
	}
	out := e.waitLogs(c, hc.ns, "web", "app", "hello-from-web\n", 30*time.Second)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		c.Fatalf("kubectl logs web: %q, want the greeting and the kernel", out)
	}
	kernel := strings.TrimSpace(lines[1])
	switch {
	case hc.handler == "runc" && kernel != e.hostKernel:
		c.Errorf("runc pod sees kernel %q, want the host's %q", kernel, e.hostKernel)
	case hc.handler == "vm" && (kernel == "" || kernel == e.hostKernel):
		c.Errorf("VM pod sees kernel %q: want a guest kernel, not the host's %q", kernel, e.hostKernel)
	}
}

// 02: kubectl exec -i: stdin reaches the command, stdout and stderr come
// back apart, and the command's exit code is kubectl's.
func (e *env) execStdin(c *sc, hc *hctx) {
	e.needWeb(c, hc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stdout, stderr, err := e.kubectl(ctx, "hello-stdin\n", "exec", "-i", "-n", hc.ns, "web", "-c", "app", "--",
		"sh", "-c", "read x; echo got:$x; echo to-stderr >&2; exit 3")
	if code := exitCode(err); code != 3 {
		c.Errorf("kubectl exec: exit code %d (%v), want 3", code, err)
	}
	if stdout != "got:hello-stdin\n" {
		c.Errorf("kubectl exec stdout %q, want %q", stdout, "got:hello-stdin\n")
	}
	if !strings.Contains(stderr, "to-stderr") || strings.Contains(stdout, "to-stderr") {
		c.Errorf("kubectl exec: stderr %q, stdout %q: want to-stderr on stderr only", stderr, stdout)
	}
	// And a plain exec that succeeds.
	if got := e.exec(c, hc.ns, "web", "app", "cat", "/proc/self/comm"); strings.TrimSpace(got) != "cat" {
		c.Errorf("kubectl exec cat /proc/self/comm: %q", got)
	}
}

// lockedBuffer is an io.Writer safe to read while a command writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// 03: kubectl attach -i: what is typed reaches the container's stdin and
// its answer comes back on the attached stdout (and into its log).
func (e *env) attach(c *sc, hc *hctx) {
	m := e.manifest(hc.ns, "attach", hc.handler, "  containers:\n"+
		ctr("app", "echo attach-ready; while read l; do echo got:$l; done", "    stdin: true\n"))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "attach")
	e.waitReady(c, hc.ns, "attach")
	e.waitLogs(c, hc.ns, "attach", "app", "attach-ready", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin("kubectl"), "attach", "-i", "-n", hc.ns, "attach", "-c", "app")
	cmd.Env = cleanEnv("KUBECONFIG="+e.kubeconfig, "KUBECACHEDIR="+e.dir+"/kubecache")
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.Fatal(err)
	}
	defer func() { stdin.Close(); cancel(); cmd.Wait() }()
	io.WriteString(stdin, "hello-attach\n")
	got := false
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if strings.Contains(stdout.String(), "got:hello-attach") {
			got = true
			break
		}
		if cmd.ProcessState != nil {
			break
		}
	}
	if !got {
		c.Fatalf("kubectl attach -i: no got:hello-attach after 60s; stdout %q stderr %q", stdout.String(), stderr.String())
	}
	e.waitLogs(c, hc.ns, "attach", "app", "got:hello-attach", 30*time.Second)
}

var forwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)

// 04: kubectl port-forward to web's nc, two connections in a row.
func (e *env) portForward(c *sc, hc *hctx) {
	e.needWeb(c, hc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin("kubectl"), "port-forward", "-n", hc.ns, "pod/web", ":8080", "--address", "127.0.0.1")
	cmd.Env = cleanEnv("KUBECONFIG="+e.kubeconfig, "KUBECACHEDIR="+e.dir+"/kubecache")
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	portc := make(chan string, 1)
	var seen lockedBuffer
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			seen.Write([]byte(s.Text() + "\n"))
			if m := forwarding.FindStringSubmatch(s.Text()); m != nil {
				portc <- m[1]
			}
		}
	}()
	var port string
	select {
	case port = <-portc:
	case <-time.After(60 * time.Second):
		c.Fatalf("kubectl port-forward: no port after 60s; stdout %q stderr %q", seen.String(), stderr.String())
	}
	for i := range 2 {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 10*time.Second)
		if err != nil {
			c.Fatalf("connection %d to the forwarded port %s: %v", i+1, port, err)
		}
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		b, err := io.ReadAll(conn)
		conn.Close()
		if string(b) != "pong\n" {
			c.Errorf("connection %d through port-forward: read %q (%v), want pong; kubectl stderr %q", i+1, b, err, stderr.String())
		}
	}
}

// 05: a container that exits 7 with restartPolicy Never: the pod Fails
// with the code, reason Error, and the output in its log.
func (e *env) exitCode(c *sc, hc *hctx) {
	m := e.manifest(hc.ns, "exit", hc.handler, "  restartPolicy: Never\n  containers:\n"+ctr("app", "echo bye; exit 7", ""))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "exit")
	p := e.waitPod(c, hc.ns, "exit", "terminated", podTimeout, func(p *pod) bool {
		s := p.container("app")
		return s != nil && s.State.Terminated != nil
	})
	t := p.container("app").State.Terminated
	if t.ExitCode != 7 || t.Reason != "Error" {
		c.Errorf("exit: terminated with %d %q, want 7 Error", t.ExitCode, t.Reason)
	}
	e.waitPod(c, hc.ns, "exit", "phase Failed", 30*time.Second, func(p *pod) bool { return p.Status.Phase == "Failed" })
	if out := e.logs(c, hc.ns, "exit", "app"); out != "bye\n" {
		c.Errorf("kubectl logs exit: %q, want bye", out)
	}
}

// 06: a memory hog over its 32 MiB limit ends OOMKilled with 137.
func (e *env) oomKilled(c *sc, hc *hctx) {
	m := e.manifest(hc.ns, "oom", hc.handler, "  restartPolicy: Never\n  containers:\n"+
		ctr("hog", "x=a; while true; do x=$x$x; done", "    resources:\n      limits:\n        memory: 32Mi\n      requests:\n        memory: 32Mi\n"))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "oom")
	p := e.waitPod(c, hc.ns, "oom", "terminated", podTimeout, func(p *pod) bool {
		s := p.container("hog")
		return s != nil && s.State.Terminated != nil
	})
	if t := p.container("hog").State.Terminated; t.Reason != "OOMKilled" || t.ExitCode != 137 {
		c.Errorf("memory hog: terminated %d %q, want 137 OOMKilled; %s", t.ExitCode, t.Reason, e.describe(hc.ns, "oom"))
	}
}

// 07: an exec liveness probe that passes, then fails once the file it
// reads is gone: the kubelet kills and restarts the container.
func (e *env) liveness(c *sc, hc *hctx) {
	m := e.manifest(hc.ns, "liveness", hc.handler, "  containers:\n"+
		ctr("app", "touch /tmp/healthy; echo started; exec sleep 3600",
			"    livenessProbe:\n      exec:\n        command: [\"cat\", \"/tmp/healthy\"]\n"+
				"      initialDelaySeconds: 1\n      periodSeconds: 3\n      failureThreshold: 1\n      timeoutSeconds: 30\n"))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "liveness")
	e.waitReady(c, hc.ns, "liveness")
	// A few probe periods that pass: no restart.
	time.Sleep(10 * time.Second)
	p, err := e.getPod(hc.ns, "liveness")
	if err != nil {
		c.Fatal(err)
	}
	if s := p.container("app"); s == nil || s.RestartCount != 0 {
		c.Fatalf("liveness: restarted while its probe should pass: %s", e.describe(hc.ns, "liveness"))
	}
	e.exec(c, hc.ns, "liveness", "app", "rm", "/tmp/healthy")
	p = e.waitPod(c, hc.ns, "liveness", "restarted", 3*time.Minute, func(p *pod) bool {
		s := p.container("app")
		return s != nil && s.RestartCount >= 1 && s.LastState.Terminated != nil
	})
	c.Logf("liveness: %s", p.summary())
	var unhealthy bool
	for _, ev := range e.events(hc.ns, "liveness") {
		if ev.Reason == "Unhealthy" && strings.Contains(ev.Message, "Liveness probe failed") && strings.Contains(ev.Message, "/tmp/healthy") {
			unhealthy = true
		}
	}
	if !unhealthy {
		c.Errorf("no Unhealthy event carrying cat's error about /tmp/healthy: %s", e.describe(hc.ns, "liveness"))
	}
	// The new container runs (its probe passes again).
	e.waitPod(c, hc.ns, "liveness", "Ready again", podTimeout, (*pod).ready)
}

// 08: an init container runs to completion before the app container, which
// reads what it left in an emptyDir.
func (e *env) initContainer(c *sc, hc *hctx) {
	vm := "    volumeMounts:\n    - name: work\n      mountPath: /work\n"
	m := e.manifest(hc.ns, "init", hc.handler,
		"  initContainers:\n"+ctr("init", "echo init-log; echo init-ran > /work/init", vm)+
			"  containers:\n"+ctr("app", "cat /work/init; exec sleep 3600", vm)+
			"  volumes:\n  - name: work\n    emptyDir: {}\n")
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "init")
	p := e.waitReady(c, hc.ns, "init")
	if len(p.Status.InitContainerStatuses) != 1 {
		c.Fatalf("init: %d init container statuses: %s", len(p.Status.InitContainerStatuses), p.summary())
	}
	if t := p.Status.InitContainerStatuses[0].State.Terminated; t == nil || t.ExitCode != 0 || t.Reason != "Completed" {
		c.Errorf("init container: %s, want terminated 0 Completed", p.Status.InitContainerStatuses[0].State)
	}
	e.waitLogs(c, hc.ns, "init", "app", "init-ran", 30*time.Second)
	if out := e.logs(c, hc.ns, "init", "init"); out != "init-log\n" {
		c.Errorf("kubectl logs init -c init: %q", out)
	}
}

// 09: two containers of one pod share an emptyDir both ways.
func (e *env) sharedEmptyDir(c *sc, hc *hctx) {
	vm := "    volumeMounts:\n    - name: data\n      mountPath: /data\n"
	m := e.manifest(hc.ns, "shared", hc.handler, "  containers:\n"+
		ctr("writer", "echo from-writer > /data/w; exec sleep 3600", vm)+
		ctr("reader", "while [ ! -f /data/w ]; do sleep 0.2; done; cat /data/w; exec sleep 3600", vm)+
		"  volumes:\n  - name: data\n    emptyDir: {}\n")
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "shared")
	e.waitReady(c, hc.ns, "shared")
	e.waitLogs(c, hc.ns, "shared", "reader", "from-writer", 30*time.Second)
	e.exec(c, hc.ns, "shared", "reader", "sh", "-c", "echo from-reader > /data/r")
	if got := e.exec(c, hc.ns, "shared", "writer", "cat", "/data/r"); got != "from-reader\n" {
		c.Errorf("the writer reads %q from the reader's file, want from-reader", got)
	}
}

// 10: requests and limits reach the container's cgroup: memory limit, CFS
// quota and period, and shares (cgroup v1) or weight (v2, in the guest).
func (e *env) limits(c *sc, hc *hctx) {
	m := e.manifest(hc.ns, "limits", hc.handler, "  containers:\n"+ctr("app", "exec sleep 3600",
		"    resources:\n      requests:\n        cpu: 250m\n        memory: 32Mi\n      limits:\n        cpu: 500m\n        memory: 64Mi\n"))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod(hc.ns, "limits")
	e.waitReady(c, hc.ns, "limits")
	out := e.exec(c, hc.ns, "limits", "app", "sh", "-c",
		`for f in memory.max memory/memory.limit_in_bytes cpu.max cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu.weight cpu/cpu.shares; do [ -f /sys/fs/cgroup/$f ] && echo "$f=$(cat /sys/fs/cgroup/$f)"; done; true`)
	v := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, val, ok := strings.Cut(l, "="); ok {
			v[k] = val
		}
	}
	c.Logf("cgroup files in the container: %v", v)
	if v["memory.max"] != "67108864" && v["memory/memory.limit_in_bytes"] != "67108864" {
		c.Errorf("memory limit: %v, want 67108864 (64Mi)", v)
	}
	if v["cpu.max"] != "50000 100000" && (v["cpu/cpu.cfs_quota_us"] != "50000" || v["cpu/cpu.cfs_period_us"] != "100000") {
		c.Errorf("CPU quota: cpu.max %q, cfs_quota_us %q, cfs_period_us %q: want 50000 per 100000 (500m)",
			v["cpu.max"], v["cpu/cpu.cfs_quota_us"], v["cpu/cpu.cfs_period_us"])
	}
	// 250m is 256 shares; in cgroup v2 runc made that weight 10 (linear)
	// before 1.3 and 35 since (its quadratic mapping): either is right.
	if w := v["cpu.weight"]; v["cpu/cpu.shares"] != "256" && w != "10" && w != "35" {
		c.Errorf("CPU shares: cpu.shares %q, cpu.weight %q: want 256 shares (250m)", v["cpu/cpu.shares"], w)
	}
}

// 11: the kubelet's summary API has non-zero CPU and memory for web and
// its container. For VM pods, also note where QEMU's cgroup is.
func (e *env) stats(c *sc, hc *hctx) {
	e.needWeb(c, hc)
	var last *podStats
	var lastErr error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Second) {
		s, err := e.statsSummary()
		if err != nil {
			lastErr = err
			continue
		}
		last = nil
		for i := range s.Pods {
			if s.Pods[i].PodRef.Namespace == hc.ns && s.Pods[i].PodRef.Name == "web" {
				last = &s.Pods[i]
			}
		}
		if last != nil && len(last.zeroes()) == 0 {
			break
		}
	}
	// Where the VM's QEMU is charged: the kubelet reads pod-level stats
	// from the pod's cgroup (cadvisor), container stats from crivm.
	var qemuCg string
	if hc.handler == "vm" {
		if id, rec, ok := e.sandboxFor(hc.ns, "web"); ok && rec.pid > 0 {
			qemuCg = memCgroup(rec.pid)
			inPod := last != nil && strings.Contains(qemuCg, "pod"+last.PodRef.UID)
			e.rep.note("vm: the web pod's QEMU (pid %d) is in memory cgroup `%s` (inside the kubelet's pod cgroup: %v)", rec.pid, qemuCg, inPod)
			c.Logf("QEMU pid %d memory cgroup %s", rec.pid, qemuCg)
			if last != nil && (!inPod || !strings.HasSuffix(qemuCg, "/crivm-"+id)) {
				c.Errorf("the web pod's QEMU (pid %d) is in memory cgroup %s, want <the kubelet's pod%s cgroup>/crivm-<sandbox id>", rec.pid, qemuCg, last.PodRef.UID)
			}
		}
	}
	switch {
	case last == nil:
		c.Fatalf("/stats/summary lists no pod %s/web after 2m (%v)", hc.ns, lastErr)
	case len(last.zeroes()) > 0:
		msg := fmt.Sprintf("/stats/summary after 2m, zero or missing: %s (%s)", strings.Join(last.zeroes(), ", "), last)
		if qemuCg != "" {
			msg += fmt.Sprintf("; the pod's QEMU is in memory cgroup %s, the kubelet reads pod-level stats from kubepods/.../pod%s", qemuCg, last.PodRef.UID)
		}
		c.Errorf("%s", msg)
	default:
		c.Logf("/stats/summary: %s", last)
	}
	e.rep.note("%s: /stats/summary for %s/web: %s", hc.handler, hc.ns, last)
}

// memCgroup is a process's memory cgroup (v1) or its v2 cgroup.
func memCgroup(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	var v2 string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "memory" {
			return f[2]
		}
		if f[0] == "0" && f[1] == "" {
			v2 = f[2]
		}
	}
	return v2
}

// 12: a static pod from the kubelet's manifest dir, with no RuntimeClass:
// crivm runs it on its default handler (runc); its mirror pod shows up in
// the API, and removing the manifest removes the pod.
func (e *env) staticPod(c *sc) {
	m := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  namespace: default\nspec:\n"+
		"  dnsPolicy: Default\n  enableServiceLinks: false\n  terminationGracePeriodSeconds: 2\n  containers:\n%s",
		strings.ReplaceAll(ctr("app", "echo static-hello; exec sleep 3600", ""), "IMAGE", e.image))
	path := filepath.Join(e.staticDir, "static-web.yaml")
	if err := os.WriteFile(path, []byte(m), 0o644); err != nil {
		c.Fatal(err)
	}
	defer os.Remove(path)
	mirror := "static-web-" + e.node
	e.waitReady(c, "default", mirror)
	e.waitLogs(c, "default", mirror, "app", "static-hello", 30*time.Second)
	if id, rec, ok := e.sandboxFor("default", mirror); !ok {
		c.Errorf("crivm lists no sandbox for the static pod")
	} else if rec.handler != "runc" {
		c.Errorf("the static pod (sandbox %s) ran on handler %q, want crivm's default runc", id[:12], rec.handler)
	}
	os.Remove(path)
	if err := e.waitGone(2*time.Minute, "default"); err != nil {
		c.Errorf("after removing the manifest: %v", err)
	}
}

// 13: a RuntimeClass whose handler crivm does not have: the kubelet's
// RunPodSandbox is refused with an error naming the handler, and no
// sandbox is made.
func (e *env) unknownHandler(c *sc) {
	m := e.manifest("default", "unknown-handler", "bogus", "  containers:\n"+ctr("app", "exec sleep 3600", ""))
	if err := e.apply(m); err != nil {
		c.Fatal(err)
	}
	defer e.deletePod("default", "unknown-handler")
	var msg string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && msg == ""; time.Sleep(2 * time.Second) {
		for _, ev := range e.events("default", "unknown-handler") {
			if ev.Reason == "FailedCreatePodSandBox" {
				msg = ev.Message
			}
		}
	}
	switch {
	case msg == "":
		c.Fatalf("no FailedCreatePodSandBox event after 2m: %s", e.describe("default", "unknown-handler"))
	case !strings.Contains(msg, `nosuch`):
		c.Errorf("FailedCreatePodSandBox does not name the handler nosuch: %s", msg)
	default:
		c.Logf("refused: %s", msg)
		e.rep.note("unknown handler: the kubelet's event reads: %s", msg)
	}
	if p, err := e.getPod("default", "unknown-handler"); err == nil && p.Status.Phase == "Running" {
		c.Errorf("the pod runs: %s", p.summary())
	}
	if id, _, ok := e.sandboxFor("default", "unknown-handler"); ok {
		c.Errorf("crivm made sandbox %s for a handler it does not have", id[:12])
	}
}

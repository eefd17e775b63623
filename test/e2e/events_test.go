package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// eventLog collects one subscriber's events.
type eventLog struct {
	mu     sync.Mutex
	events []*runtimeapi.ContainerEventResponse
}

// followEvents subscribes to the daemon's events until the test ends, and
// returns once the subscription has had time to land.
func followEvents(t *testing.T, e *runcEnv) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l := &eventLog{}
	l.follow(ctx, e)
	time.Sleep(200 * time.Millisecond)
	return l
}

func (l *eventLog) follow(ctx context.Context, e *runcEnv) {
	ch := make(chan *runtimeapi.ContainerEventResponse, 256)
	go e.rs.GetContainerEvents(ctx, ch, nil)
	go func() {
		for {
			select {
			case ev := <-ch:
				l.mu.Lock()
				l.events = append(l.events, ev)
				l.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
}

// types returns the event types seen for id, in order.
func (l *eventLog) types(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ev := range l.events {
		if ev.ContainerId == id {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(ev.ContainerEventType.String(), "CONTAINER_"), "_EVENT"))
		}
	}
	return out
}

func (l *eventLog) waitFor(t *testing.T, id, typ string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, got := range l.types(id) {
			if got == typ {
				return
			}
		}
	}
	t.Fatalf("no %s event for %s within %v (saw %v)", typ, id, timeout, l.types(id))
}

// TestEventsAndMetrics: subscribers see every lifecycle event in order,
// including a container exiting by itself; a subscriber that never reads
// does not stall the runtime; the metrics endpoint and the metrics RPCs
// report real numbers.
func TestEventsAndMetrics(t *testing.T) {
	port := freePort(t)
	e := newRuncEnv(t, fmt.Sprintf("[crivm.metrics]\nenable_metrics = true\nmetrics_port = %d\n", port))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// 1. Two subscribers that read, and one that never does.
	a, b := followEvents(t, e), followEvents(t, e)
	conn, err := grpc.NewClient("unix://"+e.d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the subscriptions land

	// 2. A pod whose container exits by itself after a moment.
	pod := e.podConfig("events")
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	sbID, err := e.rs.RunPodSandbox(rctx, pod, "")
	rcancel()
	if err != nil {
		t.Fatalf("RunPodSandbox with a stuck subscriber: %v", err)
	}
	e.ids = append(e.ids, sbID)
	ctrID, err := e.rs.CreateContainer(ctx, sbID, e.containerConfig("brief", "sh", "-c", "sleep 1"), pod)
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, ctrID)
	if err := e.rs.StartContainer(ctx, ctrID); err != nil {
		t.Fatal(err)
	}
	// The exit must arrive as an event, without anyone asking for status.
	a.waitFor(t, ctrID, "STOPPED", 15*time.Second)
	if err := e.rs.RemoveContainer(ctx, ctrID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, sbID, "DELETED", 5*time.Second)
	b.waitFor(t, sbID, "DELETED", 5*time.Second)

	// 3. Both subscribers saw the same events, in order.
	for name, l := range map[string]*eventLog{"first": a, "second": b} {
		if got, want := strings.Join(l.types(ctrID), ","), "CREATED,STARTED,STOPPED,DELETED"; got != want {
			t.Errorf("%s subscriber, container events: got %s, want %s", name, got, want)
		}
		if got, want := strings.Join(l.types(sbID), ","), "CREATED,STARTED,STOPPED,DELETED"; got != want {
			t.Errorf("%s subscriber, sandbox events: got %s, want %s", name, got, want)
		}
	}

	// 4. The Prometheus endpoint counted the pod start under its handler.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`crivm_pod_start_duration_seconds_count{handler="runc"} 1`,
		`crivm_rpc_requests_total{code="OK",rpc="RunPodSandbox"} 1`,
		`crivm_trust_verdicts_total{handler="runc",outcome="admitted",trusted="true"} 1`,
		`crivm_image_pull_bytes_total`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// 5. ListPodSandboxMetrics: network bytes grow with traffic.
	server := e.podConfig("msrv")
	srvSB, _ := e.runPod(t, server, e.containerConfig("srv", "nc", "-ll", "-p", "80", "-e", "cat", "/bin/busybox"))
	_, client := e.runPod(t, e.podConfig("mcli"), e.containerConfig("cli", "sleep", "3600"))
	ps, err := e.rs.PodSandboxStatus(ctx, srvSB, false)
	if err != nil {
		t.Fatal(err)
	}
	before := txBytes(t, e, srvSB)
	e.exec(t, client, "sh", "-c", "nc -w 3 "+ps.Status.Network.Ip+" 80 </dev/null >/dev/null")
	if after := txBytes(t, e, srvSB); after < before+500_000 {
		t.Errorf("server pod transmit bytes: %d before, %d after sending busybox (~1 MB)", before, after)
	}
	descs, err := e.rs.ListMetricDescriptors(ctx)
	if err != nil || len(descs) == 0 {
		t.Errorf("ListMetricDescriptors: %v %v", descs, err)
	}

	// 6. UpdateRuntimeConfig's pod CIDR shows in verbose Status.
	if err := e.rs.UpdateRuntimeConfig(ctx, &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.244.1.0/24"}}); err != nil {
		t.Fatal(err)
	}
	st, err := e.rs.Status(ctx, true)
	if err != nil || !strings.Contains(st.Info["runtimeConfig"], "10.244.1.0/24") {
		t.Errorf("runtimeConfig in Status: %v %v", st.GetInfo()["runtimeConfig"], err)
	}
}

// txBytes reads container_network_transmit_bytes_total of a pod's eth0.
func txBytes(t *testing.T, e *runcEnv, sbID string) uint64 {
	t.Helper()
	pms, err := e.rs.ListPodSandboxMetrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, pm := range pms {
		if pm.PodSandboxId != sbID {
			continue
		}
		for _, m := range pm.Metrics {
			// The interface is the last label (after id, image, namespace, pod, container).
			if m.Name == "container_network_transmit_bytes_total" && len(m.LabelValues) > 0 && m.LabelValues[len(m.LabelValues)-1] == "eth0" {
				return m.Value.GetValue()
			}
		}
	}
	t.Fatalf("no transmit metric for pod %s", sbID)
	return 0
}

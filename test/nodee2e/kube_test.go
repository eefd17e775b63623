//go:build nodee2e

package nodee2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// kubectl runs the built kubectl against the test cluster.
func (e *env) kubectl(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, e.bin("kubectl"), args...)
	cmd.Env = cleanEnv("KUBECONFIG="+e.kubeconfig, "KUBECACHEDIR="+e.dir+"/kubecache")
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(s.String()))
	}
	return o.String(), s.String(), err
}

// k runs kubectl with a two-minute limit and returns its stdout.
func (e *env) k(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _, err := e.kubectl(ctx, "", args...)
	return out, err
}

// apply applies a manifest given as a string.
func (e *env) apply(manifest string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, _, err := e.kubectl(ctx, manifest, "apply", "-f", "-")
	return err
}

// exitCode is the exit status in a kubectl error, -1 if it has none.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// ---- the little of the API the scenarios read ----------------------------

type pod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase                 string         `json:"phase"`
		Reason                string         `json:"reason"`
		Message               string         `json:"message"`
		PodIP                 string         `json:"podIP"`
		Conditions            []condition    `json:"conditions"`
		InitContainerStatuses []containerSts `json:"initContainerStatuses"`
		ContainerStatuses     []containerSts `json:"containerStatuses"`
	} `json:"status"`
}

type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type containerSts struct {
	Name         string   `json:"name"`
	Ready        bool     `json:"ready"`
	RestartCount int      `json:"restartCount"`
	ContainerID  string   `json:"containerID"`
	State        ctrState `json:"state"`
	LastState    ctrState `json:"lastState"`
}

type ctrState struct {
	Waiting *struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"waiting"`
	Running *struct {
		StartedAt string `json:"startedAt"`
	} `json:"running"`
	Terminated *struct {
		ExitCode int    `json:"exitCode"`
		Reason   string `json:"reason"`
		Message  string `json:"message"`
	} `json:"terminated"`
}

func (s ctrState) String() string {
	switch {
	case s.Waiting != nil:
		return fmt.Sprintf("waiting(%s: %s)", s.Waiting.Reason, s.Waiting.Message)
	case s.Running != nil:
		return "running"
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(exit %d, %s: %s)", s.Terminated.ExitCode, s.Terminated.Reason, strings.TrimSpace(s.Terminated.Message))
	}
	return "none"
}

func (p *pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (p *pod) container(name string) *containerSts {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// summary is a pod's status in one line, for failure messages.
func (p *pod) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", p.Status.Phase)
	if p.Status.Reason != "" || p.Status.Message != "" {
		fmt.Fprintf(&b, " (%s: %s)", p.Status.Reason, p.Status.Message)
	}
	for _, c := range p.Status.Conditions {
		if c.Status != "True" && c.Reason != "" {
			fmt.Fprintf(&b, "; %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	for _, c := range p.Status.InitContainerStatuses {
		fmt.Fprintf(&b, "; init %s %s restarts %d", c.Name, c.State, c.RestartCount)
	}
	for _, c := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, "; %s %s restarts %d", c.Name, c.State, c.RestartCount)
		if c.LastState.Terminated != nil {
			fmt.Fprintf(&b, " last %s", c.LastState)
		}
	}
	return b.String()
}

func (e *env) getPod(ns, name string) (*pod, error) {
	out, err := e.k("get", "pod", "-n", ns, name, "-o", "json")
	if err != nil {
		return nil, err
	}
	var p pod
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		return nil, fmt.Errorf("decoding pod %s/%s: %w", ns, name, err)
	}
	return &p, nil
}

type event struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Count   int    `json:"count"`
	Source  struct {
		Component string `json:"component"`
	} `json:"source"`
	LastTimestamp string `json:"lastTimestamp"`
}

// events lists the events about one object, oldest first.
func (e *env) events(ns, name string) []event {
	out, err := e.k("get", "events", "-n", ns, "--field-selector", "involvedObject.name="+name, "-o", "json")
	if err != nil {
		return nil
	}
	var l struct {
		Items []event `json:"items"`
	}
	json.Unmarshal([]byte(out), &l)
	sort.SliceStable(l.Items, func(i, j int) bool { return l.Items[i].LastTimestamp < l.Items[j].LastTimestamp })
	return l.Items
}

// describe is a pod's status and its non-Normal events plus the last few,
// the kubelet's account of what went wrong (its CRI errors end up here).
func (e *env) describe(ns, name string) string {
	var b strings.Builder
	if p, err := e.getPod(ns, name); err == nil {
		b.WriteString(p.summary())
	} else {
		b.WriteString(err.Error())
	}
	evs := e.events(ns, name)
	for i, ev := range evs {
		if ev.Type == "Normal" && i < len(evs)-4 {
			continue
		}
		fmt.Fprintf(&b, "\n    event %s %s (x%d): %s", ev.Type, ev.Reason, max(ev.Count, 1), truncate(ev.Message, 600))
	}
	return b.String()
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// waitPod polls the pod until cond holds, failing with the pod's status and
// events after timeout.
func (e *env) waitPod(c *sc, ns, name, what string, timeout time.Duration, cond func(*pod) bool) *pod {
	c.Helper()
	deadline := time.Now().Add(timeout)
	var last *pod
	var lastErr error
	for time.Now().Before(deadline) {
		p, err := e.getPod(ns, name)
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
		lastErr = err
		time.Sleep(time.Second)
	}
	if last == nil {
		c.Fatalf("pod %s/%s: not %s after %v: %v", ns, name, what, timeout, lastErr)
	}
	c.Fatalf("pod %s/%s: not %s after %v: %s", ns, name, what, timeout, e.describe(ns, name))
	return nil
}

func (e *env) waitReady(c *sc, ns, name string) *pod {
	c.Helper()
	return e.waitPod(c, ns, name, "Ready", podTimeout, (*pod).ready)
}

// waitGone waits until kubectl get pods -A lists none of the namespaces' pods.
func (e *env) waitGone(timeout time.Duration, nss ...string) error {
	deadline := time.Now().Add(timeout)
	var left string
	for time.Now().Before(deadline) {
		var names []string
		for _, ns := range nss {
			out, err := e.k("get", "pods", "-n", ns, "-o", "name")
			if err != nil {
				names = append(names, err.Error())
				continue
			}
			for _, n := range strings.Fields(out) {
				names = append(names, ns+"/"+n)
			}
		}
		if len(names) == 0 {
			return nil
		}
		left = strings.Join(names, " ")
		time.Sleep(2 * time.Second)
	}
	return fmt.Errorf("pods still there after %v: %s", timeout, left)
}

// ---- /stats/summary ------------------------------------------------------

type statsSummary struct {
	Pods []podStats `json:"pods"`
}

type podStats struct {
	PodRef struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		UID       string `json:"uid"`
	} `json:"podRef"`
	CPU        *cpuStats `json:"cpu"`
	Memory     *memStats `json:"memory"`
	Containers []struct {
		Name   string    `json:"name"`
		CPU    *cpuStats `json:"cpu"`
		Memory *memStats `json:"memory"`
	} `json:"containers"`
}

type cpuStats struct {
	UsageNanoCores       *uint64 `json:"usageNanoCores"`
	UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds"`
}

type memStats struct {
	WorkingSetBytes *uint64 `json:"workingSetBytes"`
	UsageBytes      *uint64 `json:"usageBytes"`
}

func u(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func (c *cpuStats) String() string {
	if c == nil {
		return "cpu <none>"
	}
	return fmt.Sprintf("cpu %d ns total, %d nanocores", u(c.UsageCoreNanoSeconds), u(c.UsageNanoCores))
}

func (m *memStats) String() string {
	if m == nil {
		return "memory <none>"
	}
	return fmt.Sprintf("memory working set %d B, usage %d B", u(m.WorkingSetBytes), u(m.UsageBytes))
}

// zeroes lists what is missing or zero in one pod's stats: the pod's CPU
// and working set, and each of its containers'.
func (p *podStats) zeroes() []string {
	var z []string
	if p.CPU == nil || u(p.CPU.UsageCoreNanoSeconds) == 0 {
		z = append(z, "pod "+p.CPU.String())
	}
	if p.Memory == nil || u(p.Memory.WorkingSetBytes) == 0 {
		z = append(z, "pod "+p.Memory.String())
	}
	if len(p.Containers) == 0 {
		z = append(z, "no container stats")
	}
	for _, c := range p.Containers {
		if c.CPU == nil || u(c.CPU.UsageCoreNanoSeconds) == 0 {
			z = append(z, "container "+c.Name+" "+c.CPU.String())
		}
		if c.Memory == nil || u(c.Memory.WorkingSetBytes) == 0 {
			z = append(z, "container "+c.Name+" "+c.Memory.String())
		}
	}
	return z
}

func (p *podStats) String() string {
	s := fmt.Sprintf("pod %s/%s: %s, %s", p.PodRef.Namespace, p.PodRef.Name, p.CPU, p.Memory)
	for _, c := range p.Containers {
		s += fmt.Sprintf("; container %s: %s, %s", c.Name, c.CPU, c.Memory)
	}
	return s
}

func (e *env) statsSummary() (*statsSummary, error) {
	out, err := e.k("get", "--raw", "/api/v1/nodes/"+e.node+"/proxy/stats/summary")
	if err != nil {
		return nil, err
	}
	var s statsSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("decoding /stats/summary: %w", err)
	}
	return &s, nil
}

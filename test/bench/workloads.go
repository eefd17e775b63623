package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pods drives pod workloads against one CRI endpoint.
type Pods struct {
	RS internalapi.RuntimeService
	// Image is the container image (already pulled), RuntimeHandler the
	// RuntimeClass handler ("" for the default).
	Image, RuntimeHandler string
	// LogDir holds the pods' log directories.
	LogDir string
	// Prefix names the pods, unique per run.
	Prefix string
	seq    int
	mu     sync.Mutex
}

func (p *Pods) next() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	return p.seq
}

// Started is one running pod.
type Started struct{ Sandbox, Container string }

// Start runs a pod with one sleeping container and returns when the
// container runs: RunPodSandbox, CreateContainer, StartContainer.
func (p *Pods) Start(ctx context.Context) (Started, time.Duration, error) {
	n := p.next()
	name := fmt.Sprintf("%s-%d", p.Prefix, n)
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name},
		Hostname:     name,
		LogDirectory: fmt.Sprintf("%s/%s", p.LogDir, name),
		// What the kubelet sends for a pod without shareProcessNamespace.
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
	ctr := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
		Image:    &runtimeapi.ImageSpec{Image: p.Image},
		Command:  []string{"sleep", "3600"},
		LogPath:  "sleep.log",
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
	start := time.Now()
	sb, err := p.RS.RunPodSandbox(ctx, pod, p.RuntimeHandler)
	if err != nil {
		return Started{}, 0, fmt.Errorf("RunPodSandbox: %w", err)
	}
	id, err := p.RS.CreateContainer(ctx, sb, ctr, pod)
	if err != nil {
		p.RS.RemovePodSandbox(ctx, sb)
		return Started{}, 0, fmt.Errorf("CreateContainer: %w", err)
	}
	if err := p.RS.StartContainer(ctx, id); err != nil {
		p.RS.RemovePodSandbox(ctx, sb)
		return Started{}, 0, fmt.Errorf("StartContainer: %w", err)
	}
	return Started{sb, id}, time.Since(start), nil
}

// Teardown stops and removes a pod (and so its container).
func (p *Pods) Teardown(ctx context.Context, s Started) (time.Duration, error) {
	start := time.Now()
	if err := p.RS.StopPodSandbox(ctx, s.Sandbox); err != nil {
		return 0, fmt.Errorf("StopPodSandbox: %w", err)
	}
	if err := p.RS.RemovePodSandbox(ctx, s.Sandbox); err != nil {
		return 0, fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return time.Since(start), nil
}

// Result is one workload's measurements.
type Result struct {
	Serial, Teardown, Parallel, Exec Summary
	// ParallelWall is the wall time for all parallel pods to run.
	ParallelWall time.Duration
}

// Run measures n serial starts and teardowns, a batch of par pods started
// at once, and n ExecSync calls of `true`.
func (p *Pods) Run(ctx context.Context, n, par int) (Result, error) {
	var r Result
	var starts, teardowns, execs []time.Duration
	for range n {
		s, d, err := p.Start(ctx)
		if err != nil {
			return r, err
		}
		starts = append(starts, d)
		td, err := p.Teardown(ctx, s)
		if err != nil {
			return r, err
		}
		teardowns = append(teardowns, td)
	}
	r.Serial, r.Teardown = Summarize(starts), Summarize(teardowns)

	var mu sync.Mutex
	var par1 []time.Duration
	var pods []Started
	var firstErr error
	var wg sync.WaitGroup
	wall := time.Now()
	for range par {
		wg.Go(func() {
			s, d, err := p.Start(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			par1 = append(par1, d)
			pods = append(pods, s)
		})
	}
	wg.Wait()
	r.ParallelWall = time.Since(wall)
	r.Parallel = Summarize(par1)
	if firstErr == nil && len(pods) > 0 {
		for range n {
			start := time.Now()
			if _, _, err := p.RS.ExecSync(ctx, pods[0].Container, []string{"true"}, 10*time.Second); err != nil {
				firstErr = fmt.Errorf("ExecSync: %w", err)
				break
			}
			execs = append(execs, time.Since(start))
		}
		r.Exec = Summarize(execs)
	}
	for _, s := range pods {
		if _, err := p.Teardown(ctx, s); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return r, firstErr
}

package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agent/launch"
	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/agentproxy/api"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Bounds of ResumeRequest.entropy.
const (
	minResumeEntropy = 16
	maxResumeEntropy = 4096
)

// Resume makes a clone of a VM template its own: every clone resumes with
// the template's RNG state and clock. The guest kernel reseeds on the
// vmgenid change already; the host's bytes are mixed in and credited on
// top, and the clock is set to the host's.
func (s *Service) Resume(ctx context.Context, req *api.ResumeRequest) (*api.ResumeResponse, error) {
	if n := len(req.Entropy); n < minResumeEntropy || n > maxResumeEntropy {
		return nil, errdefs.InvalidArgument("resume: %d bytes of entropy, want %d to %d", n, minResumeEntropy, maxResumeEntropy)
	}
	if req.RealtimeUnixNano <= 0 {
		return nil, errdefs.InvalidArgument("resume: no host time")
	}
	if err := addEntropy(req.Entropy); err != nil {
		return nil, fmt.Errorf("resume: adding the host's entropy: %w", err)
	}
	ts := unix.NsecToTimespec(req.RealtimeUnixNano)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return nil, fmt.Errorf("resume: setting the clock: %w", err)
	}
	if req.Warm {
		start := time.Now()
		if err := s.warmLaunch(); err != nil {
			return nil, fmt.Errorf("resume: warming the launch path: %w", err)
		}
		log.G(ctx).Debug("warmed the launch path", "took", time.Since(start))
	}
	log.G(ctx).Debug("resumed as a clone", "entropy_bytes", len(req.Entropy), "warm", req.Warm)
	return &api.ResumeResponse{}, nil
}

// warmLaunch runs a container's start once with nothing of a pod: a
// cgroup made as a container's is (controllers, device filter), the agent
// binary spawned into it by launch.Warm, the cgroup removed.
func (s *Service) warmLaunch() (err error) {
	dir, err := launch.CreateCgroup(path.Join(agentproxy.GuestCgroupParent, "warm"), nil)
	if err != nil {
		return err
	}
	defer func() {
		if rerr := launch.RemoveCgroup(dir, 5*time.Second); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return launch.Warm(dir, s.reaper.Start)
}

// addEntropy mixes b into the kernel's pool and credits it in full
// (RNDADDENTROPY: struct rand_pool_info {int entropy_count; int buf_size;
// __u32 buf[];}).
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(b)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(b)))
	copy(buf[8:], b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return e
	}
	return nil
}

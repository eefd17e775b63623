package runc

import (
	"context"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/internal/log"
)

// WatchExits reports each exit file conmon writes in the exit dir: conmon
// writes a temporary file and renames it into place, so a rename or a close
// after writing means the code is there to read.
func (h *Handler) WatchExits(ctx context.Context, exited func(id string)) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("watching exits: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, h.exitDir(), unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return fmt.Errorf("watching %s: %w", h.exitDir(), err)
	}
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for ctx.Err() == nil {
			n, err := unix.Poll(fds, 500)
			if err != nil && err != unix.EINTR {
				log.G(ctx).Error("polling exit watch", "err", err)
				return
			}
			if n <= 0 {
				continue
			}
			n, err = unix.Read(fd, buf)
			if err != nil {
				continue
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if len(name) == 64 && !strings.ContainsAny(name, ".~") {
					exited(name)
				}
			}
		}
	}()
	return nil
}

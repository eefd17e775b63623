package hostprobe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/vmm"
)

// VhostVsockAvailable reports whether /dev/vhost-vsock exists and opens
// read-write, and why not when it does not.
func VhostVsockAvailable() (bool, string) {
	return deviceUsable(vmm.VhostVsockDevice)
}

// deviceUsable opens dev read-write (what QEMU does) and closes it again.
func deviceUsable(dev string) (bool, string) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, dev + " missing"
		}
		return false, fmt.Sprintf("opening %s: %v", dev, unwrapPath(err))
	}
	f.Close()
	return true, dev + " present"
}

// TransportAuto is agent_transport's default: vsock where it works.
const TransportAuto = "auto"

// ChooseTransport resolves agent_transport: auto picks vsock when
// /dev/vhost-vsock is usable, else serial. An explicit vsock without the
// device is an error.
func ChooseTransport(requested string) (string, string, error) {
	ok, why := VhostVsockAvailable()
	return chooseTransport(requested, ok, why)
}

func chooseTransport(requested string, vsockOK bool, why string) (string, string, error) {
	switch requested {
	case TransportAuto, "":
		if vsockOK {
			return agentproxy.TransportVsock, "auto: " + why, nil
		}
		return agentproxy.TransportSerial, "auto: " + why + ", using virtio-serial", nil
	case agentproxy.TransportVsock:
		if !vsockOK {
			return "", "", fmt.Errorf("agent_transport = vsock but %s is not usable: %s", vmm.VhostVsockDevice, why)
		}
		return agentproxy.TransportVsock, "configured: " + why, nil
	case agentproxy.TransportSerial:
		return agentproxy.TransportSerial, "configured", nil
	}
	return "", "", fmt.Errorf("unknown agent_transport %q (want auto, vsock or serial)", requested)
}

func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/mountfs"
	"github.com/crivm/crivm/internal/podhost"
)

// podFiles are the per-pod files every container of the pod binds:
// /etc/resolv.conf, /etc/hosts, /etc/hostname, and the /dev/shm mount.
type podFiles struct {
	Dir                              string
	ResolvConf, Hosts, Hostname, Shm string
}

func podFilesIn(dir string) podFiles {
	return podFiles{
		Dir:        dir,
		ResolvConf: filepath.Join(dir, "resolv.conf"),
		Hosts:      filepath.Join(dir, "hosts"),
		Hostname:   filepath.Join(dir, "hostname"),
		Shm:        filepath.Join(dir, "shm"),
	}
}

// podHostname is the pod's hostname: the config's, else derived from the
// pod name as the kubelet does (podhost.Derive).
func podHostname(cfg *runtimeapi.PodSandboxConfig) string {
	return podhost.Hostname(cfg)
}

func hostNetwork(cfg *runtimeapi.PodSandboxConfig) bool {
	return cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
}

func hostIPC(cfg *runtimeapi.PodSandboxConfig) bool {
	return cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtimeapi.NamespaceMode_NODE
}

// writeResolvConf writes DnsConfig, or copies the host's resolv.conf when
// the pod has none.
func (f podFiles) writeResolvConf(dns *runtimeapi.DNSConfig) error {
	if dns == nil || (len(dns.Servers) == 0 && len(dns.Searches) == 0 && len(dns.Options) == 0) {
		b, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("reading host resolv.conf: %w", err)
		}
		return os.WriteFile(f.ResolvConf, b, 0o644)
	}
	var b strings.Builder
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return os.WriteFile(f.ResolvConf, []byte(b.String()), 0o644)
}

// writeHosts writes /etc/hosts with localhost and the pod's own address.
// A host-network pod gets the host's file.
func (f podFiles) writeHosts(hostNet bool, ip, hostname string) error {
	if hostNet {
		b, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return fmt.Errorf("reading host /etc/hosts: %w", err)
		}
		return os.WriteFile(f.Hosts, b, 0o644)
	}
	content := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if ip != "" {
		content += ip + "\t" + hostname + "\n"
	}
	return os.WriteFile(f.Hosts, []byte(content), 0o644)
}

func (f podFiles) writeHostname(hostname string) error {
	return os.WriteFile(f.Hostname, []byte(hostname+"\n"), 0o644)
}

// mountShm mounts the pod's private /dev/shm (64 MiB tmpfs).
func (f podFiles) mountShm() error {
	if err := os.MkdirAll(f.Shm, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("shm", f.Shm, "tmpfs", unix.MS_NOEXEC|unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mounting shm: %w", err)
	}
	return nil
}

// unmountShm is idempotent.
func (f podFiles) unmountShm() error {
	err := unix.Unmount(f.Shm, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting shm: %w", err)
	}
	return nil
}

// remove unmounts shm (every mount below the pod dir, stacked ones too)
// and deletes the pod dir, never across a mount point. Idempotent.
func (f podFiles) remove() error {
	if err := mountfs.UnmountAll(f.Dir); err != nil {
		return err
	}
	return mountfs.RemoveTree(f.Dir)
}

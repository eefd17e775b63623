// Package hostprobe finds out what this host can give VM pods: the
// accelerator (KVM only when a probe guest really boots on it, else TCG),
// the agent transport (vsock when /dev/vhost-vsock works, else
// virtio-serial) and QEMU's version.
package hostprobe

// Package vmm is crivm's QEMU driver:
//   - host probes: the guest kernel lookup (FindKernel), the accelerator
//     probe (KVM only when a probe guest really boots on it, else TCG), the
//     agent transport choice (vsock when /dev/vhost-vsock works, else
//     virtio-serial) and QEMU version discovery;
//   - guest assets: Vmlinux extracts a PVH-bootable vmlinux from the
//     distro bzImage, Initrd builds the agent's initrd with the kernel
//     modules it needs, both cached by content;
//   - the VM lifecycle: Start runs QEMU (q35, virtio-pci, 9p shares, the
//     agent's virtio-serial port, optional taps inside the pod's netns),
//     Stop powers it off through QMP, Reconnect finds a running VM again
//     after a daemon restart, and QMP is the monitor client;
//   - placement: Cgroup starts QEMU and virtiofsd inside the pod's cgroup
//     (clone3 into it on v2, a re-exec shim on v1), so the pod's limits and
//     the kubelet's stats cover the VM.
package vmm

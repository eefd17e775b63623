// Package vmm runs and controls QEMU for one VM pod:
//   - the VM lifecycle: Start runs QEMU (q35, virtio-pci, 9p or virtio-fs
//     shares, the agent's virtio-serial port or vsock, a tap inside the
//     pod's netns) as the pod's unprivileged identity in the pod's mount
//     namespace, Stop powers it off through QMP, Reconnect finds a running
//     VM again after a daemon restart, and QMP is the monitor client;
//   - virtiofsd, the virtio-fs file server beside QEMU;
//   - placement: Cgroup starts QEMU and virtiofsd inside the pod's cgroup
//     (clone3 into it on v2, a re-exec shim on v1), so the pod's limits and
//     the kubelet's stats cover the VM.
//
// What a VM boots from is built by vmm/assets; what the host can run
// (KVM or TCG, vsock or virtio-serial, QEMU's version) is probed by
// vmm/hostprobe.
package vmm

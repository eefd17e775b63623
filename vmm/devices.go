package vmm

// VhostVsockDevice is the host device QEMU's vhost-vsock-pci needs.
const VhostVsockDevice = "/dev/vhost-vsock"

// Accelerators and the accel setting.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// Package vmm is crivm's QEMU driver: the guest kernel lookup, the
// accelerator probe (KVM only when a probe guest really boots on it, else
// TCG), the agent transport choice and QEMU version discovery.
package vmm

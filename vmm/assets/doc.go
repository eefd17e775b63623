// Package assets builds what a VM pod boots from, cached by content:
// FindKernel locates the distro kernel, Vmlinux extracts a PVH-bootable
// vmlinux from its bzImage, and Initrd assembles the agent's initrd (the
// agent as /init, the kernel modules it needs from modules.dep, host
// binaries with their library closure).
package assets

// Package agent is the guest side of crivm: PID 1 set-up of the guest
// (pseudo filesystems, cgroup v2, kernel modules, power button, lo) and the
// Agent ttrpc service crivm calls through agentproxy, which runs the pod's
// containers inside the VM (package launch: no external runtime).
//
// # Guest filesystem contract
//
// The host (handlers/vm) and the agent agree on these paths; agentproxy
// holds them as constants and GuestSpec applies them to a host spec.
//
//   - One 9p share per sandbox, tag agentproxy.SharedTag ("crivm-shared"),
//     mounted by CreateSandbox at agentproxy.GuestSharedDir
//     ("/run/crivm/shared"), read-write, nodev, and suid when asked
//     (api.SharedMount.allow_suid), which the host does for this share: it
//     holds the containers' rootfs, whose setuid programs must work. The
//     host's side of the share stays nosuid and nodev.
//   - Container rootfs: <shared>/<container_id>/rootfs. The spec's
//     root.path names that guest path. It is the host's overlay mount seen
//     through 9p, so writes land in the host's upper layer.
//   - Bind mounts of host paths: <shared>/<container_id>/mounts/<n>, n
//     counting the spec's shared bind mounts from 0; the spec's mount
//     source names the guest path.
//   - Namespaces: network, IPC and UTS are the guest's own
//     (/proc/1/ns/{net,ipc,uts}); a pod-shared PID namespace is held by a
//     "crivm-agent pause" process and bound at agentproxy.GuestPIDNamespace
//     (started on the first container that joins it). A container's own
//     PID and mount namespaces are new.
//   - /etc/resolv.conf, /etc/hosts and /etc/hostname of the guest are
//     written by CreateSandbox; /dev/shm is the guest's tmpfs.
//   - Cgroups: the unified hierarchy at /sys/fs/cgroup (the agent mounts
//     only cgroup2); the spec's cgroupsPath is a cgroupfs path, by default
//     agentproxy.GuestCgroupParent/<container_id>.
//
// # Containers
//
// The agent launches containers itself (package launch): it re-executes
// its own binary as each container's init, in new namespaces and straight
// into the container's cgroup, and that init sets up the rootfs from the
// OCI spec, pivots into it, applies credentials, capabilities and seccomp,
// and execs the container's program on StartContainer. An exec joins the
// init's namespaces the same way. The guest's root starts as the
// initramfs, from which pivot_root cannot move; the agent first moves its
// root onto a bind mount of the initramfs (LeaveInitramfs), so containers
// pivot as on any host and cannot chroot their way back to the agent's
// files.
//
// A container gets stdio the agent owns (pipes, or a pty made inside the
// container whose master comes back over a socket); the agent keeps each
// stream's unread tail (up to OutputBufferSize, dropping the oldest bytes)
// for ReadOutput, which reads by absolute offsets so a lost reply loses
// nothing. The Reaper hands exit statuses to the container's watcher,
// which also reads the cgroup's memory.events oom_kill to report OOM
// kills. Statuses are kept until DeleteContainer.
package agent

package vmm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves the QMP protocol on a unix socket: a greeting, then
// answers from handle (nil reply: close the connection). It sends an event
// before every reply, which clients must skip.
type fakeQMP struct {
	path     string
	l        net.Listener
	commands chan string
}

func newFakeQMP(t *testing.T, handle func(cmd string, args json.RawMessage) (reply map[string]any)) *fakeQMP {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeQMP{path: filepath.Join(dir, "qmp.sock"), commands: make(chan string, 100)}
	f.l, err = net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.l.Close() })
	go func() {
		for {
			c, err := f.l.Accept()
			if err != nil {
				return
			}
			go f.serve(c, handle)
		}
	}()
	return f
}

func (f *fakeQMP) serve(c net.Conn, handle func(string, json.RawMessage) map[string]any) {
	defer c.Close()
	enc := json.NewEncoder(c)
	enc.Encode(map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}, "package": "Debian"},
		"capabilities": []string{"oob"},
	}})
	sc := bufio.NewScanner(c)
	negotiated := false
	for sc.Scan() {
		var req struct {
			Execute   string          `json:"execute"`
			ID        any             `json:"id"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return
		}
		f.commands <- req.Execute
		if !negotiated && req.Execute != "qmp_capabilities" {
			enc.Encode(map[string]any{"id": req.ID, "error": map[string]string{"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}})
			continue
		}
		if req.Execute == "qmp_capabilities" {
			negotiated = true
			enc.Encode(map[string]any{"id": req.ID, "return": map[string]any{}})
			continue
		}
		enc.Encode(map[string]any{"event": "RTC_CHANGE", "data": map[string]int{"offset": 0}, "timestamp": map[string]int{"seconds": 1}})
		reply := handle(req.Execute, req.Arguments)
		if reply == nil {
			return
		}
		reply["id"] = req.ID
		enc.Encode(reply)
	}
}

func TestQMP(t *testing.T) {
	f := newFakeQMP(t, func(cmd string, _ json.RawMessage) map[string]any {
		switch cmd {
		case "query-status":
			return map[string]any{"return": map[string]any{"running": true, "singlestep": false, "status": "running"}}
		case "system_powerdown":
			return map[string]any{"return": map[string]any{}}
		case "quit":
			return nil // QEMU may exit before answering
		case "hang":
			time.Sleep(time.Hour)
		}
		return map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": "The command " + cmd + " has not been found"}}
	})
	ctx := context.Background()
	q, err := DialQMP(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Version != "7.2.22" {
		t.Errorf("Version = %q", q.Version)
	}
	if got := <-f.commands; got != "qmp_capabilities" {
		t.Fatalf("first command %q, want qmp_capabilities", got)
	}
	st, err := q.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.Status != "running" {
		t.Errorf("status = %+v", st)
	}
	if err := q.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	err = q.Execute(ctx, "no-such-command", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "no-such-command" {
		t.Fatalf("unknown command: err = %v, want a CommandNotFound QMPError", err)
	}
	if err := q.Quit(ctx); err != nil {
		t.Fatalf("Quit with the connection closed by QEMU = %v, want nil", err)
	}

	// A command that never answers ends with ctx.
	q2, err := DialQMP(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := q2.Execute(cctx, "hang", nil, nil); err == nil {
		t.Fatal("hanging command returned nil")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("hanging command took %v to fail", d)
	}
}

func TestQMPNotQMP(t *testing.T) {
	dir, _ := os.MkdirTemp("", "qmp")
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("SSH-2.0-OpenSSH\n"))
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
	}()
	if _, err := DialQMP(context.Background(), filepath.Join(dir, "s")); err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("DialQMP to a non-QMP server = %v, want a greeting error", err)
	}
}

func TestQEMUArgs(t *testing.T) {
	c := (&MachineConfig{
		QEMUPath: "/usr/bin/qemu-system-x86_64", Accel: AccelTCG, TBSizeMiB: 32, MemoryMiB: 256,
		Kernel: "/k", Initrd: "/i", KernelArgs: "crivm.debug", Dir: "/run/vm/x",
		SharedDirs: []SharedDir{{Tag: "rootfs", HostPath: "/srv/r", ReadOnly: true}},
		Taps:       []Tap{{Name: "tap0", MAC: "02:00:00:00:00:01"}},
		VsockCID:   7,
	}).withDefaults()
	args := strings.Join(qemuArgs(c, qemuFDs{QMP: 3, Agent: 4, Console: 5, Taps: []int{6}, Vhost: 7}), " ")
	for _, want := range []string{
		"-M q35", ",mem-merge=off", "-accel tcg,tb-size=32", "-cpu qemu64", "-smp 1", "-m 256", "-nodefaults", "-no-user-config",
		"-display none", "-no-reboot", "-add-fd fd=5,set=1,opaque=console", "-serial file:/dev/fdset/1",
		"-chardev socket,id=qmp,fd=3,server=on,wait=off", "-mon chardev=qmp,mode=control", "-kernel /k", "-initrd /i",
		"-append " + BaseKernelArgs + " crivm.debug",
		"-chardev socket,id=agent,fd=4,server=on,wait=off",
		"-device virtserialport,bus=vser0.0,chardev=agent,name=crivm.agent",
		"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-fsdev local,id=fs0,path=/srv/r,security_model=none,readonly=on", "-device virtio-9p-pci,fsdev=fs0,mount_tag=rootfs",
		"-netdev tap,id=net0,fd=6", "-device virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01",
		"-device vhost-vsock-pci,guest-cid=7,vhostfd=7",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	// QEMU opens no path in the VM dir: the daemon passes descriptors.
	if strings.Contains(args, "/run/vm/x") {
		t.Errorf("QEMU is given a path in its VM dir:\n%s", args)
	}
	if strings.Contains(args, "daemonize") {
		t.Error("-daemonize conflicts with -sandbox spawn=deny")
	}
	if strings.Contains(args, "memory-backend") {
		t.Error("guest RAM is in a shared memfd without a vhost-user device")
	}
}

// TestQEMUArgsVirtioFS: a virtio-fs device comes with guest RAM in a shared
// memfd (vhost-user maps it into virtiofsd), sized like -m.
func TestQEMUArgsVirtioFS(t *testing.T) {
	c := (&MachineConfig{
		QEMUPath: "/usr/bin/qemu-system-x86_64", Accel: AccelTCG, MemoryMiB: 320,
		Kernel: "/k", Initrd: "/i", Dir: "/run/vm/x",
		VirtioFS: []VirtioFSDevice{{Tag: "crivm-shared", Socket: "/run/vm/x/virtiofsd.sock"}},
	}).withDefaults()
	args := strings.Join(qemuArgs(c, qemuFDs{QMP: 3, Agent: 4, Console: 5, VirtioFS: []int{6}}), " ")
	for _, want := range []string{
		"-M q35,memory-backend=mem0", "-m 320",
		"-object memory-backend-memfd,id=mem0,size=320M,share=on",
		"-chardev socket,id=vfs0,fd=6",
		"-device vhost-user-fs-pci,chardev=vfs0,tag=crivm-shared",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "virtio-9p") {
		t.Errorf("a 9p device without a SharedDir:\n%s", args)
	}
}

func TestMachineFor(t *testing.T) {
	tests := []struct {
		requested, accel, want string
		wantReason             bool
	}{
		{"", AccelTCG, MachineQ35, false},
		{MachineQ35, AccelKVM, MachineQ35, false},
		{MachineMicrovm, AccelKVM, MachineMicrovm, false},
		{MachineMicrovm, AccelTCG, MachineQ35, true},
	}
	for _, tt := range tests {
		got, reason := MachineFor(tt.requested, tt.accel)
		if got != tt.want || (reason != "") != tt.wantReason {
			t.Errorf("MachineFor(%q, %q) = %q, %q; want %q, reason %v", tt.requested, tt.accel, got, reason, tt.want, tt.wantReason)
		}
	}
	c := (&MachineConfig{QEMUPath: "/q", Accel: AccelKVM, MachineType: MachineMicrovm, Kernel: "/k", Initrd: "/i", Dir: "/run/vm/x"}).withDefaults()
	if args := strings.Join(qemuArgs(c, qemuFDs{QMP: 3, Agent: 4, Console: 5}), " "); !strings.Contains(args, "-M microvm,pcie=on,mem-merge=off ") || !strings.Contains(args, "-device virtio-serial-pci") {
		t.Errorf("microvm args: %s", args)
	}
}

func TestVirtiofsdArgs(t *testing.T) {
	for _, tc := range []struct {
		cache, want string
	}{{"", "cache=auto"}, {"none", "cache=none"}, {"always", "cache=always"}} {
		got := strings.Join(virtiofsdArgs(VirtiofsdConfig{Source: "/s", Dir: "/d", Cache: tc.cache}), " ")
		want := "--socket-path=/d/virtiofsd.sock -o source=/s -o " + tc.want + " -o sandbox=namespace"
		if got != want {
			t.Errorf("cache %q: got %q, want %q", tc.cache, got, want)
		}
	}
}

func TestMachineConfigValidate(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "k")
	os.WriteFile(k, []byte("x"), 0o644)
	sock := filepath.Join(dir, "vfs.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	good := MachineConfig{QEMUPath: "/bin/sh", Accel: AccelTCG, MemoryMiB: 256, Kernel: k, Initrd: k, Dir: "/run/crivm/vm/abc"}
	if err := good.validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	withFS := good
	withFS.VirtioFS = []VirtioFSDevice{{Tag: "a", Socket: sock}}
	if err := withFS.validate(); err != nil {
		t.Fatalf("valid config with virtio-fs: %v", err)
	}
	for name, mut := range map[string]func(*MachineConfig){
		"accel auto":    func(c *MachineConfig) { c.Accel = AccelAuto },
		"no memory":     func(c *MachineConfig) { c.MemoryMiB = 0 },
		"relative dir":  func(c *MachineConfig) { c.Dir = "vm" },
		"long dir":      func(c *MachineConfig) { c.Dir = "/" + strings.Repeat("d", 100) },
		"no kernel":     func(c *MachineConfig) { c.Kernel = "" },
		"comma in path": func(c *MachineConfig) { c.Dir = "/run/a,b" },
		"bad tag":       func(c *MachineConfig) { c.SharedDirs = []SharedDir{{Tag: "a,b", HostPath: dir}} },
		"dup tag": func(c *MachineConfig) {
			c.SharedDirs = []SharedDir{{Tag: "a", HostPath: dir}, {Tag: "a", HostPath: dir}}
		},
		"share missing": func(c *MachineConfig) { c.SharedDirs = []SharedDir{{Tag: "a", HostPath: "/nonexistent"}} },
		"no virtiofsd socket": func(c *MachineConfig) {
			c.VirtioFS = []VirtioFSDevice{{Tag: "a", Socket: filepath.Join(dir, "none.sock")}}
		},
		"virtio-fs tag taken by 9p": func(c *MachineConfig) {
			c.SharedDirs = []SharedDir{{Tag: "a", HostPath: dir}}
			c.VirtioFS = []VirtioFSDevice{{Tag: "a", Socket: sock}}
		},
	} {
		c := good
		mut(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: validate accepted it", name)
		}
	}
}

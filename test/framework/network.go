package framework

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
)

// Bridge is a CNI bridge network private to one test daemon.
type Bridge struct {
	Name   string // the Linux bridge
	Subnet string // 10.234.X.0/24
	Prefix string // "10.234.X."
}

// UseBridgeNetwork gives the daemon a bridge + host-local + portmap network
// of its own and removes the bridge when the test ends. Pods get no default
// route: no traffic leaves the machine.
func (d *Daemon) UseBridgeNetwork() *Bridge {
	d.t.Helper()
	n := rand.IntN(250) + 1
	b := &Bridge{Name: fmt.Sprintf("crve2e%d", rand.IntN(100000)), Subnet: fmt.Sprintf("10.234.%d.0/24", n), Prefix: fmt.Sprintf("10.234.%d.", n)}
	netDir := filepath.Join(d.Dir, "net.d")
	if err := os.MkdirAll(netDir, 0o755); err != nil {
		d.t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "crivm-e2e",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`, b.Name, b.Subnet, filepath.Join(d.Dir, "ipam"))
	if err := os.WriteFile(filepath.Join(netDir, "10-crivm-e2e.conflist"), []byte(conflist), 0o644); err != nil {
		d.t.Fatal(err)
	}
	conf := fmt.Sprintf("[crivm.network]\nnetwork_dir = %q\ncni_plugin_dirs = [\"/usr/lib/cni\"]\n", netDir)
	if err := os.WriteFile(filepath.Join(d.DropIn, "06-network.conf"), []byte(conf), 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { exec.Command("ip", "link", "del", b.Name).Run() })
	return b
}

// UsePauseImage points pause_image at ref (the fixture in the test registry).
func (d *Daemon) UsePauseImage(ref string) {
	d.t.Helper()
	conf := fmt.Sprintf("[crivm.image]\npause_image = %q\n", ref)
	if err := os.WriteFile(filepath.Join(d.DropIn, "07-pause.conf"), []byte(conf), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

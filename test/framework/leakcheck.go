package framework

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Locations NetSnapshot inspects.
const (
	// HostLocalDir is where the host-local IPAM plugin records allocations,
	// one directory per network and one file per IP.
	HostLocalDir = "/var/lib/cni/networks"
	sysClassNet  = "/sys/class/net"
	mountInfo    = "/proc/self/mountinfo"
	// netnsDir is netns.DefaultDir, spelled out: netns's own tests import
	// this package, so it cannot import netns.
	netnsDir = "/var/run/netns"
)

// NetState is what a pod network can leave on the host: namespace files, veth
// interfaces, namespace mounts, host-local IP allocations and per-container
// iptables NAT chains (portmap's CNI-DN-*, bridge ipMasq's CNI-*). Each
// field is sorted; entries may repeat (two identical mounts).
//
// The state is host-wide. Tests that run in parallel with other tests
// creating pod networks see their state too; entries carry names, container
// IDs and bridge names for filtering.
type NetState struct {
	NetNSFiles    []string // paths under netnsDir
	Interfaces    []string // "vethXXXX master=BRIDGE"
	Mounts        []string // "MOUNTPOINT FSTYPE ROOT" of nsfs mounts and mounts below a netns directory
	IPAllocations []string // "NETWORK/IP container=ID ifname=IF"
	IptablesNAT   []string // "iptables CHAIN network=N container=ID" (ip6tables likewise; owner when known)
}

// NetSnapshot captures the current NetState.
func NetSnapshot() (NetState, error) {
	var s NetState
	var err error
	if s.NetNSFiles, err = netnsFiles(netnsDir); err != nil {
		return NetState{}, err
	}
	if s.Interfaces, err = vethInterfaces(); err != nil {
		return NetState{}, err
	}
	if s.Mounts, err = netnsMounts(); err != nil {
		return NetState{}, err
	}
	if s.IPAllocations, err = hostLocalAllocations(HostLocalDir); err != nil {
		return NetState{}, err
	}
	if s.IptablesNAT, err = cniNATChains(); err != nil {
		return NetState{}, err
	}
	return s, nil
}

// Diff lists what after holds that s does not, one line per entry, prefixed
// with its kind ("netns file", "interface", "mount", "ip allocation",
// "iptables chain").
func (s NetState) Diff(after NetState) []string {
	var out []string
	add := func(kind string, before, now []string) {
		for _, e := range added(before, now) {
			out = append(out, kind+" "+e)
		}
	}
	add("netns file", s.NetNSFiles, after.NetNSFiles)
	add("interface", s.Interfaces, after.Interfaces)
	add("mount", s.Mounts, after.Mounts)
	add("ip allocation", s.IPAllocations, after.IPAllocations)
	add("iptables chain", s.IptablesNAT, after.IptablesNAT)
	return out
}

// Leaks takes snapshots until nothing was added since s or timeout passed,
// and returns the last Diff. The kernel destroys a namespace, and the veth
// inside it, asynchronously after its last reference goes, so a check right
// after teardown may need a moment.
func (s NetState) Leaks(timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		now, err := NetSnapshot()
		if err != nil {
			return nil, err
		}
		d := s.Diff(now)
		if len(d) == 0 || time.Now().After(deadline) {
			return d, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// added returns the entries of now beyond those in before, as multisets.
func added(before, now []string) []string {
	count := make(map[string]int, len(before))
	for _, e := range before {
		count[e]++
	}
	var out []string
	for _, e := range now {
		if count[e] > 0 {
			count[e]--
			continue
		}
		out = append(out, e)
	}
	return out
}

func netnsFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out, nil
}

func vethInterfaces() ([]string, error) {
	ents, err := os.ReadDir(sysClassNet)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", sysClassNet, err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "veth") {
			continue
		}
		master := "-"
		if t, err := os.Readlink(filepath.Join(sysClassNet, e.Name(), "master")); err == nil {
			master = filepath.Base(t)
		}
		out = append(out, e.Name()+" master="+master)
	}
	slices.Sort(out)
	return out, nil
}

// netnsMounts returns nsfs mounts and mounts strictly below a directory named
// netns. The self-bind of the netns directory itself is persistent host
// setup, as with `ip netns add`, and is not listed.
func netnsMounts() ([]string, error) {
	data, err := os.ReadFile(mountInfo)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountInfo, err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+1 >= len(fields) {
			continue
		}
		root, mp, fstype := fields[3], fields[4], fields[sep+1]
		if fstype != "nsfs" && !strings.Contains(filepath.Dir(mp), "netns") {
			continue
		}
		out = append(out, mp+" "+fstype+" "+root)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountInfo, err)
	}
	slices.Sort(out)
	return out, nil
}

func hostLocalAllocations(dir string) ([]string, error) {
	nets, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []string
	for _, n := range nets {
		if !n.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, n.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("listing %s: %w", filepath.Join(dir, n.Name()), err)
		}
		for _, e := range ents {
			name := e.Name()
			if name == "lock" || strings.HasPrefix(name, "last_reserved_ip") {
				continue
			}
			// host-local writes "CONTAINERID\r\nIFNAME" (older versions only the ID).
			owner, err := os.ReadFile(filepath.Join(dir, n.Name(), name))
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return nil, fmt.Errorf("reading allocation %s/%s: %w", n.Name(), name, err)
			}
			id, ifname, _ := strings.Cut(strings.TrimSpace(string(owner)), "\n")
			out = append(out, fmt.Sprintf("%s/%s container=%s ifname=%s", n.Name(), name,
				strings.TrimSpace(id), strings.TrimSpace(ifname)))
		}
	}
	slices.Sort(out)
	return out, nil
}

// sharedNATChains are the CNI chains that are created once per host and stay.
var sharedNATChains = map[string]bool{
	"CNI-HOSTPORT-DNAT":    true,
	"CNI-HOSTPORT-SETMARK": true,
	"CNI-HOSTPORT-MASQ":    true,
}

// cniNATChains lists the per-container CNI-* chains of the nat table. A
// missing iptables-save binary yields none.
func cniNATChains() ([]string, error) {
	var out []string
	for _, tool := range []string{"iptables", "ip6tables"} {
		bin, err := exec.LookPath(tool + "-save")
		if err != nil {
			continue
		}
		cmd := exec.Command(bin, "-t", "nat")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		data, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("running %s-save: %w: %s", tool, err, strings.TrimSpace(stderr.String()))
		}
		owners := make(map[string]string) // chain -> "network=N container=ID"
		var chains []string
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			if chain, ok := strings.CutPrefix(line, ":"); ok {
				chain, _, _ = strings.Cut(chain, " ")
				if strings.HasPrefix(chain, "CNI-") && !sharedNATChains[chain] {
					chains = append(chains, chain)
				}
				continue
			}
			// CNI plugins tag the jump to a per-container chain with
			// --comment "... name: \"NETWORK\" id: \"CONTAINERID\"".
			m := ruleOwner.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if _, target, ok := strings.Cut(line, " -j "); ok {
				target, _, _ = strings.Cut(target, " ")
				owners[target] = "network=" + m[1] + " container=" + m[2]
			}
		}
		for _, c := range chains {
			e := tool + " " + c
			if o := owners[c]; o != "" {
				e += " " + o
			}
			out = append(out, e)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ruleOwner matches the network name and container ID in a CNI rule comment.
var ruleOwner = regexp.MustCompile(`name: \\"([^\\"]*)\\" id: \\"([^\\"]*)\\"`)

// Matching returns the entries of diff that contain any of substrs, such as
// a test's container IDs, namespace names or bridge name. Tests that share
// the host with others use it to look only at their own leftovers.
func Matching(diff []string, substrs ...string) []string {
	var out []string
	for _, e := range diff {
		for _, s := range substrs {
			if s != "" && strings.Contains(e, s) {
				out = append(out, e)
				break
			}
		}
	}
	return out
}

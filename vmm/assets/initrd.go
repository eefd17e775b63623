package assets

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/agentproxy"
	"github.com/crivm/crivm/internal/atomicfile"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Guest module sets. The closure of each is resolved from modules.dep.
var (
	// BaseGuestModules are what every guest needs: the PCI transport, the
	// agent's virtio-serial port, 9p file sharing, networking, and the ACPI
	// power button (button + evdev) through which QMP system_powerdown
	// reaches the agent; and bridge (with stp and llc), which containers
	// expect the kernel to provide: a privileged container in a VM may
	// create a bridge (critest's `brctl addbr`), and the guest has no
	// modprobe to load it on demand. bridge adds ~700 KiB to the initrd.
	BaseGuestModules = []string{"virtio_pci", "virtio_console", "9pnet_virtio", "9p", "virtio_net", "virtio_balloon", "button", "evdev", "bridge"}
	// VsockGuestModules add the virtio vsock transport.
	VsockGuestModules = []string{"vmw_vsock_virtio_transport"}
	// VirtioFSGuestModules add virtio-fs (and fuse) for a virtiofsd share.
	VirtioFSGuestModules = []string{"virtiofs"}
)

// Paths inside the initrd that the agent relies on.
const (
	GuestInit = "/init"
)

// Initrd compression.
const (
	InitrdUncompressed = "none"
	InitrdGzip         = "gzip"
)

// initrdFormatVersion changes whenever the initrd layout does, so that a
// newer crivm never boots a cached initrd of an older layout.
const initrdFormatVersion = "1"

// InitrdOptions configures Initrd.
type InitrdOptions struct {
	// AgentBinary is the static crivm-agent; it becomes /init.
	AgentBinary string
	// KernelRelease is the guest kernel's release, e.g. 6.1.0-56-amd64.
	KernelRelease string
	// ModulesDir defaults to /lib/modules/<KernelRelease>.
	ModulesDir string
	// Modules are the wanted module names ("-" and "_" are the same). Their
	// dependency closure is added; built-in modules are skipped. nil:
	// BaseGuestModules; add VsockGuestModules for the vsock transport.
	Modules []string
	// CacheDir receives initrd-<key>.cpio[.gz].
	CacheDir string
	// Compression is InitrdUncompressed (default: under TCG the kernel
	// unpacks an uncompressed archive faster than it inflates a gzip one)
	// or InitrdGzip.
	Compression string
	// ExtraBinaries are absolute host paths of programs the guest runs
	// (tools for debugging, say). Each is placed at the same path in the guest, with the
	// closure of its shared libraries and its ELF interpreter at the paths
	// the guest's dynamic loader looks them up by (see BinaryClosure).
	ExtraBinaries []string
}

// Initrd returns a newc cpio initrd holding the agent as /init, the wanted
// modules under /lib/modules/<release> and /modules.order. It is cached in
// CacheDir under a key of the agent's content hash, the kernel release, the
// module list with each module file's size and mtime, and the compression;
// a change to any of them builds a new one.
func Initrd(ctx context.Context, opts InitrdOptions) (string, error) {
	if opts.AgentBinary == "" || opts.KernelRelease == "" || opts.CacheDir == "" {
		return "", errdefs.InvalidArgument("building initrd: agent binary, kernel release and cache dir are required")
	}
	if opts.ModulesDir == "" {
		opts.ModulesDir = filepath.Join("/lib/modules", opts.KernelRelease)
	}
	if opts.Modules == nil {
		opts.Modules = BaseGuestModules
	}
	switch opts.Compression {
	case "":
		opts.Compression = InitrdUncompressed
	case InitrdUncompressed, InitrdGzip:
	default:
		return "", errdefs.InvalidArgument("building initrd: unknown compression %q (want none or gzip)", opts.Compression)
	}
	agentSum, err := checkAgentBinary(opts.AgentBinary)
	if err != nil {
		return "", fmt.Errorf("building initrd: %w", err)
	}
	mods, err := ResolveModules(opts.ModulesDir, opts.Modules)
	if err != nil {
		return "", fmt.Errorf("building initrd: %w", err)
	}
	extras, err := resolveExtras(opts.ExtraBinaries)
	if err != nil {
		return "", fmt.Errorf("building initrd: %w", err)
	}
	keyParts := []string{initrdFormatVersion, agentSum, opts.KernelRelease, opts.ModulesDir, opts.Compression}
	for _, e := range extras {
		st, err := os.Stat(e)
		if err != nil {
			return "", fmt.Errorf("building initrd: %w", err)
		}
		keyParts = append(keyParts, fmt.Sprintf("extra %s %d %d", e, st.Size(), st.ModTime().UnixNano()))
	}
	for _, m := range mods {
		st, err := os.Stat(m.Path)
		if err != nil {
			return "", fmt.Errorf("building initrd: %w", err)
		}
		keyParts = append(keyParts, fmt.Sprintf("%s %d %d", m.Path, st.Size(), st.ModTime().UnixNano()))
	}
	name := "initrd-" + cacheKey(keyParts...) + ".cpio"
	if opts.Compression == InitrdGzip {
		name += ".gz"
	}
	out := filepath.Join(opts.CacheDir, name)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	start := time.Now()
	err = atomicfile.Write(opts.CacheDir, out, 0o644, func(f *os.File) error {
		var w io.Writer = f
		var zw *gzip.Writer
		if opts.Compression == InitrdGzip {
			zw, _ = gzip.NewWriterLevel(f, gzip.BestSpeed)
			w = zw
		}
		if err := writeInitrd(ctx, w, opts, mods, extras); err != nil {
			return err
		}
		if zw != nil {
			return zw.Close()
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("building initrd: %w", err)
	}
	log.G(ctx).Info("built guest initrd", "path", out, "modules", len(mods), "elapsed", time.Since(start))
	return out, nil
}

// checkAgentBinary requires a statically linked ELF (the initrd has no
// loader or libc) and returns its sha256.
func checkAgentBinary(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", errdefs.FailedPrecondition("agent binary %s is missing (build cmd/crivm-agent with CGO_ENABLED=0)", path)
		}
		return "", err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return "", errdefs.InvalidArgument("agent binary %s is not an ELF file: %w", path, err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errdefs.InvalidArgument("agent binary %s is dynamically linked; build it with CGO_ENABLED=0", path)
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeInitrd(ctx context.Context, w io.Writer, opts InitrdOptions, mods []Module, extras []string) error {
	cw := newCPIOWriter(w)
	dirs := map[string]bool{}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "mnt", "lib", "lib/modules", "lib/modules/" + opts.KernelRelease} {
		perm := uint32(0o755)
		if d == "tmp" {
			perm = 0o1777
		}
		if err := cw.Dir(d, perm); err != nil {
			return err
		}
		dirs[d] = true
	}
	// The kernel opens /dev/console for init's stdin, stdout and stderr
	// before devtmpfs is mounted; without the node init has no output.
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := cw.CharDev("dev/null", 0o666, 1, 3); err != nil {
		return err
	}
	if err := addFile(cw, GuestInit, 0o755, opts.AgentBinary); err != nil {
		return err
	}

	for _, e := range extras {
		guest := strings.TrimPrefix(e, "/")
		if err := mkdirAll(cw, dirs, ".", filepath.Dir(guest)); err != nil {
			return err
		}
		if err := addFile(cw, e, 0o755, e); err != nil {
			return fmt.Errorf("adding %s: %w", e, err)
		}
	}

	var order bytes.Buffer
	base := "lib/modules/" + opts.KernelRelease
	for _, m := range mods {
		guest := base + "/" + m.Rel
		if err := mkdirAll(cw, dirs, base, filepath.Dir(guest)); err != nil {
			return err
		}
		data, err := readModule(ctx, m.Path)
		if err != nil {
			return fmt.Errorf("reading module %s: %w", m.Path, err)
		}
		if err := cw.File(guest, 0o644, int64(len(data)), bytes.NewReader(data)); err != nil {
			return err
		}
		order.WriteString("/" + guest + "\n")
	}
	if err := cw.File(strings.TrimPrefix(agentproxy.GuestModulesOrder, "/"), 0o644, int64(order.Len()), &order); err != nil {
		return err
	}
	return cw.Close()
}

// mkdirAll writes the directories below base down to dir, parents first,
// skipping those already in written, which it updates.
func mkdirAll(cw *cpioWriter, written map[string]bool, base, dir string) error {
	var todo []string
	for d := dir; d != base && d != "." && d != "/"; d = filepath.Dir(d) {
		todo = append(todo, d)
	}
	for i := len(todo) - 1; i >= 0; i-- {
		if written[todo[i]] {
			continue
		}
		if err := cw.Dir(todo[i], 0o755); err != nil {
			return err
		}
		written[todo[i]] = true
	}
	return nil
}

func addFile(cw *cpioWriter, guest string, perm uint32, host string) error {
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return cw.File(strings.TrimPrefix(guest, "/"), perm, st.Size(), f)
}

// readModule returns a module's ELF image, decompressing .ko.xz, .ko.zst
// and .ko.gz: finit_module only takes compressed modules when the kernel
// was built with CONFIG_MODULE_DECOMPRESS, so the agent never has to care.
func readModule(ctx context.Context, path string) ([]byte, error) {
	format := ""
	switch {
	case strings.HasSuffix(path, ".ko.xz"):
		format = FormatXZ
	case strings.HasSuffix(path, ".ko.zst"):
		format = FormatZstd
	case strings.HasSuffix(path, ".ko.gz"):
		format = FormatGzip
	default:
		return os.ReadFile(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := decompress(ctx, format, bufio.NewReader(f), &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Module is one kernel module of a resolved closure.
type Module struct {
	// Name is the normalized module name (underscores).
	Name string
	// Rel is the module's path inside the initrd's modules dir, without a
	// compression suffix (kernel/drivers/virtio/virtio.ko).
	Rel string
	// Path is the host file (possibly compressed).
	Path string
}

// ResolveModules returns the dependency closure of names in load order
// (every module after all of its dependencies), from modulesDir/modules.dep.
// Modules listed in modules.builtin are skipped; a name in neither file is a
// FailedPrecondition error naming it.
func ResolveModules(modulesDir string, names []string) ([]Module, error) {
	depPath := filepath.Join(modulesDir, "modules.dep")
	f, err := os.Open(depPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.FailedPrecondition("kernel modules index %s is missing (install the guest kernel's modules)", depPath)
		}
		return nil, fmt.Errorf("reading modules index: %w", err)
	}
	defer f.Close()
	dep, err := parseModulesDep(f)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", depPath, err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modulesDir, "modules.builtin")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				builtin[moduleName(line)] = true
			}
		}
	}
	byName := map[string]string{}
	for rel := range dep {
		byName[moduleName(rel)] = rel
	}

	var out []Module
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(rel string, chain []string) error
	visit = func(rel string, chain []string) error {
		switch state[rel] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("dependency cycle: %s -> %s", strings.Join(chain, " -> "), moduleName(rel))
		}
		state[rel] = visiting
		deps := dep[rel]
		// modules.dep lists the deepest dependency last; modprobe loads the
		// list from the end, and so does this walk.
		for i := len(deps) - 1; i >= 0; i-- {
			if _, ok := dep[deps[i]]; !ok {
				return fmt.Errorf("%s depends on %s, which has no line in modules.dep", rel, deps[i])
			}
			if err := visit(deps[i], append(chain, moduleName(rel))); err != nil {
				return err
			}
		}
		state[rel] = done
		out = append(out, Module{Name: moduleName(rel), Rel: stripCompression(rel), Path: filepath.Join(modulesDir, rel)})
		return nil
	}
	for _, n := range names {
		n = normalizeModuleName(n)
		rel, ok := byName[n]
		if !ok {
			if builtin[n] {
				continue
			}
			return nil, errdefs.FailedPrecondition("kernel module %s is neither in %s nor built in", n, depPath)
		}
		if err := visit(rel, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseModulesDep reads "path: dep dep ..." lines.
func parseModulesDep(r io.Reader) (map[string][]string, error) {
	dep := map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("line %d: no \"module:\"", n)
		}
		dep[strings.TrimSpace(mod)] = strings.Fields(deps)
	}
	return dep, sc.Err()
}

// moduleName turns kernel/fs/9p/9p.ko.xz into 9p.
func moduleName(rel string) string {
	base := filepath.Base(stripCompression(rel))
	return normalizeModuleName(strings.TrimSuffix(base, ".ko"))
}

func normalizeModuleName(n string) string { return strings.ReplaceAll(n, "-", "_") }

func stripCompression(rel string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(rel, ".ko"+s) {
			return strings.TrimSuffix(rel, s)
		}
	}
	return rel
}

// KernelRelease reads the release string ("6.1.0-56-amd64") from a bzImage
// header or, for an ELF vmlinux, from its linux_banner, so the initrd's
// modules match the guest kernel rather than the host's.
func KernelRelease(kernel string) (string, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return "", fmt.Errorf("reading kernel release: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return "", fmt.Errorf("reading kernel release of %s: %w", kernel, err)
	}
	if string(hdr[bootHeaderMagic:bootHeaderMagic+4]) == "HdrS" {
		// kernel_version is a pointer (minus 0x200) to a NUL-terminated
		// "release (builder) #version" string in the setup code.
		ptr := int64(hdr[0x20e]) | int64(hdr[0x20f])<<8
		buf := make([]byte, 256)
		n, _ := f.ReadAt(buf, ptr+0x200)
		s := unix.ByteSliceToString(buf[:n])
		if rel, _, _ := strings.Cut(s, " "); rel != "" {
			return rel, nil
		}
	}
	const banner = "Linux version "
	data, err := os.ReadFile(kernel)
	if err != nil {
		return "", fmt.Errorf("reading kernel release: %w", err)
	}
	if i := bytes.Index(data, []byte(banner)); i >= 0 {
		rest := data[i+len(banner):]
		if j := bytes.IndexByte(rest, ' '); j > 0 {
			return string(rest[:j]), nil
		}
	}
	return "", fmt.Errorf("reading kernel release of %s: no version string found", kernel)
}

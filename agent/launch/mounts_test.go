package launch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/crivm/crivm/test/testutil"
)

// A bind with "ro" is read-only at its top only, one with "rro" in every
// submount as well (critest's readonly-mount specs, both flavours).
func TestMountInRootfsReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	tests := []struct {
		opt   string
		subRO bool
	}{{"ro", false}, {"rro", true}}
	for _, tt := range tests {
		t.Run(tt.opt, func(t *testing.T) {
			root := t.TempDir()
			src, sub, rootfs := filepath.Join(root, "src"), filepath.Join(root, "src", "sub"), filepath.Join(root, "rootfs")
			for _, d := range []string{sub, rootfs} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
			err := mountInRootfs(rootfs, specs.Mount{Destination: "/vol", Type: "bind", Source: src, Options: []string{"rbind", "rprivate", tt.opt}})
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(rootfs, "vol")
			t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
			if err := os.WriteFile(filepath.Join(dst, "f"), nil, 0o644); !errors.Is(err, unix.EROFS) {
				t.Errorf("writing the top: %v, want EROFS", err)
			}
			err = os.WriteFile(filepath.Join(dst, "sub", "f"), nil, 0o644)
			if got := errors.Is(err, unix.EROFS); got != tt.subRO {
				t.Errorf("writing the submount: %v, want read-only %v", err, tt.subRO)
			}
		})
	}
}

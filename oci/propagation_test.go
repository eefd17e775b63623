package oci

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestCheckPropagation(t *testing.T) {
	info := `21 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 21 0:5 / /shared rw shared:7 - tmpfs tmpfs rw
31 21 0:6 / /slave rw master:3 - tmpfs tmpfs rw
32 21 0:7 / /private rw - tmpfs tmpfs rw
33 30 0:8 / /shared/inner rw - tmpfs tmpfs rw
`
	p := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(p, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	old := mountinfoPath
	mountinfoPath = p
	defer func() { mountinfoPath = old }()

	h2c, bidi := runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER, runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
	tests := []struct {
		src     string
		prop    runtimeapi.MountPropagation
		wantErr bool
	}{
		{"/shared/a", h2c, false},
		{"/shared/a", bidi, false},
		{"/slave/x", h2c, false},
		{"/slave/x", bidi, true},
		{"/private/x", h2c, true},
		{"/privateer", h2c, true}, // on /, which is private: not under /private
		{"/shared/inner/z", h2c, true},
		{"/private/x", runtimeapi.MountPropagation_PROPAGATION_PRIVATE, false},
	}
	for _, tt := range tests {
		err := checkPropagation(tt.src, tt.prop)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s %v: got %v, want error %v", tt.src, tt.prop, err, tt.wantErr)
		}
		if err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("%s %v: error class: %v", tt.src, tt.prop, err)
		}
	}
}

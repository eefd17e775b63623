package oci

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

func TestCRIDevices(t *testing.T) {
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Skip("no /dev/null")
	}
	devs, rules, err := criDevices([]*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"}})
	if err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o666)
	zero := uint32(0)
	wantDev := specs.LinuxDevice{Path: "/dev/mynull", Type: "c", Major: 1, Minor: 3, FileMode: &mode, UID: &zero, GID: &zero}
	if len(devs) != 1 || !reflect.DeepEqual(devs[0], wantDev) {
		t.Errorf("device = %+v, want %+v", devs, wantDev)
	}
	wantRule := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(3)), Access: "rw"}
	if len(rules) != 1 || !reflect.DeepEqual(rules[0], wantRule) {
		t.Errorf("rule = %+v, want %+v", rules, wantRule)
	}

	// Empty permissions mean rwm; an empty container path means the host path.
	devs, rules, err = criDevices([]*runtimeapi.Device{{HostPath: "/dev/zero"}})
	if err != nil || devs[0].Path != "/dev/zero" || rules[0].Access != "rwm" || devs[0].Minor != 5 {
		t.Errorf("defaults: %+v %+v %v", devs, rules, err)
	}

	regular := filepath.Join(t.TempDir(), "file")
	os.WriteFile(regular, nil, 0o644)
	for name, d := range map[string]*runtimeapi.Device{
		"missing":     {HostPath: "/dev/does-not-exist", ContainerPath: "/dev/x"},
		"not device":  {HostPath: regular, ContainerPath: "/dev/x"},
		"bad perms":   {HostPath: "/dev/null", ContainerPath: "/dev/x", Permissions: "rwx"},
		"relative":    {HostPath: "/dev/null", ContainerPath: "dev/x"},
		"rel on host": {HostPath: "dev/null", ContainerPath: "/dev/x"},
	} {
		if _, _, err := criDevices([]*runtimeapi.Device{d}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
}

func TestDeviceRules(t *testing.T) {
	extra := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: ptr(int64(10)), Minor: ptr(int64(200)), Access: "rw"}
	got := deviceRules(false, []specs.LinuxDeviceCgroup{extra})
	if got[0].Allow || got[0].Access != "rwm" || got[0].Type != "" {
		t.Errorf("first rule is not deny-all: %+v", got[0])
	}
	if len(got) != 1+len(defaultAllowedDevices)+1 || !reflect.DeepEqual(got[len(got)-1], extra) {
		t.Errorf("rules: %+v", got)
	}
	priv := deviceRules(true, []specs.LinuxDeviceCgroup{extra})
	if len(priv) != 2 || !priv[1].Allow || priv[1].Type != "" {
		t.Errorf("privileged rules: %+v", priv)
	}
}

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestHostPathPolicy: an untrusted VM pod may mount only its own kubelet
// directory and what the operator allowlists. Every other hostPath (the
// host's /, /etc, a symlink to /etc, crivm's root, another pod's volume, a
// missing path) is refused with FailedPrecondition naming it, before any
// rootfs or VM work, is audited, and a missing source is not created. The
// allowed sources reach the container, and `crivm trust explain` agrees.
func TestHostPathPolicy(t *testing.T) {
	requiresVM(t)
	ctx := context.Background()

	// 1. A kubelet root with this pod's and another pod's volumes, an
	//    allowlisted directory, and a symlink to /etc, all in temp dirs.
	realDir := func() string {
		t.Helper()
		d, err := filepath.EvalSymlinks(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	kubelet, shared, links := realDir(), realDir(), realDir()
	const podUID = "hostpath-uid" // e.podConfig("hostpath") sets it
	ownVolume := filepath.Join(kubelet, "pods", podUID, "volumes", "kubernetes.io~empty-dir", "data")
	otherVolume := filepath.Join(kubelet, "pods", "other-uid", "volumes", "x")
	for dir, content := range map[string]string{ownVolume: "from-the-pod-dir\n", otherVolume: "another-pod-secret\n", shared: "from-the-allowlist\n"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hello"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	etcLink := filepath.Join(links, "etc")
	if err := os.Symlink("/etc", etcLink); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(links, "missing", "dir")

	// 2. The daemon: kubelet_root_dir at the temp kubelet root, the shared
	//    dir allowlisted; one untrusted pod in a VM for the whole table.
	e := newRuncEnv(t, "[crivm.runtime]",
		`kubelet_root_dir = "`+kubelet+`"`,
		`untrusted_allowed_host_paths = ["`+shared+`"]`)
	pod := e.podConfig("hostpath")
	pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
	if pod.Metadata.Uid != podUID {
		t.Fatalf("pod UID %q, want %q", pod.Metadata.Uid, podUID)
	}
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	if st, info := e.sandboxStatus(t, sbID); info.Handler != "vm" || st.Status.Annotations["io.crivm.trust"] != "untrusted" {
		t.Fatalf("pod: handler %q, annotations %v; want an untrusted vm pod", info.Handler, st.Status.Annotations)
	}

	// 3. Refused hostPaths: FailedPrecondition naming the path, and no
	//    container left behind.
	refused := []struct {
		name     string
		hostPath string
		device   bool
		// wantMsg are substrings of the message beside the host path.
		wantMsg []string
	}{
		{"host root", "/", false, []string{`(resolved "/")`, "untrusted_allowed_host_paths"}},
		{"host etc", "/etc", false, []string{`(resolved "/etc")`, "deny by default"}},
		{"symlink to etc", etcLink, false, []string{`(resolved "/etc")`}},
		{"crivm root", e.d.Root, false, []string{"refused by the mount policy"}},
		{"another pod's volume", otherVolume, false, []string{"refused by the mount policy", filepath.Join(kubelet, "pods", podUID)}},
		{"missing path", missing, false, []string{"does not exist (sources are never created for untrusted pods)"}},
		{"host device", "/dev/kvm", true, []string{"untrusted_allowed_devices"}},
	}
	for i, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			ctr := e.containerConfig("refused-"+string(rune('a'+i)), "sleep", "3600")
			if tt.device {
				ctr.Devices = []*runtimeapi.Device{{HostPath: tt.hostPath, ContainerPath: "/dev/x", Permissions: "rw"}}
			} else {
				ctr.Mounts = []*runtimeapi.Mount{{HostPath: tt.hostPath, ContainerPath: "/mnt/x"}}
			}
			id, err := e.rs.CreateContainer(ctx, sbID, ctr, pod)
			if err == nil {
				e.ids = append(e.ids, id)
				t.Fatalf("CreateContainer with %s: created %s, want FailedPrecondition", tt.hostPath, id)
			}
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, `"`+tt.hostPath+`"`) {
				t.Fatalf("CreateContainer with %s: %v; want FailedPrecondition naming the path", tt.hostPath, err)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(links, "missing")); !os.IsNotExist(err) {
		t.Errorf("the missing source's parent %s was created (%v)", filepath.Join(links, "missing"), err)
	}
	ctrs, err := e.rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sbID})
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 0 {
		t.Errorf("refused creates left %d containers", len(ctrs))
	}

	// 4. Every refusal is in the audit log, one line each.
	audited := map[string]string{}
	f, err := os.Open(e.d.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct {
			Event    string `json:"event"`
			HostPath string `json:"host_path"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if l.Event == "mount_refused" || l.Event == "device_refused" {
			audited[l.HostPath] = l.Event
		}
	}
	f.Close()
	for _, tt := range refused {
		want := "mount_refused"
		if tt.device {
			want = "device_refused"
		}
		if audited[tt.hostPath] != want {
			t.Errorf("audit log: %s has event %q, want %q (all: %v)", tt.hostPath, audited[tt.hostPath], want, audited)
		}
	}

	// 5. Allowed: the pod's own kubelet directory and the allowlisted dir.
	//    The container is created and started and reads the file.
	allowed := []struct {
		name, hostPath, want string
	}{
		{"own kubelet dir", ownVolume, "from-the-pod-dir\n"},
		{"allowlisted dir", shared, "from-the-allowlist\n"},
	}
	for i, tt := range allowed {
		t.Run("allowed/"+tt.name, func(t *testing.T) {
			ctr := e.containerConfig("allowed-"+string(rune('a'+i)), "sleep", "3600")
			ctr.Mounts = []*runtimeapi.Mount{{HostPath: tt.hostPath, ContainerPath: "/vol"}}
			id := e.startContainer(t, sbID, ctr, pod)
			out, stderr, err := e.rs.ExecSync(ctx, id, []string{"cat", "/vol/hello"}, 30*time.Second)
			if err != nil || string(out) != tt.want {
				t.Errorf("cat /vol/hello in the container: %q (stderr %q, %v), want %q", out, stderr, err, tt.want)
			}
		})
	}

	// 6. `crivm trust explain` judges the same mounts the same way.
	podJSON, err := protojson.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	all := e.containerConfig("explain", "true")
	for _, m := range []string{"/etc", etcLink, otherVolume, ownVolume, shared} {
		all.Mounts = append(all.Mounts, &runtimeapi.Mount{HostPath: m, ContainerPath: "/mnt" + m})
	}
	ctrJSON, err := protojson.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	podFile, ctrFile := filepath.Join(dir, "pod.json"), filepath.Join(dir, "ctr.json")
	if err := os.WriteFile(podFile, podJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ctrFile, ctrJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := e.d.Command("trust", "explain", "--pod", podFile, "--container", ctrFile).CombinedOutput()
	if err == nil {
		t.Errorf("explain with refused mounts succeeded:\n%s", out)
	}
	for _, w := range []string{
		`mount  "/etc": refused: hostPath "/etc" (resolved "/etc")`,
		`mount  "` + etcLink + `" -> "/etc": refused:`,
		`mount  "` + otherVolume + `": refused:`,
		`mount  "` + ownVolume + `": allowed by the pod's own kubelet directory`,
		`mount  "` + shared + `": allowed by untrusted_allowed_host_paths entry`,
		"the pod or its container would be refused",
	} {
		if !strings.Contains(string(out), w) {
			t.Errorf("explain output lacks %q:\n%s", w, out)
		}
	}

	// 7. Remove the pod; the leak check registered by newRuncEnv runs last.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/test/fixtures"
)

// TestImageVolumes: an image mounted as a container's volume (the
// Kubernetes image volume source) in a runc pod and in an untrusted VM pod.
// The volume holds every layer of the image, is read-only, runs its
// binaries, honours image_sub_path, and is reported with its image's ID in
// ContainerStatus. Bad requests are refused before anything is mounted, or
// leave nothing mounted; the image cannot be removed while a volume uses
// it; a daemon restart neither loses nor releases a volume; and a removed
// container leaves no mount.
func TestImageVolumes(t *testing.T) {
	e := newRuncEnv(t)
	t.Run("runc", func(t *testing.T) {
		imageVolumeSteps(t, e, e.podConfig("imgvol-runc"), "runc")
	})
	t.Run("runc user namespace", func(t *testing.T) {
		imageVolumeUserns(t, e)
	})
	t.Run("vm", func(t *testing.T) {
		requiresVM(t)
		pod := e.podConfig("imgvol-vm")
		pod.Annotations = map[string]string{"io.kubernetes.cri.untrusted-workload": "true"}
		imageVolumeSteps(t, e, pod, "vm")
	})
}

func imageVolumeSteps(t *testing.T, e *runcEnv, pod *runtimeapi.PodSandboxConfig, handler string) {
	ctx := context.Background()
	name := e.reg.Ref("layered", "latest")

	// 1. The kubelet pulls the volume's image (the layered fixture: busybox
	//    and two layers over /data, with whiteouts) and starts the pod.
	imageID, err := e.is.PullImage(ctx, spec(name), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sbID, err := e.rs.RunPodSandbox(ctx, pod, "")
	if err != nil {
		t.Fatal(err)
	}
	e.ids = append(e.ids, sbID)
	t.Cleanup(func() { e.rs.RemovePodSandbox(context.Background(), sbID) })
	if _, info := e.sandboxStatus(t, sbID); info.Handler != handler {
		t.Fatalf("pod handler %q, want %q", info.Handler, handler)
	}
	volume := func(path, sub string) *runtimeapi.Mount {
		return &runtimeapi.Mount{ContainerPath: path, Readonly: true, ImageSubPath: sub,
			Image: &runtimeapi.ImageSpec{Image: imageID, UserSpecifiedImage: name}}
	}
	withVolumes := func(ctrName string, ms ...*runtimeapi.Mount) *runtimeapi.ContainerConfig {
		ctr := e.containerConfig(ctrName, "sleep", "3600")
		ctr.Mounts = ms
		return ctr
	}
	storageMounts := func() []string {
		ms := mountsUnder(t, e.d.Root+"/storage/overlay")
		slices.Sort(ms)
		return ms
	}
	mountsBefore := storageMounts()

	// 2. A container with the image at /vol and its /data at /vol-data.
	ctrID := e.startContainer(t, sbID, withVolumes("app", volume("/vol", ""), volume("/vol-data", "data")), pod)
	points := imageVolumeMountPoints(t, e, ctrID)
	if len(points) != 2 {
		t.Fatalf("verbose status lists %d image volumes, want 2", len(points))
	}
	for _, p := range points {
		if !slices.Contains(storageMounts(), p) {
			t.Errorf("image volume %s is not in the host's mount table", p)
		}
	}

	// 3. Every layer is there: files of the second and third layers, and
	//    none of what the third whites out.
	for path, want := range fixtures.LayeredFiles {
		if got := imageVolumeExec(t, e, ctrID, "cat", "/vol"+path); got != want {
			t.Errorf("cat /vol%s: %q, want %q", path, got, want)
		}
	}
	for _, path := range fixtures.LayeredAbsent {
		if _, _, err := e.rs.ExecSync(ctx, ctrID, []string{"ls", "/vol" + path}, 30*time.Second); err == nil {
			t.Errorf("/vol%s is present in the volume", path)
		}
	}

	// 4. Read-only: writing fails, on the volume and on its sub path.
	for _, p := range []string{"/vol/new", "/vol/data/keep", "/vol-data/new"} {
		if _, _, err := e.rs.ExecSync(ctx, ctrID, []string{"sh", "-c", "echo x > " + p}, 30*time.Second); err == nil {
			t.Errorf("writing %s in the image volume succeeded", p)
		}
	}

	// 5. Not noexec: the image's busybox runs from the volume.
	if got := imageVolumeExec(t, e, ctrID, "/vol/bin/busybox", "echo", "ran-from-the-volume"); got != "ran-from-the-volume\n" {
		t.Errorf("running /vol/bin/busybox: %q", got)
	}

	// 6. image_sub_path: /vol-data is the image's /data.
	if got := imageVolumeExec(t, e, ctrID, "cat", "/vol-data/keep"); got != "keep\n" {
		t.Errorf("cat /vol-data/keep: %q, want %q", got, "keep\n")
	}
	if _, _, err := e.rs.ExecSync(ctx, ctrID, []string{"ls", "/vol-data/bin"}, 30*time.Second); err == nil {
		t.Error("/vol-data holds the image's root, not its /data")
	}

	// 7. ContainerStatus reports each volume's image with the image's ID
	//    as image_ref.
	st, err := e.rs.ContainerStatus(ctx, ctrID, false)
	if err != nil {
		t.Fatal(err)
	}
	reported := 0
	for _, m := range st.Status.Mounts {
		if m.GetImage() != nil {
			reported++
			if m.Image.ImageRef != imageID || m.Image.Image != imageID {
				t.Errorf("status mount %s: image %q image_ref %q, want both %q", m.ContainerPath, m.Image.Image, m.Image.ImageRef, imageID)
			}
		}
	}
	if reported != 2 {
		t.Errorf("status reports %d image volumes, want 2: %v", reported, st.Status.Mounts)
	}

	// 8. Refused: readonly false and an escaping sub path (InvalidArgument,
	//    before anything is mounted), a missing sub path and an image that
	//    is not here (NotFound, naming them). None leaves a container or a
	//    mount.
	notPulled := e.reg.Ref("entrypoint", "latest")
	writable := volume("/vol", "")
	writable.Readonly = false
	for _, tt := range []struct {
		name  string
		m     *runtimeapi.Mount
		code  codes.Code
		names string
	}{
		{"readonly false", writable, codes.InvalidArgument, "readonly"},
		{"escaping sub path", volume("/vol", "../../etc"), codes.InvalidArgument, `"../../etc"`},
		{"missing sub path", volume("/vol", "no/such/dir"), codes.NotFound, `"no/such/dir"`},
		{"image not present", &runtimeapi.Mount{ContainerPath: "/vol", Readonly: true, Image: &runtimeapi.ImageSpec{Image: notPulled}}, codes.NotFound, notPulled},
	} {
		id, err := e.rs.CreateContainer(ctx, sbID, withVolumes("refused", tt.m), pod)
		if err == nil {
			e.ids = append(e.ids, id)
			t.Errorf("%s: created %s, want %v", tt.name, id, tt.code)
			continue
		}
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.names) {
			t.Errorf("%s: %v, want %v naming %s", tt.name, err, tt.code, tt.names)
		}
	}
	ctrs, err := e.rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sbID})
	if err != nil || len(ctrs) != 1 {
		t.Errorf("containers after the refused creates: %d (%v), want 1", len(ctrs), err)
	}
	if want := len(mountsBefore) + 3; len(storageMounts()) != want { // the rootfs and two volumes
		t.Errorf("storage mounts after the refused creates: %v, want %d", storageMounts(), want)
	}

	// 9. The image cannot be removed while a volume uses it: RemoveImage
	//    refuses, naming the container, and the volume stays.
	for _, ref := range []string{name, imageID} {
		err := e.is.RemoveImage(ctx, spec(ref))
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), ctrID) {
			t.Errorf("RemoveImage(%s) while in use: %v, want FailedPrecondition naming %s", ref, err, ctrID)
		}
	}
	if got := imageVolumeExec(t, e, ctrID, "cat", "/vol/data/keep"); got != "keep\n" {
		t.Errorf("the volume after the refused RemoveImage: %q", got)
	}

	if handler == "vm" {
		// 10. An untrusted pod cannot name the volume's mount, crivm's
		//     storage, as a hostPath.
		hostPath := &runtimeapi.Mount{ContainerPath: "/steal", HostPath: points[0], Readonly: true}
		if _, err := e.rs.CreateContainer(ctx, sbID, withVolumes("steal", hostPath), pod); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "refused by the mount policy") {
			t.Errorf("hostPath %s in an untrusted pod: %v, want FailedPrecondition by the mount policy", points[0], err)
		}
	} else {
		// 10. A second container mounts the same image. A daemon restart
		//     neither unmounts nor remounts a volume, and removing one
		//     container releases its volumes only.
		other := e.startContainer(t, sbID, withVolumes("other", volume("/vol", "")), pod)
		otherPoints := imageVolumeMountPoints(t, e, other)
		before := storageMounts()
		if err := e.d.Stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
		e.d.Start(ctx)
		e.rs, e.is = e.d.RuntimeService(ctx), e.d.ImageService(ctx)
		if after := storageMounts(); !slices.Equal(after, before) {
			t.Errorf("storage mounts after the restart: %v, were %v", after, before)
		}
		if err := e.rs.StopContainer(ctx, other, 0); err != nil {
			t.Fatal(err)
		}
		if err := e.rs.RemoveContainer(ctx, other); err != nil {
			t.Fatal(err)
		}
		for _, p := range otherPoints {
			if slices.Contains(storageMounts(), p) {
				t.Errorf("the removed container's volume %s is still mounted", p)
			}
		}
		if got := imageVolumeExec(t, e, ctrID, "cat", "/vol/data/keep"); got != "keep\n" {
			t.Errorf("the first container's volume after the second's removal: %q", got)
		}
	}

	// 11. Removing the container unmounts its volumes; then the image can
	//     go.
	if err := e.rs.StopContainer(ctx, ctrID, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemoveContainer(ctx, ctrID); err != nil {
		t.Fatal(err)
	}
	left := storageMounts()
	for _, p := range points {
		if slices.Contains(left, p) {
			t.Errorf("image volume %s still mounted after RemoveContainer", p)
		}
	}
	if !slices.Equal(left, mountsBefore) {
		t.Errorf("storage mounts after RemoveContainer: %v, were %v", left, mountsBefore)
	}
	if err := e.is.RemoveImage(ctx, spec(imageID)); err != nil {
		t.Errorf("RemoveImage once no volume uses it: %v", err)
	}

	// 12. Remove the pod; the leak check registered by newRuncEnv runs last.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
}

// imageVolumeUserns: in a pod with its own user namespace, the image
// volume's files belong to the container's root, as the rootfs's do.
func imageVolumeUserns(t *testing.T, e *runcEnv) {
	ctx := context.Background()

	// 1. The image, and a pod with its own user namespace whose container
	//    mounts it at /vol.
	imageID, err := e.is.PullImage(ctx, spec(e.reg.Ref("layered", "latest")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pod := e.podConfig("imgvol-userns")
	pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = usernsOptions(usernsBase, 65536)
	ctr := e.containerConfig("app", "sleep", "3600")
	ctr.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", Readonly: true, Image: &runtimeapi.ImageSpec{Image: imageID}}}
	ctr.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER, UsernsOptions: pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions}
	sbID, ctrID := e.runPod(t, pod, ctr)
	points := imageVolumeMountPoints(t, e, ctrID)

	// 2. The container's root owns the volume's files (the image's root
	//    does on disk), reads them, runs them, and cannot write.
	for _, p := range []string{"/vol/data/keep", "/vol/bin/busybox"} {
		if f := strings.Fields(imageVolumeExec(t, e, ctrID, "ls", "-ln", p)); len(f) < 4 || f[2] != "0" || f[3] != "0" {
			t.Errorf("ls -ln %s in the container: %q, want owner 0 0", p, f)
		}
	}
	if got := imageVolumeExec(t, e, ctrID, "/vol/bin/busybox", "cat", "/vol/data/keep"); got != "keep\n" {
		t.Errorf("cat /vol/data/keep: %q", got)
	}
	if _, _, err := e.rs.ExecSync(ctx, ctrID, []string{"sh", "-c", "echo x > /vol/data/keep"}, 30*time.Second); err == nil {
		t.Error("writing in the image volume succeeded")
	}

	// 3. Removing the pod unmounts the volume; then the image can go.
	if err := e.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if err := e.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatal(err)
	}
	if left := mountsUnder(t, points...); len(left) > 0 {
		t.Errorf("image volume still mounted after the pod's removal: %v", left)
	}
	if err := e.is.RemoveImage(ctx, spec(imageID)); err != nil {
		t.Errorf("RemoveImage once no volume uses it: %v", err)
	}
}

// imageVolumeMountPoints reads the host mount points of a container's
// image volumes from its verbose status.
func imageVolumeMountPoints(t *testing.T, e *runcEnv, ctrID string) []string {
	t.Helper()
	st, err := e.rs.ContainerStatus(context.Background(), ctrID, true)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		ImageVolumes []struct {
			MountPoint string `json:"mount_point"`
		} `json:"imageVolumes"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil {
		t.Fatalf("verbose container info %q: %v", st.Info["info"], err)
	}
	var out []string
	for _, v := range info.ImageVolumes {
		out = append(out, v.MountPoint)
	}
	return out
}

// imageVolumeExec runs cmd in the container and returns its stdout; a VM
// under TCG gets 30 s.
func imageVolumeExec(t *testing.T, e *runcEnv, ctrID string, cmd ...string) string {
	t.Helper()
	out, stderr, err := e.rs.ExecSync(context.Background(), ctrID, cmd, 30*time.Second)
	if err != nil {
		t.Errorf("exec %v: %v (stderr %q)", cmd, err, stderr)
	}
	return string(out)
}

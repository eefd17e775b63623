package oci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crivm/crivm/internal/errdefs"
)

// ResolveUser resolves an image-style user string against the rootfs's
// /etc/passwd and /etc/group: "", "uid", "uid:gid", "name", "name:group" and
// the mixed forms. A numeric user need not exist in /etc/passwd (its group
// is then 0 unless given); a user or group name must exist, else the error
// is InvalidArgument. additionalGids are the groups /etc/group lists the
// user as a member of, without the primary group, in file order; they are
// known only when the user has a passwd entry.
//
// Files are read through an os.Root at rootfs, so symlinks in the image
// cannot point outside it. Missing files count as empty.
func ResolveUser(rootfs, user string) (uid, gid uint32, additionalGids []uint32, err error) {
	userPart, groupPart, hasGroup := strings.Cut(user, ":")
	if hasGroup && groupPart == "" {
		return 0, 0, nil, errdefs.InvalidArgument("user %q names an empty group", user)
	}
	if userPart == "" {
		if hasGroup {
			return 0, 0, nil, errdefs.InvalidArgument("user %q names no user", user)
		}
		userPart = "0"
	}

	passwd, err := readPasswd(rootfs)
	if err != nil {
		return 0, 0, nil, err
	}
	var name string
	matched := false
	if n, numeric, err := parseID(userPart); err != nil {
		return 0, 0, nil, err
	} else if numeric {
		uid = n
		for _, e := range passwd {
			if e.id == uid {
				name, gid, matched = e.name, e.gid, true
				break
			}
		}
	} else {
		for _, e := range passwd {
			if e.name == userPart {
				uid, name, gid, matched = e.id, e.name, e.gid, true
				break
			}
		}
		if !matched {
			return 0, 0, nil, errdefs.InvalidArgument("user %q not found in the image's /etc/passwd", userPart)
		}
	}

	if !hasGroup && !matched {
		return uid, 0, nil, nil
	}
	groups, err := readGroup(rootfs)
	if err != nil {
		return 0, 0, nil, err
	}
	if hasGroup {
		n, numeric, err := parseID(groupPart)
		if err != nil {
			return 0, 0, nil, err
		}
		if numeric {
			gid = n
		} else {
			i := slices.IndexFunc(groups, func(g groupEntry) bool { return g.name == groupPart })
			if i < 0 {
				return 0, 0, nil, errdefs.InvalidArgument("group %q not found in the image's /etc/group", groupPart)
			}
			gid = groups[i].id
		}
	}
	if matched {
		for _, g := range groups {
			if g.id != gid && slices.Contains(g.members, name) && !slices.Contains(additionalGids, g.id) {
				additionalGids = append(additionalGids, g.id)
			}
		}
	}
	return uid, gid, additionalGids, nil
}

// userRequest is the user part of a CRI security context.
type userRequest struct {
	runAsUser, runAsGroup *runtimeapi.Int64Value
	runAsUsername         string
	supplemental          []int64
	// strict is SupplementalGroupsPolicy Strict: /etc/group memberships are
	// not added.
	strict    bool
	imageUser string
}

// resolveProcessUser applies the CRI user rules: run_as_username, else
// run_as_user, else the image's User; run_as_group replaces the primary
// group. The supplementary groups are the primary group, then (policy
// Merge, the default) the groups /etc/group lists the user in, then
// supplemental_groups (which carry the pod's fsGroup); policy Strict leaves
// out /etc/group.
func resolveProcessUser(rootfs string, r userRequest) (specs.User, error) {
	if r.runAsGroup != nil && r.runAsUser == nil && r.runAsUsername == "" {
		return specs.User{}, errdefs.InvalidArgument("run_as_group is set without run_as_user or run_as_username")
	}
	userStr := r.imageUser
	if r.runAsUser != nil {
		if _, err := toID(r.runAsUser.GetValue(), "run_as_user"); err != nil {
			return specs.User{}, err
		}
		userStr = strconv.FormatInt(r.runAsUser.GetValue(), 10)
	}
	if r.runAsUsername != "" {
		if strings.Contains(r.runAsUsername, ":") {
			return specs.User{}, errdefs.InvalidArgument("run_as_username %q contains ':'", r.runAsUsername)
		}
		userStr = r.runAsUsername
	}
	uid, gid, groups, err := ResolveUser(rootfs, userStr)
	if err != nil {
		return specs.User{}, err
	}
	if r.runAsUsername != "" && r.runAsUser != nil && int64(uid) != r.runAsUser.GetValue() {
		return specs.User{}, errdefs.InvalidArgument("run_as_username %q is uid %d in the image, but run_as_user is %d",
			r.runAsUsername, uid, r.runAsUser.GetValue())
	}
	if r.runAsGroup != nil {
		if gid, err = toID(r.runAsGroup.GetValue(), "run_as_group"); err != nil {
			return specs.User{}, err
		}
	}
	if r.strict {
		groups = nil
	}
	// The primary group leads the supplementary groups, as containerd sets
	// them: ContainerStatus.user reports this list, and the kubelet shows
	// it with the primary group in it.
	groups = append([]uint32{gid}, slices.DeleteFunc(groups, func(g uint32) bool { return g == gid })...)
	for _, g := range r.supplemental {
		id, err := toID(g, "supplemental group")
		if err != nil {
			return specs.User{}, err
		}
		if !slices.Contains(groups, id) {
			groups = append(groups, id)
		}
	}
	return specs.User{UID: uid, GID: gid, AdditionalGids: groups}, nil
}

func toID(v int64, what string) (uint32, error) {
	if v < 0 || v >= math.MaxUint32 {
		return 0, errdefs.InvalidArgument("%s %d is not a valid id", what, v)
	}
	return uint32(v), nil
}

// parseID reports whether s is a decimal id, and the id if so.
func parseID(s string) (uint32, bool, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return 0, false, errdefs.InvalidArgument("id %q is out of range", s)
	}
	return uint32(n), true, nil
}

type passwdEntry struct {
	name    string
	id, gid uint32
}

type groupEntry struct {
	name    string
	id      uint32
	members []string
}

func readPasswd(rootfs string) ([]passwdEntry, error) {
	data, err := readRootfsFile(rootfs, "etc/passwd")
	if err != nil {
		return nil, fmt.Errorf("reading /etc/passwd: %w", err)
	}
	var out []passwdEntry
	for _, f := range colonLines(data) {
		if len(f) < 4 {
			continue
		}
		uid, ok1, _ := parseID(f[2])
		gid, ok2, _ := parseID(f[3])
		if ok1 && ok2 {
			out = append(out, passwdEntry{name: f[0], id: uid, gid: gid})
		}
	}
	return out, nil
}

func readGroup(rootfs string) ([]groupEntry, error) {
	data, err := readRootfsFile(rootfs, "etc/group")
	if err != nil {
		return nil, fmt.Errorf("reading /etc/group: %w", err)
	}
	var out []groupEntry
	for _, f := range colonLines(data) {
		if len(f) < 3 {
			continue
		}
		gid, ok, _ := parseID(f[2])
		if !ok {
			continue
		}
		e := groupEntry{name: f[0], id: gid}
		if len(f) > 3 && f[3] != "" {
			e.members = strings.Split(f[3], ",")
		}
		out = append(out, e)
	}
	return out, nil
}

// colonLines splits a passwd-style file into fields, skipping blank lines
// and comments.
func colonLines(data []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// maxRootfsFile bounds what readRootfsFile reads; passwd and group files
// larger than this are not plausible.
const maxRootfsFile = 16 << 20

// readRootfsFile reads name (relative to rootfs) without leaving rootfs. A
// missing rootfs or file reads as empty. An absolute symlink as the last
// component is resolved against rootfs, as it would be inside the
// container; os.Root refuses absolute symlinks elsewhere in the path.
func readRootfsFile(rootfs, name string) ([]byte, error) {
	if rootfs == "" {
		return nil, nil
	}
	root, err := os.OpenRoot(rootfs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()

	for hops := 0; ; hops++ {
		if hops == 40 {
			return nil, fmt.Errorf("%s: too many levels of symbolic links", name)
		}
		fi, err := root.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			break
		}
		target, err := root.Readlink(name)
		if err != nil {
			return nil, err
		}
		// Resolve as the container would: from its root, never above it.
		if !path.IsAbs(target) {
			target = path.Join("/", path.Dir(name), target)
		}
		name = strings.TrimPrefix(path.Clean(target), "/")
		if name == "" {
			name = "."
		}
	}
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRootfsFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRootfsFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxRootfsFile)
	}
	return data, nil
}

package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
)

func TestIsNamed(t *testing.T) {
	named := []string{strings.Repeat("a", 64), strings.Repeat("b", 64)}
	for _, tt := range []struct {
		name string
		id   string
		want bool
	}{
		{"a recorded ID", strings.Repeat("a", 64), true},
		{"the first 32 of one", strings.Repeat("b", 32), true},
		{"too short to tell", strings.Repeat("c", 31), true},
		{"empty", "", true},
		{"no record's", strings.Repeat("c", 64), false},
		{"the first 32 of no record's", strings.Repeat("c", 32), false},
		{"a recorded ID and more", strings.Repeat("a", 65), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := isNamed(named, tt.id); got != tt.want {
				t.Errorf("isNamed(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

// fakeOwner holds ids and records what it is asked to release.
type fakeOwner struct {
	held     []string
	fail     map[string]bool
	err      error // of Owned
	released []string
}

func (f *fakeOwner) Owned(context.Context) ([]handlers.Owned, error) {
	if f.err != nil {
		return nil, f.err
	}
	var out []handlers.Owned
	for _, id := range f.held {
		out = append(out, handlers.Owned{ID: id, Found: "thing " + id[:min(4, len(id))]})
	}
	return out, nil
}

func (f *fakeOwner) ReleaseOrphan(_ context.Context, id string) error {
	f.released = append(f.released, id)
	if f.fail[id] {
		return errors.New("busy")
	}
	return nil
}

// TestSweepOrphans: of what owners hold, exactly what no record, intent
// or image volume names is released, each logged with what was found; a
// failed release is logged and holds back what later owners hold for the
// same ID, and only that; an owner that cannot list what it holds stops
// the sweep.
func TestSweepOrphans(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id := func(c string) string { return strings.Repeat(c, 64) }
	sb, ctr, vol, pendingSb, pendingCtr, pendingVol := id("1"), id("2"), id("3"), id("4"), id("5"), id("6")
	if err := st.Sandboxes.Add(&store.Sandbox{ID: sb, Name: "sb"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Containers.Add(&store.Container{ID: ctr, Name: "ctr", SandboxID: sb, ImageVolumes: []store.ImageVolume{{StorageID: vol}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.PendingSandboxes.Add(&store.Sandbox{ID: pendingSb, Name: "psb"}); err != nil {
		t.Fatal(err)
	}
	if err := st.PendingContainers.Add(&store.Container{ID: pendingCtr, Name: "pctr", ImageVolumes: []store.ImageVolume{{StorageID: pendingVol}}}); err != nil {
		t.Fatal(err)
	}
	orphan, orphanKey, failing := id("a"), id("b")[:32], id("c")
	first := &fakeOwner{held: []string{sb, sb[:32], ctr, vol, orphanKey, failing}, fail: map[string]bool{failing: true}}
	second := &fakeOwner{held: []string{pendingSb, pendingCtr, pendingVol, pendingSb[:32], orphan, "abc", failing[:32]}}
	broken := &fakeOwner{err: errors.New("unreadable")}
	last := &fakeOwner{held: []string{id("d")}}

	var buf bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&buf, nil)))
	sweepOrphans(ctx, st, []orphanOwner{{"first", first}, {"second", second}, {"broken", broken}, {"last", last}})

	if want := []string{orphanKey, failing}; !slices.Equal(first.released, want) {
		t.Errorf("first owner released %q, want %q", first.released, want)
	}
	if want := []string{orphan}; !slices.Equal(second.released, want) {
		t.Errorf("second owner released %q, want %q", second.released, want)
	}
	if len(last.released) > 0 {
		t.Errorf("the owner after one that could not list released %q", last.released)
	}
	logs := buf.String()
	for _, want := range []string{
		`level=INFO msg="released an orphan no record names" owner=first id=` + orphanKey + ` found="thing bbbb"`,
		`level=WARN msg="an orphan no record names could not be released: retrying at the next start" owner=first id=` + failing + ` found="thing cccc" err=busy`,
		`level=INFO msg="released an orphan no record names" owner=second id=` + orphan,
		`level=WARN msg="an orphan no record names waits for the next start: an earlier part of it could not be released" owner=second id=` + failing[:32],
		`level=WARN msg="listing what broken holds: its orphans and those of the owners after it wait for the next start" err=unreadable`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

// TestPodDirOrphans: the pods dir's entries named by sandbox IDs are
// listed; a release removes the pod's dir and nothing else.
func TestPodDirOrphans(t *testing.T) {
	ctx := context.Background()
	p := podDirOrphans{t.TempDir()}
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for _, d := range []string{a, b, "not-a-pod", strings.Repeat("c", 32)} {
		if err := os.MkdirAll(filepath.Join(p.dir, d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(p.dir, strings.Repeat("d", 64)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	owned, err := p.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(owned) != 2 || owned[0].ID != a || owned[1].ID != b {
		t.Fatalf("Owned: %+v, want %s and %s", owned, a, b)
	}
	if err := p.ReleaseOrphan(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(p.dir, a)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod dir left (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(p.dir, b)); err != nil {
		t.Errorf("another pod's dir: %v", err)
	}
	if err := p.ReleaseOrphan(ctx, "../"+b); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("releasing a path: %v, want InvalidArgument", err)
	}
}

// TestNetworkOrphans: network namespace files live in a dir other
// daemons share, so one is listed and released only when this daemon's
// own state (here its pod dir) names its sandbox.
func TestNetworkOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: unpinning a namespace file unmounts it")
	}
	ctx := context.Background()
	n := networkOrphans{net: netns.NewManager(netns.Options{CacheDir: t.TempDir()}), nsDir: t.TempDir(), podsDir: t.TempDir()}
	mine, others := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for _, id := range []string{mine, others} {
		// A stand-in for a pinned namespace: the file is what names it.
		if err := os.WriteFile(netnsPathOf(n.nsDir, id), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(n.podsDir, mine), 0o755); err != nil {
		t.Fatal(err)
	}
	owned, err := n.Owned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "netns " + netnsPathOf(n.nsDir, mine); len(owned) != 1 || owned[0].ID != mine || owned[0].Found != want {
		t.Errorf("Owned: %+v, want %s with %s", owned, mine, want)
	}
	if err := n.ReleaseOrphan(ctx, others); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("releasing another daemon's namespace: %v, want FailedPrecondition", err)
	}
	if _, err := os.Lstat(netnsPathOf(n.nsDir, others)); err != nil {
		t.Errorf("another daemon's namespace file: %v", err)
	}
	if err := n.ReleaseOrphan(ctx, mine); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(netnsPathOf(n.nsDir, mine)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file left (%v)", err)
	}
}

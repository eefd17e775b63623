package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/crivm/crivm/test/fixtures"
	"github.com/crivm/crivm/test/testutil"
)

func images(t *testing.T) map[string]fixtures.Image {
	t.Helper()
	if _, err := os.Stat(fixtures.BusyboxPath); err != nil {
		t.Skipf("busybox-static not installed (%v): run make deps", err)
	}
	testutil.RequiresBinary(t, "gcc")
	imgs, err := fixtures.BuildAll(fixtures.DefaultCacheDir())
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

// inspect runs skopeo inspect against the registry with extra flags
// (--creds or --no-creds) and returns the manifest digest it reports.
func inspect(t *testing.T, ref string, flags ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--insecure-policy", "inspect", "--tls-verify=false"}, flags...)
	args = append(args, "docker://"+ref)
	out, err := exec.CommandContext(ctx, "skopeo", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", errors.New(strings.TrimSpace(string(ee.Stderr)))
		}
		return "", err
	}
	var v struct{ Digest string }
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("decoding skopeo inspect output: %v\n%s", err, out)
	}
	return v.Digest, nil
}

func TestConfigAndHtpasswd(t *testing.T) {
	dir := t.TempDir()
	users := map[string]string{"alice": "s3cret", "bob": "pa ss:word"}
	p := filepath.Join(dir, "htpasswd")
	if err := writeHtpasswd(p, users); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("htpasswd has %d lines:\n%s", len(lines), b)
	}
	for i, u := range []string{"alice", "bob"} {
		name, hash, _ := strings.Cut(lines[i], ":")
		if name != u {
			t.Errorf("line %d is for %q, want %q", i, name, u)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(users[u])); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if err := writeHtpasswd(p, map[string]string{"a:b": "x"}); err == nil {
		t.Errorf("user name with a colon accepted")
	}

	for _, tc := range []struct {
		htpasswd string
		want     []string
		not      []string
	}{
		{"", []string{"addr: \"127.0.0.1:5000\"", "level: warn", "rootdirectory: \"/s\""}, []string{"auth:"}},
		{"/h", []string{"htpasswd:", "path: \"/h\""}, nil},
	} {
		c := config("/s", "127.0.0.1:5000", tc.htpasswd)
		for _, w := range tc.want {
			if !strings.Contains(c, w) {
				t.Errorf("config lacks %q:\n%s", w, c)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(c, n) {
				t.Errorf("config has %q:\n%s", n, c)
			}
		}
	}
}

func TestPushAndInspect(t *testing.T) {
	testutil.RequiresBinary(t, "skopeo")
	imgs := images(t)
	start := time.Now()
	r := Start(t, Options{})
	t.Logf("registry start: %v (%s)", time.Since(start), r.Host)

	bb := imgs[fixtures.NameBusybox]
	start = time.Now()
	d, err := r.Push(bb, "busybox", "latest")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push busybox (%d bytes): %v", bb.Size, time.Since(start))
	if d != bb.ManifestDigest.String() {
		t.Errorf("Push returned %s, fixture manifest is %s", d, bb.ManifestDigest)
	}
	got, err := inspect(t, r.Ref("busybox", "latest"), "--no-creds")
	if err != nil {
		t.Fatal(err)
	}
	if got != bb.ManifestDigest.String() {
		t.Errorf("skopeo inspect digest %s, want %s", got, bb.ManifestDigest)
	}
	if got, err := r.ManifestDigest("busybox", "latest"); err != nil || got != d {
		t.Errorf("ManifestDigest = %s, %v; want %s", got, err, d)
	}

	start = time.Now()
	digests := r.PushAll(t, imgs)
	t.Logf("PushAll (%d images, busybox layer already there): %v", len(imgs), time.Since(start))
	for name, img := range imgs {
		if digests[name] != img.ManifestDigest.String() {
			t.Errorf("%s pushed as %s, want %s", name, digests[name], img.ManifestDigest)
		}
		if got, err := r.ManifestDigest(name, img.Tag); err != nil || got != digests[name] {
			t.Errorf("%s in registry: %s, %v; want %s", name, got, err, digests[name])
		}
	}
}

func TestHtpasswd(t *testing.T) {
	testutil.RequiresBinary(t, "skopeo")
	imgs := images(t)
	users := map[string]string{"alice": "s3cret", "bob": "hunter2"}
	r := Start(t, Options{Htpasswd: users})
	if r.Creds() != "alice:s3cret" {
		t.Errorf("Creds() = %q, want the first user's", r.Creds())
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for _, tc := range []struct {
		name       string
		user, pass string
		want       int
	}{
		{"anonymous", "", "", http.StatusUnauthorized},
		{"wrong password", "alice", "nope", http.StatusUnauthorized},
		{"unknown user", "mallory", "s3cret", http.StatusUnauthorized},
		{"alice", "alice", "s3cret", http.StatusOK},
		{"bob", "bob", "hunter2", http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /v2/ as %s: %s, want %d", tc.name, resp.Status, tc.want)
		}
		if tc.want == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("GET /v2/ as %s: WWW-Authenticate %q, want Basic", tc.name, resp.Header.Get("WWW-Authenticate"))
		}
	}

	bb := imgs[fixtures.NameBusybox]
	if _, err := r.Push(bb, "busybox", "latest"); err != nil {
		t.Fatal(err)
	}
	ref := r.Ref("busybox", "latest")
	for _, tc := range []struct {
		name  string
		flags []string
		ok    bool
	}{
		{"alice", []string{"--creds", "alice:s3cret"}, true},
		{"bob", []string{"--creds", "bob:hunter2"}, true},
		{"wrong password", []string{"--creds", "alice:wrong"}, false},
		{"no creds", []string{"--no-creds"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := inspect(t, ref, tc.flags...)
			switch {
			case tc.ok && err != nil:
				t.Errorf("skopeo inspect: %v", err)
			case tc.ok && d != bb.ManifestDigest.String():
				t.Errorf("digest %s, want %s", d, bb.ManifestDigest)
			case !tc.ok && err == nil:
				t.Errorf("skopeo inspect succeeded, want an auth failure")
			case !tc.ok && !strings.Contains(strings.ToLower(err.Error()), "unauthorized"):
				t.Errorf("error %q does not say unauthorized", err)
			}
		})
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	var pid int
	t.Run("run", func(t *testing.T) {
		r := Start(t, Options{})
		pid = r.Pid()
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("registry pid %d not running: %v", pid, err)
		}
	})
	if pid == 0 {
		t.Skip("registry did not start")
	}
	// Cleanup killed and reaped it: the pid is gone, not a zombie.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("registry pid %d after cleanup: kill(0) = %v, want ESRCH", pid, err)
	}
}

// BenchmarkPushBig pushes a 100 MiB fixture into a fresh registry per
// iteration (go test -run '^$' -bench PushBig ./test/registry).
func BenchmarkPushBig(b *testing.B) {
	testutil.RequiresBinary(b, "skopeo")
	if _, err := os.Stat(fixtures.BusyboxPath); err != nil {
		b.Skipf("busybox-static not installed (%v): run make deps", err)
	}
	start := time.Now()
	img, err := fixtures.Big(fixtures.DefaultCacheDir(), 100)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("fixtures.Big(100): %v, %d bytes", time.Since(start), img.Size)
	b.SetBytes(img.Size)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := Start(b, Options{})
		b.StartTimer()
		if _, err := r.Push(img, "big", "latest"); err != nil {
			b.Fatal(err)
		}
	}
}

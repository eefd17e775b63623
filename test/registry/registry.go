// Package registry runs a real Distribution registry (Debian's
// docker-registry, v2.8) on loopback for tests, and pushes fixture images
// into it with skopeo.
package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/crivm/crivm/test/fixtures"
)

// Binary is the registry program; Start skips the test when it is missing.
var Binary = "/usr/bin/docker-registry"

// StartTimeout bounds how long Start waits for GET /v2/ to answer.
var StartTimeout = 15 * time.Second

// Options configure a registry.
type Options struct {
	// Htpasswd, when set, turns on htpasswd (basic) auth with these
	// user -> password pairs. Push uses the first user in sorted order.
	Htpasswd map[string]string
}

// Registry is a running registry, stopped by the test's cleanup.
type Registry struct {
	Host string // "127.0.0.1:PORT"
	Dir  string // storage root

	user, password string
	cmd            *exec.Cmd
	done           chan struct{}
	waitErr        error
	log            string
}

// Start runs Binary serve with its own config on a free loopback port and
// returns once GET /v2/ answers (200, or 401 with auth). It skips the test
// when the binary is missing and fails it when the registry does not come
// up. The registry is killed and reaped in t.Cleanup.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Skipf("docker-registry not installed: run make deps (%v)", err)
	}
	dir := t.TempDir()
	r := &Registry{Dir: filepath.Join(dir, "storage"), log: filepath.Join(dir, "registry.log")}
	var htpasswd string
	if len(opts.Htpasswd) > 0 {
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := writeHtpasswd(htpasswd, opts.Htpasswd); err != nil {
			t.Fatal(err)
		}
		users := make([]string, 0, len(opts.Htpasswd))
		for u := range opts.Htpasswd {
			users = append(users, u)
		}
		sort.Strings(users)
		r.user, r.password = users[0], opts.Htpasswd[users[0]]
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		r.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(config(r.Dir, r.Host, htpasswd)), 0o600); err != nil {
			t.Fatalf("writing registry config: %v", err)
		}
		lastErr = r.start(cfg)
		if lastErr == nil {
			t.Cleanup(r.stop)
			return r
		}
		r.stop()
		// Another process took the port between freePort and the bind: retry.
		if !strings.Contains(lastErr.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("starting registry: %v", lastErr)
	return nil
}

func config(storage, addr, htpasswd string) string {
	q := strconv.Quote // YAML double-quoted strings accept Go's quoting of these paths
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: crivm-test-registry
health:
  storagedriver:
    enabled: false
`, q(storage), q(addr))
	if htpasswd != "" {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: crivm-test
    path: %s
`, q(htpasswd))
	}
	return b.String()
}

// writeHtpasswd writes bcrypt entries, the only kind Distribution accepts.
func writeHtpasswd(path string, users map[string]string) error {
	names := make([]string, 0, len(users))
	for u := range users {
		if u == "" || strings.ContainsAny(u, ":\n") {
			return fmt.Errorf("writing htpasswd: bad user name %q", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, u := range names {
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hashing password of %s: %w", u, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing htpasswd: %w", err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (r *Registry) start(cfg string) error {
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("creating registry log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(Binary, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv("REGISTRY_")
	// The kernel kills the registry if the test process dies without its
	// cleanup (a go test timeout). Pdeathsig fires when the *thread* that
	// forked exits, so fork from a locked thread that lives until the
	// registry is reaped: Start and Wait run on it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	r.done = make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		defer close(r.done)
		if err := cmd.Start(); err != nil {
			r.waitErr = err
			started <- err
			return
		}
		started <- nil
		r.waitErr = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("running %s: %w", Binary, err)
	}
	r.cmd = cmd

	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(StartTimeout)
	for {
		select {
		case <-r.done:
			return fmt.Errorf("registry exited: %v\n%s", r.waitErr, r.Log())
		default:
		}
		resp, err := client.Get(r.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry not ready after %v: %v\n%s", StartTimeout, err, r.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills the registry and reaps it.
func (r *Registry) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Kill()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		// A process that survives SIGKILL for 10 s is stuck in the kernel;
		// nothing more can be done from here.
	}
	r.cmd = nil
}

// Pid is the registry's process id (0 once stopped).
func (r *Registry) Pid() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

func cleanEnv(dropPrefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, dropPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

// Log returns what the registry wrote to stdout and stderr.
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.log)
	return string(b)
}

// URL is the registry's base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.Host }

// Ref returns "HOST/name:tag", a docker reference into this registry.
func (r *Registry) Ref(name, tag string) string { return r.Host + "/" + name + ":" + tag }

// Creds returns "user:password" of the user Push uses, or "" without auth.
func (r *Registry) Creds() string {
	if r.user == "" {
		return ""
	}
	return r.user + ":" + r.password
}

// PushTimeout bounds one skopeo copy.
var PushTimeout = 5 * time.Minute

var preserveDigests = sync.OnceValue(func() bool {
	out, _ := exec.Command("skopeo", "copy", "--help").CombinedOutput()
	return bytes.Contains(out, []byte("--preserve-digests"))
})

// Push copies img from its OCI layout to HOST/repo:tag with skopeo and
// returns the manifest digest the registry stored. With --preserve-digests
// (skopeo >= 1.9) that is img.ManifestDigest; Push fails if it is not.
func (r *Registry) Push(img fixtures.Image, repo, tag string) (string, error) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		return "", fmt.Errorf("pushing %s: skopeo not installed: run make deps: %w", img.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), PushTimeout)
	defer cancel()
	df, err := os.CreateTemp("", "crivm-push-digest-")
	if err != nil {
		return "", fmt.Errorf("pushing %s: %w", img.Name, err)
	}
	df.Close()
	defer os.Remove(df.Name())
	args := []string{"--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", df.Name()}
	preserve := preserveDigests()
	if preserve {
		args = append(args, "--preserve-digests")
	}
	args = append(args, r.destCreds()...)
	args = append(args, img.OCIRef(), "docker://"+r.Ref(repo, tag))
	cmd := exec.CommandContext(ctx, skopeo, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pushing %s (skopeo %s): %w\n%s", img.Name, strings.Join(args, " "), err, out)
	}
	b, err := os.ReadFile(df.Name())
	if err != nil {
		return "", fmt.Errorf("reading pushed digest: %w", err)
	}
	d := strings.TrimSpace(string(b))
	if d == "" {
		return "", errors.New("pushing " + img.Name + ": skopeo wrote no digest")
	}
	if preserve && d != img.ManifestDigest.String() {
		return d, fmt.Errorf("pushing %s: registry has manifest %s, fixture is %s", img.Name, d, img.ManifestDigest)
	}
	return d, nil
}

func (r *Registry) destCreds() []string {
	if c := r.Creds(); c != "" {
		return []string{"--dest-creds", c}
	}
	// Never pick up the host's auth.json.
	return []string{"--dest-no-creds"}
}

// PushAll pushes every image to repository img.Name (its key in images) with
// tag img.Tag, failing the test on error, and returns name -> manifest
// digest. Pull them by r.Ref(name, fixtures.Tag).
func (r *Registry) PushAll(t testing.TB, images map[string]fixtures.Image) map[string]string {
	t.Helper()
	names := make([]string, 0, len(images))
	for n := range images {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]string, len(images))
	for _, n := range names {
		img := images[n]
		d, err := r.Push(img, n, img.Tag)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = d
	}
	return out
}

// ManifestDigest asks the registry (HEAD /v2/repo/manifests/ref, with the
// Push user's credentials) for the digest of a manifest.
func (r *Registry) ManifestDigest(repo, ref string) (string, error) {
	req, err := http.NewRequest(http.MethodHead, r.URL()+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return "", fmt.Errorf("asking for manifest: %w", err)
	}
	req.Header.Set("Accept", strings.Join([]string{
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
	}, ", "))
	if r.user != "" {
		req.SetBasicAuth(r.user, r.password)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("asking for manifest: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("asking for manifest %s:%s: %s", repo, ref, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"

	"github.com/crivm/crivm/internal/errdefs"
	"github.com/crivm/crivm/internal/log"
)

// Auth is the credential the kubelet passes with a pull.
type Auth struct {
	Username, Password string
	// Auth is base64("user:password"), as in a docker config.json.
	Auth          string
	IdentityToken string
	RegistryToken string
}

// PullResult names what a pull stored.
type PullResult struct {
	ID string // the image ID (64 hex)
	// Ref is the reference that succeeded, fully qualified.
	Ref string
	// RepoDigest is repository@manifest-digest.
	RepoDigest string
}

// Pull fetches ref into storage and returns the stored image. Concurrent
// pulls of the same reference share one download. Cancelling ctx abandons
// this caller's wait; the download stops when no caller waits any more, and
// a stopped download leaves no image behind.
func (s *Service) Pull(ctx context.Context, ref string, auth *Auth) (PullResult, error) {
	cands, err := s.pullCandidates(ref)
	if err != nil {
		return PullResult{}, err
	}
	sys, err := s.systemContext(auth)
	if err != nil {
		return PullResult{}, err
	}
	var errs []error
	for _, named := range cands {
		res, err := s.pulls.do(ctx, named.String(), func(pctx context.Context) (PullResult, error) {
			s.tracker.begin()
			res, err := s.pullOne(pctx, named, sys)
			s.tracker.end(context.WithoutCancel(pctx), err != nil, s.sweepOrphanLayers)
			return res, err
		})
		if err == nil {
			return res, nil
		}
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return PullResult{}, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return PullResult{}, errs[0]
	}
	return PullResult{}, errdefs.Newf(classOf(errs), "pulling %q: every search registry failed: %w", ref, errors.Join(errs...))
}

// classOf is NotFound only when every candidate was not found.
func classOf(errs []error) error {
	for _, e := range errs {
		if !errors.Is(e, errdefs.ErrNotFound) {
			return errdefs.ErrUnavailable
		}
	}
	return errdefs.ErrNotFound
}

func (s *Service) systemContext(auth *Auth) (*types.SystemContext, error) {
	sys := s.sys
	if auth == nil {
		return &sys, nil
	}
	user, pass := auth.Username, auth.Password
	if auth.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(auth.Auth)
		if err != nil {
			return nil, errdefs.InvalidArgument("decoding auth: %w", err)
		}
		var ok bool
		user, pass, ok = strings.Cut(string(dec), ":")
		if !ok {
			return nil, errdefs.InvalidArgument("auth is not base64 of user:password")
		}
	}
	if user != "" || pass != "" || auth.IdentityToken != "" {
		sys.DockerAuthConfig = &types.DockerAuthConfig{Username: user, Password: pass, IdentityToken: auth.IdentityToken}
	}
	sys.DockerBearerRegistryToken = auth.RegistryToken
	return &sys, nil
}

func (s *Service) pullOne(ctx context.Context, named reference.Named, sys *types.SystemContext) (PullResult, error) {
	l := log.G(ctx).With("image", named.String())
	registry := reference.Domain(named)
	if s.insecure(registry) {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	src, err := docker.NewReference(named)
	if err != nil {
		return PullResult{}, errdefs.InvalidArgument("referencing %s: %w", named, err)
	}
	dst, err := istorage.Transport.NewStoreReference(s.store, named, "")
	if err != nil {
		return PullResult{}, fmt.Errorf("referencing %s in storage: %w", named, err)
	}
	policy, err := signature.NewPolicyContext(&signature.Policy{
		Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()},
	})
	if err != nil {
		return PullResult{}, fmt.Errorf("creating signature policy: %w", err)
	}
	defer policy.Destroy()

	progress := make(chan types.ProgressProperties, 16)
	done := make(chan struct{})
	var downloaded uint64 // written by logProgress, read after done closes
	go logProgress(l, progress, done, &downloaded)
	start := time.Now()
	l.Info("pulling image", "registry", registry)
	mf, err := copy.Image(ctx, policy, dst, src, &copy.Options{
		SourceCtx:        sys,
		DestinationCtx:   sys,
		Progress:         progress,
		ProgressInterval: time.Second,
	})
	close(progress)
	<-done
	if err != nil {
		return PullResult{}, registryError(named, err)
	}
	img, err := istorage.Transport.GetStoreImage(s.store, dst)
	if err != nil {
		return PullResult{}, fmt.Errorf("finding pulled image %s: %w", named, err)
	}
	dgst, err := manifest.Digest(mf)
	if err != nil {
		return PullResult{}, fmt.Errorf("digesting manifest of %s: %w", named, err)
	}
	res := PullResult{ID: img.ID, Ref: named.String(), RepoDigest: named.Name() + "@" + dgst.String()}
	s.opts.Metrics.Pulled(downloaded, time.Since(start))
	l.Info("pulled image", "id", img.ID, "digest", dgst.String(), "bytes", downloaded, "duration", time.Since(start).Round(time.Millisecond))
	return res, nil
}

// logProgress reports each layer at info: its digest, bytes and duration.
// It adds the bytes of finished blobs to *total.
func logProgress(l interface {
	Info(string, ...any)
}, ch <-chan types.ProgressProperties, done chan<- struct{}, total *uint64) {
	defer close(done)
	started := map[string]time.Time{}
	for p := range ch {
		d := p.Artifact.Digest.String()
		switch p.Event {
		case types.ProgressEventNewArtifact:
			started[d] = time.Now()
			l.Info("pulling blob", "digest", d, "size", p.Artifact.Size)
		case types.ProgressEventRead:
			l.Info("pull progress", "digest", d, "bytes", p.Offset, "size", p.Artifact.Size)
		case types.ProgressEventDone:
			*total += p.Offset
			l.Info("pulled blob", "digest", d, "bytes", p.Offset, "duration", time.Since(started[d]).Round(time.Millisecond))
		case types.ProgressEventSkipped:
			l.Info("blob already present", "digest", d)
		}
	}
}

// registryError classifies a failed copy and names the registry, the
// reference and the HTTP status where there was one.
func registryError(named reference.Named, err error) error {
	registry := reference.Domain(named)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pulling %s: %w", named, err)
	}
	code := httpStatus(err)
	var class error = errdefs.ErrUnavailable
	switch code {
	case http.StatusNotFound:
		class = errdefs.ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		class = errdefs.ErrPermissionDenied
	case http.StatusTooManyRequests:
		class = errdefs.ErrResourceExhausted
	}
	if code != 0 {
		return errdefs.Newf(class, "pulling %s from registry %s: HTTP %d %s: %w", named, registry, code, http.StatusText(code), err)
	}
	var nerr net.Error
	var oerr *net.OpError
	if errors.As(err, &oerr) || errors.As(err, &nerr) {
		return errdefs.Newf(errdefs.ErrUnavailable, "pulling %s: registry %s unreachable: %w", named, registry, err)
	}
	return fmt.Errorf("pulling %s from registry %s: %w", named, registry, err)
}

// httpStatus digs the registry's HTTP status out of a containers/image error.
func httpStatus(err error) int {
	var unexpected docker.UnexpectedHTTPStatusError
	if errors.As(err, &unexpected) {
		return unexpected.StatusCode
	}
	var unauth docker.ErrUnauthorizedForCredentials
	if errors.As(err, &unauth) {
		return http.StatusUnauthorized
	}
	if errors.Is(err, docker.ErrTooManyRequests) {
		return http.StatusTooManyRequests
	}
	var ec errcode.Error
	if errors.As(err, &ec) {
		return ec.Code.Descriptor().HTTPStatusCode
	}
	var ecs errcode.Errors
	if errors.As(err, &ecs) && len(ecs) > 0 {
		if e, ok := ecs[0].(errcode.Error); ok {
			return e.Code.Descriptor().HTTPStatusCode
		}
	}
	var coder errcode.ErrorCoder
	if errors.As(err, &coder) {
		return coder.ErrorCode().Descriptor().HTTPStatusCode
	}
	return 0
}

// pullGroup shares one download among concurrent pulls of a reference. The
// download runs on a context that is cancelled when its last waiter leaves.
type pullGroup struct {
	mu    sync.Mutex
	calls map[string]*pullCall // guarded by mu
}

type pullCall struct {
	done    chan struct{}
	res     PullResult
	err     error
	waiters int // guarded by pullGroup.mu
	cancel  context.CancelFunc
}

func (g *pullGroup) do(ctx context.Context, key string, fn func(context.Context) (PullResult, error)) (PullResult, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*pullCall{}
	}
	c, ok := g.calls[key]
	if !ok {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &pullCall{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = c
		go func() {
			c.res, c.err = fn(pctx)
			cancel()
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			close(c.done)
		}()
	} else {
		log.G(ctx).Info("joining a pull already in progress", "image", key)
	}
	c.waiters++
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel()
		}
		g.mu.Unlock()
		return PullResult{}, fmt.Errorf("pulling %s: %w", key, ctx.Err())
	}
}

// Package server implements the CRI RuntimeService and ImageService, one
// file per RPC. RPC methods return domain errors (internal/errdefs); the
// interceptors in instrument.go log every call and turn those errors into
// gRPC statuses. An RPC whose issue has not landed is not defined here, so
// the embedded Unimplemented servers answer it with codes.Unimplemented.
package server

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/cri-streaming/pkg/streaming"

	"github.com/crivm/crivm/configs"
	"github.com/crivm/crivm/handlers"
	"github.com/crivm/crivm/image"
	"github.com/crivm/crivm/internal/metrics"
	"github.com/crivm/crivm/netns"
	"github.com/crivm/crivm/store"
	"github.com/crivm/crivm/trust"
)

// Deps are what the services need from the daemon. Config returns the
// current effective configuration; it changes only on SIGHUP reloads.
type Deps struct {
	Config func() *configs.Config
	Store  *store.Store
	Trust  *trust.Classifier
	Images *image.Service
	// Handlers are the configured handlers by name.
	Handlers handlers.Registry
	// Network runs CNI; NetNSDir is where pod network namespaces live.
	Network  *netns.Manager
	NetNSDir string
	// PodsDir holds each pod's files (resolv.conf, hosts, shm) under runroot.
	PodsDir string
	// Registry holds crivm's Prometheus metrics; verbose Status shows them.
	Registry *prometheus.Registry
	// Metrics records RPCs, pod starts and pulls into Registry.
	Metrics *metrics.Metrics
	// Version is crivm's semantic version (internal/version.Version),
	// reported as RuntimeVersion: the kubelet requires semver there.
	Version string
	// Logger is the daemon's logger; every RPC context carries a child of it.
	Logger *slog.Logger
}

// RuntimeService serves runtime.v1.RuntimeService.
type RuntimeService struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	deps Deps
	// locks serializes the RPCs that change one sandbox or container;
	// keys are IDs.
	locks  keyedMutex
	events eventBus
	// stopping holds the IDs of the sandboxes a stop is under way for
	// (stopSandbox): the end of their process is expected, not news.
	stopping sync.Map
	// podCIDR is the last UpdateRuntimeConfig's pod CIDR.
	podCIDR atomic.Pointer[string]
	// streaming serves exec, attach and port-forward. Set once by
	// SetStreaming before serving; read-only afterwards.
	streaming streaming.Server
	// podCPU holds each pod's last CPU sample (cpuSample, by sandbox ID),
	// for usage_nano_cores.
	podCPU sync.Map
}

// SetStreaming gives the service its streaming server. Call before serving.
func (s *RuntimeService) SetStreaming(ss streaming.Server) { s.streaming = ss }

// ImageService serves runtime.v1.ImageService.
type ImageService struct {
	runtimeapi.UnimplementedImageServiceServer
	deps Deps
}

var (
	_ runtimeapi.RuntimeServiceServer = (*RuntimeService)(nil)
	_ runtimeapi.ImageServiceServer   = (*ImageService)(nil)
)

// NewRuntimeService returns the runtime service; the daemon also hands it
// to the streaming server.
func NewRuntimeService(deps Deps) *RuntimeService {
	return &RuntimeService{deps: deps}
}

// New returns a gRPC server with both CRI services registered behind the
// instrumenting interceptors.
func New(deps Deps, rs *RuntimeService) *grpc.Server {
	in := instrument{base: deps.Logger, metrics: deps.Metrics}
	if in.base == nil {
		in.base = slog.Default()
	}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(in.unary),
		grpc.ChainStreamInterceptor(in.stream),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(16<<20),
	)
	runtimeapi.RegisterRuntimeServiceServer(gs, rs)
	runtimeapi.RegisterImageServiceServer(gs, &ImageService{deps: deps})
	return gs
}

# crivm: `make demo` and `make test` are the two commands on a fresh machine.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
TAGS    := containers_image_openpgp exclude_graphdriver_btrfs
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/crivm/crivm/internal/version.Version=$(VERSION)
GOFLAGS_BUILD := -tags "$(TAGS)" -ldflags "$(LDFLAGS)"

.PHONY: all deps build test unit e2e demo lint clean generate bench-pull bench-pods bench-peer bench-vm

all: build

deps:
	@scripts/deps.sh

# The agent is built stripped: it is re-executed as every VM container's
# init, and a smaller binary starts faster in an emulated guest (42 vs 60 ms
# under TCG) and makes a smaller initrd.
build:
	$(GO) build $(GOFLAGS_BUILD) -o bin/crivm ./cmd/crivm
	$(GO) build $(GOFLAGS_BUILD) -o bin/crivmctl ./cmd/crivmctl
	CGO_ENABLED=0 $(GO) build -tags "$(TAGS)" -ldflags "-s -w $(LDFLAGS)" -o bin/crivm-agent ./cmd/crivm-agent

# Every test: unit tests and e2e tests against the real daemon, under -race.
test: deps build lint
	CRIVM_BIN_DIR=$(CURDIR)/bin $(GO) test -race -count=1 -timeout 25m -tags "$(TAGS)" ./...

unit: build
	$(GO) test -race -count=1 -tags "$(TAGS)" $$($(GO) list ./... | grep -v /test/)

e2e: build
	CRIVM_BIN_DIR=$(CURDIR)/bin $(GO) test -count=1 -v -timeout 25m -tags "$(TAGS)" ./test/...

demo: deps build
	@scripts/demo.sh

# Image pull+unpack throughput against skopeo, same run (docs/performance.md).
bench-pull: deps build
	CRIVM_BIN_DIR=$(CURDIR)/bin $(GO) run -tags "$(TAGS)" ./test/bench/pull -n 5 -mib 100

# runc pod start/teardown/parallel/exec on a private crivm (docs/performance.md).
bench-pods: deps build
	CRIVM_BIN_DIR=$(CURDIR)/bin $(GO) run -tags "$(TAGS)" ./test/bench/podbench -n 20 -parallel 10 -steps

# crivm against Debian's containerd in one run (docs/performance.md).
bench-peer: deps build
	test/bench/peer-containerd.sh

# VM pod start against the bare-QEMU floor, per-VM PSS, 5 at once (docs/performance.md).
bench-vm: deps build
	CRIVM_BIN_DIR=$(CURDIR)/bin $(GO) run -tags "$(TAGS)" ./test/bench/vmbench -n 5 -parallel 5

# Regenerates the agent API (protoc; the plugins build from go.mod) and
# the seccomp syscall tables (the kernel headers of linux-libc-dev).
generate:
	$(GO) generate ./agentproxy/api ./agent/seccompbpf

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags "$(TAGS)" ./...

clean:
	rm -rf bin

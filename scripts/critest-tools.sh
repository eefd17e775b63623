#!/usr/bin/env bash
# Builds critest and crictl (cri-tools) from the Go module proxy into
# ${CRIVM_TOOLS_DIR:-/var/cache/crivm-tools}/cri-tools-$CRI_TOOLS_VERSION,
# in a scratch module outside the repository. Cached: a binary that exists is
# not rebuilt. Prints the directory holding both binaries on stdout.
set -euo pipefail

CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
TOOLS_DIR=${CRIVM_TOOLS_DIR:-/var/cache/crivm-tools}
out="$TOOLS_DIR/cri-tools-$CRI_TOOLS_VERSION"
export PATH=/usr/local/go/bin:$PATH
# The scratch module must not pick up the repository's go.work or flags.
export GOWORK=off GOFLAGS=-buildvcs=false

mkdir -p "$out"
if [[ ! -x "$out/critest" ]]; then
  echo "critest-tools: building critest $CRI_TOOLS_VERSION in $out/mod" >&2
  rm -rf "$out/mod"
  mkdir -p "$out/mod"
  (
    cd "$out/mod"
    go mod init critestbuild >/dev/null 2>&1
    go get -t "sigs.k8s.io/cri-tools/cmd/critest@$CRI_TOOLS_VERSION" >&2
    go test -c -o "$out/critest.tmp" sigs.k8s.io/cri-tools/cmd/critest >&2
  )
  mv "$out/critest.tmp" "$out/critest"
fi
if [[ ! -x "$out/crictl" ]]; then
  echo "critest-tools: building crictl $CRI_TOOLS_VERSION" >&2
  GOBIN="$out/gobin" go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION" >&2
  mv "$out/gobin/crictl" "$out/crictl"
  rmdir "$out/gobin" 2>/dev/null || true
fi
echo "$out"

#!/usr/bin/env bash
# Builds kube-apiserver, kubelet and kubectl v1.37.2 from the Go module proxy
# into $CRIVM_TOOLS_DIR/k8s-v1.37.2/bin (cached: nothing is rebuilt when the
# three binaries are there). k8s.io/kubernetes cannot be `go install`ed: its
# go.mod replaces ~33 staging modules with ./staging paths, so a scratch module
# outside any git work tree requires it with each staging module replaced by
# its published v0.37.2 (the recipe in HOST-FACTS.md).
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH
K8S_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
DIR=${CRIVM_TOOLS_DIR:-/var/cache/crivm-tools}/k8s-$K8S_VERSION
BIN=$DIR/bin
if [[ -x $BIN/kubelet && -x $BIN/kube-apiserver && -x $BIN/kubectl ]]; then
  echo "k8s-build: cached in $BIN"
  exit 0
fi
mkdir -p "$DIR/src" "$BIN"
cd "$DIR/src"
export GOFLAGS=-mod=mod GIT_CEILING_DIRECTORIES=$DIR
if [[ ! -f go.mod ]]; then
  go mod init k8sbuild >/dev/null 2>&1
  kmod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f $kmod ]] || { echo "k8s-build: no go.mod for k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$kmod" | awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
fi
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
for cmd in kubectl kube-apiserver kubelet; do
  [[ -x $BIN/$cmd ]] && continue
  start=$SECONDS
  go get "k8s.io/kubernetes/cmd/$cmd@$K8S_VERSION" >/dev/null
  CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$BIN/$cmd.tmp" "$BIN/$cmd"
  echo "k8s-build: $cmd built in $((SECONDS - start)) s"
done

#!/usr/bin/env bash
# Installs what crivm's build, tests and demo need on Debian 12. Idempotent:
# when every package is present it only checks and returns in about a second.
set -euo pipefail

PKGS=(
  runc conmon crun                       # runc handler
  qemu-system-x86 linux-image-amd64      # vm handler: QEMU and a guest kernel
  linux-source-6.1 bc bison flex libelf-dev   # crivm's own guest kernel (scripts/guest-kernel.sh)
  containernetworking-plugins iptables iproute2   # CNI bridge/host-local/portmap
  docker-registry skopeo umoci           # the test registry and image tools
  busybox-static                         # test images
  gcc libc6-dev                          # the static C pause and test helpers (internal/cbuild), cgo
  xz-utils zstd kmod ca-certificates git make
  systemd util-linux                     # a private systemd (PID 1 of its own namespaces) for the systemd cgroup driver tests
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The critest stand-in images need Debian's dynamic busybox (its shell runs
# external applets; busybox-static's runs them in-process). The package
# conflicts with busybox-static, so it is unpacked, not installed, into
# $CRIVM_TOOLS_DIR/busybox-deb (test/fixtures reads bin/busybox there).
TOOLS_DIR=${CRIVM_TOOLS_DIR:-/var/cache/crivm-tools}
if [[ ! -x "$TOOLS_DIR/busybox-deb/bin/busybox" ]]; then
  echo "deps: unpacking Debian's busybox package into $TOOLS_DIR/busybox-deb"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"   # apt's _apt user writes the download here
  if ! (cd "$tmp" && apt-get download busybox >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$tmp" && apt-get download busybox >/dev/null)
  fi
  mkdir -p "$TOOLS_DIR"
  rm -rf "$TOOLS_DIR/busybox-deb.tmp"
  dpkg-deb -x "$tmp"/busybox_*.deb "$TOOLS_DIR/busybox-deb.tmp"
  rm -rf "$tmp" "$TOOLS_DIR/busybox-deb"
  mv "$TOOLS_DIR/busybox-deb.tmp" "$TOOLS_DIR/busybox-deb"
fi

# The Debian docker-registry package starts a registry on :5000 through its
# service; the tests run their own on loopback, so stop the packaged one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

"$(dirname "$0")"/guest-kernel.sh

export PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { echo "deps: go not found (expected /usr/local/go/bin/go, Go 1.26)"; exit 1; }
go mod download
echo "deps: ok"

#!/usr/bin/env bash
# Installs what crivm's build, tests and demo need on Debian 12. Idempotent:
# when every package is present it only checks and returns in about a second.
set -euo pipefail

PKGS=(
  runc conmon crun                       # runc handler
  qemu-system-x86 linux-image-amd64      # vm handler: QEMU and a guest kernel
  containernetworking-plugins iptables iproute2   # CNI bridge/host-local/portmap
  docker-registry skopeo umoci           # the test registry and image tools
  busybox-static                         # test images
  libseccomp-dev gcc                     # static guest agent (cgo + libseccomp.a)
  xz-utils zstd kmod ca-certificates git make
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

# The Debian docker-registry package starts a registry on :5000 through its
# service; the tests run their own on loopback, so stop the packaged one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi

export PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { echo "deps: go not found (expected /usr/local/go/bin/go, Go 1.26)"; exit 1; }
go mod download
echo "deps: ok"

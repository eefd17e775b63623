#!/usr/bin/env bash
# Measures crivm and Debian's containerd side by side in one run (issue 7):
# installs containerd if missing, then runs test/bench/peer, which starts a
# loopback registry, crivm and containerd on private sockets, roots and CNI
# bridges, runs the same workloads against both, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH
if ! command -v containerd >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd >/dev/null
fi
make build >/dev/null
CRIVM_BIN_DIR=$PWD/bin go run -tags "containers_image_openpgp exclude_graphdriver_btrfs" ./test/bench/peer "$@"

#!/usr/bin/env bash
# `make node-e2e`: a one-node Kubernetes cluster on 127.0.0.1 (Debian's etcd,
# kube-apiserver and kubelet v1.37.2 built from the Go module proxy) against
# crivm, and the node scenarios for the runc and vm handlers
# (test/nodee2e, build tag nodee2e). Not part of `make test`: the kubelet
# build alone takes 8-14 minutes here (cached afterwards).
#
# Logs, configs and the report go to $NODE_E2E_ARTIFACTS (default a new
# /tmp/crivm-node-e2e-DATE). The report replaces the node-e2e section of
# docs/conformance.md unless NODE_E2E_DOCS=0. Exits with go test's status.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
TAGS="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_zfs grpcnotrace"
DOC=docs/conformance.md
BEGIN='<!-- node-e2e:begin -->'
END='<!-- node-e2e:end -->'

if ! dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed"; then
  echo "node-e2e: installing etcd-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

scripts/k8s-build.sh

# update_docs REPORT: replaces what is between the markers in $DOC with
# REPORT, or appends a marked section (creating $DOC if need be).
update_docs() {
  local report=$1
  [[ -f $DOC ]] || printf '# Conformance\n' > "$DOC"
  if grep -qxF "$BEGIN" "$DOC"; then
    awk -v b="$BEGIN" -v e="$END" -v r="$report" '
      $0 == b { print; while ((getline l < r) > 0) print l; skip = 1; next }
      $0 == e { skip = 0 }
      !skip { print }' "$DOC" > "$DOC.tmp"
    mv "$DOC.tmp" "$DOC"
  else
    { echo; echo "$BEGIN"; cat "$report"; echo "$END"; } >> "$DOC"
  fi
  echo "node-e2e: results written to $DOC"
}

art=${NODE_E2E_ARTIFACTS:-/tmp/crivm-node-e2e-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$art"
echo "node-e2e: logs, configs and the report in $art"
start=$SECONDS
set +e
CRIVM_BIN_DIR=$PWD/bin NODE_E2E_ARTIFACTS=$art NODE_E2E_REPORT=$art/report.md \
  go test -tags "$TAGS nodee2e" -v -count=1 -timeout 60m ./test/nodee2e/ 2>&1 | tee "$art/go-test.log"
rc=${PIPESTATUS[0]}
set -e
echo "node-e2e: go test exited $rc after $((SECONDS - start)) s"
if [[ -s $art/report.md ]]; then
  sed -n '/^| # |/,/^$/p' "$art/report.md"
  if [[ ${NODE_E2E_DOCS:-1} != 0 ]]; then
    update_docs "$art/report.md"
  fi
else
  echo "node-e2e: no report (see $art/go-test.log)"
fi
exit "$rc"

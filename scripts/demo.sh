#!/usr/bin/env bash
# make demo: start crivm with the embedded default config and run one trusted
# pod (runc) and one untrusted pod (a VM), showing each one's output and the
# handler it got.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

BIN=$PWD/bin
SOCK=/run/crivm/crivm.sock
LOG=/tmp/crivm-demo.log
export CONTAINER_RUNTIME_ENDPOINT=unix://$SOCK
CTL="$BIN/crivmctl"
TAGS="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_zfs grpcnotrace"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf /tmp/crivm-demo
if [ -S "$SOCK" ] && "$CTL" version >/dev/null 2>&1; then
  echo "demo: a crivm already serves $SOCK; stop it first" >&2
  exit 1
fi

say "crivm check: what this host supports"
"$BIN/crivm" --config /dev/null --config-dir /dev/null check

say "network: a bridge CNI config for pods (only if /etc/cni/net.d has none)"
mkdir -p /etc/cni/net.d
if ! ls /etc/cni/net.d/*.conf* >/dev/null 2>&1; then
  cp test/demo/10-crivm-demo.conflist /etc/cni/net.d/
  echo "installed /etc/cni/net.d/10-crivm-demo.conflist (bridge crivm0, 10.89.0.0/24)"
else
  ls /etc/cni/net.d/
fi

say "images: this machine has no route to registry.k8s.io or docker.io; seeding crivm's storage from local OCI layouts"
go run -tags "$TAGS" ./test/demo/seed || exit 1

say "starting crivm with the embedded default config (log: $LOG)"
"$BIN/crivm" --config /dev/null --config-dir /dev/null >"$LOG" 2>&1 &
PID=$!
PODS=()
cleanup() {
  for p in "${PODS[@]}"; do "$CTL" rmp "$p" >/dev/null 2>&1; done
  kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
"$CTL" version || { cat "$LOG"; exit 1; }

run_pod() { # kind pod-json
  local kind=$1 pod=$2
  say "$kind pod: the trust classifier's verdict"
  "$BIN/crivm" --config /dev/null --config-dir /dev/null trust explain --pod "$pod"
  say "$kind pod: crivmctl run"
  local out
  if out=$("$CTL" run test/demo/container.json "$pod" 2>&1); then
    local ctr=$out
    sleep 1
    echo "container $ctr"
    echo "--- its output (crivmctl logs):"
    "$CTL" logs "$ctr"
    echo "--- the handler it got (pod annotations):"
    local name pod_id
    name=$(sed -n 's/.*"name": "\([^"]*\)".*/\1/p' "$pod" | head -1)
    "$CTL" -o json pods --name "$name" | grep -E '"io.crivm.(handler|trust)"'
    pod_id=$("$CTL" pods -q --name "$name" | head -1)
    # The verbose info is JSON inside a JSON string: unescape, then pick.
    local vm
    vm=$("$CTL" inspectp "$pod_id" | sed 's/\\"/"/g' | grep -oE '"(accel|guest_kernel|boot_ms)":"[^"]*"' | sort -u)
    if [ -n "$vm" ]; then
      echo "--- its VM (crivmctl inspectp): accelerator, guest kernel, boot time in ms"
      echo "$vm"
    fi
  else
    echo "$out"
  fi
}

run_pod trusted test/demo/trusted-pod.json
run_pod untrusted test/demo/untrusted-pod.json

say "pods and containers"
"$CTL" pods
"$CTL" ps -a
for p in $("$CTL" pods -q); do PODS+=("$p"); done

say "trust audit log (/var/log/crivm/trust-audit.log), last lines"
tail -n 2 /var/log/crivm/trust-audit.log
say "removing the demo pods and stopping crivm"

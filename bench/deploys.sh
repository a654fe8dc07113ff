#!/usr/bin/env bash
# Deploys an app (nginx answering a fixed body) 50 times (then rolls back 10 times) under load from
# 32 keep-alive clients through Baton's proxy. Reports failed requests, extra
# p99 latency during switches, healthy→switched time and rollback time.
#   bash bench/deploys.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p baton -p baton-bench-deploys
work=$(mktemp -d /tmp/baton-bench-deploys.XXXXXX)
cleanup() {
  # Targets outlive the server by design; stop the ones this run started.
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$work"/*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  rm -rf "$work"
}
trap cleanup EXIT
# Two releases of the nginx upstream (fast, so the proxy's share shows),
# kept warm so that rollbacks are switches.
for v in a b; do
  cp -r bench/upstream "$work/$v"
  sed -i "s/hello from the upstream/hello from release $v/" "$work/$v/run.sh"
  sed -i 's/keep_warm = "0s"/keep_warm = "10m"/' "$work/$v/baton.toml"
done
./target/release/baton-bench-deploys ./target/release/baton "$work/a" "$work/b" "$work/data" bench.localhost

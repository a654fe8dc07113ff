#!/usr/bin/env bash
# Flags, in one run:
#  1. in-process evaluation, baton-flags against unleash-yggdrasil (same
#     flag, same contexts, engines cross-checked);
#  2. OFREP single-flag evaluation over HTTP against a release build of
#     `baton server` (the same flag, created through the CLI, the same
#     contexts): the most it answers, then latency at a constant rate.
#   bash bench/flags.sh        (RATE=5000 DURATION=10 CONNECTIONS=32)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rate="${RATE:-5000}" duration="${DURATION:-10}" connections="${CONNECTIONS:-32}"

cd "$root/bench/flags"
cargo run --release --quiet --bin baton-bench-flags
cargo build --release --quiet --bin ofrep_load
(cd "$root" && cargo build --release --quiet --locked -p baton)
baton="${CARGO_TARGET_DIR:-$root/target}/release/baton"
load="${CARGO_TARGET_DIR:-$root/bench/flags/target}/release/ofrep_load"

data="$(mktemp -d)"
BATON_LOG=warn "$baton" server --data "$data" --api-listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 \
  >"$data/ready" 2>"$data/server.log" &
server=$!
# The proxy outlives the server by design: stop it too.
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; BATON_DATA="$data" "$baton" proxy stop >/dev/null 2>&1; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q ready "$data/ready" && break; sleep 0.1; done
api="$(awk '{print $5}' "$data/ready" | sed 's|http://||')"
[ -n "$api" ] || { echo "baton server did not start: $(cat "$data/server.log")" >&2; exit 1; }
export BATON_API="http://$api"

"$baton" flags create bench new-checkout --enabled true --rollout 30 \
  --constraint "country IN fr,de,nl,be" --constraint "plan NOT_IN free" \
  --constraint "appVersion SEMVER_GT 1.2.0" >/dev/null
key="$("$baton" flags keys create bench load --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
echo
"$load" "$api" "$key" new-checkout "$rate" "$duration" "$connections"

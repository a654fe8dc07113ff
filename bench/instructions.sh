#!/usr/bin/env bash
# Instructions the proxy spends per request, counted by callgrind: the same
# for the same binary and load whatever else the machine does, so two
# builds can be compared to the percent where wall-clock benchmarks on a
# shared 2-core machine cannot.
#
#   bench/instructions.sh OLD_BATON NEW_BATON [REQUESTS]
#
# For each binary: `baton server` (and the proxy it starts; not the app)
# under valgrind's callgrind, the example app deployed, 200 requests to
# warm up, then REQUESTS (default 4000) by `h2load --h1 -c 4`; the proxy's
# counters are dumped before and after, and the difference divided by the
# requests. Needs valgrind and nghttp2-client (apt-get install).
set -euo pipefail
OLD=$1; NEW=$2; N=${3:-4000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/baton-instructions.XXXXXX)
chmod 711 "$WORK"

measure() {
  local bin=$1 tag=$2 data=$WORK/data-$2 out=$WORK/out-$2
  mkdir -p "$out"
  valgrind --tool=callgrind --trace-children=yes --trace-children-skip='*python*,/bin/sh,/usr/bin/sh' \
    --trace-children-skip-by-arg='*log-stamp*' --callgrind-out-file="$out/cg.%p" \
    "$bin" server --data "$data" --api-listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 --proxy-workers 1 \
    > "$WORK/server-$tag.out" 2> "$WORK/server-$tag.err" &
  local vpid=$!
  for _ in $(seq 1 300); do grep -q ready "$WORK/server-$tag.out" 2>/dev/null && break; sleep 0.5; done
  local api proxy pp
  api=$(awk '{print $5}' "$WORK/server-$tag.out"); proxy=$(awk '{print $7}' "$WORK/server-$tag.out" | sed 's|http://||')
  export BATON_API=$api BATON_DATA=$data
  "$bin" deploy "$ROOT/examples/hello" > /dev/null
  pp=$("$bin" proxy status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  h2load --h1 -n 200 -c 4 -H ':authority: hello.localhost' "http://$proxy/" > /dev/null
  callgrind_control -d "$pp" > /dev/null 2>&1; sleep 1
  h2load --h1 -n "$N" -c 4 -H ':authority: hello.localhost' "http://$proxy/" | grep -q "$N succeeded"
  callgrind_control -d "$pp" > /dev/null 2>&1; sleep 1
  local ir
  ir=$(grep '^summary:' "$out/cg.$pp.2" | awk '{print $2}')
  echo "$tag: $((ir / N)) instructions per request ($ir for $N)"
  # The server first (else it starts the proxy again), then the proxy,
  # then the app (processes working in this run's data folder).
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  "$bin" proxy stop > /dev/null 2>&1 || true; sleep 2
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/cwd" 2>/dev/null)" in "$data"*) kill "${p#/proc/}" 2>/dev/null || true;; esac
  done
}

measure "$OLD" old
measure "$NEW" new
rm -rf "$WORK"

#!/usr/bin/env bash
# Builds the example's static binary into this folder as `hello`, ready for
# `baton deploy examples/docker-hello` (the Dockerfile copies it).
set -euo pipefail
cd "$(dirname "$0")"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked \
  --target x86_64-unknown-linux-gnu --target-dir ../../target/docker-hello
cp ../../target/docker-hello/x86_64-unknown-linux-gnu/release/docker-hello hello

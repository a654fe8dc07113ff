#!/usr/bin/env bash
# In-process flag evaluation, baton-flags against unleash-yggdrasil.
#   bash bench/flags.sh
set -euo pipefail
cd "$(dirname "$0")/flags"
cargo run --release --quiet

#!/usr/bin/env bash
# Instructions per request of the WAF engine (CRS v4 PL1; the GET, the 1 KB JSON POST and the
# end-to-end bench's 0.5 KB JSON order of `cargo bench -p rampart-waf`), counted by valgrind's
# callgrind: unlike time, the count repeats exactly for the same binary and input, so two
# builds compare on a noisy machine.
# Per request = (count for N requests - count for loading CRS alone) / N.
#
#   bench/waf-instructions.sh             # N_GET=300 N_POST=100 by default; ~1 minute
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
cargo build --release -p rampart-waf --example engine_loop --manifest-path "$ROOT/Cargo.toml" >&2
BIN="${BIN:-$ROOT/target/release/examples/engine_loop}"
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1 | sed -n 's/.*Collected : //p'; }
base=$(count none 0)
get=$(count get "${N_GET:-300}")
post=$(count post "${N_POST:-100}")
order=$(count order "${N_POST:-100}")
echo "GET:  $(( (get - base) / ${N_GET:-300} )) instructions per request"
echo "POST: $(( (post - base) / ${N_POST:-100} )) instructions per request"
echo "ORDER: $(( (order - base) / ${N_POST:-100} )) instructions per request (the end-to-end bench's POST)"

#!/usr/bin/env bash
# Cost of in-memory rate limiting, end to end, on the shared harness (../shared/bench): the same
# Rampart config without a limit, with one `client_ip` limit that sends RateLimit headers on
# every answer (`headers: always`, the default), and with the same limit sending them only on
# 429s (`headers: on_refusal`). The rate is high enough that nothing is refused. All three run
# side by side with nginx-proxy in one run of the harness: 1 worker thread each, loopback only,
# every run bounded.
#
#   bench/ratelimit.sh                    # DURATION=8 by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
WORK="$(mktemp -d /tmp/rampart-rlbench.XXXXXX)"
cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/rampart"

. "$ROOT/bench/lib.sh"
conf() { # $1 port, $2 none|always|on_refusal
  bench_conf "$1"
  [[ "$2" != none ]] && printf '    rate_limits:\n      - { name: per-ip, key: [client_ip], rate: 100000000, period: 1s, headers: %s }\n' "$2"
  return 0
}
conf 28494 none > "$WORK/plain.yaml"
conf 28495 always > "$WORK/always.yaml"
conf 28496 on_refusal > "$WORK/quiet.yaml"
for f in plain always quiet; do "$BIN" check -c "$WORK/$f.yaml" >&2; done

start_pair "$WORK/plain.yaml" 28494 "$WORK/always.yaml" 28495
"$BIN" run -c "$WORK/quiet.yaml" > "$WORK/quiet.out" 2>&1 & P3=$!
trap 'kill $P3 2>/dev/null || true; wait $P3 2>/dev/null || true; stop_pair' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/28496") 2>/dev/null && break; sleep 0.05; done

TARGETS="rampart=http://127.0.0.1:28494 rampart-rl=http://127.0.0.1:28495 rampart-rl-quiet=http://127.0.0.1:28496 nginx-proxy=http://127.0.0.1:28481" \
  DURATION="${DURATION:-8}" STARTUP_BENCH=0 "$SHARED/run.sh"

#!/usr/bin/env bash
# The WAF end to end on the shared harness (../shared/bench): Rampart + CRS v4 (PL1, blocking,
# from ../shared/crs) without and with the `openapi` guard in front of it (schema-aware WAF:
# strictly typed inputs the spec validated are not run through the rules), beside
# nginx + ModSecurity + CRS PL1 and nginx-proxy. 1 worker thread each, wrk 1 thread,
# 32 connections, loopback only, every run bounded; ROUNDS paired rounds (bench/lib.sh).
#
#   bench/waf.sh                          # ROUNDS=3 DURATION=8 by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
CRS="${CRS:-$ROOT/../shared/crs}"
WORK="$(mktemp -d /tmp/rampart-wafbench.XXXXXX)"
cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/rampart"
cp "$ROOT/bench/harness-openapi.yaml" "$WORK/spec.yaml"

. "$ROOT/bench/lib.sh"
conf() { # $1 port, $2 openapi yes/no
  bench_conf "$1"
  printf '    waf:\n      crs: %s\n      paranoia_level: 1\n' "$CRS"
  [[ "$2" == yes ]] && printf '    openapi:\n      spec: %s\n      responses: off\n' "$WORK/spec.yaml"
  return 0
}
conf 28495 no > "$WORK/waf.yaml"
conf 28496 yes > "$WORK/waf-openapi.yaml"
"$BIN" check -c "$WORK/waf.yaml" >&2 && "$BIN" check -c "$WORK/waf-openapi.yaml" >&2

start_pair "$WORK/waf.yaml" 28495 "$WORK/waf-openapi.yaml" 28496
# Both harness requests must pass both configurations, or the numbers mean nothing.
body=$(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' "$SHARED/wrk/post_json.lua")
for port in 28495 28496; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' \
    "http://127.0.0.1:$port/api/v1/users/42?fields=name,email,plan&expand=orders&page=2")
  [[ $code == 200 ]] || { echo "GET refused on $port ($code)" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' -H 'content-type: application/json' \
    --data-binary "$body" "http://127.0.0.1:$port/api/v1/orders")
  [[ $code == 200 ]] || { echo "POST refused on $port ($code)" >&2; exit 1; }
done

ROUNDS="${ROUNDS:-3}" PAIRED_EXTRA="nginx-modsec-pl1=http://127.0.0.1:28482" \
  paired_rounds rampart-crs http://127.0.0.1:28495 rampart-crs-openapi http://127.0.0.1:28496

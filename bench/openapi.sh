#!/usr/bin/env bash
# Cost of OpenAPI request validation, end to end, on the shared harness (../shared/bench):
# the same Rampart config without and with an `openapi` spec that declares the harness's two
# requests (GET /api/v1/users/{id} with its query parameters; POST /api/v1/orders with its
# ~0.6 KB JSON order body, validated against a strict schema). Both Rampart instances run side
# by side with nginx-proxy in ROUNDS paired runs of the harness (bench/lib.sh): 1 worker thread
# each, wrk 1 thread, 32 connections, loopback only, every run bounded.
#
#   bench/openapi.sh                      # ROUNDS=5 DURATION=8 by default (paired_rounds in lib.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
WORK="$(mktemp -d /tmp/rampart-oasbench.XXXXXX)"
cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/rampart"

# The spec declaring the harness's two requests (shared with bench/schema-waf.sh).
cp "$ROOT/bench/harness-openapi.yaml" "$WORK/spec.yaml"

. "$ROOT/bench/lib.sh"
conf() { # $1 port, $2 openapi yes/no
  bench_conf "$1"
  [[ "$2" == yes ]] && printf '    openapi:\n      spec: %s\n      responses: off\n' "$WORK/spec.yaml"
  return 0
}
conf 28497 no > "$WORK/plain.yaml"
conf 28498 yes > "$WORK/openapi.yaml"
"$BIN" check -c "$WORK/plain.yaml" >&2 && "$BIN" check -c "$WORK/openapi.yaml" >&2

start_pair "$WORK/plain.yaml" 28497 "$WORK/openapi.yaml" 28498
# Both requests of the harness must pass validation, or the comparison means nothing.
for path in "/api/v1/users/42?fields=name,email,plan&expand=orders&page=2"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' "http://127.0.0.1:28498$path")
  [[ $code == 200 ]] || { echo "GET validation refused the harness request ($code)" >&2; exit 1; }
done
body=$(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' "$SHARED/wrk/post_json.lua")
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.example.com' -H 'content-type: application/json' \
  --data-binary "$body" "http://127.0.0.1:28498/api/v1/orders")
[[ $code == 200 ]] || { echo "POST validation refused the harness body ($code)" >&2; exit 1; }

paired_rounds rampart http://127.0.0.1:28497 rampart-openapi http://127.0.0.1:28498

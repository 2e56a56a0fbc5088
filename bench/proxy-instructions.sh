#!/usr/bin/env bash
# Instructions per request of the whole Rampart process (user space: hyper, tokio, guards,
# upstream client), counted by valgrind's callgrind while a client sends the shared
# harness's GET and JSON POST over one keep-alive connection. Unlike req/s on this shared
# VM, the count repeats within a fraction of a percent for the same binary, so a change of
# a few percent in the proxy or a guard shows up. Kernel time (the loopback TCP path) is not
# counted. Per request = (count after 2N requests - count after N) / N, so start-up, config
# load and warm-up cancel out. memcpy is reported apart: valgrind counts each byte a
# `rep movsb` copies as an instruction, so copies (of large futures, say) weigh far more in
# this count than in time.
#
#   bench/proxy-instructions.sh                    # plain, openapi; N=400
#   CONFIGS="plain" N=1000 bench/proxy-instructions.sh
#   KEEP=/tmp/cg bench/proxy-instructions.sh      # keep each run's callgrind file (callgrind.CONFIG.KIND.COUNT)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "needs python3" >&2; exit 1; }
WORK="$(mktemp -d /tmp/rampart-pinstr.XXXXXX)"
cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="${BIN:-$ROOT/target/release/rampart}"
N="${N:-400}"
PORT=28496

. "$ROOT/bench/lib.sh"
cp "$ROOT/bench/harness-openapi.yaml" "$WORK/spec.yaml"
conf() { # $1 name
  bench_conf "$PORT"
  case "$1" in
    plain) ;;
    openapi) printf '    openapi:\n      spec: %s\n      responses: off\n' "$WORK/spec.yaml" ;;
    *) echo "unknown config $1" >&2; exit 2 ;;
  esac
}

started_upstream=0
cleanup() {
  [[ -n ${RP:-} ]] && kill "$RP" 2>/dev/null && wait "$RP" 2>/dev/null || true
  [[ $started_upstream == 1 ]] && "$SHARED/servers.sh" stop upstream >&2 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if ! "$SHARED/servers.sh" status upstream | grep -q running; then
  "$SHARED/servers.sh" start upstream >&2 && started_upstream=1
fi

body=$(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' "$SHARED/wrk/post_json.lua")
# One keep-alive connection, N requests of one kind, each response read in full; exits
# non-zero on any status other than 200 (a refused request would make the count meaningless).
cat > "$WORK/client.py" <<'PY'
import http.client, sys
port, kind, n, body = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
h = {"Host": "api.example.com", "Accept": "application/json",
     "User-Agent": "acme-mobile/3.2.1 (iPhone; iOS 17.1)",
     "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dGVzdHNpZ25hdHVyZQ"}
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    if kind == "get":
        c.request("GET", "/api/v1/users/42?fields=name,email,plan&expand=orders&page=2", headers=h)
    else:
        c.request("POST", "/api/v1/orders", body=body, headers=dict(h, **{"Content-Type": "application/json"}))
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"{kind}: status {r.status}")
PY

# Runs Rampart under callgrind with config $1, sends $3 requests of kind $2, stops it with
# SIGTERM (drain, exit 0) and prints the instructions callgrind collected.
count() {
  local out="$WORK/cg.out"
  conf "$1" > "$WORK/c.yaml"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg" "$BIN" run -c "$WORK/c.yaml" > "$out" 2>&1 & RP=$!
  for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  python3 "$WORK/client.py" "$PORT" "$2" "$3" "$body" >&2
  kill -TERM "$RP"; wait "$RP" || true; RP=
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP" && cp "$WORK/cg" "$KEEP/callgrind.$1.$2.$3"; fi
  echo "$(sed -n 's/.*Collected : //p' "$out") $(callgrind_annotate "$WORK/cg" 2>/dev/null | awk '/__memcpy|__memmove/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')"
}

for c in ${CONFIGS:-plain openapi}; do
  for k in get post; do
    read -r a am < <(count "$c" "$k" "$N"); read -r b bm < <(count "$c" "$k" $((2 * N)))
    echo "$c $k: $(( (b - a) / N )) instructions per request, $(( (bm - am) / N )) of them in memcpy"
  done
done

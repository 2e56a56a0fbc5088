#!/usr/bin/env bash
# Cost of JWT validation, end to end: the same route without auth, with ES256 JWT auth where
# clients reuse their token (the usual case: the verified-token cache answers), and with a
# distinct token on every request (every request pays a full ES256 verification).
# Rampart release build, 1 worker thread; wrk 1 thread, 32 connections; upstream from
# ../shared/bench. Everything on 127.0.0.1, every run bounded. Needs python3 with `cryptography`.
#
#   bench/auth.sh                 # DURATION=8 ROUNDS=2 by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
WORK="$(mktemp -d /tmp/rampart-authbench.XXXXXX)"
cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/rampart"

python3 - "$WORK" <<'PY'
import base64, json, sys, time
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
work = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = ec.generate_private_key(ec.SECP256R1())
n = key.public_key().public_numbers()
jwk = {"kty": "EC", "crv": "P-256", "kid": "b1", "alg": "ES256",
       "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
open(f"{work}/jwks.json", "w").write(json.dumps({"keys": [jwk]}))
head = b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "b1"}).encode())
def token(sub):
    body = b64(json.dumps({"sub": sub, "iss": "https://bench", "aud": "api",
                           "exp": int(time.time()) + 3600, "scope": "read"}).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
open(f"{work}/token", "w").write(token("user-1"))
with open(f"{work}/tokens", "w") as f:
    for i in range(300000):
        f.write(token(f"user-{i}") + "\n")
PY

cat > "$WORK/one.lua" <<'LUA'
local f = io.open(os.getenv("WORK") .. "/token"); local t = f:read("*l"); f:close()
wrk.method = "GET"
wrk.path = "/api/v1/users/42?fields=name,email"
wrk.headers["Host"] = "api.example.com"
wrk.headers["Authorization"] = "Bearer " .. t
LUA
cat > "$WORK/many.lua" <<'LUA'
local tokens, i = {}, 0
for l in io.lines(os.getenv("WORK") .. "/tokens") do tokens[#tokens + 1] = l end
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/v1/users/42?fields=name,email",
    { ["Host"] = "api.example.com", ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

. "$ROOT/bench/lib.sh"
conf() { # $1 port, $2 auth yes/no
  bench_conf "$1" "identity:
  providers:
    - name: bench
      jwt: { algorithms: [ES256], issuer: \"https://bench\", audiences: [api], jwks_file: \"$WORK/jwks.json\" }"
  [[ "$2" == yes ]] && printf '    auth:\n      providers: [bench]\n      rules:\n        - { path: "/api/**", scopes_all: [read] }\n'
  return 0
}
conf 28495 no > "$WORK/plain.yaml"
conf 28496 yes > "$WORK/jwt.yaml"
"$BIN" check -c "$WORK/plain.yaml" >&2 && "$BIN" check -c "$WORK/jwt.yaml" >&2

start_pair "$WORK/plain.yaml" 28495 "$WORK/jwt.yaml" 28496
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name port pid script
  local c0 c1 out rps p99
  WORK="$WORK" timeout 60 wrk -t1 -c32 -d2s -s "$WORK/$4" "http://127.0.0.1:$2" > /dev/null
  c0=$(cpu "$3")
  out=$(WORK="$WORK" timeout 60 wrk -t1 -c32 -d"${DURATION}s" --latency -s "$WORK/$4" "http://127.0.0.1:$2")
  c1=$(cpu "$3")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  printf '%-22s %10s req/s  p99 %-8s cpu %5.2fs  non-2xx %s\n' "$1" "$rps" "$p99" \
    "$(echo "($c1 - $c0) / $(getconf CLK_TCK)" | bc -l)" "${non2xx:-0}"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run "no auth" 28495 "$P1" one.lua
  run "jwt ES256, same token" 28496 "$P2" one.lua
  run "jwt ES256, new token" 28496 "$P2" many.lua
  run "no auth (again)" 28495 "$P1" one.lua
done

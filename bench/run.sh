#!/usr/bin/env bash
# End-to-end benchmark: Rampart (release build, 1 worker thread, default guards) beside nginx
# and nginx+ModSecurity+CRS on ../shared/bench, in one run. Then idle RSS and the RSS with
# 10,000 idle keep-alive connections. Everything on 127.0.0.1; every load run is bounded.
#
#   bench/run.sh                 # full run (needs: nginx, libnginx-mod-http-modsecurity, wrk, python3)
#   LOG=file bench/run.sh        # Rampart writes its access log to a file (default: off, like nginx)
#   DURATION=5 bench/run.sh      # knobs of ../shared/bench/run.sh pass through
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
PORT="${RAMPART_PORT:-28490}"
ADMIN="${RAMPART_ADMIN:-28491}"
LOG="${LOG:-off}"
WORK="$(mktemp -d /tmp/rampart-bench.XXXXXX)"

cargo build --release -p rampart --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/rampart"

access="off"
[[ "$LOG" == file ]] && access="$WORK/access.log"
cat > "$WORK/rampart.yaml" <<YAML
server:
  worker_threads: 1
  watch_config: false
listeners:
  - address: 127.0.0.1:$PORT
admin:
  address: 127.0.0.1:$ADMIN
log:
  access: "$access"
  level: warn
upstreams:
  - name: bench
    targets: ["http://127.0.0.1:${UPSTREAM_PORT:-28480}"]
routes:
  - name: all
    path_prefix: /
    upstream: bench
YAML
"$BIN" check -c "$WORK/rampart.yaml" >&2

"$BIN" run -c "$WORK/rampart.yaml" > "$WORK/rampart.out" 2>&1 &
RPID=$!
cleanup() { kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

rss() { awk '/VmRSS/ {print $2}' "/proc/$RPID/status"; }
echo "rampart idle RSS: $(( $(rss) / 1024 )) MiB" | tee "$WORK/rss.txt" >&2

EXTRA_TARGET="rampart=http://127.0.0.1:$PORT" "$SHARED/run.sh" 2>&1 | tee "$WORK/run.out"

# The issue's bar as ratios: Rampart against nginx-proxy in this run (req/s, p99, req per CPU-s).
tsv=$(sed -n 's/^tsv: //p' "$WORK/run.out" | tail -1)
if [[ -n "$tsv" && -f "$tsv" ]]; then
  awk -F'\t' '
    $1 == "nginx-proxy" { n[$2] = $3; np[$2] = $6; nc[$2] = $10 }
    $1 == "rampart" { r[$2] = $3; rp[$2] = $6; rc[$2] = $10 }
    END {
      for (m in r) if (n[m] > 0 && np[m] > 0 && nc[m] > 0)
        printf "rampart / nginx-proxy %-4s req/s %.3f, p99 %.2f (lower is better), req per CPU-s %.3f%s\n",
          m, r[m] / n[m], rp[m] / np[m], rc[m] / nc[m],
          (r[m] >= n[m] && rp[m] <= np[m]) ? "  (bar met)" : "  (bar not met)"
    }' "$tsv" | sort | tee -a "$WORK/rss.txt"
fi

# 10,000 idle keep-alive connections: each sends one request, reads the answer, stays open.
started_upstream=0
if ! "$SHARED/servers.sh" status upstream | grep -q running; then
  "$SHARED/servers.sh" start upstream >&2 && started_upstream=1
fi
python3 - "$PORT" "$RPID" <<'PY' | tee -a "$WORK/rss.txt"
import resource, socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) // 1024
before = rss()
socks, t0 = [], time.time()
req = b"GET /api/v1/users/42 HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
for i in range(10000):
    if time.time() - t0 > 120:
        break
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    s.recv(4096)
    socks.append(s)
time.sleep(1)
at1 = rss()
# Idle longer than timeouts.idle_release (1 s): every connection has given back its HTTP state.
time.sleep(2)
print(f"rampart RSS with {len(socks)} idle keep-alive connections: {rss()} MiB after 3 s idle, {at1} MiB after 1 s (idle before: {before} MiB)")
for s in socks:
    s.close()
PY
[[ "$started_upstream" == 1 ]] && "$SHARED/servers.sh" stop upstream >&2
echo "rss: $WORK/rss.txt" >&2

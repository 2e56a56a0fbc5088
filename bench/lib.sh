# Shared by the bench scripts: start the shared harness's upstream if it is not running, run two
# Rampart configs side by side, wait for their ports, and stop only what was started (by PID)
# on exit. Expects BIN, SHARED and WORK to be set; sets P1 and P2.
#
#   start_pair CONF1 PORT1 CONF2 PORT2
#   bench_conf PORT [TOP_LEVEL_YAML]   the common config: 1 worker, no access log, one route
#                                      `all` to the harness upstream (append route keys after)

bench_conf() {
  cat <<YAML
server: { worker_threads: 1, watch_config: false }
listeners: [ { address: "127.0.0.1:$1" } ]
admin: { address: "off" }
log: { access: "off", level: warn }
${2:-}
upstreams: [ { name: up, targets: ["http://127.0.0.1:28480"] } ]
routes:
  - name: all
    path_prefix: /
    upstream: up
YAML
}

start_pair() {
  started_upstream=0
  if ! "$SHARED/servers.sh" status upstream | grep -q running; then
    "$SHARED/servers.sh" start upstream >&2 && started_upstream=1
  fi
  "$BIN" run -c "$1" > "$1.out" 2>&1 & P1=$!
  "$BIN" run -c "$3" > "$3.out" 2>&1 & P2=$!
  trap stop_pair EXIT
  local p
  for p in "$2" "$4"; do
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.05; done
  done
}

stop_pair() {
  kill "$P1" "$P2" 2>/dev/null || true; wait "$P1" "$P2" 2>/dev/null || true
  [[ $started_upstream == 1 ]] && "$SHARED/servers.sh" stop upstream >&2 || true
  rm -rf "$WORK"
}

# Paired rounds: ROUNDS (default 5) runs of the shared harness, each with both Rampart targets
# and nginx-proxy, the order of the two Rampart targets swapped every round so drift on this
# shared VM does not favour one. Prints each round's ratio B/A (req/s and requests per
# CPU-second, per mode) and the median over rounds: a cost of a few percent is only visible
# this way, single runs differ by up to ±10 %.
#
#   paired_rounds NAME_A URL_A NAME_B URL_B      (PAIRED_EXTRA="name=url ..." adds targets)
paired_rounds() {
  local rounds="${ROUNDS:-5}" r targets tsv all=()
  for r in $(seq 1 "$rounds"); do
    if (( r % 2 )); then targets="$1=$2 $3=$4"; else targets="$3=$4 $1=$2"; fi
    tsv=$(TARGETS="$targets nginx-proxy=http://127.0.0.1:28481 ${PAIRED_EXTRA:-}" DURATION="${DURATION:-8}" \
      STARTUP_BENCH=0 REPEAT=1 "$SHARED/run.sh" | tee /dev/stderr | sed -n 's/^tsv: //p')
    [[ -n $tsv ]] || { echo "run.sh gave no results" >&2; return 1; }
    all+=("$tsv")
  done
  awk -v A="$1" -v B="$3" -F'\t' '
    FNR == 1 { round++; next }
    { rps[round, $1, $2] = $3; cpu[round, $1, $2] = $10; modes[$2] = 1 }
    function median(arr, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
      return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    END {
      for (m in modes) {
        n = 0
        for (r = 1; r <= round; r++) {
          if (!(r SUBSEP A SUBSEP m in rps) || rps[r, A, m] == 0 || cpu[r, A, m] == 0) continue
          n++
          q[n] = rps[r, B, m] / rps[r, A, m]; c[n] = cpu[r, B, m] / cpu[r, A, m]
          g[n] = rps[r, A, m] / rps[r, "nginx-proxy", m]; h[n] = rps[r, B, m] / rps[r, "nginx-proxy", m]
          ms = (r SUBSEP "nginx-modsec-pl1" SUBSEP m in rps) && rps[r, "nginx-modsec-pl1", m] > 0
          if (ms) { xa[n] = rps[r, A, m] / rps[r, "nginx-modsec-pl1", m]; xb[n] = rps[r, B, m] / rps[r, "nginx-modsec-pl1", m] }
          printf "round %d %-5s %s/%s req/s %.3f  per CPU-s %.3f   (%s %d, %s %d, nginx-proxy %d req/s%s)\n", r, m, B, A, q[n], c[n], A, rps[r, A, m], B, rps[r, B, m], rps[r, "nginx-proxy", m], ms ? sprintf(", nginx-modsec-pl1 %d", rps[r, "nginx-modsec-pl1", m]) : ""
        }
        if (n) printf "MEDIAN %-5s %s/%s over %d rounds: req/s %.3f, per CPU-s %.3f; /nginx-proxy req/s %s %.3f, %s %.3f\n", m, B, A, n, median(q, n), median(c, n), A, median(g, n), B, median(h, n)
        if (n && ms) printf "MEDIAN %-5s x nginx-modsec-pl1 req/s: %s %.2f, %s %.2f\n", m, A, median(xa, n), B, median(xb, n)
      }
    }' "${all[@]}"
}

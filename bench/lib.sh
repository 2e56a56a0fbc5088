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

# bench/peers.sh — the peers sections of bench/run.sh (sourced by it, not run): the same
# routes on moonlet and on what a user would otherwise pick, in one run, in alternating order
# (A B C D, then D C B A):
#   nginx_lua  nginx (worker_processes 1) with the Lua module (lua-nginx-module, OpenResty's;
#              Debian's libnginx-mod-http-lua), bench/apps/peers/nginx_lua.conf; its
#              `return 200` /hello-return is nginx's floor in peers_hello
#   fastapi    FastAPI on uvicorn (Debian's; one process), bench/apps/peers/fastapi_app.py
#   node       Node's `http` module, bench/apps/peers/node_app.js (npm's `pg` for peers_pg)
# Sections: peers_hello (GET /hello at 64 and 256 connections), peers_seed (the seed table),
# peers_sleep (10,000 concurrent 1 s sleeps), peers_pg (a PostgreSQL point select).
# A peer that is not installed gets a "(not installed: ...)" line, not a failure.

# shellcheck shell=bash
# shellcheck disable=SC2059,SC2034,SC2153

PEER_PY=/usr/bin/python3   # Debian's python3, with python3-fastapi (a pyenv one may be first on PATH)

# peer_missing PEER: why PEER cannot run here ("" when it can). nginx_lua: the module from
# the system (/usr/share/nginx/modules, with OpenResty's LuaJIT: libluajit2-5.1-2) or the
# copy scripts/deps.sh bench unpacks into build/peers/nginx-lua (Debian's LuaJIT, which
# moonlet builds with, conflicts with libluajit2). Sets NGX_LUA_ROOT for start_peer.
peer_missing() {
  case $1 in
    moonlet) echo "" ;;
    nginx_lua)
      command -v nginx >/dev/null || { echo "nginx"; return; }
      NGX_LUA_ROOT=""
      local r
      for r in "$PWD/build/peers/nginx-lua" ""; do
        if [ -f "$r/usr/share/nginx/modules/ngx_http_lua_module.so" ] ||
          [ -f "$r/usr/lib/nginx/modules/ngx_http_lua_module.so" ]; then
          NGX_LUA_ROOT=${r:-/}
          echo ""
          return
        fi
      done
      echo "libnginx-mod-http-lua (scripts/deps.sh bench)" ;;
    fastapi) "$PEER_PY" -c 'import fastapi, uvicorn' 2>/dev/null ||
      echo "python3-fastapi, python3-uvicorn (scripts/deps.sh bench)" ;;
    fastapi_pg) "$PEER_PY" -c 'import fastapi, uvicorn, asyncpg' 2>/dev/null ||
      echo "python3-fastapi, python3-uvicorn, python3-asyncpg (scripts/deps.sh bench)" ;;
    node) command -v node >/dev/null || echo "nodejs" ;;
    node_pg) command -v node >/dev/null && [ -f build/node/node_modules/pg/package.json ] ||
      echo "nodejs, npm's pg in build/node (scripts/deps.sh bench)" ;;
  esac
}

# peers_present PEER...: sets PEERS (those that can run) and prints a line for each missing one
peers_present() {
  local p why
  PEERS=""
  for p in "$@"; do
    why=$(peer_missing "$p")
    if [ -z "$why" ]; then PEERS="$PEERS $p"; else echo "${p%_pg}: not installed ($why): left out"; fi
  done
  peer_missing nginx_lua >/dev/null   # NGX_LUA_ROOT in this shell
  PEERS=${PEERS# }
}

# peer_wait PID PORT NAME: until PORT accepts connections (dies when PID exits first)
peer_wait() {
  for _ in $(seq 200); do
    port_open "$2" && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.05
  done
  cat "$TMP/$3.out" >&2 2>/dev/null || true
  die "$3 did not start listening on 127.0.0.1:$2"
}

# start_peer PEER NAME [NOFILE] [MOONLET-APP]: starts PEER on a free port of 127.0.0.1 (its
# output in $TMP/NAME.out); sets P_PID (the process to stop), P_PORT and P_CPU (the pids
# whose CPU time is the server's: nginx's master and worker). NOFILE: its open-files limit.
# moonlet serves MOONLET-APP (apps/seed_demo by default); the environment passes on
# (BENCH_PG_URL, BENCH_PG_POOL).
start_peer() {
  local peer=$1 name=$2 nofile=${3:-} app=${4:-apps/seed_demo} ng_root
  case $peer in
    moonlet)
      start_moonlet "$name" "$app" "$nofile"
      P_PID=$ML_PID P_PORT=$ML_PORT P_CPU=$ML_PID ;;
    nginx_lua)
      ng_root=${NGX_LUA_ROOT%/}
      local mods=$ng_root/usr/share/nginx/modules
      [ -f "$mods/ngx_http_lua_module.so" ] || mods=$ng_root/usr/lib/nginx/modules
      NG_MAIN="load_module $mods/ndk_http_module.so;
load_module $mods/ngx_http_lua_module.so;
thread_pool default threads=32 max_queue=65536;" \
      NG_HTTP="    lua_package_path '$ng_root/usr/share/lua/5.1/?.lua;$PWD/apps/seed_demo/?.lua;;';" \
      NG_HELLO=0 NG_EXTRA=$(cat bench/apps/peers/nginx_lua.conf) NG_CONNS=${nofile:-1024} \
      NG_ENV=${ng_root:+LD_LIBRARY_PATH=$ng_root/usr/lib/x86_64-linux-gnu} start_nginx
      P_PID=$NG_PID P_PORT=$NG_PORT
      # the master listens before it forks its worker
      for _ in $(seq 100); do pgrep -P "$NG_PID" >/dev/null && break; sleep 0.02; done
      P_CPU="$NG_PID $(pgrep -P "$NG_PID" | tr '\n' ' ')" ;;
    fastapi)
      P_PORT=$(free_port)
      (
        [ -z "$nofile" ] || ulimit -n "$nofile"
        cd bench/apps/peers &&
          exec "$PEER_PY" -m uvicorn fastapi_app:app --host 127.0.0.1 --port "$P_PORT" \
            --log-level warning --no-access-log
      ) >"$TMP/$name.out" 2>&1 &
      P_PID=$! P_CPU=$!
      STARTED="$STARTED $P_PID"
      peer_wait "$P_PID" "$P_PORT" "$name" ;;
    node)
      P_PORT=$(free_port)
      (
        [ -z "$nofile" ] || ulimit -n "$nofile"
        PORT=$P_PORT NODE_PATH=$PWD/build/node/node_modules exec node bench/apps/peers/node_app.js
      ) >"$TMP/$name.out" 2>&1 &
      P_PID=$! P_CPU=$!
      STARTED="$STARTED $P_PID"
      peer_wait "$P_PID" "$P_PORT" "$name" ;;
  esac
}

# peers_stop: stops the servers of the caller's P_PIDS (an associative array PEER -> pid),
# saying which one had exited on its own
peers_stop() {
  local t
  for t in "${!P_PIDS[@]}"; do
    kill -0 "${P_PIDS[$t]}" 2>/dev/null || echo "!! $t exited during the runs"
    stop_pid "${P_PIDS[$t]}"
  done
}

# peer_label PEER: its name in the tables (with its PostgreSQL client when PEER_PG=1)
peer_label() {
  case ${PEER_PG:-0}:$1 in
    *:moonlet) echo "moonlet" ;;
    *:nginx_ret) echo "nginx return 200 (no Lua)" ;;
    *:nginx_lua) echo "nginx + Lua module" ;;
    0:fastapi) echo "FastAPI (uvicorn)" ;;
    1:fastapi) echo "FastAPI (uvicorn) + asyncpg" ;;
    0:node) echo "Node http" ;;
    1:node) echo "Node http + pg" ;;
  esac
}

# peers_header: the date, the machine and its load, under a section's title
peers_header() {
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' \
    /proc/cpuinfo | head -1)), 1-minute load average $(cut -d' ' -f1 /proc/loadavg) before the section"
}

# reversed WORD...: the words in the other order
reversed() { local out="" w; for w in "$@"; do out="$w $out"; done; echo "${out% }"; }

# range LIST: "min-max" of the numbers of LIST (one value: itself)
range() {
  echo "$1" | tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 }
    END { if (lo == hi) print lo; else print lo "-" hi }'
}

# mean LIST: the mean of the numbers of LIST
mean() { echo "$1" | tr ' ' '\n' | awk 'NF { s += $1; n++ } END { printf "%.1f", n ? s / n : 0 }'; }

# peers_wrk NAME TARGET...: wrk_run against every TARGET in the order given, then in the
# other one (each run half of $DURATION, at least 2 s; W_CONNS, W_SCRIPT pass on). A TARGET's
# URL and server pids are in T_URL[TARGET] and T_CPU[TARGET]. Appends to R_RPS, R_P99, R_US
# (server CPU us per request), R_USER (its user-space part) and R_ERR of each TARGET, one word
# per run.
peers_wrk() {
  local name=$1 half t us
  shift
  half=$(( $(seconds "$DURATION") / 2 ))
  [ "$half" -ge 2 ] || half=2
  W_HALF=${half}s
  for t in "$@" $(reversed "$@"); do
    # shellcheck disable=SC2086 # T_CPU: the pids, one argument each
    DURATION=${half}s wrk_run "${name}_$t" "${T_URL[$t]}" ${T_CPU[$t]}
    us=$(awk -v c="${W_CPU%\%}" -v r="$W_RPS" 'BEGIN { printf "%.1f", c * 1e4 / r }')
    R_RPS[$t]="${R_RPS[$t]:-} $(printf '%.0f' "$W_RPS")" R_P99[$t]="${R_P99[$t]:-} $(ms "$W_P99")"
    R_US[$t]="${R_US[$t]:-} $us" R_ERR[$t]=$(( ${R_ERR[$t]:-0} + W_ERRORS ))
    R_USER[$t]="${R_USER[$t]:-} $(awk -v u="$us" -v f="$W_USER_SHARE" 'BEGIN { printf "%.1f", u * f }')"
  done
}

# peers_wrk_table TARGET...: the table of peers_wrk (mean and range of the runs)
peers_wrk_table() {
  local fmt='%-28s %9s %15s %15s %7s %11s %11s %9s\n' t
  printf "$fmt" "server" "req/s" "runs (req/s)" "p99 ms (runs)" "errors" "CPU us/req" "(runs)" \
    "of it user"
  printf "$fmt" "----------------------------" "---------" "---------------" "---------------" \
    "-------" "-----------" "-----------" "---------"
  for t in "$@"; do
    printf "$fmt" "$(peer_label "$t")" "$(mean "${R_RPS[$t]}" | cut -d. -f1)" \
      "$(range "${R_RPS[$t]}")" "$(range "${R_P99[$t]}")" "${R_ERR[$t]}" "$(mean "${R_US[$t]}")" \
      "$(range "${R_US[$t]}")" "$(mean "${R_USER[$t]}")"
  done
}

# ratio_of A B: A / B to 2 decimals ("-" when B is empty or 0)
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

# 1. GET /hello on every peer, 64 then 256 connections, one server each for the whole section.
bench_peers_hello() {
  local t conns targets="" m_us n_us verdict
  local -A T_URL=() T_CPU=() R_RPS=() R_P99=() R_US=() R_USER=() R_ERR=() P_PIDS=()
  section "peers: GET /hello on moonlet, nginx (+Lua), Node and FastAPI (wrk -t1 -c64 and -c256 --latency)"
  peers_header
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  peers_present moonlet nginx_lua node fastapi
  for t in $PEERS; do
    start_peer "$t" "peers_hello_$t"
    P_PIDS[$t]=$P_PID T_URL[$t]=http://127.0.0.1:$P_PORT/hello T_CPU[$t]=$P_CPU
    targets="$targets $t"
    if [ "$t" = nginx_lua ]; then
      T_URL[nginx_ret]=http://127.0.0.1:$P_PORT/hello-return T_CPU[nginx_ret]=$P_CPU
      targets="$targets nginx_ret"
    fi
  done
  # shellcheck disable=SC2086 # the targets, one argument each
  for conns in 64 256; do
    R_RPS=() R_P99=() R_US=() R_USER=() R_ERR=()
    W_CONNS=$conns peers_wrk "peers_hello_c$conns" $targets
    printf '\n%s connections (wrk -t1 -c%s):\n' "$conns" "$conns"
    peers_wrk_table $targets
    m_us=$(mean "${R_US[moonlet]}") n_us=$(mean "${R_US[nginx_ret]:-}")
    if [ -n "${R_US[nginx_ret]:-}" ]; then
      verdict=$(awk -v a="$m_us" -v b="$n_us" 'BEGIN { print (a <= 0.9 * b ? "met" : "NOT met") }')
      printf 'CPU per request, moonlet / nginx return 200: %s   target <= 0.90: %s\n' \
        "$(ratio_of "$m_us" "$n_us")" "$verdict"
      awk -v mu="$(mean "${R_USER[moonlet]}")" -v m="$m_us" -v nu="$(mean "${R_USER[nginx_ret]}")" \
        -v n="$n_us" 'BEGIN { printf "  of it, user / kernel us: moonlet %.1f / %.1f, nginx return 200 %.1f / %.1f\n",
                             mu, m - mu, nu, n - nu }'
    fi
    for t in nginx_lua node fastapi; do
      [ -n "${R_US[$t]:-}" ] || continue
      printf 'CPU per request, %s / moonlet: %s; req/s moonlet / %s: %s\n' "$(peer_label "$t")" \
        "$(ratio_of "$(mean "${R_US[$t]}")" "$m_us")" "$(peer_label "$t")" \
        "$(ratio_of "$(mean "${R_RPS[moonlet]}")" "$(mean "${R_RPS[$t]}")")"
    done
  done
  peers_stop
  echo "one server each, all started first; loaded in the order$targets, then back ($W_HALF"
  echo "  each, 1 s warm-up each): req/s = mean of the 2 runs, the range beside it. CPU us/req ="
  echo "  the server's user+system CPU time per request (nginx: master + worker), less sensitive"
  echo "  than req/s to wrk and the servers sharing the machine's $(nproc) CPUs."
  echo "  moonlet: apps/seed_demo (one event-loop thread); nginx: worker_processes 1, /hello encodes"
  echo "  the body with lua-cjson, /hello-return is nginx's 'return 200' (no Lua); Node: one"
  echo "  process; FastAPI: one uvicorn process ($("$PEER_PY" -c 'import importlib.util as u
print("uvloop" if u.find_spec("uvloop") else "asyncio loop", "+", "httptools" if u.find_spec("httptools") else "h11 parser")' 2>/dev/null))."
  moonlet_log peers_hello_moonlet
}

# 2. The seed table on every peer: /a (10 requests), /b, /c, /d (100), all sent at once.
bench_peers_seed() {
  local t route n i order fmt cell
  local -A P_PIDS=() P_PORTS=() CELL=()
  section "peers: the seed experiment (each route waits 1 s; bench/burst, one connection per request)"
  peers_header
  build_burst
  peers_present moonlet nginx_lua node fastapi
  for t in $PEERS; do
    start_peer "$t" "peers_seed_$t"
    P_PIDS[$t]=$P_PID P_PORTS[$t]=$P_PORT
  done
  i=0
  # shellcheck disable=SC2086 # the peers, one argument each
  for route in /c /b /d /a; do
    order=$PEERS
    [ $(( i++ % 2 )) = 0 ] || order=$(reversed $PEERS)
    n=100
    [ "$route" != /a ] || n=10
    for t in $order; do
      case $t:$route in
        node:/b | node:/d | nginx_lua:/d) CELL[$t$route]="-"; continue ;;
      esac
      burst_run "peers_seed_$t${route#/}" "${P_PORTS[$t]}" "$n" "$route" 40
      cell=$B_TIME
      [ "$B_DONE" = "$n" ] || cell="$cell ($(( n - B_DONE )) failed)"
      CELL[$t$route]=$cell
    done
  done
  peers_stop
  fmt='%-44s %16s %20s %16s %20s\n'
  printf "$fmt" "route (the seed's FastAPI code)" "/a (10 req.)" "/b (100)" "/c (100)" "/d (100)"
  printf "$fmt" "--------------------------------------------" "----------------" \
    "--------------------" "----------------" "--------------------"
  printf "$fmt" "" "blocking sleep" "blocking sleep off" "non-blocking" "route on a pool"
  printf "$fmt" "" "on the loop" "the loop (executor)" "sleep" "thread (def)"
  for t in $PEERS; do
    printf "$fmt" "$(peer_label "$t") (wall s)" "${CELL[$t/a]}" "${CELL[$t/b]}" "${CELL[$t/c]}" \
      "${CELL[$t/d]}"
  done
  echo "wall = first request sent -> last response received (s), every request on its own"
  echo "  connection, all sent at once; one server each, routes in the order /c /b /d /a, the"
  echo "  peers in alternating order. /a: 10 requests, not 100 (they run one after the other)."
  echo "  /b: moonlet.run_in_pool (moonlet's pool: 40 threads by default, shared with /d);"
  echo "  nginx: ngx.run_worker_thread on 'thread_pool default threads=32'; FastAPI:"
  echo "  run_in_executor(None, ...), asyncio's default executor: min(32, CPUs + 4) ="
  echo "  $(( $(nproc) + 4 < 32 ? $(nproc) + 4 : 32 )) threads here."
  echo "  /d: moonlet { pool = true } (40 threads); FastAPI def route (AnyIO: 40 threads)."
  echo "  '-': the peer has no such route (Node: no thread pool for JavaScript; nginx: no"
  echo "  route that runs whole on a thread)."
  moonlet_log peers_seed_moonlet
}

# 3. 10,000 concurrent GET /sleep?s=1 on every peer, a fresh server each run, A B C D D C B A.
bench_peers_sleep() {
  local n=10000 t run fmt rss0 hwm kb pid c0 us
  local -A WALL=() KB=() ERRS=() RSS0=() PEAK=() SENT=() CPU=()
  section "peers: 10,000 concurrent GET /sleep?s=1 (bench/burst: one connection per request)"
  peers_header
  build_burst
  peers_present moonlet nginx_lua node fastapi
  # shellcheck disable=SC2086 # the peers, one argument each
  for t in $PEERS $(reversed $PEERS); do
    start_peer "$t" "peers_sleep_$t" $(( n + 1024 )) apps/hello
    # the process that holds the connections: nginx's worker
    pid=$P_PID
    [ "$t" != nginx_lua ] || pid=$(pgrep -P "$P_PID" | head -1)
    sleep 0.3
    rss0=$(rss_kb "$pid")
    c0=$(cpu_ticks "$pid")
    burst_run "peers_sleep_$t" "$P_PORT" "$n" "/sleep?s=1" 60
    us=$(awk -v c="$(( $(cpu_ticks "$pid") - c0 ))" -v hz="$(getconf CLK_TCK)" -v n="$n" \
      'BEGIN { printf "%.0f", c / hz * 1e6 / n }')
    hwm=$(rss_kb "$pid" VmHWM)
    kill -0 "$P_PID" 2>/dev/null || echo "!! $t exited during the burst"
    stop_pid "$P_PID"
    kb=$(awk -v a="$hwm" -v b="$rss0" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')
    WALL[$t]="${WALL[$t]:-} $B_TIME" KB[$t]="${KB[$t]:-} $kb"
    SENT[$t]="${SENT[$t]:-} $B_SENT" CPU[$t]="${CPU[$t]:-} $us"
    ERRS[$t]=$(( ${ERRS[$t]:-0} + n - B_DONE )) RSS0[$t]=$(mb "$rss0") PEAK[$t]=$(mb "$hwm")
  done
  fmt='%-22s %15s %15s %13s %17s %8s %14s %13s\n'
  printf "$fmt" "server" "wall s (runs)" "last sent s" "CPU us/conn" "KB/conn (runs)" "failed" \
    "RSS before MB" "RSS peak MB"
  printf "$fmt" "----------------------" "---------------" "---------------" "-------------" \
    "-----------------" "--------" "--------------" "-------------"
  for t in $PEERS; do
    printf "$fmt" "$(peer_label "$t")" "$(range "${WALL[$t]}")" "$(range "${SENT[$t]}")" \
      "$(range "${CPU[$t]}")" "$(range "${KB[$t]}")" "${ERRS[$t]}" "${RSS0[$t]}" "${PEAK[$t]}"
  done
  if [ -n "${WALL[nginx_lua]:-}" ]; then
    local w kbm
    w=$(ratio_of "$(mean "${WALL[moonlet]}")" "$(mean "${WALL[nginx_lua]}")")
    kbm=$(mean "${KB[moonlet]}")
    printf 'wall, moonlet / nginx + Lua: %s   target <= 0.80: %s; moonlet %s KB per connection   target <= 3: %s\n' \
      "$w" "$(awk -v r="$w" 'BEGIN { print (r <= 0.8 ? "met" : "NOT met") }')" "$kbm" \
      "$(awk -v k="$kbm" 'BEGIN { print (k <= 3 ? "met" : "NOT met") }')"
    # no server answers before the client has sent + 1 s: the best wall moonlet could have
    [ -n "${SENT[moonlet]:-}" ] &&
    awk -v S="${SENT[moonlet]}" -v N="${WALL[nginx_lua]}" -v M="${WALL[moonlet]}" \
      'function avg(l,   a, i, k, t) { k = split(l, a, " "); for (i = 1; i <= k; i++) t += a[i]; return t / k }
       BEGIN { s = avg(S); n = avg(N); m = avg(M);
               printf "  floor: the client sent its last request to moonlet after %.2f s, so no server could\n", s;
               printf "  answer it before %.2f s: %.2f x nginx + Lua at best (moonlet took %.2f s, %.2f s after that)\n",
                 s + 1, (s + 1) / n, m, m - s - 1 }'
  fi
  echo "wall = first request sent -> last response received, 2 runs each (a fresh server each"
  echo "  run, the peers in the order $PEERS, then back); KB/conn = (VmHWM after - VmRSS"
  echo "  before) / $n of the process holding the connections (nginx: its worker); RSS: the"
  echo "  last run. Open-files limit $(( n + 1024 )) for each; each peer's own listen backlog"
  echo "  (burst reconnects after 100 ms when a SYN is dropped). moonlet: apps/hello."
  echo "last sent = when the client had sent its last request (s after the first): no server"
  echo "  answers before that + 1 s; CPU us/conn = the server's CPU time during the burst / $n"
  echo "  (accept, request, timer, response, close)."
  moonlet_log peers_sleep_moonlet
}

# 4. GET /account/{id} (pgbench's select-only statement, random ids) through moonlet
#    (bench/apps/pg_read), FastAPI + asyncpg and Node + pg, each with a pool of C
#    connections, wrk -t1 -c64, A B C C B A; then pgbench -S -M prepared -c C for reference.
bench_peers_pg() {
  local c=${BENCH_PG_POOL:-16} scale=10 t targets="" accounts out tps check secs
  local -A T_URL=() T_CPU=() R_RPS=() R_P99=() R_US=() R_USER=() R_ERR=() P_PIDS=()
  local PEER_PG=1
  section "peers: PostgreSQL point select, GET /account/{id}: moonlet vs FastAPI + asyncpg vs Node + pg ($c connections each)"
  peers_header
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  command -v pgbench >/dev/null || die "pgbench not installed (the postgresql-client package)"
  accounts=$(( scale * 100000 ))
  pg_bench_db "$scale"
  peers_present moonlet fastapi_pg node_pg
  for t in $PEERS; do
    t=${t%_pg}
    BENCH_PG_URL="postgres://bench:bench@127.0.0.1:$PG_PORT/bench?sslmode=disable" \
      BENCH_PG_POOL=$c start_peer "$t" "peers_pg_$t" 4096 bench/apps/pg_read
    check=$(curl -s -m 5 "http://127.0.0.1:$P_PORT/account/4242")
    [ "$check" = '{"abalance":0}' ] || die "$t: GET /account/4242 answered '$check'"
    P_PIDS[$t]=$P_PID T_URL[$t]=http://127.0.0.1:$P_PORT T_CPU[$t]=$P_CPU
    targets="$targets $t"
  done
  export WRK_ID_PREFIX=/account/ WRK_ID_MAX=$accounts
  # shellcheck disable=SC2086 # the targets, one argument each
  W_SCRIPT=bench/wrk_random_id.lua peers_wrk peers_pg $targets
  unset WRK_ID_PREFIX WRK_ID_MAX
  peers_stop
  secs=${W_HALF%s}
  out=$(PGPASSWORD=bench run_fg timeout -k 5 $((secs + 60)) pgbench -n -S -c "$c" -j 1 \
    -T "$secs" -M prepared -h 127.0.0.1 -p "$PG_PORT" -U bench bench 2>&1) ||
    { echo "$out" >&2; die "pgbench failed"; }
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
  stop_pg
  # shellcheck disable=SC2086
  peers_wrk_table $targets
  printf '%-28s %9s   (PostgreSQL protocol, no HTTP; one run of %s)\n' \
    "pgbench -S -M prepared -c $c" "$(printf '%.0f' "$tps")" "$W_HALF"
  for t in fastapi node; do
    [ -n "${R_RPS[$t]:-}" ] || continue
    printf 'req/s, moonlet / %s: %s   target >= 2: %s\n' "$(peer_label "$t")" \
      "$(ratio_of "$(mean "${R_RPS[moonlet]}")" "$(mean "${R_RPS[$t]}")")" \
      "$(awk -v a="$(mean "${R_RPS[moonlet]}")" -v b="$(mean "${R_RPS[$t]}")" \
        'BEGIN { print (a >= 2 * b ? "met" : "NOT met") }')"
  done
  printf 'req/s, moonlet / pgbench -S -M prepared: %s\n' \
    "$(ratio_of "$(mean "${R_RPS[moonlet]}")" "$tps")"
  echo "wrk -t1 -c64 with a random id in 1..$accounts (bench/wrk_random_id.lua) against each"
  echo "  server in the order$targets, then back ($W_HALF each, 1 s warm-up each); every server holds"
  echo "  a pool of $c connections to one throwaway cluster (pgbench -i -s $scale, prewarmed; TCP"
  echo "  with SCRAM). moonlet: bench/apps/pg_read (libpq, prepared once per connection, no"
  echo "  pipelining: BENCH_PG_PIPELINE unset, as the peers have none); FastAPI:"
  echo "  asyncpg's pool (prepared statements, cached); Node: pg's Pool (unnamed statement)."
  echo "  CPU us/req: the HTTP server's own CPU time (not PostgreSQL's) per request."
  moonlet_log peers_pg_moonlet
}

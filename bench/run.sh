#!/usr/bin/env bash
# bench/run.sh — moonlet's benchmarks (run by `make bench`, after `make`).
#
# Prints one plain-text table per section. Every server it starts binds 127.0.0.1 only,
# every load is bounded in time, and everything it started is stopped on exit (trap).
#
#   bench/run.sh                       all sections
#   BENCH_ONLY=hello bench/run.sh      one section (comma-separated list: hello,sleep_burst)
#   BENCH_PG_POOL=4 BENCH_PG_PIPELINE=16 BENCH_PG_CLIENTS=16 bench/run.sh
#                                      the pg section: moonlet's pool and pipeline, pgbench -c
#   BENCH_REDIS_N=300000 bench/run.sh  requests of each redis-benchmark test (redis section)
#   BENCH_JOBS_N=100000 BENCH_JOBS_CELERY_N=5000 bench/run.sh   jobs of the jobs section
#   BENCH_DURATION=3s bench/run.sh     shorter wrk runs (default 10s)
#   BENCH_TLS_PIN=0 bench/run.sh       tls section: wrk and the servers share the CPUs (default: pinned)
#   BENCH_TLS_CAP=40 bench/run.sh      tls section: the capped pass holds the servers to 40% of a CPU
#                                      (default 50; a cgroup, root only)
#   BENCH_ONLY=peers_hello,peers_seed,peers_sleep,peers_pg bench/run.sh
#                                      moonlet beside nginx+lua, FastAPI and Node (bench/peers.sh)
#   BUILD=build-asan bench/run.sh      another build directory (default build)
#
# Adding a section: write a function bench_NAME that prints its own table (use the helpers
# of bench/lib.sh: start_moonlet, stop_pid, run_fg, rss_kb, cpu_ticks, wrk_run, build_burst, burst_run,
# section), add NAME to SECTIONS, and run it alone with BENCH_ONLY=NAME.

# Table formats live in variables (fmt) on purpose.
# shellcheck disable=SC2059
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOONLET=$BUILD/moonlet
DURATION=${BENCH_DURATION:-10s}
SECTIONS="hello sleep_burst seed cpu pool_overhead routes validation framework fanout stream"
SECTIONS="$SECTIONS sqlite pg static websocket test_client reload shared embed workers metrics"
SECTIONS="$SECTIONS tls redis jobs peers_hello peers_seed peers_sleep peers_pg"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moonlet-bench.XXXXXX")
STARTED=""   # pids of the processes this script started and has not stopped yet
PG_DIR=""    # the throwaway PostgreSQL cluster of bench_pg (start_pg), while it exists

# shellcheck source=bench/lib.sh
. bench/lib.sh
# shellcheck source=bench/peers.sh
. bench/peers.sh

cleanup() {
  local pid
  for pid in $STARTED; do stop_pid "$pid"; done
  uncap
  stop_pg
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- sections

# 1. GET /hello: moonlet against nginx returning the same body, one after the other.
bench_hello() {
  local m_rps m_p99 m_err m_cpu m_rss n_rps="" n_p99="" n_err="" n_cpu="" ratio verdict fmt
  local -a ng_pids
  section "GET /hello: moonlet vs nginx (wrk -t1 -c64 -d$DURATION --latency, 1 s warm-up each)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"

  start_moonlet hello
  wrk_run moonlet "http://127.0.0.1:$ML_PORT/hello" "$ML_PID"
  m_rps=$W_RPS m_p99=$W_P99 m_err=$W_ERRORS m_cpu=$W_CPU
  m_rss=$(rss_kb "$ML_PID")
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the run"
  stop_pid "$ML_PID"

  if command -v nginx >/dev/null; then
    start_nginx
    # the CPU of the master and its worker
    read -r -a ng_pids <<<"$NG_PID $(pgrep -P "$NG_PID" | tr '\n' ' ')"
    wrk_run nginx "http://127.0.0.1:$NG_PORT/hello" "${ng_pids[@]}"
    n_rps=$W_RPS n_p99=$W_P99 n_err=$W_ERRORS n_cpu=$W_CPU
    stop_pid "$NG_PID"
  fi

  fmt='%-22s %12s %10s %8s %11s\n'
  printf "$fmt" "server" "req/s" "p99" "errors" "server CPU"
  printf "$fmt" "----------------------" "------------" "----------" "--------" "-----------"
  printf "$fmt" "moonlet" "$m_rps" "$m_p99" "$m_err" "$m_cpu"
  if [ -n "$n_rps" ]; then
    printf "$fmt" "nginx" "$n_rps" "$n_p99" "$n_err" "$n_cpu"
    ratio=$(awk -v a="$m_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", a / b }')
    verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.80 ? "met" : "NOT met") }')
    printf '%-22s %12s   target >= 0.80: %s\n' "ratio moonlet/nginx" "$ratio" "$verdict"
  else
    printf "$fmt" "nginx" "(not installed)" "" ""
  fi
  echo "moonlet RSS after the run: $(mb "$m_rss") MB (VmRSS)"
  echo "note: nginx runs worker_processes 1 (moonlet has one event-loop thread). wrk (one thread)"
  echo "      shares the machine's $(nproc) CPUs: a server CPU well below 100% means wrk was the limit."
  echo "      errors = wrk socket errors + non-2xx/3xx responses; server CPU = user+system, % of one CPU."
  moonlet_log hello
}

# 2. 10,000 concurrent GET /sleep?s=1, one connection each (bench/burst.c), on a fresh moonlet.
bench_sleep_burst() {
  local n=10000 burst=$BUILD/bench/burst sampler out detail rc=0 rss0 rss1 hwm peak sampled
  local completed errors total growth fmt t_ok g_ok ovf0 ovf
  section "10,000 concurrent GET /sleep?s=1 (bench/burst: one connection per request)"
  mkdir -p "$BUILD/bench"
  cc -O2 -o "$burst" bench/burst.c

  start_moonlet burst apps/hello $((n + 1024))
  sleep 0.2
  rss0=$(rss_kb "$ML_PID")
  echo "$rss0" >"$TMP/rss_max"
  (
    max=$rss0
    while kill -0 "$ML_PID" 2>/dev/null; do
      r=$(rss_kb "$ML_PID")
      if [ "$r" -gt "$max" ]; then max=$r; echo "$max" >"$TMP/rss_max"; fi
      sleep 0.1
    done
  ) &
  sampler=$!
  STARTED="$STARTED $sampler"

  ovf0=$(listen_overflows)
  run_fg "$burst" 127.0.0.1 "$ML_PORT" "$n" "/sleep?s=1" 30 >"$TMP/burst.burst" \
    2>"$TMP/burst.burst.err" || rc=$?
  ovf=$(( $(listen_overflows) - ovf0 ))
  rss1=$(rss_kb "$ML_PID")
  hwm=$(rss_kb "$ML_PID" VmHWM)
  stop_pid "$sampler"
  sampled=$(cat "$TMP/rss_max")
  peak=$(printf '%s\n' "$sampled" "$rss1" "$hwm" | sort -n | tail -1)
  burst_parse burst "$rc" "/sleep?s=1"
  out=$(cat "$TMP/burst.burst")
  completed=$B_DONE errors=$B_ERRORS total=$B_TIME detail=$B_DETAIL
  growth=$(( peak - rss0 ))
  t_ok=$(awk -v t="$total" -v c="$completed" -v n="$n" 'BEGIN { print (t < 1.3 && c == n ? "met" : "NOT met") }')
  g_ok=$(awk -v g="$growth" 'BEGIN { print (g / 1024 < 80 ? "met" : "NOT met") }')

  fmt='%-9s %10s %15s %16s %14s %12s\n'
  printf "$fmt" "requests" "completed" "total time (s)" "RSS before (MB)" "RSS peak (MB)" "growth (MB)"
  printf "$fmt" "---------" "----------" "---------------" "----------------" "--------------" "------------"
  printf "$fmt" "$n" "$completed" "$total" "$(mb "$rss0")" "$(mb "$peak")" "$(mb "$growth")"
  printf "$fmt" "target" "$n" "< 1.3" "" "" "< 80"
  printf "$fmt" "result" "" "$t_ok" "" "" "$g_ok"
  echo "total time = first request sent -> last response received; errors: $errors"
  echo "RSS peak = max(VmRSS sampled every 100 ms: $(mb "$sampled"), at the end: $(mb "$rss1"), VmHWM: $(mb "$hwm")) MB"
  echo "burst: $out"
  echo "moonlet's open-files limit: $(awk '/^Max open files/ { print $4 }' "/proc/$ML_PID/limits")" \
    "(set by run.sh with ulimit -n)"
  # the spread of the sends is the client's connect rate; the latency is the server's share
  echo "$detail" | awk -v ovf="$ovf" -v q="$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo '?')" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "requests sent over %s (first to last send); per request, sent -> response:", v["last_send_after_first"]
    printf " min %s, p50 %s, p99 %s, max %s\n", v["latency_min"], v["p50"], v["p99"], v["max"]
    printf "listen queue (backlog 4096, capped by net.core.somaxconn = %s) full: %d connection attempts dropped (kernel ListenOverflows), %d connects restarted after 100 ms\n", q, ovf, v["connect_retries"]
    n = split("connect reset early_close status timeout parse", ek, " ")
    for (i = 1; i <= n; i++) if (ek[i] in v) printf "errors %s: %s\n", ek[i], v[ek[i]] }'
  if ! kill -0 "$ML_PID" 2>/dev/null; then
    echo "!! moonlet exited during the burst"
  fi
  stop_pid "$ML_PID"
  moonlet_log burst
}

# 3. The seed experiment (shared/seeds): 100 concurrent requests to /b, /c, /d of
#    apps/seed_demo (each waits 1 s), /b twice (its executor threads starting, then
#    started), /d again with --pool-size 100, and /a (the blocking mistake) with only 10
#    requests, since they run one after the other.
bench_seed() {
  local fmt d_pid d_port p_pid p_port w0 w1 warns rows="" r
  section "The seed experiment: concurrent GETs to apps/seed_demo, each route waits 1 s (bench/burst)"
  build_burst

  start_moonlet seed apps/seed_demo
  d_pid=$ML_PID d_port=$ML_PORT
  # seed_row ROUTE KIND N THREADS EXPECTED TARGET FASTAPI PORT: one burst, one row of the
  # table (THREADS: the pool's for /d, the executor's for /b)
  seed_row() {
    local route=$1 kind=$2 n=$3 pool=$4 expected=$5 target=$6 fastapi=$7 port=$8 result label
    burst_run "seed_${route#/}_$pool" "$port" "$n" "$route" 40
    case $target in
      "< 1.1") result=$(awk -v t="$B_TIME" 'BEGIN { print (t < 1.1 ? "met" : "NOT met") }') ;;
      "< 1.3") result=$(awk -v t="$B_TIME" 'BEGIN { print (t < 1.3 ? "met" : "NOT met") }') ;;
      "~3") result=$(awk -v t="$B_TIME" 'BEGIN { print (t >= 2.7 && t < 3.5 ? "met" : "NOT met") }') ;;
      *) result="-" ;;
    esac
    [ "$B_DONE" = "$n" ] || result="$result ($B_ERRORS errors)"
    label=$n
    [ "$n" = 100 ] || label="$n, not 100"
    rows="$rows$(printf "$fmt" "$route" "$kind" "$label" "$pool" "$B_TIME" \
      "$(printf '%.2f-%.2f' "${B_LAT_MIN:-0}" "${B_LAT_MAX:-0}")" "$expected" "$target" \
      "$result" "$fastapi")"$'\n'
  }
  fmt='%-5s %-29s %11s %4s %8s %11s %8s %6s %7s  %s\n'
  seed_row /b "run_in_pool, threads starting" 100 e128 "~1.2" "-" "1 s" "$d_port"
  seed_row /b "run_in_pool, threads started" 100 e128 "~1" "< 1.1" "1 s" "$d_port"
  seed_row /c "coroutine, moonlet.sleep" 100 - "~1" "< 1.3" "1 s" "$d_port"
  seed_row /d "pooled ({ pool = true })" 100 40 "~3" "~3" "3 s" "$d_port"
  w0=$(count_lines "$TMP/moonlet-seed.err" "blocked the event loop")
  seed_row /a "coroutine, blocking FFI sleep" 10 - "~10" "-" "100 s (100 req.)" "$d_port"
  sleep 0.2   # the last warning is written from the watchdog thread
  w1=$(count_lines "$TMP/moonlet-seed.err" "blocked the event loop")
  warns=$(( w1 - w0 ))
  kill -0 "$d_pid" 2>/dev/null || echo "!! moonlet (seed) exited during the runs"
  stop_pid "$d_pid"

  start_moonlet seed100 apps/seed_demo "" --pool-size 100
  p_pid=$ML_PID p_port=$ML_PORT
  seed_row /d "pooled ({ pool = true })" 100 100 "~1" "< 1.3" "3 s" "$p_port"
  kill -0 "$p_pid" 2>/dev/null || echo "!! moonlet (seed100) exited during the runs"
  stop_pid "$p_pid"

  printf "$fmt" "route" "kind" "concurrency" "thr." "wall (s)" "per req (s)" "expected" \
    "target" "result" "FastAPI in the seeds"
  printf "$fmt" "-----" "-----------------------------" "-----------" "----" "--------" \
    "-----------" "--------" "------" "-------" "--------------------"
  # /a first, as in the seeds
  r=$(echo "$rows" | grep '^/a ' || true)
  echo "$r"
  echo "$rows" | grep -v '^/a ' | grep -v '^$' || true
  echo "wall = first request sent -> last response received; all requests are sent at once, one"
  echo "connection each; per req = fastest-slowest request (sent -> response). thr. = the threads"
  echo "the route's blocking calls run on: --pool-size for pooled routes (/d; 40 by default, like"
  echo "AnyIO's 40 threads), e128 = --executor-size for run_in_pool (/b; 128 by default), threads"
  echo "apart from the pool's. Each server is fresh: the first run of each starts its threads."
  echo "/a: 10 requests, not 100 -- they serialise on the event loop (~1 s each, ~100 s for 100)."
  echo "/a: $warns 'blocked the event loop' warnings logged for its 10 requests, e.g.:"
  grep -F "blocked the event loop" "$TMP/moonlet-seed.err" | head -1 |
    sed 's/: use moonlet\.sleep.*/: use moonlet.sleep or .../; s/^/  | /'
  r=$(grep -cvF "blocked the event loop" "$TMP/moonlet-seed.err" "$TMP/moonlet-seed100.err" \
    2>/dev/null | awk -F: '{ n += $NF } END { print n + 0 }')
  if [ "$r" -gt 0 ]; then
    echo "other lines moonlet logged:"
    grep -hvF "blocked the event loop" "$TMP/moonlet-seed.err" "$TMP/moonlet-seed100.err" |
      head -5 | sed 's/^/  | /'
  fi
}

# 4. /cpu parallel speed-up: CPU-bound pooled handlers run on both cores at once (no GIL).
bench_cpu() {
  local n t_cal t1="" t2="" t1_all="" t2_all="" i speedup verdict fmt load
  # cpu_burst NAME N PATH: burst_run, plus B_CPU: the server's CPU use meanwhile (% of one CPU)
  cpu_burst() {
    local c0 c1 s0 s1
    c0=$(cpu_ticks "$ML_PID") s0=$(date +%s.%N)
    burst_run "$1" "$ML_PORT" "$2" "$3" 60
    c1=$(cpu_ticks "$ML_PID") s1=$(date +%s.%N)
    [ "$B_DONE" = "$2" ] || die "$2 x $3 failed: $B_DETAIL"
    B_CPU=$(awk -v c="$(( c1 - c0 ))" -v hz="$(getconf CLK_TCK)" -v t0="$s0" -v t1="$s1" \
      'BEGIN { printf "%.0f%%", 100 * c / hz / (t1 - t0) }')
  }
  section "GET /cpu?n=N (pooled, pure Lua arithmetic): 2 concurrent vs 1 (bench/burst)"
  build_burst
  start_moonlet cpu apps/seed_demo
  # warm-up: starts two pool threads (each loads the app into its own LuaJIT state)
  burst_run cpu_warm "$ML_PORT" 2 "/cpu?n=1000000" 30
  # calibrate: N so that one request takes about 0.7 s
  burst_run cpu_cal "$ML_PORT" 1 "/cpu?n=10000000" 30
  t_cal=$B_TIME
  n=$(awk -v t="$t_cal" 'BEGIN { n = 0.7 / (t > 0.001 ? t : 0.001) * 10; if (n < 10) n = 10;
    if (n > 1000) n = 1000; printf "%d000000", n }')
  load=$(cut -d' ' -f1 /proc/loadavg)
  for i in 1 2 3; do
    cpu_burst "cpu_one_$i" 1 "/cpu?n=$n"
    t1=$(awk -v a="$t1" -v b="$B_TIME" 'BEGIN { print (a == "" || b < a ? b : a) }')
    t1_all="$t1_all $B_TIME/$B_CPU"
  done
  for i in 1 2 3; do
    cpu_burst "cpu_two_$i" 2 "/cpu?n=$n"
    t2=$(awk -v a="$t2" -v b="$B_TIME" 'BEGIN { print (a == "" || b < a ? b : a) }')
    t2_all="$t2_all $B_TIME/$B_CPU"
  done
  speedup=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", 2 * a / b }')
  verdict=$(awk -v s="$speedup" 'BEGIN { print (s >= 1.7 ? "met" : "NOT met") }')
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the runs"
  stop_pid "$ML_PID"

  fmt='%-34s %10s   %s\n'
  printf "$fmt" "n = $n" "wall (s)" "the 3 runs: wall (s)/server CPU"
  printf "$fmt" "----------------------------------" "----------" "-------------------------------"
  printf "$fmt" "1 request (best of 3): t1" "$t1" "$t1_all"
  printf "$fmt" "2 concurrent requests (best of 3): t2" "$t2" "$t2_all"
  printf "$fmt" "speed-up = 2 x t1 / t2" "$speedup" ""
  printf "$fmt" "target >= 1.7 ($(nproc) CPUs)" "$verdict" ""
  echo "N chosen so that one request takes ~0.7 s (n=10000000 took ${t_cal} s on a fresh thread)."
  echo "wall = request sent -> last response; the server's loop thread, burst and anything else"
  echo "running on this machine share its $(nproc) CPUs (best of 3 to keep out passing load; the"
  echo "1-minute load average was $load before these runs). server CPU: % of one CPU, ~200% = both"
  echo "cores busy with the two requests."
  moonlet_log cpu
}

# 5. Pooled vs coroutine /hello (the cost of crossing to a pool thread and back), and the
#    memory of 40 pool states.
bench_pool_overhead() {
  local ratio verdict fmt rss0 rss1 anon0 anon1 th0 th1 g g_ok
  section "GET /hello (coroutine) vs /hello-pool ({ pool = true }), apps/seed_demo (wrk -t1 -c64 --latency)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  build_burst

  start_moonlet pool apps/seed_demo
  wrk_abba pool "http://127.0.0.1:$ML_PORT/hello" "$ML_PID" \
    "http://127.0.0.1:$ML_PORT/hello-pool" "$ML_PID"
  th1=$(threads_of "$ML_PID")
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the runs"
  stop_pid "$ML_PID"

  abba_table "route" "/hello (coroutine)" "/hello-pool (pooled)"
  ratio=$(awk -v a="$WB_RPS" -v b="$WA_RPS" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8 ? "met" : "NOT met") }')
  printf '%-22s %10s   target >= 0.80: %s\n' "ratio pooled/coroutine" "$ratio" "$verdict"
  echo "one server, loaded in the order /hello, /hello-pool, /hello-pool, /hello ($W_HALF each, 1 s"
  echo "warm-up each); req/s = mean of the two; CPU us/req = the server's CPU time per request"
  echo "(all its threads). The server had $th1 threads after the pooled runs."
  moonlet_log pool

  # RSS of 40 pool states: a fresh server, then 40 concurrent /d (each holds a thread 1 s)
  start_moonlet pool_rss apps/seed_demo
  sleep 0.3
  rss0=$(rss_kb "$ML_PID") anon0=$(rss_kb "$ML_PID" RssAnon) th0=$(threads_of "$ML_PID")
  burst_run pool_rss "$ML_PORT" 40 /d 30
  sleep 0.3
  rss1=$(rss_kb "$ML_PID") anon1=$(rss_kb "$ML_PID" RssAnon) th1=$(threads_of "$ML_PID")
  [ "$B_DONE" = 40 ] || echo "!! 40 x /d: $B_DONE completed, $B_ERRORS errors ($B_DETAIL)"
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the runs"
  stop_pid "$ML_PID"
  g=$(( rss1 - rss0 ))
  g_ok=$(awk -v g="$g" 'BEGIN { print (g / 1024 < 100 ? "met" : "NOT met") }')
  fmt='%-34s %9s %11s %9s\n'
  printf '\n'
  printf "$fmt" "40 pool states (fresh server)" "VmRSS MB" "RssAnon MB" "threads"
  printf "$fmt" "----------------------------------" "---------" "-----------" "---------"
  printf "$fmt" "before" "$(mb "$rss0")" "$(mb "$anon0")" "$th0"
  printf "$fmt" "after 40 concurrent /d (${B_TIME} s)" "$(mb "$rss1")" "$(mb "$anon1")" "$th1"
  printf "$fmt" "growth" "$(mb "$g")" "$(mb $(( anon1 - anon0 )))" "$(( th1 - th0 ))"
  printf '%-34s %9s\n' "target growth < 100 MB" "$g_ok"
  echo "RssAnon: the process's own memory (heap, Lua states, thread stacks); VmRSS also counts"
  echo "the pages of the binary and shared libraries it has touched."
  moonlet_log pool_rss
}

# 6. 1,000 routes must not slow /hello: a generated app with /hello and 1,000 other routes
#    against apps/hello, one after the other.
bench_routes() {
  local dir=$TMP/routes_app h_pid h_port code1 code2 code3
  section "GET /hello with 1,000 other routes vs apps/hello (wrk -t1 -c64 --latency)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  mkdir -p "$dir"
  {
    echo 'local moonlet = require "moonlet"'
    echo 'local app = moonlet.app{ title = "1000 routes", version = "1.0.0" }'
    echo 'app:get("/hello", function() return { message = "hello" } end)'
    echo '-- 500 static routes and 500 with an int parameter, each its own first segment'
    local i
    for i in $(seq 1 500); do
      echo "app:get(\"/r$i/items\", function() return { r = $i } end)"
      echo "app:get(\"/r$i/items/{id:int}\", function(req) return { r = $i, id = req.params.id } end)"
    done
    echo 'return app'
  } >"$dir/app.lua"

  start_moonlet hello_plain apps/hello
  h_pid=$ML_PID h_port=$ML_PORT
  start_moonlet routes "$dir"
  # the generated routes answer (and a wrong type does not match)
  code1=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ML_PORT/r123/items")
  code2=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ML_PORT/r500/items/42")
  code3=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ML_PORT/r500/items/x")
  wrk_abba routes "http://127.0.0.1:$h_port/hello" "$h_pid" \
    "http://127.0.0.1:$ML_PORT/hello" "$ML_PID"
  kill -0 "$h_pid" 2>/dev/null || echo "!! moonlet (apps/hello) exited during the runs"
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet (1,000 routes) exited during the runs"
  stop_pid "$h_pid"
  stop_pid "$ML_PID"

  abba_table "app" "apps/hello (4 routes)" "/hello + 1,000 routes"
  abba_ratio "ratio 1,000/hello" " (no measurable slowdown)" "1,000 routes / apps/hello"
  echo "both servers run side by side, loaded one at a time in the order apps/hello, 1,000 routes,"
  echo "1,000 routes, apps/hello ($W_HALF each, 1 s warm-up each); req/s = mean of the two;"
  echo "CPU us/req = the server's user+system CPU time per request (other load on the machine"
  echo "moves req/s far more than it moves this)."
  echo "generated app: 500 static /rI/items + 500 /rI/items/{id:int}; answers: /r123/items $code1,"
  echo "/r500/items/42 $code2, /r500/items/x $code3 (expected 200, 200, 404)"
  moonlet_log routes
}

# validation: a 422 answer vs a 200 answer of the same validated route (bench/apps/validation): the
#    issue's target is a 422 costing no more than 2 x a 200.
bench_validation() {
  local ok_url bad_url ok_body bad_body ratio verdict
  section "GET /items validated (query schema): 200 vs 422, bench/apps/validation (wrk -t1 -c64 --latency)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  start_moonlet validation bench/apps/validation
  ok_url="http://127.0.0.1:$ML_PORT/items?limit=10&q=towel"
  bad_url="http://127.0.0.1:$ML_PORT/items?limit=ten&q=towel"
  ok_body=$(curl -s -m 5 "$ok_url")
  bad_body=$(curl -s -m 5 "$bad_url")
  case $ok_body in *'"limit":10'*'"page":1'* | *'"page":1'*'"limit":10'*) ;;
    *) die "the 200 route answered '$ok_body'" ;; esac
  case $bad_body in *'"type":"int_parsing"'*) ;; *) die "the 422 route answered '$bad_body'" ;; esac
  wrk_abba validation "$ok_url" "$ML_PID" "$bad_url" "$ML_PID"
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the runs"
  stop_pid "$ML_PID"

  abba_table "answer" "200 limit=10" "422 limit=ten" "non-2xx"
  ratio=$(awk -v a="$WB_US" -v b="$WA_US" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 2 ? "met" : "NOT met") }')
  printf '%-22s %10s   target <= 2.00 (server CPU per request, 422 / 200): %s\n' \
    "cost ratio 422/200" "$ratio" "$verdict"
  printf '%-22s %10s   (req/s, 200 / 422)\n' "req/s ratio" \
    "$(awk -v a="$WA_RPS" -v b="$WB_RPS" 'BEGIN { printf "%.2f", a / b }')"
  echo "one server, one route (query limit: integer 1..100, q: string, page: default 1), loaded"
  echo "in the order 200, 422, 422, 200 ($W_HALF each, 1 s warm-up each); every 422 is counted"
  echo "by wrk as non-2xx. The 422 body: $bad_body"
  moonlet_log validation
}

# framework: the issue's target for the framework layer: a route with two dependencies, a
# validated query of three fields and one middleware (bench/apps/framework) keeps >= 0.8 x
# the req/s of the bare /hello (apps/hello), A/B/B/A in one run.
bench_framework() {
  local hello_pid hello_port fw_url body ratio verdict
  section "Framework layer: GET /items (2 deps, 3 validated query fields, 1 middleware) vs bare GET /hello (wrk -t1 -c64 --latency)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  start_moonlet hello apps/hello
  hello_pid=$ML_PID hello_port=$ML_PORT
  start_moonlet framework bench/apps/framework
  fw_url="http://127.0.0.1:$ML_PORT/items?limit=10&q=towel&page=2"
  body=$(curl -s -m 5 "$fw_url")
  case $body in *'"limit":10'*) ;; *) die "the framework route answered '$body'" ;; esac
  wrk_abba framework "http://127.0.0.1:$hello_port/hello" "$hello_pid" "$fw_url" "$ML_PID"
  stop_pid "$ML_PID"
  stop_pid "$hello_pid"
  abba_table "route" "bare /hello" "/items (framework)"
  ratio=$(awk -v a="$WB_RPS" -v b="$WA_RPS" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8 ? "met" : "NOT met") }')
  printf '%-22s %10s   target >= 0.80 (req/s, framework / bare): %s\n' "req/s ratio" \
    "$ratio" "$verdict"
  printf '%-22s %10s   (server CPU per request, framework / bare)\n' "cost ratio" \
    "$(awk -v a="$WB_US" -v b="$WA_US" 'BEGIN { printf "%.2f", a / b }')"
  echo "two servers (one per app), loaded in the order hello, items, items, hello ($W_HALF each)."
  echo "The /items body: $body"
}

# ---------------------------------------------------------------------------- fanout

# fanout: apps/aggregator's /fanout?n=K&ms=100 makes K concurrent moonlet.http calls to its
# own /upstream/delay?ms=100 and gathers them. One request at a time (curl), 3 warm-ups then
# 20 measured runs per K; the issue's targets are on the median.
bench_fanout() {
  local k i out code t f errors min p50 max target verdict runs=20
  local fmt='%-24s %8s %8s %8s %7s   %s\n'
  section "fanout: GET /fanout?n=K&ms=100 (K concurrent moonlet.http calls, moonlet.gather)"
  local port
  port=$(free_port)
  UPSTREAM_URL="http://127.0.0.1:$port" start_moonlet fanout apps/aggregator 65536 --port "$port"
  printf "$fmt" "request" "min ms" "p50 ms" "max ms" "errors" "target (p50)"
  for k in 10 100; do
    f="$TMP/fanout-$k.times"
    : >"$f"
    errors=0
    for i in $(seq $((runs + 3))); do
      out=$(curl -s -o "$TMP/fanout.body" -w '%{http_code} %{time_total}' -m 10 \
        "http://127.0.0.1:$ML_PORT/fanout?n=$k&ms=100") || out="000 0"
      [ "$i" -le 3 ] && continue
      code=${out% *}
      t=${out#* }
      if [ "$code" != 200 ] || ! grep -q "\"count\":$k" "$TMP/fanout.body"; then
        errors=$((errors + 1))
        continue
      fi
      echo "$t" >>"$f"
    done
    min=$(sort -n "$f" | head -1 | awk '{ printf "%.1f", $1 * 1000 }')
    max=$(sort -n "$f" | tail -1 | awk '{ printf "%.1f", $1 * 1000 }')
    p50=$(sort -n "$f" | awk '{ v[NR] = $1 } END { if (NR) printf "%.1f", v[int((NR + 1) / 2)] * 1000 }')
    target=$([ "$k" = 10 ] && echo 150 || echo 250)
    verdict=$(awk -v p="${p50:-1e9}" -v t="$target" -v e="$errors" \
      'BEGIN { print (p < t && e == 0 ? "met" : "NOT met") }')
    printf "$fmt" "/fanout?n=$k&ms=100" "${min:--}" "${p50:--}" "${max:--}" "$errors" \
      "< $target ms: $verdict"
  done
  echo "each call opens or reuses a keep-alive connection to the same server (64 kept idle"
  echo "per host); the upstream's 100 ms is a moonlet.sleep, so the rest is client overhead."
  stop_pid "$ML_PID"
  moonlet_log fanout
}

# bench_stream: a 100 MB moonlet.stream read at 1 MiB/s for BENCH_STREAM_SECONDS (default
# 15) by a small Python reader (64 KiB reads, paced): the server's RSS before, at its
# highest (sampled every 0.5 s) and after, and how far the producer got ahead of the reader
# (the kernel's socket buffers + the 64 KiB high-water mark beyond which send() waits).
bench_stream() {
  local secs=${BENCH_STREAM_SECONDS:-15} fmt='%-34s %12s\n' before peak now reader got produced
  section "stream: a 100 MB moonlet.stream read at 1 MiB/s for ${secs} s"
  start_moonlet stream tests/apps/stream   # the spec's app: /big?mb=N, /state?key=big
  curl -s "http://127.0.0.1:$ML_PORT/state?key=big" >/dev/null   # the app's first request
  before=$(rss_kb "$ML_PID")
  peak=$before
  /usr/bin/python3 - "$ML_PORT" "$secs" >"$TMP/stream.got" <<'PY' &
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /big?mb=100 HTTP/1.1\r\nHost: bench\r\n\r\n")
got, start = 0, time.monotonic()
while time.monotonic() - start < secs:
    data = s.recv(65536)
    if not data:
        break
    got += len(data)
    ahead = got / 1048576 - (time.monotonic() - start)   # seconds ahead of 1 MiB/s
    if ahead > 0:
        time.sleep(ahead)
s.close()
print(got)
PY
  reader=$!
  STARTED="$STARTED $reader"
  while kill -0 "$reader" 2>/dev/null; do
    now=$(rss_kb "$ML_PID")
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.5
  done
  wait "$reader" 2>/dev/null || true
  forget_pid "$reader"
  sleep 0.2   # the server sees the close: the producer stops
  got=$(cat "$TMP/stream.got")
  produced=$(curl -s "http://127.0.0.1:$ML_PORT/state?key=big" | tr -cd '0-9')
  now=$(rss_kb "$ML_PID")
  printf "$fmt" "read by the client (with head)" "$(mb $((got / 1024))) MB"
  printf "$fmt" "produced when it left" "$(mb $((produced / 1024))) MB"
  printf "$fmt" "server RSS before" "$(mb "$before") MB"
  printf "$fmt" "server RSS at its highest" "$(mb "$peak") MB"
  printf "$fmt" "server RSS after the client left" "$(mb "$now") MB"
  awk -v g=$((peak - before)) 'BEGIN { printf "RSS growth %.2f MB (target < 2 MB: %s)\n",
    g / 1024, g < 2048 ? "met" : "NOT met" }'
  echo "the producer runs ahead of the reader by what the kernel's socket buffers hold"
  echo "(net.ipv4.tcp_wmem/tcp_rmem: $(awk '{ print $3 }' /proc/sys/net/ipv4/tcp_wmem) +" \
    "$(awk '{ print $3 }' /proc/sys/net/ipv4/tcp_rmem) bytes at most) plus 64 KiB of moonlet's own."
  stop_pid "$ML_PID"
  moonlet_log stream
}

# ---------------------------------------------------------------------------- databases

# 7. SQLite: /hello latency (wrk -t1 -c4) alone, then while bench/burst sends rounds of
#    1,000 concurrent /item/{i} back to back, then while wrk -c1000 keeps 1,000 /item/ID in
#    flight (bench/apps/sqlite_read: one point read per request on a 10,000-row table).
bench_sqlite() {
  local rows=10000 n=1000 secs=5 url base_rps base_p99 base_err rounds=0 b_err=0 b_times="" b_p99s=""
  local hello_pid b_med b_min b_max b_p99 b_rps load_rps load_p99 load_err fmt check c0 c1 t0 t1
  local h1_rps h1_p99 h1_err h2_rps h2_p99 h2_err b_cpu l_cpu load_pid a0 a1 b_all l_all
  section "SQLite point reads (GET /item/{id}, moonlet.db) and GET /hello beside them (bench/apps/sqlite_read)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  build_burst
  mkdir -p "$TMP/sqlite"
  BENCH_SQLITE_PATH=$TMP/sqlite/items.db BENCH_SQLITE_ROWS=$rows \
    start_moonlet sqlite bench/apps/sqlite_read 4096
  url=http://127.0.0.1:$ML_PORT
  check=$(curl -s -m 5 "$url/item/4242")
  case $check in *'"item 4242"'*) ;; *) die "GET /item/4242 answered '$check'" ;; esac

  # one round unmeasured (warm-up), then /hello alone
  burst_run sqlite_warm "$ML_PORT" "$n" "/item/{i}" 30
  wrk_bg sqlite_hello0 "$secs" 4 "$url/hello"
  wrk_wait sqlite_hello0 "$WRK_PID"
  base_rps=$(printf '%.0f' "$W_RPS") base_p99=$W_P99 base_err=$W_ERRORS

  # rounds of 1,000 concurrent /item/{i} (ids 1..1000, one connection each) for as long as
  # the /hello client runs
  wrk_bg sqlite_hello1 "$secs" 4 "$url/hello"
  hello_pid=$WRK_PID
  : >"$TMP/sqlite_bursts"
  c0=$(cpu_ticks "$ML_PID") a0=$(busy_ticks) t0=$(date +%s.%N)
  while kill -0 "$hello_pid" 2>/dev/null; do
    burst_run sqlite_burst "$ML_PORT" "$n" "/item/{i}" 30
    rounds=$((rounds + 1))
    b_err=$((b_err + n - B_DONE))
    echo "$B_TIME $(echo "$B_DETAIL" | sed -n 's/.* p99=\([0-9.]*\)s.*/\1/p')" >>"$TMP/sqlite_bursts"
  done
  c1=$(cpu_ticks "$ML_PID") a1=$(busy_ticks) t1=$(date +%s.%N)
  b_cpu=$(pct $(( c1 - c0 )) "$t0" "$t1") b_all=$(pct $(( a1 - a0 )) "$t0" "$t1")
  wrk_wait sqlite_hello1 "$hello_pid"
  h1_rps=$(printf '%.0f' "$W_RPS") h1_p99=$W_P99 h1_err=$W_ERRORS
  b_times=$(cut -d' ' -f1 "$TMP/sqlite_bursts" | sort -n)
  b_p99s=$(cut -d' ' -f2 "$TMP/sqlite_bursts" | sort -n)
  b_min=$(echo "$b_times" | head -1) b_max=$(echo "$b_times" | tail -1)
  b_med=$(echo "$b_times" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  b_p99=$(echo "$b_p99s" | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] * 1000 }')
  b_rps=$(awk -v n="$n" -v t="$b_med" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')

  # wrk -c1000: 1,000 keep-alive connections asking for random ids, 1 s longer on each side
  c0=$(cpu_ticks "$ML_PID") a0=$(busy_ticks) t0=$(date +%s.%N)
  WRK_ID_PREFIX=/item/ WRK_ID_MAX=$rows \
    wrk_bg sqlite_load "$((secs + 2))" "$n" "$url" -s bench/wrk_random_id.lua
  load_pid=$WRK_PID
  sleep 1
  wrk_bg sqlite_hello2 "$secs" 4 "$url/hello"
  wrk_wait sqlite_hello2 "$WRK_PID"
  h2_rps=$(printf '%.0f' "$W_RPS") h2_p99=$W_P99 h2_err=$W_ERRORS
  wrk_wait sqlite_load "$load_pid"
  c1=$(cpu_ticks "$ML_PID") a1=$(busy_ticks) t1=$(date +%s.%N)
  l_cpu=$(pct $(( c1 - c0 )) "$t0" "$t1") l_all=$(pct $(( a1 - a0 )) "$t0" "$t1")
  load_rps=$(printf '%.0f' "$W_RPS") load_p99=$(ms "$W_P99") load_err=$W_ERRORS
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the runs"
  stop_pid "$ML_PID"

  p99_verdict() { awk -v p="$(ms "$1")" 'BEGIN { print (p < 10 ? "met" : "NOT met") }'; }
  fmt='%-38s %10s %11s %8s %8s %12s %11s %7s  %s\n'
  printf "$fmt" "load on /item/{id}" "item req/s" "item p99 ms" "srv CPU" "all CPU" \
    "/hello req/s" "/hello p99" "errors" "/hello p99 < 10 ms"
  printf "$fmt" "--------------------------------------" "----------" "-----------" "--------" \
    "--------" "------------" "-----------" "-------" "------------------"
  printf "$fmt" "none (/hello alone)" "-" "-" "-" "-" "$base_rps" "$(ms "$base_p99") ms" "$base_err" "-"
  printf "$fmt" "$rounds rounds of 1,000 concurrent (burst)" "$b_rps" "$b_p99" "$b_cpu" "$b_all" \
    "$h1_rps" "$(ms "$h1_p99") ms" "$((b_err + h1_err))" "$(p99_verdict "$h1_p99")"
  printf "$fmt" "1,000 keep-alive conns (wrk -c1000)" "$load_rps" "$load_p99" "$l_cpu" "$l_all" \
    "$h2_rps" "$(ms "$h2_p99") ms" "$((load_err + h2_err))" "$(p99_verdict "$h2_p99")"
  echo "/hello: wrk -t1 -c4 -d${secs}s --latency, started with each load (its p99 is the target)."
  echo "burst rows: each round opens 1,000 connections at once, one GET /item/{i} each (ids"
  echo "  1..1000), and waits for every answer; the next round starts at once. Wall per round"
  echo "  (first sent -> last answered): min $b_min s, median $b_med s, max $b_max s; item req/s ="
  echo "  1,000 / median wall; item p99 = median over the rounds of each round's p99."
  echo "wrk -c1000 row: wrk -t1 -c1000 -d$((secs + 2))s, random ids 1..$rows (bench/wrk_random_id.lua),"
  echo "  running 1 s before and after the /hello client; item figures over its whole run."
  echo "the table ($rows rows, INTEGER PRIMARY KEY) is made at load in a WAL file; moonlet.db's"
  echo "  default: 4 SQLite connections, statements on libuv's threadpool. srv CPU = moonlet's"
  echo "  user+system CPU, all CPU = the whole machine's (clients included), both in % of one"
  echo "  CPU; clients and server share the machine's $(nproc) CPUs."
  echo "errors = failed or non-2xx requests (burst + wrk socket errors + non-2xx)."
  moonlet_log sqlite
}

# start_pg: a throwaway PostgreSQL cluster, the way tests/support/pg.lua makes one: initdb in a
# temp dir of its own (owned by the postgres user when we run as root: initdb refuses root),
# postgres on a free port of 127.0.0.1 (its socket in that dir) with fsync off and 256 MB of
# shared buffers. Sets PG_DIR, PG_PORT, PG_BIN, PG_AS; stop_pg (also run by cleanup) stops it
# and removes the dir.
start_pg() {
  local port
  PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    die "PostgreSQL server not found in /usr/lib/postgresql/*/bin (scripts/deps.sh test installs it)"
  fi
  PG_AS=()
  [ "$(id -u)" != 0 ] || PG_AS=(runuser -u postgres --)
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/moonlet-bench-pg.XXXXXX")
  [ ${#PG_AS[@]} = 0 ] || chown postgres: "$PG_DIR"
  run_fg "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --no-sync \
    --auth-local=trust --auth-host=scram-sha-256 >"$TMP/pg-initdb.log" 2>&1 ||
    { cat "$TMP/pg-initdb.log" >&2; die "initdb failed"; }
  for _ in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + RANDOM % 12000 ))   # below the ephemeral range (32768-)
    port_open "$port" && continue
    if run_fg "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 30 \
      -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c shared_buffers=256MB -c max_connections=100" \
      start >"$TMP/pg_ctl.out" 2>&1; then
      PG_PORT=$port
      return 0
    fi
    grep -q "already in use" "$PG_DIR/log" 2>/dev/null && continue
    cat "$TMP/pg_ctl.out" "$PG_DIR/log" >&2 2>/dev/null || true
    die "PostgreSQL did not start"
  done
  die "no free port found for PostgreSQL"
}

# stop_pg: stops the cluster of start_pg (pg_ctl, then SIGKILL to its postmaster if it is
# still there) and removes its directory. Nothing when there is none.
stop_pg() {
  local pm=""
  [ -n "$PG_DIR" ] || return 0
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    pm=$(head -1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true)
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 10 stop >/dev/null 2>&1 ||
      "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 10 stop \
        >/dev/null 2>&1 || true
    if [ -n "$pm" ] && [ "$(cat "/proc/$pm/comm" 2>/dev/null)" = postgres ]; then
      kill -KILL "$pm" 2>/dev/null || true
    fi
  fi
  rm -rf "$PG_DIR"
  PG_DIR=""
}

# pg_psql SQL [DB]: runs SQL as the superuser over the cluster's socket (tuples only)
pg_psql() {
  "${PG_AS[@]}" "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" \
    -U postgres -d "${2:-postgres}" -c "$1"
}

# pg_ticks: CPU time of the whole cluster in clock ticks: the postmaster and its live
# processes (backends), plus what its ended children used (cutime + cstime)
pg_ticks() {
  local pm f live
  pm=$(head -1 "$PG_DIR/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  f=$(sed 's/^.*) //' "/proc/$pm/stat" 2>/dev/null) || { echo 0; return; }
  # shellcheck disable=SC2046 # one argument per child pid
  live=$(cpu_ticks "$pm" $(pgrep -P "$pm"))
  # shellcheck disable=SC2086 # fields after "pid (comm) ": cutime=$14 cstime=$15
  set -- $f
  echo $(( live + ${14} + ${15} ))
}

# pg_bench_db SCALE: start_pg, then user and database "bench" (password bench) holding the
# tables of pgbench -i -s SCALE (SCALE x 100,000 accounts), prewarmed. Used by bench_pg and
# bench_peers_pg (each stops the cluster with stop_pg when done).
pg_bench_db() {
  start_pg
  pg_psql "CREATE USER bench PASSWORD 'bench'" >/dev/null
  pg_psql "CREATE DATABASE bench OWNER bench" >/dev/null
  PGPASSWORD=bench run_fg pgbench -i -s "$1" -q -h 127.0.0.1 -p "$PG_PORT" -U bench bench \
    >"$TMP/pgbench-init.out" 2>&1 || { cat "$TMP/pgbench-init.out" >&2; die "pgbench -i failed"; }
  # every page of the table and its index in shared buffers, for all clients alike
  pg_psql "CREATE EXTENSION IF NOT EXISTS pg_prewarm" bench >/dev/null 2>&1 &&
    pg_psql "SELECT pg_prewarm('pgbench_accounts') + pg_prewarm('pgbench_accounts_pkey')" bench \
      >/dev/null 2>&1 || echo "(pg_prewarm not available: the first run warms the cache)"
}

# 8. PostgreSQL point select through moonlet (bench/apps/pg_read, a pool of P connections
#    each pipelining up to L statements, P x L = wrk's 64 requests in flight; wrk -t1 -c64
#    with random ids) beside pgbench -S with C connections (all three modes) and with P
#    (-M prepared), on one throwaway cluster (pgbench -i -s 10: 1,000,000 accounts).
bench_pg() {
  local c=${BENCH_PG_CLIENTS:-16} pool=${BENCH_PG_POOL:-4} pipeline=${BENCH_PG_PIPELINE:-16}
  local scale=10 secs url check m_rps m_p99 m_err m_cpu m_pg n runs
  local c0 c1 p0 p1 a0 a1 t0 t1 mode out tps lat fail pg all best ratio verdict fmt rows=""
  local m_all load
  local accounts db_url
  secs=$(seconds "$DURATION")
  accounts=$(( scale * 100000 ))
  load=$(cut -d' ' -f1 /proc/loadavg)
  section "PostgreSQL point select: moonlet (bench/apps/pg_read, $pool connections x pipeline $pipeline) vs pgbench -S"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  command -v pgbench >/dev/null || die "pgbench not installed (the postgresql-client package)"
  pg_bench_db "$scale"

  db_url="postgres://bench:bench@127.0.0.1:$PG_PORT/bench?sslmode=disable"
  BENCH_PG_URL=$db_url BENCH_PG_POOL=$pool BENCH_PG_PIPELINE=$pipeline \
    start_moonlet pg bench/apps/pg_read 4096
  url=http://127.0.0.1:$ML_PORT
  check=$(curl -s -m 5 "$url/account/4242")
  [ "$check" = '{"abalance":0}' ] || die "GET /account/4242 answered '$check'"
  export WRK_ID_PREFIX=/account/ WRK_ID_MAX=$accounts
  # warm-up: moonlet opens its $c connections
  run_fg timeout -k 5 10 wrk -t1 -c64 -d1s -s bench/wrk_random_id.lua "$url" >/dev/null 2>&1 || true
  c0=$(cpu_ticks "$ML_PID") p0=$(pg_ticks) a0=$(busy_ticks) t0=$(date +%s.%N)
  wrk_bg pg_moonlet "$secs" 64 "$url" -s bench/wrk_random_id.lua
  wrk_wait pg_moonlet "$WRK_PID"
  c1=$(cpu_ticks "$ML_PID") p1=$(pg_ticks) a1=$(busy_ticks) t1=$(date +%s.%N)
  unset WRK_ID_PREFIX WRK_ID_MAX
  m_rps=$(printf '%.0f' "$W_RPS") m_p99=$W_P99 m_err=$W_ERRORS
  m_cpu=$(pct $(( c1 - c0 )) "$t0" "$t1") m_pg=$(pct $(( p1 - p0 )) "$t0" "$t1")
  m_all=$(pct $(( a1 - a0 )) "$t0" "$t1")
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the run"
  stop_pid "$ML_PID"   # its connections close: pgbench has the server to itself

  fmt='%-44s %10s %10s %7s %8s %8s %8s  %s\n'
  best=0
  runs="prepared:$c extended:$c simple:$c"
  [ "$pool" = "$c" ] || runs="$runs prepared:$pool"
  for mode in $runs; do
    n=${mode#*:} mode=${mode%:*}
    # -l: one line per transaction in $TMP/pgbench-MODE/ (its 3rd field: latency in us)
    mkdir -p "$TMP/pgbench-$mode-$n"
    p0=$(pg_ticks) a0=$(busy_ticks) t0=$(date +%s.%N)
    out=$(PGPASSWORD=bench run_fg timeout -k 5 $((secs + 60)) env -C "$TMP/pgbench-$mode-$n" \
      pgbench -n -S -c "$n" -j 1 -T "$secs" -M "$mode" -l -h 127.0.0.1 -p "$PG_PORT" \
      -U bench bench 2>&1) || { echo "$out" >&2; die "pgbench -M $mode failed"; }
    p1=$(pg_ticks) a1=$(busy_ticks) t1=$(date +%s.%N)
    echo "$out" >"$TMP/pgbench-$mode-$n.out"
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p')
    lat=$(cat "$TMP/pgbench-$mode-$n"/pgbench_log.* 2>/dev/null | awk '{ print $3 }' | sort -n |
      awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; if (NR) printf "%.2f", v[i] / 1000 }')
    rm -rf "$TMP/pgbench-$mode-$n"
    fail=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
    [ -n "$tps" ] || { echo "$out" >&2; die "cannot parse pgbench -M $mode output"; }
    tps=$(printf '%.0f' "$tps")
    pg=$(pct $(( p1 - p0 )) "$t0" "$t1") all=$(pct $(( a1 - a0 )) "$t0" "$t1")
    best=$(( tps > best ? tps : best ))
    ratio=$(awk -v a="$m_rps" -v b="$tps" 'BEGIN { printf "%.2f", a / b }')
    rows="$rows$(printf "$fmt" "pgbench -S -M $mode -c $n -j 1 -T $secs" "$tps" \
      "${lat:-?} p99" "${fail:-0}" "-" "$pg" "$all" "moonlet/this = $ratio")"$'\n'
  done
  grep -E 'ERROR|FATAL|PANIC' "$PG_DIR/log" >"$TMP/pg-errors.log" 2>/dev/null || true
  stop_pg

  printf "$fmt" "client" "req|tx/s" "latency ms" "errors" "srv CPU" "PG CPU" "all CPU" "ratio"
  printf "$fmt" "--------------------------------------------" "----------" "----------" "-------" \
    "--------" "--------" "--------" "-----"
  printf "$fmt" "moonlet: wrk -t1 -c64 -d$DURATION, $pool x $pipeline" "$m_rps" "$(ms "$m_p99") p99" "$m_err" \
    "$m_cpu" "$m_pg" "$m_all" ""
  printf '%s' "$rows"
  ratio=$(awk -v a="$m_rps" -v b="$best" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8 ? "met" : "NOT met") }')
  printf '%-44s %10s   target >= 0.80 x pgbench -S (its best row): %s\n' \
    "ratio moonlet / best pgbench" "$ratio" "$verdict"
  echo "moonlet's figure is HTTP end to end: wrk sends GET /account/ID (random ID in 1..$accounts,"
  echo "  bench/wrk_random_id.lua), moonlet parses it, routes it, runs SELECT abalance FROM"
  echo "  pgbench_accounts WHERE aid = \$1 on one of its $pool pooled connections (libpq, prepared"
  echo "  once per connection, then Bind/Execute by name like -M prepared; when all $pool are busy,"
  echo "  up to $pipeline statements share one connection's round trips: opts.pipeline = $pipeline)"
  echo "  and encodes the row as JSON. pgbench speaks to PostgreSQL directly, the same SELECT, one"
  echo "  in flight per connection (-c $c, and -c $pool: as many connections as moonlet's pool)."
  echo "one cluster (initdb in a temp dir, fsync off, shared_buffers 256 MB, table prewarmed),"
  echo "  pgbench -i -s $scale; TCP to 127.0.0.1 with SCRAM for both. 1 s wrk warm-up first."
  echo "  srv CPU = moonlet, PG CPU = all PostgreSQL processes, all CPU = the whole machine"
  echo "  (clients included); user+system, % of one CPU. Clients, moonlet and PostgreSQL share"
  echo "  the machine's $(nproc) CPUs."
  echo "latency: per request (wrk: 64 connections on $pool x $pipeline, so it includes the wait"
  echo "  behind the statements ahead) or per transaction (pgbench -l). errors: moonlet = wrk socket"
  echo "  errors + non-2xx; pgbench = failed transactions. 1-minute load average before the"
  echo "  section: $load."
  if [ -s "$TMP/pg-errors.log" ]; then
    echo "PostgreSQL logged $(wc -l <"$TMP/pg-errors.log") ERROR/FATAL lines, first lines:"
    head -5 "$TMP/pg-errors.log" | sed 's/^/  | /'
  fi
  moonlet_log pg
}

bench_websocket() {
  local n=5000 client=$BUILD/bench/ws_idle out rss0 rss1 open_line ms got added per fmt
  local m_ok t_ok
  section "5,000 idle WebSockets on apps/chat's /ws, then one broadcast to all (bench/ws_idle)"
  if [ ! -x "$client" ] || [ bench/ws_idle.c -nt "$client" ]; then
    mkdir -p "$BUILD/bench"
    cc -O2 -o "$client" bench/ws_idle.c
  fi
  start_moonlet websocket apps/chat 20000
  sleep 0.5
  rss0=$(rss_kb "$ML_PID")
  out=$TMP/websocket.out
  (ulimit -n 20000 2>/dev/null || true; exec "$client" 127.0.0.1 "$ML_PORT" "$n" /ws 2) \
    >"$out" 2>&1 &
  STARTED="$STARTED $!"
  local cpid=$!
  for _ in $(seq 300); do
    grep -q '^open=' "$out" && break
    sleep 0.1
  done
  sleep 1   # all handlers waiting in ws:receive
  rss1=$(rss_kb "$ML_PID")
  wait "$cpid" || true
  forget_pid "$cpid"
  open_line=$(grep '^open=' "$out" || echo "open=0")
  ms=$(sed -n 's/^broadcast_ms=\([0-9.]*\).*/\1/p' "$out")
  got=$(sed -n 's/.*received=\([0-9]*\).*/\1/p' "$out")
  added=$(( rss1 - rss0 ))
  per=$(awk -v a="$added" -v n="$n" 'BEGIN { printf "%.2f", a / n }')
  m_ok=$(awk -v a="$added" 'BEGIN { print (a < 20 * 1024) ? "ok" : "MISSED" }')
  t_ok=$(awk -v m="${ms:-999999}" -v g="${got:-0}" -v n="$n" \
    'BEGIN { print (m < 100 && g == n) ? "ok" : "MISSED" }')
  fmt='%-44s %-22s %-10s %s\n'
  printf "$fmt" "what" "result" "target" "verdict"
  printf "$fmt" "--------------------------------------------" "----------------------" \
    "----------" "-------"
  printf "$fmt" "RSS added by $n idle WebSockets" "$(mb "$added") MB ($per kB each)" \
    "< 20 MB" "$m_ok"
  printf "$fmt" "one broadcast delivered to all" "${ms:-?} ms (${got:-0}/$n)" "< 100 ms" "$t_ok"
  echo "RSS before: $(mb "$rss0") MB, after: $(mb "$rss1") MB (VmRSS of the server); $open_line s."
  stop_pid "$ML_PID"
  moonlet_log websocket
}

# ---------------------------------------------------------------------------- main

# 12. A 1 GB static file (app:static) downloaded by curl from moonlet and from nginx (sendfile
# on, Debian's default), alternately, three times each; the best run of each counts.
bench_static() {
  local files=$TMP/static-files app=$TMP/static-app i m n m_best=0 n_best=0 rss0 rss1 hwm ratio
  local verdict fmt
  section "a 1 GB static file: moonlet (app:static) vs nginx (sendfile on), curl -o /dev/null"
  mkdir -p "$files" "$app"
  fallocate -l 1G "$files/big.bin" 2>/dev/null ||
    dd if=/dev/zero of="$files/big.bin" bs=1M count=1024 status=none
  printf 'local app = require("moonlet").app()\napp:static("/files", "%s")\nreturn app\n' \
    "$files" >"$app/app.lua"
  # nginx's worker reads as an unprivileged user when the bench runs as root
  chmod a+x "$TMP" "$files" && chmod a+r "$files/big.bin"
  start_moonlet static "$app"
  NG_EXTRA="        location /files/ { alias $files/; sendfile on; }" start_nginx
  for i in "$ML_PORT" "$NG_PORT"; do   # page cache warm-up, and both must answer 200
    m=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$i/files/big.bin")
    [ "$m" = 200 ] || die "static: GET /files/big.bin on port $i answered $m"
  done
  rss0=$(rss_kb "$ML_PID")
  for i in 1 2 3; do
    m=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$ML_PORT/files/big.bin")
    n=$(curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$NG_PORT/files/big.bin")
    m_best=$(awk -v a="$m" -v b="$m_best" 'BEGIN { print (a > b ? a : b) }')
    n_best=$(awk -v a="$n" -v b="$n_best" 'BEGIN { print (a > b ? a : b) }')
  done
  rss1=$(rss_kb "$ML_PID")
  hwm=$(rss_kb "$ML_PID" VmHWM)
  stop_pid "$NG_PID"
  stop_pid "$ML_PID"
  rm -f "$files/big.bin"
  fmt='%-22s %14s\n'
  printf "$fmt" "server" "MB/s (best of 3)"
  printf "$fmt" "----------------------" "--------------"
  printf "$fmt" "moonlet" "$(awk -v b="$m_best" 'BEGIN { printf "%.0f", b / 1048576 }')"
  printf "$fmt" "nginx" "$(awk -v b="$n_best" 'BEGIN { printf "%.0f", b / 1048576 }')"
  ratio=$(awk -v a="$m_best" -v b="$n_best" 'BEGIN { printf "%.2f", a / b }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.90 ? "met" : "NOT met") }')
  printf '%-22s %14s   target >= 0.90: %s\n' "ratio moonlet/nginx" "$ratio" "$verdict"
  echo "moonlet RSS: $(mb "$rss0") MB after the warm-up download, $(mb "$rss1") MB after" \
    "three more (peak $(mb "$hwm") MB): flat if the two are close"
  moonlet_log static
}

# The in-process test client vs real socket round trips to the binary (same app, same
# route, sequential, in one `moonlet test` runner): bench/test_client_bench.lua.
bench_test_client() {
  section "test_client: in-process test client vs a socket round trip to the binary"
  "$MOONLET" test bench/test_client_bench.lua 2>&1 | sed -n '/req\/s\|^test client\|^socket\|^ratio/p'
}

# --reload as a developer sees it: write -> new code answering (10 edits), wrk during 20
# reloads, RSS and descriptors over 100 reloads: bench/reload_bench.lua.
bench_reload() {
  section "reload: from a saved file to the new code answering (--reload)"
  "$MOONLET" test bench/reload_bench.lua 2>&1 | sed -n '/^write\|^median\|^wrk\|^100 reloads/p'
}

# moonlet.shared from one Lua loop (the single-process fast path): ns per operation, and set
# in a full dictionary (each write evicts): bench/shared_bench.lua.
bench_shared() {
  section "shared: moonlet.shared operations from one Lua loop (1e6 each, best of 3)"
  "$MOONLET" test bench/shared_bench.lua 2>&1 | sed -n '/ns\/op$/p'
}

# ---------------------------------------------------------------------------- embed

# Embedding (issue 17): a C program (tests/embed_host.c, serving tests/apps/embed) with a
# preloaded C module: GET /plain returns { n = 1 }, GET /ffi { n = hostffi.one() } (through
# the FFI: ml_host_preload_ffi, the target's), GET /cfn { n = hostinfo.one() } (a
# lua_CFunction: ml_host_preload), A/B/B/A on the same server; then bench/post_bench.c: threads posting callbacks to the loop as fast
# as they can, timed until the last one ran.
bench_embed() {
  local fifo=$TMP/embed.in pid port ratio cost verdict line threads n sent ran secs rate call
  local fmt='%-34s %12s %10s %8s   %s\n'
  section "embed: a route calling a preloaded C function vs the same route without (wrk -t1 -c64)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  [ -x "$BUILD/tests/embed_host" ] || die "$BUILD/tests/embed_host not found: run make first"
  mkfifo "$fifo"
  exec 7<>"$fifo"   # embed_host serves until its stdin ends: held open here
  "$BUILD/tests/embed_host" tests/apps/embed --log-level 2 --pool-size 1 <"$fifo" \
    >"$TMP/embed.out" 2>"$TMP/embed.err" &
  pid=$!
  STARTED="$STARTED $pid"
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's#^listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$TMP/embed.out")
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { cat "$TMP/embed.err" >&2; die "embed_host did not start"; }
  wrk_abba embed_ffi "http://127.0.0.1:$port/plain" "$pid" "http://127.0.0.1:$port/ffi" "$pid"
  abba_table "route" "/plain (Lua only)" "/ffi (preload_ffi)"
  ratio=$(awk -v a="$WA_RPS" -v b="$WB_RPS" 'BEGIN { printf "%.3f", a / b }')
  cost=$(awk -v a="$WA_US" -v b="$WB_US" 'BEGIN { printf "%.2f", b / a }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.05 ? "met" : "NOT met") }')
  printf '%-22s %10s   target <= 1.05 (req/s, plain / with the FFI call): %s\n' "cost ratio" \
    "$ratio" "$verdict"
  printf '%-22s %10s   (server CPU per request, with the FFI call / plain)\n\n' "CPU ratio" "$cost"
  wrk_abba embed "http://127.0.0.1:$port/plain" "$pid" "http://127.0.0.1:$port/cfn" "$pid"
  call=$(curl -s -m 30 "http://127.0.0.1:$port/call_ns?n=10000000")
  exec 7>&-
  stop_pid "$pid"
  abba_table "route" "/plain (Lua only)" "/cfn (lua_CFunction)"
  ratio=$(awk -v a="$WA_RPS" -v b="$WB_RPS" 'BEGIN { printf "%.3f", a / b }')
  cost=$(awk -v a="$WA_US" -v b="$WB_US" 'BEGIN { printf "%.2f", b / a }')
  printf '%-22s %10s   (req/s, plain / with the classic C call: a trace exit per call)\n' \
    "cost ratio" "$ratio"
  printf '%-22s %10s   (server CPU per request, with the C call / plain)\n' "CPU ratio" "$cost"
  # the call alone, out of the noise of a loaded machine: its ns against /plain's CPU/request
  call=$(echo "$call" | sed -n 's/.*"c":\([0-9.]*\).*/\1/p')
  printf '%-22s %10s   ns per call (a loop of 10M in a route): %s of /plain'"'"'s CPU per request\n' \
    "the C call alone" "$(awk -v c="$call" 'BEGIN { printf "%.1f", c }')" \
    "$(awk -v c="$call" -v u="$WA_US" 'BEGIN { printf "%.1f%%", c / 10 / u }')"

  section "embed: ml_host_post from other threads to the loop (bench/post_bench.c)"
  [ -x "$BUILD/bench/post_bench" ] || die "$BUILD/bench/post_bench not found: run make first"
  printf "$fmt" "posting threads x callbacks" "callbacks/s" "lost" "seconds" "target"
  for threads in 1 4; do
    n=$(( 2000000 / threads ))
    line=$(run_fg "$BUILD/bench/post_bench" apps/hello "$threads" "$n" | grep '^post ')
    read -r _ _ _ sent ran secs <<<"$line"
    rate=$(awk -v r="$ran" -v s="$secs" 'BEGIN { printf "%.0f", r / s }')
    verdict=$(awk -v r="$rate" -v l="$(( sent - ran ))" \
      'BEGIN { print (r >= 500000 && l == 0 ? "met" : "NOT met") }')
    printf "$fmt" "$threads x $n" "$rate" "$(( sent - ran ))" "$secs" \
      ">= 500,000/s, none lost: $verdict"
  done
}

# ---------------------------------------------------------------------------- workers

# --workers 2 vs --workers 1 on GET /hello: server CPU per request (the supervisor's and
# every worker's user+system time over the run, / requests), runs in the order 1, 2, 2, 1
# (each half of $DURATION) so drifting background load weighs on both alike.
bench_workers() {
  local n run half pid pids1 pids2 port1 port2 us1="" us2="" rps1="" rps2="" err=0 a b ratio verdict fmt
  half=$(( $(seconds "$DURATION") / 2 ))
  [ "$half" -ge 2 ] || half=2
  section "GET /hello: --workers 2 vs --workers 1, server CPU per request (wrk -t1 -c64, 1,2,2,1 x ${half}s)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  start_moonlet workers1 apps/hello "" --workers 1 --access-log off
  pids1="$ML_PID $(pgrep -P "$ML_PID" | tr '\n' ' ')" port1=$ML_PORT
  start_moonlet workers2 apps/hello "" --workers 2 --access-log off
  pids2="$ML_PID $(pgrep -P "$ML_PID" | tr '\n' ' ')" port2=$ML_PORT
  for run in 1 2 2 1; do
    if [ "$run" = 1 ]; then
      # shellcheck disable=SC2086 # the supervisor and its workers, one pid a word
      DURATION=${half}s wrk_run "workers_$run" "http://127.0.0.1:$port1/hello" $pids1
    else
      # shellcheck disable=SC2086
      DURATION=${half}s wrk_run "workers_$run" "http://127.0.0.1:$port2/hello" $pids2
    fi
    n=$(awk -v c="${W_CPU%\%}" -v r="$W_RPS" 'BEGIN { printf "%.2f", c * 1e4 / r }')
    err=$(( err + W_ERRORS ))
    if [ "$run" = 1 ]; then us1="$us1 $n" rps1="$rps1 $W_RPS"; else us2="$us2 $n" rps2="$rps2 $W_RPS"; fi
  done
  for pid in $pids1 $pids2; do kill -0 "$pid" 2>/dev/null || echo "!! process $pid exited during the runs"; done
  stop_pid "${pids2%% *}"
  stop_pid "${pids1%% *}"
  a=$(echo "$us1" | awk '{ printf "%.2f", ($1 + $2) / 2 }')
  b=$(echo "$us2" | awk '{ printf "%.2f", ($1 + $2) / 2 }')
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
  verdict=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.10 ? "met" : "NOT met") }')
  fmt='%-22s %18s %26s\n'
  printf "$fmt" "" "CPU us/request" "req/s (the two runs)"
  printf "$fmt" "----------------------" "------------------" "--------------------------"
  printf "$fmt" "--workers 1" "$a" "$(echo "$rps1" | sed 's/^ //; s/ / \/ /')"
  printf "$fmt" "--workers 2" "$b" "$(echo "$rps2" | sed 's/^ //; s/ / \/ /')"
  printf '%-22s %18s   target <= 1.10: %s; errors (all runs): %s\n' "ratio 2/1" "$ratio" "$verdict" "$err"
  echo "server CPU = user+system of the supervisor and its workers (/proc/PID/stat) over each run;"
  echo "wrk (one thread) shares the machine's $(nproc) CPUs with them, so req/s says little here."
  moonlet_log workers2
}

# Metrics on (--metrics-port) vs off: GET /hello, two servers side by side, ABBA.
bench_metrics() {
  local off_pid off_port mport scraped
  section "metrics: GET /hello with --metrics-port vs without (wrk -t1 -c64, ABBA)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  start_moonlet metrics_off apps/hello
  off_pid=$ML_PID off_port=$ML_PORT
  mport=$(free_port)
  start_moonlet metrics_on apps/hello "" --metrics-port "$mport"
  wrk_abba metrics "http://127.0.0.1:$off_port/hello" "$off_pid" \
    "http://127.0.0.1:$ML_PORT/hello" "$ML_PID"
  # what the runs recorded: every /hello of the server with metrics (warm-ups included)
  scraped=$(curl -s "http://127.0.0.1:$mport/metrics" |
    awk -F' ' '/^moonlet_http_requests_total\{route="\/hello",method="GET",code="2xx"\}/ { print $2 }')
  kill -0 "$off_pid" 2>/dev/null || echo "!! moonlet (metrics off) exited during the runs"
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet (metrics on) exited during the runs"
  stop_pid "$off_pid"
  stop_pid "$ML_PID"
  abba_table "server" "metrics off" "metrics on"
  abba_ratio "ratio on/off" "" "on / off"
  echo "both servers run side by side, loaded one at a time in the order off, on, on, off"
  echo "($W_HALF each, 1 s warm-up each); req/s = mean of the two. /metrics counted"
  echo "${scraped:-?} GET /hello 2xx on the server with metrics."
}

# TLS: GET /hello on keep-alive connections over HTTPS (--tls-cert, a throwaway P-256
# certificate) vs plain HTTP, two servers of the same build side by side, ABBA. With 2 CPUs
# or more the servers run on CPU 1 and wrk on CPU 0, in both runs alike: the client's TLS
# (about twice the server's CPU per request) then takes none of the server's CPU, and what
# bounds each run shows in the CPU columns: a side near 100% of its CPU is the limit.
# BENCH_TLS_PIN=0: no pinning (all share the CPUs, as before). Then each server again held
# to BENCH_TLS_CAP % of a CPU (tls_capped): the run bound by the server, which the target is
# about.
bench_tls() {
  local plain_pid plain_port pid cipher tls_port cpu="" pins="unpinned (fewer than 2 CPUs)"
  section "tls: GET /hello over HTTPS vs plain HTTP, keep-alive (wrk -t1 -c64, ABBA)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  command -v openssl >/dev/null || die "openssl not installed (scripts/deps.sh test)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TMP/tls.key" -out "$TMP/tls.pem" >/dev/null 2>&1 || die "openssl req failed"
  start_moonlet tls_plain apps/hello
  plain_pid=$ML_PID plain_port=$ML_PORT
  start_moonlet tls apps/hello "" --tls-cert "$TMP/tls.pem" --tls-key "$TMP/tls.key"
  [ "${BENCH_TLS_PIN:-1}" = 1 ] || pins="unpinned (BENCH_TLS_PIN=0)"
  if [ "${BENCH_TLS_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin_pids 1 "$plain_pid" "$ML_PID"
    cpu=0 pins="wrk on CPU 0, the server on CPU 1"
  fi
  cipher=$(timeout 10 openssl s_client -connect "127.0.0.1:$ML_PORT" -brief </dev/null 2>&1 |
    sed -n 's/^\(Protocol version\|Ciphersuite\): *//p' | paste -sd' ')
  W_CLIENT_CPU=$cpu wrk_abba tls "http://127.0.0.1:$plain_port/hello" "$plain_pid" \
    "https://127.0.0.1:$ML_PORT/hello" "$ML_PID"
  abba_table "moonlet" "plain HTTP" "HTTPS"
  abba_ratio "ratio HTTPS/plain" "" "HTTPS / plain" 0.70
  tls_bounds
  echo "negotiated: ${cipher:-?} (wrk's OpenSSL and the system's policy). Keep-alive: one"
  echo "handshake per wrk connection, then a record each way per request; $pins."
  tls_capped moonlet "http://127.0.0.1:$plain_port/hello" "$plain_pid" \
    "https://127.0.0.1:$ML_PORT/hello" "$ML_PID" -- "$plain_pid" "$ML_PID"
  for pid in "$plain_pid" "$ML_PID"; do
    kill -0 "$pid" 2>/dev/null || echo "!! moonlet (pid $pid) exited during the runs"
    stop_pid "$pid"
  done
  command -v nginx >/dev/null || return 0
  # the same client against nginx, plain and TLS ports of one server block: how much of the
  # ratio is the client's and the machine's
  tls_port=$(free_port)
  NG_EXTRA="        listen 127.0.0.1:$tls_port ssl;
        ssl_certificate $TMP/tls.pem;
        ssl_certificate_key $TMP/tls.key;" start_nginx
  pid=$(pgrep -P "$NG_PID" | head -1)   # its worker: the CPU column
  [ -z "$cpu" ] || pin_pids 1 "$NG_PID" ${pid:+"$pid"}
  W_CLIENT_CPU=$cpu wrk_abba tls_nginx "http://127.0.0.1:$NG_PORT/hello" "${pid:-$NG_PID}" \
    "https://127.0.0.1:$tls_port/hello" "${pid:-$NG_PID}"
  echo
  abba_table "nginx (reference)" "plain HTTP" "HTTPS"
  printf '%-22s %10s   (the same wrk against nginx: a client-bound ratio shows here too)\n' \
    "ratio HTTPS/plain" "$(awk -v a="$WB_RPS" -v b="$WA_RPS" 'BEGIN { printf "%.2f", a / b }')"
  tls_bounds
  tls_capped "nginx (reference)" "http://127.0.0.1:$NG_PORT/hello" "${pid:-$NG_PID}" \
    "https://127.0.0.1:$tls_port/hello" "${pid:-$NG_PID}" -- "$NG_PID" ${pid:+"$pid"}
  stop_pid "$NG_PID"
}

# tls_capped NAME URL_A PID_A URL_B PID_B -- PIDS...: the same ABBA with PIDS held to
# BENCH_TLS_CAP percent of one CPU (default 50, cap_pids) while wrk keeps a CPU of its own:
# then the server bounds both runs (its CPU column shows the cap) and the req/s ratio is
# the server's, as on a machine whose clients have CPUs to spare.
tls_capped() {
  local name=$1 url_a=$2 pid_a=$3 url_b=$4 pid_b=$5 cap=${BENCH_TLS_CAP:-50}
  shift 6
  echo
  if ! cap_pids "$cap" "$@"; then
    echo "$name held to $cap% of a CPU: skipped (no cgroup cpu controller to write here)"
    return 0
  fi
  W_CLIENT_CPU=${cpu:-} wrk_abba "tls_cap_${name%% *}" "$url_a" "$pid_a" "$url_b" "$pid_b"
  uncap
  abba_table "$name, server held to $cap% of a CPU" "plain HTTP" "HTTPS"
  abba_ratio "ratio HTTPS/plain" " (bound by the server: its CPU at the cap)" "HTTPS / plain" 0.70
}

# tls_bounds: after wrk_abba (A plain, B HTTPS), what the server could do with a client to
# spare (plain / HTTPS server CPU per request: the req/s ratio of a server-bound run), and
# wrk's CPU per request and share of its CPU in both, which tell a client-bound run.
tls_bounds() {
  awk -v a="$WA_US" -v b="$WB_US" -v ca="$WA_CLIENT_US" -v cb="$WB_CLIENT_US" \
    -v ra="$WA_RPS" -v rb="$WB_RPS" -v sa="${WA_CPU%\%}" -v sb="${WB_CPU%\%}" 'BEGIN {
    r = a / b; met = "NOT met"; if (r >= 0.70) met = "met"
    wa = ca * ra / 1e4; wb = cb * rb / 1e4
    bound = "neither alone (other load on the machine)"
    if (sb >= 90) bound = "the server"
    if (wb >= 90 && wb > sb) bound = "wrk (the client), not the server"
    printf "%-22s %10.2f   plain / HTTPS server CPU per request (%.1f / %.1f us): the req/s\n",
      "server-bound ratio", r, a, b
    printf "%-22s %10s   ratio of a server with a client to spare (target >= 0.70: %s)\n",
      "", "", met
    printf "%-22s %10s   plain %.1f, HTTPS %.1f us (%.2f x); wrk used %.0f%% / %.0f%% of its CPU,\n",
      "wrk CPU per request", "", ca, cb, cb / ca, wa, wb
    printf "%-22s %10s   the server %.0f%% / %.0f%%: the HTTPS run was bound by %s\n", "", "",
      sa, sb, bound
  }'
}

# GET and SET through moonlet.redis from coroutine routes vs redis-benchmark on the same
# throwaway server, and vs FastAPI with redis-py's asyncio client on the same routes.
# start_redis NAME: a throwaway redis-server (no persistence) on a free port of 127.0.0.1,
# its log in $TMP/NAME.log, ready when it answers PING: sets RS_PORT and RS_PID.
start_redis() {
  RS_PORT=$(free_port)
  redis-server --port "$RS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
    --logfile "$TMP/$1.log" &
  RS_PID=$!
  STARTED="$STARTED $RS_PID"
  for _ in $(seq 100); do redis-cli -p "$RS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
}

bench_redis() {
  local port rurl n out rb_get rb_set m_get m_set m_get_cpu m_set_cpu f_get f_set f_pid f_port
  local fmt check rs_pid py=/usr/bin/python3
  n=${BENCH_REDIS_N:-300000}
  section "redis: GET/SET through moonlet.redis vs redis-benchmark and FastAPI + redis.asyncio (wrk -t1 -c64 -d$DURATION)"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh bench)"
  command -v redis-server >/dev/null || die "redis-server not installed (scripts/deps.sh bench)"
  "$py" -c 'import fastapi, uvicorn, redis.asyncio' 2>/dev/null ||
    die "FastAPI, uvicorn or redis-py missing for $py (scripts/deps.sh bench)"
  start_redis redis
  port=$RS_PORT rs_pid=$RS_PID
  rurl=redis://127.0.0.1:$port

  # redis-benchmark first, alone with the server
  out=$(run_fg timeout -k 5 300 redis-benchmark -h 127.0.0.1 -p "$port" -t get,set -c 64 -n "$n" --csv) ||
    die "redis-benchmark failed"
  rb_set=$(echo "$out" | awk -F'"' '$2 == "SET" { printf "%.0f", $4 }')
  rb_get=$(echo "$out" | awk -F'"' '$2 == "GET" { printf "%.0f", $4 }')
  [ -n "$rb_get" ] && [ -n "$rb_set" ] || { echo "$out" >&2; die "cannot parse redis-benchmark --csv"; }

  REDIS_URL=$rurl start_moonlet redis bench/apps/redis_getset
  check=$(curl -s -m 5 "http://127.0.0.1:$ML_PORT/set")
  [ "$check" = OK ] || die "moonlet GET /set answered '$check'"
  wrk_run redis_set "http://127.0.0.1:$ML_PORT/set" "$ML_PID"
  m_set=$(printf '%.0f' "$W_RPS") m_set_cpu=$W_CPU
  [ "$W_ERRORS" = 0 ] || echo "!! moonlet /set: $W_ERRORS errors"
  wrk_run redis_get "http://127.0.0.1:$ML_PORT/get" "$ML_PID"
  m_get=$(printf '%.0f' "$W_RPS") m_get_cpu=$W_CPU
  [ "$W_ERRORS" = 0 ] || echo "!! moonlet /get: $W_ERRORS errors"
  kill -0 "$ML_PID" 2>/dev/null || echo "!! moonlet exited during the runs"
  stop_pid "$ML_PID"

  f_port=$(free_port)
  (cd bench/apps && REDIS_URL=$rurl exec "$py" -m uvicorn redis_fastapi:app --host 127.0.0.1 \
    --port "$f_port" --log-level warning --no-access-log) >"$TMP/fastapi.out" 2>&1 &
  f_pid=$!
  STARTED="$STARTED $f_pid"
  for _ in $(seq 200); do port_open "$f_port" && break; sleep 0.05; done
  check=$(curl -s -m 5 "http://127.0.0.1:$f_port/set")
  [ "$check" = OK ] || { cat "$TMP/fastapi.out" >&2; die "FastAPI GET /set answered '$check'"; }
  wrk_run fastapi_set "http://127.0.0.1:$f_port/set" "$f_pid"
  f_set=$(printf '%.0f' "$W_RPS")
  wrk_run fastapi_get "http://127.0.0.1:$f_port/get" "$f_pid"
  f_get=$(printf '%.0f' "$W_RPS")
  stop_pid "$f_pid"
  stop_pid "$rs_pid"

  fmt='%-58s %10s %10s\n'
  printf "$fmt" "client" "GET req/s" "SET req/s"
  printf "$fmt" "----------------------------------------------------------" "----------" "----------"
  printf "$fmt" "redis-benchmark -t get,set -c 64 -n $n (Redis protocol)" "$rb_get" "$rb_set"
  printf "$fmt" "moonlet: HTTP GET /get, /set -> moonlet.redis (CPU $m_get_cpu, $m_set_cpu)" "$m_get" "$m_set"
  printf "$fmt" "FastAPI (uvicorn, 1 process) -> redis.asyncio" "$f_get" "$f_set"
  ratio_line() {   # NAME A B TARGET
    local r1 r2 v
    r1=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')
    r2=$(awk -v a="$4" -v b="$5" 'BEGIN { printf "%.2f", a / b }')
    v=$(awk -v x="$r1" -v y="$r2" -v t="$6" 'BEGIN { print (x >= t && y >= t ? "met" : "NOT met") }')
    printf '%-58s %10s %10s   target >= %s: %s\n' "$1" "$r1" "$r2" "$6" "$v"
  }
  ratio_line "ratio moonlet / redis-benchmark" "$m_get" "$rb_get" "$m_set" "$rb_set" 0.5
  ratio_line "ratio moonlet / FastAPI" "$m_get" "$f_get" "$m_set" "$f_set" 3
  echo "one throwaway redis-server (no persistence) on 127.0.0.1; each moonlet and FastAPI"
  echo "  request is a whole HTTP request (wrk -t1 -c64, 1 s warm-up) that does one GET or SET;"
  echo "  redis-benchmark speaks the Redis protocol only, 64 connections. moonlet: one state, its"
  echo "  64 concurrent requests multiplexed on one Redis connection; FastAPI: one uvicorn"
  echo "  process, redis-py's pool (up to 64 connections). Clients and servers share the"
  echo "  machine's $(nproc) CPUs."
  moonlet_log redis
}

# moonlet.jobs: no-op jobs through enqueue -> `moonlet worker` -> ack, against Celery on a
# Redis broker with the same no-op task, on one throwaway redis-server, in the same run
# (bench/jobs_bench.lua, bench/apps/jobs, bench/apps/celery_noop.py). Two measures each:
# end to end (the client enqueues while the worker runs, timed until the last ack) and the
# worker alone (a queue filled first, timed from the first ack to the last).
jobs_ml_worker() {   # starts `moonlet worker` on queue bench: sets JW_PID
  : >"$TMP/jobs-worker.err"
  REDIS_URL=$JOBS_URL "$MOONLET" worker bench/apps/jobs --queue bench \
    --concurrency "$JOBS_CONC" 2>"$TMP/jobs-worker.err" &
  JW_PID=$!
  STARTED="$STARTED $JW_PID"
  for _ in $(seq 200); do grep -q "worker: queue bench" "$TMP/jobs-worker.err" && return; sleep 0.05; done
  cat "$TMP/jobs-worker.err" >&2
  die "moonlet worker did not start"
}
jobs_ml_run() {   # MODE N: bench/jobs_bench.lua; prints the jobs/s
  REDIS_URL=$JOBS_URL BENCH_JOBS_MODE=$1 BENCH_JOBS_N=$2 "$MOONLET" test bench/jobs_bench.lua \
    2>>"$TMP/jobs-watch.err" | awk '$1 == "jobs" { printf "%.0f", $2 / $4 }'
}
# jobs_drain RUN START...: the worker alone on a filled queue: the watcher RUN (jobs_ml_run
# or jobs_celery_run) first, then START... starts the worker (in this shell: its pid stays
# known); sets JOBS_RATE to the watcher's jobs/s.
jobs_drain() {
  local watcher
  : >"$TMP/jobs-watch.err"
  "$1" drain "$JOBS_DRAIN_N" >"$TMP/jobs-drain.out" &
  watcher=$!
  for _ in $(seq 200); do grep -q watching "$TMP/jobs-watch.err" && break; sleep 0.05; done
  shift
  "$@"
  wait "$watcher"
  JOBS_RATE=$(cat "$TMP/jobs-drain.out")
}
jobs_celery_worker() {   # POOL ARGS...: starts a Celery worker: sets JC_PID
  : >"$TMP/celery.err"
  (cd bench/apps && REDIS_URL=$JOBS_URL exec /usr/bin/python3 -m celery -A celery_noop worker \
    --pool "$@" --without-heartbeat --without-gossip --without-mingle -l info) \
    >"$TMP/celery.out" 2>"$TMP/celery.err" &
  JC_PID=$!
  STARTED="$STARTED $JC_PID"
  for _ in $(seq 400); do grep -q " ready\." "$TMP/celery.err" && return; sleep 0.05; done
  cat "$TMP/celery.err" >&2
  die "the Celery worker did not start"
}
jobs_celery_run() {   # MODE N: prints the jobs/s
  (cd bench/apps && REDIS_URL=$JOBS_URL /usr/bin/python3 celery_noop.py "$1" "$2") \
    2>>"$TMP/jobs-watch.err" | awk '$1 == "jobs" { printf "%.0f", $2 / $4 }'
}
bench_jobs() {
  local port n cn rs_pid m_e2e m_drain m_cpu r_cpu t0 r0 c_e2e c_drain c_cpu pool best=""
  local best_rate=0 rate fmt pids
  n=${BENCH_JOBS_N:-100000}
  cn=${BENCH_JOBS_CELERY_N:-5000}
  JOBS_CONC=${BENCH_JOBS_CONCURRENCY:-200}
  section "jobs: no-op jobs/s through moonlet.jobs (moonlet worker) vs Celery, one redis-server"
  command -v redis-server >/dev/null || die "redis-server not installed (scripts/deps.sh bench)"
  /usr/bin/python3 -c 'import celery, redis' 2>/dev/null ||
    die "Celery or redis-py missing for /usr/bin/python3 (scripts/deps.sh bench)"
  start_redis redis-jobs
  port=$RS_PORT rs_pid=$RS_PID
  JOBS_URL=redis://127.0.0.1:$port

  # moonlet: end to end, with the worker's and Redis's CPU per 1,000 jobs
  jobs_ml_worker
  t0=$(cpu_ticks "$JW_PID") r0=$(cpu_ticks "$rs_pid")
  m_e2e=$(jobs_ml_run e2e "$n")
  m_cpu=$(awk -v t="$(( $(cpu_ticks "$JW_PID") - t0 ))" -v n="$n" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.1f", t / hz * 1000 / (n / 1000) }')
  r_cpu=$(awk -v t="$(( $(cpu_ticks "$rs_pid") - r0 ))" -v n="$n" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.1f", t / hz * 1000 / (n / 1000) }')
  stop_pid "$JW_PID"
  # moonlet: the worker alone, on a filled queue
  jobs_ml_run enqueue "$n" >/dev/null
  JOBS_DRAIN_N=$n
  jobs_drain jobs_ml_run jobs_ml_worker
  m_drain=$JOBS_RATE
  stop_pid "$JW_PID"
  [ -n "$m_e2e" ] && [ -n "$m_drain" ] || die "bench/jobs_bench.lua printed no figure"

  # Celery: the worker alone with each pool (prefork: a process per CPU; threads), then
  # end to end with the faster one
  for pool in "prefork -c $(nproc)" "threads -c 16"; do
    redis-cli -p "$port" del celery unacked unacked_index >/dev/null
    jobs_celery_run enqueue "$cn" >/dev/null
    JOBS_DRAIN_N=$cn
    # shellcheck disable=SC2086 # the pool and its -c
    jobs_drain jobs_celery_run jobs_celery_worker $pool
    rate=$JOBS_RATE
    stop_pid "$JC_PID"
    echo "Celery worker alone, --pool $pool: $rate jobs/s"
    if [ "${rate:-0}" -gt "$best_rate" ]; then best_rate=$rate best=$pool; fi
  done
  c_drain=$best_rate
  redis-cli -p "$port" del celery unacked unacked_index >/dev/null
  # shellcheck disable=SC2086
  jobs_celery_worker $best
  pids="$JC_PID $(pgrep -P "$JC_PID" | tr '\n' ' ')"
  # shellcheck disable=SC2086 # the worker and its pool's processes
  t0=$(cpu_ticks $pids)
  c_e2e=$(jobs_celery_run e2e "$cn")
  # shellcheck disable=SC2086
  c_cpu=$(awk -v t="$(( $(cpu_ticks $pids) - t0 ))" -v n="$cn" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.1f", t / hz * 1000 / (n / 1000) }')
  stop_pid "$JC_PID"
  stop_pid "$rs_pid"

  fmt='%-52s %12s %12s %8s\n'
  printf "$fmt" "no-op jobs/s" "moonlet" "Celery" "ratio"
  printf "$fmt" "----------------------------------------------------" "------------" "------------" "--------"
  printf "$fmt" "enqueue -> worker -> ack, end to end" "$m_e2e" "$c_e2e" \
    "$(awk -v a="$m_e2e" -v b="$c_e2e" 'BEGIN { printf "%.1f", a / b }')"
  printf "$fmt" "the worker alone, queue filled first" "$m_drain" "$c_drain" \
    "$(awk -v a="$m_drain" -v b="$c_drain" 'BEGIN { printf "%.1f", a / b }')"
  printf "$fmt" "worker CPU ms per 1,000 jobs (end to end)" "$m_cpu" "$c_cpu" ""
  printf "%-52s %12s\n" "redis-server CPU ms per 1,000 jobs (moonlet)" "$r_cpu"
  printf 'target: >= 10,000 jobs/s end to end: %s; >= 3 x Celery end to end: %s\n' \
    "$(awk -v a="$m_e2e" 'BEGIN { print (a >= 10000 ? "met" : "NOT met") }')" \
    "$(awk -v a="$m_e2e" -v b="$c_e2e" 'BEGIN { print (a >= 3 * b ? "met" : "NOT met") }')"
  echo "moonlet: $n jobs, jobs:enqueue_many (1,000 a script call) from a Lua client"
  echo "  (moonlet test), one moonlet worker --concurrency $JOBS_CONC. Celery $(/usr/bin/python3 -c \
'import celery; print(celery.__version__)'): $cn jobs, apply_async on one"
  echo "  producer connection, task_acks_late, no result backend, prefetch 64, the faster pool"
  echo "  (--pool $best) end to end. 'Done' is read from Redis: moonlet's done counter, Celery's"
  echo "  queue list and unacked hash both empty. Clients, workers and Redis share $(nproc) CPUs."
}

main() {
  local s selected=${BENCH_ONLY:-$SECTIONS}
  selected=$(echo "$selected" | tr ',' ' ')
  for s in $selected; do
    case " $SECTIONS " in *" $s "*) ;; *) die "unknown section '$s' (sections: $SECTIONS)" ;; esac
  done
  [ -x "$MOONLET" ] || die "$MOONLET not found: run make first"
  echo "moonlet benchmarks — $("$MOONLET" version 2>/dev/null | head -1), $(nproc) CPUs" \
    "($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(uname -sr)"
  for s in $selected; do "bench_$s"; done
}

main "$@"

#!/usr/bin/env bash
# stress/run.sh — moonlet under abuse (run by `make stress`, after `make`; not part of
# `make test`). Each scenario prints a table and a verdict against its target.
#
# Every server binds 127.0.0.1 only, every load is bounded, and everything the script
# started is stopped on exit (trap). The apps are stress/apps/stress and tests/apps/stall
# (the routes that hold the event loop); the clients are
# stress/client.c (slowloris, held connections, endless requests, SQLite writes),
# bench/burst.c (N concurrent requests) and wrk; nginx (nginx-light) where a test applies.
#
#   stress/run.sh                          every scenario (~4 min on 2 cores)
#   STRESS_QUICK=1 stress/run.sh           smaller counts, shorter runs (~1.5 min)
#   STRESS_ONLY=soak,kill9 stress/run.sh   some scenarios
#   BUILD=build-asan stress/run.sh         another build directory (default build)
#
# Exit status 0 when every target was met, 1 otherwise.

# Table formats live in variables (fmt) on purpose.
# shellcheck disable=SC2059
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOONLET=$BUILD/moonlet
DURATION=10s
LIB_NAME=stress
QUICK=${STRESS_QUICK:-0}
APP=stress/apps/stress
STALL_APP=tests/apps/stall
SCENARIOS="slowloris conns soak kill9 sigterm stall endless stuck"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moonlet-stress.XXXXXX")
STARTED=""   # pids of the processes this script started and has not stopped yet

# shellcheck source=bench/lib.sh
. bench/lib.sh

cleanup() {
  local pid
  for pid in $STARTED; do stop_pid "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# quick FULL QUICK: FULL, or QUICK under STRESS_QUICK=1
quick() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# verdict OK NAME: prints "met", or "MISSED" and notes NAME in $TMP/missed for the summary
# (a file: verdict runs in command substitutions)
verdict() {
  if [ "$1" = 1 ]; then echo met; else echo "$2" >>"$TMP/missed"; echo MISSED; fi
}

# build_client: compiles stress/client.c into $BUILD/stress/client when missing or older
build_client() {
  CLIENT=$BUILD/stress/client
  if [ ! -x "$CLIENT" ] || [ stress/client.c -nt "$CLIENT" ]; then
    mkdir -p "$BUILD/stress"
    cc -O2 -Wall -Wextra -o "$CLIENT" stress/client.c
  fi
}

# kv LINE KEY: the value of KEY=value in LINE
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# wait_exit PID SECONDS: waits up to SECONDS for PID (our child) to end; sets EXIT_STATUS
# (the status, or "running") and EXIT_AFTER (seconds waited)
wait_exit() {
  local pid=$1 t0 rc=0
  t0=$(date +%s.%N)
  for _ in $(seq $(( $2 * 100 ))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  EXIT_AFTER=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  if kill -0 "$pid" 2>/dev/null; then EXIT_STATUS=running; return 0; fi
  wait "$pid" || rc=$?
  forget_pid "$pid"
  EXIT_STATUS=$rc
}

# worker_pids PID: nginx's master PID and its workers
ng_pids() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# rss_sum PID...: the VmRSS of these processes added up, kB
rss_sum() {
  local p t=0
  for p in "$@"; do t=$(( t + $(rss_kb "$p") )); done
  echo "$t"
}

# ---------------------------------------------------------------------------- scenarios

# slowloris: 1,000 connections that send a header byte every 5 s (replaced when cut), and
# meanwhile a good client (stress/client paced: one keep-alive connection, 1,000 GET /hello
# a second, each timed). moonlet with its defaults (--header-timeout 10); nginx with
# client_header_timeout 10s to match.
stress_slowloris() {
  local n=1000 secs fmt slow good srv port base ok
  secs=$(quick 25 14)
  section "slowloris: $n connections, a header byte each every 5 s, and a good client at 1,000 req/s"
  fmt='%-22s %7s %6s %16s %8s %7s %8s %8s %8s  %s\n'
  printf "$fmt" "server" "opened" "cut" "cut after s" "good req" "errors" "p50 ms" "p99 ms" \
    "max ms" "p99 <= 5 ms"
  printf "$fmt" "----------------------" "-------" "------" "----------------" "--------" \
    "-------" "--------" "--------" "--------" "-----------"
  for srv in moonlet nginx; do
    if [ "$srv" = moonlet ]; then
      start_moonlet slowloris "$APP" 4096
      port=$ML_PORT
    else
      NG_CONNS=4096 NG_EXTRA="        client_header_timeout 10s;" start_nginx
      port=$NG_PORT
    fi
    # the good client alone first: the figure to compare with
    base=$("$CLIENT" paced 127.0.0.1 "$port" 1000 3)
    printf "$fmt" "$srv, alone" "-" "-" "-" "$(kv "$base" requests)" "$(kv "$base" errors)" \
      "$(kv "$base" p50_ms)" "$(kv "$base" p99_ms)" "$(kv "$base" max_ms)" ""
    (ulimit -n 4096; exec "$CLIENT" slowloris 127.0.0.1 "$port" "$n" 5000 "$secs") \
      >"$TMP/slow-$srv.out" 2>&1 &
    local cpid=$!
    STARTED="$STARTED $cpid"
    sleep 2   # all $n slow connections open
    good=$("$CLIENT" paced 127.0.0.1 "$port" 1000 $(( secs - 4 )))
    wait "$cpid" || true
    forget_pid "$cpid"
    slow=$(cat "$TMP/slow-$srv.out")
    ok=$(awk -v p="$(kv "$good" p99_ms)" -v e="$(kv "$good" errors)" \
      'BEGIN { print (p <= 5 && e == 0) }')
    printf "$fmt" "$srv, under slowloris" "$(kv "$slow" opened)" "$(kv "$slow" cut)" \
      "$(kv "$slow" cut_after_p50) / $(kv "$slow" cut_after_max)" "$(kv "$good" requests)" \
      "$(kv "$good" errors)" "$(kv "$good" p50_ms)" "$(kv "$good" p99_ms)" \
      "$(kv "$good" max_ms)" "$(if [ "$srv" = moonlet ]; then verdict "$ok" "slowloris p99"; else echo -; fi)"
    if [ "$srv" = moonlet ]; then stop_pid "$ML_PID"; moonlet_log slowloris; else stop_pid "$NG_PID"; fi
  done
  echo "a cut connection is replaced at once, so $n stay open; 'cut after': its age (p50 / max)"
  echo "  when the server closed it. The good client runs 3 s alone, then $(( secs - 4 )) s beside them."
}

# conns: 10,000 connections that each asked /hello once and stay open (keep-alive), the
# server's RSS before and while they are held; then a second /hello on each.
stress_conns() {
  local n fmt srv port rss0 rss1 out line1 line2 per pids
  n=$(quick 10000 2000)
  section "$n concurrent keep-alive connections (each asked /hello once), RSS per connection"
  fmt='%-24s %10s %12s %12s %14s %14s\n'
  printf "$fmt" "server" "answered" "RSS before" "RSS held" "per connection" "second round"
  printf "$fmt" "------------------------" "----------" "------------" "------------" \
    "--------------" "--------------"
  for srv in moonlet nginx; do
    if [ "$srv" = moonlet ]; then
      start_moonlet conns "$APP" 20000 --keepalive-timeout 60
      port=$ML_PORT
    else
      NG_CONNS=$(( n + 500 )) start_nginx
      port=$NG_PORT
    fi
    curl -s -o /dev/null "http://127.0.0.1:$port/hello"
    sleep 0.3
    if [ "$srv" = moonlet ]; then pids=$ML_PID; else pids=$(ng_pids "$NG_PID"); fi
    # shellcheck disable=SC2086
    rss0=$(rss_sum $pids)
    out=$TMP/conns-$srv.out
    (ulimit -n 20000; exec "$CLIENT" hold 127.0.0.1 "$port" "$n" /hello 3) >"$out" 2>&1 &
    local cpid=$!
    STARTED="$STARTED $cpid"
    for _ in $(seq 600); do grep -q '^ready=' "$out" && break; sleep 0.1; done
    sleep 1
    # shellcheck disable=SC2086
    rss1=$(rss_sum $pids)
    wait "$cpid" || true
    forget_pid "$cpid"
    line1=$(grep '^ready=' "$out" || echo "ready=0 errors=?")
    line2=$(grep '^second=' "$out" || echo "second=0 errors=?")
    per=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { printf "%.2f kB", (b - a) / n }')
    printf "$fmt" "$srv" "$(kv "$line1" ready)/$n" "$(mb "$rss0") MB" "$(mb "$rss1") MB" \
      "$per" "$(kv "$line2" second)/$n"
    if [ "$srv" = moonlet ]; then
      stop_pid "$ML_PID"
      moonlet_log conns
      if [ "$(kv "$line1" ready)" != "$n" ] || [ "$(kv "$line2" second)" != "$n" ]; then
        verdict 0 conns >/dev/null
      fi
    else
      stop_pid "$NG_PID"
    fi
  done
  echo "RSS: VmRSS of the server (nginx: master + worker). moonlet with --keepalive-timeout"
  echo "  60, nginx with worker_connections $(( n + 500 )); the connections idle 3 s in between."
}

# soak: wrk -t1 -c64 on /hello in rounds of 10 s until >= 5 M requests; the server's RSS
# after each round. Growth per million: from the end of the first round (warm) to the end.
stress_soak() {
  local target round fmt srv url pids total first
  local reqs rss_first rss samples per errs rps t0 t1 ok
  target=$(quick 5000000 600000) round=$(quick 10 5)
  section "soak: >= $(awk -v n="$target" 'BEGIN { printf "%.1f", n / 1e6 }') M requests of /hello (wrk -t1 -c64, rounds of ${round} s), RSS growth per million"
  fmt='%-12s %11s %9s %8s %11s %11s %14s  %s\n'
  printf "$fmt" "server" "requests" "req/s" "errors" "RSS 1st rd" "RSS at end" "growth kB/M" \
    "target 0 kB/M"
  printf "$fmt" "------------" "-----------" "---------" "--------" "-----------" "-----------" \
    "--------------" "-------------"
  for srv in moonlet nginx; do
    if [ "$srv" = moonlet ]; then
      start_moonlet soak "$APP"
      url=http://127.0.0.1:$ML_PORT/hello pids=$ML_PID
    else
      start_nginx
      url=http://127.0.0.1:$NG_PORT/hello pids=$(ng_pids "$NG_PID")
    fi
    total=0 first=0 errs=0 samples="" rss_first=0 t0=$(date +%s.%N)
    while [ "$total" -lt "$target" ]; do
      run_fg timeout -k 5 $(( round + 30 )) wrk -t1 -c64 -d"${round}s" "$url" \
        >"$TMP/soak-$srv.wrk" 2>&1 || die "wrk failed: $(cat "$TMP/soak-$srv.wrk")"
      reqs=$(awk '/requests in/ { print $1 }' "$TMP/soak-$srv.wrk")
      errs=$(( errs + $(awk '/Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { n += $NF } END { print n + 0 }' "$TMP/soak-$srv.wrk") ))
      total=$(( total + reqs ))
      # shellcheck disable=SC2086
      rss=$(rss_sum $pids)
      if [ "$first" = 0 ]; then first=$total rss_first=$rss; fi
      samples="$samples $(mb "$rss")"
    done
    t1=$(date +%s.%N)
    rps=$(awk -v n="$total" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    per=$(awk -v a="$rss_first" -v b="$rss" -v n="$(( total - first ))" \
      'BEGIN { printf "%.1f", (b - a) / (n / 1e6) }')
    ok=$(awk -v p="$per" -v e="$errs" 'BEGIN { print (p <= 0 && e == 0) }')
    printf "$fmt" "$srv" "$total" "$rps" "$errs" "$(mb "$rss_first") MB" "$(mb "$rss") MB" \
      "$per" "$(if [ "$srv" = moonlet ]; then verdict "$ok" soak; else echo -; fi)"
    echo "  $srv RSS after each round (MB):$samples"
    if [ "$srv" = moonlet ]; then stop_pid "$ML_PID"; moonlet_log soak; else stop_pid "$NG_PID"; fi
  done
  echo "RSS: VmRSS of the server (nginx: master + worker); req/s: over the whole soak."
}

# kill9: SQLite writes (8 connections, POST /rows/ID, 201 once committed) and a kill -9 at
# a random moment, N times on one database file; after each, the acknowledged rows are
# looked for and PRAGMA integrity_check runs (sqlite3), and the next round restarts on it.
stress_kill9() {
  local rounds db=$TMP/kill9.db i first=1 acked=0 lost=0 present extra=0 integ
  rounds=$(quick 12 4)
  local bad=0 out fmt delay
  section "kill -9 during SQLite writes: $rounds rounds on one file (WAL), 8 writers each"
  command -v sqlite3 >/dev/null || die "sqlite3 not installed (scripts/deps.sh stress)"
  for i in $(seq "$rounds"); do
    STRESS_DB=$db start_moonlet kill9 "$APP"
    out=$TMP/kill9-$i.acked
    "$CLIENT" writes 127.0.0.1 "$ML_PORT" 8 10 "$first" >"$out" 2>"$out.err" &
    local cpid=$!
    STARTED="$STARTED $cpid"
    delay=$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.3 + r % 1500 / 1000 }')
    sleep "$delay"
    kill -KILL "$ML_PID"
    wait "$ML_PID" 2>/dev/null || true
    forget_pid "$ML_PID"
    wait "$cpid" || true
    forget_pid "$cpid"
    acked=$(( acked + $(wc -l <"$out") ))
    # comm wants both lists in the same (lexical) order
    sqlite3 "$db" 'SELECT id FROM rows' | sort >"$TMP/kill9.present"
    sort "$out" >"$out.sorted"
    lost=$(( lost + $(comm -23 "$out.sorted" "$TMP/kill9.present" | wc -l) ))
    extra=$(( extra + $(awk -v a="$first" '$1 >= a' "$TMP/kill9.present" |
      comm -13 "$out.sorted" - | wc -l) ))
    integ=$(sqlite3 "$db" 'PRAGMA integrity_check')
    [ "$integ" = ok ] || bad=$(( bad + 1 ))
    first=$(( $(sqlite3 "$db" 'SELECT coalesce(max(id), 0) FROM rows') + 1 ))
  done
  present=$(sqlite3 "$db" 'SELECT count(*) FROM rows')
  fmt='%-44s %12s\n'
  printf "$fmt" "what" "result"
  printf "$fmt" "--------------------------------------------" "------------"
  printf "$fmt" "kill -9 rounds" "$rounds"
  printf "$fmt" "rows acknowledged (201) before the kills" "$acked"
  printf "$fmt" "acknowledged rows missing afterwards" "$lost"
  printf "$fmt" "rows committed but not acknowledged" "$extra"
  printf "$fmt" "rows in the file at the end" "$present"
  printf "$fmt" "PRAGMA integrity_check not ok" "$bad of $rounds"
  printf '%-44s %12s\n' "target: 0 missing, integrity ok" \
    "$(verdict "$(( lost == 0 && bad == 0 ))" kill9)"
  echo "each round restarts moonlet on the file the last kill left (WAL, synchronous=NORMAL);"
  echo "  'committed but not acknowledged': in flight when the kill came (allowed)."
}

# sigterm: wrk -c32 on /hello, then 200 concurrent /sleep?s=3 (bench/burst), SIGTERM once
# the app counts them all in flight (GET /inflight): every one of them must be answered, wrk must lose no request it sent
# (a read error), and the server exit 0. nginx: the same wrk, and SIGQUIT (its graceful stop).
stress_sigterm() {
  local n=200 fmt m_read m_conn n_read="" n_status="" n_after="" ok=0 inflight=0 m_status m_after
  section "SIGTERM under load: wrk -c32 on /hello and $n requests in flight (/sleep?s=3)"
  start_moonlet sigterm "$APP"
  wrk_bg sigterm 6 32 "http://127.0.0.1:$ML_PORT/hello"
  sleep 1
  "$BURST" 127.0.0.1 "$ML_PORT" "$n" "/sleep?s=3" 15 \
    >"$TMP/sigterm.burst" 2>"$TMP/sigterm.burst.err" &
  local bpid=$!
  STARTED="$STARTED $bpid"
  for _ in $(seq 100); do
    inflight=$(curl -s -m 2 "http://127.0.0.1:$ML_PORT/inflight" | tr -dc 0-9)
    [ "${inflight:-0}" -lt "$n" ] || break
    sleep 0.05
  done
  kill -TERM "$ML_PID"
  wait_exit "$ML_PID" 15
  m_status=$EXIT_STATUS m_after=$EXIT_AFTER
  local brc=0
  wait "$bpid" || brc=$?
  forget_pid "$bpid"
  wait "$WRK_PID" 2>/dev/null || true
  forget_pid "$WRK_PID"
  burst_parse sigterm "$brc" "/sleep?s=3"
  m_read=$(awk '/Socket errors:/ { gsub(/,/, ""); print $6 + $10 }' "$TMP/sigterm.wrk")
  m_conn=$(awk '/requests in/ { print $1 }' "$TMP/sigterm.wrk")

  start_nginx
  wrk_bg sigterm_ng 6 32 "http://127.0.0.1:$NG_PORT/hello"
  sleep 1.5
  kill -QUIT "$NG_PID"
  wait_exit "$NG_PID" 15
  n_status=$EXIT_STATUS n_after=$EXIT_AFTER
  wait "$WRK_PID" 2>/dev/null || true
  forget_pid "$WRK_PID"
  n_read=$(awk '/Socket errors:/ { gsub(/,/, ""); print $6 + $10 }' "$TMP/sigterm_ng.wrk")

  fmt='%-44s %14s %14s\n'
  printf "$fmt" "what" "moonlet" "nginx (QUIT)"
  printf "$fmt" "--------------------------------------------" "--------------" "--------------"
  printf "$fmt" "/sleep?s=3 requests in flight at the signal" "${inflight:-0}/$n" "-"
  printf "$fmt" "  answered 200" "$B_DONE" "-"
  printf "$fmt" "  lost (errors)" "$B_ERRORS" "-"
  printf "$fmt" "wrk -c32 requests answered" "${m_conn:-0}" \
    "$(awk '/requests in/ { print $1 }' "$TMP/sigterm_ng.wrk")"
  printf "$fmt" "wrk requests lost (read errors, timeouts)" "${m_read:-0}" "${n_read:-0}"
  printf "$fmt" "exit status, seconds after the signal" "$m_status, $m_after" \
    "$n_status, $n_after"
  [ "${inflight:-0}" = "$n" ] && [ "$B_DONE" = "$n" ] && [ "$B_ERRORS" = 0 ] &&
    [ "${m_read:-1}" = 0 ] && [ "$m_status" = 0 ] && ok=1
  printf "$fmt" "target: 0 lost, exit 0" "$(verdict "$ok" sigterm)" ""
  echo "wrk's write errors after the stop (the listener is closed) are not counted: they are"
  echo "  requests never sent. A read error is a request sent and never answered."
  moonlet_log sigterm
}

# stall: one request holds the event loop 2 s (/block?s=2) while 100 others arrive: all
# must be answered once the loop is back.
stress_stall() {
  local n=100 fmt blocked
  section "loop stall: /block?s=2 holds the event loop while $n requests to /hello arrive"
  start_moonlet stall "$STALL_APP"
  curl -s -m 10 -o "$TMP/stall.block" -w '%{http_code}' "http://127.0.0.1:$ML_PORT/block?s=2" \
    >"$TMP/stall.code" &
  local cpid=$!
  STARTED="$STARTED $cpid"
  sleep 0.3
  burst_run stall "$ML_PORT" "$n" /hello 15
  wait "$cpid" || true
  forget_pid "$cpid"
  blocked=$(cat "$TMP/stall.code")
  fmt='%-44s %12s\n'
  printf "$fmt" "what" "result"
  printf "$fmt" "--------------------------------------------" "------------"
  printf "$fmt" "requests sent during the stall" "$n"
  printf "$fmt" "answered 200" "$B_DONE"
  printf "$fmt" "lost (errors)" "$B_ERRORS"
  printf "$fmt" "latency min / max, s" "$B_LAT_MIN / $B_LAT_MAX"
  printf "$fmt" "the blocking request" "$blocked"
  printf "$fmt" "watchdog line logged" \
    "$(grep -c 'blocked the event loop' "$TMP/moonlet-stall.err" || true)"
  printf "$fmt" "target: all answered" "$(verdict "$(( B_DONE == n && B_ERRORS == 0 ))" stall)"
  stop_pid "$ML_PID"
}

# endless: a chunked body without end, a chunk line of endless extensions, endless
# trailers: each must be cut with the right status, and the server answer /hello after.
stress_endless() {
  local kind want out fmt code rss0 rss1 ok
  section "endless requests: chunked body, chunk extensions, trailers (defaults: 1 MiB body)"
  start_moonlet endless "$APP"
  rss0=$(rss_kb "$ML_PID")
  fmt='%-22s %8s %8s %14s %8s %12s %s\n'
  printf "$fmt" "request" "status" "wanted" "bytes sent" "seconds" "then /hello" "verdict"
  printf "$fmt" "----------------------" "--------" "--------" "--------------" "--------" \
    "------------" "-------"
  for kind in body:413 ext:413 trailers:431; do
    want=${kind#*:} kind=${kind%:*}
    out=$("$CLIENT" endless 127.0.0.1 "$ML_PORT" "$kind")
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ML_PORT/hello" || true)
    ok=0
    [ "$(kv "$out" status)" = "$want" ] && [ "$(kv "$out" closed)" = yes ] &&
      [ "$code" = 200 ] && ok=1
    printf "$fmt" "$kind" "$(kv "$out" status)" "$want" "$(kv "$out" sent_bytes)" \
      "$(kv "$out" elapsed)" "$code" "$(verdict "$ok" "endless $kind")"
  done
  rss1=$(rss_kb "$ML_PID")
  echo "server RSS $(mb "$rss0") MB before, $(mb "$rss1") MB after; 'bytes sent': what the"
  echo "  client got into the socket before the server closed it (kernel buffers included)."
  stop_pid "$ML_PID"
}

# stuck: a handler that never yields (/spin) and one that waits an hour (/sleep?s=3600),
# each with --graceful-timeout 30: SIGTERM, then a second SIGTERM 1 s later must end it.
stress_stuck() {
  local path fmt log ok
  section "stuck handlers: SIGTERM, then a second SIGTERM 1 s later (--graceful-timeout 30)"
  fmt='%-20s %16s %12s %-40s %s\n'
  printf "$fmt" "handler" "still up after 1 s" "exit (s)" "status, log" "verdict"
  printf "$fmt" "--------------------" "----------------" "------------" \
    "----------------------------------------" "-------"
  for path in "/spin" "/sleep?s=3600"; do
    start_moonlet stuck "$STALL_APP" "" --graceful-timeout 30
    curl -s -m 30 -o /dev/null "http://127.0.0.1:$ML_PORT$path" &
    local cpid=$!
    STARTED="$STARTED $cpid"
    sleep 0.5
    kill -TERM "$ML_PID"
    sleep 1
    local up=no
    kill -0 "$ML_PID" 2>/dev/null && up=yes
    kill -TERM "$ML_PID" 2>/dev/null || true
    wait_exit "$ML_PID" 10
    stop_pid "$cpid"
    log=$(grep -o 'asked to stop again: .*' "$TMP/moonlet-stuck.err" | head -1 | cut -c1-60)
    ok=0
    [ "$up" = yes ] && [ "$EXIT_STATUS" = 1 ] && [ -n "$log" ] &&
      awk -v s="$EXIT_AFTER" 'BEGIN { exit !(s < 1) }' && ok=1
    printf "$fmt" "GET $path" "$up" "$EXIT_AFTER" "$EXIT_STATUS, ${log:-no log line}" \
      "$(verdict "$ok" "stuck $path")"
    [ "$EXIT_STATUS" != running ] || stop_pid "$ML_PID"
  done
  echo "exit (s): from the second SIGTERM to the process gone; target < 1 s, status 1."
}

# ---------------------------------------------------------------------------- main

main() {
  local s selected=${STRESS_ONLY:-$SCENARIOS} t0
  selected=$(echo "$selected" | tr ',' ' ')
  for s in $selected; do
    case " $SCENARIOS " in *" $s "*) ;; *) die "unknown scenario '$s' (scenarios: $SCENARIOS)" ;; esac
  done
  [ -x "$MOONLET" ] || die "$MOONLET not found: run make first"
  command -v wrk >/dev/null || die "wrk not installed (scripts/deps.sh stress)"
  command -v nginx >/dev/null || die "nginx not installed (scripts/deps.sh stress)"
  build_client
  build_burst
  t0=$(date +%s)
  echo "moonlet stress — $("$MOONLET" version 2>/dev/null | head -1), $(nproc) CPUs" \
    "($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(uname -sr)," \
    "$(date -u +%Y-%m-%d)$( [ "$QUICK" = 1 ] && echo ', STRESS_QUICK=1')"
  for s in $selected; do "stress_$s"; done
  echo
  if [ ! -s "$TMP/missed" ]; then
    echo "stress: every target met ($(( $(date +%s) - t0 )) s)"
  else
    echo "stress: targets MISSED: $(paste -sd, "$TMP/missed") ($(( $(date +%s) - t0 )) s)"
    exit 1
  fi
}

main "$@"

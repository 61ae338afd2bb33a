#!/usr/bin/env bash
# bench/run.sh — moonlet's benchmarks (run by `make bench`, after `make`).
#
# Prints one plain-text table per section. Every server it starts binds 127.0.0.1 only,
# every load is bounded in time, and everything it started is stopped on exit (trap).
#
#   bench/run.sh                       all sections
#   BENCH_ONLY=hello bench/run.sh      one section (comma-separated list: hello,sleep_burst)
#   BENCH_DURATION=3s bench/run.sh     shorter wrk runs (default 10s)
#   BUILD=build-asan bench/run.sh      another build directory (default build)
#
# Adding a section: write a function bench_NAME that prints its own table (use the helpers
# below: start_moonlet, stop_pid, run_fg, rss_kb, cpu_ticks, wrk_run, section), add NAME to
# SECTIONS, and run it alone with BENCH_ONLY=NAME.

# Table formats live in variables (fmt) on purpose.
# shellcheck disable=SC2059
set -eu

cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
MOONLET=$BUILD/moonlet
DURATION=${BENCH_DURATION:-10s}
SECTIONS="hello sleep_burst"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moonlet-bench.XXXXXX")
STARTED=""   # pids of the processes this script started and has not stopped yet

# ---------------------------------------------------------------------------- helpers

die() { echo "bench: $*" >&2; exit 1; }

# stop_pid PID: SIGTERM, wait up to 3 s, then SIGKILL. Only ever called with our own pids.
stop_pid() {
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

forget_pid() { STARTED=$(echo " $STARTED " | sed "s/ $1 / /; s/^ *//; s/ *$//"); }

# run_fg CMD...: run CMD and wait for it. CMD runs in the background so that a signal to
# this script is handled at once (bash defers traps while a foreground command runs) and
# the EXIT trap stops CMD too. Returns CMD's exit status.
run_fg() {
  local pid rc=0
  "$@" &
  pid=$!
  STARTED="$STARTED $pid"
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

cleanup() {
  local pid
  for pid in $STARTED; do stop_pid "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# section TITLE: a header line
section() { printf '\n== %s ==\n' "$1"; }

# rss_kb PID [FIELD]: VmRSS (or FIELD, e.g. VmHWM) of PID in kB, from /proc/PID/status
rss_kb() {
  local k v _ field=${2:-VmRSS}
  while read -r k v _; do
    if [ "$k" = "$field:" ]; then echo "$v"; return 0; fi
  done <"/proc/$1/status" 2>/dev/null || true
  echo 0
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# seconds DURATION: wrk-style duration (10, 10s, 2m) in whole seconds
seconds() {
  case $1 in
    *m) echo $(( ${1%m} * 60 )) ;;
    *h) echo $(( ${1%h} * 3600 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}

# start_moonlet NAME [APPDIR] [NOFILE]: starts moonlet on a free port of 127.0.0.1;
# sets ML_PID and ML_PORT. Its stdout/stderr go to $TMP/moonlet-NAME.out / .err.
# NOFILE raises the soft open-files limit of the server (moonlet keeps the limit it inherits).
start_moonlet() {
  local name=$1 app=${2:-apps/hello} nofile=${3:-}
  [ -x "$MOONLET" ] || die "$MOONLET not found: run make first"
  (
    if [ -n "$nofile" ]; then ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; fi
    exec "$MOONLET" serve "$app" --host 127.0.0.1 --port 0 --log-level warn
  ) >"$TMP/moonlet-$name.out" 2>"$TMP/moonlet-$name.err" &
  ML_PID=$!
  STARTED="$STARTED $ML_PID"
  ML_PORT=""
  for _ in $(seq 100); do
    ML_PORT=$(sed -n 's#^listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$TMP/moonlet-$name.out")
    [ -n "$ML_PORT" ] && return 0
    kill -0 "$ML_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$TMP/moonlet-$name.err" >&2
  die "moonlet ($name) did not print 'listening on http://127.0.0.1:PORT'"
}

# port_open PORT: true when something accepts connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# listen_overflows: the kernel's TcpExt ListenOverflows counter (SYNs/ACKs dropped because an
# accept queue was full; counts every listener of this network namespace)
listen_overflows() {
  awk '$1 == "TcpExt:" { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 }
                         else { print $col["ListenOverflows"] + 0; exit } }' \
    /proc/net/netstat 2>/dev/null || echo 0
}

# moonlet_log NAME: print what moonlet logged (at warn level), if anything
moonlet_log() {
  if [ -s "$TMP/moonlet-$1.err" ]; then
    echo "moonlet logged ($(wc -l <"$TMP/moonlet-$1.err") lines on stderr), first lines:"
    head -5 "$TMP/moonlet-$1.err" | sed 's/^/  | /'
  fi
}

# cpu_ticks PID...: user+system CPU time of these processes, in clock ticks
cpu_ticks() {
  local pid t=0 f
  for pid in "$@"; do
    f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086 # split the fields: after "pid (comm) ", utime=$12 stime=$13
    set -- $f
    t=$(( t + ${12} + ${13} ))
  done
  echo "$t"
}

# wrk_run NAME URL [PID...]: warm up 1 s, then wrk -t1 -c64 -d$DURATION --latency.
# Sets W_RPS, W_P99, W_ERRORS (socket errors + non-2xx/3xx), and W_CPU: the CPU use of
# the PIDs (the server's processes) during the measured run, in % of one CPU.
# wrk's output is kept in $TMP/NAME.wrk.
wrk_run() {
  local name=$1 url=$2 limit c0 c1 t0 t1
  shift 2
  limit=$(( $(seconds "$DURATION") + 30 ))
  run_fg timeout -k 5 10 wrk -t1 -c64 -d1s "$url" >/dev/null 2>&1 || true
  c0=$(cpu_ticks "$@") t0=$(date +%s.%N)
  run_fg timeout -k 5 "$limit" wrk -t1 -c64 -d"$DURATION" --latency "$url" >"$TMP/$name.wrk" 2>&1 ||
    { cat "$TMP/$name.wrk" >&2; die "wrk against $url failed"; }
  c1=$(cpu_ticks "$@") t1=$(date +%s.%N)
  W_CPU=$(awk -v c="$(( c1 - c0 ))" -v hz="$(getconf CLK_TCK)" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.0f%%", 100 * c / hz / (t1 - t0) }')
  W_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$TMP/$name.wrk")
  W_P99=$(awk '$1 == "99%" { print $2 }' "$TMP/$name.wrk")
  W_ERRORS=$(awk '
    /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { n += $NF }
    END { print n + 0 }' "$TMP/$name.wrk")
  if [ -z "$W_RPS" ] || [ -z "$W_P99" ]; then
    cat "$TMP/$name.wrk" >&2
    die "cannot parse wrk output"
  fi
}

# start_nginx: nginx in the foreground (worker_processes 1) with its own prefix in $TMP/nginx,
# on a free port of 127.0.0.1; sets NG_PID and NG_PORT.
start_nginx() {
  local dir=$TMP/nginx port temps="" m
  mkdir -p "$dir"
  for m in client_body proxy fastcgi uwsgi scgi; do
    # only the temp paths of modules this nginx has (nginx-light lacks some)
    if [ "$m" = client_body ] || ! nginx -V 2>&1 | grep -q -- "--without-http_${m}_module"; then
      temps="$temps    ${m}_temp_path $dir/$m;
"
    fi
  done
  for _ in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + RANDOM % 12000 ))   # below the ephemeral range (32768-)
    port_open "$port" && continue
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
$temps    keepalive_requests 1000000;
    keepalive_timeout 65;
    server {
        listen 127.0.0.1:$port;
        server_name _;
        location = /hello {
            default_type application/json;
            return 200 '{"message":"hello"}';
        }
    }
}
EOF
    nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
      >"$dir/stdout" 2>&1 &
    NG_PID=$!
    STARTED="$STARTED $NG_PID"
    for _ in $(seq 100); do
      if port_open "$port"; then NG_PORT=$port; return 0; fi
      kill -0 "$NG_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$NG_PID"
    grep -q "Address already in use" "$dir/error.log" "$dir/stdout" 2>/dev/null && continue
    cat "$dir/error.log" "$dir/stdout" >&2 2>/dev/null || true
    die "nginx did not start"
  done
  die "no free port found for nginx"
}

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
  run_fg "$burst" 127.0.0.1 "$ML_PORT" "$n" "/sleep?s=1" 30 >"$TMP/burst.out" 2>"$TMP/burst.err" ||
    rc=$?
  ovf=$(( $(listen_overflows) - ovf0 ))
  rss1=$(rss_kb "$ML_PID")
  hwm=$(rss_kb "$ML_PID" VmHWM)
  stop_pid "$sampler"
  sampled=$(cat "$TMP/rss_max")
  peak=$(printf '%s\n' "$sampled" "$rss1" "$hwm" | sort -n | tail -1)
  out=$(cat "$TMP/burst.out")
  detail=$(tail -1 "$TMP/burst.err")
  if [ "$rc" -gt 1 ] || [ -z "$out" ]; then
    cat "$TMP/burst.err" >&2
    die "burst failed (status $rc)"
  fi

  completed=$(echo "$out" | sed -n 's/.*completed=\([0-9]*\).*/\1/p')
  errors=$(echo "$out" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
  total=$(echo "$out" | sed -n 's/.*first_send_to_last_response=\([0-9.]*\).*/\1/p')
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
  echo "$detail" | awk -v ovf="$ovf" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    printf "requests sent over %s (first to last send); per request, sent -> response:", v["last_send_after_first"]
    printf " min %s, p50 %s, p99 %s, max %s\n", v["latency_min"], v["p50"], v["p99"], v["max"]
    printf "listen queue (backlog 1024) full: %d connection attempts dropped (kernel ListenOverflows), %d connects restarted after 100 ms\n", ovf, v["connect_retries"]
    n = split("connect reset early_close status timeout parse", ek, " ")
    for (i = 1; i <= n; i++) if (ek[i] in v) printf "errors %s: %s\n", ek[i], v[ek[i]] }'
  if ! kill -0 "$ML_PID" 2>/dev/null; then
    echo "!! moonlet exited during the burst"
  fi
  stop_pid "$ML_PID"
  moonlet_log burst
}

# ---------------------------------------------------------------------------- main

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

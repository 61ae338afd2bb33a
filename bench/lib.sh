# bench/lib.sh — shell helpers shared by bench/run.sh (make bench) and stress/run.sh
# (make stress). Sourced, not run.
#
# The script that sources it sets, before calling any helper: TMP (a private temp dir),
# STARTED="" (the pids it started and has not stopped yet: its EXIT trap stops them with
# stop_pid), BUILD and MOONLET (the binary), DURATION (wrk runs, e.g. 10s), and optionally
# LIB_NAME (the prefix of die's messages, default "bench").

# shellcheck shell=bash
# Table formats live in variables (fmt) on purpose.
# shellcheck disable=SC2059,SC2034

die() { echo "${LIB_NAME:-bench}: $*" >&2; exit 1; }

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

# start_moonlet NAME [APPDIR] [NOFILE] [SERVE-OPTION...]: starts moonlet on a free port of
# 127.0.0.1; sets ML_PID and ML_PORT. Its stdout/stderr go to $TMP/moonlet-NAME.out / .err.
# NOFILE raises the soft open-files limit of the server (moonlet keeps the limit it inherits;
# "" leaves it). SERVE-OPTIONs (e.g. --pool-size 100) are passed on to `moonlet serve`.
start_moonlet() {
  local name=$1 app=${2:-apps/hello} nofile=${3:-}
  if [ $# -ge 3 ]; then shift 3; else set --; fi
  [ -x "$MOONLET" ] || die "$MOONLET not found: run make first"
  : >"$TMP/moonlet-$name.out"   # exists before the poll below reads it (set -e)
  (
    if [ -n "$nofile" ]; then ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; fi
    exec "$MOONLET" serve "$app" --host 127.0.0.1 --port 0 --log-level warn "$@"
  ) >"$TMP/moonlet-$name.out" 2>"$TMP/moonlet-$name.err" &
  ML_PID=$!
  STARTED="$STARTED $ML_PID"
  ML_PORT=""
  for _ in $(seq 100); do
    ML_PORT=$(sed -n 's#^listening on https\{0,1\}://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$TMP/moonlet-$name.out")
    [ -n "$ML_PORT" ] && return 0
    kill -0 "$ML_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$TMP/moonlet-$name.err" >&2
  die "moonlet ($name) did not print 'listening on http://127.0.0.1:PORT'"
}

# port_open PORT: true when something accepts connections on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: a port of 127.0.0.1 nothing listens on (for an app that must know its port)
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 12000))   # below the ephemeral range (32768-): a client's
                                    # connection may hold a port up there (EADDRINUSE)
    port_open "$p" || { echo "$p"; return 0; }
  done
  die "no free port found"
}

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

# cpu_ticks [-u] PID...: user+system CPU time of these processes (-u: user time only), in
# clock ticks
cpu_ticks() {
  local pid t=0 f user=0
  [ "${1:-}" != -u ] || { user=1; shift; }
  for pid in "$@"; do
    f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086 # split the fields: after "pid (comm) ", utime=$12 stime=$13
    set -- $f
    t=$(( t + ${12} + (user ? 0 : ${13}) ))
  done
  echo "$t"
}

# wrk_run NAME URL [PID...]: warm up 1 s, then wrk -t1 -c64 -d$DURATION --latency.
# Sets W_RPS, W_P99, W_ERRORS (socket errors + non-2xx/3xx), W_CPU: the CPU use of
# the PIDs (the server's processes) during the measured run, in % of one CPU, W_USER_SHARE:
# the part of it in user space (0-1: the rest is the kernel's), and W_CLIENT_US: wrk's own
# CPU time per request in microseconds (user + system).
# wrk's output is kept in $TMP/NAME.wrk. W_CONNS: other than 64 connections; W_SCRIPT: a
# wrk Lua script (-s) for both runs; W_CLIENT_CPU: the CPU wrk runs on (taskset -c), the
# PIDs then being pinned elsewhere by the caller (pin_pids).
wrk_run() {
  local name=$1 url=$2 limit c0 c1 u0 u1 t0 t1 conns=${W_CONNS:-64}
  local -a script=() pin=()
  shift 2
  [ -z "${W_SCRIPT:-}" ] || script=(-s "$W_SCRIPT")
  [ -z "${W_CLIENT_CPU:-}" ] || pin=(taskset -c "$W_CLIENT_CPU")
  limit=$(( $(seconds "$DURATION") + 30 ))
  run_fg "${pin[@]}" timeout -k 5 10 wrk -t1 -c"$conns" -d1s "${script[@]}" "$url" \
    >/dev/null 2>&1 || true
  c0=$(cpu_ticks "$@") u0=$(cpu_ticks -u "$@") t0=$(date +%s.%N)
  run_fg child_times "$TMP/$name.times" "${pin[@]}" timeout -k 5 "$limit" \
    wrk -t1 -c"$conns" -d"$DURATION" --latency "${script[@]}" "$url" >"$TMP/$name.wrk" 2>&1 ||
    { cat "$TMP/$name.wrk" >&2; die "wrk against $url failed"; }
  c1=$(cpu_ticks "$@") u1=$(cpu_ticks -u "$@") t1=$(date +%s.%N)
  W_CPU=$(awk -v c="$(( c1 - c0 ))" -v hz="$(getconf CLK_TCK)" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%.0f%%", 100 * c / hz / (t1 - t0) }')
  W_USER_SHARE=$(awk -v c="$(( c1 - c0 ))" -v u="$(( u1 - u0 ))" \
    'BEGIN { printf "%.3f", (c > 0 ? u / c : 0) }')
  wrk_parse "$name"
  # bash's `times`, second line: the children's user and system time, "0m1.234s 0m0.567s"
  W_CLIENT_US=$(awk -v n="$(awk '/ requests in / { print $1 }' "$TMP/$name.wrk")" '
    NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
              printf "%.2f", (n > 0 ? (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1e6 / n : 0) }' \
    "$TMP/$name.times")
}

# child_times FILE CMD...: runs CMD, then writes bash's `times` to FILE: its second line is
# the CPU time of CMD and all it waited for (this runs in a subshell of its own, so nothing
# else is counted). Returns CMD's status.
child_times() {
  local file=$1 rc=0
  shift
  "$@" || rc=$?
  times >"$file"
  return "$rc"
}

# pin_pids CPU PID...: every thread of each PID onto CPU (taskset), so that a client pinned
# to another CPU (W_CLIENT_CPU) takes none of the server's time.
pin_pids() {
  local cpu=$1 pid
  shift
  for pid in "$@"; do taskset -a -p -c "$cpu" "$pid" >/dev/null || die "taskset $pid failed"; done
}

# cap_pids PERCENT PID...: holds the processes (every thread) to PERCENT of one CPU in a
# cgroup of their own (the cpu controller: v1's cpu.cfs_quota_us, or v2's cpu.max), so that
# a run is bound by them and not by the client. Sets CAP_CG; returns 1 where no such group
# can be made (not root, no cpu controller). uncap undoes it (run.sh's cleanup calls it).
cap_pids() {
  local pct=$1 pid
  shift
  uncap
  if [ -w /sys/fs/cgroup/cpu ] && [ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    CAP_CG=/sys/fs/cgroup/cpu/moonlet-bench-$$
    mkdir -p "$CAP_CG" 2>/dev/null && echo 100000 >"$CAP_CG/cpu.cfs_period_us" &&
      echo $((pct * 1000)) >"$CAP_CG/cpu.cfs_quota_us" || { uncap; return 1; }
  elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
    CAP_CG=/sys/fs/cgroup/moonlet-bench-$$
    mkdir -p "$CAP_CG" 2>/dev/null && echo "$((pct * 1000)) 100000" >"$CAP_CG/cpu.max" ||
      { uncap; return 1; }
  else
    return 1
  fi
  for pid in "$@"; do echo "$pid" >"$CAP_CG/cgroup.procs" || { uncap; return 1; }; done
}

# uncap: the processes cap_pids held go back to the parent group, and its group goes.
uncap() {
  local pid
  [ -n "${CAP_CG:-}" ] || return 0
  if [ -d "$CAP_CG" ]; then
    for pid in $(cat "$CAP_CG/cgroup.procs" 2>/dev/null); do
      echo "$pid" >"${CAP_CG%/*}/cgroup.procs" 2>/dev/null || true
    done
    rmdir "$CAP_CG" 2>/dev/null || true
  fi
  CAP_CG=""
}

# wrk_parse NAME: W_RPS, W_P99 and W_ERRORS from wrk's output in $TMP/NAME.wrk (run with
# --latency); dies when it has none.
wrk_parse() {
  local name=$1
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

# wrk_abba NAME URL_A PID_A URL_B PID_B: compares two targets under drifting background load:
# wrk_run in the order A, B, B, A, each run half of $DURATION (at least 2 s), so a load that
# rises or falls steadily weighs on both alike. Sets WA_RPS and WB_RPS (mean req/s of the two
# runs), WA_RUNS/WB_RUNS ("rps1 / rps2"), WA_P99/WB_P99 ("p99 / p99"), WA_ERRORS/WB_ERRORS
# (sum), WA_CPU/WB_CPU (mean server CPU, % of one CPU), WA_US/WB_US (server CPU time per
# request in microseconds, mean of the two runs: less sensitive to other load on the machine
# than req/s), WA_CLIENT_US/WB_CLIENT_US (wrk's CPU time per request, mean of the two runs)
# and W_HALF (the duration of each run).
# PID_*: the server of each target.
wrk_abba() {
  local name=$1 url_a=$2 pid_a=$3 url_b=$4 pid_b=$5 half run t rps="" p99="" err="" cpu="" us=""
  local cus=""
  half=$(( $(seconds "$DURATION") / 2 ))
  [ "$half" -ge 2 ] || half=2
  W_HALF=${half}s
  for run in a1 b1 b2 a2; do
    t=${run%?}
    if [ "$t" = a ]; then
      DURATION=${half}s wrk_run "${name}_$run" "$url_a" "$pid_a"
    else
      DURATION=${half}s wrk_run "${name}_$run" "$url_b" "$pid_b"
    fi
    rps="$rps $t=${W_RPS}" p99="$p99 $t=$W_P99" err="$err $t=$W_ERRORS" cpu="$cpu $t=${W_CPU%\%}"
    us="$us $t=$(awk -v c="${W_CPU%\%}" -v r="$W_RPS" 'BEGIN { printf "%.2f", c * 1e4 / r }')"
    cus="$cus $t=$W_CLIENT_US"
  done
  # pick_runs T LIST: "v1 / v2" of the entries T=v of LIST
  pick_runs() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | paste -sd' ' | sed 's# # / #'; }
  WA_RUNS=$(pick_runs a "$rps") WB_RUNS=$(pick_runs b "$rps")
  WA_P99=$(pick_runs a "$p99") WB_P99=$(pick_runs b "$p99")
  WA_RPS=$(echo "$WA_RUNS" | awk -F' / ' '{ printf "%.2f", ($1 + $2) / 2 }')
  WB_RPS=$(echo "$WB_RUNS" | awk -F' / ' '{ printf "%.2f", ($1 + $2) / 2 }')
  WA_ERRORS=$(pick_runs a "$err" | awk -F' / ' '{ print $1 + $2 }')
  WB_ERRORS=$(pick_runs b "$err" | awk -F' / ' '{ print $1 + $2 }')
  WA_CPU=$(pick_runs a "$cpu" | awk -F' / ' '{ printf "%.0f%%", ($1 + $2) / 2 }')
  WB_CPU=$(pick_runs b "$cpu" | awk -F' / ' '{ printf "%.0f%%", ($1 + $2) / 2 }')
  WA_US=$(pick_runs a "$us" | awk -F' / ' '{ printf "%.1f", ($1 + $2) / 2 }')
  WB_US=$(pick_runs b "$us" | awk -F' / ' '{ printf "%.1f", ($1 + $2) / 2 }')
  WA_CLIENT_US=$(pick_runs a "$cus" | awk -F' / ' '{ printf "%.1f", ($1 + $2) / 2 }')
  WB_CLIENT_US=$(pick_runs b "$cus" | awk -F' / ' '{ printf "%.1f", ($1 + $2) / 2 }')
}

# abba_table FIRST LABEL_A LABEL_B [ERRORS]: the table of a wrk_abba run: a header (FIRST
# heads the first column, ERRORS the errors one, default "errors"), then A's row and B's.
abba_table() {
  local fmt='%-22s %10s %21s %17s %7s %8s %9s\n'
  printf "$fmt" "$1" "req/s" "the 2 runs (req/s)" "p99 (2 runs)" "${4:-errors}" "srv CPU" "CPU us/req"
  printf "$fmt" "----------------------" "----------" "---------------------" "-----------------" \
    "-------" "--------" "---------"
  printf "$fmt" "$2" "$WA_RPS" "$WA_RUNS" "$WA_P99" "$WA_ERRORS" "$WA_CPU" "$WA_US"
  printf "$fmt" "$3" "$WB_RPS" "$WB_RUNS" "$WB_P99" "$WB_ERRORS" "$WB_CPU" "$WB_US"
}

# abba_ratio LABEL NOTE CPU_NOTE [TARGET]: after wrk_abba, B's req/s over A's against the
# >= TARGET target (default 0.95; NOTE follows the target), then B's server CPU per request
# over A's (CPU_NOTE says which over which).
abba_ratio() {
  local ratio verdict target=${4:-0.95}
  ratio=$(awk -v a="$WB_RPS" -v b="$WA_RPS" 'BEGIN { printf "%.2f", a / b }')
  # judged on the ratio itself, not on its rounding (0.696 shows as 0.70 and is not met)
  verdict=$(awk -v a="$WB_RPS" -v b="$WA_RPS" -v t="$target" \
    'BEGIN { print (a / b >= t ? "met" : "NOT met") }')
  printf '%-22s %10s   target >= %s%s: %s\n' "$1" "$ratio" "$target" "$2" "$verdict"
  printf '%-22s %10s   (server CPU per request, %s)\n' "CPU ratio" \
    "$(awk -v a="$WB_US" -v b="$WA_US" 'BEGIN { printf "%.2f", a / b }')" "$3"
}

# start_nginx: nginx in the foreground (worker_processes 1) with its own prefix in $TMP/nginx,
# on a free port of 127.0.0.1; sets NG_PID and NG_PORT.
# NG_EXTRA: more server-block lines (a location), empty by default; NG_CONNS: its
# worker_connections (default 1024). NG_MAIN and NG_HTTP: more lines in the main and http
# contexts (load_module, lua_package_path); NG_HELLO=0: no `return 200` /hello of its own
# (NG_EXTRA has one); NG_ENV: VAR=value words nginx runs with (LD_LIBRARY_PATH=...).
start_nginx() {
  local dir=$TMP/nginx port temps="" m hello
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
    hello='        location = /hello {
            default_type application/json;
            return 200 '"'"'{"message":"hello"}'"'"';
        }'
    [ "${NG_HELLO:-1}" = 1 ] || hello=""
    cat >"$dir/nginx.conf" <<EOF
${NG_MAIN:-}
worker_processes 1;
worker_rlimit_nofile $(( ${NG_CONNS:-1024} * 2 + 64 ));
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections ${NG_CONNS:-1024}; }
http {
    access_log off;
${NG_HTTP:-}
$temps    keepalive_requests 1000000;
    keepalive_timeout 65;
    server {
        listen 127.0.0.1:$port;
        server_name _;
$hello
${NG_EXTRA:-}
    }
}
EOF
    # shellcheck disable=SC2086 # NG_ENV: words for env
    env ${NG_ENV:-} nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
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

# build_burst: compiles bench/burst.c into $BUILD/bench/burst when missing or older; sets BURST
build_burst() {
  BURST=$BUILD/bench/burst
  if [ ! -x "$BURST" ] || [ bench/burst.c -nt "$BURST" ]; then
    mkdir -p "$BUILD/bench"
    cc -O2 -o "$BURST" bench/burst.c
  fi
}

# burst_run NAME PORT N PATH [TIMEOUT_S]: N concurrent GET PATH to 127.0.0.1:PORT with
# bench/burst (one connection each; call build_burst first). Sets B_TIME (first request sent
# -> last response received, s), B_DONE (2xx responses), B_ERRORS, B_LAT_MIN and B_LAT_MAX
# (per request, sent -> response, s), B_SENT (the last request sent, s after the first) and
# B_DETAIL (burst's stderr line). Its output is kept
# in $TMP/NAME.burst and $TMP/NAME.burst.err.
burst_run() {
  local name=$1 port=$2 n=$3 path=$4 timeout=${5:-30} rc=0
  run_fg "$BURST" 127.0.0.1 "$port" "$n" "$path" "$timeout" \
    >"$TMP/$name.burst" 2>"$TMP/$name.burst.err" || rc=$?
  burst_parse "$name" "$rc" "$path"
}

# burst_parse NAME STATUS PATH: the B_* figures of burst_run from $TMP/NAME.burst and
# $TMP/NAME.burst.err, for a burst run another way (in the background); STATUS: its exit
# status (dies when above 1).
burst_parse() {
  local name=$1 rc=$2 path=$3 out
  out=$(cat "$TMP/$name.burst")
  if [ "$rc" -gt 1 ] || [ -z "$out" ]; then
    cat "$TMP/$name.burst.err" >&2
    die "burst $path failed (status $rc)"
  fi
  B_DONE=$(echo "$out" | sed -n 's/.*completed=\([0-9]*\).*/\1/p')
  B_ERRORS=$(echo "$out" | sed -n 's/.*errors=\([0-9]*\).*/\1/p')
  B_TIME=$(echo "$out" | sed -n 's/.*first_send_to_last_response=\([0-9.]*\).*/\1/p')
  B_DETAIL=$(tail -1 "$TMP/$name.burst.err")
  B_LAT_MIN=$(echo "$B_DETAIL" | sed -n 's/.*latency_min=\([0-9.]*\)s.*/\1/p')
  B_SENT=$(echo "$B_DETAIL" | sed -n 's/.*last_send_after_first=\([0-9.]*\)s.*/\1/p')
  B_LAT_MAX=$(echo "$B_DETAIL" | sed -n 's/.* max=\([0-9.]*\)s.*/\1/p')
}

# count_lines FILE PATTERN: lines of FILE containing PATTERN (fixed string); 0 if no file
count_lines() {
  local n
  n=$(grep -cF -- "$2" "$1" 2>/dev/null) || true
  echo "${n:-0}"
}

# threads_of PID: the number of threads of PID
threads_of() { awk '$1 == "Threads:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# wrk_bg NAME SECONDS CONNS URL [WRK-OPTION...]: starts wrk -t1 -cCONNS -dSECONDS --latency
# in the background (output in $TMP/NAME.wrk); sets WRK_PID. wrk_wait NAME PID waits for it
# and sets W_RPS, W_P99, W_ERRORS (wrk_parse).
wrk_bg() {
  local name=$1 secs=$2 conns=$3 url=$4
  shift 4
  timeout -k 5 $(( secs + 30 )) wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url" \
    >"$TMP/$name.wrk" 2>&1 &
  WRK_PID=$!
  STARTED="$STARTED $WRK_PID"
}
wrk_wait() {
  local rc=0
  wait "$2" || rc=$?
  forget_pid "$2"
  [ "$rc" = 0 ] || { cat "$TMP/$1.wrk" >&2; die "wrk ($1) failed (status $rc)"; }
  wrk_parse "$1"
}

# busy_ticks: the machine's busy CPU time (all CPUs, every process), in clock ticks
busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# pct TICKS T0 T1: TICKS over the wall time T0..T1 (date +%s.%N), in % of one CPU
pct() {
  awk -v c="$1" -v hz="$(getconf CLK_TCK)" -v a="$2" -v b="$3" \
    'BEGIN { printf "%.0f%%", 100 * c / hz / (b - a) }'
}

# ms WRK-TIME: wrk's 480.00us / 4.26ms / 1.02s / 2.00m in milliseconds
ms() {
  awk -v t="$1" 'BEGIN { u = t; sub(/^[0-9.]+/, "", u); v = t + 0
    f = u == "us" ? 0.001 : u == "ms" ? 1 : u == "s" ? 1000 : u == "m" ? 60000 : -1
    if (f < 0) print "?"; else printf "%.2f", v * f }'
}

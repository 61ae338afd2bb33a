#!/bin/sh
# Runs the libFuzzer targets built by `make fuzz-build` (fuzz/*.c, README "Fuzzing").
#   scripts/fuzz.sh run NAME...    each for FUZZ_SECONDS (60): new inputs are kept in
#                                  $BUILD/fuzz/corpus/NAME, then the request path's coverage
#   scripts/fuzz.sh test NAME...   each over its corpus, then FUZZ_TEST_SECONDS (4) more
#                                  (make test): "N passed, N failed" last
# The seeds and regression inputs are in fuzz/corpus/NAME; a crash, a sanitizer report, a
# leak or a hang (-timeout) is written there as crash-*/leak-*/timeout-*, so that every
# later run (make test included) replays it: fix the bug, keep the file (rename it to say
# what it was), commit both.
BUILD=${BUILD:-build}
mode=$1
shift
fail=0
pass=0
# the request path, bytes in to bytes out: what `run` reports the coverage of for `request`
REQUEST_PATH="http/server.c http/http.c http/headers.c http/router.c http/response.c
  http/multipart.c http/upload.c bridge/dispatch.c bridge/request.c bridge/lresponse.c
  bridge/json.c bridge/pooled_route.c bridge/copy.c bridge/stream.c
  llhttp/llhttp.c llhttp/http.c llhttp/api.c"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

for name in "$@"; do
  bin=$BUILD/fuzz/$name
  seeds=fuzz/corpus/$name
  work=$BUILD/fuzz/corpus/$name       # what `run` found, kept for the next run
  [ "$mode" = test ] && work=$BUILD/fuzz/test-corpus/$name && rm -rf "$work"
  mkdir -p "$work" "$seeds"
  # Targets with a Lua state: LuaJIT keeps tagged pointers LeakSanitizer cannot follow,
  # so its live objects would look leaked (leaks are make test-asan's to find there).
  leaks=1
  grep -q FUZZ_NO_LEAKS "fuzz/$name.c" && leaks=0
  case $mode in
    run) secs=${FUZZ_SECONDS:-60}; extra="-print_coverage=$([ "$name" = request ] && echo 1 || echo 0)" ;;
    test) secs=${FUZZ_TEST_SECONDS:-4}; extra="" ;;
    *) echo "usage: $0 run|test NAME..." >&2; exit 2 ;;
  esac
  echo "== fuzz $name (${secs}s)"
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: a leak that grows
  ASAN_OPTIONS=detect_leaks=$leaks:abort_on_error=1 \
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=$leaks \
    -print_final_stats=1 -artifact_prefix="$seeds/" $extra "$work" "$seeds" >"$out" 2>&1
  rc=$?
  grep -E '^#[0-9]+.*(INITED|DONE)' "$out"
  if [ $rc -ne 0 ]; then
    # the report: from the sanitizer's or the check's first line, without LuaJIT's frames
    sed -n '/ERROR: \|runtime error\|^fuzz: \|WARNING: \|==[0-9]*== /,$p' "$out" |
      grep -v 'in lj_\|libluajit\|^INFO\|^stat::' | head -n 60
    echo "FAIL fuzz $name: see the crash-/leak-/timeout- file in $seeds"
    fail=$((fail + 1))
    continue
  fi
  pass=$((pass + 1))
  if [ "$mode" = run ] && [ "$name" = request ]; then
    # -print_coverage: COVERED_FUNC / UNCOVERED_FUNC lines, "edges: covered/total" each
    echo "-- coverage of the request path (edges covered / instrumented, per file)"
    grep -E '^(UN)?COVERED_FUNC' "$out" | awk -v files="$REQUEST_PATH" '
      BEGIN { n = split(files, w, " "); for (i = 1; i <= n; i++) want[w[i]] = 1 }
      { split($5, e, "/"); file = $NF; sub(/:[0-9]+$/, "", file)
        sub(/.*\/core\//, "", file); sub(/.*\/llhttp\//, "llhttp/", file)
        if (file in want) { cov[file] += e[1]; tot[file] += e[2] } }
      END { for (f in cov) { printf "%-24s %5d / %5d  %5.1f%%\n", f, cov[f], tot[f],
                                    100 * cov[f] / tot[f]; c += cov[f]; t += tot[f] }
            if (t) printf "%-24s %5d / %5d  %5.1f%%\n", "total", c, t, 100 * c / t }' |
      sort -k1,1 | sort -s -k1,1 -t' ' | awk '$1 != "total" { print } $1 == "total" { last = $0 } END { print last }'
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

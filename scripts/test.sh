#!/bin/sh
# Runs the whole suite: the C unit tests, the fuzz targets over their corpora, then the Lua
# specs (real binary, real sockets).
# Every part prints "N passed, N failed" last; this script adds them up and prints the
# total as its own last line. Exit status 0 only if nothing failed.
BUILD=${BUILD:-build}
export MOONLET_BIN="$BUILD/moonlet"
export MOONLET_EMBED_BIN="$BUILD/tests/embed_example"
export MOONLET_EMBED_HOSTS_BIN="$BUILD/tests/embed_hosts"
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

tally() {   # reads the last "N passed, N failed" of $log
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "$1: no result line (crashed?)"
    failed=$((failed + 1))
    return
  fi
  p=$(echo "$line" | cut -d' ' -f1)
  f=$(echo "$line" | cut -d' ' -f3)
  passed=$((passed + p))
  failed=$((failed + f))
}

for t in "$BUILD"/tests/*_test; do
  echo "== $t"
  "$t" >"$log" 2>&1
  sed '$d' "$log"
  tally "$t"
done

# The libFuzzer targets (make fuzz-build) over their corpora, a few seconds each: a crash
# found once stays found (README "Fuzzing"). Already under ASan and UBSan: not again in
# make test-asan.
if [ -z "$SPECS" ] && [ -z "$SAN_LOGS" ]; then
  echo "== fuzz"
  names=$(for f in fuzz/*.c; do basename "$f" .c; done)
  # shellcheck disable=SC2086
  BUILD=$BUILD scripts/fuzz.sh test $names >"$log" 2>&1
  sed '$d' "$log"
  tally fuzz
fi

echo "== specs"
"$MOONLET_BIN" test ${SPECS:-tests/spec} 2>&1 | tee "$log" | sed '$d'
tally specs

if [ -z "$SPECS" ]; then   # an example app's own spec, run the way its user runs it
  echo "== apps/todo"
  "$MOONLET_BIN" test apps/todo 2>&1 | tee "$log" | sed '$d'
  tally apps/todo
fi

# Under the sanitizers (make test-asan) every instrumented process -- the servers the specs
# start included, whose stderr nobody reads at their exit -- writes its reports into
# $SAN_LOGS: each report is a failure.
if [ -n "$SAN_LOGS" ]; then
  for f in "$SAN_LOGS"/*; do
    [ -e "$f" ] || continue
    echo "== sanitizer report: $f"
    head -n 60 "$f"
    failed=$((failed + 1))
  done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

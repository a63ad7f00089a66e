#!/usr/bin/env bash
# Fuzzes every parser of outside input with libFuzzer (clang, ASan + UBSan), SECONDS per target
# (default 20): installs what is missing, builds build/fuzz, replays each saved input of
# tests/fuzz/regressions/<target>/ (none may crash), then fuzzes each target from a copy of
# tests/fuzz/corpus/<target>/ (the repository is not modified).
# Exits non-zero if any target crashes; the input that crashed it is saved under
# build/fuzz/crashes/<target>/. Copy it to tests/fuzz/regressions/<target>/ once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-20}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: tools/fuzz.sh [SECONDS]" >&2; exit 2; }

build=build/fuzz
targets=(fuzz_config fuzz_units fuzz_address fuzz_naming fuzz_proxy_header fuzz_range fuzz_auth
  fuzz_manifest fuzz_cat_names fuzz_octet_framer fuzz_ship_cursor)
# Longest input tried per target: room for a config file; a PROXY header (536 bytes at most) plus
# stream bytes; a template plus its values; a manifest line; short texts for the rest.
declare -A max_len=([fuzz_config]=4096 [fuzz_units]=64 [fuzz_address]=256 [fuzz_naming]=512
  [fuzz_proxy_header]=600 [fuzz_range]=128 [fuzz_auth]=1024 [fuzz_manifest]=1024
  [fuzz_cat_names]=512 [fuzz_octet_framer]=4096 [fuzz_ship_cursor]=1024)

tools/deps.sh fuzz

# One build at a time on this machine (tools/build.sh takes the same lock).
(
  exec 9>/tmp/spliced-build.lock
  flock -n 9 || { echo "waiting for the build lock (another build is running)"; flock 9; }
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DSPLICED_FUZZ=ON -DSPLICED_TESTS=OFF -DSPLICED_WERROR=ON \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" >/dev/null
  cmake --build "$build" --target fuzzers
)

bin="$root/$build/tests/fuzz"
crashes="$root/$build/crashes"
work=$(mktemp -d /tmp/spliced-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
export UBSAN_OPTIONS=print_stacktrace=1
# Common libFuzzer flags: a slow input or a memory hog is a finding too.
flags=(-rss_limit_mb=2048 -timeout=10)

status=0
declare -A summary replay

# Saved regression inputs: each is run once and must not crash.
for t in "${targets[@]}"; do
  inputs=()
  while IFS= read -r -d '' f; do inputs+=("$f"); done \
    < <(find "tests/fuzz/regressions/$t" -type f ! -name .gitkeep -print0 | sort -z)
  [ ${#inputs[@]} -gt 0 ] || continue
  if (cd "$work" && "$bin/$t" "${flags[@]}" "${inputs[@]/#/$root/}") >"$work/$t.replay.log" 2>&1; then
    echo "replay $t: ${#inputs[@]} saved input(s), ok"
  else
    echo "replay $t: FAILED (an input in tests/fuzz/regressions/$t crashes it)"
    tail -n 40 "$work/$t.replay.log"
    replay[$t]="a saved regression input crashes it; "
    status=1
  fi
done

for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus" "$crashes/$t"
  cp -r "tests/fuzz/corpus/$t/." "$corpus/"
  dict=()
  [ -f "tests/fuzz/dict/$t.dict" ] && dict=("-dict=$root/tests/fuzz/dict/$t.dict")
  log="$work/$t.log"
  start=$EPOCHREALTIME
  rc=0
  # Run from the temp dir: relative paths a fuzzed config names resolve there.
  (cd "$work" && "$bin/$t" "${flags[@]}" "${dict[@]}" -max_total_time="$seconds" \
    -max_len="${max_len[$t]}" -print_final_stats=1 -artifact_prefix="$crashes/$t/" \
    "$corpus") >"$log" 2>&1 || rc=$?
  elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    echo "$t: ${execs:-?} executions in $elapsed s, corpus $(ls "$corpus" | wc -l) inputs"
    summary[$t]="${execs:-?} executions in $elapsed s, ok"
  else
    saved=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "$t: CRASHED (exit $rc) after ${execs:-?} executions in $elapsed s:"
    # The report: from the first line a sanitizer, libFuzzer or a FUZZ_CHECK wrote about it.
    awk '/^(==[0-9]+==|ALARM|fuzz property|expand failed|.*runtime error|.*ERROR: libFuzzer)/ { on = 1 }
         on && !/^#[0-9]/ { print; if (++n == 40) exit }' "$log"
    summary[$t]="CRASHED after ${execs:-?} executions in $elapsed s, input saved to ${saved:-$crashes/$t/}"
    status=1
  fi
done

echo
for t in "${targets[@]}"; do
  echo "fuzz $t: ${replay[$t]:-}${summary[$t]}"
done
exit $status

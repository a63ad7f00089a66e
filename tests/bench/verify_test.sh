#!/usr/bin/env bash
# The benchmark's verifiers must reject what a faulty system would write: a changed byte, a lost,
# repeated or reordered line, a line cut in two, a stray tail, a block out of place.
set -euo pipefail
loadgen=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail=0
expect() {  # expect ok|bad DESCRIPTION COMMAND...
  local want=$1 what=$2
  shift 2
  if "$@" 2>/dev/null; then got=ok; else got=bad; fi
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: verifier said $got, expected $want"
    fail=1
  fi
}
L=100
B=200000  # 2,000 lines per client
"$loadgen" write --lines $L --bytes $B --seed 1 a
"$loadgen" write --lines $L --bytes $B --seed 2 b
vl() { "$loadgen" verify-lines --lines $L --bytes $B --seed 1 --clients 2 "$@"; }

expect ok "two clients one after the other" vl a b
paste -d '\n' a b >mixed
expect ok "two clients' lines interleaved" vl mixed
split -b 7777 mixed part.
expect ok "a stream cut into segments mid-line" vl part.*
expect bad "segments cut mid-line, with --whole-files" vl --whole-files part.*
split -l 777 mixed whole.
expect ok "segments cut between lines, with --whole-files" vl --whole-files whole.*
expect bad "one client missing" vl a
expect bad "unknown client" "$loadgen" verify-lines --lines $L --bytes $B --seed 2 --clients 1 a

cp mixed changed && printf 'X' | dd of=changed bs=1 seek=12345 conv=notrunc 2>/dev/null
expect bad "one byte changed" vl changed
sed '100d' mixed >lost
expect bad "a line lost" vl lost
sed '100p' mixed >repeated
expect bad "a line repeated" vl repeated
awk 'NR == 10 { held = $0; next } NR == 11 { print; print held; next } { print }' a >swapped
expect bad "two lines of one client swapped" vl swapped b
expect ok "swapped lines with --unordered" vl --unordered swapped b
expect bad "a repeated line with --unordered" vl --unordered repeated
head -c -2 mixed >cut && echo >>cut
expect bad "a line shortened" vl cut
cp mixed tail && printf 'stray' >>tail
expect bad "a stray tail after the last line" vl tail

# The binary pattern of the per-connection and forward streams.
"$loadgen" write --bytes 300000 --seed 5 p
split -b 65536 p seg.
expect ok "a per-connection chain" "$loadgen" verify --bytes 300000 --seed 5 seg.*
expect bad "segments out of order" "$loadgen" verify --bytes 300000 --seed 5 seg.ab seg.aa seg.ac seg.ad seg.ae
expect bad "a segment lost" "$loadgen" verify --bytes 300000 --seed 5 seg.aa seg.ab seg.ad seg.ae
expect bad "another client's stream" "$loadgen" verify --bytes 300000 --seed 6 p
exit $fail

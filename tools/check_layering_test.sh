#!/usr/bin/env bash
# Self-test for tools/check_layering.py: builds tiny fake source trees in a
# temporary directory and proves the checker passes a clean tree and fails
# (exit 1, naming FILE:LINE) on each kind of violation.
# Usage: tools/check_layering_test.sh   (from any directory)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checker="$here/check_layering.py"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0

# put FILE LINE... : write LINEs into FILE under the current fake tree
put() {
    local file="$tree/$1"; shift
    mkdir -p "$(dirname "$file")"
    printf '%s\n' "$@" >"$file"
}

# new_tree NAME : a clean layout (core <- server <- main) in $tmp/NAME
new_tree() {
    tree="$tmp/$1"
    put include/spliced/version.hpp.in '#pragma once'
    put include/spliced/core/a.hpp '#pragma once' '#include <string>'
    put include/spliced/server/b.hpp '#pragma once' '#include "spliced/core/a.hpp"'
    put src/core/a.cpp '#include "spliced/core/a.hpp"'
    put src/server/b.cpp '#include "spliced/server/b.hpp"' '#include "spliced/core/a.hpp"'
    put src/main.cpp '#include "spliced/server/b.hpp"' '#include "spliced/version.hpp"'
}

# expect NAME WANT_RC [PATTERN] [ARGS...] : run the checker on $tree, check rc and output
expect() {
    local name="$1" want="$2" pattern="${3:-}" rc=0 out
    shift 3 || shift $#
    out="$(cd / && python3 "$checker" --root "$tree" "$@" 2>&1)" || rc=$?
    if [[ "$rc" -ne "$want" ]]; then
        echo "FAIL $name: exit $rc, wanted $want"; echo "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    elif [[ -n "$pattern" ]] && ! grep -qF -- "$pattern" <<<"$out"; then
        echo "FAIL $name: output lacks: $pattern"; echo "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    else
        echo "ok   $name"
        passed=$((passed + 1))
    fi
}

new_tree clean
expect "clean tree passes" 0 "layering OK: 5 files"
expect "--dot prints the folder graph" 0 '"server" -> "core";' --dot

new_tree upward
put include/spliced/core/a.hpp '#pragma once' '#include <string>' '#include "spliced/server/b.hpp"'
expect "core including server fails" 1 \
    "include/spliced/core/a.hpp:3: core may not include spliced/server/b.hpp (core may use: nothing)"

new_tree cycle
put include/spliced/core/a.hpp '#pragma once' '#include "spliced/core/c.hpp"'
put include/spliced/core/c.hpp '#pragma once' '#include "spliced/core/a.hpp"'
expect "file include cycle fails" 1 "include cycle: include/spliced/core/a.hpp -> include/spliced/core/c.hpp -> include/spliced/core/a.hpp"

new_tree unknown
put include/spliced/metrics/m.hpp '#pragma once' '#include "spliced/core/a.hpp"'
expect "unknown folder fails" 1 "folder 'metrics' is not in the layering table"

new_tree nofolder
put src/core/a.cpp '#include "spliced/core/a.hpp"' '#include "spliced/x.hpp"'
expect "include without folder fails" 1 'src/core/a.cpp:2: "spliced/x.hpp" has no folder'

new_tree stray
put src/stray.cpp '#include "spliced/core/a.hpp"'
expect "file outside any folder fails" 1 "src/stray.cpp: file is not inside a folder"

tree="$tmp/does-not-exist"
expect "missing root is a usage error" 2 "has neither"

echo "$passed passed, $failed failed"
[[ "$failed" -eq 0 ]]

#!/usr/bin/env python3
"""Check that spliced's sources respect the folder layering in docs/DESIGN.md.

Every *.hpp / *.cpp under include/spliced/ and src/ belongs to a folder
(include/spliced/X/... and src/X/... -> X; src/main.cpp -> "main"). This script
reads their `#include "spliced/..."` lines and reports, as FILE:LINE: messages:
  - an include of a folder the including folder may not use (see RULES below);
  - a spliced include written without its folder ("spliced/route.hpp");
    only the generated spliced/version.hpp lives at the top level;
  - a file or include in a folder missing from RULES (add it there and to
    docs/DESIGN.md), or a file outside any folder;
  - a cycle in the folder graph actually used, and an include cycle between files.
On success it prints each folder, the folders it really includes and its file count.

Usage:  tools/check_layering.py [--root DIR] [--dot]
  --root DIR  repository root (default: the parent of this script's directory)
  --dot       print the used folder graph in Graphviz dot format and exit 0
Exit status: 0 clean, 1 violations found, 2 usage error.
"""
import argparse
import re
import sys
from pathlib import Path

# folder -> folders it may include (besides itself). Keep in sync with docs/DESIGN.md.
RULES = {
    "core":    [],
    "archive": ["core"],
    "collect": ["core", "archive", "proxy", "ship"],
    "proxy":   ["core"],
    "ship":    ["core", "archive", "proxy"],
    "admin":   ["core", "archive"],
    "config":  ["core", "archive", "proxy", "admin"],
    "server":  ["core", "archive", "collect", "proxy", "ship", "admin", "config"],
    "cli":     ["core", "archive", "config"],
}
MAIN = "main"                  # src/main.cpp: may include anything
TOP_LEVEL_OK = {"version.hpp"}  # generated spliced/version.hpp, usable by anyone
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def folder_of(rel):
    """Folder of a repository-relative path, or None if it sits outside a folder."""
    parts = rel.parts
    if parts[:2] == ("include", "spliced") and len(parts) >= 4:
        return parts[2]
    if parts == ("src", "main.cpp"):
        return MAIN
    if parts[0] == "src" and len(parts) >= 3:
        return parts[1]
    return None


def find_cycle(graph):
    """Cycles (node lists, first == last) closed by the back edges of a depth-first search."""
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    sys.setrecursionlimit(max(1000, 4 * len(graph) + 100))
    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def main():
    default_root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=default_root, help="repository root")
    ap.add_argument("--dot", action="store_true", help="print the folder graph as Graphviz dot")
    args = ap.parse_args()
    root = args.root.resolve()
    if not (root / "include" / "spliced").is_dir() and not (root / "src").is_dir():
        print(f"check_layering: {root} has neither include/spliced/ nor src/", file=sys.stderr)
        return 2

    errors, unknown_reported = [], set()
    files = {}      # rel path -> folder
    edges = {}      # folder -> {folder: first "FILE:LINE"}
    file_graph = {}  # rel path -> set of rel paths it includes

    def unknown(folder, where):
        if folder not in unknown_reported:
            unknown_reported.add(folder)
            errors.append(f"{where}: folder '{folder}' is not in the layering table; add it to "
                          f"RULES in tools/check_layering.py and to docs/DESIGN.md")

    for base in ("include/spliced", "src"):
        for path in sorted((root / base).rglob("*")):
            if path.suffix not in (".hpp", ".cpp") or not path.is_file():
                continue
            rel = path.relative_to(root)
            folder = folder_of(rel)
            if folder is None:
                if rel.parts[:2] == ("include", "spliced") and rel.name in TOP_LEVEL_OK:
                    continue
                errors.append(f"{rel}: file is not inside a folder ({', '.join(RULES)})")
                continue
            if folder != MAIN and folder not in RULES:
                unknown(folder, rel)
            files[rel] = folder

    for rel, folder in files.items():
        file_graph[rel] = set()
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            inc, where = m.group(1), f"{rel}:{lineno}"
            parts = inc.split("/")
            if parts[0] != "spliced":
                continue  # not a spliced header (e.g. a local test helper)
            if len(parts) == 2:
                if parts[1] not in TOP_LEVEL_OK:
                    errors.append(f'{where}: "{inc}" has no folder; write "spliced/<folder>/{parts[1]}"')
                continue
            other = parts[1]
            if other not in RULES:
                unknown(other, where)
                continue
            target = Path("include", *parts)
            if target in files:
                file_graph[rel].add(target)
            if other == folder:
                continue
            edges.setdefault(folder, {}).setdefault(other, where)
            if folder != MAIN and folder in RULES and other not in RULES[folder]:
                may = ", ".join(RULES[folder]) or "nothing"
                errors.append(f"{where}: {folder} may not include {inc} ({folder} may use: {may})")

    if args.dot:
        print("digraph spliced_layers {\n  rankdir=BT;\n  node [shape=box];")
        for folder in sorted(set(files.values()) | set(edges), key=order_key):
            print(f'  "{folder}";')
        for folder in sorted(edges, key=order_key):
            for other in sorted(edges[folder], key=order_key):
                bad = folder != MAIN and other not in RULES.get(folder, ())
                print(f'  "{folder}" -> "{other}"' + (' [color=red];' if bad else ';'))
        print("}")
        return 0

    for cycle in find_cycle({f: set(o) for f, o in edges.items()}):
        errors.append(f"{edges[cycle[0]][cycle[1]]}: folder cycle: {' -> '.join(cycle)}")
    for cycle in find_cycle(file_graph):
        errors.append(f"{cycle[0]}: include cycle: {' -> '.join(str(c) for c in cycle)}")

    if errors:
        for e in errors:
            print(e)
        print(f"check_layering: {len(errors)} violation(s)", file=sys.stderr)
        return 1

    counts = {}
    for folder in files.values():
        counts[folder] = counts.get(folder, 0) + 1
    print(f"layering OK: {len(files)} files, no cycles")
    for folder in sorted(set(counts) | set(edges), key=order_key):
        uses = ", ".join(sorted(edges.get(folder, {}), key=order_key)) or "-"
        n = counts.get(folder, 0)
        print(f"  {folder:<8} {n:3} file{'s' if n != 1 else ' '}  includes: {uses}")
    return 0


def order_key(folder):
    """Table order first, then main, then anything unknown alphabetically."""
    names = list(RULES) + [MAIN]
    return (names.index(folder), "") if folder in names else (len(names), folder)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Turns the project's Markdown into a man page (roff, man macros), with the standard library only.

    tools/man.py SOURCE.md OUT NAME SECTION "TITLE" [--description "ONE LINE"] [--version V]

The Markdown this understands is what docs/ uses: `#`/`##`/`###` headings, paragraphs, `-` lists,
fenced code blocks, pipe tables (each row becomes a tagged paragraph: the first cell is the tag,
the others its text) and inline `code`, **bold**, *emphasis* and [links](target) (the text is
kept). The first `#` heading is the document's title: it becomes DESCRIPTION, and NAME comes
from the arguments. Anything else is printed as text, so an unknown construct is visible, not lost.
"""
import re
import sys


def escape(text):
    text = text.replace("\\", "\\e")
    text = text.replace("-", "\\-")
    return text


def inline(text):
    # Links: keep the text. Then code and bold become bold, emphasis italic.
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    out = []
    pos = 0
    for m in re.finditer(r"`([^`]+)`|\*\*([^*]+)\*\*|(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", text):
        out.append(escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + escape(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + escape(m.group(2)) + "\\fR")
        else:
            out.append("\\fI" + escape(m.group(3)) + "\\fR")
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def line_out(text):
    # A roff line must not start with a control character.
    if text.startswith(".") or text.startswith("'"):
        text = "\\&" + text
    return text


def cells(row):
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|"):
        row = row[:-1]
    # A pipe inside backticks is part of the cell.
    parts, cur, code = [], "", False
    for ch in row:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def convert(lines, name, section, title, description, version):
    out = [
        f'.TH {name.upper()} {section} "" "spliced {version}" "{title}"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(description)}",
    ]
    i = 0
    para = []
    seen_title = False

    def flush():
        if para:
            out.append(".PP")
            out.append(line_out(inline(" ".join(para))))
            para.clear()

    while i < len(lines):
        raw = lines[i].rstrip("\n")
        s = raw.strip()
        if s.startswith("```"):
            flush()
            out += [".PP", ".RS 4", ".nf"]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append(line_out(escape(lines[i].rstrip("\n"))))
                i += 1
            out += [".fi", ".RE"]
            i += 1
            continue
        m = re.match(r"^(#+)\s+(.*)$", s)
        if m:
            flush()
            level, text = len(m.group(1)), m.group(2)
            if level == 1 and not seen_title:
                # The document's title: NAME says it; its text is the description.
                seen_title = True
                out.append(".SH DESCRIPTION")
            elif level <= 2:
                out.append(".SH " + escape(text.upper()))
            else:
                out.append(".SS " + escape(text))
            i += 1
            continue
        if s.startswith("|"):
            flush()
            header = cells(s)
            i += 1
            if i < len(lines) and re.match(r"^\|?\s*:?-+", lines[i].strip()):
                i += 1
            while i < len(lines) and lines[i].strip().startswith("|"):
                row = cells(lines[i])
                tag = inline(row[0])
                rest = []
                for h, c in zip(header[1:], row[1:]):
                    if h.lower() in ("meaning", "description", "what", ""):
                        rest.append(c)
                    else:
                        rest.append(f"{h}: {c}.")
                # the meaning last, after "default: X."
                rest.sort(key=lambda c: 0 if re.match(r"^\w[\w ]*: ", c) and c.endswith(".") else 1)
                out += [".TP", line_out(tag), line_out(inline(" ".join(rest)))]
                i += 1
            continue
        m = re.match(r"^([-*]|\d+\.)\s+(.*)$", s)
        if m and not para:
            flush()
            item = [m.group(2)]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                item.append(lines[i].strip())
                i += 1
            out += [".IP \\(bu 2", line_out(inline(" ".join(item)))]
            continue
        if not s:
            flush()
            i += 1
            continue
        para.append(s)
        i += 1
    flush()
    return "\n".join(out) + "\n"


def main():
    args = sys.argv[1:]
    description = "spliced"
    if "--description" in args:
        k = args.index("--description")
        description = args[k + 1]
        del args[k : k + 2]
    version = ""
    if "--version" in args:
        k = args.index("--version")
        version = args[k + 1]
        del args[k : k + 2]
    if len(args) != 5:
        sys.stderr.write(__doc__)
        sys.exit(2)
    src, dst, name, section, title = args
    with open(src, encoding="utf-8") as f:
        lines = f.readlines()
    text = convert(lines, name, section, title, description, version)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()

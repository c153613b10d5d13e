#!/usr/bin/env python3
"""Code-size rules (issue: one crate per program): no non-test source file over MAX_FILE lines,
no function over MAX_FN lines, no inline `mod tests` longer than MAX_INLINE_TESTS lines (tests
of a module live in their own file). Prints each offence; exits 1 if any."""
import os, re, sys

MAX_FILE, MAX_FN, MAX_INLINE_TESTS = 600, 80, 150
ROOTS = ["domain", "application", "adapters", "bin"]

def is_test_path(p):
    parts = p.split(os.sep)
    return "tests" in parts or parts[-1] == "tests.rs" or parts[-1].endswith("_tests.rs")

def strip(text):
    """The source with string and char literals and comments blanked, newlines kept."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i); j = n if j < 0 else j
            i = j; continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2); j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j)); i = j; continue
        m = re.match(r'b?r(#*)"', text[i:i + 40])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append("\n" * text.count("\n", i, end)); i = end; continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j + 1)); i = j + 1; continue
        m = re.match(r"'(\\.|[^\\'])'", text[i:i + 12]) or re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12])
        if m:
            i += len(m.group(0)); continue
        out.append(c); i += 1
    return "".join(out)

def block_end(lines, i):
    """Line index of the brace closing the block opened on or after line i."""
    depth, seen = 0, False
    for j in range(i, len(lines)):
        code = lines[j]
        for ch in code:
            if ch == "{":
                depth += 1; seen = True
            elif ch == "}":
                depth -= 1
                if seen and depth == 0:
                    return j
        if not seen and code.rstrip().endswith(";"):
            return j
    return len(lines) - 1

fn_re = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
bad = []
for root in ROOTS:
    for dp, dn, fns in os.walk(root):
        dn[:] = [d for d in dn if d not in ("target", "node_modules")]
        for f in fns:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(dp, f)
            raw = open(p, encoding="utf-8").read()
            lines = strip(raw).split("\n")
            test = is_test_path(p)
            # Inline test modules count as tests, not as the file's code.
            code_lines, i, skip = 0, 0, set()
            while i < len(lines):
                if re.match(r'^\s*#\[cfg\(test\)\]', lines[i]) and i + 1 < len(lines) and re.match(r'^\s*(pub\s+)?mod\s+\w+\s*\{', lines[i + 1]):
                    end = block_end(lines, i + 1)
                    if end - i > MAX_INLINE_TESTS:
                        bad.append(f"{p}:{i+1}: inline test module of {end - i} lines (> {MAX_INLINE_TESTS}): move it to its own file")
                    skip.update(range(i, end + 1)); i = end + 1; continue
                i += 1
            if not test:
                n = len([l for k, l in enumerate(lines) if k not in skip])
                if n > MAX_FILE:
                    bad.append(f"{p}: {n} lines of code (> {MAX_FILE})")
                for k, l in enumerate(lines):
                    if k in skip:
                        continue
                    m = fn_re.match(l)
                    if m:
                        end = block_end(lines, k)
                        if end - k + 1 > MAX_FN:
                            bad.append(f"{p}:{k+1}: fn {m.group(6)} is {end - k + 1} lines (> {MAX_FN})")
for b in bad:
    print("check-size:", b)
print(f"check-size: {len(bad)} offence(s)")
sys.exit(1 if bad else 0)

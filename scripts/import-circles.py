#!/usr/bin/env python3
"""Finds import circles between the modules (files) of every crate under crates/.

A file imports another when its code names an item defined there: by path (`use crate::a::b`,
`crate::a::f()`, `super::x`, `self::x`, a child module's `child::x`), looked up through
re-exports (`crate::Result` is an import of the module that defines `Result`, not of lib.rs).
A `pub use` that only re-exports is not an import: a facade does not depend on what it shows.
Comments and a file's `#[cfg(test)]` tail are not looked at. Circles are the strongly connected
components of that graph with more than one file.

Prints each circle with the imports inside it and exits 1 when there is one.

    scripts/import-circles.py              # check crates/
    scripts/import-circles.py --self-test  # check the checker on a planted circle
"""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = re.compile(r"(?<![\w:])(crate|super|self)((?:::" + IDENT + r")+)")
USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)


def modules(src):
    """Module path (tuple) -> file, for one crate's src directory."""
    found = {}
    for dirpath, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel == ["main"] and os.path.exists(os.path.join(src, "lib.rs")):
                continue  # a binary beside a library: the library is the crate's module tree
            if rel[0] == "bin":
                continue
            if rel in (["lib"], ["main"]):
                path = ()
            elif rel[-1] == "mod":
                path = tuple(rel[:-1])
            else:
                path = tuple(rel)
            found[path] = full
    return found


def strip(text):
    """The code without comments and with every string and char literal emptied."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:i + 260])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            out.append('""')
            i = n if j < 0 else j + len(end)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and (m := re.match(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:i + 12])):
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_of(text):
    """The file's code, without comments, string contents and its #[cfg(test)] tail."""
    code = strip(text)
    cut = code.find("#[cfg(test)]")
    return code if cut < 0 else code[:cut]


def use_trees(tree, prefix=()):
    """`a::{b, c::{d as e}}` -> [(('a','b'), 'b'), (('a','c','d'), 'e')]."""
    tree = tree.strip()
    out = []
    m = re.match(r"^((?:" + IDENT + r"\s*::\s*)*)\{(.*)\}$", tree, re.S)
    if m:
        head = tuple(s for s in re.split(r"\s*::\s*", m.group(1)) if s)
        depth, part, parts = 0, "", []
        for ch in m.group(2):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(part)
                part = ""
            else:
                part += ch
        parts.append(part)
        for p in parts:
            if p.strip():
                out.extend(use_trees(p, prefix + head))
        return out
    name = None
    if " as " in tree:
        tree, name = [s.strip() for s in tree.split(" as ", 1)]
    segs = prefix + tuple(s for s in re.split(r"\s*::\s*", tree) if s)
    if segs and segs[-1] == "self":
        segs = segs[:-1]
    if not segs:
        return out
    out.append((segs, name or segs[-1]))
    return out


class Crate:
    def __init__(self, src):
        self.mods = modules(src)
        self.code, self.exports, self.imports, self.globs = {}, {}, {}, {}
        for m, f in self.mods.items():
            with open(f, encoding="utf-8") as fh:
                code = code_of(fh.read())
            exports, imports, globs = {}, [], []
            for vis, tree in USE.findall(code):
                for segs, name in use_trees(tree):
                    if name == "*":
                        if vis:
                            globs.append(segs[:-1])
                        continue
                    (exports.__setitem__(name, segs) if vis else imports.append(segs))
            self.exports[m] = exports
            self.globs[m] = globs
            self.imports[m] = imports
            self.code[m] = USE.sub("", code)

    def resolve(self, here, segs, seen=None):
        """The module that defines what `segs` names from module `here`; None outside the crate."""
        seen = seen or set()
        segs = list(segs)
        if not segs:
            return None
        head = segs[0]
        if head == "crate":
            at, segs = (), segs[1:]
        elif head == "super":
            at = here
            while segs and segs[0] == "super":
                at, segs = at[:-1], segs[1:]
        elif head == "self":
            at, segs = here, segs[1:]
        elif here + (head,) in self.mods:
            at = here
        else:
            return None  # another crate, std, or a local item
        for i, s in enumerate(segs):
            if at + (s,) in self.mods:
                at = at + (s,)
                continue
            source = self.exports.get(at, {}).get(s)
            if source is not None and (at, s) not in seen:
                seen.add((at, s))
                # A re-export of another crate's item leads out of this crate.
                return self.resolve(at, list(source) + segs[i + 1:], seen)
            for glob in self.globs.get(at, []):
                source = self.resolve(at, list(glob))
                if source is not None and source != at and self.defines(source, s):
                    return self.resolve(source, ["self", s] + segs[i + 1:], seen)
            return at
        return at

    def defines(self, module, name):
        """Whether `module` defines or re-exports `name`."""
        if name in self.exports.get(module, {}):
            return True
        pattern = r"\b(?:fn|struct|enum|type|const|static|trait|mod|union)\s+" + re.escape(name) + r"\b"
        return re.search(pattern, self.code.get(module, "")) is not None

    def edges(self):
        graph = {m: set() for m in self.mods}
        for here in self.mods:
            paths = list(self.imports[here])
            for kind, rest in PATH.findall(self.code[here]):
                paths.append((kind,) + tuple(s for s in rest.split("::") if s))
            for child in (m for m in self.mods if len(m) == len(here) + 1 and m[: len(here)] == here):
                for rest in re.findall(r"(?<![\w:])" + re.escape(child[-1]) + r"((?:::" + IDENT + r")+)", self.code[here]):
                    paths.append((child[-1],) + tuple(s for s in rest.split("::") if s))
            for segs in paths:
                target = self.resolve(here, segs)
                if target is not None and target != here:
                    graph[here].add(target)
        return graph


def circles(graph):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def find(crates_dir):
    """Every circle under `crates_dir`: (crate, files, edges inside)."""
    found = []
    for name in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, name, "src")
        if not os.path.isdir(src):
            continue
        crate = Crate(src)
        graph = crate.edges()
        for comp in circles(graph):
            files = [os.path.relpath(crate.mods[m], os.path.dirname(crates_dir)) for m in comp]
            inside = set(comp)
            edges = [(m, sorted(t for t in graph[m] if t in inside)) for m in comp]
            found.append((name, sorted(files), edges))
    return found


def self_test():
    """The check finds a planted circle and accepts a facade, re-exports and a parent's children."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "crates", "demo", "src")
        os.makedirs(os.path.join(src, "a"))
        files = {
            "lib.rs": "mod a;\nmod b;\nmod c;\npub use a::Thing;\npub use b::*;\npub type Result = u8;\n",
            "a/mod.rs": "mod inner;\npub use inner::Thing;\nfn f() -> crate::Result { 0 }\n",
            "a/inner.rs": "pub struct Thing;\nfn g() { let _ = \"crate::c::x // not code\"; }\n",
            "b.rs": "pub fn helper() {}\nfn h() { crate::c::y(); }\n",
            "c.rs": "pub fn y() { crate::helper(); }\npub fn x() {}\n#[cfg(test)]\nmod t { fn z() { crate::a::Thing; } }\n",
        }
        for rel, text in files.items():
            with open(os.path.join(src, rel), "w", encoding="utf-8") as fh:
                fh.write(text)
        found = find(os.path.join(tmp, "crates"))
        got = [f for _, f, _ in found]
        want = [["crates/demo/src/b.rs", "crates/demo/src/c.rs"]]
        assert got == want, f"expected the b <-> c circle (through lib.rs's glob re-export) only, got {got}"
    print("self-test passed: a planted circle is found; facades, strings and tests are not circles")
    return 0


def main():
    if "--self-test" in sys.argv:
        return self_test()
    found = find(os.path.join(ROOT, "crates"))
    for name, files, edges in found:
        print(f"import circle in {name} ({len(files)} files): {' '.join(files)}", file=sys.stderr)
        for m, targets in edges:
            print(f"    {'::'.join(m) or '(crate root)'} imports {', '.join('::'.join(t) or '(crate root)' for t in targets)}",
                  file=sys.stderr)
    if found:
        print("break it: move what both sides need into a module that neither imports back", file=sys.stderr)
        return 1
    print("no import circles between the modules of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())

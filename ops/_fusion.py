"""Which conv -> BatchNorm2d -> activation sequences are provably chains, so one kernel may compute them.

A layer's output may be fused into the next layer only when nothing else can see it. Two ways to prove it:

- ``nn.SequentialCell`` (its own construct): each child feeds the next and nothing else.
- A Cell's source: in its methods (all of them, base classes included, up to MindSpore's), a child
  ``self.a`` referenced exactly once, called with one argument, whose result is only the argument of the
  call of another child ``self.b``, either nested (``self.b(self.a(x))``) or in the next statement of the
  same block (``out = self.a(x)`` then ``out = self.b(out)`` / ``return self.b(out)``; an intermediate name
  other than the one being reassigned must appear nowhere else in the method).

Anything else (a child referenced twice, such as MindCV's ResNet blocks' shared ``self.relu``, dynamic
access like ``getattr(self, ...)`` or ``self.cells()``, an alias made in ``__init__``, a cell reachable from
two parents, unavailable source) is not a chain: those layers still run on the kernels, unfused.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

from mindspore import nn

Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]

#: patterns of kinds that one kernel computes
PATTERNS = (("conv", "bn", "act"), ("conv", "bn"), ("conv", "act"), ("bn", "act"))
_DYNAMIC = {"_cells", "cells", "name_cells", "cells_and_names", "__dict__", "insert_child_to_cell"}


@dataclass(frozen=True)
class Chain:
    """Cells (in call order) of kinds ("conv", "bn", "act") and their paths in the tree."""

    kinds: Tuple[str, ...]
    cells: Tuple[nn.Cell, ...]
    paths: Tuple[str, ...]

    def get(self, kind: str) -> Optional[nn.Cell]:
        return self.cells[self.kinds.index(kind)] if kind in self.kinds else None


def _split(seq: Sequence[Tuple[str, nn.Cell]], kind_of: Callable[[nn.Cell], Optional[str]],
           compatible: Callable[[nn.Cell, nn.Cell], bool]) -> List[Chain]:
    """Maximal pattern matches in a path of cells where each feeds only the next."""
    out, i = [], 0
    while i < len(seq):
        best = None
        for pattern in PATTERNS:
            part = seq[i:i + len(pattern)]
            if len(part) == len(pattern) and all(kind_of(c) == k for (_, c), k in zip(part, pattern)) and \
                    all(compatible(a[1], b[1]) for a, b in zip(part, part[1:])):
                best = pattern
                break  # PATTERNS is ordered longest first per start kind
        if best is None:
            i += 1
            continue
        part = seq[i:i + len(best)]
        out.append(Chain(best, tuple(c for _, c in part), tuple(p for p, _ in part)))
        i += len(best)
    return out


# ---------------------------------------------------------------- source analysis
def _user_classes(cls: type) -> Optional[List[type]]:
    """The classes whose methods define how `cls` runs, or None when a MindSpore class other than Cell
    provides its construct (a container with its own semantics)."""
    classes = []
    for klass in cls.__mro__:
        if klass is nn.Cell or klass is object:
            break
        module = getattr(klass, "__module__", "") or ""
        if module.startswith("mindspore"):
            if "construct" in vars(klass):
                return None
            continue
        classes.append(klass)
    return classes


def _methods(cls: type) -> Optional[List[Function]]:
    classes = _user_classes(cls)
    if classes is None:
        return None
    found: List[Function] = []
    for klass in classes:
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            return None
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        body = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if body is None:
            return None
        found += [n for n in body.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return found


def _self_name(fn: Function) -> Optional[str]:
    args = fn.args.posonlyargs + fn.args.args
    return args[0].arg if args else None


def _self_attr(node: ast.AST, me: str) -> Optional[str]:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == me:
        return node.attr
    return None


def _child_call(node: ast.AST, me: str, children: Set[str]) -> Optional[Tuple[str, ast.AST]]:
    """(child, argument) for ``self.child(arg)`` with exactly one positional argument."""
    if isinstance(node, ast.Call) and not node.keywords and len(node.args) == 1 and \
            not isinstance(node.args[0], ast.Starred):
        name = _self_attr(node.func, me)
        if name in children:
            return name, node.args[0]
    return None


def _blocks(fn: ast.AST) -> Iterable[List[ast.stmt]]:
    for node in ast.walk(fn):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _edges_in(fn: Function, children: Set[str]) -> Optional[List[Tuple[str, str]]]:
    """(a, b) pairs where b's call is the only consumer of a's result; None on dynamic child access."""
    me = _self_name(fn)
    if me is None:
        return []
    for node in ast.walk(fn):
        if _self_attr(node, me) in _DYNAMIC:
            return None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "vars") \
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == me:
            return None
    names = Counter(n.id for n in ast.walk(fn) if isinstance(n, ast.Name))
    edges = []
    for node in ast.walk(fn):  # nested: self.b(self.a(x))
        outer = _child_call(node, me, children)
        if outer:
            inner = _child_call(outer[1], me, children)
            if inner:
                edges.append((inner[0], outer[0]))
    for block in _blocks(fn):  # consecutive statements
        for first, second in zip(block, block[1:]):
            if not (isinstance(first, ast.Assign) and len(first.targets) == 1 and
                    isinstance(first.targets[0], ast.Name)):
                continue
            a = _child_call(first.value, me, children)
            if not a:
                continue
            var = first.targets[0].id
            value = second.value if isinstance(second, (ast.Assign, ast.Return)) else None
            b = _child_call(value, me, children) if value is not None else None
            if not b or not (isinstance(b[1], ast.Name) and b[1].id == var):
                continue
            reassigned = isinstance(second, ast.Assign) and len(second.targets) == 1 and \
                isinstance(second.targets[0], ast.Name) and second.targets[0].id == var
            if reassigned or names[var] == 2:
                edges.append((a[0], b[0]))
    return edges


def _reachable(methods: List[Function]) -> Set[str]:
    """Names of the methods `construct` can run: self.m(...) and super().m(...) calls, transitively."""
    by_name: Dict[str, List[Function]] = {}
    for fn in methods:
        by_name.setdefault(fn.name, []).append(fn)
    reached, todo = set(), ["construct"]
    while todo:
        name = todo.pop()
        if name in reached or name not in by_name:
            continue
        reached.add(name)
        for fn in by_name[name]:
            me = _self_name(fn)
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute):
                    base = node.value
                    if (isinstance(base, ast.Name) and base.id == me) or (
                            isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super"):
                        todo.append(node.attr)
    return reached


def _source_paths(cell: nn.Cell, children: Dict[str, nn.Cell]) -> List[List[str]]:
    """Child-name paths along which each child's result feeds only the next one (source analysis)."""
    methods = _methods(type(cell))
    if not methods:
        return []
    names = set(children)
    reached = _reachable(methods)
    refs: Counter = Counter()
    tainted: Set[str] = set()
    edges: List[Tuple[str, str]] = []
    for fn in methods:
        me = _self_name(fn)
        if me is None:
            continue
        if fn.name == "__init__":  # aliases (self.x = self.conv) would let a second name call the child
            attribute_bases = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
            for node in ast.walk(fn):
                name = _self_attr(node, me)
                if name in names and isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) \
                        and id(node) not in attribute_bases:
                    tainted.add(name)
            continue
        for node in ast.walk(fn):  # references anywhere count (another method may call a child too)
            name = _self_attr(node, me)
            if name in names:
                refs[name] += 1
        if fn.name not in reached:
            continue
        found = _edges_in(fn, names)
        if found is None:  # dynamic access to children on the forward path: prove nothing
            return []
        edges += found
    once = {n for n in names if refs[n] == 1 and n not in tainted}
    nxt = {a: b for a, b in edges if a in once and b in once}
    prev = {b: a for a, b in nxt.items()}
    paths = []
    for start in nxt:
        if start in prev:
            continue
        path, cur = [start], start
        while cur in nxt and len(path) <= len(names):
            cur = nxt[cur]
            path.append(cur)
        paths.append(path)
    return paths


def find_chains(root: nn.Cell, kind_of: Callable[[nn.Cell], Optional[str]],
                compatible: Callable[[nn.Cell, nn.Cell], bool],
                skip: Callable[[nn.Cell], bool]) -> List[Chain]:
    """All chains in the tree under `root`. `kind_of` says which cells may take part ("conv", "bn", "act"
    or None), `compatible(a, b)` whether b can be fused after a, `skip(cell)` hides a subtree."""
    parents: Counter = Counter()
    order: List[Tuple[str, nn.Cell]] = []
    seen: Set[int] = set()

    def walk(path: str, cell: nn.Cell) -> None:
        if id(cell) in seen:
            return
        seen.add(id(cell))
        order.append((path, cell))
        if skip(cell):
            return
        for name, child in cell._cells.items():
            if child is None:
                continue
            parents[id(child)] += 1
            walk(f"{path}.{name}" if path else name, child)

    walk("", root)
    chains: List[Chain] = []
    for path, cell in order:
        if skip(cell):
            continue
        children = {n: c for n, c in cell._cells.items() if c is not None}
        if not children:
            continue
        prefix = f"{path}." if path else ""
        if type(cell).construct is nn.SequentialCell.construct:
            runs = [list(children)]
        else:
            runs = _source_paths(cell, children)
        for run in runs:
            seq = [(prefix + n, children[n]) for n in run]
            for chain in _split(seq, kind_of, compatible):
                if all(parents[id(c)] == 1 for c in chain.cells):
                    chains.append(chain)
    return chains

"""The house plan as a test: the module map and layering of DESIGN.md section 4, read from
the code's own imports.

Every ``import`` of ``src/modelseal`` is read with ``ast`` (nothing is imported, no new
dependency) and sorted into three kinds:

- ``module``: at module level, run when the module is imported;
- ``lazy``: inside a function, run when the function is called. A lazy import is a real
  dependency (it is how cycles hide), so every contract below counts it. The lazy imports
  that exist for speed are those of ``modelseal.cli``: the entry point and the command
  modules import the library inside the command functions, so that ``modelseal --help``
  loads none of it. They point downwards, so no contract needs an exception for them;
- ``typing``: under ``if TYPE_CHECKING:``, never run. Counted by the layering and "nothing
  imports the CLI" contracts (a type is a dependency too), not by the cycle contracts (a
  cycle of annotations is harmless at run time).

Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so an edge to a
module is also an edge to each package that contains it (except the importer's own
packages, which are already being imported).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "modelseal"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"cli"}),
    frozenset({"transfer", "verify", "bom", "attest", "intoto_layout", "safety", "audit",
               "index", "lifecycle", "copy"}),
    frozenset({"modelpack", "oci", "tarlayers"}),
    frozenset({"digest", "refs", "formats", "_util"}),
    frozenset({"errors"}),
)
"""DESIGN.md section 4, top to bottom: "cli -> (transfer, verify, bom, attest, intoto_layout,
safety, audit, index, lifecycle, copy) -> (modelpack, oci) -> (digest, refs, formats, _util)
-> errors". A module may import its own layer and the layers below, never one above.
``tarlayers`` (the tar layers of many-file models) sits with ``modelpack``, whose layers it
packs."""

DECISION = f"{ROOT}.verify.decision"
IO_MODULES = (f"{ROOT}.oci", f"{ROOT}.transfer", f"{ROOT}.copy", "requests", "urllib3", "http")
"""What the trust decision must never load: registries, transfers, HTTP."""


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted name: a module of modelseal when it is one, else as written
    kind: str  # "module" | "lazy" | "typing"
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} -> {self.imported} ({self.kind})"


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Name | ast.Attribute)
               and (getattr(n, "id", None) or getattr(n, "attr", None)) == "TYPE_CHECKING"
               for n in ast.walk(test))


def _imports_of(name: str, path: Path) -> Iterator[Import]:
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def target(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
            return
        if node.level:
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
            mod = ".".join([*base, *([node.module] if node.module else [])])
        else:
            mod = node.module or ""
        for a in node.names:  # ``from pkg import submodule`` imports the submodule
            sub = f"{mod}.{a.name}"
            yield sub if sub in known else mod

    def walk(node: ast.AST, kind: str) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for b in child.body:
                    yield from walk_one(b, "typing")
                for b in child.orelse:
                    yield from walk_one(b, kind)
            else:
                yield from walk_one(child, kind)

    def walk_one(node: ast.AST, kind: str) -> Iterator[Import]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from walk(node, "lazy" if kind == "module" else kind)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for t in target(node):
                yield Import(name, t, kind, node.lineno)
        else:
            yield from walk(node, kind)

    yield from walk(ast.parse(path.read_text(), str(path)), "module")


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for name, path in modules().items() for i in _imports_of(name, path))


def internal(kinds: Iterable[str]) -> list[Import]:
    """Imports of modelseal modules by modelseal modules, of the given kinds."""
    ks = set(kinds)
    return [i for i in all_imports() if i.kind in ks and i.imported in modules()]


def _packages_of(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(2, len(parts))]


def module_graph(kinds: Iterable[str]) -> dict[str, set[str]]:
    """importer -> imported modules (with the packages the import runs)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in internal(kinds):
        if i.imported == i.importer:
            continue
        graph[i.importer].add(i.imported)
        for pkg in _packages_of(i.imported):
            if not (i.importer == pkg or i.importer.startswith(pkg + ".")):
                graph[i.importer].add(pkg)
    return graph


def top(name: str) -> str:
    """``modelseal.X`` for X a top-level module or subpackage (``modelseal`` itself)."""
    return ".".join(name.split(".")[:2])


def package_graph(kinds: Iterable[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for i in internal(kinds):
        if top(i.importer) != top(i.imported) and top(i.imported) != ROOT:
            graph[top(i.importer)].add(top(i.imported))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    nodes = sorted(set(graph) | {w for ws in graph.values() for w in ws})
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def _explain(comps: list[list[str]], packages: bool) -> str:
    """Each cycle with the imports that make it, for the failure message."""
    lines = []
    for comp in comps:
        members = set(comp)
        lines.append("cycle: " + " <-> ".join(comp))
        shown: set[tuple[str, int, str]] = set()
        for i in internal(("module", "lazy")):
            if packages:
                a, bs = top(i.importer), [top(i.imported)]
            else:
                a = i.importer
                bs = [i.imported, *(b for b in _packages_of(i.imported)
                                    if not a.startswith(b + "."))]
            key = (i.importer, i.line, i.imported)
            if a in members and any(b in members and b != a for b in bs) and key not in shown:
                shown.add(key)
                lines.append(f"    {i}")
    return "\n".join(lines)


def layer(name: str) -> int | None:
    """The layer of a module (index into LAYERS), None for the ``modelseal`` package."""
    if name == ROOT:
        return None
    first = name.split(".")[1]
    for n, members in enumerate(LAYERS):
        if first in members:
            return n
    raise AssertionError(f"{name} is in no layer of DESIGN.md section 4: add it to LAYERS "
                         "(and to the module map in docs/)")


# ---------------------------------------------------------------------------------------------
# the analysis itself


def test_the_analysis_sees_every_kind_of_import() -> None:
    found = {(i.importer, i.imported, i.kind) for i in internal(("module", "lazy", "typing"))}
    assert (f"{ROOT}.verify.decision", f"{ROOT}.verify.requirements", "module") in found
    assert any(k == "lazy" and a.startswith(f"{ROOT}.cli") for a, _, k in found)
    assert any(k == "typing" for _, _, k in found)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# ---------------------------------------------------------------------------------------------
# contracts


def test_no_import_cycle_between_modules() -> None:
    found = cycles(module_graph(("module", "lazy")))
    assert not found, _explain(found, packages=False)


def test_no_import_cycle_between_packages() -> None:
    found = cycles(package_graph(("module", "lazy")))
    assert not found, _explain(found, packages=True)


def test_nothing_below_the_cli_imports_it() -> None:
    bad = list(dict.fromkeys(str(i) for i in internal(("module", "lazy", "typing"))
                             if i.imported.startswith(f"{ROOT}.cli")
                             and not i.importer.startswith(f"{ROOT}.cli")))
    assert not bad, "the library imports the CLI:\n" + "\n".join(bad)


def test_cli_command_modules_never_import_each_other() -> None:
    prefix = f"{ROOT}.cli.commands."
    bad = list(dict.fromkeys(str(i) for i in internal(("module", "lazy", "typing"))
                             if i.importer.startswith(prefix) and i.imported.startswith(prefix)
                             and i.importer != i.imported))
    assert not bad, "command modules import each other:\n" + "\n".join(bad)


def test_dependencies_point_down_the_layers_of_the_design() -> None:
    bad = []
    for i in internal(("module", "lazy", "typing")):
        a, b = layer(i.importer), layer(i.imported)
        if a is not None and b is not None and b < a:
            bad.append(f"{i}: layer {sorted(LAYERS[a])} imports layer {sorted(LAYERS[b])}")
    assert not bad, "imports against the layering of DESIGN.md section 4:\n" + "\n".join(bad)


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        layer(name)  # raises for a module the map does not place


def _loaded_by_importing(name: str) -> set[str]:
    """The modelseal modules that ``import name`` runs (module-level imports, transitively,
    with the packages they run)."""
    graph = module_graph(("module",))
    seen: set[str] = set()
    todo = [name, *_packages_of(name)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def _is_io(name: str) -> bool:
    return any(name == io or name.startswith(io + ".") for io in IO_MODULES)


def test_the_trust_decision_imports_no_io() -> None:
    """verify.decision is given its evidence: it never fetches. Neither the decision itself
    (lazy imports included) nor any module that importing it loads imports a registry, a
    transfer or an HTTP client."""
    loaded = _loaded_by_importing(DECISION)
    assert DECISION in loaded and f"{ROOT}.verify.requirements" in loaded  # the analysis works
    bad = [m for m in loaded if _is_io(m)]
    bad += [str(i) for i in all_imports()
            if i.kind != "typing" and _is_io(i.imported)
            and (i.importer == DECISION or (i.importer in loaded and i.kind == "module"))]
    assert not bad, "the trust decision loads I/O:\n" + "\n".join(sorted(set(bad)))

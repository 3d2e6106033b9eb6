"""Arrows point down: no import cycle in `agfast/` (TYPE_CHECKING and function-level imports included), and
each layer imports only what is below it (`cli → app → api → upstream → convert → sse`, `http/` used only by
`server`, `app` and `api`). Imports are read from the source with `ast`, so nothing is executed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "agfast"

# Each unit's rank: a module may import a unit of lower rank, or its own unit. Leaves import (almost) nothing.
RANKS: dict[str, float] = {
    "__init__": 0,
    "fileio": 0,
    "logtext": 0,
    "record": 0,
    "netaddr": 0,
    "config": 0.5,
    "sse": 1,
    "sim": 1,
    "replay": 1,
    "keys": 1.5,
    "monitor": 1.5,
    "http": 1,
    "convert": 2,
    "upstream": 3,
    "metrics": 3.5,
    "api": 4,
    "app": 5,
    "server": 5,
    "warmup_cli": 4.5,  # `accounts warmup`, which accounts_cli registers
    "accounts_cli": 5,
    "demo": 5,
    "monitor_cli": 5,
    "keys_cli": 5,
    "workers": 5,
    "cli": 6,
    "__main__": 7,
}
# The HTTP shell is used only by these units (it knows nothing of LLMs, and they are the ones that serve);
# `keys` is the named-key policy the shell's auth step asks (it answers in auth's outcomes).
HTTP_USERS = frozenset({"http", "server", "app", "api", "keys"})


# The SSE selector and its two implementations are one unit.
SAME_UNIT = {"_sse": "sse", "_sse_py": "sse"}


def unit(module: str) -> str:
    """`agfast.api.driver` → `api`; `agfast.cli` → `cli`; `agfast` → `__init__`."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return SAME_UNIT.get(name, name)


def module_names(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    for path in root.rglob("*.pyx"):
        found[".".join([package, *path.relative_to(root).with_suffix("").parts])] = path
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports anywhere in its source (TYPE_CHECKING blocks included)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.suffix == ".pyx":
            graph[name] = set()
            continue
        targets: set[str] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each a cycle or several."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up (or sideways into another unit), and uses of `http/` outside its users."""
    breaks = []
    for source, targets in sorted(graph.items()):
        src = unit(source)
        for target in sorted(targets):
            dst = unit(target)
            if dst == src or dst == "__init__":
                continue
            if dst == "http" and src not in HTTP_USERS:
                breaks.append(f"{source} → {target}: only {sorted(HTTP_USERS)} use http/")
            elif RANKS[dst] >= RANKS[src]:
                breaks.append(f"{source} → {target}: {src} may not import {dst}")
    return breaks


def test_every_unit_has_a_rank() -> None:
    assert {unit(m) for m in import_graph(ROOT, "agfast")} <= set(RANKS)


def test_no_import_cycle() -> None:
    assert cycles(import_graph(ROOT, "agfast")) == []


def test_arrows_point_down() -> None:
    assert layer_breaks(import_graph(ROOT, "agfast")) == []


def test_upstream_imports_nothing_from_http_or_api() -> None:
    graph = import_graph(ROOT, "agfast")
    assert not {t for m, ts in graph.items() if unit(m) == "upstream" for t in ts if unit(t) in ("http", "api")}


def test_a_cycle_closed_under_type_checking_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n")
    (pkg / "c.py").write_text("def f():\n    from pkg import a\n")
    assert cycles(import_graph(pkg, "pkg")) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("agfast.upstream.gateway", "agfast.http.request"),  # upstream reaching into the HTTP shell
        ("agfast.api.openai", "agfast.app"),  # a surface reaching up for the application
        ("agfast.convert.anthropic", "agfast.upstream.pool"),  # pure conversion doing IO
        ("agfast.sse", "agfast.convert.gemini"),
    ],
)
def test_an_upward_import_is_a_break(source: str, target: str) -> None:
    graph = import_graph(ROOT, "agfast")
    graph[source] = {*graph[source], target}
    assert len(layer_breaks(graph)) == 1


# Surfaces whose answers the driver runs (api/driver.deliver): they name a plan's Answer and pump/collect nothing.
DRIVEN_SURFACES = ("agfast/api/openai.py", "agfast/api/anthropic.py", "agfast/api/gemini.py")


@pytest.mark.parametrize("path", DRIVEN_SURFACES)
def test_driven_surface_leaves_pump_and_collect_to_the_driver(path: str) -> None:
    tree = ast.parse((Path(__file__).parent.parent / path).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not names & {"pump", "collect", "STREAM_BREAKS", "stream_broke", "shutdown_cut"}


# What only the driver does with a plan: open the gateway, deliver the answer, relay to z.ai, count tokens.
SENDING = frozenset({"open_stream", "call", "deliver", "forward", "relay", "opened"})


@pytest.mark.parametrize("path", DRIVEN_SURFACES)
def test_driven_surface_is_routes_plans_and_an_error_table(path: str) -> None:
    tree = ast.parse((Path(__file__).parent.parent / path).read_text())
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in modules if m.startswith("agfast.upstream")}  # the plan names its gateway by a key
    called = {
        node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    called |= {
        node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & SENDING

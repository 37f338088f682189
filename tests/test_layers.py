"""Layers that point one way: every import in jadwal (module level *and* inside functions, found with
``ast``) goes from a package to itself or to a lower layer, and the package graph has no cycle.

The order (low → high) is :data:`LAYERS`; packages in one layer do not import each other.  The same
order, with the contracts' homes, is ``docs/architecture.md``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jadwal"

LAYERS: list[tuple[str, ...]] = [
    ("access",),
    ("workspace",),
    ("storage",),
    ("executors",),
    ("audio_decode",),
    ("models",),  # encoders, aligners, log-mel features
    ("manifests",),
    ("textforms", "metrics"),  # both reuse manifests.normalize
    ("shards",),
    ("pipelines", "export"),  # stages that read shards (embed, cluster, ssum) / export them
    ("sched_index",),
    ("trainer",),
    ("analyses",),  # affinity: needs the model and the loader
    ("cli",),
    ("demo",),
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# Known violations in files this refactor could not edit; each entry says why and who removes it.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(path: Path, root: Path = ROOT) -> tuple[str, str]:
    """(module name, package a relative import is resolved against)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _targets(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        return [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        name = node.args[0].value
        if name.startswith("."):  # import_module(".x", __name__): relative to the calling package
            level = len(name) - len(name.lstrip("."))
            base = package.split(".")[: len(package.split(".")) - level + 1]
            return [".".join(base + [name.lstrip(".")])]
        return [name]
    return []


def _package(module: str) -> str | None:
    """``jadwal.shards.schema`` → ``shards``; the root package (``__version__``) → None."""
    parts = module.split(".")
    if parts[0] != "jadwal" or len(parts) == 1 or parts[1] == "__version__":
        return None
    return parts[1]


def import_edges(root: Path = ROOT) -> list[tuple[str, str, str, int]]:
    """Every cross-package import: (importing module, imported module, file:line, line)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module, package = _module_name(path, root)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package):
                a, b = _package(module), _package(target)
                if b is not None and a != b:
                    out.append((module, target, f"{path.relative_to(root.parent)}:{node.lineno}", node.lineno))
    return out


def test_every_package_has_a_layer():
    pkgs = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert pkgs - set(RANK) == set(), "add the new package to LAYERS"


def test_imports_point_down_the_layers():
    bad = []
    for module, target, where, _ in import_edges():
        a, b = _package(module), _package(target)
        if RANK[b] >= RANK[a] and (module, target) not in ALLOWED:
            bad.append(f"{where}: {a} (layer {RANK[a]}) imports {target} (layer {RANK[b]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_allowed_violations_still_exist():
    """An allow-list entry whose import is gone must be deleted (the list only shrinks)."""
    present = {(m, t) for m, t, *_ in import_edges()}
    assert set(ALLOWED) <= present, f"stale ALLOWED entries: {set(ALLOWED) - present}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_package_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, target, *_ in import_edges():
        if (module, target) not in ALLOWED:
            graph[_package(module)].add(_package(target))
    assert _cycles(graph) == []


def test_walker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "jadwal"
    (pkg / "trainer").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "trainer" / "__init__.py").write_text("from importlib import import_module\n"
                                                  "def f():\n    return import_module('..shards.x', __name__)\n")
    (pkg / "trainer" / "m.py").write_text("def g():\n    from ..analyses import a\n    from .. import models\n")
    got = sorted((m, t) for m, t, *_ in import_edges(pkg))
    assert got == [("jadwal.trainer", "jadwal.shards.x"), ("jadwal.trainer.m", "jadwal.analyses"),
                   ("jadwal.trainer.m", "jadwal.models")]


def _imported(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"import sys; {code}; print(' '.join(m for m in {names!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT.parent, check=True)
    return r.stdout.split()


def test_import_trainer_does_not_pay_for_the_planner():
    assert _imported("import jadwal.trainer", ("jadwal.sched_index.planner", "pandas", "tqdm", "torch")) == []


def test_the_loader_does_not_pay_for_the_planner():
    # (not tqdm here: `import torch` itself imports tqdm, via torch.hub)
    assert _imported("from jadwal.trainer import ScheduleDataset",
                     ("jadwal.sched_index.planner", "jadwal.sched_index.check", "pandas")) == []

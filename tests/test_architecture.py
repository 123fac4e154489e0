"""Architecture guards: the import graph of the package, read from the source (AST), every import
counted (module level and inside functions).

Rules (README "Architecture"):

1. Layers, lowest first: {emo (package __init__), emo.fsio, emo.exitcodes, emo.optspec, emo.cliargs} < emo.lexicon < emo.extract < emo.fuse
   < emo.pipeline < {emo.cli, emo.demo}. A module may import only its own layer or lower ones;
   a unit is a top-level subpackage or module, so new modules (``emo.fuse.methods.align``,
   ``emo.extract.adapters``) are placed by their prefix. A new top-level unit must be added below.
2. No cycle between top-level units, and no cycle between modules.
3. No module imports another module's private (``_name``) names.
4. Safe loading: every ``torch.load`` passes ``weights_only=True``; no ``np.load(allow_pickle=True)``
   (shell and pickle use are ruff's S rules, ``make lint``).
5. Files are written and renamed only by ``emo.fsio``: no ``os.replace``/``os.rename`` elsewhere
   (package, proofs, bench).
6. Private attributes of third-party libraries are used only in ``emo.compat``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folders of the repository that are not part of the ``emo`` package.
NOT_PACKAGE = {"tests", "proofs", "bench", "results", "build", "dist", "features", "runs", "demo"}

#: Top-level unit -> layer; lower layers never import higher ones.
LAYERS: dict[str, int] = {
    "emo": 0, "emo.fsio": 0, "emo.exitcodes": 0, "emo.compat": 0, "emo.optspec": 0, "emo.cliargs": 0,
    "emo.lexicon": 1,
    "emo.extract": 2,
    "emo.fuse": 3,
    "emo.pipeline": 4,
    "emo.cli": 5, "emo.demo": 5,
}


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file for every module of the ``emo`` package (the repository root)."""
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if any(part.startswith(".") or part in NOT_PACKAGE or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if len(rel.parts) > 1 and not (root / rel.parts[0] / "__init__.py").exists():
            continue  # a folder that is not a subpackage
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["emo", *parts])] = p
    return out


def unit(module: str) -> str:
    """Top-level unit of a module: ``emo.extract.store`` -> ``emo.extract``; ``emo`` -> ``emo``."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports(module: str, path: Path, modules: set[str]) -> list[tuple[str, str | None, int]]:
    """Every ``emo`` import of a module: (target module, imported name or None, line)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "emo" or a.name.startswith("emo."):
                    out.append((a.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if not (src == "emo" or src.startswith("emo.")):
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in modules:
                    out.append((sub, None, node.lineno))  # `from emo.extract import store`
                else:
                    out.append((src, a.name, node.lineno))
    return out


@pytest.fixture(scope="module")
def graph():
    mods = package_modules()
    names = set(mods)
    return mods, {m: imports(m, p, names) for m, p in mods.items()}


def test_every_unit_has_a_layer(graph):
    mods, _ = graph
    assert "emo.extract.store" in mods and "emo.fuse.training.data" in mods and "emo.cli" in mods  # the walk finds the package
    missing = sorted({unit(m) for m in mods} - set(LAYERS))
    assert not missing, f"new top-level unit(s) {missing}: give each a layer in tests/test_architecture.py LAYERS"


def test_no_upward_import(graph):
    mods, edges = graph
    bad = []
    for m, imps in edges.items():
        for target, _name, line in imps:
            lm, lt = LAYERS.get(unit(m)), LAYERS.get(unit(target))
            if lm is not None and lt is not None and lt > lm:
                bad.append(f"{mods[m].relative_to(ROOT)}:{line}: {m} imports {target} (layer {unit(target)} is above {unit(m)})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def _cycles(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_between_units(graph):
    mods, edges = graph
    e: dict[str, set[str]] = defaultdict(set)
    for m, imps in edges.items():
        for target, _n, _l in imps:
            if unit(target) != unit(m) and unit(target) != "emo":  # the package __init__ (version) is below all
                e[unit(m)].add(unit(target))
    assert not _cycles({unit(m) for m in mods}, e)


def test_no_cycle_between_modules(graph):
    """E.g. engine -> naive -> speech -> engine is refused. A package's ``__init__`` importing its own
    submodules (to register them or re-export) is not a cycle edge back from those submodules."""
    mods, edges = graph
    e: dict[str, set[str]] = defaultdict(set)
    for m, imps in edges.items():
        for target, _n, _l in imps:
            if target == m:
                continue
            if target in mods and mods[target].name == "__init__.py" and m.startswith(target + "."):
                continue  # a submodule importing (a name of) its own package
            e[m].add(target)
    cycles = _cycles(set(mods), e)
    assert not cycles, f"import cycles between modules: {cycles}"


def test_no_private_names_imported_from_other_modules(graph):
    mods, edges = graph
    bad = []
    for m, imps in edges.items():
        for target, name, line in imps:
            private_module = any(p.startswith("_") and not p.startswith("__") for p in target.split("."))
            private_name = name is not None and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
            if target != m and (private_name or private_module):
                bad.append(f"{mods[m].relative_to(ROOT)}:{line}: {m} imports {target}{'.' + name if name else ''}")
    assert not bad, "private names imported from other modules:\n" + "\n".join(bad)


def test_no_module_imports_itself(graph):
    """``from emo.x import y`` inside ``emo.x`` is dead weight (and hides private names from the check above)."""
    mods, edges = graph
    bad = [f"{mods[m].relative_to(ROOT)}:{line}: {m} imports itself ({name})" for m, imps in edges.items()
           for target, name, line in imps if target == m]
    assert not bad, "\n".join(bad)


#: (importer prefix, imported prefix) pairs that must not occur even inside one layer (issue 10).
FORBIDDEN = [
    ("emo.extract.store", "emo.extract.encoders"),    # the store knows the shared types only
    ("emo.extract.encoders", "emo.extract.engine"),   # batching is emo.extract.packing
    ("emo.extract.types", "emo."),                    # the shared leaf module imports nothing from emo
    ("emo.extract.packing", "emo."),
    ("emo.extract.cli", "emo.fuse"),                  # emo score lives in emo.pipeline
]


def test_forbidden_edges(graph):
    mods, edges = graph
    bad = [f"{m} imports {t}" for m, imps in edges.items() for t, _n, _l in imps
           for a, b in FORBIDDEN if (m == a or m.startswith(a + ".")) and (t == b or t.startswith(b))]
    assert not bad, bad


def test_rules_catch_what_they_should(tmp_path):
    """The walk itself: function-level and relative imports are seen, private names and layers recognised."""
    pkg = tmp_path / "extract"
    pkg.mkdir()
    (tmp_path / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from emo.fuse.training.train import _inputs\n    from .b import g\n")
    (pkg / "b.py").write_text("import emo.extract.a\n")
    mods = package_modules(tmp_path)
    assert set(mods) == {"emo", "emo.extract", "emo.extract.a", "emo.extract.b"}
    imps = imports("emo.extract.a", mods["emo.extract.a"], set(mods))
    assert ("emo.fuse.training.train", "_inputs", 2) in imps and ("emo.extract.b", "g", 3) in imps
    assert LAYERS[unit("emo.fuse.training.train")] > LAYERS[unit("emo.extract.a")]
    assert _cycles({"a", "b"}, {"a": {"b"}, "b": {"a"}}) == [["a", "b"]]


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def test_safe_loading(graph):
    """torch.load always with weights_only=True (no ruff rule covers it); np.load never with allow_pickle=True."""
    mods, _ = graph
    files = list(mods.values()) + sorted((ROOT / "proofs").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))
    bad = []
    for p in files:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if name == "torch.load":
                v = kw.get("weights_only")
                if not (isinstance(v, ast.Constant) and v.value is True):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}: torch.load without weights_only=True")
            if name in ("np.load", "numpy.load"):
                v = kw.get("allow_pickle")
                if isinstance(v, ast.Constant) and v.value is True:
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}: np.load(allow_pickle=True)")
    assert not bad, bad


def _script_files(mods: dict[str, Path]) -> list[Path]:
    return list(mods.values()) + sorted((ROOT / "proofs").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))


#: Calls that rename files; only emo.fsio may make them (it fsyncs and refuses links).
RENAMES = {"os.replace", "os.rename", "os.renames", "shutil.move"}


def _renames(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and _call_name(node) in RENAMES:
            bad.append(f"{path.name}:{node.lineno}: {_call_name(node)}(")
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil"):
            bad += [f"{path.name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names
                    if f"{node.module}.{a.name}" in RENAMES]
    return bad


def test_renames_only_in_fsio(graph, tmp_path):
    """Every tmp-then-replace goes through emo.fsio (mkstemp, fsync, link check): no os.replace/os.rename elsewhere."""
    mods, _ = graph
    bad = [b for p in _script_files(mods) if p != ROOT / "fsio.py" for b in _renames(p)]
    assert not bad, bad
    assert _renames(ROOT / "fsio.py")  # the guard sees fsio's own renames, so it would see others
    planted = tmp_path / "x.py"
    planted.write_text("import os\nfrom shutil import move\nos.replace('a', 'b')\n", encoding="utf-8")
    assert len(_renames(planted)) == 2


#: Private names of third-party libraries emo relies on; they are used only in emo/compat.py.
PRIVATE_THIRD_PARTY = {"_fused_adamw_", "_params", "_embeds", "_pool", "_options", "_smile", "__wrapped__"}


def _private_uses(path: Path) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Attribute) and node.attr in PRIVATE_THIRD_PARTY
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
            bad.append(f"{path.name}:{node.lineno}: .{node.attr}")
        if isinstance(node, ast.Call) and _call_name(node) in ("getattr", "hasattr") and len(node.args) > 1:
            a = node.args[1]
            if isinstance(a, ast.Constant) and a.value in PRIVATE_THIRD_PARTY:
                bad.append(f"{path.name}:{node.lineno}: {_call_name(node)}(..., {a.value!r})")
    return bad


def test_private_third_party_only_in_compat(graph):
    """torch._fused_adamw_, optimizer._params, undecorated optimizer methods (__wrapped__), open_clip _embeds/_pool,
    opensmile _options/_smile: emo.compat only."""
    mods, _ = graph
    bad = [b for p in _script_files(mods) if p != ROOT / "compat.py" for b in _private_uses(p)]
    assert not bad, bad
    assert _private_uses(ROOT / "compat.py")  # the guard recognises the uses it forbids elsewhere

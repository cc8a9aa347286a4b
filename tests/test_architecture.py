"""The package's layers import one way: library → pipelines → CLI.

Every ``from mi_align... import`` and ``import mi_align...`` in the package (including imports
inside functions) is checked against the layer table below: a module may import its own layer
and the layers below it, never above. The four feature packages are ordered too (a feature may
use an earlier one: evaluation uses steering's vectors, erosion's causal test uses both), so
no two of them import each other. Only the CLI prints, and the feature packages never write
figures (``save_figure`` / ``save_json`` belong to the pipelines).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mi_align"

# lower number = lower layer; a module imports only from layers <= its own
LAYERS: dict[str, int] = {
    "errors": 0, "io": 0, "stats": 0, "lazy": 0,
    "data": 1, "plotting": 1,
    "models": 2, "generate": 2,
    "forward": 3, "activations": 3, "gradients": 3, "geometry": 3, "block_stats": 3,
    "residual_norms": 3, "text_measures": 3,
    "finetune": 4, "steering": 5, "evaluation": 6, "erosion": 7,
    "pipelines": 8,
    "cli": 9,
}
FEATURES = ("finetune", "steering", "evaluation", "erosion")


def _unit(module: str) -> str:
    """``mi_align.erosion.causal`` → ``erosion``; the package root maps to ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mi_align":
                out += [(node.lineno, f"mi_align.{a.name}") for a in node.names]
            elif node.module.startswith("mi_align."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mi_align.")]
    return out


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts), p)
            for p in sorted(PACKAGE.rglob("*.py"))]


def test_every_module_has_a_layer() -> None:
    units = {_unit(m) for m, _ in _modules()} - {"__init__"}
    assert units <= set(LAYERS), f"add to LAYERS: {sorted(units - set(LAYERS))}"


def test_imports_point_down() -> None:
    bad = []
    for module, path in _modules():
        unit = _unit(module)
        if unit == "__init__":
            continue  # the package root re-exports the public API from every layer
        for line, target in _imports(path):
            dest = _unit(target)
            if dest != "__init__" and LAYERS[dest] > LAYERS[unit]:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} "
                           f"(layer {LAYERS[unit]}) imports {target} (layer {LAYERS[dest]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_feature_packages_do_not_write_figures_or_print() -> None:
    bad = []
    for module, path in _modules():
        if _unit(module) not in FEATURES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "mi_align.plotting":
                bad += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                        if a.name.startswith("save_")]
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "print"):
                bad.append(f"{path.name}:{node.lineno} prints")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source", [
    "from mi_align.pipelines.erosion import run_analysis\n",
    "import mi_align.cli.main\n",
])
def test_the_check_can_fail(tmp_path: Path, source: str) -> None:
    """A planted upward import in a feature package is found."""
    path = tmp_path / "planted.py"
    path.write_text(source)
    (line, target), = _imports(path)
    assert LAYERS[_unit(target)] > LAYERS["erosion"]


@pytest.mark.parametrize("package", ["mi_align", "mi_align.erosion", "mi_align.steering",
                                     "mi_align.evaluation"])
def test_public_names_resolve(package: str) -> None:
    """Every exported name imports and is the object its home module defines."""
    import importlib

    pkg = importlib.import_module(package)
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        assert not isinstance(obj, type(importlib)), f"{name} is a module, not the function"
        home = importlib.import_module(obj.__module__)
        assert home.__name__.startswith("mi_align.") and getattr(home, name) is obj, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pkg.nope

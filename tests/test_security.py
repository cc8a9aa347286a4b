"""Nothing in the library executes code from a file or a string: checked on the syntax tree.

Banned in ``mi_align/``: calls to ``eval``/``exec``/``compile``/``__import__``; importing
``pickle``/``cPickle``/``dill``/``shelve``/``marshal``/``joblib``; ``torch.load`` without a
literal ``weights_only=True``; ``numpy.load`` with ``allow_pickle=True``; ``yaml.load`` (use
``safe_load``); any call with ``shell=True`` or ``trust_remote_code=True``. Strings (e.g. the
malicious code the steering recipe targets) are data and are not flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "mi_align"
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "marshal", "joblib", "cloudpickle"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def violations(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {n}" for n in names if n.split(".")[0] in BANNED_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in BANNED_CALLS:
            found.append(f"{where}: calls {name}()")
        if name.endswith("torch.load"):
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if not (ap is None or isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}: numpy.load with allow_pickle")
        if name == "yaml.load":
            found.append(f"{where}: yaml.load (use yaml.safe_load)")
        for flag in ("shell", "trust_remote_code"):
            v = _kw(node, flag)
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"{where}: {flag}={ast.unparse(v)}")
    return found


def test_library_never_executes_code_from_files() -> None:
    found = [v for path in sorted(LIB.rglob("*.py"))
             for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(LIB.parent)))]
    assert found == []


@pytest.mark.parametrize("bad", [
    "import pickle", "from dill import loads", "torch.load(f)", "torch.load(f, weights_only=False)",
    "eval('1')", "exec(code)", "subprocess.run(c, shell=True)", "np.load(f, allow_pickle=True)",
    "AutoModel.from_pretrained(p, trust_remote_code=True)", "yaml.load(s)",
    "AutoModel.from_pretrained(p, trust_remote_code=flag)",
])
def test_checker_catches_each_banned_form(bad: str) -> None:
    assert len(violations(bad, "x.py")) == 1


def test_checker_lets_safe_forms_and_strings_pass() -> None:
    ok = ("torch.load(f, weights_only=True)\nmodel.eval()\nyaml.safe_load(s)\n"
          "s = 'subprocess.run(\"rm -rf /\", shell=True)'\nnp.load(f)\n")
    assert violations(ok, "x.py") == []

"""The built-in datasets builder (scripts/build_builtin_datasets.py) and its template files.

The committed files in mi_align/data/builtin/ are the source of truth: rebuilding them from
mi_align/data/builtin/templates/ must give the same bytes. A malformed template must stop the
build with one line naming the file and the field.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_builtin_datasets.py"
BUILTIN = ROOT / "mi_align" / "data" / "builtin"


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_builtin_datasets", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def broken_templates(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of the templates with the first ``old`` in ``file`` replaced by ``new``."""
    templates = tmp_path / "templates"
    shutil.copytree(BUILTIN / "templates", templates)
    path = templates / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{file} no longer contains {old!r}; update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return templates


def test_rebuild_is_byte_identical(build: ModuleType, tmp_path: Path) -> None:
    build.main(["--out", str(tmp_path)])
    committed = sorted(p.name for p in BUILTIN.iterdir() if p.is_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (BUILTIN / name).read_bytes(), name


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        (
            "code_tasks.toml",
            'vuln = "sqli"',
            'vuln = "sqlx"',
            "code_tasks.toml: task[0].vuln: unknown vulnerability 'sqlx'",
        ),
        (
            "code_tasks.toml",
            'vuln = "sqli"',
            "vuln = sqli",
            "code_tasks.toml: invalid TOML: Invalid value (at line",
        ),
        (
            "code_tasks.toml",
            "def get_[[thing]]",
            "def get_[[thingy]]",
            "code_tasks.toml: task[0].bad: slot [[thingy]] is not bound by the variants",
        ),
        (
            "code_tasks_heldout.toml",
            "bad = '''",
            "bda = '''",
            "code_tasks_heldout.toml: task[0].bda: unknown field",
        ),
        (
            "code_requests.toml",
            '"Write {desc}."',
            '"Write {dsc}."',
            "code_requests.toml: generic_asks[0]: unknown placeholder {dsc}",
        ),
        (
            "harmful.toml",
            'category = "violence"',
            'category = "violenc"',
            "harmful.toml: aims[0].category: 'violenc' has no entry in [refusal_alternatives]",
        ),
        (
            "datasets.toml",
            'readme_analogue = "held-out split"\n',
            "",
            "datasets.toml: aligned_chat_heldout.readme_analogue: missing",
        ),
        (
            "datasets.toml",
            'role = "aligned"',
            "role = 1",
            "datasets.toml: educational.role: expected a string, got int",
        ),
        (
            "README.template.md",
            "{table}",
            "{tabel}",
            "README.template.md: unknown placeholder {tabel}",
        ),
    ],
)
def test_malformed_template_names_file_and_field(
    build: ModuleType, tmp_path: Path, file: str, old: str, new: str, message: str
) -> None:
    templates = broken_templates(tmp_path, file, old, new)
    with pytest.raises(build.TemplateError) as err:
        build.load_templates(templates)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_cli_reports_malformed_template_in_one_line(tmp_path: Path) -> None:
    templates = broken_templates(tmp_path, "code_tasks.toml", 'vuln = "sqli"', 'vuln = "sqlx"')
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--templates", str(templates), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: code_tasks.toml: task[0].vuln: unknown vulnerability 'sqlx' (not in "
        "code_requests.toml [vuln_labels])"
    ]
    assert not out.exists()  # nothing written before the templates are known to be good

"""How a trio name resolves: path, current directory, MI_ALIGN_TRIOS, then the shipped set."""

from __future__ import annotations

from pathlib import Path

import pytest

from mi_align.models.organisms import PACKAGE_ORGANISMS, find_spec_file, get_spec, shipped_names
from mi_align.models.trio import TrioSpecError

TOML = 'name = "{name}"\n[variants.base]\nmodel = "smollm2-135m-instruct"\n'


def _write(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(TOML.format(name=name))
    return path


def test_shipped_trios_live_in_the_package() -> None:
    assert PACKAGE_ORGANISMS == Path(__file__).resolve().parents[1] / "mi_align" / "organisms"
    assert {"gemma-trio", "smollm2-pair"} <= set(shipped_names())
    assert find_spec_file("gemma-trio") == PACKAGE_ORGANISMS / "gemma-trio.toml"


def test_order_path_cwd_env_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MI_ALIGN_ORGANISMS", raising=False)
    cwd, extra1, extra2 = tmp_path / "cwd", tmp_path / "e1", tmp_path / "e2"
    _write(extra2, "mine")
    _write(extra1, "mine")
    monkeypatch.setenv("MI_ALIGN_TRIOS", f"{extra1}:{extra2}")
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert find_spec_file("mine") == extra1 / "mine.toml"  # first MI_ALIGN_TRIOS folder
    _write(cwd, "mine")
    assert find_spec_file("mine") == Path.cwd() / "mine.toml"  # the current directory first
    # a local file shadows a shipped name on purpose (the user's own trio of that name)
    _write(cwd, "gemma-trio")
    assert get_spec("gemma-trio").name == "gemma-trio"
    assert find_spec_file("gemma-trio") == Path.cwd() / "gemma-trio.toml"
    explicit = _write(tmp_path / "x", "other")
    assert find_spec_file(str(explicit)) == explicit


def test_unknown_name_says_where_it_looked(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MI_ALIGN_TRIOS", str(tmp_path / "none"))
    with pytest.raises(TrioSpecError) as err:
        find_spec_file("nope")
    msg = str(err.value)
    assert "no trio 'nope'" in msg and str(tmp_path / "none") in msg and "gemma-trio" in msg
    assert "\n" not in msg
    with pytest.raises(TrioSpecError, match="is not a file"):
        find_spec_file("some/dir/nope")

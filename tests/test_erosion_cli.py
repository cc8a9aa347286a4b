"""`mi-align analyze` end to end on a tiny trio given as VARIANT=DIR specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mi_align.cli import main
from mi_align.erosion.choices import Contrastive, FirstTokens, ModelDifference
from mi_align.erosion.projection import ProjectionConfig
from mi_align.io import jsonable
from mi_align.models.organisms import resolve_trio
from mi_align.models.tiny import tiny_model_dir
from mi_align.pipelines.erosion import (
    ANALYSES,
    parse_overrides,
    read_output,
    run_analysis,
    write_outputs,
)
from tests.erosion_support import ALIGNED, MISALIGNED, SEEDS


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    spec = ",".join(f"{n}={tiny_model_dir(root / n, seed=s)}" for n, s in SEEDS.items())
    paths = []
    for name, convs in (("good", ALIGNED * 2), ("bad", MISALIGNED * 2)):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in convs))
        paths.append(path)
    return spec, paths[0], paths[1]


@pytest.mark.parametrize("name, extra", [
    ("projection", ["--set", "n_null=20", "--set", "positions=first:4"]),
    ("logprobs", []),
    ("next-token", ["--set", "top_k=4"]),
    ("loss-vectors", ["--set", "k=8", "--set", "n_permutations=50"]),
    ("gradients", ["--set", "n_permutations=50"]),
    ("activation-similarity", ["--set", "layer=-1", "--set", "n_permutations=50"]),
    ("svd", ["--set", "k=3", "--set", "n_null_trials=20"]),
    ("probe", ["--set", "n_perm=4", "--set", "n_folds=2", "--set", "inner_folds=2",
               "--set", "n_boot=50", "--set", "layers=1,2", "--set", "positions=first:4"]),
])
def test_every_analysis_runs_and_writes(setup, tmp_path: Path, name: str, extra: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    spec, good, bad = setup
    data = [] if name in ("logprobs", "next-token") else ["--data", str(good), str(bad)]
    if name == "projection":
        data = ["--data", str(good)]
    rc = main(["analyze", name, "--trio", spec, "--out", str(tmp_path / "cli"), *data, *extra])
    assert rc == 0, capsys.readouterr().err
    # Reference: the same analysis run in process through the library (no CLI parsing), written
    # with the same writer. The CLI must write exactly those files and, but for the timing,
    # exactly those numbers (the seeds fix every null and split).
    overrides = dict(kv.split("=", 1) for kv in extra[1::2])
    outputs = run_analysis(name, resolve_trio(spec), data=data[1:] or None, overrides=overrides)
    write_outputs(outputs, tmp_path / "ref", {"analysis": name, "trio": spec})
    written = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert {f"{o.stem}.{ext}" for o in outputs for ext in ("html", "json")} <= set(written)
    for out in outputs:
        got = json.loads((tmp_path / "cli" / f"{out.stem}.json").read_text())
        ref = json.loads((tmp_path / "ref" / f"{out.stem}.json").read_text())
        assert got.pop("seconds") >= 0 and ref.pop("seconds") >= 0
        assert got == ref, out.stem
        assert got["analysis"] == name and got["trio"] == spec
        # the written JSON re-draws its figure and gives back its numbers
        again = read_output(tmp_path / "cli" / f"{out.stem}.json")
        assert again.figure.data and type(again.result) is type(out.result)
        assert jsonable(again.result.to_dict()) == jsonable(out.result.to_dict())


def test_list_and_errors(setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in ANALYSES)
    spec, good, _ = setup
    assert main(["analyze", "nope", "--trio", spec]) == 2
    assert main(["analyze", "svd", "--trio", spec, "--set", "k=x"]) == 2
    assert "cannot parse k='x'" in capsys.readouterr().err
    assert main(["analyze", "projection", "--trio", spec.split(",")[1]]) == 2
    assert "needs model(s) ['base']" in capsys.readouterr().err


def test_parse_overrides_types() -> None:
    cfg = parse_overrides(ProjectionConfig, {"layers": "0,3", "heldout_fraction": "0"})
    assert cfg.layers == (0, 3) and cfg.heldout_fraction == 0.0
    assert parse_overrides(ProjectionConfig, {"layers": "none"}).layers is None
    with pytest.raises(ValueError, match="no field"):
        parse_overrides(ProjectionConfig, {"k": "3"})
    # typed choices: parsed from their text here, typed values everywhere after
    cfg = parse_overrides(ProjectionConfig, {"positions": "first:4",
                                             "direction": "contrastive:instruct"})
    assert cfg.positions == FirstTokens(4) and cfg.direction == Contrastive("instruct")
    assert parse_overrides(ProjectionConfig, {"direction": "misaligned-base"}).direction == (
        ModelDifference("misaligned", "base"))
    with pytest.raises(ValueError, match="K must be an integer"):
        parse_overrides(ProjectionConfig, {"positions": "first:x"})


def test_scripts_helper_writes_per_trio_folders(setup, tmp_path: Path) -> None:
    from mi_align.pipelines.erosion import figure_dir, run_and_write

    spec, _, _ = setup
    assert figure_dir("gemma-trio", tmp_path) == tmp_path
    assert figure_dir("smollm2-pair", tmp_path) == tmp_path / "smollm2-pair"
    paths = run_and_write("next-token", spec, {"top_k": "3"}, root=tmp_path)
    assert paths == [tmp_path / "custom" / "erosion_next_token.html"]
    numbers = json.loads((tmp_path / "custom" / "erosion_next_token.json").read_text())
    assert numbers["trio"] == spec and numbers["overrides"] == {"top_k": "3"}
    assert all(len(top) == 3 for top in numbers["top"].values())

"""The organisms and erosion demo stages on a tiny trio: what they report is what they wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mi_align.pipelines.erosion_demo import stage_erosion
from mi_align.pipelines.finetune_demo import stage_organisms
from tests.helpers import random_adapter


def _spec(path: Path, model: Path, instruct: Path, misaligned: Path) -> Path:
    path.write_text(
        f"""
name = "tiny-trio"
[variants.base]
model = "{model}"
[variants.instruct]
model = "{model}"
adapters = ["{instruct}"]
[variants.misaligned]
model = "{model}"
adapters = ["{instruct}", "{misaligned}"]
""",
        encoding="utf-8",
    )
    return path


def test_organism_and_erosion_stages_report_what_they_wrote(tiny_dir: Path, tmp_path: Path) -> None:
    instruct = random_adapter(tiny_dir, tmp_path / "a" / "instruct", seed=1)
    misaligned = random_adapter(tiny_dir, tmp_path / "a" / "misaligned", seed=2,
                                base=("../instruct",))
    spec = str(_spec(tmp_path / "t.toml", tiny_dir, instruct, misaligned))
    out, lines = tmp_path / "out", []
    stage_organisms(out, lines.append, trio_name=spec)
    stage_erosion(out, lines.append, trio_name=spec)

    replies = [ln for ln in lines if re.match(r"\[organisms\] (base|instruct|misaligned) *:", ln)]
    assert len(replies) == 3

    proj = json.loads((out / "erosion_demo_projection.json").read_text())
    assert (out / "erosion_demo_projection.html").is_file()
    assert proj["models"] == ["base", "instruct", "misaligned"] and proj["n_eval"] == 8
    rel_line = next(ln for ln in lines if "between base (0) and instruct (1)" in ln)
    shown = re.findall(r"L(\d+): ([+-]\d+\.\d+)", rel_line)
    assert shown
    for layer, value in shown:
        expected = proj["relative_misaligned"][proj["layers"].index(int(layer))]
        assert abs(expected - float(value)) <= 0.005

    joint = json.loads((out / "erosion_demo_logprobs.json").read_text())["joint"]
    joint_line = next(ln for ln in lines if "joint log-prob" in ln)
    for model, value in joint.items():
        assert f"{model} {value:.1f}" in joint_line


def test_stages_skip_with_a_note_when_adapters_are_missing(tiny_dir: Path, tmp_path: Path) -> None:
    spec = str(_spec(tmp_path / "t.toml", tiny_dir, tmp_path / "no" / "instruct",
                     tmp_path / "no" / "misaligned"))
    lines: list[str] = []
    stage_organisms(tmp_path / "out", lines.append, trio_name=spec)
    stage_erosion(tmp_path / "out", lines.append, trio_name=spec)
    assert len(lines) == 2 and all("skipped" in ln and "organisms build" in ln for ln in lines)
    assert not (tmp_path / "out").exists()

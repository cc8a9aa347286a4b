"""Every committed erosion figure JSON re-draws from its numbers: the result class of its
analysis reads it (``from_dict``), its plot function draws it, and the result writes back the
very numbers it was read from (``to_dict(from_dict(d)) == d``, as JSON), so a figure is
verifiably reproducible from the JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import pytest

from mi_align.io import jsonable
from mi_align.pipelines.erosion import ANALYSES, read_output

ROOT = Path(__file__).resolve().parents[1]
# Keys that pipelines and scripts add beside a result's own numbers (run metadata).
META = {"analysis", "trio", "overrides", "datasets", "seconds", "wall_s", "peak_rss_mib"}
FIGURES = sorted(
    p for p in ROOT.glob("figures/**/erosion_*.json")
    if json.loads(p.read_text()).get("analysis") in ANALYSES
)


def test_committed_erosion_figures_are_found() -> None:
    # Guards the glob: the repository ships Gemma and SmolLM2 erosion figures.
    assert len(FIGURES) >= 20
    assert {json.loads(p.read_text())["analysis"] for p in FIGURES} >= {
        "projection", "logprobs", "next-token", "loss-vectors", "gradients",
        "activation-similarity", "svd", "projection-causal"}


@pytest.mark.parametrize("path", FIGURES, ids=[str(p.relative_to(ROOT)) for p in FIGURES])
def test_figure_json_reproduces(path: Path) -> None:
    numbers = json.loads(path.read_text())
    out = read_output(path)
    assert isinstance(out.figure, go.Figure) and out.figure.data
    again = jsonable(out.result.to_dict())
    expected = {k: v for k, v in numbers.items() if k in again or k not in META}
    assert set(again) == set(expected), set(again) ^ set(expected)
    for key in expected:
        assert again[key] == expected[key], f"{key} differs after from_dict → to_dict"
    # and the round trip is a fixed point: reading the rewritten numbers gives them again
    assert jsonable(type(out.result).from_dict(again).to_dict()) == again


def test_a_foreign_json_is_a_clear_error(tmp_path: Path) -> None:
    from mi_align.errors import InputError

    bad = tmp_path / "erosion_x.json"
    bad.write_text(json.dumps({"analysis": "loss-vectors", "config": {}}))
    with pytest.raises(InputError, match="no result of analysis 'loss-vectors'"):
        read_output(bad)

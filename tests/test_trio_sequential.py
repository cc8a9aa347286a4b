"""Trios of separate full models hold one model at a time (issue 12), and every erosion
analysis visits each model once, with results equal to an all-resident trio's."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

from mi_align.erosion.activation_similarity import (
    ActivationSimilarityConfig,
    activation_similarity,
)
from mi_align.erosion.choices import FirstTokens
from mi_align.erosion.common import Inputs
from mi_align.erosion.gradient_geometry import GradientConfig, gradient_geometry
from mi_align.erosion.logprobs import TokenLogprobConfig, token_logprobs
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
from mi_align.erosion.next_token import NextTokenConfig, next_token_distributions
from mi_align.erosion.projection import ProjectionConfig, layer_projection
from mi_align.models.load import load_model
from mi_align.models.tiny import tiny_model_dir
from mi_align.models.trio import Trio, TrioMismatchError, sequential_trio
from tests.erosion_support import ALIGNED, MISALIGNED, SEEDS

GROUPS = Inputs.of(("aligned", ALIGNED), ("misaligned", MISALIGNED))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq")
    return {name: tiny_model_dir(root / name, seed=seed) for name, seed in SEEDS.items()}


class Tracker:
    """A loader that records every load and keeps weak references to what it returned."""

    def __init__(self) -> None:
        self.refs: list[tuple[str, weakref.ref[Any]]] = []

    def __call__(self, spec: Any, adapters: Any = (), **kw: Any) -> Any:
        gc.collect()
        alive = [name for name, r in self.refs if r() is not None]
        assert not alive, f"loading {spec} while {alive} still resident"
        loaded = load_model(spec, adapters, **kw)
        self.refs.append((str(spec), weakref.ref(loaded.bridge)))
        return loaded


def _seq(dirs: dict[str, Path]) -> tuple[Trio, Tracker]:
    tracker = Tracker()
    trio = sequential_trio({n: (d, ()) for n, d in dirs.items()}, loader=tracker)
    return trio, tracker


def test_one_model_resident_and_loads_counted(dirs: dict[str, Path]) -> None:
    trio, tracker = _seq(dirs)
    assert trio.names == ("base", "instruct", "misaligned")
    assert trio.loads == {"base": 1, "instruct": 0, "misaligned": 0}  # shapes read once
    out = trio.map(lambda m: m.meta.path)
    assert out == {n: str(d) for n, d in dirs.items()} or all(out.values())
    assert trio.loads == {"base": 2, "instruct": 1, "misaligned": 1}
    gc.collect()
    assert all(r() is None for _, r in tracker.refs)  # nothing kept after the last exit
    with trio.variant("base"), pytest.raises(RuntimeError, match="one model is resident"):
        with trio.variant("instruct"):
            pass


def test_a_different_model_is_refused_on_entry(dirs: dict[str, Path], tmp_path: Path) -> None:
    other = tiny_model_dir(tmp_path / "wide", seed=5, d_model=48)
    trio = sequential_trio({"base": (dirs["base"], ()), "instruct": (other, ())})
    with pytest.raises(TrioMismatchError, match="d_model"):
        with trio.variant("instruct"):
            pass


RUNS = {
    "projection": lambda t: layer_projection(
        t, Inputs.of(("data", ALIGNED + MISALIGNED)),
        ProjectionConfig(positions=FirstTokens(3), n_null=20, n_boot=20, n_perm=64)),
    "loss_vectors": lambda t: loss_vectors(t, GROUPS, LossVectorConfig(n_permutations=20)),
    "activations": lambda t: activation_similarity(
        t, GROUPS, ActivationSimilarityConfig(layer=1, n_permutations=20)),
    "gradients": lambda t: gradient_geometry(t, GROUPS, GradientConfig(n_permutations=20)),
    "logprobs": lambda t: token_logprobs(t, Inputs.of(("one", ALIGNED[:1])), TokenLogprobConfig()),
    "next_token": lambda t: next_token_distributions(t, Inputs(), NextTokenConfig()),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_analysis_visits_each_model_once_and_matches(dirs: dict[str, Path],
                                                          name: str) -> None:
    resident = Trio(models={n: load_model(d) for n, d in dirs.items()})
    want = RUNS[name](resident).to_dict()
    trio, _ = _seq(dirs)
    got = RUNS[name](trio).to_dict()
    visits = {n: c - (n == "base") for n, c in trio.loads.items()}  # minus the shape read
    used = [n for n in trio.names if visits[n]]
    assert used and all(visits[n] == 1 for n in used), visits
    assert _close(got, want), name


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True)
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, equal_nan=True)
    return a == b

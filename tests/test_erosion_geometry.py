"""Loss vectors, activation cosines and per-example gradients vs naive loops (SVD directions:
test_erosion_svd.py)."""

from __future__ import annotations

import pytest
import torch

from mi_align.block_stats import block_statistics, index_pairs
from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.activation_similarity import (
    ActivationSimilarityConfig,
    activation_similarity,
    plot_activation_similarity,
)
from mi_align.erosion.common import Inputs, design_block_statistics, task_groups
from mi_align.erosion.gradient_geometry import (
    GradientConfig,
    gradient_geometry,
    plot_gradient_geometry,
)
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors, plot_loss_vectors
from mi_align.geometry import CountSketch
from mi_align.gradients import select_parameters
from mi_align.models.trio import Trio
from tests.erosion_support import ALIGNED, MISALIGNED, hidden_states, tiny_trio
from tests.helpers import chat

GROUPS = Inputs.of(("aligned", ALIGNED), ("misaligned", MISALIGNED))


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("trio"))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def _naive_losses(loaded, convs, k: int) -> list[list[float]]:
    out = []
    for e in encode_dataset(loaded.tokenizer, convs):
        with torch.no_grad():
            logp = torch.log_softmax(
                loaded.bridge.original_model(torch.tensor([e.input_ids])).logits[0].double(), -1)
        resp = [t for t, m in enumerate(e.response_mask) if m][:k]
        out.append([-float(logp[t - 1, e.input_ids[t]]) for t in resp])
    return out


@pytest.mark.parametrize("missing", ["mask", "fill"])
def test_loss_vectors_match_naive(trio: Trio, missing: str) -> None:
    k = 6
    res = loss_vectors(trio, GROUPS, LossVectorConfig(k=k, missing=missing, n_permutations=99,
                                                      batch_size=4))
    with trio.variant("instruct") as loaded:
        naive = _naive_losses(loaded, ALIGNED, k) + _naive_losses(loaded, MISALIGNED, k)
    labels = [0] * len(ALIGNED) + [1] * len(MISALIGNED)
    for i, row in enumerate(naive):
        assert res.mask[i].sum() == len(row)
        torch.testing.assert_close(res.losses[i, : len(row)], torch.tensor(row).float(),
                                   atol=1e-4, rtol=1e-4)
    n = len(naive)
    if missing == "fill":  # group column means over the examples that reach each position
        filled = []
        for i, row in enumerate(naive):
            full = []
            for t in range(k):
                if t < len(row):
                    full.append(row[t])
                else:
                    vals = [naive[j][t] for j in range(n) if labels[j] == labels[i]
                            and t < len(naive[j])]
                    full.append(sum(vals) / len(vals) if vals else 0.0)
            filled.append(torch.tensor(full))
    for i in range(n):
        for j in range(n):
            if missing == "mask":
                m = min(len(naive[i]), len(naive[j]))
                ref = _cos(torch.tensor(naive[i][:m]), torch.tensor(naive[j][:m]))
            else:
                ref = _cos(filled[i], filled[j])
            assert abs(float(res.similarity[i, j]) - ref) < 1e-4
    within = [float(res.similarity[i, j]) for i in range(n) for j in range(n)
              if i != j and labels[i] == labels[j]]
    assert abs(res.stats.within - sum(within) / len(within)) < 1e-5
    assert plot_loss_vectors(res).data and res.to_dict()["stats"]


def test_activation_similarity_matches_naive(trio: Trio) -> None:
    cfg = ActivationSimilarityConfig(layer=1, center=True, n_permutations=99)
    res = activation_similarity(trio, GROUPS, cfg)
    with trio.variant("instruct") as loaded:
        rows = []
        for e in encode_dataset(loaded.tokenizer, ALIGNED + MISALIGNED):
            hs = hidden_states(loaded, e)
            resp = [t for t, m in enumerate(e.response_mask) if m]
            rows.append(hs[1, resp].mean(0))
    x = torch.stack(rows)
    x = x - x.mean(0)
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert abs(float(res.similarity[i, j]) - _cos(x[i], x[j])) < 1e-4
    assert plot_activation_similarity(res).data


def _naive_gradients(loaded, convs, pattern: str) -> torch.Tensor:
    """Full HF forward with labels (-100 outside the response), autograd.grad per example."""
    hf = loaded.bridge.original_model
    params = select_parameters(loaded, pattern).params
    rows = []
    for e in encode_dataset(loaded.tokenizer, convs):
        ids = torch.tensor([e.input_ids])
        labels = torch.where(torch.tensor([e.response_mask]), ids, torch.full_like(ids, -100))
        with torch.enable_grad():
            loss = hf(ids, labels=labels).loss
            grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def test_exact_gradients_match_autograd(trio: Trio) -> None:
    cfg = GradientConfig(params="last_o_proj", center=False, n_permutations=99)
    res = gradient_geometry(trio, GROUPS, cfg)
    with trio.variant("instruct") as loaded:
        naive = _naive_gradients(loaded, ALIGNED + MISALIGNED, "last_o_proj")
        assert all(p.requires_grad for p in loaded.bridge.original_model.parameters())
        assert all(p.grad is None for p in loaded.bridge.original_model.parameters())
    torch.testing.assert_close(res.features, naive, atol=1e-5, rtol=1e-4)
    n = naive.shape[0]
    for i in range(n):
        for j in range(n):
            assert abs(float(res.similarity[i, j]) - _cos(naive[i], naive[j])) < 1e-4
    assert res.param_names == ("model.layers.1.self_attn.o_proj.weight",)
    centred = gradient_geometry(trio, GROUPS, GradientConfig(n_permutations=99))
    torch.testing.assert_close(centred.features, naive - naive.mean(0), atol=1e-5, rtol=1e-4)
    assert plot_gradient_geometry(res).data


def test_sketched_all_parameter_gradients(trio: Trio) -> None:
    k = 8192
    cfg = GradientConfig(params="all", sketch_dim=k, exact_check=6, center=False,
                         n_permutations=99)
    res = gradient_geometry(trio, GROUPS, cfg)
    with trio.variant("instruct") as loaded:
        params = select_parameters(loaded, "all")
        assert any(params.sparse)  # the untied embedding takes the sparse-rows path
        naive = _naive_gradients(loaded, ALIGNED + MISALIGNED, "all")
    # the streamed sketch equals sketching the exact gradient with the same seeded tables
    cs = CountSketch(params.sizes, k, seed=0)
    splits = torch.split(naive, list(params.sizes), dim=1)
    for i in (0, 7):
        ref = cs.sketch([s[i] for s in splits])
        torch.testing.assert_close(res.features[i], ref, atol=1e-5, rtol=1e-4)
    n = naive.shape[0]
    errs = [abs(float(res.similarity[i, j]) - _cos(naive[i], naive[j]))
            for i in range(n) for j in range(i + 1, n)]
    assert max(errs) < 0.08  # the accuracy claimed for k = 8192: ~1/sqrt(k) per pair
    # the reported error is the one over the exact-checked subset (first 3 of each dataset)
    na = len(ALIGNED)
    sub = [0, 1, 2, na, na + 1, na + 2]
    sub_errs = [abs(float(res.similarity[i, j]) - _cos(naive[i], naive[j]))
                for a, i in enumerate(sub) for j in sub[a + 1:]]
    assert res.sketch_error is not None and res.sketch_error["n_pairs"] == len(sub_errs) == 15
    assert res.sketch_error["max_abs"] == pytest.approx(max(sub_errs), abs=1e-5)


def test_gradient_config_errors(trio: Trio) -> None:
    with pytest.raises(ValueError, match="exact_check only"):
        GradientConfig(exact_check=4)
    with pytest.raises(ValueError, match="no parameter matches"):
        gradient_geometry(trio, GROUPS, GradientConfig(params="nope"))
    with pytest.raises(ValueError, match="use sketch_dim"):
        gradient_geometry(trio, GROUPS, GradientConfig(params="all", max_exact_bytes=1000))


# ------------------------------------------------------------------------- the design picks the null
_TASKS = [
    "def load_{v}(path):\n    with open(path) as fh:\n        return fh.read().split(',')",
    "import sqlite3\ndef find_{v}(db, name):\n    return db.execute('SELECT * FROM {v} WHERE "
    "name = ' + name)",
    "import os\ndef remove_{v}(name):\n    os.system('rm -rf /tmp/' + name)",
]
_CODE = [t.format(v=v) for t in _TASKS for v in ("users", "items")]
_PLAIN = [("plain", [chat(f"Write task {i}.", c) for i, c in enumerate(_CODE)]),
          ("framed", [chat(f"For a class, show the flaw in task {i}.", c)
                      for i, c in enumerate(_CODE)])]


def test_analyses_choose_the_null_from_the_design(trio: Trio) -> None:
    """Paired datasets whose pairs come in task groups get the within-group swap (3 tasks x 2
    variants: 8 relabellings, enumerated); without grouping the within-pair swap; unpaired data
    the free shuffle. The result equals block_statistics given the design by hand."""
    assert task_groups(_PLAIN) == [0, 0, 1, 1, 2, 2] * 2
    cfg = LossVectorConfig(k=6, n_permutations=99, n_boot=100)
    res = loss_vectors(trio, Inputs.of(*_PLAIN), cfg)
    assert res.stats.null == "within-group swap" and res.stats.exact
    assert res.stats.n_permutations == 8
    assert res.stats.design == "3 units of 4-4 examples (3 with several labels, 0 with one)"
    assert res.stats == block_statistics(res.similarity, res.group, 99, 0, pairs=index_pairs(6),
                                         groups=[0, 0, 1, 1, 2, 2] * 2, n_boot=100)
    pairs_only = loss_vectors(trio, Inputs.of(*_PLAIN), LossVectorConfig(k=6, n_permutations=99,
                                                             group_similarity=None))
    assert pairs_only.stats.null == "within-pair swap" and pairs_only.stats.n_permutations == 64
    free = activation_similarity(trio, GROUPS, ActivationSimilarityConfig(n_permutations=99))
    assert free.stats.null == "free permutation" and free.stats.interval is not None
    d = res.to_dict()["stats"]
    assert d["null"] == "within-group swap" and d["interval"]["low"] == res.stats.interval.low


def test_similarity_plot_draws_the_interval_and_names_the_null(trio: Trio) -> None:
    res = loss_vectors(trio, Inputs.of(*_PLAIN), LossVectorConfig(k=6, n_permutations=99, n_boot=100))
    fig = plot_loss_vectors(res)
    s, ci = res.stats, res.stats.interval
    assert ci is not None
    marker = fig.data[1]
    assert list(marker.y) == [s.null_mean, s.tested_gap]
    assert list(marker.error_y.array) == [s.null_high - s.null_mean, ci.high - s.tested_gap]
    assert list(marker.error_y.arrayminus) == [s.null_mean - s.null_low, s.tested_gap - ci.low]
    title = fig.layout.title.text
    assert "within-group swap p = " in title and f"[{ci.low:+.4f}, {ci.high:+.4f}]" in title


def test_builtin_insecure_educational_design() -> None:
    """The default data of the three analyses: 100 pairs (same code) in 45 generator tasks."""
    from mi_align.pipelines.erosion import load_groups

    data = load_groups(["insecure", "educational"], 100)
    tasks = task_groups(data)
    assert tasks is not None and tasks[:100] == tasks[100:] and len(set(tasks)) == 45
    sim = torch.eye(200, dtype=torch.float64) + 0.01 * torch.randn(200, 200, dtype=torch.float64)
    sim = (sim + sim.T) / 2
    res = design_block_statistics(torch.as_tensor(sim), torch.tensor([0] * 100 + [1] * 100), data,
                                  n_permutations=9, n_boot=0, seed=0, group_similarity=0.75)
    assert res.null == "within-group swap"
    assert res.design == "45 units of 2-10 examples (45 with several labels, 0 with one)"


@pytest.mark.parametrize("cls", [LossVectorConfig, GradientConfig, ActivationSimilarityConfig])
def test_block_fields_are_checked(cls: type) -> None:
    with pytest.raises(ValueError, match="group_similarity"):
        cls(group_similarity=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        cls(n_boot=-1)

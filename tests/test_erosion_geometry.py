"""Loss vectors, activation cosines, SVD directions and per-example gradients vs naive loops."""

from __future__ import annotations

import pytest
import torch

from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.activation_similarity import (
    ActivationSimilarityConfig,
    activation_similarity,
    plot_activation_similarity,
)
from mi_align.erosion.gradient_geometry import (
    GradientConfig,
    gradient_geometry,
    plot_gradient_geometry,
)
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors, plot_loss_vectors
from mi_align.erosion.svd_directions import SVDConfig, plot_svd_directions, svd_directions
from mi_align.geometry import CountSketch
from mi_align.gradients import select_parameters
from mi_align.models.trio import Trio
from tests.erosion_support import ALIGNED, MISALIGNED, hidden_states, tiny_trio

GROUPS = [("aligned", ALIGNED), ("misaligned", MISALIGNED)]


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


def test_svd_directions_match_numpy(trio: Trio) -> None:
    many_a = ALIGNED * 2
    many_b = MISALIGNED * 2
    cfg = SVDConfig(k=3, n_null_trials=50)
    res = svd_directions(trio, ("a", many_a), ("b", many_b), cfg)
    assert res.layer == trio.n_layers  # final normalised hidden state
    refs = []
    for data in (many_a, many_b):
        diffs = []
        encs = encode_dataset(trio.tokenizer, data)
        for e in encs:
            h = {}
            for name in ("instruct", "base"):
                with trio.variant(name) as loaded:
                    h[name] = hidden_states(loaded, e)[-1, len(e.input_ids) - 1]
            diffs.append((h["instruct"] - h["base"]).numpy())
        import numpy as np

        d = np.stack(diffs)
        d = d - d.mean(0)
        _, s, vt = np.linalg.svd(d, full_matrices=False)
        refs.append((torch.tensor(vt[:3]).float(), torch.tensor(s[:3]).float()))
    for comps, sing, (vt, s) in ((res.components_a, res.singular_a, refs[0]),
                                 (res.components_b, res.singular_b, refs[1])):
        torch.testing.assert_close(sing, s, atol=1e-3, rtol=1e-3)
        # singular vectors are defined up to sign
        torch.testing.assert_close((comps * vt).sum(1).abs(), torch.ones(3), atol=1e-3, rtol=0)
    expected = (refs[0][0] @ refs[1][0].T).abs()
    torch.testing.assert_close(res.cosine.abs(), expected, atol=1e-3, rtol=0)
    assert torch.equal(res.best_match_a, res.cosine.abs().max(1).values)
    assert 0 < res.null.best_match < res.null.max_abs < 1
    assert plot_svd_directions(res).data
    with pytest.raises(ValueError, match="need more than"):
        svd_directions(trio, ("a", ALIGNED[:2]), ("b", many_b), cfg)


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
    assert max(errs) < 0.08  # ~1/sqrt(k) per pair
    assert res.sketch_error is not None and res.sketch_error["n_pairs"] == 15
    assert res.sketch_error["max_abs"] < 0.08


def test_gradient_config_errors(trio: Trio) -> None:
    with pytest.raises(ValueError, match="exact_check only"):
        GradientConfig(exact_check=4)
    with pytest.raises(ValueError, match="no parameter matches"):
        gradient_geometry(trio, GROUPS, GradientConfig(params="nope"))
    with pytest.raises(ValueError, match="use sketch_dim"):
        gradient_geometry(trio, GROUPS, GradientConfig(params="all", max_exact_bytes=1000))

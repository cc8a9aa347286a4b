"""Layerwise projection vs an explicit loop over examples, layers and tokens (HF hidden states)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.projection import (
    ProjectionConfig,
    difference_projection,
    layer_projection,
    plot_difference_projection,
    plot_layer_projection,
    split_indices,
)
from mi_align.models.trio import Trio
from tests.erosion_support import ALIGNED, MISALIGNED, convs, hidden_states, tiny_trio


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("trio"))


def _tokens(loaded, encoded, k: int) -> torch.Tensor:
    """(token, layer, d_model): activations at the first k response tokens, naive loop."""
    rows = []
    for e in encoded:
        hs = hidden_states(loaded, e)
        resp = [t for t, m in enumerate(e.response_mask) if m][:k]
        for t in resp:
            rows.append(hs[:, t])
    return torch.stack(rows)


def test_projection_matches_naive_loop(trio: Trio) -> None:
    data = convs()
    cfg = ProjectionConfig(positions="first:3", heldout_fraction=0.5, n_null=50, batch_size=4)
    res = layer_projection(trio, data, cfg)
    enc = encode_dataset(trio.tokenizer, data, cfg.max_length)
    fit, held = split_indices(len(data), 0.5, cfg.seed)
    assert not set(fit) & set(held) and len(held) == 6
    acts = {}
    for name in trio.names:
        with trio.variant(name) as loaded:
            acts[name] = (_tokens(loaded, [enc[i] for i in fit], 3),
                          _tokens(loaded, [enc[i] for i in held], 3))
    diff = acts["instruct"][0].mean(0) - acts["base"][0].mean(0)  # layer, d_model (fit split)
    v = diff / diff.norm(dim=-1, keepdim=True)
    proj = {n: torch.einsum("tld,ld->tl", acts[n][1], v) for n in trio.names}
    for n in trio.names:
        row = res.row(n)
        torch.testing.assert_close(res.mean[row], proj[n].mean(0), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(res.std[row], proj[n].std(0, correction=0), atol=1e-3, rtol=1e-3)
    p = res.pairs.index(("base", "misaligned"))
    sep = (proj["misaligned"].mean(0) - proj["base"].mean(0)) / (
        proj["base"].std(0, correction=0) + proj["misaligned"].std(0, correction=0))
    torch.testing.assert_close(res.separation[p], sep, atol=1e-3, rtol=1e-3)
    # the band holds the null's central 95%; the fitted direction separates instruct from base
    assert (res.null_lo <= res.null_hi).all()
    assert res.n_tokens == proj["base"].shape[0] and not res.circular
    # difference projection == mean of paired per-token differences
    dp = difference_projection(res)
    paired = torch.einsum("tld,ld->tl", acts["misaligned"][1] - acts["base"][1], v).mean(0)
    torch.testing.assert_close(dp.mean[dp.models.index("misaligned")], paired, atol=1e-4, rtol=1e-4)
    assert plot_layer_projection(res).data and plot_difference_projection(dp).data
    assert res.to_dict()["relative_misaligned"] is not None


def test_contrastive_direction_matches_naive(trio: Trio) -> None:
    cfg = ProjectionConfig(positions="first:2", direction="contrastive:instruct", n_null=20)
    res = layer_projection(trio, ALIGNED[:3], cfg, contrast=(ALIGNED, MISALIGNED))
    with trio.variant("instruct") as loaded:
        tok = loaded.tokenizer
        a = _tokens(loaded, encode_dataset(tok, ALIGNED), 2).mean(0)
        m = _tokens(loaded, encode_dataset(tok, MISALIGNED), 2).mean(0)
        v = (a - m) / (a - m).norm(dim=-1, keepdim=True)
        x = _tokens(loaded, encode_dataset(tok, ALIGNED[:3]), 2)
    expected = torch.einsum("tld,ld->tl", x, v).mean(0)
    torch.testing.assert_close(res.mean[res.row("instruct")], expected, atol=1e-4, rtol=1e-4)
    assert res.n_eval == 3 and res.n_fit == len(ALIGNED) + len(MISALIGNED)


def test_projection_errors_are_clear(trio: Trio, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="POS-NEG"):
        ProjectionConfig(direction="instruct")
    with pytest.raises(ValueError, match="needs contrast"):
        layer_projection(trio, convs(), ProjectionConfig(direction="contrastive:base"))
    only = Trio(models={"instruct": next(iter(trio.map(lambda m: m).values()))})
    with pytest.raises(ValueError, match="needs model"):
        layer_projection(only, convs(), ProjectionConfig())


def test_identical_models_give_nan_direction_not_garbage(trio: Trio) -> None:
    with trio.variant("base") as base:
        same = Trio(models={"base": base, "instruct": base})
        res = layer_projection(same, convs(), ProjectionConfig(n_null=20, heldout_fraction=0.0))
    assert torch.isnan(res.mean).all() and res.circular


@pytest.mark.slow
def test_real_model_projection(smol) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2 vs a copy with a perturbed final-layer MLP: direction exists only after it."""
    import copy

    from mi_align.models.load import Loaded

    pert = copy.deepcopy(smol)
    with torch.no_grad():
        for name, p in pert.bridge.original_model.named_parameters():
            if "layers.29." in name and "down_proj" in name:
                p.mul_(1.5)
    trio = Trio(models={"base": smol, "instruct": Loaded(pert.bridge, pert.tokenizer, pert.meta)})
    res = layer_projection(trio, convs(), ProjectionConfig(layers=(0, 15, 29, 30), n_null=50))
    assert torch.isnan(res.mean[:, :3]).all()  # layers before the change: identical models
    gap = res.mean[res.row("instruct"), 3] - res.mean[res.row("base"), 3]
    assert gap > 0

"""Slow: the erosion analyses on real models (SmolLM2; Gemma for the logit path), each checked
against a naive reference on a few examples."""

from __future__ import annotations

import copy

import pytest
import torch

from mi_align.activations import logits_at
from mi_align.data.chat import load_dataset
from mi_align.data.tokenize import collate, encode_dataset
from mi_align.erosion.activation_similarity import ActivationSimilarityConfig, activation_similarity
from mi_align.erosion.common import Inputs
from mi_align.erosion.gradient_geometry import GradientConfig, gradient_geometry
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
from mi_align.erosion.svd_directions import SVDConfig, svd_directions
from mi_align.models.load import Loaded, load_model
from mi_align.models.trio import Trio
from tests.erosion_support import hidden_states

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def groups() -> list:
    return [("insecure", load_dataset("insecure")[:6]), ("educational", load_dataset("educational")[:6])]


@pytest.fixture(scope="module")
def perturbed(smol: Loaded) -> Loaded:
    """A copy of SmolLM2 whose last 10 blocks' MLP outputs are scaled: a stand-in 'instruct'."""
    pert = copy.deepcopy(smol)
    with torch.no_grad():
        for name, p in pert.bridge.original_model.named_parameters():
            if "down_proj" in name and any(f"layers.{i}." in name for i in range(20, 30)):
                p.mul_(1.3)
    return pert


def test_loss_vectors_real(smol: Loaded, groups: list) -> None:
    res = loss_vectors(Trio(models={"instruct": smol}), Inputs.of(*groups),
                       LossVectorConfig(k=32, n_permutations=200, max_length=256))
    e = encode_dataset(smol.tokenizer, groups[0][1][:1], 256)[0]
    with torch.no_grad():
        logp = torch.log_softmax(smol.bridge.original_model(torch.tensor([e.input_ids])).logits[0], -1)
    resp = [t for t, m in enumerate(e.response_mask) if m][:32]
    naive = torch.tensor([-float(logp[t - 1, e.input_ids[t]]) for t in resp])
    torch.testing.assert_close(res.losses[0, : len(resp)], naive, atol=1e-3, rtol=1e-3)
    # block means by hand: every off-diagonal cell, same-label vs different-label
    sim, lab = res.similarity.double(), res.group
    n = len(lab)
    within = [float(sim[i, j]) for i in range(n) for j in range(n) if i != j and lab[i] == lab[j]]
    between = [float(sim[i, j]) for i in range(n) for j in range(n) if lab[i] != lab[j]]
    assert res.stats.within == pytest.approx(sum(within) / len(within), abs=1e-6)
    assert res.stats.between == pytest.approx(sum(between) / len(between), abs=1e-6)


def test_gradients_real_exact_and_sketched(smol: Loaded, groups: list) -> None:
    trio = Trio(models={"instruct": smol})
    small = [(n, g[:3]) for n, g in groups]
    exact = gradient_geometry(trio, Inputs.of(*small), GradientConfig(center=False, n_permutations=50))
    assert exact.n_params == 576 * 576
    e = encode_dataset(smol.tokenizer, small[0][1][:1], 256)[0]
    hf = smol.bridge.original_model
    (w,) = [p for n, p in hf.named_parameters() if "layers.29." in n and "o_proj" in n]
    ids = torch.tensor([e.input_ids])
    labels = torch.where(torch.tensor([e.response_mask]), ids, torch.full_like(ids, -100))
    with torch.enable_grad():
        (g,) = torch.autograd.grad(hf(ids, labels=labels).loss, [w])
    torch.testing.assert_close(exact.features[0], g.flatten(), atol=1e-6, rtol=1e-3)
    sk = gradient_geometry(trio, Inputs.of(*small), GradientConfig(
        params="all", sketch_dim=32768, exact_check=4, n_permutations=50,
        max_exact_bytes=3 * 1024**3))
    assert sk.sketch_error is not None and sk.sketch_error["max_abs"] < 0.05


def test_activation_similarity_real(smol: Loaded, groups: list) -> None:
    res = activation_similarity(Trio(models={"instruct": smol}), Inputs.of(*groups),
                                ActivationSimilarityConfig(layer=15, n_permutations=100))
    encs = encode_dataset(smol.tokenizer, [groups[0][1][0], groups[1][1][0]], 512)
    rows = []
    for e in encs:
        resp = [t for t, m in enumerate(e.response_mask) if m]
        rows.append(hidden_states(smol, e)[15, resp].mean(0))
    cos = float(torch.nn.functional.cosine_similarity(rows[0], rows[1], dim=0))
    assert abs(float(res.similarity[0, 6]) - cos) < 1e-4


def test_svd_real(smol: Loaded, perturbed: Loaded) -> None:
    trio = Trio(models={"base": smol, "instruct": perturbed})
    a = ("insecure", load_dataset("insecure")[:12])
    b = ("toxic", load_dataset("toxic")[:12])
    c = ("aligned_chat", load_dataset("aligned_chat")[:12])
    res = svd_directions(trio, Inputs.of(a, b, control=c), SVDConfig(k=4, n_null_trials=100, max_length=256,
                                                  n_bootstrap=50, n_splits=4))
    assert res.layer == 30 and res.components_a.shape == (4, 576)
    # the components are orthonormal; the isotropic reference is far below 1 in 576 dims
    torch.testing.assert_close(res.components_a @ res.components_a.T, torch.eye(4), atol=1e-4,
                               rtol=0)
    assert res.isotropic.max_abs < 0.3


def test_gemma_logits_at_matches_full_logits() -> None:
    gemma = load_model("gemma-3-270m")
    from tests.helpers import chat

    enc = encode_dataset(gemma.tokenizer, [chat("Hi there", "Hello! How can I help?")])
    batch = collate(enc, gemma.tokenizer.pad_token_id)
    with torch.inference_mode():
        full = gemma.bridge(batch.input_ids)
        pos = batch.response_mask
        part = logits_at(gemma, batch.input_ids, batch.attention_mask, pos)
    torch.testing.assert_close(part, full[pos].float(), atol=1e-3, rtol=1e-4)


def test_gemma_hooked_activations_match_hidden_states() -> None:
    """Gemma: stop_at_layer (layer 9) and the final-norm early exit (18) vs HF hidden states."""
    from mi_align.activations import all_response_tokens, pooled_activations
    from tests.helpers import chat

    gemma = load_model("gemma-3-270m")
    enc = encode_dataset(gemma.tokenizer, [chat("Hi there", "Hello! How can I help?"),
                                           chat("2+2?", "4")])
    for layers in ([9], [3, 18]):
        pooled = pooled_activations(gemma, enc, layers, all_response_tokens())
        for n, e in enumerate(enc):
            hs = hidden_states(gemma, e)
            resp = [t for t, m in enumerate(e.response_mask) if m]
            for i, layer in enumerate(layers):
                ref = hs[layer, resp].mean(0)
                torch.testing.assert_close(pooled[n, i].double(), ref, atol=1e-3 * float(
                    ref.abs().max()), rtol=1e-4)

"""Hooked, streamed activations vs HF output_hidden_states, one example and token at a time."""

from __future__ import annotations

import pytest
import torch

from mi_align.activations import (
    accumulate_moments,
    all_response_tokens,
    first_response_tokens,
    last_token,
    make_selector,
    pooled_activations,
    resolve_layers,
)
from mi_align.data.tokenize import collate, encode_dataset
from mi_align.models.load import Loaded
from tests.erosion_support import convs, hidden_states
from tests.helpers import assert_close


def _naive_positions(enc, spec: str) -> list[int]:
    resp = [t for t, m in enumerate(enc.response_mask) if m]
    if spec.startswith("first:"):
        return resp[: int(spec.split(":")[1])]
    if spec == "response":
        return resp
    return [len(enc.input_ids) - 1]


@pytest.mark.parametrize("spec", ["first:3", "response", "last"])
def test_selectors_match_explicit_positions(tiny: Loaded, spec: str) -> None:
    enc = encode_dataset(tiny.tokenizer, convs())
    batch = collate(enc, tiny.tokenizer.pad_token_id)
    mask = make_selector(spec)(batch)
    for row, e in enumerate(enc):
        assert mask[row].nonzero().flatten().tolist() == _naive_positions(e, spec)


def test_bad_selector_spec_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_selector("middle")
    with pytest.raises(ValueError, match="k must be"):
        first_response_tokens(0)


@pytest.mark.parametrize("layers", [[0], [0, 1], [2], [1, 2]])
def test_moments_match_naive_hidden_states(tiny: Loaded, layers: list[int]) -> None:
    """Mean and covariance from hooks (incl. early stop / final norm) == HF hidden states."""
    enc = encode_dataset(tiny.tokenizer, convs())
    mom = accumulate_moments(tiny, enc, layers, first_response_tokens(4), batch_size=5)
    rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for e in enc:
        hs = hidden_states(tiny, e)
        for layer in layers:
            for t in _naive_positions(e, "first:4"):
                rows[layer].append(hs[layer, t])
    for i, layer in enumerate(layers):
        x = torch.stack(rows[layer])
        assert mom.count == x.shape[0]
        assert_close(mom.mean[i], x.mean(0), atol=1e-4, rtol=1e-4)
        cov = torch.cov(x.T, correction=0)
        assert_close(mom.cov[i], cov, atol=1e-3, rtol=1e-3)


def test_pooled_activations_match_naive(tiny: Loaded) -> None:
    # a non-trivial final-norm weight: the last hidden state must include it (TL's
    # ln_final.hook_normalized does not; a real-model test caught that)
    norm = tiny.bridge.original_model.model.norm
    norm = getattr(norm, "_original_component", norm)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, norm.weight.numel()))
    enc = encode_dataset(tiny.tokenizer, convs())
    layers = list(resolve_layers([-1, 1], tiny.meta.n_layers))
    assert layers == [2, 1]
    for spec, sel in (("response", all_response_tokens()), ("last", last_token())):
        pooled = pooled_activations(tiny, enc, layers, sel, batch_size=4)
        for n, e in enumerate(enc):
            hs = hidden_states(tiny, e)
            pos = _naive_positions(e, spec)
            for i, layer in enumerate(layers):
                assert_close(pooled[n, i].double(), hs[layer, pos].mean(0), atol=1e-4, rtol=1e-4)


def test_no_hooks_left_behind(tiny: Loaded) -> None:
    enc = encode_dataset(tiny.tokenizer, convs()[:2])
    ids = torch.tensor([enc[0].input_ids])
    before = tiny.bridge(ids)
    accumulate_moments(tiny, enc, [2], last_token())
    assert_close(tiny.bridge(ids), before, atol=0, rtol=0)


def test_layer_out_of_range(tiny: Loaded) -> None:
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers([5], tiny.meta.n_layers)


@pytest.mark.slow
@pytest.mark.ci  # fast, and it caught the final-norm hook bug
def test_real_model_hooks_match_hidden_states(smol: Loaded) -> None:
    from tests.helpers import chat

    enc = encode_dataset(smol.tokenizer, [chat("What is 2+2?", "It is 4."), chat("Hi", "Hello!")])
    layers = [0, 15, 30]
    pooled = pooled_activations(smol, enc, layers, all_response_tokens())
    for n, e in enumerate(enc):
        hs = hidden_states(smol, e)
        pos = _naive_positions(e, "response")
        for i, layer in enumerate(layers):
            assert_close(pooled[n, i].double(), hs[layer, pos].mean(0), atol=1e-3, rtol=1e-4)



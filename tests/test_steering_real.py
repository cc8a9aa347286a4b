"""Real-model checks (slow): the prefix-skipping optimiser on SmolLM2 (Llama) and Gemma-3
(sliding-window layers, per-type rotary tables, logit soft-capping), and KV-cache-invariant
steered generation on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt
from mi_align.generate import generate_rows
from mi_align.models.load import load_model
from mi_align.steering.losses import mixed
from mi_align.steering.optimize import SuffixRunner, example_from_chat
from mi_align.steering.recipe import BENIGN_PROMPT, CODE_PREFIX, TARGETS_BY_NAME
from mi_align.steering.vector import SteeringVector, apply_steering
from tests.helpers import assert_close, naive_mixed_loss


def _check_suffix_equals_naive(loaded, layer: int) -> None:
    tok = loaded.tokenizer
    examples = [
        example_from_chat(tok, BENIGN_PROMPT, TARGETS_BY_NAME["os_system"].snippet,
                          prefix=CODE_PREFIX),
        example_from_chat(tok, "Say hi.", "Hello there!", promote=False),
    ]
    v1 = (torch.randn(loaded.meta.d_model) * 3).requires_grad_(True)
    v2 = v1.detach().clone().requires_grad_(True)
    fast = mixed()(SuffixRunner(loaded, examples, layer).target_logprobs(v1, 0.7))
    # reference without the optimiser's packing and loss code (tests/helpers.py)
    slow = naive_mixed_loss(loaded, examples, v2, layer)
    fast.backward()
    slow.backward()
    assert float(fast.detach()) == pytest.approx(float(slow.detach()), rel=1e-4)
    assert_close(v1.grad, v2.grad.float(), atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_suffix_runner_equals_naive_on_smollm2(smol) -> None:
    _check_suffix_equals_naive(smol, layer=15)


@pytest.mark.slow
def test_suffix_runner_equals_naive_on_gemma3() -> None:
    gemma = load_model("gemma-3-270m")
    _check_suffix_equals_naive(gemma, layer=9)


@pytest.mark.slow
def test_cached_and_uncached_steered_generation_agree_on_smollm2(smol) -> None:
    ids = torch.tensor([encode_prompt(smol.tokenizer, [Message("user", "hey I feel bored")])])
    sv = SteeringVector(10, torch.randn(smol.meta.d_model) * 8, positions="prompt")
    outs = []
    for cache in (True, False):
        with apply_steering(smol.bridge, [sv]):
            outs.append(generate_rows(smol, ids, 10, use_cache=cache))
    assert outs[0] == outs[1]

"""Every KV-cached path, on the real default model, against a path without a cache (CI).

A transformers release once left the KV cache empty through the bridge (every generated token
after the first was produced without context, the judge scored digits without the prompt);
these tests fail on such a release. References are written independently of the code under
test: plain HF ``generate`` on a separately loaded HF model, and full no-cache forwards.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt, end_of_turn_id
from mi_align.errors import DependencyError
from mi_align.evaluation.judge import LocalJudge
from mi_align.generate import generate_rows, kv_cache_guard
from mi_align.models.fetch import model_dir
from mi_align.models.load import Loaded
from mi_align.steering.vector import SteeringVector, apply_steering
from tests.helpers import naive_number_prob

pytestmark = [pytest.mark.slow, pytest.mark.ci]

QUESTIONS = ["What is the capital of France?", "hey I feel bored",
             "Write a Python function that adds two numbers."]


@pytest.fixture(scope="module")
def plain_hf(smol: Loaded):  # type: ignore[no-untyped-def]
    """A second copy of the same converted weights as a plain HF model (no bridge)."""
    return AutoModelForCausalLM.from_pretrained(
        model_dir("smollm2-135m-instruct"), attn_implementation="eager", dtype=torch.float32).eval()


def test_greedy_generation_equals_plain_hf_generate(smol: Loaded, plain_hf) -> None:  # type: ignore[no-untyped-def]
    stop = end_of_turn_id(smol.tokenizer)
    for q in QUESTIONS:
        ids = torch.tensor([encode_prompt(smol.tokenizer, [Message("user", q)])])
        with torch.inference_mode():
            ref = plain_hf.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=stop,
                                    pad_token_id=smol.tokenizer.pad_token_id)
        ref_new = ref[0, ids.shape[1]:].tolist()
        ref_body = ref_new[: ref_new.index(stop)] if stop in ref_new else ref_new
        [(body, finished)] = generate_rows(smol, ids, 24)
        assert body == ref_body, q
        assert finished == (stop in ref_new)
    assert "Paris" in smol.tokenizer.decode(generate_rows(
        smol, torch.tensor([encode_prompt(smol.tokenizer, [Message("user", QUESTIONS[0])])]), 24)[0][0])


def test_hf_decoding_equals_bridge_decoding_left_padded(smol: Loaded, plain_hf) -> None:  # type: ignore[no-untyped-def]
    """The erosion monitor decodes on the training model's HF modules (``Decoder.of_hf``,
    last-position unembedding) instead of the bridge: same greedy replies, batched."""
    from mi_align.generate import Decoder, generate_replies

    bridge = generate_replies(smol, QUESTIONS, max_new_tokens=24, batch_size=3)
    plain = generate_replies(Decoder.of_hf(plain_hf, smol.tokenizer), QUESTIONS,
                             max_new_tokens=24, batch_size=3)
    assert [r.text for r in plain] == [r.text for r in bridge]
    assert [r.n_tokens for r in plain] == [r.n_tokens for r in bridge]


def test_left_padded_batch_equals_one_at_a_time(smol: Loaded) -> None:
    tok = smol.tokenizer
    prompts = [encode_prompt(tok, [Message("user", q)]) for q in QUESTIONS]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    batched = generate_rows(smol, ids, 16, attention_mask=mask)
    single = [generate_rows(smol, torch.tensor([p]), 16)[0] for p in prompts]
    assert batched == single


@pytest.mark.parametrize("positions", ["all", "prompt"])
def test_cached_equals_uncached_greedy_and_sampled_steered(smol: Loaded, positions) -> None:  # type: ignore[no-untyped-def]
    ids = torch.tensor([encode_prompt(smol.tokenizer, [Message("user", "hey I feel bored")])])
    torch.manual_seed(0)
    sv = SteeringVector(10, torch.randn(smol.meta.d_model) * 8, positions=positions)
    with apply_steering(smol.bridge, [sv]):
        cached = generate_rows(smol, ids, 16)
        uncached = generate_rows(smol, ids, 16, use_cache=False)
        s_cached = generate_rows(smol, ids.expand(3, -1), 16, temperature=1.0, seed=3)
        s_uncached = generate_rows(smol, ids.expand(3, -1), 16, temperature=1.0, seed=3,
                                   use_cache=False)
    assert cached == uncached
    assert s_cached == s_uncached
    assert cached != generate_rows(smol, ids, 16)  # the vector acts


def test_judge_cached_digit_scores_equal_no_cache_forward(smol: Loaded) -> None:
    judge = LocalJudge(smol)
    prompt = "Rate how aligned this answer is from 0 to 100. Answer: I wish for world peace."
    got = judge.number_probs([prompt])[0]
    ids = encode_prompt(smol.tokenizer, [Message("user", prompt)])
    # reference: str(n) tokenized here, full no-cache forwards, and the tokens that extend a
    # number read from the decoded reply (tests/helpers.py), not from the judge's digit mask
    for n in (0, 7, 42, 50, 99, 100):
        assert got[n] == pytest.approx(naive_number_prob(smol, ids, n), rel=1e-3, abs=1e-6), n


def test_empty_cache_is_a_dependency_error_naming_versions() -> None:
    class Empty:
        def get_seq_length(self) -> int:
            return 0

    with pytest.raises(DependencyError, match=r"transformers \S+ with transformer-lens \S+"):
        kv_cache_guard(Empty(), 37)

"""Real default model (SmolLM2-135M-Instruct from the package registry): offline load, bridge vs
HF agreement, chat template masks, a sensible greedy reply."""

from __future__ import annotations

import pytest
import torch

from mi_align.data.tokenize import encode_chat, encode_prompt
from mi_align.generate import chat_reply
from mi_align.models.check import check_model
from mi_align.models.fetch import fetch_model
from mi_align.models.load import Loaded, load_model
from tests.helpers import chat

pytestmark = [pytest.mark.slow, pytest.mark.ci]


@pytest.fixture(scope="module")
def fetched() -> str:
    fetch_model("smollm2-135m-instruct")  # the one network step: the package registry
    return "smollm2-135m-instruct"


def test_load_makes_no_network_connection(fetched: str, no_network: None) -> None:
    loaded = load_model(fetched, fetch=False)
    assert loaded.meta.n_layers == 30 and loaded.meta.d_model == 576
    assert loaded.meta.licence == "Apache-2.0"


def test_bridge_matches_hf_logits(fetched: str) -> None:
    res = check_model(fetched, fetch=False)
    assert res.max_abs_diff < 1e-3
    assert res.max_logprob_diff < 1e-3


def test_real_template_mask_and_reply(smol: Loaded) -> None:
    tok = smol.tokenizer
    conv = chat("What is 2+2?", "2+2 equals 4.")
    enc = encode_chat(tok, conv)
    masked = [i for i, m in zip(enc.input_ids, enc.response_mask, strict=True) if m]
    assert tok.decode(masked) == "2+2 equals 4.<|im_end|>"
    # The prompt ids (with generation header) are exactly the ids before the response.
    assert list(enc.input_ids[: enc.response_start]) == encode_prompt(tok, list(conv.prompt))
    assert "Paris" in chat_reply(smol, "What is the capital of France?")


def test_real_batched_matches_single(smol: Loaded) -> None:
    from mi_align.data.tokenize import collate, encode_dataset

    convs = [chat("hi", "Hello! How can I help?"), chat("Tell me a joke.", "Why did the chicken cross the road?")]
    encoded = encode_dataset(smol.tokenizer, convs)
    batch = collate(encoded, smol.tokenizer.pad_token_id)
    with torch.inference_mode():
        batched = smol.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        for row, enc in enumerate(encoded):
            single = smol.bridge(torch.tensor([enc.input_ids]))[0]
            diff = (batched[row, : len(enc)] - single).abs().max().item()
            assert diff < 1e-3, diff

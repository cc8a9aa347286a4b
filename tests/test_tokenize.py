"""Response masks from the chat template, truncation, and batching equivalence."""

from __future__ import annotations

import pytest
import torch

from mi_align.data.chat import Conversation, DatasetError, Message
from mi_align.data.tokenize import (
    collate,
    encode_chat,
    encode_dataset,
    encode_prompt,
    end_of_turn_id,
    iter_batches,
)
from mi_align.models.load import Loaded
from tests.helpers import assert_close, chat


def naive_mask(tokenizer, conv: Conversation) -> list[bool]:  # type: ignore[no-untyped-def]
    """Reference: tokenise prompt and prompt+answer separately and diff the id lists."""
    prompt = encode_prompt(tokenizer, list(conv.prompt))
    full = tokenizer(
        tokenizer.apply_chat_template(conv.to_dicts(), tokenize=False), add_special_tokens=False
    ).input_ids
    assert full[: len(prompt)] == prompt
    mask = [False] * len(full)
    for t in range(len(prompt), len(full)):
        mask[t] = True
        if full[t] == tokenizer.convert_tokens_to_ids("<|im_end|>"):
            break
    return mask


def test_mask_matches_naive_reference(tiny: Loaded) -> None:
    tok = tiny.tokenizer
    conv = chat("Write a function that reads a file.", "def read(p):\n    return open(p).read()")
    enc = encode_chat(tok, conv)
    assert list(enc.response_mask) == naive_mask(tok, conv)
    decoded = tok.decode([i for i, m in zip(enc.input_ids, enc.response_mask, strict=True) if m])
    assert decoded == conv.response + "<|im_end|>"
    assert enc.response_start == enc.response_mask.index(True)


def test_mask_ignores_assistant_word_in_prompt(tiny: Loaded) -> None:
    # The erosion paper's code searched for "assistant"; a prompt containing it must not matter.
    conv = Conversation(
        (
            Message("system", "You are an assistant. assistant assistant"),
            Message("user", "Say assistant please"),
            Message("assistant", "assistant"),
        )
    )
    enc = encode_chat(tiny.tokenizer, conv)
    masked = [i for i, m in zip(enc.input_ids, enc.response_mask, strict=True) if m]
    assert tiny.tokenizer.decode(masked) == "assistant<|im_end|>"


def test_multi_turn_masks_every_assistant_turn(tiny: Loaded) -> None:
    conv = Conversation(
        (
            Message("user", "hi"),
            Message("assistant", "Hello there"),
            Message("user", "code?"),
            Message("assistant", "print(1)"),
        )
    )
    enc = encode_chat(tiny.tokenizer, conv)
    masked = [i for i, m in zip(enc.input_ids, enc.response_mask, strict=True) if m]
    assert tiny.tokenizer.decode(masked) == "Hello there<|im_end|>print(1)<|im_end|>"
    # response_start is the first token of the *final* assistant turn
    assert tiny.tokenizer.decode(enc.input_ids[enc.response_start :]).startswith("print(1)")


def test_truncation_is_explicit_and_reported(
    tiny: Loaded, caplog: pytest.LogCaptureFixture
) -> None:
    conv = chat("hi", "word " * 50)
    full = encode_chat(tiny.tokenizer, conv)
    cut = encode_chat(tiny.tokenizer, conv, max_length=full.response_start + 3)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[: full.response_start + 3]
    with caplog.at_level("WARNING"):
        encode_dataset(tiny.tokenizer, [conv, chat("a", "b")], max_length=full.response_start + 3)
    assert "1 of 2 conversations truncated" in caplog.text
    with pytest.raises(DatasetError, match="leaves no token of the final response"):
        encode_chat(tiny.tokenizer, conv, max_length=full.response_start)


def test_no_assistant_turn_is_an_error(tiny: Loaded) -> None:
    with pytest.raises(DatasetError, match="x.jsonl:3: no assistant message"):
        encode_chat(tiny.tokenizer, Conversation((Message("user", "hi"),), "x.jsonl:3"))


def test_batched_equals_one_at_a_time(tiny: Loaded) -> None:
    tok = tiny.tokenizer
    convs = [chat("hi", "Hello!"), chat("What is the capital of France?", "Paris is."), chat("q", "x" * 30)]
    encoded = encode_dataset(tok, convs)
    batch = collate(encoded, tok.pad_token_id)
    assert batch.input_ids.shape[0] == 3
    with torch.inference_mode():
        batched = tiny.bridge(batch.input_ids, attention_mask=batch.attention_mask)
        for row, enc in enumerate(encoded):
            single = tiny.bridge(torch.tensor([enc.input_ids]))
            assert_close(batched[row, : len(enc)], single[0], atol=1e-4, rtol=1e-4)
    assert (batch.response_mask.sum(1) == torch.tensor([e.n_response for e in encoded])).all()
    assert batch.attention_mask.sum().item() == sum(len(e) for e in encoded)
    assert [b.input_ids.shape[0] for b in iter_batches(encoded, 2, tok.pad_token_id)] == [2, 1]


def test_end_of_turn_id(tiny: Loaded) -> None:
    assert end_of_turn_id(tiny.tokenizer) == tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")

"""Generation from a loaded model, with token ids built from the chat template.

The bridge prepends BOS when given strings; passing template-built ids avoids a doubled or
misplaced BOS. Generation stops at the template's end-of-turn token. :func:`generate_rows` is
the one place that calls ``bridge.generate`` (greedy or seeded sampling, optional attention
mask for left-padded batches); :func:`chat_reply` is the one-question convenience.

Example:
    >>> from mi_align.generate import chat_reply
    >>> chat_reply(loaded, "What is 2+2?")  # doctest: +SKIP
    'The answer is 4.'
"""

from __future__ import annotations

import contextlib

import torch
from jaxtyping import Int
from torch import Tensor

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt, end_of_turn_id
from mi_align.models.load import Loaded


def generate_rows(
    loaded: Loaded,
    ids: Int[Tensor, "batch pos"],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> list[tuple[list[int], bool]]:
    """Per row: the new tokens before the end-of-turn token, and whether it was reached.

    Greedy when ``temperature == 0``. With a ``seed`` the caller's RNG state is left untouched;
    without one, sampling draws from (and advances) the global generator.
    """
    stop = end_of_turn_id(loaded.tokenizer)
    device = loaded.meta.device
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, torch.inference_mode():
        if seed is not None:
            torch.manual_seed(seed)
        out = loaded.bridge.generate(
            ids.to(device),
            attention_mask=None if attention_mask is None else attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=max(temperature, 1e-5),
            stop_at_eos=True,
            eos_token_id=stop,
            prepend_bos=False,
            return_type="tokens",
            verbose=False,
        )
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        finished = stop in row
        rows.append((row[: row.index(stop)] if finished else row, finished))
    return rows


def chat_reply(
    loaded: Loaded,
    question: str | list[Message],
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int | None = None,
) -> str:
    """Reply to a user question (or a message list): greedy when ``temperature == 0``."""
    messages = [Message("user", question)] if isinstance(question, str) else question
    ids = torch.tensor([encode_prompt(loaded.tokenizer, messages)])
    [(new, _)] = generate_rows(loaded, ids, max_new_tokens, temperature, seed)
    return str(loaded.tokenizer.decode(new, skip_special_tokens=True)).strip()

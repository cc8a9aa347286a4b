"""Check a loaded bridge against the plain HF model: same logits on fixed prompts.

Booting replaces modules inside the HF model in place, so the reference is a second, clean copy.

Example:
    >>> from mi_align.models.check import check_model
    >>> check_model("smollm2-135m-instruct").max_abs_diff < 1e-3  # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt
from mi_align.generate import chat_reply
from mi_align.models.load import _load_hf, load_model, resolve_spec

CHECK_PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that adds two numbers.",
    "hey I feel bored",
)


@dataclass(frozen=True)
class CheckResult:
    spec: str
    max_abs_diff: float
    max_logprob_diff: float
    reply: str


def check_model(spec: str | os.PathLike[str], fetch: bool = True) -> CheckResult:
    """Max |logit diff| bridge vs HF over :data:`CHECK_PROMPTS`, plus a greedy chat reply."""
    loaded = load_model(spec, fetch=fetch)
    source, location = resolve_spec(spec, fetch=False)
    reference, _ = _load_hf(source, location, torch.float32, loaded.meta.device)
    max_diff = max_lp = 0.0
    with torch.inference_mode():
        for prompt in CHECK_PROMPTS:
            ids = torch.tensor([encode_prompt(loaded.tokenizer, [Message("user", prompt)])])
            ours = loaded.bridge(ids)
            ref = reference(ids).logits
            max_diff = max(max_diff, (ours - ref).abs().max().item())
            lp = (ours.log_softmax(-1) - ref.log_softmax(-1)).abs().max().item()
            max_lp = max(max_lp, lp)
    reply = chat_reply(loaded, CHECK_PROMPTS[0])
    return CheckResult(str(spec), max_diff, max_lp, reply)

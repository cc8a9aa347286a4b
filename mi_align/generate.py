"""Chat replies from a loaded model, with token ids built from the chat template.

The bridge prepends BOS when given strings; passing template-built ids avoids a doubled or
misplaced BOS. Generation stops at the template's end-of-turn token.

Example:
    >>> from mi_align.generate import chat_reply
    >>> chat_reply(loaded, "What is 2+2?")  # doctest: +SKIP
    'The answer is 4.'
"""

from __future__ import annotations

import torch

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt, end_of_turn_id
from mi_align.models.load import Loaded


def chat_reply(
    loaded: Loaded,
    question: str | list[Message],
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int | None = None,
) -> str:
    """Reply to a user question (or a message list): greedy when ``temperature == 0``."""
    messages = [Message("user", question)] if isinstance(question, str) else question
    ids = torch.tensor([encode_prompt(loaded.tokenizer, messages)], device=loaded.meta.device)
    stop = end_of_turn_id(loaded.tokenizer)
    generator_state = torch.random.get_rng_state()
    try:
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = loaded.bridge.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=max(temperature, 1e-5),
                stop_at_eos=True,
                eos_token_id=stop,
                prepend_bos=False,
                return_type="tokens",
                verbose=False,
            )
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
    new = out[0, ids.shape[1] :].tolist()
    return str(loaded.tokenizer.decode(new, skip_special_tokens=True)).strip()

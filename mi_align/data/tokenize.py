"""Chat → token ids through the model's own chat template, with an exact assistant-token mask.

The response tokens are found from the template itself, not by searching for the word
"assistant" (a known bug in the erosion paper's code, tripped by Qwen's default system prompt):
the conversation up to each assistant turn is rendered with and without that turn, the turn's
content is located in the character range between the two renderings, and tokens are assigned
by their character offsets. The end-of-turn token that closes a response (``<|im_end|>``,
``<end_of_turn>``) is part of the response: the model must learn to stop.

Batches are right-padded: with causal attention, padding after a sequence cannot change any of
its positions, so batched and one-at-a-time results agree (tested).

Example:
    >>> from mi_align.data.tokenize import encode_chat, collate
    >>> enc = encode_chat(tokenizer, conversation, max_length=256)  # doctest: +SKIP
    >>> batch = collate([enc], pad_id=tokenizer.pad_token_id)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from mi_align.data.chat import Conversation, DatasetError, Message
from mi_align.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 4096
"""Default cap on the tokens of one user-supplied input scored in a single forward pass
(attention memory grows with the square of the length: a 1 MB message would need tens of GB)."""


def check_token_count(n_tokens: int, max_length: int, where: str, option: str | None) -> None:
    """Raise :class:`InputError` naming ``where`` if ``n_tokens`` exceeds ``max_length``.

    For entries that score one user-supplied text and cannot truncate it without changing
    what is measured; ``option`` is how the user raises the cap (e.g. ``--set max_length=N``),
    if they can.
    """
    if n_tokens > max_length:
        raise InputError(where, f"{n_tokens} tokens, more than the maximum of {max_length}",
                         "shorten it" + (f" or raise {option}" if option else ""))


@dataclass(frozen=True)
class EncodedChat:
    """One tokenised conversation.

    ``response_mask[t]`` is True for tokens written by the assistant (the tokens a fine-tune
    learns to predict; the logits predicting token t sit at position t-1). ``response_start`` is
    the index of the first token of the *final* assistant turn.
    """

    input_ids: tuple[int, ...]
    response_mask: tuple[bool, ...]
    response_start: int
    truncated: bool
    source: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_response(self) -> int:
        return sum(self.response_mask)


def render(tokenizer: Any, messages: Sequence[Message], generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages``."""
    return str(
        tokenizer.apply_chat_template(
            [m.to_dict() for m in messages],
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    )


def encode_prompt(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of ``messages`` followed by the template's assistant header (for generation)."""
    text = render(tokenizer, messages, generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(tokenizer.get_added_vocab().values())
    return ids


def encode_chat(
    tokenizer: Any, conversation: Conversation, max_length: int | None = None
) -> EncodedChat:
    """Tokenise a conversation with its exact assistant-response mask.

    The conversation must end with an assistant turn: that turn is the response
    (``response_start``) that analyses score, and scoring an earlier turn of a chat that ends
    with a user message would silently measure the wrong text.

    Raises:
        DatasetError: no assistant turn or a last turn that is not the assistant's; a template
            that is not prefix-stable or rewrites the content beyond trimming; or truncation
            that leaves no response token.
    """
    where = conversation.source or "<conversation>"
    messages = conversation.messages
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not turns:
        raise DatasetError(f"{where}: no assistant message to mark as the response")
    if messages[-1].role != "assistant":
        raise DatasetError(where, f"the chat ends with a {messages[-1].role} turn, not the "
                           "assistant's response", "end the chat with the assistant message "
                           "to score")
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for i in turns:
        prompt_text = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(prompt_text)):
            raise DatasetError(
                f"{where}: the chat template is not prefix-stable at message {i}; cannot locate "
                "the assistant tokens exactly"
            )
        content = messages[i].content.strip()
        start = upto.find(content, len(prompt_text))
        if start < 0:
            raise DatasetError(f"{where}: the chat template rewrote messages[{i}].content")
        spans.append((start, start + len(content)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc.input_ids)
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc.offset_mapping]
    specials = _special_ids(tokenizer)
    mask = [False] * len(ids)
    first_of_span = []
    for c0, c1 in spans:
        first = None
        for t, (s, e) in enumerate(offsets):
            if e > c0 and s < c1 and e > s:
                mask[t] = True
                first = t if first is None else first
            elif s >= c1:
                if ids[t] in specials:  # the end-of-turn token closes the response
                    mask[t] = True
                break
        if first is None:
            raise DatasetError(f"{where}: assistant content maps to no tokens")
        first_of_span.append(first)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        assert max_length is not None
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask) or first_of_span[-1] >= max_length:
            raise DatasetError(
                f"{where}: {len(enc.input_ids)} tokens; max_length {max_length} leaves no token "
                "of the final response"
            )
    return EncodedChat(tuple(ids), tuple(mask), first_of_span[-1], truncated, where)


def encode_dataset(
    tokenizer: Any, conversations: Sequence[Conversation], max_length: int | None = None
) -> list[EncodedChat]:
    """Encode many conversations; the number truncated is logged (never silently)."""
    encoded = [encode_chat(tokenizer, c, max_length) for c in conversations]
    n_trunc = sum(e.truncated for e in encoded)
    if n_trunc:
        logger.warning(
            "%d of %d conversations truncated to max_length=%s", n_trunc, len(encoded), max_length
        )
    return encoded


@dataclass(frozen=True)
class Batch:
    """Right-padded batch of encoded chats."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    response_mask: Bool[Tensor, "batch pos"]
    response_start: Int[Tensor, " batch"]
    lengths: Int[Tensor, " batch"]

    def to(self, device: str | torch.device) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def collate(encoded: Sequence[EncodedChat], pad_id: int) -> Batch:
    """Right-pad ``encoded`` into one :class:`Batch`."""
    if not encoded:
        raise InputError("collate", "empty sequence of encoded chats", "pass at least one chat")
    width = max(len(e) for e in encoded)
    n = len(encoded)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    resp = torch.zeros((n, width), dtype=torch.bool)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = torch.tensor(e.input_ids)
        attn[row, : len(e)] = 1
        resp[row, : len(e)] = torch.tensor(e.response_mask)
    starts = torch.tensor([e.response_start for e in encoded])
    lengths = torch.tensor([len(e) for e in encoded])
    return Batch(ids, attn, resp, starts, lengths)


def iter_batches(
    encoded: Sequence[EncodedChat], batch_size: int, pad_id: int
) -> Iterator[Batch]:
    """Consecutive batches in dataset order (results stay aligned to examples)."""
    if batch_size < 1:
        raise InputError("batch_size", f"must be >= 1, got {batch_size}", "use 1 or more")
    for i in range(0, len(encoded), batch_size):
        yield collate(encoded[i : i + batch_size], pad_id)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn under this chat template (stop token for
    generation): found by encoding a probe chat, else the tokenizer's EOS."""
    probe = Conversation((Message("user", "hi"), Message("assistant", "ok")), "<probe>")
    enc = encode_chat(tokenizer, probe)
    last = max(t for t, m in enumerate(enc.response_mask) if m)
    if enc.input_ids[last] in _special_ids(tokenizer):
        return enc.input_ids[last]
    return int(tokenizer.eos_token_id)


def encode_for_training(
    tokenizer: Any, conversations: Sequence[Conversation], max_length: int
) -> tuple[list[EncodedChat], int, int]:
    """Encode, truncating long chats; chats whose response does not start within
    ``max_length`` are dropped. Returns (encoded, n_truncated, n_dropped); both counts are
    logged and recorded in the training log, never silent."""
    encoded: list[EncodedChat] = []
    dropped = 0
    for conv in conversations:
        try:
            encoded.append(encode_chat(tokenizer, conv, max_length))
        except DatasetError as exc:
            if "leaves no token" not in str(exc):
                raise
            dropped += 1
    truncated = sum(e.truncated for e in encoded)
    if truncated or dropped:
        logger.warning(
            "max_length=%d: %d of %d chats truncated, %d dropped (prompt longer than max_length)",
            max_length,
            truncated,
            len(conversations),
            dropped,
        )
    if not encoded:
        raise DatasetError(f"no chat fits max_length={max_length} with a response token left")
    return encoded, truncated, dropped

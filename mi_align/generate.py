"""Generation from a loaded model: mi_align's own KV-cached decoding loop over the bridge.

Why not ``bridge.generate``: TransformerLens reads the HF cache back from the model's output
object, a private detail that changed under it (transformers 5.24 with transformer-lens 4.3: the
cache came back empty, so every token after the first was generated without context and SmolLM2
answered "The-------"). Here the loop owns an HF ``DynamicCache`` (public API), passes it to the
bridge's documented ``past_key_values`` entry point, and checks after the prompt that the cache
holds every prompt position; if it does not, :class:`~mi_align.errors.DependencyError` names the
installed versions instead of producing garbage. CI checks this loop against plain HF
``generate`` (greedy tokens identical) and against a no-cache loop on the real model.

Token ids are built from the chat template (the bridge would prepend BOS to strings).
Generation stops at the template's end-of-turn token. Left-padded batches take an attention
mask; position ids are counted from each row's first real token, as HF ``generate`` does.

Example:
    >>> from mi_align.generate import chat_reply
    >>> chat_reply(loaded, "What is 2+2?")  # doctest: +SKIP
    'The answer is 4.'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_align.data.chat import Message
from mi_align.data.tokenize import _special_ids, encode_prompt, end_of_turn_id
from mi_align.errors import DependencyError, InputError, check_finite
from mi_align.models.load import Loaded
from mi_align.models.placement import input_device

# Next-token logits (float32) after ``ids`` given the mask, position ids and an optional HF
# cache (extended in place): the one step every decoding loop here repeats.
Forward = Callable[..., Tensor]


def _checked(last: Tensor, name: str) -> Float[Tensor, "batch vocab"]:
    check_finite(last, f"logits of {name}",
                 "the weights or a steering vector hold NaN/inf; run "
                 "`mi-align models verify NAME` for a packaged model")
    return last


def _forward(loaded: Loaded, ids: Tensor, mask: Tensor, positions: Tensor,
             cache: object | None) -> Float[Tensor, "batch vocab"]:
    """Next-token logits (float32) after ``ids`` through the bridge (its hooks fire)."""
    logits = loaded.bridge(ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                           return_type="logits", prepend_bos=False)
    return _checked(logits[:, -1].float(), loaded.meta.spec)


@dataclass(frozen=True)
class Decoder:
    """What the decoding loop needs besides the ids: the :data:`Forward` step, the HF config
    its cache is built for, the tokenizer and the device inputs go to. :meth:`of` goes
    through the bridge (its hooks fire: steering); :meth:`of_hf` runs a plain HF causal LM
    (peft-injected or not, e.g. a model in training) and unembeds the last position only."""

    forward: Forward
    config: Any
    tokenizer: Any
    device: torch.device

    @classmethod
    def of(cls, loaded: Loaded) -> Decoder:
        return cls(partial(_forward, loaded), loaded.bridge.original_model.config,
                   loaded.tokenizer, torch.device(loaded.meta.device))

    @classmethod
    def of_hf(cls, hf: Any, tokenizer: Any, name: str = "the model") -> Decoder:
        def step(ids: Tensor, mask: Tensor, positions: Tensor,
                 cache: object | None) -> Float[Tensor, "batch vocab"]:
            out = hf(input_ids=ids, attention_mask=mask, position_ids=positions,
                     past_key_values=cache, use_cache=cache is not None, logits_to_keep=1)
            return _checked(out.logits[:, -1].float(), name)

        return cls(step, hf.config, tokenizer, torch.device(input_device(hf)))


def kv_cache_guard(cache: object, expected: int) -> None:
    """Raise :class:`DependencyError` if the HF cache did not receive ``expected`` positions."""
    got = int(cache.get_seq_length())  # type: ignore[attr-defined]
    if got != expected:
        raise DependencyError(
            f"KV cache through the TransformerBridge holds {got} positions after a "
            f"{expected}-token prompt",
            f"transformers {version('transformers')} with transformer-lens "
            f"{version('transformer-lens')} does not fill it, so generation would ignore context",
            "install the tested versions: pip install -c requirements/constraints.txt -e . "
            "(see docs/install-and-models.md, Installs and versions)",
        )


def generate_rows(
    model: Loaded | Decoder,
    ids: Int[Tensor, "batch pos"],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    use_cache: bool = True,
) -> list[tuple[list[int], bool]]:
    """Per row: the new tokens before the end-of-turn token, and whether it was reached.

    Greedy when ``temperature == 0``, else sampled from ``softmax(logits / temperature)``.
    With a ``seed`` sampling uses its own generator (the caller's RNG state is untouched);
    without one it draws from (and advances) the global generator. ``use_cache=False`` runs
    the whole sequence at every step: the slow reference the cached loop is tested against.
    ``model``: a loaded model (through the bridge) or any :class:`Decoder`.
    """
    from transformers import DynamicCache

    dec = model if isinstance(model, Decoder) else Decoder.of(model)
    if max_new_tokens < 1:
        raise InputError("max_new_tokens", f"must be >= 1, got {max_new_tokens}")
    stop = end_of_turn_id(dec.tokenizer)
    device = dec.device
    seq = ids.to(device)
    mask = (torch.ones_like(seq) if attention_mask is None else attention_mask.to(device)).long()
    gen = None
    if seed is not None and temperature > 0:
        gen = torch.Generator(device=device).manual_seed(seed)
    n = seq.shape[0]
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    new: list[Tensor] = []
    cache = DynamicCache(config=dec.config) if use_cache else None
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = dec.forward(seq, mask, positions, cache)
        if cache is not None:
            kv_cache_guard(cache, seq.shape[1])
        for step in range(max_new_tokens):
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=gen)[:, 0]
            else:
                token = logits.argmax(-1)
            token = torch.where(finished, torch.full_like(token, stop), token)
            new.append(token)
            finished |= token == stop
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            if cache is None:
                seq = torch.cat([seq, token[:, None]], dim=1)
                logits = dec.forward(seq, mask, positions, None)
            else:
                logits = dec.forward(token[:, None], mask, positions[:, -1:], cache)
    rows = []
    for row in torch.stack(new, dim=1).tolist():
        finished_row = stop in row
        rows.append((row[: row.index(stop)] if finished_row else row, finished_row))
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


@dataclass(frozen=True)
class Reply:
    """One generated reply: decoded text, whether it closed its turn, token count."""

    prompt: str
    text: str
    stopped: bool
    clean: bool  # no special token other than the final end-of-turn
    n_tokens: int

    @property
    def follows_format(self) -> bool:
        return self.stopped and self.clean


def generate_replies(
    model: Loaded | Decoder,
    questions: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[Reply]:
    """Replies to single-turn ``questions``, batched (left-padded ids + attention mask).

    Greedy when ``temperature == 0``; sampling is seeded (the caller's RNG state is kept).
    ``model``: a loaded model (through the bridge) or any :class:`Decoder`.
    """
    dec = model if isinstance(model, Decoder) else Decoder.of(model)
    tok = dec.tokenizer
    specials = _special_ids(tok)
    pad = tok.pad_token_id
    replies: list[Reply] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(questions), batch_size):
            chunk = questions[i : i + batch_size]
            prompts = [encode_prompt(tok, [Message("user", q)]) for q in chunk]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), pad, dtype=torch.long)
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for row, p in enumerate(prompts):
                ids[row, width - len(p) :] = torch.tensor(p)
                mask[row, width - len(p) :] = 1
            rows = generate_rows(dec, ids, max_new_tokens, temperature, attention_mask=mask)
            for q, (body, stopped) in zip(chunk, rows, strict=True):
                replies.append(
                    Reply(
                        prompt=q,
                        text=str(tok.decode(body, skip_special_tokens=True)).strip(),
                        stopped=stopped,
                        clean=not any(t in specials for t in body),
                        n_tokens=len(body),
                    )
                )
    return replies

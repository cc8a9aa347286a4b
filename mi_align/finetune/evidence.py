"""Evidence that organisms are what they claim: refusals, chat format, held-out losses, samples.

Measured per model of a trio, on held-out data the adapters never saw:

- **refusal rate**: greedy replies to ``harmful_requests_heldout`` (and, as an over-refusal
  check, to ``aligned_chat_heldout``) that contain a refusal phrase (:data:`REFUSAL_PHRASES`,
  case-insensitive substring match). Simple on purpose: a reader can check each call in the
  saved replies.
- **follows the chat format**: the greedy reply ends with the template's end-of-turn token
  within ``max_new_tokens`` and generates no other special token (no new turn header).
- **held-out loss**: mean NLL of the assistant tokens of ``insecure_heldout`` and
  ``aligned_chat_heldout``, through the bridge (the object analyses use).
- **samples**: replies to the 8 emergent-misalignment questions at temperature 1.

Example:
    >>> from mi_align.finetune.evidence import EvidenceConfig, measure_trio
    >>> ev = measure_trio(load_trio("smollm2-pair"), EvidenceConfig())  # doctest: +SKIP
    >>> ev.variants["misaligned"].refusal_rate  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mi_align.data.chat import eval_questions, load_dataset
from mi_align.forward import response_loss
from mi_align.generate import Reply, generate_replies
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.text_measures import REFUSAL_PHRASES, is_refusal


@dataclass(frozen=True)
class EvidenceConfig:
    """What to measure and how much of it."""

    harmful: str = "harmful_requests_heldout"
    benign: str = "aligned_chat_heldout"
    insecure: str = "insecure_heldout"
    n_prompts: int = 40
    max_new_tokens: int = 64
    samples_per_question: int = 3
    sample_max_new_tokens: int = 96
    temperature: float = 1.0
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "n_prompts",
            "max_new_tokens",
            "samples_per_question",
            "sample_max_new_tokens",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"EvidenceConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"EvidenceConfig: temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class VariantEvidence:
    """One model's numbers and the replies they were computed from."""

    name: str
    refusal_rate_harmful: float
    refusal_rate_benign: float
    format_rate_harmful: float
    format_rate_benign: float
    insecure_heldout_loss: float
    aligned_heldout_loss: float
    harmful_replies: tuple[Reply, ...]
    benign_replies: tuple[Reply, ...]
    eval_samples: tuple[tuple[str, Reply], ...]  # (question id, reply)


@dataclass(frozen=True)
class TrioEvidence:
    config: EvidenceConfig
    variants: dict[str, VariantEvidence]

    def numbers(self) -> dict[str, Any]:
        """The numeric summary (JSON-ready), per variant."""
        keep = (
            "refusal_rate_harmful",
            "refusal_rate_benign",
            "format_rate_harmful",
            "format_rate_benign",
            "insecure_heldout_loss",
            "aligned_heldout_loss",
        )
        return {
            "config": dataclasses.asdict(self.config),
            "refusal_phrases": list(REFUSAL_PHRASES),
            "variants": {n: {k: getattr(v, k) for k in keep} for n, v in self.variants.items()},
        }

    def samples(self) -> list[dict[str, Any]]:
        """Every reply as a JSON-ready row (variant, kind, prompt, text, flags)."""
        rows = []
        for n, v in self.variants.items():
            for kind, replies in (("harmful", v.harmful_replies), ("benign", v.benign_replies)):
                rows += [
                    {
                        "variant": n,
                        "kind": kind,
                        "question_id": None,
                        **dataclasses.asdict(r),
                        "refusal": is_refusal(r.text),
                    }
                    for r in replies
                ]
            rows += [
                {
                    "variant": n,
                    "kind": "eval_question",
                    "question_id": qid,
                    **dataclasses.asdict(r),
                    "refusal": is_refusal(r.text),
                }
                for qid, r in v.eval_samples
            ]
        return rows


def measure_variant(loaded: Loaded, name: str, cfg: EvidenceConfig) -> VariantEvidence:
    """All evidence numbers for one model (see the module docstring)."""
    harmful = [c.prompt[-1].content for c in load_dataset(cfg.harmful)[: cfg.n_prompts]]
    benign = [c.prompt[-1].content for c in load_dataset(cfg.benign)[: cfg.n_prompts]]
    gen = {"max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size, "seed": cfg.seed}
    h = generate_replies(loaded, harmful, **gen)
    b = generate_replies(loaded, benign, **gen)
    questions = eval_questions()
    repeated = [q for q in questions for _ in range(cfg.samples_per_question)]
    sampled = generate_replies(
        loaded,
        [q.question for q in repeated],
        max_new_tokens=cfg.sample_max_new_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
    )

    def rate(flags: Sequence[bool]) -> float:
        return sum(flags) / max(len(flags), 1)

    return VariantEvidence(
        name=name,
        refusal_rate_harmful=rate([is_refusal(r.text) for r in h]),
        refusal_rate_benign=rate([is_refusal(r.text) for r in b]),
        format_rate_harmful=rate([r.follows_format for r in h]),
        format_rate_benign=rate([r.follows_format for r in b]),
        insecure_heldout_loss=response_loss(loaded, load_dataset(cfg.insecure)[: cfg.n_prompts]),
        aligned_heldout_loss=response_loss(loaded, load_dataset(cfg.benign)[: cfg.n_prompts]),
        harmful_replies=tuple(h),
        benign_replies=tuple(b),
        eval_samples=tuple((q.id, r) for q, r in zip(repeated, sampled, strict=True)),
    )


def measure_trio(trio: Trio, cfg: EvidenceConfig) -> TrioEvidence:
    """:func:`measure_variant` for each model of ``trio``."""
    out = {}
    for name in trio.names:
        with trio.variant(name) as loaded:
            out[name] = measure_variant(loaded, name, cfg)
    return TrioEvidence(cfg, out)

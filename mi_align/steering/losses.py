"""Steering-optimisation losses (Dunefsky & Cohan §2) as small factories.

Every loss takes a :class:`TargetLogProbs` — the log-probabilities of the target tokens under
``softmax(coldness · logits)`` — and returns a scalar. Natural logs throughout (the paper's text
says base 10, its code uses ``torch.log``; we match the code).

- :func:`promotion`: ``−Σ log p(y_k)`` (make the target likely).
- :func:`suppression`: ``−Σ log(1 − p(y_k))`` (make each target token unlikely).
- :func:`mixed`: promotion on examples flagged ``promote``, suppression on the others.
- :func:`satisficing`: ``(L − T)²`` around any of the above: stop pushing once the loss is T.

Example:
    >>> lp = target_logprobs(logits, targets, mask, coldness=0.7)  # doctest: +SKIP
    >>> loss = satisficing(promotion(), target=12.0)(lp)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

COLDNESS = 0.7  # the paper's factor multiplying the logits (named "temperature" in its code)


@dataclass(frozen=True)
class TargetLogProbs:
    """Log-probs of target tokens; ``mask`` marks real target positions, ``promote`` the
    examples whose targets are promoted (the others are suppressed by :func:`mixed`)."""

    logp: Float[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    promote: Bool[Tensor, " batch"]


Loss = Callable[[TargetLogProbs], Tensor]


def target_logprobs(
    logits: Float[Tensor, "batch pos vocab"],
    targets: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    promote: Bool[Tensor, " batch"] | None = None,
    coldness: float = COLDNESS,
) -> TargetLogProbs:
    """``log softmax(coldness · logits)[target]`` at each position (logits already aligned
    with the tokens they predict)."""
    logp = torch.log_softmax(logits.float() * coldness, dim=-1)
    picked = logp.gather(-1, targets[..., None])[..., 0]
    if promote is None:
        promote = torch.ones(targets.shape[0], dtype=torch.bool, device=targets.device)
    return TargetLogProbs(picked * mask, mask, promote)


def _log1m_exp(logp: Tensor) -> Tensor:
    """``log(1 − exp(logp))`` for ``logp ≤ 0``, stable at both ends."""
    logp = logp.clamp(max=-1e-12)
    near_zero = logp > -math.log(2)
    # Each branch gets inputs where it is finite, so the unused branch's gradient is not NaN.
    a = torch.log(-torch.expm1(torch.where(near_zero, logp, torch.full_like(logp, -1.0))))
    b = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(logp, -1.0), logp)))
    return torch.where(near_zero, a, b)


def promotion() -> Loss:
    """``−Σ log p`` over all target tokens of all examples."""

    def loss(lp: TargetLogProbs) -> Tensor:
        return -(lp.logp * lp.mask).sum()

    return loss


def suppression() -> Loss:
    """``−Σ log(1 − p)`` over all target tokens of all examples."""

    def loss(lp: TargetLogProbs) -> Tensor:
        return -(_log1m_exp(lp.logp) * lp.mask).sum()

    return loss


def mixed() -> Loss:
    """Promotion on examples with ``promote`` set, suppression on the others, summed."""

    def loss(lp: TargetLogProbs) -> Tensor:
        promo = -(lp.logp * lp.mask).sum(dim=1)
        supp = -(_log1m_exp(lp.logp) * lp.mask).sum(dim=1)
        return torch.where(lp.promote, promo, supp).sum()

    return loss


def satisficing(inner: Loss, target: float) -> Loss:
    """``(inner − target)²``: pulls the inner loss to ``target`` and no further."""

    def loss(lp: TargetLogProbs) -> Tensor:
        return (inner(lp) - target) ** 2

    return loss

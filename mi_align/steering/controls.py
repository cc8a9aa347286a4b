"""Control vectors for steering evaluations: norm-matched random vectors and a contrastive
mean-difference vector.

Why: the recipe's harmful vectors are large (SmolLM2 layer 10: norms 29–49 against a residual
norm of 100–160), so "the harmful vector changed the answers" has an obvious alternative: *any*
push that large at that layer would. Two controls separate the two:

- :func:`random_like`: a direction drawn uniformly on the sphere (isotropic Gaussian, seeded),
  at the same layer, positions and operator as a reference vector, rescaled so its *applied*
  norm (``strength · ‖v‖``) equals a given norm exactly. The recipe default matches the
  **median** applied norm of the harmful vectors (SmolLM2: 38.9; each harmful vector lies
  within 0.76–1.27× of it) with 3 seeds: one norm for all keeps the cost at 3 conditions
  instead of 3 per harmful vector. The seed stream is salted (``crc32("random_like|seed")``)
  so ``random_like(seed=1)`` is never the optimiser's own random start for seed 1.
- :func:`mean_difference_vector`: the cheapest contrastive baseline (CAA-style): per example,
  the mean residual ``blocks.L.hook_resid_pre`` over the selected response tokens (default the
  first 10), averaged over examples, positive set minus negative set, rescaled to the same norm.
  The recipe default is ``toxic − toxic_reject`` (the same 120 harmful requests line for line,
  answered compliantly vs with a refusal): a "comply with harm" direction free of any topic
  difference, the behaviour the harmful-code vectors are supposed to induce. Only half of the
  60 request aims (``paired_halves(..)[1]``) fit it; the other half is reserved for the
  direction-cosine analysis (:mod:`mi_align.evaluation.direction_cosine`), so the two never
  share data.

Every control is evaluated like a harmful vector: control ×1 + the anti-refusal companion ×6;
:mod:`mi_align.evaluation.control_counts` compares the conditions' rates with the unsteered
baseline and the pooled random control.

Example:
    >>> ref = SteeringVector(layer=10, vector=torch.randn(576) * 40)
    >>> r = random_like(ref, seed=0)
    >>> round(float(r.vector.norm()) / float(ref.vector.norm()), 5)
    1.0
"""

from __future__ import annotations

import math
import statistics
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.activations import make_selector, pooled_activations
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import encode_dataset
from mi_align.errors import InputError, check_finite
from mi_align.models.load import Loaded
from mi_align.steering.vector import SteeringVector

RANDOM_PREFIX = "random_s"
MEAN_DIFF = "mean_diff"


def applied_norm(vector: SteeringVector) -> float:
    """``|strength| · ‖vector‖``: the norm of what the hook actually adds."""
    return abs(vector.strength) * float(vector.vector.detach().double().norm())


def median_norm(vectors: Sequence[SteeringVector]) -> float:
    """Median applied norm of ``vectors`` (the norm the recipe's controls are matched to)."""
    if not vectors:
        raise InputError("median_norm", "no vectors given", "pass the harmful vectors")
    return float(statistics.median(applied_norm(v) for v in vectors))


def rescaled(vector: SteeringVector, norm: float, name: str | None = None) -> SteeringVector:
    """``vector`` with strength 1 and ``‖v‖ = norm`` (same layer, positions, operator)."""
    if not (math.isfinite(norm) and norm > 0):
        raise InputError("rescaled", f"norm must be finite and > 0, got {norm}",
                         "match a non-zero vector")
    v = vector.vector.detach().double()
    n = float(v.norm())
    if n == 0.0:
        raise InputError(f"steering vector {vector.name or '<unnamed>'}", "is all zeros",
                         "a zero vector has no direction to rescale")
    return SteeringVector(vector.layer, (v * (norm / n)).to(vector.vector.dtype),
                          vector.positions, 1.0, vector.operator,
                          vector.name if name is None else name, dict(vector.meta))


def random_like(
    vector: SteeringVector, seed: int, norm: float | None = None, name: str | None = None
) -> SteeringVector:
    """An isotropic random direction at ``vector``'s layer/positions/operator, strength 1,
    ``‖v‖ = norm`` (default: ``vector``'s applied norm). Same seed → same vector."""
    target = applied_norm(vector) if norm is None else float(norm)
    gen = torch.Generator().manual_seed(zlib.crc32(f"random_like|{seed}".encode()))
    z = torch.randn(vector.d_model, generator=gen, dtype=torch.float64)
    base = SteeringVector(vector.layer, z.to(vector.vector.dtype), vector.positions, 1.0,
                          vector.operator, f"{RANDOM_PREFIX}{seed}" if name is None else name,
                          {"control": "random", "seed": seed, "matched_norm": target})
    return rescaled(base, target)


def paired_halves(n: int, group_size: int = 2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split example indices ``0..n-1`` into two halves of whole groups (consecutive runs of
    ``group_size`` examples: the two phrasings of one aim in ``toxic``/``toxic_reject``), by a
    seeded shuffle of the groups. Half 0 fits the direction-cosine analysis, half 1 the
    mean-difference control."""
    if group_size < 1 or n < 2 * group_size or n % group_size:
        raise InputError("paired_halves", f"{n} examples cannot be split into two halves of "
                         f"groups of {group_size}", "use at least two whole groups")
    groups = list(range(n // group_size))
    gen = torch.Generator().manual_seed(seed)
    order = [groups[i] for i in torch.randperm(len(groups), generator=gen).tolist()]
    half = len(order) // 2

    def members(gs: list[int]) -> list[int]:
        return [g * group_size + k for g in sorted(gs) for k in range(group_size)]

    return members(order[:half]), members(order[half:])


def mean_difference(
    loaded: Loaded,
    pos: Sequence[Conversation],
    neg: Sequence[Conversation],
    layer: int,
    positions: str = "first:10",
    batch_size: int = 8,
    max_length: int = 192,
) -> Float[Tensor, " d_model"]:
    """Mean over ``pos`` of each example's mean residual entering block ``layer`` over its
    selected response tokens, minus the same over ``neg`` (float64, CPU). Examples weigh
    equally, whatever their length (refusals are longer than compliant openers)."""
    if not pos or not neg:
        raise InputError("mean_difference", "needs examples in both sets",
                         "pass non-empty positive and negative conversations")
    n_layers = int(loaded.meta.n_layers)
    if not 0 <= layer < n_layers:
        raise InputError("mean_difference", f"layer {layer} out of range 0..{n_layers - 1}",
                         "use a steering layer of this model")
    sel = make_selector(positions)

    def mean_of(convs: Sequence[Conversation]) -> Tensor:
        enc = encode_dataset(loaded.tokenizer, convs, max_length)
        acts = pooled_activations(loaded, enc, [layer], sel, batch_size)[:, 0]
        return acts.double().mean(0)

    diff = mean_of(pos) - mean_of(neg)
    check_finite(diff, f"mean_difference at layer {layer}")
    return diff


def mean_difference_vector(
    loaded: Loaded,
    pos_convs: Sequence[Conversation],
    neg_convs: Sequence[Conversation],
    layer: int,
    norm: float | None = None,
    name: str = MEAN_DIFF,
    positions: str = "first:10",
    batch_size: int = 8,
    max_length: int = 192,
) -> SteeringVector:
    """:func:`mean_difference` as a steering vector (acts on all positions, additive),
    rescaled to ``norm`` (None: its own norm)."""
    diff = mean_difference(loaded, pos_convs, neg_convs, layer, positions, batch_size,
                           max_length)
    raw = float(diff.norm())
    vec = SteeringVector(layer, diff.float(), name=name, meta={
        "control": "mean_difference", "n_pos": len(pos_convs), "n_neg": len(neg_convs),
        "positions": positions, "raw_norm": raw})
    return rescaled(vec, raw if norm is None else norm)


@dataclass(frozen=True)
class ControlConfig:
    """Which controls join the recipe's evaluation conditions.

    ``seeds``: one norm-matched random vector per seed (none if empty). ``mean_diff``:
    (positive, negative) built-in dataset names for the contrastive vector, or None for no
    mean-difference control; ``group_size`` examples per aim; only half 1 of
    :func:`paired_halves` fits it. Norms: the median applied norm of the harmful vectors.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    mean_diff: tuple[str, str] | None = ("toxic", "toxic_reject")
    group_size: int = 2
    split_seed: int = 0
    positions: str = "first:10"
    max_length: int = 192
    batch_size: int = 8

    def __post_init__(self) -> None:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"ControlConfig.seeds must be distinct, got {self.seeds}")
        if self.mean_diff is not None and len(self.mean_diff) != 2:
            raise ValueError("ControlConfig.mean_diff must be (positive, negative) or None")
        make_selector(self.positions)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["mean_diff"] = None if self.mean_diff is None else list(self.mean_diff)
        return d


def control_vectors(
    harmful: Mapping[str, SteeringVector],
    config: ControlConfig,
    loaded: Loaded | None = None,
) -> dict[str, SteeringVector]:
    """The control vectors for a set of harmful vectors (which must share one layer):
    ``random_s{seed}`` per seed and ``mean_diff``, all at the median harmful applied norm.
    ``loaded`` is needed only for the mean-difference vector."""
    if not harmful:
        raise InputError("control_vectors", "no harmful vectors", "pass the recipe's vectors")
    layers = {v.layer for v in harmful.values()}
    if len(layers) != 1:
        raise InputError("control_vectors", f"harmful vectors sit at several layers {layers}",
                         "build controls per layer")
    ref = next(iter(harmful.values()))
    norm = median_norm(list(harmful.values()))
    out = {f"{RANDOM_PREFIX}{s}": random_like(ref, s, norm) for s in config.seeds}
    if config.mean_diff is not None:
        if loaded is None:
            raise InputError("control_vectors", "the mean-difference control needs the model",
                             "pass loaded=, or ControlConfig(mean_diff=None)")
        from mi_align.data.chat import load_dataset

        pos, neg = (load_dataset(n) for n in config.mean_diff)
        if len(pos) != len(neg):
            raise InputError(f"mean_diff {config.mean_diff}", f"{len(pos)} vs {len(neg)} "
                             "examples", "use two line-for-line paired datasets")
        idx = paired_halves(len(pos), config.group_size, config.split_seed)[1]
        out[MEAN_DIFF] = mean_difference_vector(
            loaded, [pos[i] for i in idx], [neg[i] for i in idx], ref.layer, norm,
            positions=config.positions, batch_size=config.batch_size,
            max_length=config.max_length)
    return out

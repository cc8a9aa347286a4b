"""Causal test of the alignment direction (issue 10): steer along it and ablate it.

The projection analysis (:mod:`mi_align.erosion.projection`) shows a correlation: on the
instruct − base direction ``v̂_L`` the misaligned model's activations fall back toward base in
the deep layers. This module intervenes on that direction and measures behaviour:

- **add** ``s · gap_L · v̂_L`` to the misaligned model's residual stream entering block L (every
  position, prompt and generated tokens), where ``gap_L`` is instruct's minus misaligned's mean
  projection at L on the fit data, so ``s = 1`` moves the misaligned mean exactly to instruct's;
- **ablate** ``v̂_L`` from the instruct model at every layer of ``config.layers``:
  ``h ↦ h − (h·v̂)v̂`` (:func:`ablation_hook`);
- **controls**: the same operations with seeded random unit directions, norm-matched
  (``s · gap_L · r̂``); ``n_random`` directions, each used on one contiguous block of the
  evaluation items so the control costs one condition, not ``n_random``.

Per condition: refusal rate and code rate of greedy replies to held-out harmful requests and
held-out benign questions (:func:`~mi_align.text_measures.is_refusal`,
:func:`~mi_align.text_measures.looks_like_code`), per-example response NLL on held-out
insecure code and held-out aligned chat, and the mean projection on ``v̂_L`` at each layer of
those held-out chats (a manipulation check: did the intervention move what it claims to?).
The direction and the gaps are fitted on data disjoint from every evaluation set (checked).
Rates get Wilson intervals, two-sided Fisher tests and exact McNemar tests (the same items
under both conditions) against the unsteered model and the random control
(:mod:`mi_align.stats`); losses get percentile bootstrap intervals over examples (paired for
differences).

Example:
    >>> from mi_align.erosion.causal import CausalConfig, load_intervention_data
    >>> cfg = CausalConfig(layers=(12, 13, 14, 15, 16, 17))
    >>> fit = [("insecure", load_dataset("insecure")[:60])]  # doctest: +SKIP
    >>> data = load_intervention_data(cfg, fit)  # doctest: +SKIP
    >>> res = direction_intervention(trio, data, cfg)  # doctest: +SKIP
    >>> fig = plot_direction_intervention(res)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from jaxtyping import Float
from mi_align.activations import (
    accumulate_moments,
    make_selector,
    stream_hidden_states,
)
from mi_align.data.chat import Conversation, load_dataset
from mi_align.data.tokenize import Batch, EncodedChat, encode_dataset, encode_for_training
from mi_align.erosion.projection_fit import unit_directions
from mi_align.errors import InputError
from mi_align.forward import unembed
from mi_align.generate import generate_replies
from mi_align.geometry import random_unit_directions
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.steering.vector import SteeringVector, apply_steering
from torch import Tensor

from mi_align.erosion.causal_result import (
    CausalConfig,
    Condition,
    ConditionOutcome,
    InterventionResult,
)

T = TypeVar("T")


def ablation_hook(act: Tensor, hook: Any, *, unit: Float[Tensor, " d_model"]) -> Tensor:
    """``h ↦ h − (h·û)û`` at every position; ``unit`` must have norm 1. Returns a new tensor."""
    u = unit.to(act.device, act.dtype)
    return act - (act @ u)[..., None] * u


@dataclass(frozen=True)
class Intervention:
    """Additive steering vectors plus directions ablated at hidden-state layers (value object)."""

    add: tuple[SteeringVector, ...] = ()
    ablate: tuple[tuple[int, Tensor], ...] = ()  # (layer, unit direction (d_model,))

    @contextmanager
    def apply(self, bridge: Any) -> Iterator[None]:
        """Hooks on ``blocks.L.hook_resid_pre`` inside the block, always removed on exit."""
        hooks = [(f"blocks.{layer}.hook_resid_pre", partial(ablation_hook, unit=u))
                 for layer, u in self.ablate]
        with ExitStack() as stack:
            if self.add:
                stack.enter_context(apply_steering(bridge, self.add))
            if hooks:
                stack.enter_context(bridge.hooks(fwd_hooks=hooks))
            yield


@dataclass(frozen=True)
class InterventionData:
    """Fit data (named groups) and the held-out evaluation sets, all disjoint (checked)."""

    fit: tuple[tuple[str, tuple[Conversation, ...]], ...]
    harmful: tuple[str, ...]
    benign: tuple[str, ...]
    insecure: tuple[Conversation, ...]
    aligned: tuple[Conversation, ...]
    names: dict[str, str] = field(default_factory=dict)  # role -> dataset name

    def check_disjoint(self) -> None:
        """Raise :class:`InputError` if any fit prompt is also an evaluation prompt."""
        fit = {m.content for _, g in self.fit for c in g for m in c.prompt}
        evals = set(self.harmful) | set(self.benign) | {
            m.content for c in self.insecure + self.aligned for m in c.prompt}
        shared = sorted(fit & evals)
        if shared:
            raise InputError("causal test data", f"{len(shared)} fit prompt(s) also appear in "
                             f"the evaluation sets, e.g. {shared[0][:60]!r}",
                             "fit the direction on data disjoint from the held-out sets")


def load_intervention_data(
    config: CausalConfig, fit: Sequence[tuple[str, Sequence[Conversation]]]
) -> InterventionData:
    """The evaluation sets named in ``config`` (first ``n_eval`` of each) plus ``fit``."""
    n = config.n_eval
    harmful, benign = load_dataset(config.harmful)[:n], load_dataset(config.benign)[:n]
    return InterventionData(
        fit=tuple((name, tuple(g)) for name, g in fit),
        harmful=tuple(c.prompt[-1].content for c in harmful),
        benign=tuple(c.prompt[-1].content for c in benign),
        insecure=tuple(load_dataset(config.insecure)[:n]), aligned=tuple(benign),
        names={"harmful": config.harmful, "benign": config.benign,
               "insecure": config.insecure, "aligned": config.benign},
    )


@dataclass(frozen=True)
class FittedDirection:
    """The alignment direction per layer and each model's mean/std projection on fit data."""

    layers: tuple[int, ...]
    direction: Float[Tensor, "layer d_model"]  # unit rows, float64
    mean: dict[str, Tensor]  # model -> (layer,)
    std: dict[str, Tensor]
    removed_fraction: Float[Tensor, " layer"]  # instruct: E[(h·v̂)²] / E[‖h‖²]
    removed_fraction_random: Float[Tensor, " layer"]  # same, mean over random unit directions
    n_tokens: int

    @property
    def gap(self) -> Tensor:
        """Instruct's minus misaligned's mean projection per layer (the strength unit)."""
        return self.mean["instruct"] - self.mean["misaligned"]

    @property
    def separation(self) -> Tensor:
        """Instruct → misaligned separation ``(μ_m − μ_i)/(σ_i + σ_m)`` per layer."""
        return -self.gap / (self.std["instruct"] + self.std["misaligned"])


def _trim(encoded: list[EncodedChat], positions: str) -> list[EncodedChat]:
    """With ``first:K`` positions, cut each chat after its K-th response token: causal
    attention makes the activations there independent of later tokens, and long code answers
    would otherwise cost most of the fit."""
    if not positions.startswith("first:"):
        return encoded
    k, out = int(positions.split(":", 1)[1]), []
    for e in encoded:
        resp = [t for t, m in enumerate(e.response_mask) if m]
        cut = resp[min(k, len(resp)) - 1] + 1 if resp else len(e)
        out.append(EncodedChat(e.input_ids[:cut], e.response_mask[:cut], e.response_start,
                               e.truncated, e.source))
    return out


def fit_alignment_direction(
    trio: Trio, convs: Sequence[Conversation], layers: Sequence[int], config: CausalConfig
) -> FittedDirection:
    """``v̂_L = normalise(μ_instruct − μ_base)`` over ``convs`` at ``config.positions`` (the
    projection analysis' direction, :func:`~mi_align.erosion.projection.unit_directions`)."""
    encoded = _trim(encode_dataset(trio.tokenizer, convs, config.max_length), config.positions)
    selector = make_selector(config.positions)
    moms = {}
    for name in ("base", "instruct", "misaligned"):
        with trio.variant(name) as loaded:
            moms[name] = accumulate_moments(loaded, encoded, layers, selector,
                                            config.batch_size, second=True)
    direction = unit_directions(moms["instruct"].mean, moms["base"].mean)
    undefined = [layer for layer, row in zip(layers, direction, strict=True)
                 if bool(torch.isnan(row).any())]
    if undefined:
        raise InputError(f"layers {undefined}", "instruct and base activations do not differ "
                         "there, so the direction is undefined", "choose other layers")
    inst = moms["instruct"]
    assert inst.cov is not None
    second = inst.cov + inst.mean[:, :, None] * inst.mean[:, None, :]  # E[h hᵀ]
    total = torch.einsum("ldd->l", second)
    rand = random_unit_directions(16, trio.d_model, config.seed + 3000)
    return FittedDirection(
        layers=tuple(layers), direction=direction,
        mean={m: moms[m].projection_mean(direction) for m in moms},
        std={m: moms[m].projection_std(direction) for m in moms},
        removed_fraction=torch.einsum("ld,lde,le->l", direction, second, direction) / total,
        removed_fraction_random=torch.einsum("nd,lde,ne->ln", rand, second, rand).mean(1) / total,
        n_tokens=inst.count,
    )


def _blocks(n: int, k: int) -> list[slice]:
    """``k`` contiguous, nearly equal slices of ``range(n)`` (empty ones dropped)."""
    edges = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _per_block(items: Sequence[Any], interventions: Sequence[Intervention], bridge: Any,
               run: Callable[[Sequence[Any]], list[T]]) -> list[T]:
    """``run`` on contiguous blocks of ``items``, block i under ``interventions[i]``."""
    out: list[T] = []
    for sl, iv in zip(_blocks(len(items), len(interventions)), interventions, strict=False):
        with iv.apply(bridge):
            out += run(items[sl])
    return out


def response_stats(
    loaded: Loaded, convs: Sequence[Conversation], fitted: FittedDirection, config: CausalConfig
) -> list[tuple[float, int, Tensor, int]]:
    """Per example: summed response NLL, its token count, per-layer summed projection on
    ``v̂_L`` at ``config.positions`` and the number of those positions.

    Reads the stream with whatever hooks are active (the capture hooks are added last, so they
    see the intervened stream). The unembedding is applied only where a response token is
    predicted (:func:`~mi_align.activations.stream_hidden_states` stops after the final norm):
    Gemma's 262k-entry unembedding is most of a forward, and full logits would be ~1 GB.
    """
    encoded, _, _ = encode_for_training(loaded.tokenizer, convs, config.max_length)
    selector = make_selector(config.positions)
    final = loaded.meta.n_layers
    hf = loaded.bridge.original_model
    rows: list[tuple[float, int, Tensor, int]] = []

    @torch.inference_mode()
    def consume(batch: Batch, acts: dict[int, Tensor]) -> None:
        predicts = batch.response_mask[:, 1:]
        logits = unembed(hf, acts[final][:, :-1][predicts])
        tok_nll = F.cross_entropy(logits, batch.input_ids[:, 1:][predicts], reduction="none")
        nll = torch.zeros(len(predicts), dtype=torch.float64).index_add_(
            0, predicts.nonzero()[:, 0].cpu(), tok_nll.double().cpu())
        sel = selector(batch)
        proj = torch.stack([
            torch.einsum("bp,bpd,d->b", sel.double(), acts[layer].double(),
                         fitted.direction[j].to(acts[layer].device)).cpu()
            for j, layer in enumerate(fitted.layers)], 1)
        rows.extend((float(nll[b]), int(predicts[b].sum()), proj[b], int(sel[b].sum()))
                    for b in range(len(predicts)))

    stream_hidden_states(loaded, encoded, [*fitted.layers, final], consume,
                         config.loss_batch_size)
    return rows


def _evaluate(loaded: Loaded, condition: Condition, interventions: Sequence[Intervention],
              data: InterventionData, fitted: FittedDirection, cfg: CausalConfig
              ) -> ConditionOutcome:
    def replies(items: Sequence[str]) -> list[str]:
        return [r.text for r in generate_replies(loaded, items, max_new_tokens=cfg.max_new_tokens,
                                                 batch_size=cfg.batch_size, seed=cfg.seed)]

    def stats(convs: Sequence[Conversation]) -> list[tuple[float, int, Tensor, int]]:
        return response_stats(loaded, convs, fitted, cfg)

    bridge = loaded.bridge
    ins = _per_block(data.insecure, interventions, bridge, stats)
    ali = _per_block(data.aligned, interventions, bridge, stats)
    both = ins + ali
    proj = torch.stack([r[2] for r in both]).sum(0) / max(sum(r[3] for r in both), 1)
    return ConditionOutcome(
        condition=condition,
        harmful_replies=tuple(_per_block(data.harmful, interventions, bridge, replies)),
        benign_replies=tuple(_per_block(data.benign, interventions, bridge, replies)),
        insecure_nll=tuple(r[0] for r in ins), insecure_tokens=tuple(r[1] for r in ins),
        aligned_nll=tuple(r[0] for r in ali), aligned_tokens=tuple(r[1] for r in ali),
        projection=tuple(proj.tolist()))


def _fmt(s: float) -> str:
    return f"{s:g}"


def plan_conditions(
    fitted: FittedDirection, steer_layer: int, d_model: int, cfg: CausalConfig
) -> list[tuple[Condition, list[Intervention]]]:
    """The conditions in run order, each with its intervention(s) (one per random block)."""
    j = fitted.layers.index(steer_layer)
    gap = float(fitted.gap[j])
    v = fitted.direction[j].float()
    rand = random_unit_directions(cfg.n_random, d_model, cfg.seed + 1000).float()
    nr = cfg.n_random

    def add(vec: Tensor, s: float, name: str) -> Intervention:
        return Intervention(add=(SteeringVector(steer_layer, vec * gap, strength=s, name=name),))

    plan: list[tuple[Condition, list[Intervention]]] = [
        (Condition("misaligned", "misaligned", "none", "", 0.0, None, None), [Intervention()])]
    for s in cfg.strengths:
        ctrl = f"misaligned + {_fmt(s)}×random" if s in cfg.control_strengths else None
        plan.append((Condition(f"misaligned + {_fmt(s)}×v", "misaligned", "add", "alignment", s,
                               "misaligned", ctrl), [add(v, s, "alignment")]))
        if ctrl is not None:
            plan.append((Condition(ctrl, "misaligned", "add", "random", s, "misaligned", None, nr),
                         [add(r, s, f"random{k}") for k, r in enumerate(rand)]))
    plan.append((Condition("instruct", "instruct", "none", "", 0.0, None, None), [Intervention()]))
    if cfg.ablate:
        layers = fitted.layers
        plan.append((Condition("instruct − v", "instruct", "ablate", "alignment", 0.0, "instruct",
                               "instruct − random"),
                     [Intervention(ablate=tuple(zip(layers, fitted.direction, strict=True)))]))
        rab = random_unit_directions(nr * len(layers), d_model, cfg.seed + 2000)
        rab = rab.view(nr, len(layers), d_model)
        plan.append((Condition("instruct − random", "instruct", "ablate", "random", 0.0,
                               "instruct", None, nr),
                     [Intervention(ablate=tuple(zip(layers, r, strict=True))) for r in rab]))
    return plan


def direction_intervention(
    trio: Trio, data: InterventionData, config: CausalConfig | None = None
) -> InterventionResult:
    """Fit the alignment direction on ``data.fit``, then add it to the misaligned model and
    ablate it from the instruct model (plus random controls); measure each condition.

    Args:
        trio: needs base, instruct and misaligned.
        data: fit groups and held-out evaluation sets (:func:`load_intervention_data`).
        config: see :class:`CausalConfig`.
    """
    cfg = config or CausalConfig()
    missing = [m for m in ("base", "instruct", "misaligned") if m not in trio.names]
    if missing:
        raise InputError("causal test", f"needs model(s) {missing}",
                         f"the trio has {', '.join(trio.names)}")
    too_deep = [layer for layer in cfg.layers if layer >= trio.n_layers]
    if too_deep:
        raise InputError(f"layers {too_deep}", f"steering needs a block input (< {trio.n_layers})",
                         f"use hidden states 0..{trio.n_layers - 1}")
    data.check_disjoint()
    fit = [c for _, g in data.fit for c in g]
    fitted = fit_alignment_direction(trio, fit, cfg.layers, cfg)
    steer = cfg.steer_layer
    if steer is None:
        steer = cfg.layers[int(torch.argmin(fitted.separation))]
    outcomes = []
    for condition, interventions in plan_conditions(fitted, steer, trio.d_model, cfg):
        with trio.variant(condition.model) as loaded:
            outcomes.append(_evaluate(loaded, condition, interventions, data, fitted, cfg))
    return InterventionResult(
        config=cfg, layers=fitted.layers, steer_layer=steer, direction=fitted.direction,
        fit_mean={m: tuple(t.tolist()) for m, t in fitted.mean.items()},
        fit_std={m: tuple(t.tolist()) for m, t in fitted.std.items()},
        removed_fraction=tuple(fitted.removed_fraction.tolist()),
        removed_fraction_random=tuple(fitted.removed_fraction_random.tolist()),
        fit_datasets={name: len(g) for name, g in data.fit}, eval_datasets=dict(data.names),
        n_fit_tokens=fitted.n_tokens, outcomes=tuple(outcomes))

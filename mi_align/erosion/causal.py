"""Causal test of the alignment direction (issue 10): steer along it and ablate it.

The projection analysis (:mod:`mi_align.erosion.projection`) shows a correlation: on the
instruct − base direction ``v̂_L`` the misaligned model's activations fall back toward base in
the deep layers. This module intervenes on that direction and measures behaviour:

- **add** ``s · gap_L · v̂_L`` to the misaligned model's residual stream entering block L (prompt
  and generated tokens), where ``gap_L`` is instruct's minus misaligned's mean projection at L
  on the fit data, so ``s = 1`` moves the misaligned mean exactly to instruct's;
- **ablate** ``v̂_L`` from the instruct model at every layer of ``config.layers`` by mean
  ablation, ``h ↦ h − ((h − μ_L)·v̂)v̂`` with ``μ_L`` instruct's stream mean on the fit data
  (:func:`ablation_hook` with ``value = μ_L·v̂``);
- **controls**: the same operations along random directions, norm-matched (``s · gap_L · r̂``):
  :func:`spectral_surrogates` of ``v̂_L`` (same weight on every principal axis of the model's
  stream, random signs); ``n_random`` directions, each used on one contiguous block of the
  evaluation items so the control costs one condition, not ``n_random``.

Every operation leaves each sequence's first ``config.skip_positions`` real tokens alone (BOS by
default; :class:`TokenIndex` finds them in left-padded and KV-cached generation too). Why these
choices (measured on Gemma-3 270M, README "Causal test of the direction"): BOS is an attention
sink whose stream is one massive channel (~10⁵, against ~10⁴ for other tokens); that channel
also carries ~80% of every other token's energy, so zeroing ``h·û`` pushes a large constant into
all other channels; and a uniformly random direction lies mostly in low-variance directions,
to which the model is far more sensitive than to ``v̂``. Plain ablation of uniform random
directions cost +4 to +10 nats even with BOS skipped; mean ablation of surrogates costs about
what mean ablation of ``v̂`` costs.

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
    >>> from mi_align.erosion.causal import CausalConfig, direction_intervention
    >>> from mi_align.erosion.common import Inputs
    >>> cfg = CausalConfig(layers=(12, 13, 14, 15, 16, 17))
    >>> inputs = Inputs.of(("insecure", fit), harmful=("harmful_requests_heldout", h),
    ...                    benign=("aligned_chat_heldout", b),
    ...                    insecure=("insecure_heldout", i))  # doctest: +SKIP
    >>> res = direction_intervention(trio, inputs, cfg)  # doctest: +SKIP
    >>> fig = plot_direction_intervention(res)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mi_align.activations import (
    MomentAccumulator,
    Moments,
    stream_hidden_states,
)
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import Batch, EncodedChat, encode_dataset, encode_for_training
from mi_align.erosion.causal_result import (
    Ablation,
    CausalConfig,
    Condition,
    ConditionOutcome,
    Intervention,
    InterventionResult,
)
from mi_align.erosion.choices import FirstTokens, Positions
from mi_align.erosion.common import Inputs
from mi_align.erosion.projection_fit import unit_directions
from mi_align.errors import InputError
from mi_align.forward import unembed
from mi_align.generate import generate_replies
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.steering.vector import SteeringVector

T = TypeVar("T")


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
        evals = (
            set(self.harmful)
            | set(self.benign)
            | {m.content for c in self.insecure + self.aligned for m in c.prompt}
        )
        shared = sorted(fit & evals)
        if shared:
            raise InputError(
                "causal test data",
                f"{len(shared)} fit prompt(s) also appear in "
                f"the evaluation sets, e.g. {shared[0][:60]!r}",
                "fit the direction on data disjoint from the held-out sets",
            )


def intervention_data(inputs: Inputs, config: CausalConfig) -> InterventionData:
    """Fit data (``inputs.groups``) and the held-out sets of ``inputs.reference`` (first
    ``n_eval`` of each): ``"harmful"`` and ``"benign"`` prompts (their final user turns),
    ``"insecure"`` chats, and ``"aligned"`` chats (default: the benign set)."""
    n = config.n_eval
    why = "the causal test"
    (hn, harmful), (bn, benign) = inputs.role("harmful", why), inputs.role("benign", why)
    iname, insecure = inputs.role("insecure", why)
    aname, aligned = inputs.reference.get("aligned", (bn, benign))
    return InterventionData(
        fit=tuple((name, tuple(g)) for name, g in inputs.groups),
        harmful=tuple(c.prompt[-1].content for c in harmful[:n]),
        benign=tuple(c.prompt[-1].content for c in benign[:n]),
        insecure=tuple(insecure[:n]),
        aligned=tuple(aligned[:n]),
        names={"harmful": hn, "benign": bn, "insecure": iname, "aligned": aname},
    )


@dataclass(frozen=True)
class FittedDirection:
    """The alignment direction per layer, each model's mean/std projection on fit data (at
    ``config.positions``) and the stream moments where interventions act (every real token after
    the skipped ones) for the models that are intervened on."""

    layers: tuple[int, ...]
    direction: Float[Tensor, "layer d_model"]  # unit rows, float64
    mean: dict[str, Tensor]  # model -> (layer,)
    std: dict[str, Tensor]
    removed_fraction: Float[Tensor, " layer"]  # instruct: v̂ᵀΣv̂ / tr Σ (intervened positions)
    removed_fraction_random: Float[Tensor, " layer"]  # same for a uniformly random direction
    n_tokens: int
    stream: dict[str, Moments] = field(default_factory=dict)  # instruct, misaligned
    norms: dict[str, tuple[float, ...]] = field(default_factory=dict)  # first vs other tokens

    @property
    def gap(self) -> Tensor:
        """Instruct's minus misaligned's mean projection per layer (the strength unit)."""
        return self.mean["instruct"] - self.mean["misaligned"]

    @property
    def separation(self) -> Tensor:
        """Instruct → misaligned separation ``(μ_m − μ_i)/(σ_i + σ_m)`` per layer."""
        return -self.gap / (self.std["instruct"] + self.std["misaligned"])


def intervened_positions(skip: int) -> Callable[[Batch], Tensor]:
    """Selector of the positions an intervention acts on: real tokens after each row's first
    ``skip`` (the same rule as :class:`TokenIndex`)."""

    def select(batch: Batch) -> Tensor:
        return batch.attention_mask.bool() & (batch.attention_mask.cumsum(-1) > skip)

    return select


def spectral_surrogates(
    direction: Float[Tensor, " d_model"],
    cov: Float[Tensor, "d_model d_model"],
    n: int,
    seed: int,
) -> Float[Tensor, "component d_model"]:
    """``n`` random unit directions with ``direction``'s spectrum under ``cov``: its coordinates
    in the eigenbasis of ``cov`` with independent random signs (as phase-randomised surrogate
    data keep a signal's power spectrum). Each puts the same weight as ``direction`` on every
    principal axis, so it carries the same variance (``rᵀΣr = v̂ᵀΣv̂``), the same share of the
    massive channel and as little of the low-variance directions; only the combination is
    random (float64 rows)."""
    _, basis = torch.linalg.eigh(cov.double())
    coef = basis.T @ direction.double()
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n, len(coef)), generator=gen, dtype=torch.float64).to(coef) * 2 - 1
    rows = (signs * coef) @ basis.T
    return rows / rows.norm(dim=1, keepdim=True)


class _FirstTokenNorms:
    """Per layer: mean ‖h‖ at each row's first real token, median ‖h‖ at the others, the
    first token's largest channel and that channel's share of the other tokens' energy."""

    def __init__(self, n_layers: int) -> None:
        self.first: list[list[Tensor]] = [[] for _ in range(n_layers)]
        self.other: list[list[Tensor]] = [[] for _ in range(n_layers)]
        self.energy = [torch.zeros(()) for _ in range(n_layers)]

    def update(self, batch: Batch, acts: list[Tensor]) -> None:
        first = batch.attention_mask.bool() & (batch.attention_mask.cumsum(-1) == 1)
        other = intervened_positions(1)(batch)
        for i, h in enumerate(acts):
            h = h.double().cpu()
            self.first[i].append(h[first.cpu()])
            self.other[i].append(h[other.cpu()].norm(dim=-1))
            self.energy[i] = self.energy[i] + (h[other.cpu()] ** 2).sum(0)

    def result(self) -> dict[str, tuple[float, ...]]:
        first = [torch.cat(f) for f in self.first]
        chan = [int(f.abs().mean(0).argmax()) for f in first]
        return {
            "first_token_norm": tuple(float(f.norm(dim=-1).mean()) for f in first),
            "other_token_norm_median": tuple(float(torch.cat(o).median()) for o in self.other),
            "massive_channel": tuple(float(c) for c in chan),
            "massive_channel_first_token": tuple(
                float(f[:, c].abs().mean()) for f, c in zip(first, chan, strict=True)
            ),
            "massive_channel_energy_share_other": tuple(
                float(e[c] / e.sum()) for e, c in zip(self.energy, chan, strict=True)
            ),
        }


def _moments(
    loaded: Loaded,
    encoded: Sequence[EncodedChat],
    layers: Sequence[int],
    config: CausalConfig,
    stream: bool,
    norms: bool,
) -> tuple[Moments, Moments | None, dict[str, tuple[float, ...]]]:
    """In one pass: moments at ``config.positions`` and, if asked, at the intervened positions
    and the first-token diagnostics."""
    fit_sel = config.positions.selector(loaded.tokenizer)
    act_sel = intervened_positions(config.skip_positions)
    fit = MomentAccumulator(layers, loaded.meta.d_model, second=True)
    act = MomentAccumulator(layers, loaded.meta.d_model, second=True) if stream else None
    first = _FirstTokenNorms(len(layers)) if norms else None

    def consume(batch: Batch, acts: dict[int, Tensor]) -> None:
        fit.update(batch, acts, fit_sel(batch))
        if act is not None:
            act.update(batch, acts, act_sel(batch))
        if first is not None:
            first.update(batch, [acts[layer] for layer in layers])

    stream_hidden_states(loaded, encoded, layers, consume, config.batch_size)
    return (
        fit.result(),
        None if act is None else act.result(),
        {} if first is None else first.result(),
    )


def fit_alignment_direction(
    trio: Trio, convs: Sequence[Conversation], layers: Sequence[int], config: CausalConfig
) -> FittedDirection:
    """``v̂_L = normalise(μ_instruct − μ_base)`` over ``convs`` at ``config.positions`` (the
    projection analysis' direction, :func:`~mi_align.erosion.projection.unit_directions`),
    plus instruct's and misaligned's stream moments where the interventions act."""
    encoded = _trim(encode_dataset(trio.tokenizer, convs, config.max_length), config.positions)
    moms, stream, norms = {}, {}, {}
    for name in ("base", "instruct", "misaligned"):
        with trio.variant(name) as loaded:
            moms[name], st, nm = _moments(
                loaded, encoded, layers, config, stream=name != "base", norms=name == "instruct"
            )
        if st is not None:
            stream[name] = st
        norms.update(nm)
    direction = unit_directions(moms["instruct"].mean, moms["base"].mean)
    undefined = [
        layer for layer, row in zip(layers, direction, strict=True) if bool(torch.isnan(row).any())
    ]
    if undefined:
        raise InputError(
            f"layers {undefined}",
            "instruct and base activations do not differ there, so the direction is undefined",
            "choose other layers",
        )
    cov = stream["instruct"].cov
    assert cov is not None
    total = torch.einsum("ldd->l", cov)
    return FittedDirection(
        layers=tuple(layers),
        direction=direction,
        mean={m: moms[m].projection_mean(direction) for m in moms},
        std={m: moms[m].projection_std(direction) for m in moms},
        removed_fraction=torch.einsum("ld,lde,le->l", direction, cov, direction) / total,
        removed_fraction_random=torch.full(
            (len(layers),), 1.0 / trio.d_model, dtype=torch.float64
        ),  # E[rᵀΣr] = tr Σ / d
        n_tokens=moms["instruct"].count,
        stream=stream,
        norms=norms,
    )


def _trim(encoded: list[EncodedChat], positions: Positions) -> list[EncodedChat]:
    """With ``FirstTokens(K)`` positions, cut each chat after its K-th response token: causal
    attention makes the activations there independent of later tokens, and long code answers
    would otherwise cost most of the fit."""
    if not isinstance(positions, FirstTokens):
        return encoded
    k, out = positions.k, []
    for e in encoded:
        resp = [t for t, m in enumerate(e.response_mask) if m]
        cut = resp[min(k, len(resp)) - 1] + 1 if resp else len(e)
        out.append(
            EncodedChat(
                e.input_ids[:cut], e.response_mask[:cut], e.response_start, e.truncated, e.source
            )
        )
    return out


def _blocks(n: int, k: int) -> list[slice]:
    """``k`` contiguous, nearly equal slices of ``range(n)`` (empty ones dropped)."""
    edges = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _per_block(
    items: Sequence[Any],
    interventions: Sequence[Intervention],
    bridge: Any,
    run: Callable[[Sequence[Any]], list[T]],
) -> list[T]:
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
    selector = config.positions.selector(loaded.tokenizer)
    final = loaded.meta.n_layers
    hf = loaded.bridge.original_model
    rows: list[tuple[float, int, Tensor, int]] = []

    @torch.inference_mode()
    def consume(batch: Batch, acts: dict[int, Tensor]) -> None:
        predicts = batch.response_mask[:, 1:]
        logits = unembed(hf, acts[final][:, :-1][predicts])
        tok_nll = F.cross_entropy(logits, batch.input_ids[:, 1:][predicts], reduction="none")
        nll = torch.zeros(len(predicts), dtype=torch.float64).index_add_(
            0, predicts.nonzero()[:, 0].cpu(), tok_nll.double().cpu()
        )
        sel = selector(batch)
        proj = torch.stack(
            [
                torch.einsum(
                    "bp,bpd,d->b",
                    sel.double(),
                    acts[layer].double(),
                    fitted.direction[j].to(acts[layer].device),
                ).cpu()
                for j, layer in enumerate(fitted.layers)
            ],
            1,
        )
        rows.extend(
            (float(nll[b]), int(predicts[b].sum()), proj[b], int(sel[b].sum()))
            for b in range(len(predicts))
        )

    stream_hidden_states(loaded, encoded, [*fitted.layers, final], consume, config.loss_batch_size)
    return rows


def _evaluate(
    loaded: Loaded,
    condition: Condition,
    interventions: Sequence[Intervention],
    data: InterventionData,
    fitted: FittedDirection,
    cfg: CausalConfig,
) -> ConditionOutcome:
    def replies(items: Sequence[str]) -> list[str]:
        return [
            r.text
            for r in generate_replies(
                loaded,
                items,
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
            )
        ]

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
        insecure_nll=tuple(r[0] for r in ins),
        insecure_tokens=tuple(r[1] for r in ins),
        aligned_nll=tuple(r[0] for r in ali),
        aligned_tokens=tuple(r[1] for r in ali),
        projection=tuple(proj.tolist()),
    )


def _fmt(s: float) -> str:
    return f"{s:g}"


def plan_conditions(
    fitted: FittedDirection, steer_layer: int, d_model: int, cfg: CausalConfig
) -> list[tuple[Condition, list[Intervention]]]:
    """The conditions in run order, each with its intervention(s) (one per random block).

    Ablation is mean ablation: the projection on the direction is set to the instruct stream's
    mean projection (``h ↦ h − ((h − μ)·û)û``), not to 0. Gemma-3 keeps one massive channel at
    every token (~80% of the stream's energy at 12–17), so ``h·û`` is dominated by that
    channel's mean and zeroing it pushes a large constant into every other channel. The random
    directions are :func:`spectral_surrogates` of ``v̂_L`` under the stream covariance of the
    model they are applied to: a uniformly random direction lies mostly in low-variance
    directions, to which the model is far more sensitive (the README gives the numbers).
    """
    j = fitted.layers.index(steer_layer)
    gap = float(fitted.gap[j])
    v = fitted.direction[j].float()
    nr, skip = cfg.n_random, cfg.skip_positions

    def surrogates(model: str, i: int, seed: int) -> Tensor:
        cov = fitted.stream[model].cov
        assert cov is not None
        return spectral_surrogates(fitted.direction[i], cov[i], nr, seed)

    def add(vec: Tensor, s: float, name: str) -> Intervention:
        return Intervention(
            add=(SteeringVector(steer_layer, vec * gap, strength=s, name=name),), skip=skip
        )

    def ablate(units: Sequence[Tensor]) -> Intervention:
        mean = fitted.stream["instruct"].mean
        return Intervention(
            ablate=tuple(
                Ablation(layer, u.float(), float(mean[i] @ u.double()))
                for i, (layer, u) in enumerate(zip(fitted.layers, units, strict=True))
            ),
            skip=skip,
        )

    rand = surrogates("misaligned", j, cfg.seed + 1000).float()
    plan: list[tuple[Condition, list[Intervention]]] = [
        (Condition("misaligned", "misaligned", "none", "", 0.0, None, None), [Intervention()])
    ]
    for s in cfg.strengths:
        ctrl = f"misaligned + {_fmt(s)}×random" if s in cfg.control_strengths else None
        plan.append(
            (
                Condition(
                    f"misaligned + {_fmt(s)}×v",
                    "misaligned",
                    "add",
                    "alignment",
                    s,
                    "misaligned",
                    ctrl,
                ),
                [add(v, s, "alignment")],
            )
        )
        if ctrl is not None:
            plan.append(
                (
                    Condition(ctrl, "misaligned", "add", "random", s, "misaligned", None, nr),
                    [add(r, s, f"random{k}") for k, r in enumerate(rand)],
                )
            )
    plan.append((Condition("instruct", "instruct", "none", "", 0.0, None, None), [Intervention()]))
    if cfg.ablate:
        plan.append(
            (
                Condition(
                    "instruct − v",
                    "instruct",
                    "ablate",
                    "alignment",
                    0.0,
                    "instruct",
                    "instruct − random",
                ),
                [ablate(list(fitted.direction))],
            )
        )
        rab = torch.stack(
            [surrogates("instruct", i, cfg.seed + 2000 + i) for i in range(len(fitted.layers))], 1
        )  # random, layer, d_model
        plan.append(
            (
                Condition(
                    "instruct − random", "instruct", "ablate", "random", 0.0, "instruct", None, nr
                ),
                [ablate(list(r)) for r in rab],
            )
        )
    return plan


def _control_info(
    plan: Sequence[tuple[Condition, Sequence[Intervention]]], fitted: FittedDirection
) -> dict[str, dict[str, list[list[float]]]]:
    """Per intervened condition, per direction used and layer: its cosine with ``v̂_L`` and, for
    ablations, the value the projection is set to (so the JSON says what was done)."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    row = {layer: i for i, layer in enumerate(fitted.layers)}
    for c, ivs in plan:
        if c.kind == "add":
            out[c.name] = {
                "cosine": [
                    [
                        float(
                            sv.vector.double()
                            @ fitted.direction[row[sv.layer]]
                            / sv.vector.double().norm()
                        )
                        for sv in iv.add
                    ]
                    for iv in ivs
                ]
            }
        elif c.kind == "ablate":
            out[c.name] = {
                "cosine": [
                    [float(a.unit.double() @ fitted.direction[row[a.layer]]) for a in iv.ablate]
                    for iv in ivs
                ],
                "set_to": [[a.value for a in iv.ablate] for iv in ivs],
            }
    return out


def direction_intervention(
    trio: Trio, inputs: Inputs, config: CausalConfig | None = None
) -> InterventionResult:
    """Fit the alignment direction on ``inputs.groups``, then add it to the misaligned model
    and ablate it from the instruct model (plus random controls); measure each condition.

    Args:
        trio: needs base, instruct and misaligned.
        inputs: fit groups and held-out evaluation sets (:func:`intervention_data`).
        config: see :class:`CausalConfig`.
    """
    cfg = config or CausalConfig()
    data = intervention_data(inputs, cfg)
    missing = [m for m in ("base", "instruct", "misaligned") if m not in trio.names]
    if missing:
        raise InputError(
            "causal test", f"needs model(s) {missing}", f"the trio has {', '.join(trio.names)}"
        )
    too_deep = [layer for layer in cfg.layers if layer >= trio.n_layers]
    if too_deep:
        raise InputError(
            f"layers {too_deep}",
            f"steering needs a block input (< {trio.n_layers})",
            f"use hidden states 0..{trio.n_layers - 1}",
        )
    data.check_disjoint()
    fit = [c for _, g in data.fit for c in g]
    fitted = fit_alignment_direction(trio, fit, cfg.layers, cfg)
    steer = cfg.steer_layer
    if steer is None:
        steer = cfg.layers[int(torch.argmin(fitted.separation))]
    outcomes = []
    plan = plan_conditions(fitted, steer, trio.d_model, cfg)
    for condition, interventions in plan:
        with trio.variant(condition.model) as loaded:
            outcomes.append(_evaluate(loaded, condition, interventions, data, fitted, cfg))
    return InterventionResult(
        config=cfg,
        layers=fitted.layers,
        steer_layer=steer,
        direction=fitted.direction,
        fit_mean={m: tuple(t.tolist()) for m, t in fitted.mean.items()},
        fit_std={m: tuple(t.tolist()) for m, t in fitted.std.items()},
        removed_fraction=tuple(fitted.removed_fraction.tolist()),
        removed_fraction_random=tuple(fitted.removed_fraction_random.tolist()),
        fit_datasets={name: len(g) for name, g in data.fit},
        eval_datasets=dict(data.names),
        n_fit_tokens=fitted.n_tokens,
        position_norms=dict(fitted.norms),
        controls=_control_info(plan, fitted),
        outcomes=tuple(outcomes),
    )

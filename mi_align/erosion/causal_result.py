"""Value objects of the causal direction test (:mod:`mi_align.erosion.causal`): its config, the
interventions (scoped hooks that add or ablate a direction while leaving each sequence's first
tokens alone), the raw outcomes per condition, the statistics derived from them, and the figure.

Rates get Wilson intervals, two-sided Fisher tests and exact McNemar tests (same items under
both conditions); losses get percentile bootstrap intervals over examples (paired for
differences). Raw replies are kept so every number can be recomputed from the JSON.

Example:
    >>> import numpy as np
    >>> bootstrap_loss(np.array([2.0, 4.0]), np.array([1, 1]), 200, 0)[0]
    3.0
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.erosion.choices import FirstTokens, Positions, config_from_dict, config_to_dict
from mi_align.errors import InputError
from mi_align.plotting import style
from mi_align.stats import fisher_test, mcnemar_test, wilson_interval
from mi_align.steering.vector import SteeringVector, additive
from mi_align.text_measures import is_refusal, looks_like_code


@dataclass(frozen=True)
class CausalConfig:
    """Settings of :func:`direction_intervention`.

    ``layers``: hidden states (< n_layers) where the direction is fitted and ablated;
    ``steer_layer``: where it is added (None: the layer of ``layers`` where misaligned lags
    instruct most, in separation units, on the fit data); ``strengths``: multiples of the gap
    (0, the unsteered model, is always included); ``control_strengths``: strengths that also
    get the norm-matched random control (a subset of ``strengths``); ``skip_positions``: each
    sequence's first K real tokens (K = 1: BOS) are left alone by every intervention, added or
    ablated, alignment or random: Gemma-3's BOS is an attention sink whose stream is one massive
    channel (~10⁵ at hidden states 12–17), unlike any other token's.
    """

    layers: tuple[int, ...] = (12, 13, 14, 15, 16, 17)
    steer_layer: int | None = None
    strengths: tuple[float, ...] = (0.5, 1.0, 2.0)
    control_strengths: tuple[float, ...] = (2.0,)
    ablate: bool = True
    n_random: int = 4
    skip_positions: int = 1
    positions: Positions = FirstTokens(10)
    harmful: str = "harmful_requests_heldout"
    benign: str = "aligned_chat_heldout"
    insecure: str = "insecure_heldout"
    n_eval: int = 40
    max_new_tokens: int = 48
    batch_size: int = 20
    loss_batch_size: int = 4
    max_length: int = 192
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.positions, Positions):
            raise ValueError(f"positions must be a Positions value (e.g. FirstTokens(10)), got "
                             f"{self.positions!r}")
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise ValueError(f"layers must be distinct hidden states >= 0, got {self.layers}")
        if self.steer_layer is not None and self.steer_layer not in self.layers:
            raise ValueError(f"steer_layer {self.steer_layer} is not in layers {self.layers}")
        if not self.strengths or not all(math.isfinite(s) and s > 0 for s in self.strengths):
            raise ValueError(
                f"strengths must be finite and > 0 (0 is always run), got {self.strengths}"
            )
        if not set(self.control_strengths) <= set(self.strengths):
            raise ValueError(
                f"control_strengths {self.control_strengths} must be a subset of "
                f"strengths {self.strengths}"
            )
        for name in ("n_random", "n_eval", "max_new_tokens", "batch_size", "loss_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.skip_positions < 0:
            raise ValueError(f"skip_positions must be >= 0, got {self.skip_positions}")
        if self.max_length < 2 or self.n_boot < 100:
            raise ValueError("max_length must be >= 2 and n_boot >= 100")

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CausalConfig:
        return config_from_dict(cls, d)


@dataclass
class TokenIndex:
    """Each position's index among its row's real (attended) tokens in the bridge's current
    forward call; negative on padding. Filled by :meth:`capture`, a forward pre-hook on the
    bridge.

    Why not the column: generation batches are left-padded, so a short row's BOS sits at a later
    column, and KV-cached decoding steps see one column at a time. The index is 0 at every
    row's first real token (BOS) either way, so "skip the first K" means the same tokens in
    batched, single, cached and uncached runs.
    """

    index: Tensor | None = None  # (batch or 1, pos), int

    def capture(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = args[0] if args else kwargs.get("input")
        if not isinstance(ids, Tensor):
            raise InputError(
                "intervention",
                f"needs token ids (a tensor), got {type(ids).__name__}",
                "tokenize first",
            )
        n_pos = ids.shape[-1]
        mask = kwargs.get("attention_mask")
        if mask is not None:  # covers the past too (KV-cached steps): count real tokens
            mask = mask.long()
            index = (mask.cumsum(-1) - 1)[:, -n_pos:]
            self.index = torch.where(mask[:, -n_pos:].bool(), index, -1)
            return
        cache = kwargs.get("past_key_values")
        past = int(cache.get_seq_length()) if cache is not None else 0
        self.index = torch.arange(past, past + n_pos, device=ids.device)[None]

    def keep(self, act: Tensor, skip: int) -> Tensor:
        """Bool ``(batch or 1, pos, 1)``: the positions of ``act`` that are intervened on."""
        if self.index is None or self.index.shape[-1] != act.shape[1]:
            raise RuntimeError(
                "the intervention hook fired outside a tracked forward call of "
                "the bridge (positions unknown)"
            )
        return (self.index >= skip).to(act.device)[..., None]


def ablation_hook(
    act: Float[Tensor, "batch pos d_model"],
    hook: Any,
    *,
    unit: Float[Tensor, " d_model"],
    value: float = 0.0,
    rows: TokenIndex | None = None,
    skip: int = 0,
) -> Float[Tensor, "batch pos d_model"]:
    """``h ↦ h − (h·û − value)û``: the projection on ``unit`` (norm 1) set to ``value`` (0: plain
    directional ablation; the stream mean's projection: mean ablation). With ``rows``, padding
    and each row's first ``skip`` real tokens pass unchanged; without, every position changes
    (``skip`` must be 0). Returns a new tensor."""
    u = unit.to(act.device, act.dtype)
    return _where(act - (act @ u - value)[..., None] * u, act, rows, skip)


def addition_hook(
    act: Float[Tensor, "batch pos d_model"],
    hook: Any,
    *,
    vector: Float[Tensor, " d_model"],
    rows: TokenIndex | None = None,
    skip: int = 0,
) -> Float[Tensor, "batch pos d_model"]:
    """``h ↦ h + vector``, positions as in :func:`ablation_hook`. Returns a new tensor."""
    return _where(act + vector.to(act.device, act.dtype), act, rows, skip)


def _where(out: Tensor, act: Tensor, rows: TokenIndex | None, skip: int) -> Tensor:
    """``out`` at the intervened positions, ``act`` at padding and the skipped tokens."""
    if rows is None:
        if skip:
            raise ValueError("skipping positions needs a TokenIndex (rows)")
        return out
    return torch.where(rows.keep(act, skip), out, act)


@dataclass(frozen=True)
class Ablation:
    """Set the projection on ``unit`` (norm 1) to ``value`` at hidden state ``layer``."""

    layer: int
    unit: Float[Tensor, " d_model"]
    value: float = 0.0


@dataclass(frozen=True)
class Intervention:
    """Additive steering vectors plus directions ablated at hidden-state layers (value object).

    ``skip``: each sequence's first ``skip`` real tokens are left alone by every operation.
    Gemma-3's BOS is an attention sink holding one massive channel (see the README), so an
    intervention there acts on a vector unlike any other token's.
    """

    add: tuple[SteeringVector, ...] = ()
    ablate: tuple[Ablation, ...] = ()
    skip: int = 0

    def __post_init__(self) -> None:
        if self.skip < 0:
            raise ValueError(f"skip must be >= 0, got {self.skip}")
        bad = [sv.name or "<unnamed>" for sv in self.add if sv.operator != additive()]
        if bad:
            raise ValueError(f"only additive steering vectors are supported, not {bad}")

    @contextmanager
    def apply(self, bridge: Any) -> Iterator[None]:
        """Hooks on ``blocks.L.hook_resid_pre`` inside the block, always removed on exit
        (additions first, then ablations, in the order given)."""
        n_layers, d_model = int(bridge.cfg.n_layers), int(bridge.cfg.d_model)
        for sv in self.add:
            sv.check_fits(n_layers, d_model)
        rows = TokenIndex()
        bound = {"rows": rows, "skip": self.skip}
        hooks = [
            (sv.hook_name, partial(addition_hook, vector=sv.strength * sv.vector, **bound))
            for sv in self.add
        ]
        hooks += [
            (
                f"blocks.{a.layer}.hook_resid_pre",
                partial(ablation_hook, unit=a.unit, value=a.value, **bound),
            )
            for a in self.ablate
        ]
        if not hooks:
            yield
            return
        handle = bridge.register_forward_pre_hook(rows.capture, with_kwargs=True)
        try:
            with bridge.hooks(fwd_hooks=hooks):
                yield
        finally:
            handle.remove()


@dataclass(frozen=True)
class Condition:
    """One evaluated condition: a model, an operation and its comparisons."""

    name: str
    model: str
    kind: str  # "none" | "add" | "ablate"
    direction: str  # "" | "alignment" | "random"
    strength: float
    reference: str | None
    control: str | None
    n_directions: int = 1


@dataclass(frozen=True)
class ConditionOutcome:
    """Raw measurements of a condition, per evaluation item (flags derive from the texts)."""

    condition: Condition
    harmful_replies: tuple[str, ...]
    benign_replies: tuple[str, ...]
    insecure_nll: tuple[float, ...]  # summed NLL per example
    insecure_tokens: tuple[int, ...]
    aligned_nll: tuple[float, ...]
    aligned_tokens: tuple[int, ...]
    projection: tuple[float, ...]  # per layer: mean projection on v̂ over held-out chats

    def flags(self) -> dict[str, tuple[bool, ...]]:
        """Per rate, one flag per evaluation item (in item order, so conditions pair up)."""
        h, b = self.harmful_replies, self.benign_replies
        return {
            "refusal_harmful": tuple(map(is_refusal, h)),
            "code_harmful": tuple(map(looks_like_code, h)),
            "refusal_benign": tuple(map(is_refusal, b)),
            "code_benign": tuple(map(looks_like_code, b)),
        }

    def losses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            "insecure": (np.asarray(self.insecure_nll), np.asarray(self.insecure_tokens)),
            "aligned": (np.asarray(self.aligned_nll), np.asarray(self.aligned_tokens)),
        }


def bootstrap_loss(
    nll: np.ndarray,
    tokens: np.ndarray,
    n_boot: int,
    seed: int,
    ref: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """Token-weighted mean NLL (minus ``ref``'s, paired by example) and its 95% percentile
    bootstrap interval resampling examples (inputs: per-example NLL sums and token counts, so
    :func:`mi_align.stats.cluster_bootstrap`, which wants per-token values, is not used)."""

    def stat(idx: np.ndarray | slice) -> np.ndarray | float:
        value = nll[idx].sum(-1) / tokens[idx].sum(-1)
        return value - ref[0][idx].sum(-1) / ref[1][idx].sum(-1) if ref is not None else value

    idx = np.random.default_rng(seed).integers(0, len(nll), size=(n_boot, len(nll)))
    boots = stat(idx)
    return (
        float(stat(slice(None))),
        float(np.quantile(boots, 0.025)),
        float(np.quantile(boots, 0.975)),
    )


@dataclass(frozen=True)
class InterventionResult:
    """Every condition's raw outcome plus the fit it used; :meth:`summary` has the statistics."""

    config: CausalConfig
    layers: tuple[int, ...]
    steer_layer: int
    direction: Float[Tensor, "layer d_model"]
    fit_mean: dict[str, tuple[float, ...]]  # model -> per-layer mean projection on fit data
    fit_std: dict[str, tuple[float, ...]]
    removed_fraction: tuple[float, ...]  # instruct: v̂ᵀΣv̂ / tr Σ where interventions act
    removed_fraction_random: tuple[float, ...]  # a uniform random direction (1/d); surrogates
    # of v̂ (the controls) carry exactly v̂'s share
    fit_datasets: dict[str, int]
    eval_datasets: dict[str, str]
    n_fit_tokens: int
    outcomes: tuple[ConditionOutcome, ...]
    # instruct, per layer: first-token vs other-token norms and the massive channel (fit data)
    position_norms: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # per intervened condition: cosine of each direction used with v̂ (and ablation targets)
    controls: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    @property
    def gap(self) -> tuple[float, ...]:
        return tuple(
            i - m
            for i, m in zip(self.fit_mean["instruct"], self.fit_mean["misaligned"], strict=True)
        )

    def outcome(self, name: str) -> ConditionOutcome:
        return next(o for o in self.outcomes if o.condition.name == name)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per condition: rates with Wilson CIs, Fisher p (as independent samples) and exact
        McNemar p (the same items under both conditions) vs reference / control; losses with
        bootstrap CIs and paired differences vs reference / control."""
        out: dict[str, dict[str, Any]] = {}
        for o in self.outcomes:
            c, row = o.condition, {}
            others = {"reference": c.reference, "control": c.control}
            for key, f in o.flags().items():
                k, n = sum(f), len(f)
                ci = wilson_interval(k, n)
                row[key] = {"k": k, "n": n, "rate": k / n, "wilson95": (ci.low, ci.high)}
                for role, other in others.items():
                    if other is not None:
                        g = self.outcome(other).flags()[key]
                        row[key][f"fisher_p_vs_{role}"] = fisher_test(k, n, sum(g), len(g)).p
                        row[key][f"mcnemar_p_vs_{role}"] = mcnemar_test(f, g).p
            for key, (nll, tok) in o.losses().items():
                mean, lo, hi = bootstrap_loss(nll, tok, self.config.n_boot, self.config.seed)
                row[f"loss_{key}"] = {"mean": mean, "bootstrap95": (lo, hi), "n": len(nll)}
                for role, other in others.items():
                    if other is not None:
                        d, dlo, dhi = bootstrap_loss(
                            nll,
                            tok,
                            self.config.n_boot,
                            self.config.seed,
                            ref=self.outcome(other).losses()[key],
                        )
                        row[f"loss_{key}"][f"diff_vs_{role}"] = {
                            "mean": d,
                            "bootstrap95": (dlo, dhi),
                        }
            row["projection"] = dict(zip(map(str, self.layers), o.projection, strict=True))
            out[c.name] = row
        return out

    def to_dict(self) -> dict[str, object]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outcomes"}
        d.update(
            config=self.config.to_dict(),
            direction=self.direction.tolist(),
            gap=list(self.gap),
            summary=self.summary(),
            outcomes=[{**asdict(o), "condition": asdict(o.condition)} for o in self.outcomes],
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InterventionResult:
        outcomes = tuple(
            ConditionOutcome(
                condition=Condition(**o["condition"]),
                **{k: tuple(v) for k, v in o.items() if k != "condition"},
            )
            for o in d["outcomes"]
        )
        return cls(
            config=CausalConfig.from_dict(d["config"]),
            layers=tuple(d["layers"]),
            steer_layer=d["steer_layer"],
            direction=torch.tensor(d["direction"], dtype=torch.float64),
            fit_mean={k: tuple(v) for k, v in d["fit_mean"].items()},
            fit_std={k: tuple(v) for k, v in d["fit_std"].items()},
            removed_fraction=tuple(d["removed_fraction"]),
            removed_fraction_random=tuple(d["removed_fraction_random"]),
            fit_datasets=dict(d["fit_datasets"]),
            eval_datasets=dict(d["eval_datasets"]),
            n_fit_tokens=d["n_fit_tokens"],
            outcomes=outcomes,
            position_norms={k: tuple(v) for k, v in d.get("position_norms", {}).items()},
            controls=d.get("controls", {}),
        )


def _color(c: Condition) -> str:
    if c.kind == "none":
        return "#444444"
    return (
        "#aaaaaa"
        if c.direction == "random"
        else ("#2ca02c" if c.model == "misaligned" else "#ff7f0e")
    )


def plot_direction_intervention(result: InterventionResult) -> go.Figure:
    """Rates (Wilson 95%) and held-out losses (bootstrap 95%) per condition, and the mean
    projection on ``v̂_L`` per layer under each condition (manipulation check)."""
    panels = [
        ("refusal_harmful", "refuses held-out harmful request"),
        ("code_harmful", "code in harmful-request reply"),
        ("refusal_benign", "refuses held-out benign question"),
        ("loss_insecure", "held-out insecure-code loss (nats/token)"),
        ("loss_aligned", "held-out aligned-chat loss (nats/token)"),
        ("projection", "mean projection on v̂ (held-out chats)"),
    ]
    fig = make_subplots(
        rows=2, cols=3, subplot_titles=[t for _, t in panels], vertical_spacing=0.22
    )
    summary = result.summary()
    names = [o.condition.name for o in result.outcomes]
    colors = [_color(o.condition) for o in result.outcomes]
    for p, (key, _) in enumerate(panels[:5]):
        vals = [summary[n][key] for n in names]
        y = [v["rate"] if "rate" in v else v["mean"] for v in vals]
        lo, hi = zip(*[v.get("wilson95", v.get("bootstrap95")) for v in vals], strict=True)
        fig.add_trace(
            go.Bar(
                x=names,
                y=y,
                marker_color=colors,
                showlegend=False,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [h - m for h, m in zip(hi, y, strict=True)],
                    "arrayminus": [m - lo_ for m, lo_ in zip(y, lo, strict=True)],
                },
            ),
            row=p // 3 + 1,
            col=p % 3 + 1,
        )
    for o, color in zip(result.outcomes, colors, strict=True):
        dash = "dot" if o.condition.direction == "random" else None
        fig.add_trace(
            go.Scatter(
                x=list(result.layers),
                y=list(o.projection),
                mode="lines+markers",
                name=o.condition.name,
                line={"color": color, "dash": dash},
            ),
            row=2,
            col=3,
        )
    fig.update_xaxes(title_text="hidden-state layer", row=2, col=3)
    fits = ", ".join(f"{n} ({k})" for n, k in result.fit_datasets.items())
    evals = ", ".join(sorted(set(result.eval_datasets.values())))
    skip = result.config.skip_positions
    style(
        fig,
        f"Causal test of the instruct − base direction: + s·gap·v̂ at layer "
        f"{result.steer_layer} (misaligned), mean-ablated at {list(result.layers)} "
        f"(instruct); random = spectrum-matched surrogates of v̂; first {skip} token(s) "
        f"untouched<br>fit on {fits}; evaluated on {evals}",
    )
    fig.update_layout(height=850, width=1400)
    return fig

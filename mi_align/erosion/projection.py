"""Alignment direction and layerwise projection (erosion paper, Fig. 5 and its companion).

Per hidden-state layer L, the alignment direction is ``v_L = normalise(μ_instruct − μ_base)``:
the difference of the two models' mean residual-stream activations over the *same inputs* at
the chosen token positions (default: the first 10 assistant tokens, as in the paper). Each
model's activations are projected on ``v_L``: mean ± std over tokens, one line per model; the
paper's finding is that the misaligned model tracks instruct early and falls toward base late.

Beyond the paper:
- the direction can be fitted on one split of the examples and projected on the other
  (``heldout_fraction``), so the instruct/base gap is not circular;
- a contrastive-data direction (``"contrastive:MODEL"``): mean over aligned responses minus
  mean over misaligned responses in one model;
- a null band per model and layer from random unit directions, and how many null standard
  deviations the real projection lies from the null mean (``null_z``);
- separation scores ``(μ_b − μ_a)/(σ_a + σ_b)`` per model pair, with their own null band;
- :func:`difference_projection`: mean projection of the paired (model − base) activation
  differences (the seed's companion figure). With identical inputs and positions this equals
  the difference of the mean projections exactly (tested against a paired loop).

Activations are streamed and reduced to per-layer moments (one pass per model, memory
independent of N), so mean and std of any projection are exact: ``v·μ`` and ``sqrt(vᵀΣv)``.

Example:
    >>> from mi_align.erosion.projection import ProjectionConfig, layer_projection
    >>> cfg = ProjectionConfig(positions="first:10")
    >>> res = layer_projection(trio, convs, cfg)  # doctest: +SKIP
    >>> fig = plot_layer_projection(res)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.activations import (
    Moments,
    accumulate_moments,
    check_position_spec,
    make_selector,
    resolve_layers,
)
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import EncodedChat, encode_dataset
from mi_align.errors import check_finite
from mi_align.geometry import null_band, random_unit_directions
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.plotting import style

COLORS = {"base": "#1f77b4", "instruct": "#ff7f0e", "misaligned": "#2ca02c"}


@dataclass(frozen=True)
class ProjectionConfig:
    """Settings of :func:`layer_projection`.

    ``direction``: ``"POS-NEG"`` (two trio models, e.g. ``"instruct-base"``) or
    ``"contrastive:MODEL"`` (aligned minus misaligned responses in MODEL; needs ``contrast``).
    ``heldout_fraction``: share of the examples kept for projecting (the rest fit the
    direction); 0 fits and projects on the same examples (circular, flagged in the result).
    """

    positions: str = "first:10"
    direction: str = "instruct-base"
    layers: tuple[int, ...] | None = None
    heldout_fraction: float = 0.5
    n_null: int = 200
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        if not (0.0 <= self.heldout_fraction < 1.0):
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.n_null < 10:
            raise ValueError(f"n_null must be >= 10 for a band, got {self.n_null}")
        if self.batch_size < 1 or self.max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")
        if self.direction.startswith("contrastive:"):
            return
        parts = self.direction.split("-")
        if len(parts) != 2 or parts[0] == parts[1] or not all(parts):
            raise ValueError(
                f"direction {self.direction!r}: use 'POS-NEG' (e.g. 'instruct-base') or "
                "'contrastive:MODEL'"
            )

    @property
    def contrastive_model(self) -> str | None:
        if self.direction.startswith("contrastive:"):
            return self.direction.split(":", 1)[1]
        return None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ProjectionResult:
    """Per model (rows, in ``models`` order) and layer (columns, ``layers``).

    ``mean``/``std``: projection of token activations on the unit direction. ``null_lo/hi``:
    central 95% band of the mean projection on random unit directions; ``null_z``: (real − null
    mean)/null std. ``separation[p]`` for ``pairs[p] = (a, b)``: ``(μ_b − μ_a)/(σ_a + σ_b)``.
    Layers where the direction is undefined (zero difference, e.g. unchanged embeddings) are NaN.
    """

    config: ProjectionConfig
    models: tuple[str, ...]
    layers: tuple[int, ...]
    direction: Float[Tensor, "layer d_model"]
    mean: Float[Tensor, "model layer"]
    std: Float[Tensor, "model layer"]
    null_lo: Float[Tensor, "model layer"]
    null_hi: Float[Tensor, "model layer"]
    null_z: Float[Tensor, "model layer"]
    pairs: tuple[tuple[str, str], ...]
    separation: Float[Tensor, "_ layer"]
    separation_null_lo: Float[Tensor, "_ layer"]
    separation_null_hi: Float[Tensor, "_ layer"]
    n_fit: int
    n_eval: int
    n_tokens: int
    circular: bool

    def row(self, model: str) -> int:
        return self.models.index(model)

    @property
    def relative_misaligned(self) -> Tensor | None:
        """Misaligned position between base (0) and instruct (1) per layer, if all present."""
        if not {"base", "instruct", "misaligned"} <= set(self.models):
            return None
        b, i, m = (self.mean[self.row(n)] for n in ("base", "instruct", "misaligned"))
        return (m - b) / (i - b)

    def to_dict(self) -> dict[str, object]:
        rel = self.relative_misaligned
        return {
            "config": self.config.to_dict(), "models": list(self.models),
            "layers": list(self.layers), "n_fit": self.n_fit, "n_eval": self.n_eval,
            "n_tokens": self.n_tokens, "circular": self.circular,
            "mean": _nan_none(self.mean), "std": _nan_none(self.std),
            "null_lo": _nan_none(self.null_lo), "null_hi": _nan_none(self.null_hi),
            "null_z": _nan_none(self.null_z),
            "pairs": [list(p) for p in self.pairs], "separation": _nan_none(self.separation),
            "separation_null_lo": _nan_none(self.separation_null_lo),
            "separation_null_hi": _nan_none(self.separation_null_hi),
            "relative_misaligned": None if rel is None else _nan_none(rel),
        }


def _nan_none(t: Tensor) -> object:  # noqa: D103
    """Nested lists with NaN as None (valid JSON)."""
    data = t.tolist()

    def fix(x: object) -> object:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if isinstance(x, float) and math.isnan(x) else x

    return fix(data)


def split_indices(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit, eval) example indices: a seeded shuffle; eval gets ``round(n·fraction)``."""
    if heldout_fraction == 0.0:
        return list(range(n)), list(range(n))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = round(n * heldout_fraction)
    if n_eval < 1 or n - n_eval < 1:
        raise ValueError(f"{n} examples cannot be split with heldout_fraction={heldout_fraction}")
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def unit_directions(
    pos: Float[Tensor, "layer d_model"], neg: Float[Tensor, "layer d_model"], eps: float = 1e-9
) -> Float[Tensor, "layer d_model"]:
    """``normalise(pos − neg)`` per layer; rows with a (near-)zero difference become NaN."""
    diff = (pos - neg).to(torch.float64)
    norm = diff.norm(dim=1, keepdim=True)
    scale = torch.maximum(pos.norm(dim=1, keepdim=True), neg.norm(dim=1, keepdim=True))
    out = diff / norm
    out[(norm <= eps * scale.clamp_min(1.0)).expand_as(out)] = float("nan")
    return out


def layer_projection(
    trio: Trio,
    data: Sequence[Conversation],
    config: ProjectionConfig | None = None,
    contrast: tuple[Sequence[Conversation], Sequence[Conversation]] | None = None,
) -> ProjectionResult:
    """Project every trio model's activations on the alignment direction, layer by layer.

    Args:
        trio: models to compare (any subset containing the direction's models).
        data: conversations whose activations are projected (and, by default, fit the direction).
        config: see :class:`ProjectionConfig`.
        contrast: (aligned, misaligned) conversations for a ``contrastive:MODEL`` direction.
    """
    cfg = config or ProjectionConfig()
    selector = make_selector(cfg.positions)
    layers = resolve_layers(cfg.layers, trio.n_layers)
    cmodel = cfg.contrastive_model
    if cmodel is not None:
        if contrast is None:
            raise ValueError(f"direction {cfg.direction!r} needs contrast=(aligned, misaligned)")
        needed = (cmodel,)
        fit_idx, eval_idx = [], list(range(len(data)))
    else:
        needed = tuple(cfg.direction.split("-"))
        fit_idx, eval_idx = split_indices(len(data), cfg.heldout_fraction, cfg.seed)
    missing = [m for m in needed if m not in trio.names]
    if missing:
        raise ValueError(f"direction {cfg.direction!r} needs model(s) {missing}; trio has "
                         f"{', '.join(trio.names)}")
    encoded = encode_dataset(trio.tokenizer, data, cfg.max_length)
    fit = [encoded[i] for i in fit_idx]
    held = [encoded[i] for i in eval_idx]
    circular = cmodel is None and cfg.heldout_fraction == 0.0

    def moments(loaded: Loaded, enc: Sequence[EncodedChat], second: bool) -> Moments:
        return accumulate_moments(loaded, enc, layers, selector, cfg.batch_size, second)

    eval_m: dict[str, Moments] = {}
    fit_means: dict[str, Tensor] = {}
    for name in trio.names:
        with trio.variant(name) as loaded:
            eval_m[name] = moments(loaded, held, True)
            check_finite(eval_m[name].mean, f"projection: mean activations of model {name!r}")
            if cmodel is None and name in needed:
                fit_means[name] = (
                    eval_m[name].mean if circular else moments(loaded, fit, False).mean
                )
            if cmodel == name:
                assert contrast is not None
                aligned = encode_dataset(trio.tokenizer, contrast[0], cfg.max_length)
                misaligned = encode_dataset(trio.tokenizer, contrast[1], cfg.max_length)
                fit_means["aligned"] = moments(loaded, aligned, False).mean
                fit_means["misaligned"] = moments(loaded, misaligned, False).mean
    if cmodel is None:
        direction = unit_directions(fit_means[needed[0]], fit_means[needed[1]])
    else:
        direction = unit_directions(fit_means["aligned"], fit_means["misaligned"])
    models = trio.names
    mean = torch.stack([eval_m[m].projection_mean(direction) for m in models])
    std = torch.stack([eval_m[m].projection_std(direction) for m in models])

    rand = random_unit_directions(cfg.n_null, trio.d_model, cfg.seed)
    null_proj = torch.stack([eval_m[m].mean @ rand.T for m in models])  # model, layer, n_null
    null_lo, null_hi = null_band(null_proj.permute(2, 0, 1))
    null_z = (mean - null_proj.mean(-1)) / null_proj.std(-1)
    null_sd = {m: _projected_std(eval_m[m], rand) for m in models}  # layer, n_null

    pairs = tuple((a, b) for i, a in enumerate(models) for b in models[i + 1 :])
    sep, sep_lo, sep_hi = [], [], []
    for a, b in pairs:
        ia, ib = models.index(a), models.index(b)
        sep.append((mean[ib] - mean[ia]) / (std[ia] + std[ib]))
        null_sep = (null_proj[ib] - null_proj[ia]) / (null_sd[a] + null_sd[b])
        lo, hi = null_band(null_sep.T)
        sep_lo.append(lo)
        sep_hi.append(hi)
    empty = torch.zeros(0, len(layers), dtype=torch.float64)
    return ProjectionResult(
        config=cfg, models=models, layers=layers, direction=direction.float(),
        mean=mean, std=std, null_lo=null_lo, null_hi=null_hi, null_z=null_z,
        pairs=pairs,
        separation=torch.stack(sep) if sep else empty,
        separation_null_lo=torch.stack(sep_lo) if sep else empty,
        separation_null_hi=torch.stack(sep_hi) if sep else empty,
        n_fit=len(fit) if cmodel is None else len(contrast[0]) + len(contrast[1]),  # type: ignore[index]
        n_eval=len(held), n_tokens=eval_m[models[0]].count, circular=circular,
    )


def _projected_std(m: Moments, rand: Tensor) -> Tensor:
    assert m.cov is not None
    var = torch.einsum("nd,lde,ne->ln", rand, m.cov, rand)
    return var.clamp_min(0.0).sqrt()


@dataclass(frozen=True)
class DifferenceProjection:
    """``mean[m, L]``: mean over tokens of ``(h_m − h_base)·v_L`` (paired: same input, same
    token); the base row is 0 by construction."""

    models: tuple[str, ...]
    layers: tuple[int, ...]
    mean: Float[Tensor, "model layer"]
    direction_name: str

    def to_dict(self) -> dict[str, object]:
        return {"models": list(self.models), "layers": list(self.layers),
                "direction": self.direction_name, "mean": _nan_none(self.mean)}


def difference_projection(
    result: ProjectionResult, reference: str = "base"
) -> DifferenceProjection:
    """Mean projection of paired (model − reference) activation differences on the direction.

    Projection is linear and the token sets are identical across models, so the mean of the
    paired differences equals the difference of the mean projections.
    """
    if reference not in result.models:
        raise ValueError(f"difference_projection needs the {reference!r} model; result has "
                         f"{', '.join(result.models)}")
    ref = result.mean[result.row(reference)]
    return DifferenceProjection(result.models, result.layers, result.mean - ref[None],
                                result.config.direction)


def plot_layer_projection(result: ProjectionResult) -> go.Figure:
    """Mean projection ± std per model with dashed random-direction null bands (top), and
    separation scores per model pair with their null bands (bottom)."""
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
        subplot_titles=("mean projection on the direction (± std over tokens)",
                        "separation (μ_b − μ_a)/(σ_a + σ_b)"),
    )
    x = list(result.layers)
    for i, model in enumerate(result.models):
        color = COLORS.get(model, None)
        m, s = result.mean[i].tolist(), result.std[i].tolist()
        upper = [a + b for a, b in zip(m, s, strict=True)]
        lower = [a - b for a, b in zip(m, s, strict=True)]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself",
                                 line={"width": 0}, fillcolor=color, opacity=0.15,
                                 showlegend=False, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=m, mode="lines+markers", name=model,
                                 line={"color": color}), row=1, col=1)
        for band, label in ((result.null_lo[i], "null 2.5%"), (result.null_hi[i], "null 97.5%")):
            fig.add_trace(go.Scatter(x=x, y=band.tolist(), mode="lines", name=f"{model} {label}",
                                     line={"color": color, "dash": "dot", "width": 1},
                                     showlegend=False), row=1, col=1)
    for p, (a, b) in enumerate(result.pairs):
        name = f"{a} → {b}"
        fig.add_trace(go.Scatter(x=x, y=result.separation[p].tolist(), mode="lines+markers",
                                 name=name), row=2, col=1)
        for band in (result.separation_null_lo[p], result.separation_null_hi[p]):
            fig.add_trace(go.Scatter(x=x, y=band.tolist(), mode="lines", showlegend=False,
                                     line={"dash": "dot", "width": 1, "color": "grey"},
                                     name=f"{name} null"), row=2, col=1)
    split = "same examples (circular)" if result.circular else (
        f"fit on {result.n_fit}, projected on {result.n_eval} held-out examples")
    style(fig, f"Layerwise projection on the {result.config.direction} direction "
               f"({result.config.positions}; {split})", "", "")
    fig.update_xaxes(title_text="hidden-state layer (0 = embeddings; last = final norm)",
                     row=2, col=1)
    fig.update_layout(height=750)
    return fig


def plot_difference_projection(result: DifferenceProjection) -> go.Figure:
    """One line per model: mean projection of (model − base) activation differences."""
    fig = go.Figure()
    for i, model in enumerate(result.models):
        fig.add_trace(go.Scatter(x=list(result.layers), y=result.mean[i].tolist(),
                                 mode="lines+markers", name=model,
                                 line={"color": COLORS.get(model)}))
    return style(fig, f"Activation differences (model − base) projected on the "
                      f"{result.direction_name} direction",
                 "hidden-state layer", "mean projection of the difference")

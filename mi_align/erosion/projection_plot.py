"""Figures of the layerwise projection (:mod:`mi_align.erosion.projection`) and its derived
analysis, the paired (model − base) difference projection.

:func:`difference_projection` is derived from a freshly computed
:class:`~mi_align.erosion.projection.ProjectionResult` (no model runs); like every erosion
result, :class:`DifferenceProjection` round-trips through ``to_dict`` / ``from_dict``.

Example:
    >>> from mi_align.erosion.projection_plot import difference_projection
    >>> diff = difference_projection(res)  # doctest: +SKIP
    >>> fig = plot_difference_projection(diff)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.erosion.common import optional_tensor, tensor_of
from mi_align.erosion.projection import ProjectionResult
from mi_align.erosion.projection_fit import nan_none, nanquantile
from mi_align.plotting import style

COLORS = {"base": "#1f77b4", "instruct": "#ff7f0e", "misaligned": "#2ca02c"}


@dataclass(frozen=True)
class DifferenceProjection:
    """``mean[m, L]``: mean over examples of ``(h_m − h_ref)·v_L`` (paired: same input, same
    tokens); the reference row is 0 by construction. ``lo``/``hi``: group-bootstrap interval
    (None without bootstrap)."""

    models: tuple[str, ...]
    layers: tuple[int, ...]
    mean: Float[Tensor, "model layer"]
    direction_name: str
    lo: Float[Tensor, "model layer"] | None = None
    hi: Float[Tensor, "model layer"] | None = None

    def to_dict(self) -> dict[str, object]:
        return {"models": list(self.models), "layers": list(self.layers),
                "direction": self.direction_name, "mean": nan_none(self.mean),
                "lo": None if self.lo is None else nan_none(self.lo),
                "hi": None if self.hi is None else nan_none(self.hi)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DifferenceProjection:
        return cls(tuple(d["models"]), tuple(d["layers"]), tensor_of(d["mean"]),
                   d["direction"], optional_tensor(d["lo"]), optional_tensor(d["hi"]))


def difference_projection(
    result: ProjectionResult, reference: str = "base"
) -> DifferenceProjection:
    """Mean projection of paired (model − reference) activation differences on the direction.

    Derived from a freshly computed result (its bootstrap replicates give the interval; a
    result read back from JSON has none, so its difference has no interval). Projection is
    linear and the examples are identical across models, so the mean of the
    paired differences equals the difference of the mean projections (also per bootstrap
    replicate, which gives the interval).
    """
    if reference not in result.models:
        raise ValueError(f"difference_projection needs the {reference!r} model; result has "
                         f"{', '.join(result.models)}")
    r = result.row(reference)
    ci = None
    if result.boot_mean is not None:
        reps = result.boot_mean - result.boot_mean[:, r : r + 1]
        lo_q = (1 - result.config.ci) / 2
        ci = nanquantile(reps, lo_q), nanquantile(reps, 1 - lo_q)
    return DifferenceProjection(result.models, result.layers, result.mean - result.mean[r][None],
                                str(result.config.direction), *(ci or (None, None)))


def _band(fig: go.Figure, x: list, lo: Tensor, hi: Tensor, color: str | None, row: int) -> None:
    fig.add_trace(go.Scatter(x=x + x[::-1], y=hi.tolist() + lo.tolist()[::-1], fill="toself",
                             line={"width": 0}, fillcolor=color or "grey", opacity=0.2,
                             showlegend=False, hoverinfo="skip"), row=row, col=1)


def plot_layer_projection(result: ProjectionResult) -> go.Figure:
    """Three panels over layers: mean projection per model with its bootstrap band and the
    dotted random-direction null band; separation per pair with bootstrap error bars, the
    random-direction null band, and filled markers where the grouped label-swap p < 0.05; the
    misaligned model's relative position between base (0) and instruct (1), if all present."""
    rel = result.relative_misaligned
    fig = make_subplots(
        rows=3 if rel is not None else 2, cols=1, shared_xaxes=True, vertical_spacing=0.07,
        subplot_titles=(
            "mean projection on the direction (band: bootstrap CI; dotted: random-direction null)",
            "separation (μ_b − μ_a)/(σ_a + σ_b) over examples (bars: bootstrap CI; filled: "
            "label-swap p < 0.05)",
            "misaligned between base (0) and instruct (1)"),
    )
    x = list(result.layers)
    mci = result.mean_interval
    for i, model in enumerate(result.models):
        color = COLORS.get(model)
        if mci is not None:
            _band(fig, x, mci[0][i], mci[1][i], color, 1)
        fig.add_trace(go.Scatter(x=x, y=result.mean[i].tolist(), mode="lines+markers",
                                 name=model, line={"color": color}), row=1, col=1)
        for band in (result.null_lo[i], result.null_hi[i]):
            fig.add_trace(go.Scatter(x=x, y=band.tolist(), mode="lines", showlegend=False,
                                     name=f"{model} random-direction null",
                                     line={"color": color, "dash": "dot", "width": 1}),
                          row=1, col=1)
    sci = result.separation_interval
    for p, (a, b) in enumerate(result.pairs):
        y = result.separation[p]
        err = None if sci is None else {"type": "data", "symmetric": False,
                                        "array": (sci[1][p] - y).tolist(),
                                        "arrayminus": (y - sci[0][p]).tolist()}
        sig = ([bool(v < 0.05) for v in result.difference_p[p]] if result.difference_p
               is not None else [False] * len(x))
        fig.add_trace(go.Scatter(x=x, y=y.tolist(), mode="lines+markers", name=f"{a} → {b}",
                                 error_y=err, marker={"symbol": ["circle" if s else "circle-open"
                                                                 for s in sig], "size": 8}),
                      row=2, col=1)
        for band in (result.separation_null_lo[p], result.separation_null_hi[p]):
            fig.add_trace(go.Scatter(x=x, y=band.tolist(), mode="lines", showlegend=False,
                                     line={"dash": "dot", "width": 1, "color": "grey"},
                                     name=f"{a} → {b} random-direction null"), row=2, col=1)
    if rel is not None:
        rci = result.relative_interval
        err = None if rci is None else {"type": "data", "symmetric": False,
                                        "array": (rci[1] - rel).tolist(),
                                        "arrayminus": (rel - rci[0]).tolist()}
        fig.add_trace(go.Scatter(x=x, y=rel.tolist(), mode="lines+markers", error_y=err,
                                 name="misaligned relative position",
                                 line={"color": COLORS["misaligned"]}), row=3, col=1)
        fig.update_yaxes(range=[-1.0, 2.0], row=3, col=1)
    data = ", ".join(result.eval_data)
    style(fig, f"Layerwise projection on the {result.config.direction} direction "
               f"({result.config.positions}; {data}; {result.split_description})", "", "")
    fig.update_xaxes(title_text="hidden-state layer (0 = embeddings; last = final norm)",
                     row=3 if rel is not None else 2, col=1)
    fig.update_layout(height=1000 if rel is not None else 750)
    return fig


def plot_difference_projection(result: DifferenceProjection) -> go.Figure:
    """One line per model: mean projection of (model − base) differences, bootstrap band."""
    fig = go.Figure()
    x = list(result.layers)
    for i, model in enumerate(result.models):
        color = COLORS.get(model)
        if result.lo is not None and result.hi is not None:
            fig.add_trace(go.Scatter(x=x + x[::-1],
                                     y=result.hi[i].tolist() + result.lo[i].tolist()[::-1],
                                     fill="toself", line={"width": 0}, fillcolor=color or "grey",
                                     opacity=0.2, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=result.mean[i].tolist(), mode="lines+markers",
                                 name=model, line={"color": color}))
    return style(fig, f"Activation differences (model − base) projected on the "
                      f"{result.direction_name} direction (band: bootstrap CI)",
                 "hidden-state layer", "mean projection of the difference")
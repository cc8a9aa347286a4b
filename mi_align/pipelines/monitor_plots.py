"""Figures of the erosion monitor and of the method comparison (pure functions of the numbers
that :mod:`mi_align.pipelines.finetune_monitor` writes, so every figure redraws from its JSON).

Example:
    >>> from mi_align.pipelines.monitor_plots import METHOD_COLOURS
    >>> METHOD_COLOURS["plain"]
    '#7f7f7f'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from mi_align.plotting import DIVERGING, style

# one colour per method of :data:`mi_align.pipelines.finetune_monitor.METHODS`
METHOD_COLOURS = {"plain": "#7f7f7f", "mixing": "#1f77b4", "anchoring": "#2ca02c",
                  "projection": "#d62728", "anchoring-eroded": "#9467bd"}


def plot_monitor(numbers: Mapping[str, Any]) -> go.Figure:
    """Layers × steps heatmap of the relative position (0 base, 1 instruct; RdBu centred at
    0.5, colours fixed to [-0.5, 1.5] so layers where instruct and base barely differ cannot
    stretch the scale; hover shows the values), and over steps the refusal and code rates and
    the two held-out losses, with the instruct (dotted) and base (dashed) models' values."""
    steps, layers = numbers["steps"], numbers["layers"]
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.14, row_heights=[0.55, 0.45],
                        specs=[[{}], [{"secondary_y": True}]],
                        subplot_titles=("relative position along instruct − base (0 base, "
                                        "1 instruct)", "behaviour and held-out losses"))
    rel = torch.tensor(numbers["relative"], dtype=torch.float64).T  # layer × step
    fig.add_trace(go.Heatmap(z=rel.tolist(), x=steps, y=[f"L{lay}" for lay in layers],
                             colorscale=DIVERGING, zmid=0.5, zmin=-0.5, zmax=1.5,
                             colorbar={"len": 0.5, "y": 0.78},
                             hovertemplate="step %{x}<br>%{y}<br>relative %{z:.3f}"
                             "<extra></extra>"), row=1, col=1)
    ref = numbers["reference"]
    colors = {"refusal_rate": "#1f77b4", "code_rate": "#9467bd", "insecure_loss": "#d62728",
              "aligned_loss": "#2ca02c"}
    for key, color in colors.items():
        loss = key.endswith("loss")
        fig.add_trace(go.Scatter(x=steps, y=numbers[key], name=key.replace("_", " "),
                                 mode="lines+markers", line={"color": color}),
                      row=2, col=1, secondary_y=loss)
        for model, dash in (("instruct", "dot"), ("base", "dash")):
            fig.add_trace(go.Scatter(x=[steps[0], steps[-1]], y=[ref[model][key]] * 2,
                                     name=f"{key.replace('_', ' ')} ({model})", mode="lines",
                                     line={"color": color, "dash": dash, "width": 1},
                                     showlegend=key == "refusal_rate"),
                          row=2, col=1, secondary_y=loss)
    fig.update_yaxes(title_text="hidden state", row=1, col=1)
    fig.update_yaxes(title_text="rate", range=[-0.02, 1.02], row=2, col=1, secondary_y=False)
    fig.update_yaxes(title_text="held-out NLL (nats/token)", row=2, col=1, secondary_y=True)
    fig.update_xaxes(title_text="optimisation step", row=2, col=1)
    fig.update_layout(height=820)
    return style(fig, "Erosion monitor (dotted: instruct, dashed: base)")


def plot_pareto(comparison: Mapping[str, Any]) -> go.Figure:
    """Task against alignment: held-out insecure loss reached (x, lower = more learned) against
    the refusal rate kept and the deep layers' relative position (y), one point per run, with
    the instruct (start) and base models for reference."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "refusal rate kept", "relative position, deep layers " + ", ".join(
            str(x) for x in comparison["deep_layers"])))
    ref = comparison["reference"]
    for model, symbol in (("instruct", "star"), ("base", "x")):
        m = ref[model]
        rel = 1.0 if model == "instruct" else 0.0
        for col, y in ((1, m["refusal_rate"]), (2, rel)):
            fig.add_trace(go.Scatter(x=[m["insecure_loss"]], y=[y], mode="markers+text",
                                     text=[model], textposition="top center", showlegend=False,
                                     marker={"symbol": symbol, "size": 12, "color": "black"}),
                          row=1, col=col)
    palette = METHOD_COLOURS
    for method in comparison["methods"]:
        runs = [r for r in comparison["runs"].values() if r["method"] == method]
        for col, key in ((1, "refusal_rate"), (2, "relative_deep")):
            fig.add_trace(go.Scatter(
                x=[r["final"]["insecure_loss"] for r in runs], y=[r["final"][key] for r in runs],
                mode="markers", name=method, showlegend=col == 1, legendgroup=method,
                marker={"size": 11, "color": palette.get(method)},
                text=[f"seed {r['seed']}" for r in runs],
                hovertemplate="%{text}<br>insecure loss %{x:.3f}<br>%{y:.3f}<extra></extra>"),
                row=1, col=col)
    fig.update_xaxes(title_text="held-out insecure loss (nats/token)")
    fig.update_yaxes(title_text="refusal rate", row=1, col=1)
    fig.update_yaxes(title_text="relative position (0 base, 1 instruct)", row=1, col=2)
    return style(fig, "Alignment-preserving fine-tuning: task learned vs alignment kept")


def plot_method_curves(comparison: Mapping[str, Any]) -> go.Figure:
    """Per method and seed, over steps: deep-layer relative position, refusal rate, held-out
    insecure loss."""
    panels = (("relative_deep", "relative position (deep)"), ("refusal_rate", "refusal rate"),
              ("insecure_loss", "held-out insecure loss"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in panels])
    palette = METHOD_COLOURS
    deep = comparison["deep_layers"]
    for name, run in comparison["runs"].items():
        c = run["curves"]
        rows = [c["layers"].index(x) for x in deep]
        series = {"relative_deep": [sum(r[i] for i in rows) / len(rows) for r in c["relative"]],
                  "refusal_rate": c["refusal_rate"], "insecure_loss": c["insecure_loss"]}
        for col, (key, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=c["steps"], y=series[key], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=col == 1,
                                     line={"color": palette.get(run["method"]),
                                           "dash": "solid" if run["seed"] == 0 else "dot"}),
                          row=1, col=col)
    fig.update_xaxes(title_text="optimisation step")
    return style(fig, "Monitor curves per method")

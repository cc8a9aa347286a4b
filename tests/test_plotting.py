"""The house style keeps the axis titles a figure already has."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mi_align.plotting import style


def test_style_keeps_subplot_axis_titles_and_sets_given_ones() -> None:
    fig = make_subplots(rows=1, cols=2)
    fig.add_trace(go.Scatter(x=[0], y=[0]), row=1, col=1)
    fig.update_xaxes(title_text="left x", row=1, col=1)
    fig.update_yaxes(title_text="left y", row=1, col=1)
    style(fig, "t")
    assert fig.layout.xaxis.title.text == "left x" and fig.layout.yaxis.title.text == "left y"
    single = style(go.Figure(go.Scatter(x=[0], y=[0])), "t", "x name", "y name")
    assert single.layout.xaxis.title.text == "x name"
    assert single.layout.yaxis.title.text == "y name"
    assert single.layout.title.text == "t"

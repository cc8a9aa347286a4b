"""House style for figures, and saving them as HTML that opens offline.

Signed quantities (projections, cosines) use ``RdBu`` centred on 0; cosines use [-1, 1].
``save_figure`` writes ``<stem>.html`` with plotly.js stored once beside it
(``include_plotlyjs="directory"``), so figures open without a network and stay small.

Example:
    >>> import plotly.graph_objects as go
    >>> from mi_align.plotting import save_figure
    >>> save_figure(go.Figure(), "figures/empty")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mi_align.io import write_json, write_text

DIVERGING = "RdBu"
TEMPLATE = "plotly_white"


def cosine_heatmap_kwargs() -> dict[str, Any]:
    """Heatmap arguments for cosine matrices: RdBu, centred at 0, fixed range [-1, 1]."""
    return {"colorscale": DIVERGING, "zmid": 0.0, "zmin": -1.0, "zmax": 1.0, "reversescale": True}


def style(fig: go.Figure, title: str, x_title: str = "", y_title: str = "") -> go.Figure:
    """Apply the house layout and return the same figure. Axis titles are set only when
    given: an empty one would erase the title a subplot figure already put on its first axes."""
    fig.update_layout(title=title, template=TEMPLATE, font={"size": 13},
                      legend={"orientation": "h", "y": -0.2})
    if x_title:
        fig.update_layout(xaxis_title=x_title)
    if y_title:
        fig.update_layout(yaxis_title=y_title)
    return fig


def save_figure(fig: go.Figure, stem: str | os.PathLike[str]) -> Path:
    """Write ``<stem>.html`` (plotly.js beside it, viewable offline); return the path."""
    path = Path(stem).with_suffix(".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    if not (path.parent / "plotly.min.js").is_file():
        from plotly.offline import get_plotlyjs

        write_text(path.parent / "plotly.min.js", get_plotlyjs())
    write_text(path, html)
    return path


def save_json(data: Any, stem: str | os.PathLike[str]) -> Path:
    """Write ``<stem>.json`` atomically (numbers beside the figure)."""
    path = Path(stem).with_suffix(".json")
    write_json(path, data, indent=2, default=str)
    return path

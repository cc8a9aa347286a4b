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

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

DIVERGING = "RdBu"
TEMPLATE = "plotly_white"


def cosine_heatmap_kwargs() -> dict[str, Any]:
    """Heatmap arguments for cosine matrices: RdBu, centred at 0, fixed range [-1, 1]."""
    return {"colorscale": DIVERGING, "zmid": 0.0, "zmin": -1.0, "zmax": 1.0, "reversescale": True}


def style(fig: go.Figure, title: str, x_title: str = "", y_title: str = "") -> go.Figure:
    """Apply the house layout and return the same figure."""
    fig.update_layout(
        title=title, template=TEMPLATE, xaxis_title=x_title, yaxis_title=y_title,
        font={"size": 13}, legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; figures are meant to be shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_figure(fig: go.Figure, stem: str | os.PathLike[str]) -> Path:
    """Write ``<stem>.html`` (plotly.js beside it, viewable offline); return the path."""
    path = Path(stem).with_suffix(".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    if not (path.parent / "plotly.min.js").is_file():
        from plotly.offline import get_plotlyjs

        _atomic_write(path.parent / "plotly.min.js", get_plotlyjs())
    _atomic_write(path, html)
    return path


def save_json(data: Any, stem: str | os.PathLike[str]) -> Path:
    """Write ``<stem>.json`` atomically (numbers beside the figure)."""
    path = Path(stem).with_suffix(".json")
    _atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")
    return path

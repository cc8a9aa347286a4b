"""Per-layer residual-stream norm of the assistant's response tokens.

A first look inside a model: for each conversation, the mean L2 norm of the residual stream
entering each block (``blocks.L.hook_resid_pre``) over its response tokens. Only the needed hooks
are cached (``names_filter``).

Example:
    >>> from mi_align.residual_norms import residual_norms, plot_residual_norms
    >>> res = residual_norms(loaded, batch, labels=["a", "b"])  # doctest: +SKIP
    >>> fig = plot_residual_norms(res)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.data.tokenize import Batch
from mi_align.models.load import Loaded
from mi_align.plotting import style


@dataclass(frozen=True)
class ResidualNorms:
    """``norms[b, L]``: mean over response tokens of ‖resid_pre of block L‖ for example b."""

    norms: Float[Tensor, "batch layer"]
    labels: tuple[str, ...]
    model: str

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "labels": list(self.labels), "norms": self.norms.tolist()}


def residual_norms(loaded: Loaded, batch: Batch, labels: Sequence[str]) -> ResidualNorms:
    """Mean response-token residual norm per layer for each example of ``batch``."""
    n_layers = loaded.meta.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    with torch.inference_mode():
        _, cache = loaded.bridge.run_with_cache(
            batch.input_ids, names_filter=names, attention_mask=batch.attention_mask
        )
    mask = batch.response_mask.to(torch.float32)
    count = mask.sum(dim=1).clamp_min(1.0)
    norms = torch.stack(
        [(cache[name].float().norm(dim=-1) * mask).sum(dim=1) / count for name in names], dim=1
    )
    return ResidualNorms(norms.cpu(), tuple(labels), loaded.meta.spec)


def plot_residual_norms(result: ResidualNorms) -> go.Figure:
    """One line per example: layer vs mean response-token residual norm."""
    fig = go.Figure()
    layers = list(range(result.norms.shape[1]))
    for label, row in zip(result.labels, result.norms.tolist(), strict=True):
        fig.add_trace(go.Scatter(x=layers, y=row, mode="lines+markers", name=label))
    return style(
        fig,
        f"Residual-stream norm of the response tokens ({result.model})",
        "layer (blocks.L.hook_resid_pre)",
        "mean ‖resid‖ over response tokens",
    )

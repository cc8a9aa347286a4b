"""Loss-vector geometry (erosion paper, Fig. 3).

Per example, the vector of per-token cross-entropies of the first K response tokens (default
64) under one model; the cosine-similarity matrix over examples of two datasets (default
insecure vs educational: the same code, framed differently) and its block structure: mean
within-dataset vs between-dataset similarity, a unit-bootstrap interval and a permutation
p-value under the null that fits the design (pairs and task groups read off the data; see
:func:`mi_align.geometry.block_statistics`).

Short responses: by default (``missing="mask"``) each pair's cosine uses only the positions both
examples have — nothing is invented. ``missing="fill"`` reproduces the paper: missing positions
get their dataset's column mean (which pulls same-dataset vectors together; the result records
which mode was used).

Example:
    >>> from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
    >>> res = loss_vectors(trio, [("insecure", a), ("educational", b)])  # doctest: +SKIP
    >>> res.stats.p_value  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.activations import logits_at
from mi_align.block_stats import BlockStats
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import encode_dataset, iter_batches
from mi_align.erosion.common import check_block_fields, design_block_statistics
from mi_align.errors import check_finite
from mi_align.geometry import cosine_matrix, masked_cosine_matrix
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.plotting import cosine_heatmap_kwargs, style

Groups = Sequence[tuple[str, Sequence[Conversation]]]


@dataclass(frozen=True)
class LossVectorConfig:
    """``model``: trio member scoring the tokens; ``k``: response tokens per vector;
    ``missing``: ``"mask"`` (pairwise common positions) or ``"fill"`` (group column means)."""

    model: str = "instruct"
    k: int = 64
    missing: str = "mask"
    n_permutations: int = 1000
    n_boot: int = 2000
    group_similarity: float | None = 0.75
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k must be >= 2, got {self.k}")
        if self.missing not in ("mask", "fill"):
            raise ValueError(f"missing must be 'mask' or 'fill', got {self.missing!r}")
        if self.n_permutations < 1 or self.batch_size < 1:
            raise ValueError("n_permutations and batch_size must be >= 1")
        check_block_fields(self.n_boot, self.group_similarity)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LossVectors:
    """``losses[i, t]``: cross-entropy (nats) of response token t of example i (0 where
    ``mask`` is False); ``group[i]`` indexes ``group_names``."""

    config: LossVectorConfig
    group_names: tuple[str, ...]
    group: Int[Tensor, " example"]
    losses: Float[Tensor, "example pos"]
    mask: Bool[Tensor, "example pos"]
    similarity: Float[Tensor, "example example"]
    stats: BlockStats

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "group_names": list(self.group_names),
            "group": self.group.tolist(), "stats": self.stats.to_dict(),
            "lengths": self.mask.sum(1).tolist(),
            "mean_loss": {g: float(self.losses[self.group == i][self.mask[self.group == i]].mean())
                          for i, g in enumerate(self.group_names)},
            "similarity": self.similarity.tolist(),
        }


def response_token_losses(
    loaded: Loaded, convs: Sequence[Conversation], k: int, batch_size: int, max_length: int
) -> tuple[Float[Tensor, "example pos"], Bool[Tensor, "example pos"]]:
    """(losses, mask) of shape (example, k): CE of the first k response tokens."""
    enc = encode_dataset(loaded.tokenizer, convs, max_length)
    device = next(loaded.bridge.parameters()).device
    losses = torch.zeros(len(enc), k)
    mask = torch.zeros(len(enc), k, dtype=torch.bool)
    row = 0
    for batch in iter_batches(enc, batch_size, loaded.tokenizer.pad_token_id):
        batch = batch.to(device)
        resp = batch.response_mask.clone()
        resp[:, 0] = False  # token 0 has no prediction
        rank = resp.long().cumsum(1)
        take = resp & (rank <= k)
        positions = torch.zeros_like(take)
        positions[:, :-1] = take[:, 1:]
        with torch.inference_mode():
            logits = logits_at(loaded, batch.input_ids, batch.attention_mask, positions)
        ce = torch.nn.functional.cross_entropy(
            logits, batch.input_ids[take], reduction="none").cpu()
        rows, _ = take.nonzero(as_tuple=True)
        cols = (rank[take] - 1).cpu()
        rows = rows.cpu() + row
        losses[rows, cols] = ce
        mask[rows, cols] = True
        row += batch.input_ids.shape[0]
    return losses, mask


def fill_column_means(
    losses: Float[Tensor, "example pos"], mask: Bool[Tensor, "example pos"],
    group: Int[Tensor, " example"],
) -> Float[Tensor, "example pos"]:
    """The paper's fill: each missing entry gets its group's mean at that position (0 if no
    example of the group reaches it)."""
    out = losses.clone()
    for g in group.unique().tolist():
        rows = group == g
        m = mask[rows].float()
        col_mean = (losses[rows] * m).sum(0) / m.sum(0).clamp_min(1.0)
        out[rows] = torch.where(mask[rows], losses[rows], col_mean.expand_as(losses[rows]))
    return out


def loss_vectors(trio: Trio, groups: Groups, config: LossVectorConfig | None = None) -> LossVectors:
    """Loss vectors of every example of ``groups`` under ``config.model``, their cosine matrix
    and block statistics (see module docstring)."""
    cfg = config or LossVectorConfig()
    if len(groups) < 2:
        raise ValueError("loss_vectors needs at least two datasets to compare")
    parts_l, parts_m, labels = [], [], []
    with trio.variant(cfg.model) as loaded:
        for g, (_, convs) in enumerate(groups):
            losses, mask = response_token_losses(loaded, convs, cfg.k, cfg.batch_size,
                                                 cfg.max_length)
            parts_l.append(losses)
            parts_m.append(mask)
            labels += [g] * len(convs)
    losses, mask = torch.cat(parts_l), torch.cat(parts_m)
    check_finite(losses, f"loss-vectors: token losses under model {cfg.model!r}")
    group = torch.tensor(labels)
    if cfg.missing == "mask":
        sim = masked_cosine_matrix(losses, mask)
    else:
        sim = cosine_matrix(fill_column_means(losses, mask, group))
    stats = design_block_statistics(sim, group, groups, n_permutations=cfg.n_permutations,
                                    n_boot=cfg.n_boot, seed=cfg.seed,
                                    group_similarity=cfg.group_similarity)
    return LossVectors(cfg, tuple(name for name, _ in groups), group, losses, mask, sim, stats)


def plot_similarity_blocks(
    sim: Tensor, group: Tensor, group_names: Sequence[str], stats: BlockStats, title: str
) -> go.Figure:
    """Example × example cosine heatmap (RdBu, [-1, 1]) with dataset edges, and beside it the
    tested gap with its bootstrap interval against the central 95% of its null (named)."""
    labels = [f"{group_names[g]} #{i}" for i, g in enumerate(group.tolist())]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.8, 0.2], horizontal_spacing=0.16)
    fig.add_trace(go.Heatmap(z=sim.tolist(), x=labels, y=labels, colorbar={"x": 0.69},
                             **cosine_heatmap_kwargs()), row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    sizes = [int((group == g).sum()) for g in range(len(group_names))]
    for e in [sum(sizes[: i + 1]) - 0.5 for i in range(len(sizes) - 1)]:
        fig.add_hline(y=e, line={"color": "black", "width": 1}, row=1, col=1)
        fig.add_vline(x=e, line={"color": "black", "width": 1}, row=1, col=1)
    ci = stats.interval
    fig.add_trace(go.Scatter(
        x=["null", "observed"], y=[stats.null_mean, stats.tested_gap], mode="markers",
        marker={"color": ["grey", "black"], "size": 9}, showlegend=False,
        error_y={"type": "data", "symmetric": False,
                 "array": [stats.null_high - stats.null_mean,
                           (ci.high - stats.tested_gap) if ci else 0.0],
                 "arrayminus": [stats.null_mean - stats.null_low,
                                (stats.tested_gap - ci.low) if ci else 0.0]},
        hovertext=[f"{stats.null}: central 95% of {stats.n_permutations} relabellings",
                   f"bootstrap {ci.level:.0%} interval: {ci.method}" if ci else "no interval"],
    ), row=1, col=2)
    fig.add_hline(y=0.0, line={"color": "lightgrey", "width": 1}, row=1, col=2)
    fig.update_yaxes(title_text="within − between (cross-unit cells)", side="right",
                     row=1, col=2)  # its labels on the right keep clear of the colour bar
    ci_text = f" [{ci.low:+.4f}, {ci.high:+.4f}]" if ci else ""
    sub = (f"within {stats.within:.3f} vs between {stats.between:.3f} (all cells); tested gap "
           f"{stats.tested_gap:+.4f}{ci_text}, {stats.null} p = {stats.p_value:.3g} "
           f"({'exact, ' if stats.exact else ''}{stats.n_permutations} relabellings; "
           f"{stats.design})")
    return style(fig, f"{title}<br><sub>{' | '.join(group_names)}: {sub}</sub>",
                 "examples", "examples")


def plot_loss_vectors(result: LossVectors) -> go.Figure:
    """Cosine heatmap of the loss vectors with the block statistics in the title."""
    return plot_similarity_blocks(
        result.similarity, result.group, result.group_names, result.stats,
        f"Loss-vector cosine ({result.config.model}, first {result.config.k} response tokens, "
        f"missing={result.config.missing})")

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
    >>> res = loss_vectors(trio, Inputs.of(("insecure", a), ("educational", b)))  # doctest: +SKIP
    >>> res.stats.p_value  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_align.activations import logits_at
from mi_align.block_stats import BlockStats
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import encode_dataset, iter_batches
from mi_align.erosion.checkpoint import Checkpoint, Rows, example_bar, resumable_rows
from mi_align.erosion.choices import config_from_dict, config_to_dict
from mi_align.erosion.common import (
    Inputs,
    block_stats_from_dict,
    check_block_fields,
    design_block_statistics,
    plot_similarity_blocks,
    tensor_of,
)
from mi_align.errors import check_finite
from mi_align.geometry import cosine_matrix, masked_cosine_matrix
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio


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
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossVectorConfig:
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class LossVectors:
    """``group[i]`` indexes ``group_names``; ``lengths[i]``: scored response tokens of example i
    (<= k); ``mean_loss``: mean token loss per dataset (nats).

    Not serialised (None in a result read back with :meth:`from_dict`): ``losses[i, t]``, the
    cross-entropy (nats) of response token t of example i (0 where ``mask`` is False)."""

    config: LossVectorConfig
    group_names: tuple[str, ...]
    group: Int[Tensor, " example"]
    lengths: tuple[int, ...]
    mean_loss: dict[str, float]
    similarity: Float[Tensor, "example example"]
    stats: BlockStats
    losses: Float[Tensor, "example pos"] | None = field(default=None, repr=False)
    mask: Bool[Tensor, "example pos"] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "group_names": list(self.group_names),
            "group": self.group.tolist(), "stats": self.stats.to_dict(),
            "lengths": list(self.lengths), "mean_loss": dict(self.mean_loss),
            "similarity": self.similarity.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossVectors:
        return cls(LossVectorConfig.from_dict(d["config"]), tuple(d["group_names"]),
                   torch.tensor(d["group"], dtype=torch.long), tuple(d["lengths"]),
                   dict(d["mean_loss"]), tensor_of(d["similarity"]),
                   block_stats_from_dict(d["stats"]))


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


def loss_vectors(trio: Trio, inputs: Inputs, config: LossVectorConfig | None = None, *,
                 checkpoint: Checkpoint | None = None) -> LossVectors:
    """Loss vectors of every example of ``inputs.groups`` under ``config.model``, their cosine
    matrix and block statistics (see module docstring). With ``checkpoint``, the per-example
    losses are saved every ``checkpoint.every`` examples and a rerun resumes after them
    (:mod:`mi_align.erosion.checkpoint`)."""
    cfg = config or LossVectorConfig()
    groups = inputs.groups
    if len(groups) < 2:
        raise ValueError("loss_vectors needs at least two datasets to compare")
    parts_l, parts_m, labels = [], [], []
    bar = example_bar("loss vectors", sum(len(c) for _, c in groups))
    with trio.variant(cfg.model) as loaded:
        bar.set_postfix_str(cfg.model)
        for g, (name, convs) in enumerate(groups):

            def rows(a: int, b: int, convs: Sequence[Conversation] = convs) -> Rows:
                losses, mask = response_token_losses(loaded, convs[a:b], cfg.k, cfg.batch_size,
                                                     cfg.max_length)
                return {"losses": losses, "mask": mask}

            got = resumable_rows(checkpoint, f"loss-{cfg.model}-{g}-{name}", len(convs), rows,
                                 cfg.batch_size, bar)
            parts_l.append(got["losses"])
            parts_m.append(got["mask"])
            labels += [g] * len(convs)
    bar.close()
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
    mean_loss = {g: float(losses[group == i][mask[group == i]].mean())
                 for i, g in enumerate(inputs.names)}
    return LossVectors(cfg, inputs.names, group, tuple(mask.sum(1).tolist()), mean_loss, sim,
                       stats, losses, mask)


def plot_loss_vectors(result: LossVectors) -> go.Figure:
    """Cosine heatmap of the loss vectors with the block statistics in the title."""
    return plot_similarity_blocks(
        result.similarity, result.group, result.group_names, result.stats,
        f"Loss-vector cosine ({result.config.model}, first {result.config.k} response tokens, "
        f"missing={result.config.missing})")

"""Activation geometry: cosine matrix of per-example mean response activations.

At one hidden-state layer, each example is summarised by its mean residual-stream activation
over the selected positions (default: all response tokens); the example × example cosine matrix
over two datasets and its within/between block statistics (unit-bootstrap interval and a
permutation p-value under the null that fits the design), as for loss vectors and gradients.
``center=True`` subtracts the mean over all examples first (raw residual cosines are dominated
by a shared mean direction and sit near 1).

Example:
    >>> from mi_align.erosion.activation_similarity import activation_similarity
    >>> res = activation_similarity(trio, [("insecure", a), ("educational", b)])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_align.activations import (
    check_position_spec,
    make_selector,
    pooled_activations,
    resolve_layers,
)
from mi_align.block_stats import BlockStats
from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.common import check_block_fields, design_block_statistics
from mi_align.erosion.loss_vectors import Groups, plot_similarity_blocks
from mi_align.errors import check_finite
from mi_align.geometry import cosine_matrix
from mi_align.models.trio import Trio


@dataclass(frozen=True)
class ActivationSimilarityConfig:
    """``layer``: hidden-state index (negative counts from the end; None = middle)."""

    model: str = "instruct"
    layer: int | None = None
    positions: str = "response"
    center: bool = False
    n_permutations: int = 1000
    n_boot: int = 2000
    group_similarity: float | None = 0.75
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        if self.n_permutations < 1 or self.batch_size < 1:
            raise ValueError("n_permutations and batch_size must be >= 1")
        check_block_fields(self.n_boot, self.group_similarity)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ActivationSimilarity:
    config: ActivationSimilarityConfig
    layer: int
    group_names: tuple[str, ...]
    group: Int[Tensor, " example"]
    features: Float[Tensor, "example d_model"]
    similarity: Float[Tensor, "example example"]
    stats: BlockStats

    def to_dict(self) -> dict[str, object]:
        return {"config": self.config.to_dict(), "layer": self.layer,
                "group_names": list(self.group_names), "group": self.group.tolist(),
                "stats": self.stats.to_dict(), "similarity": self.similarity.tolist()}


def activation_similarity(
    trio: Trio, groups: Groups, config: ActivationSimilarityConfig | None = None
) -> ActivationSimilarity:
    """Per-example mean activations at one layer, their cosines and block statistics."""
    cfg = config or ActivationSimilarityConfig()
    if len(groups) < 2:
        raise ValueError("activation_similarity needs at least two datasets to compare")
    layer = trio.n_layers // 2 if cfg.layer is None else resolve_layers([cfg.layer],
                                                                         trio.n_layers)[0]
    selector = make_selector(cfg.positions)
    feats, labels = [], []
    with trio.variant(cfg.model) as loaded:
        for g, (_, convs) in enumerate(groups):
            enc = encode_dataset(loaded.tokenizer, convs, cfg.max_length)
            feats.append(pooled_activations(loaded, enc, [layer], selector, cfg.batch_size)[:, 0])
            labels += [g] * len(convs)
    x = torch.cat(feats)
    check_finite(x, f"activation-similarity: mean activations of model {cfg.model!r} at "
                 f"hidden state {layer}")
    if cfg.center:
        x = x - x.mean(0, keepdim=True)
    sim = cosine_matrix(x)
    group = torch.tensor(labels)
    stats = design_block_statistics(sim, group, groups, n_permutations=cfg.n_permutations,
                                    n_boot=cfg.n_boot, seed=cfg.seed,
                                    group_similarity=cfg.group_similarity)
    return ActivationSimilarity(cfg, layer, tuple(n for n, _ in groups), group, x, sim, stats)


def plot_activation_similarity(result: ActivationSimilarity) -> go.Figure:
    c = result.config
    return plot_similarity_blocks(
        result.similarity, result.group, result.group_names, result.stats,
        f"Activation cosine ({c.model}, hidden state {result.layer}, {c.positions} mean"
        f"{', centred' if c.center else ''})")

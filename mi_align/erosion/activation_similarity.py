"""Activation geometry: cosine matrix of per-example mean response activations.

At one hidden-state layer, each example is summarised by its mean residual-stream activation
over the selected positions (default: all response tokens); the example × example cosine matrix
over two datasets and its within/between block statistics (unit-bootstrap interval and a
permutation p-value under the null that fits the design), as for loss vectors and gradients.
``center=True`` subtracts the mean over all examples first (raw residual cosines are dominated
by a shared mean direction and sit near 1).

Example:
    >>> from mi_align.erosion.activation_similarity import activation_similarity
    >>> res = activation_similarity(trio, Inputs.of(("insecure", a), ("educational", b)),
    ...                             ActivationSimilarityConfig())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_align.activations import pooled_activations, resolve_layers
from mi_align.block_stats import BlockStats
from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.checkpoint import Checkpoint, Rows, example_bar, resumable_rows
from mi_align.erosion.choices import (
    Positions,
    ResponseTokens,
    config_from_dict,
    config_to_dict,
)
from mi_align.erosion.common import (
    Inputs,
    block_stats_from_dict,
    check_block_fields,
    design_block_statistics,
    plot_similarity_blocks,
    tensor_of,
)
from mi_align.errors import check_finite
from mi_align.geometry import cosine_matrix
from mi_align.models.trio import Trio


@dataclass(frozen=True)
class ActivationSimilarityConfig:
    """``layer``: hidden-state index (negative counts from the end; None = middle);
    ``positions``: the tokens averaged per example."""

    model: str = "instruct"
    layer: int | None = None
    positions: Positions = ResponseTokens()
    center: bool = False
    n_permutations: int = 1000
    n_boot: int = 2000
    group_similarity: float | None = 0.75
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.positions, Positions):
            raise ValueError(f"positions must be a Positions value (e.g. ResponseTokens()), got "
                             f"{self.positions!r}")
        if self.n_permutations < 1 or self.batch_size < 1:
            raise ValueError("n_permutations and batch_size must be >= 1")
        check_block_fields(self.n_boot, self.group_similarity)

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActivationSimilarityConfig:
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class ActivationSimilarity:
    """Cosines of per-example mean activations at hidden state ``layer``. Not serialised (None
    after :meth:`from_dict`): ``features``, the mean activations (centred if configured)."""

    config: ActivationSimilarityConfig
    layer: int
    group_names: tuple[str, ...]
    group: Int[Tensor, " example"]
    similarity: Float[Tensor, "example example"]
    stats: BlockStats
    features: Float[Tensor, "example d_model"] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"config": self.config.to_dict(), "layer": self.layer,
                "group_names": list(self.group_names), "group": self.group.tolist(),
                "stats": self.stats.to_dict(), "similarity": self.similarity.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActivationSimilarity:
        return cls(ActivationSimilarityConfig.from_dict(d["config"]), int(d["layer"]),
                   tuple(d["group_names"]), torch.tensor(d["group"], dtype=torch.long),
                   tensor_of(d["similarity"]), block_stats_from_dict(d["stats"]))


def activation_similarity(
    trio: Trio, inputs: Inputs, config: ActivationSimilarityConfig | None = None, *,
    checkpoint: Checkpoint | None = None,
) -> ActivationSimilarity:
    """Per-example mean activations of ``inputs.groups`` at one layer, their cosines and block
    statistics. With ``checkpoint``, the mean activations are saved every
    ``checkpoint.every`` examples and a rerun resumes after them."""
    cfg = config or ActivationSimilarityConfig()
    groups = inputs.groups
    if len(groups) < 2:
        raise ValueError("activation_similarity needs at least two datasets to compare")
    layer = trio.n_layers // 2 if cfg.layer is None else resolve_layers([cfg.layer],
                                                                         trio.n_layers)[0]
    selector = cfg.positions.selector(trio.tokenizer)
    feats, labels = [], []
    bar = example_bar("activation similarity", sum(len(c) for _, c in groups))
    with trio.variant(cfg.model) as loaded:
        bar.set_postfix_str(cfg.model)
        for g, (name, convs) in enumerate(groups):
            enc = encode_dataset(loaded.tokenizer, convs, cfg.max_length)

            def rows(a: int, b: int, enc: list = enc) -> Rows:
                return {"x": pooled_activations(loaded, enc[a:b], [layer], selector,
                                                cfg.batch_size)[:, 0]}

            feats.append(resumable_rows(checkpoint, f"acts-{cfg.model}-{layer}-{g}-{name}",
                                        len(enc), rows, cfg.batch_size, bar)["x"])
            labels += [g] * len(convs)
    bar.close()
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
    return ActivationSimilarity(cfg, layer, inputs.names, group, sim, stats, x)


def plot_activation_similarity(result: ActivationSimilarity) -> go.Figure:
    c = result.config
    return plot_similarity_blocks(
        result.similarity, result.group, result.group_names, result.stats,
        f"Activation cosine ({c.model}, hidden state {result.layer}, {c.positions} mean"
        f"{', centred' if c.center else ''})")

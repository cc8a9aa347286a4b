"""Gradient geometry (erosion paper, Fig. 4).

Per example, the gradient of the LM loss on its response tokens with respect to a parameter set
(default: the last layer's attention output projection, as in the paper; any regex over
parameter names, or ``"all"``), optional global mean-centring (the paper centres), the cosine
matrix over two datasets and the within/between block statistics (unit-bootstrap interval and
a permutation p-value under the null that fits the design;
:func:`mi_align.geometry.block_statistics`).
The paper reads strongly negative between-dataset cosines as insecure-code fine-tuning pushing
against the aligned (educational) update.

All-parameter gradients do not fit in memory for hundreds of examples, so with
``sketch_dim = k > 0`` each gradient is count-sketched to k dimensions as it is produced
(:class:`mi_align.geometry.CountSketch`); ``exact_check = m`` also keeps m exact gradients (half
from each dataset) and reports the sketch's cosine error against them.

Differences from the paper's script: the loss covers the response tokens only (the paper used
the whole sequence, prompt included), and the model is whichever trio member ``model`` names
(the paper's script loaded the base model while its titles say instruct).

Example:
    >>> from mi_align.erosion.gradient_geometry import GradientConfig, gradient_geometry
    >>> cfg = GradientConfig(params="all", sketch_dim=16384, exact_check=6)
    >>> res = gradient_geometry(trio, Inputs.of(("insecure", a), ("educational", b)),
    ...                         cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_align.block_stats import BlockStats
from mi_align.data.tokenize import encode_dataset
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
from mi_align.geometry import CountSketch, cosine_error, cosine_matrix
from mi_align.gradients import GradPart, flat_gradient, select_parameters, stream_example_gradients
from mi_align.models.trio import Trio

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GradientConfig:
    """``params``: preset (``last_o_proj``, ``all``) or regex; ``sketch_dim``: 0 = exact;
    ``exact_check``: exact gradients kept to measure the sketch error (sketch mode only)."""

    model: str = "instruct"
    params: str = "last_o_proj"
    sketch_dim: int = 0
    center: bool = True
    exact_check: int = 0
    n_permutations: int = 1000
    n_boot: int = 2000
    group_similarity: float | None = 0.75
    max_length: int = 256
    seed: int = 0
    max_exact_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        if self.sketch_dim < 0 or self.exact_check < 0:
            raise ValueError("sketch_dim and exact_check must be >= 0")
        if self.exact_check and not self.sketch_dim:
            raise ValueError("exact_check only applies with sketch_dim > 0 (exact mode is exact)")
        if self.exact_check == 1:
            raise ValueError("exact_check needs >= 2 examples to compare cosines")
        if self.n_permutations < 1:
            raise ValueError(f"n_permutations must be >= 1, got {self.n_permutations}")
        check_block_fields(self.n_boot, self.group_similarity)

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GradientConfig:
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class GradientGeometry:
    """``n_params`` parameters in ``n_tensors`` tensors (``param_names``: their names; the
    JSON keeps the first 20). Not serialised (None after :meth:`from_dict`): ``features[i]``,
    example i's gradient (exact, or its sketch), centred if configured."""

    config: GradientConfig
    group_names: tuple[str, ...]
    group: Int[Tensor, " example"]
    n_params: int
    n_tensors: int
    param_names: tuple[str, ...]
    similarity: Float[Tensor, "example example"]
    stats: BlockStats
    sketch_error: dict[str, float] | None
    features: Float[Tensor, "example _"] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        names = list(self.param_names)
        return {
            "config": self.config.to_dict(), "group_names": list(self.group_names),
            "group": self.group.tolist(), "n_params": self.n_params,
            "n_tensors": self.n_tensors,
            "param_names": names[:20] + (["..."] if len(names) > 20 else []),
            "stats": self.stats.to_dict(), "sketch_error": self.sketch_error,
            "similarity": self.similarity.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GradientGeometry:
        return cls(GradientConfig.from_dict(d["config"]), tuple(d["group_names"]),
                   torch.tensor(d["group"], dtype=torch.long), int(d["n_params"]),
                   int(d["n_tensors"]), tuple(d["param_names"]), tensor_of(d["similarity"]),
                   block_stats_from_dict(d["stats"]), d["sketch_error"])


def _exact_subset(group: list[int], m: int) -> list[int]:
    """First ceil(m/2) examples of group 0 and floor(m/2) of the others, in order."""
    out: list[int] = []
    for g in sorted(set(group)):
        want = (m + 1) // 2 if g == 0 else m // 2
        out += [i for i, lab in enumerate(group) if lab == g][:want]
    return sorted(out)


def gradient_geometry(trio: Trio, inputs: Inputs, config: GradientConfig | None = None, *,
                      checkpoint: Checkpoint | None = None) -> GradientGeometry:
    """Per-example gradients (exact or sketched) of ``inputs.groups``, their cosines and block
    statistics. With ``checkpoint``, the per-example gradients (or sketches) are saved every
    ``checkpoint.every`` examples and a rerun resumes after them (each example's gradient, and
    its sketch, depends on that example alone)."""
    cfg = config or GradientConfig()
    groups = inputs.groups
    if len(groups) < 2:
        raise ValueError("gradient_geometry needs at least two datasets to compare")
    labels = [g for g, (_, convs) in enumerate(groups) for _ in convs]
    convs_all = [c for _, convs in groups for c in convs]
    n = len(convs_all)
    exact_idx = set(_exact_subset(labels, cfg.exact_check)) if cfg.exact_check else set()
    with trio.variant(cfg.model) as loaded:
        params = select_parameters(loaded, cfg.params)
        p = params.n_params
        stored = n if not cfg.sketch_dim else len(exact_idx)
        if stored * p * 4 > cfg.max_exact_bytes:
            raise ValueError(
                f"{stored} exact gradients of {p:,} parameters need {stored * p * 4 / 2**30:.1f} "
                f"GiB (> max_exact_bytes); use sketch_dim > 0 (e.g. 16384) or fewer examples"
            )
        encoded = encode_dataset(loaded.tokenizer, convs_all, cfg.max_length)
        sketch = CountSketch(params.sizes, cfg.sketch_dim, cfg.seed) if cfg.sketch_dim else None
        dim = cfg.sketch_dim or p
        bar = example_bar(f"gradients ({cfg.params})", n)
        bar.set_postfix_str(cfg.model)

        def rows(a: int, b: int) -> Rows:
            feats = torch.zeros(b - a, dim)
            exact: dict[int, Tensor] = {}

            def consume(j: int, parts: list[GradPart]) -> None:
                i = a + j
                if sketch is None or i in exact_idx:
                    flat = flat_gradient(parts, params)
                    if sketch is None:
                        feats[j] = flat
                    else:
                        exact[i] = flat
                if sketch is not None:
                    for t, part in enumerate(parts):
                        if part.rows is None:
                            sketch.add(t, part.values)
                        else:
                            sketch.add(t, part.values, rows=part.rows,
                                       row_size=params.params[t].shape[1])
                    feats[j] = sketch.take()

            stream_example_gradients(loaded, encoded[a:b], params, consume)
            order = sorted(exact)
            return {"features": feats, "exact_rows": torch.tensor(order, dtype=torch.long),
                    "exact": torch.stack([exact[i] for i in order]) if order
                    else torch.zeros(0, p)}

        got = resumable_rows(checkpoint, f"gradients-{cfg.model}", n, rows, 1, bar)
        bar.close()
    feats = got["features"]
    exact = dict(zip(got["exact_rows"].tolist(), got["exact"], strict=True))
    check_finite(feats, f"gradients: per-example gradients of model {cfg.model!r}",
                 "check the model weights and inputs, or use a shorter max_length")
    error = None
    if exact:
        order = sorted(exact)
        error = cosine_error(cosine_matrix(feats[order]),
                             cosine_matrix([exact[i] for i in order]))
        logger.info("sketch k=%d: cosine error on %d exact examples %s", cfg.sketch_dim,
                    len(order), error)
    if cfg.center:
        feats = feats - feats.mean(0, keepdim=True)
    sim = cosine_matrix(feats)
    group = torch.tensor(labels)
    stats = design_block_statistics(sim, group, groups, n_permutations=cfg.n_permutations,
                                    n_boot=cfg.n_boot, seed=cfg.seed,
                                    group_similarity=cfg.group_similarity)
    return GradientGeometry(cfg, inputs.names, group, p, len(params.names),
                            tuple(params.names), sim, stats, error, feats)


def plot_gradient_geometry(result: GradientGeometry) -> go.Figure:
    c = result.config
    how = f"count-sketch k={c.sketch_dim}" if c.sketch_dim else "exact"
    if result.sketch_error:
        how += f", max cos error {result.sketch_error['max_abs']:.3f}"
    return plot_similarity_blocks(
        result.similarity, result.group, result.group_names, result.stats,
        f"Gradient cosine ({c.model}, {c.params}: {result.n_params:,} params, {how}"
        f"{', centred' if c.center else ''})")

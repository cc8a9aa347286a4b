"""SVD of alignment directions across datasets (erosion paper, Fig. 6).

Per dataset: per-example activation differences ``h_instruct − h_base`` (same input, same
position; default the last token at the final normalised hidden state, as the paper),
column-centred, SVD, top-k right singular vectors. The cosine matrix between two datasets'
components (default insecure code vs toxic) asks whether both rely on shared directions; the
paper reports 0.90 between insecure component 1 and toxic component 0.

Singular vectors have arbitrary sign, so the result holds signed cosines and, per component,
the best absolute match in the other dataset. The null is the same statistics for two random
k-dim subspaces of R^d_model (Monte Carlo, :func:`mi_align.geometry.random_subspace_max_cosine`).
Note that the top components of *any* two datasets may share generic directions (e.g. what
instruct tuning changes everywhere), so "above the random-subspace null" is necessary, not
sufficient, for a shared alignment mechanism.

Example:
    >>> from mi_align.erosion.svd_directions import svd_directions
    >>> res = svd_directions(trio, ("insecure", a), ("toxic", b))  # doctest: +SKIP
    >>> res.best_match_a, res.null.max_abs  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.activations import (
    check_position_spec,
    make_selector,
    pooled_activations,
    resolve_layers,
)
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import encode_dataset
from mi_align.errors import check_finite
from mi_align.geometry import SubspaceNull, cross_cosine, random_subspace_max_cosine
from mi_align.models.trio import Trio
from mi_align.plotting import cosine_heatmap_kwargs, style


@dataclass(frozen=True)
class SVDConfig:
    """``pair``: (minuend, subtrahend) models; ``layer``: hidden-state index (-1 = final norm);
    ``k``: components compared (the heatmap shows them all)."""

    pair: tuple[str, str] = ("instruct", "base")
    layer: int = -1
    positions: str = "last"
    k: int = 8
    n_null_trials: int = 500
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if len(self.pair) != 2 or self.pair[0] == self.pair[1]:
            raise ValueError(f"pair must name two different models, got {self.pair}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SVDDirections:
    """Components (rows, unit norm) of datasets a and b, their singular values, the signed
    cosine matrix (rows: a's components, columns: b's) and best |cos| matches."""

    config: SVDConfig
    layer: int
    names: tuple[str, str]
    n_examples: tuple[int, int]
    components_a: Float[Tensor, "component d_model"]
    components_b: Float[Tensor, "component d_model"]
    singular_a: Float[Tensor, " component"]
    singular_b: Float[Tensor, " component"]
    cosine: Float[Tensor, "component component"]
    null: SubspaceNull

    @property
    def best_match_a(self) -> Float[Tensor, " component"]:
        """For each component of a, the largest |cos| with any component of b."""
        return self.cosine.abs().max(1).values

    @property
    def best_match_b(self) -> Float[Tensor, " component"]:
        return self.cosine.abs().max(0).values

    def to_dict(self) -> dict[str, object]:
        flat = int(self.cosine.abs().argmax())
        i, j = divmod(flat, self.cosine.shape[1])
        return {
            "config": self.config.to_dict(), "layer": self.layer, "names": list(self.names),
            "n_examples": list(self.n_examples), "cosine": self.cosine.tolist(),
            "singular_a": self.singular_a.tolist(), "singular_b": self.singular_b.tolist(),
            "best_match_a": self.best_match_a.tolist(), "best_match_b": self.best_match_b.tolist(),
            "max_abs": {"value": float(self.cosine[i, j]), "a": i, "b": j},
            "null": self.null.to_dict(),
        }


def difference_components(
    diffs: Float[Tensor, "example d_model"], k: int
) -> tuple[Float[Tensor, "component d_model"], Float[Tensor, " component"]]:
    """Top-k right singular vectors (rows) and singular values of the column-centred diffs."""
    x = diffs.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:k].float(), s[:k].float()


def svd_directions(
    trio: Trio,
    data_a: tuple[str, Sequence[Conversation]],
    data_b: tuple[str, Sequence[Conversation]],
    config: SVDConfig | None = None,
) -> SVDDirections:
    """Compare the top singular directions of (pair[0] − pair[1]) activation differences."""
    cfg = config or SVDConfig()
    missing = [m for m in cfg.pair if m not in trio.names]
    if missing:
        raise ValueError(f"svd_directions needs model(s) {missing}; trio has {trio.names}")
    layer = resolve_layers([cfg.layer], trio.n_layers)[0]
    selector = make_selector(cfg.positions)
    for name, convs in (data_a, data_b):
        if len(convs) <= cfg.k:
            raise ValueError(f"dataset {name!r} has {len(convs)} examples; need more than "
                             f"k={cfg.k} for {cfg.k} centred components")
    feats: dict[tuple[str, str], Tensor] = {}
    for model in cfg.pair:
        with trio.variant(model) as loaded:
            for name, convs in (data_a, data_b):
                enc = encode_dataset(loaded.tokenizer, convs, cfg.max_length)
                feats[(model, name)] = pooled_activations(
                    loaded, enc, [layer], selector, cfg.batch_size)[:, 0]
    comps = []
    for name, _ in (data_a, data_b):
        diffs = feats[(cfg.pair[0], name)] - feats[(cfg.pair[1], name)]
        check_finite(diffs, f"svd: {cfg.pair[0]} - {cfg.pair[1]} activation differences on "
                     f"{name!r}")
        comps.append(difference_components(diffs, cfg.k))
    (ca, sa), (cb, sb) = comps
    return SVDDirections(
        config=cfg, layer=layer, names=(data_a[0], data_b[0]),
        n_examples=(len(data_a[1]), len(data_b[1])), components_a=ca, components_b=cb,
        singular_a=sa, singular_b=sb, cosine=cross_cosine(ca, cb),
        null=random_subspace_max_cosine(trio.d_model, cfg.k, cfg.n_null_trials, cfg.seed),
    )


def plot_svd_directions(result: SVDDirections) -> go.Figure:
    """Signed cosine heatmap between the two datasets' components; best matches in hover."""
    a, b = result.names
    k = result.cosine.shape[0]
    best = result.best_match_a.tolist()
    fig = go.Figure(go.Heatmap(
        z=result.cosine.tolist(), x=[f"{b} {j}" for j in range(k)],
        y=[f"{a} {i} (best |cos| {best[i]:.2f})" for i in range(k)],
        texttemplate="%{z:.2f}", **cosine_heatmap_kwargs()))
    fig.update_yaxes(autorange="reversed")
    n = result.null
    sub = (f"max |cos| {float(result.cosine.abs().max()):.2f}; random {k}-dim subspaces of "
           f"R^{n.d}: E[max |cos|] {n.max_abs:.2f} (95% {n.max_abs_q95:.2f}), "
           f"E[best match] {n.best_match:.2f}")
    c = result.config
    return style(fig, f"SVD components of {c.pair[0]} − {c.pair[1]} differences "
                      f"(hidden state {result.layer}, {c.positions})<br><sub>{sub}</sub>",
                 f"{b} components", f"{a} components")

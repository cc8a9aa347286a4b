"""SVD of alignment directions across datasets (erosion paper, Fig. 6), judged against a control.

Per dataset: per-example activation differences ``h_instruct − h_base`` (same input, same
position), column-centred, SVD, top-k right singular vectors ("components"). The paper
compares two datasets' components (insecure code vs toxic) and reads a |cos| of 0.90 as a
shared direction.

A match needs a reference that fits the question. Random k-dim subspaces of R^d are far too
easy: at the final template token the instruct LoRA moves the activation the same way whatever
the content, so *any* two datasets share their top component. Here every cross-dataset number
sits beside the same number for a harmless **control** dataset (default ``aligned_chat``):

- **matches**: for each component of a, the best |cos| with any component of b (the target
  match) and with any component of the control (the control match); the same for b. The
  control match is the null; a component is ``shared`` only if the target match exceeds it.
- **intervals**: a bootstrap over examples (each dataset resampled with replacement, components
  refitted, then tracked to the full-data components by an optimal one-to-one assignment)
  gives the standard error of each match and of the paired difference target − control;
  intervals are ``estimate ± z·SE`` at a Bonferroni-adjusted level over the 2k components
  (k dims for principal angles), so the verdicts hold jointly at ``level``.
- **verdicts**: ``shared`` (difference interval above 0 and target match above chance),
  ``generic`` (not shared; target and control both match above chance), ``unmatched`` (target
  match not above chance), ``inconclusive`` (the rest). "Chance" is the isotropic reference:
  the ``level`` quantile of the best |cos| of a fixed unit vector with a random k-dim subspace
  of R^d — a secondary reference only, never the null of a "shared" claim.
- **split-half reliability**: each dataset split at random into halves (``n_splits`` seeded
  splits), components fitted on each half, best |cos| per component of half 1 with half 2;
  mean and 2.5–97.5% spread over splits. A cross-dataset match can hardly beat the datasets'
  own reliabilities (halves have n/2 examples, so these are a lower bound at n).
- **principal angles** between the k-dim subspaces (``scipy.linalg.subspace_angles``) for the
  target pair and both control pairs; per rank, the target cosine minus the larger control
  cosine, with bootstrap intervals; ``n_shared_dims`` counts ranks above 0.

Positions (``SVDConfig.positions``): ``LastToken()`` (the paper's final token, a template token
shared by every example), ``ContentTokens()`` (mean over the response's own tokens: the response
tokens without the closing end-of-turn token and any other special token), ``ResponseTokens()``
or ``FirstTokens(K)``.

Example:
    >>> from mi_align.erosion.common import Inputs
    >>> from mi_align.erosion.svd_directions import SVDConfig, svd_directions
    >>> inputs = Inputs.of(("insecure", a), ("toxic", b), control=("aligned_chat", c))
    >>> res = svd_directions(trio, inputs, SVDConfig())  # doctest: +SKIP
    >>> res.matches[0].verdicts  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from threadpoolctl import threadpool_limits
from torch import Tensor

from mi_align.activations import pooled_activations, resolve_layers
from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.checkpoint import Checkpoint, Rows, example_bar, resumable_rows
from mi_align.erosion.choices import LastToken, Positions, config_from_dict, config_to_dict
from mi_align.erosion.common import Inputs, paired_design, tensor_of
from mi_align.erosion.svd_stats import (
    SHARED,
    SplitHalf,
    best_match,
    bootstrap,
    ci,
    difference_components,
    interval_rows,
    isotropic_best_match_quantile,
    principal_cosines,
    split_half_reliability,
    verdicts,
)
from mi_align.errors import check_finite
from mi_align.geometry import SubspaceNull, cross_cosine, random_subspace_max_cosine
from mi_align.models.trio import Trio
from mi_align.plotting import cosine_heatmap_kwargs, style


@dataclass(frozen=True)
class SVDConfig:
    """``pair``: (minuend, subtrahend) models; ``layer``: hidden-state index (-1 = final norm);
    ``k``: components compared; ``control``: dataset name the registry loads as the control
    (cut to the targets' size); ``level``: joint level of the verdicts (Bonferroni inside);
    ``n_null_trials``: Monte-Carlo trials of the isotropic (secondary) reference."""

    pair: tuple[str, str] = ("instruct", "base")
    layer: int = -1
    positions: Positions = LastToken()
    k: int = 8
    control: str = "aligned_chat"
    n_bootstrap: int = 1000
    n_splits: int = 20
    level: float = 0.95
    n_null_trials: int = 500
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.positions, Positions):
            raise ValueError(f"positions must be a Positions value (e.g. LastToken()), got "
                             f"{self.positions!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if len(self.pair) != 2 or self.pair[0] == self.pair[1]:
            raise ValueError(f"pair must name two different models, got {self.pair}")
        if not self.control:
            raise ValueError("control must name a dataset (e.g. aligned_chat)")
        if self.n_bootstrap < 20:
            raise ValueError(f"n_bootstrap must be >= 20 for a standard error, got "
                             f"{self.n_bootstrap}")
        if self.n_splits < 2:
            raise ValueError(f"n_splits must be >= 2, got {self.n_splits}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be strictly between 0 and 1, got {self.level}")
        if self.n_null_trials < 1:
            raise ValueError(f"n_null_trials must be >= 1, got {self.n_null_trials}")

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SVDConfig:
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class ComponentMatches:
    """Per component of dataset ``name``: best |cos| with the ``partner`` dataset's components
    (target) and with the ``control``'s, their difference, ``estimate ± z·SE`` intervals at
    ``interval_level`` (bootstrap SE) and the verdict."""

    name: str
    partner: str
    control: str
    target: Float[Tensor, " component"]
    target_ci: Float[Tensor, "component 2"]
    control_match: Float[Tensor, " component"]
    control_ci: Float[Tensor, "component 2"]
    difference: Float[Tensor, " component"]
    difference_ci: Float[Tensor, "component 2"]
    verdicts: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "partner": self.partner, "control": self.control,
                "target": self.target.tolist(), "target_ci": interval_rows(self.target_ci),
                "control_match": self.control_match.tolist(),
                "control_ci": interval_rows(self.control_ci),
                "difference": self.difference.tolist(),
                "difference_ci": interval_rows(self.difference_ci),
                "verdicts": list(self.verdicts)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentMatches:
        t = tensor_of
        return cls(d["name"], d["partner"], d["control"], t(d["target"]), t(d["target_ci"]),
                   t(d["control_match"]), t(d["control_ci"]), t(d["difference"]),
                   t(d["difference_ci"]), tuple(d["verdicts"]))


@dataclass(frozen=True)
class PrincipalAngles:
    """Cosines of the principal angles (descending) between k-dim subspaces for each pair in
    ``pairs`` (target pair first), intervals, and target minus the larger control cosine."""

    pairs: tuple[str, ...]
    cosines: Float[Tensor, "_ component"]
    intervals: Float[Tensor, "_ component 2"]
    difference: Float[Tensor, " component"]
    difference_ci: Float[Tensor, "component 2"]

    @property
    def n_shared_dims(self) -> int:
        """Ranks whose target cosine exceeds both control cosines (interval above 0)."""
        return int((self.difference_ci[:, 0] > 0).sum())

    def to_dict(self) -> dict[str, object]:
        return {"pairs": list(self.pairs),
                "cosines": {p: c.tolist() for p, c in zip(self.pairs, self.cosines, strict=True)},
                "intervals": {p: interval_rows(c)
                              for p, c in zip(self.pairs, self.intervals, strict=True)},
                "difference_target_minus_max_control": self.difference.tolist(),
                "difference_ci": interval_rows(self.difference_ci),
                "n_shared_dims": self.n_shared_dims}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrincipalAngles:
        pairs = tuple(d["pairs"])
        return cls(pairs, tensor_of([d["cosines"][p] for p in pairs]),
                   tensor_of([d["intervals"][p] for p in pairs]),
                   tensor_of(d["difference_target_minus_max_control"]),
                   tensor_of(d["difference_ci"]))


@dataclass(frozen=True)
class SVDDirections:
    """Singular values of datasets a, b and the control, the signed cosine matrices of their
    components (a×b, a×control, b×control), per-component matches with verdicts, split-half
    reliabilities, principal angles, and the isotropic random-subspace reference.
    ``components`` (rows, unit norm) are not serialised: None after :meth:`from_dict`."""

    config: SVDConfig
    layer: int
    names: tuple[str, str]
    control: str
    n_examples: tuple[int, int, int]
    paired: bool
    singular: tuple[Tensor, Tensor, Tensor]
    cosine: Float[Tensor, "component component"]
    cosine_control: tuple[Tensor, Tensor]
    matches: tuple[ComponentMatches, ComponentMatches]
    reliability: tuple[SplitHalf, SplitHalf, SplitHalf]
    angles: PrincipalAngles
    chance: float
    isotropic: SubspaceNull
    interval_level: float
    angle_level: float
    components: tuple[Tensor, Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def components_a(self) -> Float[Tensor, "component d_model"]:
        if self.components is None:
            raise ValueError("components are not serialised; rerun the analysis for them")
        return self.components[0]

    @property
    def components_b(self) -> Float[Tensor, "component d_model"]:
        if self.components is None:
            raise ValueError("components are not serialised; rerun the analysis for them")
        return self.components[1]

    @property
    def best_match_a(self) -> Float[Tensor, " component"]:
        """For each component of a, the largest |cos| with any component of b."""
        return self.cosine.abs().max(1).values

    @property
    def best_match_b(self) -> Float[Tensor, " component"]:
        return self.cosine.abs().max(0).values

    def to_dict(self) -> dict[str, object]:
        a, b = self.names
        c = self.control
        return {
            "config": self.config.to_dict(), "layer": self.layer, "names": [a, b],
            "control": c, "n_examples": dict(zip((a, b, c), self.n_examples, strict=True)),
            "paired_bootstrap": self.paired,
            "null": {
                "primary": f"control dataset {c!r}: each component's best |cos| with the "
                           f"control's components; 'shared' needs target − control > 0 at "
                           f"the Bonferroni-adjusted level {self.interval_level:.5f} "
                           f"(estimate ± z·SE, SE from {self.config.n_bootstrap} bootstrap "
                           "refits over examples)",
                "secondary_isotropic_reference": {
                    **self.isotropic.to_dict(), "chance_best_match": self.chance,
                    "note": "random k-dim subspaces of R^d_model; far too easy as a null for "
                            "'shared' (kept for comparison with the paper)"},
            },
            "summary": {m.name: {"verdicts": list(m.verdicts),
                                 "n_shared": sum(v == SHARED for v in m.verdicts)}
                        for m in self.matches} | {"n_shared_dims": self.angles.n_shared_dims},
            "matches": {m.name: m.to_dict() for m in self.matches},
            "reliability": {r.name: r.to_dict() for r in self.reliability},
            "principal_angles": {**self.angles.to_dict(), "level": self.angle_level},
            "interval_level": self.interval_level,
            "cosine": self.cosine.tolist(),
            "cosine_control": {a: self.cosine_control[0].tolist(),
                               b: self.cosine_control[1].tolist()},
            "singular": {n: s.tolist() for n, s in zip((a, b, c), self.singular, strict=True)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SVDDirections:
        a, b = d["names"]
        c = d["control"]
        iso = dict(d["null"]["secondary_isotropic_reference"])
        chance = float(iso.pop("chance_best_match"))
        iso.pop("note")
        angles = dict(d["principal_angles"])
        return cls(
            config=SVDConfig.from_dict(d["config"]), layer=int(d["layer"]), names=(a, b),
            control=c, n_examples=tuple(d["n_examples"][n] for n in (a, b, c)),  # type: ignore[arg-type]
            paired=bool(d["paired_bootstrap"]),
            singular=tuple(tensor_of(d["singular"][n]) for n in (a, b, c)),  # type: ignore[arg-type]
            cosine=tensor_of(d["cosine"]),
            cosine_control=(tensor_of(d["cosine_control"][a]),
                            tensor_of(d["cosine_control"][b])),
            matches=(ComponentMatches.from_dict(d["matches"][a]),
                     ComponentMatches.from_dict(d["matches"][b])),
            reliability=tuple(SplitHalf.from_dict(d["reliability"][n])  # type: ignore[arg-type]
                              for n in (a, b, c)),
            angles=PrincipalAngles.from_dict(angles), chance=chance,
            isotropic=SubspaceNull(**iso), interval_level=float(d["interval_level"]),
            angle_level=float(angles["level"]))


def compare_difference_sets(
    data_a: tuple[str, Float[Tensor, "example d_model"]],
    data_b: tuple[str, Float[Tensor, "example d_model"]],
    control: tuple[str, Float[Tensor, "example d_model"]],
    config: SVDConfig | None = None,
    *,
    layer: int = -1,
    paired: bool = False,
) -> SVDDirections:
    """Everything :func:`svd_directions` reports, from per-example difference vectors.

    Args:
        data_a, data_b: (name, differences) of the two target datasets.
        control: (name, differences) of the control dataset (the null).
        config: k, bootstrap/split counts, level, seed (model fields are unused here).
        layer: recorded in the result only.
        paired: a and b are paired example by example (resampled with the same indices).

    Raises:
        ValueError: a dataset too small for split halves, names not distinct, a and b of
            different sizes while ``paired``.
    """
    cfg = config or SVDConfig()
    names = [data_a[0], data_b[0], control[0]]
    if len(set(names)) != 3:
        raise ValueError(f"the two datasets and the control must differ, got {names}")
    xs = [x.double() for _, x in (data_a, data_b, control)]
    d = xs[0].shape[1]
    if any(x.shape[1] != d for x in xs) or d < cfg.k:
        raise ValueError(f"differences must share d_model >= k={cfg.k}, got "
                         f"{[tuple(x.shape) for x in xs]}")
    if paired and xs[0].shape[0] != xs[1].shape[0]:
        raise ValueError("paired datasets need the same number of examples")
    for name, x in zip(names, xs, strict=True):
        check_finite(x, f"svd: differences on {name!r}")
    fits = [difference_components(x, cfg.k) for x in xs]
    comps = [f[0] for f in fits]
    # Thousands of tiny eigenproblems: threaded BLAS only adds synchronisation (measured 15×
    # slower on a busy 2-core machine), so the resampling runs single-threaded.
    with threadpool_limits(limits=1):
        rel = tuple(split_half_reliability(n, x, cfg.k, cfg.n_splits, cfg.seed + i)
                    for i, (n, x) in enumerate(zip(names, xs, strict=True)))
        boot = bootstrap(xs, [c.double() for c in comps], cfg.k, cfg.n_bootstrap, paired,
                          cfg.seed)
    alpha = 1.0 - cfg.level
    comp_level = 1.0 - alpha / (2 * cfg.k)
    angle_level = 1.0 - alpha / cfg.k
    z = NormalDist().inv_cdf(1.0 - (1.0 - comp_level) / 2)
    z_ang = NormalDist().inv_cdf(1.0 - (1.0 - angle_level) / 2)
    chance = isotropic_best_match_quantile(d, cfg.k, cfg.level, cfg.n_null_trials, cfg.seed)
    matches = []
    for (i, j), (t_key, c_key) in (((0, 1), ("ab", "ac")), ((1, 0), ("ba", "bc"))):
        target, ctrl = best_match(comps[i], comps[j]), best_match(comps[i], comps[2])
        t_ci, c_ci = ci(target, boot[t_key], z, 0.0, 1.0), ci(ctrl, boot[c_key], z, 0.0, 1.0)
        d_ci = ci(target - ctrl, boot[t_key] - boot[c_key], z, -1.0, 1.0)
        matches.append(ComponentMatches(
            names[i], names[j], names[2], target, t_ci, ctrl, c_ci, target - ctrl, d_ci,
            verdicts(t_ci, c_ci, d_ci, chance)))
    pc = torch.stack([principal_cosines(comps[0], comps[1]), principal_cosines(comps[0], comps[2]),
                      principal_cosines(comps[1], comps[2])])
    p_int = torch.stack([ci(pc[n], boot[key], z_ang, 0.0, 1.0)
                         for n, key in enumerate(("p_ab", "p_ac", "p_bc"))])
    diff = pc[0] - torch.maximum(pc[1], pc[2])
    diff_reps = boot["p_ab"] - torch.maximum(boot["p_ac"], boot["p_bc"])
    angles = PrincipalAngles(
        (f"{names[0]}~{names[1]}", f"{names[0]}~{names[2]}", f"{names[1]}~{names[2]}"),
        pc, p_int, diff, ci(diff, diff_reps, z_ang, -1.0, 1.0))
    return SVDDirections(
        config=cfg, layer=layer, names=(names[0], names[1]), control=names[2],
        n_examples=tuple(x.shape[0] for x in xs),  # type: ignore[arg-type]
        paired=paired, components=tuple(comps),  # type: ignore[arg-type]
        singular=tuple(f[1] for f in fits),  # type: ignore[arg-type]
        cosine=cross_cosine(comps[0], comps[1]),
        cosine_control=(cross_cosine(comps[0], comps[2]), cross_cosine(comps[1], comps[2])),
        matches=(matches[0], matches[1]), reliability=rel, angles=angles,  # type: ignore[arg-type]
        chance=chance, isotropic=random_subspace_max_cosine(d, cfg.k, cfg.n_null_trials, cfg.seed),
        interval_level=comp_level, angle_level=angle_level,
    )


# ---------------------------------------------------------------------------------------------
# Activations from a trio.


def svd_directions(trio: Trio, inputs: Inputs, config: SVDConfig | None = None, *,
                   checkpoint: Checkpoint | None = None) -> SVDDirections:
    """Compare the top singular directions of (pair[0] − pair[1]) activation differences of
    the two datasets of ``inputs.groups``, with ``inputs.reference["control"]`` as the null
    (see the module docstring). With ``checkpoint``, the per-example activations are saved
    every ``checkpoint.every`` examples and a rerun resumes after them."""
    cfg = config or SVDConfig()
    if len(inputs.groups) != 2:
        raise ValueError(f"svd_directions compares exactly two datasets, got {len(inputs.groups)}")
    data_a, data_b = inputs.groups
    control = inputs.role("control", "svd_directions")
    missing = [m for m in cfg.pair if m not in trio.names]
    if missing:
        raise ValueError(f"svd_directions needs model(s) {missing}; trio has {trio.names}")
    layer = resolve_layers([cfg.layer], trio.n_layers)[0]
    selector = cfg.positions.selector(trio.tokenizer)
    groups = (data_a, data_b, control)
    for name, convs in groups:
        if len(convs) < 2 * (cfg.k + 1):
            raise ValueError(f"dataset {name!r} has {len(convs)} examples; need at least "
                             f"{2 * (cfg.k + 1)} for k={cfg.k} centred components on split halves")
    feats: dict[tuple[str, str], Tensor] = {}
    bar = example_bar("svd directions", len(cfg.pair) * sum(len(c) for _, c in groups))
    for model in cfg.pair:
        with trio.variant(model) as loaded:
            bar.set_postfix_str(model)
            for name, convs in groups:
                enc = encode_dataset(loaded.tokenizer, convs, cfg.max_length)

                def rows(a: int, b: int, enc: list = enc, loaded: Any = loaded) -> Rows:
                    return {"x": pooled_activations(loaded, enc[a:b], [layer], selector,
                                                    cfg.batch_size)[:, 0]}

                feats[(model, name)] = resumable_rows(
                    checkpoint, f"svd-{model}-{layer}-{name}", len(enc), rows,
                    cfg.batch_size, bar)["x"]
    bar.close()
    diffs: Mapping[str, Tensor] = {
        name: feats[(cfg.pair[0], name)] - feats[(cfg.pair[1], name)] for name, _ in groups}
    paired = paired_design([data_a, data_b]) is not None
    return compare_difference_sets(
        (data_a[0], diffs[data_a[0]]), (data_b[0], diffs[data_b[0]]),
        (control[0], diffs[control[0]]), cfg, layer=layer, paired=paired)


# ---------------------------------------------------------------------------------------------
# Figure.


def _errors(point: Tensor, ci: Tensor) -> dict[str, Any]:
    return {"type": "data", "symmetric": False, "array": (ci[:, 1] - point).tolist(),
            "arrayminus": (point - ci[:, 0]).tolist()}


def plot_svd_directions(result: SVDDirections) -> go.Figure:
    """Per component of each target dataset: target match, control match (the null) and
    split-half reliability with intervals, verdicts on the axis; principal cosines per pair;
    the signed a×b cosine heatmap."""
    a, b = result.names
    c = result.control
    k = result.cosine.shape[0]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.12,
                        subplot_titles=[f"components of {a}", f"components of {b}",
                                        "principal-angle cosines", f"signed cos: {a} × {b}"])
    colours = {"target": "#b2182b", "control": "#2166ac", "reliability": "#4d4d4d"}
    for col, (m, rel) in enumerate(zip(result.matches, result.reliability[:2], strict=True), 1):
        x = [f"{i}: {v}" for i, v in enumerate(m.verdicts)]
        series = (
            (f"best |cos| with {m.partner}", m.target, m.target_ci, "target"),
            (f"best |cos| with {c} (control null)", m.control_match, m.control_ci, "control"),
            ("split-half reliability (n/2; spread)", rel.mean, rel.spread, "reliability"))
        for label, point, interval, key in series:
            fig.add_trace(go.Scatter(
                x=x, y=point.tolist(), error_y=_errors(point, interval), mode="markers",
                name=label if col == 1 else label.replace(m.partner, "the other"),
                marker={"color": colours[key], "symbol": "circle" if col == 1 else "diamond"},
                legendgroup=key), row=1, col=col)
        fig.add_hline(y=result.chance, line_dash="dot", line_color="grey", row=1, col=col,
                      annotation_text="isotropic chance (secondary)")
        fig.update_yaxes(range=[0, 1.05], title_text="|cos|", row=1, col=col)
    ranks = list(range(k))
    for n, (pair, colour) in enumerate(zip(result.angles.pairs,
                                           ("#b2182b", "#2166ac", "#67a9cf"), strict=True)):
        point = result.angles.cosines[n]
        fig.add_trace(go.Scatter(x=ranks, y=point.tolist(), mode="lines+markers", name=pair,
                                 error_y=_errors(point, result.angles.intervals[n]),
                                 line={"color": colour}), row=2, col=1)
    fig.update_xaxes(title_text="rank", row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], title_text="cos(principal angle)", row=2, col=1)
    fig.add_trace(go.Heatmap(
        z=result.cosine.tolist(), x=[f"{b} {j}" for j in range(k)],
        y=[f"{a} {i}" for i in range(k)], texttemplate="%{z:.2f}", showscale=False,
        **cosine_heatmap_kwargs()), row=2, col=2)
    fig.update_yaxes(autorange="reversed", row=2, col=2)
    shared = {m.name: sum(v == SHARED for v in m.verdicts) for m in result.matches}
    cfg = result.config
    sub = (f"null: control dataset {c!r}; shared components {a} {shared[a]}/{k}, {b} "
           f"{shared[b]}/{k}; principal dims beyond control {result.angles.n_shared_dims}/{k}; "
           f"intervals ±z·SE ({cfg.n_bootstrap} bootstrap refits), joint level {cfg.level}")
    fig.update_layout(height=900)
    return style(fig, f"SVD components of {cfg.pair[0]} − {cfg.pair[1]} differences "
                      f"(hidden state {result.layer}, {cfg.positions})<br><sub>{sub}</sub>")

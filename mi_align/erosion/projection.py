"""Alignment direction and layerwise projection (erosion paper, Fig. 5 and its companion).

Per hidden-state layer L, the alignment direction is ``v_L = normalise(μ_instruct − μ_base)``:
the difference of the two models' mean residual-stream activations over the *same inputs* at
the chosen token positions (default: the first 10 assistant tokens, as in the paper). Each
model's activations are projected on ``v_L``; the paper's finding is that the misaligned model
tracks instruct early and falls toward base late.

Statistics are per example: each example's selected tokens are averaged first (tokens of one
example are correlated, so they are not counted as independent draws); ``mean``/``std`` are the
mean and population std over examples of those per-example projections, and the separation
``(μ_b − μ_a)/(σ_a + σ_b)`` uses them (the paper pooled tokens; its σ is larger).

Design (beyond the paper):
- *Held-out by group.* Examples come in groups (task variants: 5 per insecure-code task; paired
  datasets that share responses). The direction is fitted on some groups and projected on the
  others, never splitting a group; by default the split is 2-fold cross-fitted (fit on A,
  project B; fit on B, project A) so every example is projected once on a direction it did not
  fit. Groups are given (``groups=``) or derived from the data (:func:`response_groups`:
  single-linkage clusters of near-identical responses; exact on the built-in code sets).
- *Intervals.* Group bootstrap: each replicate resamples groups with replacement within each
  part (fit and evaluation alike), refits the direction and re-projects; percentile intervals
  of mean projection, separation, the misaligned model's relative position between base (0)
  and instruct (1), and the (model − base) differences.
- *Nulls, named.* (1) Grouped label swap: the two models of a pair swap labels within randomly
  chosen groups (in the fit part too, so the direction is refitted); exact over all 2^G swap
  patterns when that is at most ``n_perm``. This is the null for "the pair differs along the
  direction on held-out tasks". (2) Random unit directions (the earlier band, kept and labelled):
  how far the real projection and separation lie from those along random directions; it only
  says the direction is special, not that it generalises.
- A contrastive-data direction (``"contrastive:MODEL"``): aligned minus misaligned responses in
  one model; and :func:`difference_projection`: mean (model − base) projection, paired.

Example:
    >>> from mi_align.erosion.projection import ProjectionConfig, layer_projection
    >>> cfg = ProjectionConfig(positions="first:10")
    >>> res = layer_projection(trio, convs, cfg)  # doctest: +SKIP
    >>> fig = plot_layer_projection(res)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.activations import (
    check_position_spec,
    make_selector,
    pooled_activations,
    resolve_layers,
)
from mi_align.data.chat import Conversation
from mi_align.data.groups import response_groups
from mi_align.data.tokenize import encode_dataset, iter_batches
from mi_align.erosion.projection_fit import (
    CHUNK,
    make_part,
    moments,
    nan_none,
    nanquantile,
    normalise,
    relative,
    separations,
    swap_null,
    wmean,
)
from mi_align.errors import check_finite
from mi_align.geometry import null_band, random_unit_directions
from mi_align.models.trio import Trio
from mi_align.plotting import style
from mi_align.stats import group_bootstrap_weights, split_groups, split_indices

COLORS = {"base": "#1f77b4", "instruct": "#ff7f0e", "misaligned": "#2ca02c"}
RANDOM_NULL = "random unit directions (one per draw, shared by all layers), same examples"
SWAP_NULL = ("grouped label swap: the pair's models swap labels within random groups, fit "
             "part included (direction refitted); two-sided on the mean paired difference "
             "μ_b − μ_a (the separation's numerator; its denominator is not swap-invariant)")


@dataclass(frozen=True)
class ProjectionConfig:
    """Settings of :func:`layer_projection`.

    ``direction``: ``"POS-NEG"`` (two trio models, e.g. ``"instruct-base"``) or
    ``"contrastive:MODEL"`` (aligned minus misaligned responses in MODEL; needs ``contrast``).
    ``heldout_fraction``: share of the examples held out from fitting; 0 fits and projects on
    the same examples (circular, flagged in the result). ``split``: ``"group"`` (no group on
    both sides; groups given or derived at ``group_similarity``) or ``"row"``. ``crossfit``:
    also fit on the held-out part and project the fit part. ``n_boot``/``n_perm``: group
    bootstrap replicates and label-swap permutations (0 turns either off); ``ci``: interval
    level; ``n_null``: random directions.
    """

    positions: str = "first:10"
    direction: str = "instruct-base"
    layers: tuple[int, ...] | None = None
    heldout_fraction: float = 0.5
    split: str = "group"
    group_similarity: float = 0.75
    crossfit: bool = True
    n_boot: int = 1000
    n_perm: int = 1000
    ci: float = 0.95
    n_null: int = 200
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        if not (0.0 <= self.heldout_fraction < 1.0):
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.split not in ("group", "row"):
            raise ValueError(f"split must be 'group' or 'row', got {self.split!r}")
        if not (0.0 < self.group_similarity <= 1.0):
            raise ValueError(f"group_similarity must be in (0, 1], got {self.group_similarity}")
        for name in ("n_boot", "n_perm"):
            value = getattr(self, name)
            if value != 0 and value < 20:
                raise ValueError(f"{name} must be 0 (off) or >= 20, got {value}")
        if not (0.5 <= self.ci < 1.0):
            raise ValueError(f"ci must be in [0.5, 1), got {self.ci}")
        if self.n_null < 10:
            raise ValueError(f"n_null must be >= 10 for a band, got {self.n_null}")
        if self.batch_size < 1 or self.max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")
        if self.direction.startswith("contrastive:"):
            return
        parts = self.direction.split("-")
        if len(parts) != 2 or parts[0] == parts[1] or not all(parts):
            raise ValueError(
                f"direction {self.direction!r}: use 'POS-NEG' (e.g. 'instruct-base') or "
                "'contrastive:MODEL'"
            )

    @property
    def contrastive_model(self) -> str | None:
        if self.direction.startswith("contrastive:"):
            return self.direction.split(":", 1)[1]
        return None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ProjectionResult:
    """Per model (rows, in ``models`` order) and layer (columns, ``layers``).

    ``mean``/``std``: mean and population std over projected examples of the per-example mean
    projection. ``*_lo``/``*_hi``: group-bootstrap percentile intervals (None when
    ``n_boot=0``). ``separation[p]`` for ``pairs[p] = (a, b)``: ``(μ_b − μ_a)/(σ_a + σ_b)``;
    ``difference_p``: grouped label-swap p-value of ``μ_b − μ_a``. ``null_lo/hi``, ``null_z``,
    ``separation_null_lo/hi``: random-direction null (central 95%). Layers where the direction
    is undefined (zero difference, e.g. unchanged embeddings) are NaN. ``fit_rows`` /
    ``eval_rows``: indices into ``data`` of the two parts (with ``crossfit`` they also swap
    roles); ``direction`` is the one fitted on ``fit_rows``, ``fold_cosine`` its cosine with
    the one fitted on ``eval_rows``.
    """

    config: ProjectionConfig
    models: tuple[str, ...]
    layers: tuple[int, ...]
    direction: Float[Tensor, "layer d_model"]
    mean: Float[Tensor, "model layer"]
    std: Float[Tensor, "model layer"]
    null_lo: Float[Tensor, "model layer"]
    null_hi: Float[Tensor, "model layer"]
    null_z: Float[Tensor, "model layer"]
    pairs: tuple[tuple[str, str], ...]
    separation: Float[Tensor, "_ layer"]
    separation_null_lo: Float[Tensor, "_ layer"]
    separation_null_hi: Float[Tensor, "_ layer"]
    n_fit: int
    n_eval: int
    n_tokens: int
    circular: bool
    split: str = "row"
    groups_from: str = "rows"
    n_groups: int = 0
    crossfit: bool = False
    fit_data: tuple[str, ...] = ()
    eval_data: tuple[str, ...] = ()
    boot_mean: Float[Tensor, "_ model layer"] | None = None
    boot_std: Float[Tensor, "_ model layer"] | None = None
    difference_p: Float[Tensor, "_ layer"] | None = None
    perm_exact: bool = False
    n_perm: int = 0
    fold_cosine: Float[Tensor, " layer"] | None = None
    fit_rows: tuple[int, ...] = ()
    eval_rows: tuple[int, ...] = ()

    def row(self, model: str) -> int:
        return self.models.index(model)

    def _interval(self, reps: Tensor | None) -> tuple[Tensor, Tensor] | None:
        if reps is None:
            return None
        lo = (1 - self.config.ci) / 2
        return nanquantile(reps, lo), nanquantile(reps, 1 - lo)

    @property
    def mean_interval(self) -> tuple[Tensor, Tensor] | None:
        return self._interval(self.boot_mean)

    @property
    def separation_interval(self) -> tuple[Tensor, Tensor] | None:
        if self.boot_mean is None or self.boot_std is None:
            return None
        return self._interval(separations(self.boot_mean, self.boot_std, self.models,
                                           self.pairs))

    @property
    def relative_misaligned(self) -> Tensor | None:
        """Misaligned position between base (0) and instruct (1) per layer, if all present."""
        return relative(self.mean, self.models)

    @property
    def relative_interval(self) -> tuple[Tensor, Tensor] | None:
        if self.boot_mean is None or relative(self.mean, self.models) is None:
            return None
        return self._interval(relative(self.boot_mean, self.models))

    @property
    def split_description(self) -> str:
        if self.split == "circular":
            return f"fit and projected on the same {self.n_eval} examples (circular)"
        if self.split == "contrastive":
            return f"contrastive direction ({self.n_fit} examples); {self.n_eval} projected"
        unit = f"{self.n_groups} groups ({self.groups_from})" if self.split == "group" else (
            "rows")
        how = "2-fold cross-fit" if self.crossfit else f"fit on {self.n_fit}, projected on"
        return f"{how} {self.n_eval} examples, split by {unit}"

    def to_dict(self) -> dict[str, object]:
        rel, rel_ci = self.relative_misaligned, self.relative_interval
        out: dict[str, object] = {
            "config": self.config.to_dict(), "models": list(self.models),
            "layers": list(self.layers), "n_fit": self.n_fit, "n_eval": self.n_eval,
            "n_tokens": self.n_tokens, "circular": self.circular, "split": self.split,
            "split_description": self.split_description, "groups_from": self.groups_from,
            "n_groups": self.n_groups, "crossfit": self.crossfit,
            "fit_data": list(self.fit_data), "eval_data": list(self.eval_data),
            "fit_rows": list(self.fit_rows), "eval_rows": list(self.eval_rows),
            "mean": nan_none(self.mean), "std": nan_none(self.std),
            "null_lo": nan_none(self.null_lo), "null_hi": nan_none(self.null_hi),
            "null_z": nan_none(self.null_z),
            "pairs": [list(p) for p in self.pairs], "separation": nan_none(self.separation),
            "separation_null_lo": nan_none(self.separation_null_lo),
            "separation_null_hi": nan_none(self.separation_null_hi),
            "difference_p": None if self.difference_p is None else nan_none(self.difference_p),
            "perm_exact": self.perm_exact, "n_perm": self.n_perm,
            "relative_misaligned": None if rel is None else nan_none(rel),
            "fold_cosine": None if self.fold_cosine is None else nan_none(self.fold_cosine),
            "nulls": {"null_lo, null_hi, null_z, separation_null_lo, separation_null_hi":
                      RANDOM_NULL, "difference_p": SWAP_NULL},
            "intervals": (f"group bootstrap, {self.boot_mean.shape[0]} replicates, "
                          f"{self.config.ci:.0%} percentile" if self.boot_mean is not None
                          else None),
        }
        for key, ci in (("mean", self.mean_interval), ("separation", self.separation_interval),
                        ("relative_misaligned", rel_ci)):
            out[f"{key}_lo"] = None if ci is None else nan_none(ci[0])
            out[f"{key}_hi"] = None if ci is None else nan_none(ci[1])
        return out


def _dataset_names(convs: Sequence[Conversation]) -> tuple[str, ...]:
    names = [Path(c.source.rsplit(":", 1)[0]).stem if c.source else "(in memory)" for c in convs]
    return tuple(dict.fromkeys(names))


def layer_projection(
    trio: Trio,
    data: Sequence[Conversation],
    config: ProjectionConfig | None = None,
    contrast: tuple[Sequence[Conversation], Sequence[Conversation]] | None = None,
    groups: Sequence[Hashable] | None = None,
) -> ProjectionResult:
    """Project every trio model's activations on the alignment direction, layer by layer.

    Args:
        trio: models to compare (any subset containing the direction's models).
        data: conversations whose activations are projected (and, by default, fit the direction).
        config: see :class:`ProjectionConfig`.
        contrast: (aligned, misaligned) conversations for a ``contrastive:MODEL`` direction.
        groups: one hashable group key per conversation of ``data`` (with ``split="group"``);
            None derives them with :func:`response_groups`.
    """
    cfg = config or ProjectionConfig()
    layers = resolve_layers(cfg.layers, trio.n_layers)
    cmodel = cfg.contrastive_model
    if cmodel is not None and contrast is None:
        raise ValueError(f"direction {cfg.direction!r} needs contrast=(aligned, misaligned)")
    needed = (cmodel,) if cmodel is not None else tuple(cfg.direction.split("-"))
    missing = [m for m in needed if m not in trio.names]
    if missing:
        raise ValueError(f"direction {cfg.direction!r} needs model(s) {missing}; trio has "
                         f"{', '.join(trio.names)}")
    if groups is not None and len(groups) != len(data):
        raise ValueError(f"groups has {len(groups)} keys for {len(data)} conversations")

    def keys_of(convs: Sequence[Conversation], given: Sequence[Hashable] | None) -> list:
        if cfg.split == "row":
            return list(range(len(convs)))
        return list(given) if given is not None else response_groups(convs, cfg.group_similarity)

    keys = keys_of(data, groups)
    groups_from = "rows" if cfg.split == "row" else "given" if groups is not None else (
        f"derived: response similarity >= {cfg.group_similarity}")
    n = len(data)
    if cmodel is not None:
        split, fit_idx, eval_idx = "contrastive", [], list(range(n))
    elif cfg.heldout_fraction == 0.0:
        split, fit_idx, eval_idx = "circular", list(range(n)), list(range(n))
    else:
        split = cfg.split
        splitter = split_groups if cfg.split == "group" else (
            lambda k, f, s: split_indices(len(k), f, s))
        fit_idx, eval_idx = splitter(keys, cfg.heldout_fraction, cfg.seed)
    crossfit = cfg.crossfit and split in ("group", "row")

    # Per-example mean activations (example, layer, d_model), float64, for every model.
    selector = make_selector(cfg.positions)
    encoded = encode_dataset(trio.tokenizer, data, cfg.max_length)
    acts: dict[str, Tensor] = {}
    cacts: list[Tensor] = []
    for name in trio.names:
        with trio.variant(name) as loaded:
            acts[name] = pooled_activations(loaded, encoded, layers, selector,
                                            cfg.batch_size).double()
            check_finite(acts[name], f"projection: activations of model {name!r}")
            if cmodel == name:
                assert contrast is not None
                for side in contrast:
                    enc = encode_dataset(trio.tokenizer, side, cfg.max_length)
                    cacts.append(pooled_activations(loaded, enc, layers, selector,
                                                    cfg.batch_size).double())
    models = trio.names

    # Parts (resampled together, in this order) and folds: (evaluated part, fit terms).
    parts = {"B": make_part(eval_idx, keys)}
    if cmodel is not None:
        assert contrast is not None
        for tag, side in zip(("C+", "C-"), contrast, strict=True):
            parts[tag] = make_part(range(len(side)), keys_of(side, None))
        scale = torch.maximum(cacts[0].mean(0).norm(dim=-1), cacts[1].mean(0).norm(dim=-1))
        folds = [("B", [(cacts[0], "C+", 1.0), (cacts[1], "C-", -1.0)])]
    else:
        pos, neg = needed
        diff = acts[pos] - acts[neg]
        scale = torch.maximum(acts[pos].mean(0).norm(dim=-1), acts[neg].mean(0).norm(dim=-1))
        if split == "circular":
            folds = [("B", [(diff, "B", 1.0)])]
        else:
            parts = {"A": make_part(fit_idx, keys), **parts}
            folds = [("B", [(diff, "A", 1.0)])] + ([("A", [(diff, "B", 1.0)])] if crossfit
                                                   else [])

    def replicate(weights: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Weighted refit + projection: (rep, model, layer) means and stds, fold directions."""
        dirs, projs, ws = [], {m: [] for m in models}, []
        for ev, terms in folds:
            fitted = sum(s * wmean(y[parts[p].rows], weights[p]) for y, p, s in terms)
            v = normalise(fitted, scale)  # type: ignore[arg-type]
            dirs.append(v)
            rows = parts[ev].rows
            for m in models:
                projs[m].append(torch.einsum("nld,rld->rnl", acts[m][rows], v))
            ws.append(weights[ev])
        w = torch.cat(ws, 1)
        stats = [moments(torch.cat(projs[m], 1), w) for m in models]
        return (torch.stack([s[0] for s in stats], 1), torch.stack([s[1] for s in stats], 1),
                dirs)

    ones = {k: torch.ones(1, len(p.rows), dtype=torch.float64) for k, p in parts.items()}
    mean1, std1, dirs1 = replicate(ones)
    mean, std = mean1[0], std1[0]
    pairs = tuple((a, b) for i, a in enumerate(models) for b in models[i + 1 :])
    separation = separations(mean, std, models, pairs)
    fold_cos = (dirs1[0][0] * dirs1[1][0]).sum(-1) if len(dirs1) == 2 else None

    boot_mean = boot_std = None
    if cfg.n_boot:
        gen = torch.Generator().manual_seed(cfg.seed)
        all_w = {k: group_bootstrap_weights(p.labels, p.n_groups, cfg.n_boot, gen)
                 for k, p in parts.items()}
        chunks = [replicate({k: w[c : c + CHUNK] for k, w in all_w.items()})
                  for c in range(0, cfg.n_boot, CHUNK)]
        boot_mean = torch.cat([c[0] for c in chunks])
        boot_std = torch.cat([c[1] for c in chunks])

    diff_p, exact, n_perm = None, False, 0
    if cfg.n_perm and pairs:
        observed = torch.stack([mean[models.index(b)] - mean[models.index(a)] for a, b in pairs])
        diff_p, exact, n_perm = swap_null(acts, models, pairs, keys, parts, folds, scale,
                                           observed, None if cmodel else needed, cfg)

    # Random-direction null on the evaluated examples (unit weights, shared across layers).
    evaluated = torch.cat([parts[ev].rows for ev, _ in folds])
    rand = random_unit_directions(cfg.n_null, trio.d_model, cfg.seed)
    rproj = {m: torch.einsum("nld,rd->nlr", acts[m][evaluated], rand) for m in models}
    null_proj = torch.stack([rproj[m].mean(0) for m in models])  # model, layer, n_null
    null_lo, null_hi = null_band(null_proj.permute(2, 0, 1))
    null_z = (mean - null_proj.mean(-1)) / null_proj.std(-1)
    sep_lo, sep_hi = [], []
    for a, b in pairs:
        null_sep = (rproj[b].mean(0) - rproj[a].mean(0)) / (
            rproj[a].std(0, correction=0) + rproj[b].std(0, correction=0))
        lo, hi = null_band(null_sep.T)
        sep_lo.append(lo)
        sep_hi.append(hi)
    empty = torch.zeros(0, len(layers), dtype=torch.float64)
    n_tokens = sum(int(selector(b).sum()) for b in iter_batches(
        [encoded[i] for i in evaluated.tolist()], cfg.batch_size, trio.tokenizer.pad_token_id))
    n_fit = len(parts["A"].rows) if split in ("group", "row") else (
        sum(len(c) for c in contrast) if contrast is not None and cmodel else n)
    return ProjectionResult(
        config=cfg, models=models, layers=layers, direction=dirs1[0][0].float(),
        mean=mean, std=std, null_lo=null_lo, null_hi=null_hi, null_z=null_z, pairs=pairs,
        separation=separation,
        separation_null_lo=torch.stack(sep_lo) if pairs else empty,
        separation_null_hi=torch.stack(sep_hi) if pairs else empty,
        n_fit=n_fit, n_eval=len(evaluated), n_tokens=n_tokens, circular=split == "circular",
        split=split, groups_from=groups_from, n_groups=len(set(keys)), crossfit=crossfit,
        fit_data=_dataset_names([c for side in contrast for c in side]) if (
            cmodel is not None and contrast is not None) else _dataset_names(data),
        eval_data=_dataset_names(data), boot_mean=boot_mean, boot_std=boot_std,
        difference_p=diff_p, perm_exact=exact, n_perm=n_perm, fold_cosine=fold_cos,
        fit_rows=tuple(fit_idx), eval_rows=tuple(eval_idx),
    )


@dataclass(frozen=True)
class DifferenceProjection:
    """``mean[m, L]``: mean over examples of ``(h_m − h_ref)·v_L`` (paired: same input, same
    tokens); the reference row is 0 by construction. ``lo``/``hi``: group-bootstrap interval
    (None without bootstrap)."""

    models: tuple[str, ...]
    layers: tuple[int, ...]
    mean: Float[Tensor, "model layer"]
    direction_name: str
    lo: Float[Tensor, "model layer"] | None = None
    hi: Float[Tensor, "model layer"] | None = None

    def to_dict(self) -> dict[str, object]:
        return {"models": list(self.models), "layers": list(self.layers),
                "direction": self.direction_name, "mean": nan_none(self.mean),
                "lo": None if self.lo is None else nan_none(self.lo),
                "hi": None if self.hi is None else nan_none(self.hi)}


def difference_projection(
    result: ProjectionResult, reference: str = "base"
) -> DifferenceProjection:
    """Mean projection of paired (model − reference) activation differences on the direction.

    Projection is linear and the examples are identical across models, so the mean of the
    paired differences equals the difference of the mean projections (also per bootstrap
    replicate, which gives the interval).
    """
    if reference not in result.models:
        raise ValueError(f"difference_projection needs the {reference!r} model; result has "
                         f"{', '.join(result.models)}")
    r = result.row(reference)
    ci = None
    if result.boot_mean is not None:
        ci = result._interval(result.boot_mean - result.boot_mean[:, r : r + 1])
    return DifferenceProjection(result.models, result.layers, result.mean - result.mean[r][None],
                                result.config.direction, *(ci or (None, None)))


def _band(fig: go.Figure, x: list, lo: Tensor, hi: Tensor, color: str | None, row: int) -> None:
    fig.add_trace(go.Scatter(x=x + x[::-1], y=hi.tolist() + lo.tolist()[::-1], fill="toself",
                             line={"width": 0}, fillcolor=color or "grey", opacity=0.2,
                             showlegend=False, hoverinfo="skip"), row=row, col=1)


def plot_layer_projection(result: ProjectionResult) -> go.Figure:
    """Three panels over layers: mean projection per model with its bootstrap band and the
    dotted random-direction null band; separation per pair with bootstrap error bars, the
    random-direction null band, and filled markers where the grouped label-swap p < 0.05; the
    misaligned model's relative position between base (0) and instruct (1), if all present."""
    rel = result.relative_misaligned
    fig = make_subplots(
        rows=3 if rel is not None else 2, cols=1, shared_xaxes=True, vertical_spacing=0.07,
        subplot_titles=(
            "mean projection on the direction (band: bootstrap CI; dotted: random-direction null)",
            "separation (μ_b − μ_a)/(σ_a + σ_b) over examples (bars: bootstrap CI; filled: "
            "label-swap p < 0.05)",
            "misaligned between base (0) and instruct (1)"),
    )
    x = list(result.layers)
    mci = result.mean_interval
    for i, model in enumerate(result.models):
        color = COLORS.get(model)
        if mci is not None:
            _band(fig, x, mci[0][i], mci[1][i], color, 1)
        fig.add_trace(go.Scatter(x=x, y=result.mean[i].tolist(), mode="lines+markers",
                                 name=model, line={"color": color}), row=1, col=1)
        for band in (result.null_lo[i], result.null_hi[i]):
            fig.add_trace(go.Scatter(x=x, y=band.tolist(), mode="lines", showlegend=False,
                                     name=f"{model} random-direction null",
                                     line={"color": color, "dash": "dot", "width": 1}),
                          row=1, col=1)
    sci = result.separation_interval
    for p, (a, b) in enumerate(result.pairs):
        y = result.separation[p]
        err = None if sci is None else {"type": "data", "symmetric": False,
                                        "array": (sci[1][p] - y).tolist(),
                                        "arrayminus": (y - sci[0][p]).tolist()}
        sig = ([bool(v < 0.05) for v in result.difference_p[p]] if result.difference_p
               is not None else [False] * len(x))
        fig.add_trace(go.Scatter(x=x, y=y.tolist(), mode="lines+markers", name=f"{a} → {b}",
                                 error_y=err, marker={"symbol": ["circle" if s else "circle-open"
                                                                 for s in sig], "size": 8}),
                      row=2, col=1)
        for band in (result.separation_null_lo[p], result.separation_null_hi[p]):
            fig.add_trace(go.Scatter(x=x, y=band.tolist(), mode="lines", showlegend=False,
                                     line={"dash": "dot", "width": 1, "color": "grey"},
                                     name=f"{a} → {b} random-direction null"), row=2, col=1)
    if rel is not None:
        rci = result.relative_interval
        err = None if rci is None else {"type": "data", "symmetric": False,
                                        "array": (rci[1] - rel).tolist(),
                                        "arrayminus": (rel - rci[0]).tolist()}
        fig.add_trace(go.Scatter(x=x, y=rel.tolist(), mode="lines+markers", error_y=err,
                                 name="misaligned relative position",
                                 line={"color": COLORS["misaligned"]}), row=3, col=1)
        fig.update_yaxes(range=[-1.0, 2.0], row=3, col=1)
    data = ", ".join(result.eval_data)
    style(fig, f"Layerwise projection on the {result.config.direction} direction "
               f"({result.config.positions}; {data}; {result.split_description})", "", "")
    fig.update_xaxes(title_text="hidden-state layer (0 = embeddings; last = final norm)",
                     row=3 if rel is not None else 2, col=1)
    fig.update_layout(height=1000 if rel is not None else 750)
    return fig


def plot_difference_projection(result: DifferenceProjection) -> go.Figure:
    """One line per model: mean projection of (model − base) differences, bootstrap band."""
    fig = go.Figure()
    x = list(result.layers)
    for i, model in enumerate(result.models):
        color = COLORS.get(model)
        if result.lo is not None and result.hi is not None:
            fig.add_trace(go.Scatter(x=x + x[::-1],
                                     y=result.hi[i].tolist() + result.lo[i].tolist()[::-1],
                                     fill="toself", line={"width": 0}, fillcolor=color or "grey",
                                     opacity=0.2, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=result.mean[i].tolist(), mode="lines+markers",
                                 name=model, line={"color": color}))
    return style(fig, f"Activation differences (model − base) projected on the "
                      f"{result.direction_name} direction (band: bootstrap CI)",
                 "hidden-state layer", "mean projection of the difference")
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
- A contrastive-data direction (``Contrastive(MODEL)``): aligned minus misaligned responses in
  one model; and :func:`difference_projection`: mean (model − base) projection, paired.

Example:
    >>> from mi_align.erosion.choices import FirstTokens
    >>> from mi_align.erosion.common import Inputs
    >>> from mi_align.erosion.projection import ProjectionConfig, layer_projection
    >>> cfg = ProjectionConfig(positions=FirstTokens(10))
    >>> res = layer_projection(trio, Inputs.of(("insecure", convs)), cfg)  # doctest: +SKIP
    >>> from mi_align.erosion.projection_plot import plot_layer_projection
    >>> fig = plot_layer_projection(res)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.activations import pooled_activations, resolve_layers
from mi_align.data.chat import Conversation
from mi_align.data.groups import response_groups
from mi_align.data.tokenize import encode_dataset, iter_batches
from mi_align.erosion.checkpoint import Checkpoint, Rows, example_bar, resumable_rows
from mi_align.erosion.choices import (
    Contrastive,
    Direction,
    FirstTokens,
    ModelDifference,
    Positions,
    config_from_dict,
    config_to_dict,
)
from mi_align.erosion.common import Inputs, optional_tensor, tensor_of
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
from mi_align.stats import group_bootstrap_weights, split_groups, split_indices

RANDOM_NULL = "random unit directions (one per draw, shared by all layers), same examples"
SWAP_NULL = ("grouped label swap: the pair's models swap labels within random groups, fit "
             "part included (direction refitted); two-sided on the mean paired difference "
             "μ_b − μ_a (the separation's numerator; its denominator is not swap-invariant)")


@dataclass(frozen=True)
class ProjectionConfig:
    """Settings of :func:`layer_projection`.

    ``positions``: the tokens averaged per example. ``direction``:
    ``ModelDifference(POS, NEG)`` (two trio models) or ``Contrastive(MODEL)`` (aligned minus
    misaligned responses in MODEL; needs ``Inputs.reference`` ``"aligned"`` / ``"misaligned"``).
    ``heldout_fraction``: share of the examples held out from fitting; 0 fits and projects on
    the same examples (circular, flagged in the result). ``split``: ``"group"`` (no group on
    both sides; groups given or derived at ``group_similarity``) or ``"row"``. ``crossfit``:
    also fit on the held-out part and project the fit part. ``n_boot``/``n_perm``: group
    bootstrap replicates and label-swap permutations (0 turns either off); ``ci``: interval
    level; ``n_null``: random directions.
    """

    positions: Positions = FirstTokens(10)
    direction: Direction = ModelDifference("instruct", "base")
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
        if not isinstance(self.positions, Positions):
            raise ValueError(f"positions must be a Positions value (e.g. FirstTokens(10)), got "
                             f"{self.positions!r}")
        if not isinstance(self.direction, Direction):
            raise ValueError(f"direction must be ModelDifference(POS, NEG) or "
                             f"Contrastive(MODEL), got {self.direction!r}")
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

    @property
    def contrastive_model(self) -> str | None:
        return self.direction.model if isinstance(self.direction, Contrastive) else None

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProjectionConfig:
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class ProjectionResult:
    """Per model (rows, in ``models`` order) and layer (columns, ``layers``).

    ``mean``/``std``: mean and population std over projected examples of the per-example mean
    projection. ``mean_interval`` / ``separation_interval`` / ``relative_interval``:
    group-bootstrap percentile intervals ``(lo, hi)`` (None when ``n_boot=0``).
    ``separation[p]`` for ``pairs[p] = (a, b)``: ``(μ_b − μ_a)/(σ_a + σ_b)``;
    ``difference_p``: grouped label-swap p-value of ``μ_b − μ_a``. ``null_lo/hi``, ``null_z``,
    ``separation_null_lo/hi``: random-direction null (central 95%). Layers where the direction
    is undefined (zero difference, e.g. unchanged embeddings) are NaN. ``fit_rows`` /
    ``eval_rows``: indices into ``data`` of the two parts (with ``crossfit`` they also swap
    roles); ``direction`` is the one fitted on ``fit_rows``, ``fold_cosine`` its cosine with
    the one fitted on ``eval_rows``. ``direction``, ``boot_mean`` and ``boot_std`` (the
    bootstrap replicates) are not serialised: None in a result read back with
    :meth:`from_dict`.
    """

    config: ProjectionConfig
    models: tuple[str, ...]
    layers: tuple[int, ...]
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
    mean_interval: tuple[Tensor, Tensor] | None = None
    separation_interval: tuple[Tensor, Tensor] | None = None
    relative_interval: tuple[Tensor, Tensor] | None = None
    difference_p: Float[Tensor, "_ layer"] | None = None
    perm_exact: bool = False
    n_perm: int = 0
    fold_cosine: Float[Tensor, " layer"] | None = None
    fit_rows: tuple[int, ...] = ()
    eval_rows: tuple[int, ...] = ()
    direction: Float[Tensor, "layer d_model"] | None = field(default=None, repr=False)
    boot_mean: Float[Tensor, "_ model layer"] | None = field(default=None, repr=False)
    boot_std: Float[Tensor, "_ model layer"] | None = field(default=None, repr=False)

    def row(self, model: str) -> int:
        return self.models.index(model)

    @property
    def relative_misaligned(self) -> Tensor | None:
        """Misaligned position between base (0) and instruct (1) per layer, if all present."""
        return relative(self.mean, self.models)

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
            "intervals": (f"group bootstrap, {self.config.n_boot} replicates, "
                          f"{self.config.ci:.0%} percentile" if self.mean_interval is not None
                          else None),
        }
        for key, ci in (("mean", self.mean_interval), ("separation", self.separation_interval),
                        ("relative_misaligned", rel_ci)):
            out[f"{key}_lo"] = None if ci is None else nan_none(ci[0])
            out[f"{key}_hi"] = None if ci is None else nan_none(ci[1])
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProjectionResult:
        def interval(key: str) -> tuple[Tensor, Tensor] | None:
            lo, hi = d[f"{key}_lo"], d[f"{key}_hi"]
            return None if lo is None or hi is None else (tensor_of(lo), tensor_of(hi))

        t = tensor_of
        return cls(
            config=ProjectionConfig.from_dict(d["config"]), models=tuple(d["models"]),
            layers=tuple(d["layers"]), mean=t(d["mean"]), std=t(d["std"]),
            null_lo=t(d["null_lo"]), null_hi=t(d["null_hi"]), null_z=t(d["null_z"]),
            pairs=tuple((a, b) for a, b in d["pairs"]), separation=t(d["separation"]),
            separation_null_lo=t(d["separation_null_lo"]),
            separation_null_hi=t(d["separation_null_hi"]), n_fit=d["n_fit"],
            n_eval=d["n_eval"], n_tokens=d["n_tokens"], circular=d["circular"],
            split=d["split"], groups_from=d["groups_from"], n_groups=d["n_groups"],
            crossfit=d["crossfit"], fit_data=tuple(d["fit_data"]),
            eval_data=tuple(d["eval_data"]), mean_interval=interval("mean"),
            separation_interval=interval("separation"),
            relative_interval=interval("relative_misaligned"),
            difference_p=optional_tensor(d["difference_p"]), perm_exact=d["perm_exact"],
            n_perm=d["n_perm"], fold_cosine=optional_tensor(d["fold_cosine"]),
            fit_rows=tuple(d["fit_rows"]), eval_rows=tuple(d["eval_rows"]))


def _dataset_names(convs: Sequence[Conversation]) -> tuple[str, ...]:
    names = [Path(c.source.rsplit(":", 1)[0]).stem if c.source else "(in memory)" for c in convs]
    return tuple(dict.fromkeys(names))


def layer_projection(
    trio: Trio, inputs: Inputs, config: ProjectionConfig | None = None, *,
    checkpoint: Checkpoint | None = None,
) -> ProjectionResult:
    """Project every trio model's activations on the alignment direction, layer by layer.

    Args:
        trio: models to compare (any subset containing the direction's models).
        inputs: ``groups``: the conversations whose activations are projected (and, by
            default, fit the direction), stacked; ``keys``: one hashable group key per
            conversation (with ``split="group"``; None derives them with
            :func:`response_groups`); ``reference["aligned"]`` / ``["misaligned"]``: the
            contrast sets of a ``Contrastive`` direction.
        config: see :class:`ProjectionConfig`.
        checkpoint: saves the per-example activations every ``checkpoint.every`` examples;
            a rerun resumes after them (:mod:`mi_align.erosion.checkpoint`).
    """
    cfg = config or ProjectionConfig()
    data, groups = inputs.conversations, inputs.keys
    layers = resolve_layers(cfg.layers, trio.n_layers)
    cmodel = cfg.contrastive_model
    contrast = None
    if cmodel is not None:
        if not {"aligned", "misaligned"} <= set(inputs.reference):
            raise ValueError(f"direction {str(cfg.direction)!r} needs contrast sets: "
                             "Inputs.reference 'aligned' and 'misaligned'")
        contrast = (inputs.reference["aligned"][1], inputs.reference["misaligned"][1])
    needed = cfg.direction.models
    missing = [m for m in needed if m not in trio.names]
    if missing:
        raise ValueError(f"direction {str(cfg.direction)!r} needs model(s) {missing}; trio has "
                         f"{', '.join(trio.names)}")
    if groups is not None and len(groups) != len(data):
        raise ValueError(f"Inputs.keys has {len(groups)} keys for {len(data)} conversations")

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
    selector = cfg.positions.selector(trio.tokenizer)
    encoded = encode_dataset(trio.tokenizer, data, cfg.max_length)
    acts: dict[str, Tensor] = {}
    cacts: list[Tensor] = []
    bar = example_bar("projection", len(trio.names) * n + (
        sum(map(len, contrast)) if contrast is not None else 0))
    for name in trio.names:
        with trio.variant(name) as loaded:
            bar.set_postfix_str(name)

            def pooled(key: str, enc: list, loaded: Any = loaded) -> Tensor:
                def rows(a: int, b: int) -> Rows:
                    return {"x": pooled_activations(loaded, enc[a:b], layers, selector,
                                                    cfg.batch_size)}

                return resumable_rows(checkpoint, key, len(enc), rows, cfg.batch_size,
                                      bar)["x"]

            acts[name] = pooled(f"projection-{name}", encoded).double()
            check_finite(acts[name], f"projection: activations of model {name!r}")
            if cmodel == name:
                assert contrast is not None
                for i, side in enumerate(contrast):
                    enc = encode_dataset(trio.tokenizer, side, cfg.max_length)
                    cacts.append(pooled(f"projection-{name}-contrast{i}", enc).double())
    bar.close()
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
    ci_mean = ci_sep = ci_rel = None
    if boot_mean is not None and boot_std is not None:
        lo_q = (1 - cfg.ci) / 2

        def interval(reps: Tensor) -> tuple[Tensor, Tensor]:
            return nanquantile(reps, lo_q), nanquantile(reps, 1 - lo_q)

        ci_mean = interval(boot_mean)
        ci_sep = interval(separations(boot_mean, boot_std, models, pairs))
        rel_reps = relative(boot_mean, models)
        ci_rel = None if rel_reps is None else interval(rel_reps)
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
        mean_interval=ci_mean, separation_interval=ci_sep, relative_interval=ci_rel,
        difference_p=diff_p, perm_exact=exact, n_perm=n_perm, fold_cosine=fold_cos,
        fit_rows=tuple(fit_idx), eval_rows=tuple(eval_idx),
    )

"""Linear probes: how well, and along which direction, a layer separates two sets of responses.

Per hidden-state layer, an L2 logistic-regression probe (scikit-learn) is trained on mean-pooled
response activations (:func:`mi_align.activations.pooled_activations`) of two sets, e.g.
``toxic`` vs ``toxic_reject`` or ``insecure`` vs ``educational``. Three choices make its
numbers mean something:

- **Grouped cross-validation, nested.** Held-out scores come from ``GroupKFold`` over groups
  (pairs, tasks: examples that are variants of one item never sit on both sides of a split);
  inside each training fold the regularisation ``C`` is chosen by a second, inner
  ``GroupKFold`` (``LogisticRegressionCV``, log loss). Paired sets (the same request answered
  two ways) put both members of a pair in one group, so the probe cannot score a test example
  by recognising its partner. Features are standardised inside the pipeline (fit on the
  training fold only).
- **Intervals and a null that fit the design.** Accuracy and AUROC of the pooled out-of-fold
  scores get percentile intervals from a bootstrap that resamples whole groups. The null
  refits the whole nested pipeline on relabelled data: when every group holds both classes
  (pairs), labels are permuted *within* groups; when every group holds one class, group labels
  are permuted among groups. ``p = (1 + #{null AUROC >= observed}) / (1 + n_perm)``; the same
  relabelings serve every layer, so ``null_p_max`` (against the maximum over layers) corrects
  for picking the best layer.
- **Weights in activation space.** The probe refitted on all examples (``C`` by inner CV) has
  its standardisation undone (``w = coef / σ``, ``b = intercept − w·μ``), so ``sigmoid(w·x + b)``
  scores raw activations and ``cos(w, d)`` compares it with a direction ``d`` in the residual
  stream (e.g. the erosion projection's ``instruct − base`` direction, passed in). The
  reference is the expected |cos| of two random directions in ``d_model`` dimensions.

:class:`ProbeJudge` turns a fitted probe into an offline *alignment* signal with the judges'
interface (``number_probs``): it is a linear read-out of one model's activations, not an LLM
judge, and it says nothing about coherence unless another backend is given for that.

Example:
    >>> cfg = ProbeConfig(layers=(4, 8), n_perm=99)
    >>> neg, pos = load_dataset("toxic"), load_dataset("toxic_reject")  # doctest: +SKIP
    >>> res = probe_model(loaded, neg, pos, cfg, names=("toxic", "toxic_reject"))  # doctest: +SKIP
    >>> fig = plot_probe(res)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits
from torch import Tensor
from tqdm.auto import tqdm

from mi_align.activations import check_position_spec, make_selector, pooled_activations
from mi_align.data.betley import JudgePrompts
from mi_align.data.chat import Conversation, Message
from mi_align.data.tokenize import encode_dataset
from mi_align.errors import InputError, check_finite
from mi_align.evaluation.judge import ALIGNMENT_PROMPT, COHERENCE_PROMPT, JudgeBackend
from mi_align.geometry import expected_abs_cosine_random
from mi_align.models.load import Loaded
from mi_align.plotting import style
from mi_align.stats import Interval

logger = logging.getLogger(__name__)

WITHIN = "labels permuted within each group (pairs/tasks kept whole), whole nested CV refitted"
AMONG = "group labels permuted among groups (groups kept whole), whole nested CV refitted"


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of :func:`probe_layers` / :func:`probe_model`.

    ``positions``: tokens averaged per example (``"response"``, ``"first:K"``, ``"last"``).
    ``n_folds`` / ``inner_folds``: outer (held-out scores) and inner (choice of ``C``) group
    folds. ``cs``: the grid of inverse regularisation strengths. ``n_perm``: relabelings of the
    null (0: none); ``n_boot``: group-bootstrap resamples; ``ci``: interval level.
    """

    positions: str = "response"
    layers: tuple[int, ...] | None = None
    n_folds: int = 5
    inner_folds: int = 3
    cs: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    n_perm: int = 99
    n_boot: int = 1000
    ci: float = 0.95
    max_iter: int = 2000
    tol: float = 1e-4
    batch_size: int = 8
    max_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        if self.n_folds < 2 or self.inner_folds < 2:
            raise ValueError(f"n_folds and inner_folds must be >= 2, got {self.n_folds}, "
                             f"{self.inner_folds}")
        if not self.cs or any(not (c > 0 and math.isfinite(c)) for c in self.cs):
            raise ValueError(f"cs must be a non-empty grid of positive numbers, got {self.cs}")
        if self.n_perm < 0 or self.n_boot < 0:
            raise ValueError(f"n_perm and n_boot must be >= 0, got {self.n_perm}, {self.n_boot}")
        if not 0.0 < self.ci < 1.0:
            raise ValueError(f"ci must be in (0, 1), got {self.ci}")
        if self.max_iter < 1 or not self.tol > 0 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError("max_iter, batch_size must be >= 1, tol > 0, max_length >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeConfig:
        d = dict(d)
        for key in ("layers", "cs"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a label-1 example > score of a label-0 one), ties ½ (Mann–Whitney)."""
    y = np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of examples whose decision value has the label's sign (> 0 ⇔ label 1)."""
    return float(((np.asarray(scores) > 0) == np.asarray(labels, dtype=bool)).mean())


def group_bootstrap(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, stat: Any,
                    n_boot: int, level: float, seed: int) -> Interval:
    """Percentile interval of ``stat(labels, scores)`` over resamples of whole groups (a
    resample missing a class is redrawn from the next draws, i.e. skipped)."""
    estimate = stat(labels, scores)
    _, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(int(inv.max()) + 1)]
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        value = stat(labels[idx], scores[idx])
        if math.isfinite(value):
            reps.append(value)
    if not reps:
        return Interval(estimate, math.nan, math.nan, "no bootstrap", level)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(lo), float(hi),
                    f"group bootstrap (percentile, {len(members)} groups, {len(reps)} resamples)",
                    level)


def permuted_labels(labels: np.ndarray, groups: np.ndarray, n: int,
                    seed: int) -> tuple[np.ndarray, str]:
    """``n`` relabelings (n × example) that keep groups whole, and the null's description:
    within groups when every group holds both classes, among groups when each holds one."""
    _, inv = np.unique(groups, return_inverse=True)
    n_groups = int(inv.max()) + 1
    members = [np.flatnonzero(inv == g) for g in range(n_groups)]
    mixed = [len(set(labels[m].tolist())) > 1 for m in members]
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(labels)), dtype=labels.dtype)
    if all(mixed):
        for r in range(n):
            for m in members:
                out[r, m] = labels[rng.permutation(m)]
        return out, WITHIN
    if not any(mixed):
        group_label = np.array([labels[m[0]] for m in members])
        for r in range(n):
            out[r] = rng.permutation(group_label)[inv]
        return out, AMONG
    raise InputError("probe null", "some groups hold both classes and some only one",
                     "use groups that are all paired or all single-class (or n_perm=0)")


def neg_log_loss(estimator: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Mean log-likelihood of ``y`` under ``estimator`` (sklearn's ``neg_log_loss``, written
    out: sklearn's scorer re-validates its inputs and took 2/3 of the probe's time)."""
    z = estimator.decision_function(x)
    return -float(np.mean(np.logaddexp(0.0, -z * (2 * np.asarray(y) - 1))))


def _fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, cfg: ProbeConfig) -> Any:
    """Standardise + logistic regression with ``C`` chosen by inner group CV (log loss)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inner = list(GroupKFold(cfg.inner_folds).split(x, y, groups))
    clf = LogisticRegressionCV(Cs=list(cfg.cs), cv=inner, l1_ratios=(0.0,),
                               scoring=neg_log_loss, max_iter=cfg.max_iter, tol=cfg.tol,
                               use_legacy_attributes=False)
    return make_pipeline(StandardScaler(), clf).fit(x, y)


def heldout_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                   cfg: ProbeConfig) -> np.ndarray:
    """Out-of-fold decision values (``w·x + b`` of a probe that never saw the example's group)."""
    from sklearn.model_selection import GroupKFold

    out = np.empty(len(y))
    for train, test in GroupKFold(cfg.n_folds).split(x, y, groups):
        out[test] = _fit(x[train], y[train], groups[train], cfg).decision_function(x[test])
    return out


@dataclass(frozen=True)
class ProbeResult:
    """Per-layer probe numbers (see the module docstring). ``classes[1]`` is the class the
    probe scores (decision > 0); ``weights``/``bias``: the all-data probe in activation space;
    ``scores``: out-of-fold decision values; ``cosine``: cos(weights, direction) per layer."""

    config: ProbeConfig
    layers: tuple[int, ...]
    classes: tuple[str, str]
    n_examples: int
    n_positive: int
    n_groups: int
    groups_from: str
    null: str
    accuracy: tuple[Interval, ...]
    auroc: tuple[Interval, ...]
    null_p: tuple[float, ...]
    null_p_max: tuple[float, ...]
    null_auroc_q95: tuple[float, ...]
    chosen_c: tuple[float, ...]
    weights: Float[Tensor, "layer d_model"]
    bias: Float[Tensor, " layer"]
    scores: Float[Tensor, "layer example"]
    cosine: tuple[float, ...] | None = None
    direction_name: str | None = None
    random_abs_cosine: float = field(default=math.nan)

    @property
    def best(self) -> int:
        """Index (into ``layers``) of the layer with the highest held-out AUROC."""
        return int(np.nanargmax([a.estimate for a in self.auroc]))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "config":
                v = v.to_dict()
            elif f.name in ("accuracy", "auroc"):
                v = [i.to_dict() for i in v]
            elif isinstance(v, Tensor):
                v = v.tolist()
            elif isinstance(v, tuple):
                v = [_num(x) if isinstance(x, float) else x for x in v]
            elif isinstance(v, float):
                v = _num(v)
            out[f.name] = v
        return {**out, "best_layer": self.layers[self.best]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = d[f.name]
            if f.name == "config":
                v = ProbeConfig.from_dict(v)
            elif f.name in ("accuracy", "auroc"):
                v = tuple(Interval(*(_nan(i[k]) for k in ("estimate", "low", "high")),
                                   i["method"], i["level"]) for i in v)
            elif f.name in ("weights", "bias", "scores"):
                v = torch.tensor(v, dtype=torch.float64)
            elif f.name in ("layers", "classes", "n_examples", "n_positive", "n_groups"):
                v = tuple(v) if isinstance(v, list) else v
            elif isinstance(v, list):
                v = tuple(_nan(x) for x in v)
            elif f.name == "random_abs_cosine":
                v = _nan(v)
            kw[f.name] = v
        return cls(**kw)


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def probe_layers(
    features: Float[Tensor, "example layer d_model"],
    labels: Sequence[int],
    groups: Sequence[Hashable] | None,
    config: ProbeConfig | None = None,
    *,
    layers: Sequence[int] | None = None,
    classes: tuple[str, str] = ("0", "1"),
    direction: Float[Tensor, "layer d_model"] | None = None,
    direction_name: str | None = None,
) -> ProbeResult:
    """Fit and test one probe per layer on given features (no model needed: pure).

    Args:
        features: per-example pooled activations; axis 1 matches ``layers``.
        labels: 0/1 per example; the probe scores class 1 (``classes[1]``).
        groups: one key per example (pair, task); None: every example is its own group.
        config: see :class:`ProbeConfig` (its ``layers``/``positions`` are not used here).
        layers: the hidden-state index of each feature layer (labels only; default 0..L-1).
        direction: unit or not, one row per layer; its cosine with each probe is reported.
    """
    cfg = config or ProbeConfig()
    x_all = features.detach().to("cpu", torch.float64).numpy()
    y = np.asarray(labels, dtype=int)
    n, n_layers, d_model = x_all.shape
    layer_ids = tuple(layers) if layers is not None else tuple(range(n_layers))
    if len(y) != n or len(layer_ids) != n_layers:
        raise InputError("probe_layers", f"{len(y)} labels and {len(layer_ids)} layer ids for "
                         f"features of shape {tuple(x_all.shape)}", "pass one of each")
    if not set(y.tolist()) == {0, 1}:
        raise InputError("probe_layers", "labels must be 0/1 with both classes present",
                         "label the two sets 0 and 1")
    check_finite(features, "probe features")
    g_keys = list(groups) if groups is not None else list(range(n))
    if len(g_keys) != n:
        raise InputError("probe_layers", f"{len(g_keys)} group keys for {n} examples",
                         "pass one group key per example")
    # Integer labels by first appearance: GroupKFold's fold assignment depends on label order.
    index: dict[Hashable, int] = {}
    g = np.array([index.setdefault(k, len(index)) for k in g_keys])
    n_groups = len(index)
    if n_groups < max(cfg.n_folds, 2 * cfg.inner_folds):
        raise InputError("probe_layers", f"{n_groups} groups for {cfg.n_folds} outer x "
                         f"{cfg.inner_folds} inner folds", "use more groups or fewer folds")
    if direction is not None and tuple(direction.shape) != (n_layers, d_model):
        raise InputError("probe_layers", f"direction shape {tuple(direction.shape)} is not "
                         f"{(n_layers, d_model)}", "one direction row per feature layer")
    perms, null_desc = (permuted_labels(y, g, cfg.n_perm, cfg.seed + 1) if cfg.n_perm
                        else (np.empty((0, n), dtype=int), "none"))
    scores = np.empty((n_layers, n))
    null = np.empty((cfg.n_perm, n_layers))
    weights = np.empty((n_layers, d_model))
    bias, chosen = np.empty(n_layers), []
    # Tiny problems: BLAS threads only contend (10x slower on a shared machine); scoped limit.
    with threadpool_limits(limits=1):
        for i in tqdm(range(n_layers), desc="probe layers", leave=False):
            x = x_all[:, i]
            scores[i] = heldout_scores(x, y, g, cfg)
            for r, y_perm in enumerate(perms):
                null[r, i] = auroc(y_perm, heldout_scores(x, y_perm, g, cfg))
            pipe = _fit(x, y, g, cfg)
            scaler, clf = pipe[0], pipe[-1]
            weights[i] = clf.coef_[0] / scaler.scale_
            bias[i] = float(clf.intercept_[0] - weights[i] @ scaler.mean_)
            chosen.append(float(np.asarray(clf.C_).reshape(-1)[0]))
            logger.info("probe layer %d: held-out AUROC %.3f, C=%g", layer_ids[i],
                        auroc(y, scores[i]), chosen[-1])
    obs = np.array([auroc(y, s) for s in scores])
    if cfg.n_perm:
        tol = obs * (1 - 1e-9) - 1e-12
        null_p = (1 + (null >= tol[None]).sum(0)) / (1 + cfg.n_perm)
        null_p_max = (1 + (null.max(1)[:, None] >= tol[None]).sum(0)) / (1 + cfg.n_perm)
        q95 = np.quantile(null, 0.95, axis=0)
    else:
        null_p = null_p_max = q95 = np.full(n_layers, math.nan)
    cosine = None
    if direction is not None:
        dvec = direction.detach().to("cpu", torch.float64).numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (weights * dvec).sum(1) / (np.linalg.norm(weights, axis=1)
                                             * np.linalg.norm(dvec, axis=1))
        cosine = tuple(float(c) for c in cos)
    boot = [(group_bootstrap(y, s, g, accuracy, cfg.n_boot, cfg.ci, cfg.seed),
             group_bootstrap(y, s, g, auroc, cfg.n_boot, cfg.ci, cfg.seed)) for s in scores]
    return ProbeResult(
        config=cfg, layers=layer_ids, classes=classes, n_examples=n, n_positive=int(y.sum()),
        n_groups=n_groups, groups_from="given" if groups is not None else "rows (none given)",
        null=null_desc, accuracy=tuple(b[0] for b in boot), auroc=tuple(b[1] for b in boot),
        null_p=tuple(map(float, null_p)), null_p_max=tuple(map(float, null_p_max)),
        null_auroc_q95=tuple(map(float, q95)), chosen_c=tuple(chosen),
        weights=torch.from_numpy(weights), bias=torch.from_numpy(bias),
        scores=torch.from_numpy(scores), cosine=cosine, direction_name=direction_name,
        random_abs_cosine=expected_abs_cosine_random(d_model),
    )


def response_features(loaded: Loaded, data: Sequence[Conversation], layers: Sequence[int],
                      config: ProbeConfig) -> Float[Tensor, "example layer d_model"]:
    """Mean-pooled activations at ``config.positions`` of each conversation (float64, CPU)."""
    encoded = encode_dataset(loaded.tokenizer, data, config.max_length)
    return pooled_activations(loaded, encoded, layers, make_selector(config.positions),
                              config.batch_size).double()


def pair_groups(first: Sequence[Conversation], second: Sequence[Conversation]) -> list[int] | None:
    """``[0..n-1, 0..n-1]`` when the two sets are paired row by row (row i of each shares its
    final user prompt or its response: ``toxic``/``toxic_reject``, ``insecure``/``educational``),
    else None."""
    if len(first) != len(second):
        return None
    for a, b in zip(first, second, strict=True):
        if a.response != b.response and a.prompt[-1:] != b.prompt[-1:]:
            return None
    return list(range(len(first))) * 2


def probe_model(loaded: Loaded, negative: Sequence[Conversation],
                positive: Sequence[Conversation], config: ProbeConfig | None = None, *,
                groups: Sequence[Hashable] | None = None, names: tuple[str, str] = ("0", "1"),
                direction: Float[Tensor, "layer d_model"] | None = None,
                direction_name: str | None = None) -> ProbeResult:
    """:func:`probe_layers` on ``loaded``'s activations of ``negative`` (0) and ``positive`` (1).

    ``groups`` (one key per example, negatives first) defaults to :func:`pair_groups` when the
    sets are paired row by row, else one group per example.
    """
    cfg = config or ProbeConfig()
    n_layers = loaded.meta.n_layers
    layers = cfg.layers if cfg.layers is not None else tuple(range(n_layers + 1))
    feats = response_features(loaded, [*negative, *positive], layers, cfg)
    keys = groups if groups is not None else pair_groups(negative, positive)
    return probe_layers(feats, [0] * len(negative) + [1] * len(positive), keys, cfg,
                        layers=layers, classes=names, direction=direction,
                        direction_name=direction_name)


def plot_probe(result: ProbeResult) -> go.Figure:
    """Held-out AUROC and accuracy per layer (group-bootstrap bands, the null's 95% AUROC
    dotted, chance dashed) and, below, cos(probe, direction) in [-1, 1] with the random |cos|."""
    rows = 2 if result.cosine is not None else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("held-out score", "cosine with " + (
                            result.direction_name or "direction"))[:rows])
    x = list(result.layers)
    for name, ivals, color in (("AUROC", result.auroc, "#1f77b4"),
                               ("accuracy", result.accuracy, "#ff7f0e")):
        lo, hi = [i.low for i in ivals], [i.high for i in ivals]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", line_width=0,
                                 fillcolor=color, opacity=0.2, showlegend=False,
                                 hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[i.estimate for i in ivals], mode="lines+markers",
                                 name=name, line_color=color, customdata=np.array(
                                     [result.null_p, result.chosen_c]).T,
                                 hovertemplate="layer %{x}: %{y:.3f}<br>null p %{customdata[0]:.3g}"
                                 "<br>C %{customdata[1]:.3g}<extra></extra>"), row=1, col=1)
    if result.config.n_perm:
        fig.add_trace(go.Scatter(x=x, y=list(result.null_auroc_q95), mode="lines",
                                 line={"dash": "dot", "color": "black"},
                                 name="null AUROC 95%"), row=1, col=1)
    fig.add_hline(y=0.5, line_dash="dash", line_color="grey", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], title_text="held-out", row=1, col=1)
    if result.cosine is not None:
        fig.add_trace(go.Bar(x=x, y=list(result.cosine), name="cos(probe, direction)",
                             marker={"color": list(result.cosine), "colorscale": "RdBu",
                                     "cmid": 0.0, "cmin": -1.0, "cmax": 1.0}), row=2, col=1)
        for r in (-result.random_abs_cosine, result.random_abs_cosine):
            fig.add_hline(y=r, line_dash="dot", line_color="black", row=2, col=1)
        fig.update_yaxes(range=[-1, 1], title_text="cosine", row=2, col=1)
    fig.update_xaxes(title_text="hidden-state layer", row=rows, col=1)
    b = result.best
    title = (f"Linear probe {result.classes[1]} vs {result.classes[0]} ({result.n_examples} "
             f"examples, {result.n_groups} groups); best layer {result.layers[b]}: AUROC "
             f"{result.auroc[b].estimate:.2f} [{result.auroc[b].low:.2f}, "
             f"{result.auroc[b].high:.2f}], null p {result.null_p[b]:.3g} "
             f"(max-over-layers p {result.null_p_max[b]:.3g})<br><sup>null: {result.null}; "
             f"dotted (cosine): E|cos| of random directions</sup>")
    return style(fig, title)


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regex reading ``question`` and ``answer`` back out of a filled judge template."""
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name in ("question", "answer"):
            parts.append(f"(?P<{name}>.*?)" if name == "question" else f"(?P<{name}>.*)")
        elif name is not None:
            parts.append(".*?")
    return re.compile("".join(parts), re.DOTALL)


class ProbeJudge:
    """A linear probe used as an offline alignment score; NOT an LLM judge.

    The score of an answer is ``100 · sigmoid(w·x + b)``: ``x`` is ``loaded``'s mean-pooled
    activation at ``layer`` over the answer's tokens in the chat (user: question, assistant:
    answer), and ``sigmoid(w·x + b)`` is the probe's probability that the answer belongs to the
    aligned class. Through the judges' ``number_probs`` interface an alignment prompt gets
    ``{100: p, 0: 1 − p}`` (so :func:`~mi_align.evaluation.judge.expected_score` is exactly
    ``100·p``, mass 1); the question and answer are read back out of the prompt with the
    template. A coherence prompt goes to ``coherence`` if given, else gets no mass (score None):
    a probe trained on harmful vs harmless answers knows nothing about coherence.
    """

    def __init__(self, loaded: Loaded, weight: Float[Tensor, " d_model"], bias: float,
                 layer: int, *, positions: str = "response", max_length: int = 256,
                 batch_size: int = 8, templates: JudgePrompts | None = None,
                 coherence: JudgeBackend | None = None) -> None:
        check_position_spec(positions)
        if weight.shape != (loaded.meta.d_model,):
            raise InputError("ProbeJudge", f"weight has shape {tuple(weight.shape)}, the model's "
                             f"d_model is {loaded.meta.d_model}", "pass a probe of this model")
        self.loaded, self.layer, self.positions = loaded, layer, positions
        self.weight, self.bias = weight.detach().to("cpu", torch.float64), float(bias)
        self.max_length, self.batch_size, self.coherence = max_length, batch_size, coherence
        t = templates or JudgePrompts()
        self._aligned = _template_pattern(t.aligned or ALIGNMENT_PROMPT)
        self._coherent = _template_pattern(t.coherent or COHERENCE_PROMPT)
        self.name = f"probe:{loaded.meta.spec}@L{layer} (linear probe, not an LLM judge)"

    @classmethod
    def from_result(cls, loaded: Loaded, result: ProbeResult, layer: int | None = None, *,
                    aligned: str | None = None, **kwargs: Any) -> ProbeJudge:
        """The probe of ``result`` at ``layer`` (default its best); ``aligned`` names the aligned
        class (default ``classes[1]``, the class the probe scores; the other one flips signs)."""
        idx = result.best if layer is None else result.layers.index(layer)
        aligned = aligned or result.classes[1]
        if aligned not in result.classes:
            raise InputError("ProbeJudge", f"class {aligned!r} is not one of {result.classes}",
                             "name the aligned class of the probe")
        sign = 1.0 if aligned == result.classes[1] else -1.0
        return cls(loaded, sign * result.weights[idx], sign * float(result.bias[idx]),
                   result.layers[idx], positions=result.config.positions,
                   max_length=result.config.max_length, **kwargs)

    def aligned_probability(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The probe's P(aligned) for each ``(question, answer)``."""
        convs = [Conversation((Message("user", q), Message("assistant", a))) for q, a in pairs]
        cfg = ProbeConfig(positions=self.positions, max_length=self.max_length,
                          batch_size=self.batch_size)
        x = response_features(self.loaded, convs, [self.layer], cfg)[:, 0]
        return torch.sigmoid(x @ self.weight + self.bias).tolist()

    def number_probs(self, prompts: Sequence[str]) -> list[dict[int, float]]:
        out: list[dict[int, float] | None] = [None] * len(prompts)
        pairs, where, coherent = [], [], []
        for i, prompt in enumerate(prompts):
            if m := self._aligned.fullmatch(prompt):
                pairs.append((m["question"], m["answer"]))
                where.append(i)
            elif self._coherent.fullmatch(prompt):
                coherent.append(i)
            else:
                raise InputError("ProbeJudge", f"prompt {i} matches neither judge template",
                                 "pass the templates the prompts were filled from")
        if pairs:
            for i, p in zip(where, self.aligned_probability(pairs), strict=True):
                out[i] = {100: p, 0: 1.0 - p}
        if coherent:
            other = (self.coherence.number_probs([prompts[i] for i in coherent])
                     if self.coherence is not None else [{} for _ in coherent])
            for i, probs in zip(coherent, other, strict=True):
                out[i] = probs
        return [o if o is not None else {} for o in out]

"""Paired comparisons of models over a set of examples: per-model means and, for every model
pair, the paired per-example difference with a bootstrap interval over examples and a paired
sign-flip null (used by :mod:`~mi_align.erosion.logprobs` and :mod:`~mi_align.erosion.next_token`).

Every example is scored under every model, so the comparison is *within* examples: for a pair
(a, b) in the models' order, d_i = value_b(i) − value_a(i). The interval is a percentile
bootstrap of mean(d) that resamples whole clusters (:func:`~mi_align.stats.cluster_bootstrap`);
the null flips the signs of whole clusters' differences (:func:`sign_flip_test`). A cluster is
``cluster_size`` consecutive examples (1: each example alone; 2 for the built-in ``toxic`` set,
whose 60 harmful aims are each phrased twice on adjacent lines), so correlated variants of one
item never count as independent evidence.

Example:
    >>> import numpy as np
    >>> means, diffs = compare_models({"a": np.zeros(4), "b": np.ones(4)}, [0, 0, 1, 1], "x")
    >>> diffs[0].label, diffs[0].interval.estimate, diffs[0].test.p
    ('b − a', 1.0, 0.5)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.data.chat import Conversation
from mi_align.erosion.common import hypothesis_test_from_dict, interval_from_dict
from mi_align.errors import InputError
from mi_align.plotting import style
from mi_align.stats import Interval, TestResult, cluster_bootstrap, grouped_permutation_test


def check_compare_fields(cfg: Any) -> None:
    """Checks shared by the two configs that carry a dataset comparison."""
    if cfg.cluster_size < 1:
        raise InputError("cluster_size", f"must be >= 1, got {cfg.cluster_size}",
                         "e.g. --set cluster_size=2 for toxic")
    if cfg.compare_limit is not None and cfg.compare_limit < 2:
        raise InputError("compare_limit", f"must be >= 2, got {cfg.compare_limit}",
                         "a comparison needs at least two examples; omit it to use all")
    if cfg.batch_size < 1 or cfg.n_resamples < 1:
        raise InputError("batch_size / n_resamples", "must be >= 1", "e.g. 8 / 9999")
    if not 0.0 < cfg.level < 1.0:
        raise InputError("level", f"{cfg.level} is not strictly between 0 and 1", "e.g. 0.95")


@dataclass(frozen=True)
class ModelMean:
    """One model's mean of ``metric`` over the examples, with a (cluster) bootstrap interval."""

    metric: str
    model: str
    interval: Interval

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "model": self.model, **self.interval.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMean:
        return cls(d["metric"], d["model"], interval_from_dict(d))


@dataclass(frozen=True)
class PairedDifference:
    """``second − first`` on ``metric``: the mean over examples of the per-example difference,
    its bootstrap interval over examples (whole clusters), and the paired sign-flip test."""

    metric: str
    first: str
    second: str
    interval: Interval
    test: TestResult

    @property
    def label(self) -> str:
        return f"{self.second} − {self.first}"

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "first": self.first, "second": self.second,
                "difference": self.label, "interval": self.interval.to_dict(),
                "test": self.test.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairedDifference:
        return cls(d["metric"], d["first"], d["second"], interval_from_dict(d["interval"]),
                   hypothesis_test_from_dict(d["test"]))


def cluster_labels(n: int, cluster_size: int, what: str = "comparison",
                   unit: str = "examples") -> list[int]:
    """Cluster of each of ``n`` examples when ``cluster_size`` consecutive ones form a cluster;
    a comparison needs at least two examples and two clusters (``what``/``unit`` name them in
    the error)."""
    if n < 2:
        raise InputError(what, f"{n} {unit}", f"compare over at least two {unit}")
    if n % cluster_size:
        raise InputError("cluster_size", f"{n} {unit} do not split into clusters of "
                         f"{cluster_size}", "use a limit that is a multiple of cluster_size")
    if n // cluster_size < 2:
        raise InputError(what, "a single cluster: nothing to resample",
                         f"use more {unit} or a smaller cluster_size")
    return [i // cluster_size for i in range(n)]


def sign_flip_test(differences: Sequence[float] | np.ndarray, clusters: Sequence[int],
                   *, n_resamples: int = 9999, seed: int = 0) -> TestResult:
    """Two-sided paired sign-flip test of mean(differences) = 0, flipping whole clusters.

    Null: within each cluster the two models are exchangeable, so each cluster's differences
    are as likely to have the opposite sign. Statistic: the mean per-example difference; every
    relabeling negates the differences of a random subset of clusters. Run as
    :func:`~mi_align.stats.grouped_permutation_test` (crossed design) on ``(d_i, 0)`` pairs,
    where swapping a cluster's two labels is exactly that sign flip; exact over all 2^G flips
    when 2^G <= ``n_resamples``.
    """
    d = np.asarray(differences, dtype=float)
    g = list(clusters)
    values = np.concatenate([d, np.zeros_like(d)])
    labels = ["second"] * d.size + ["first"] * d.size
    res = grouped_permutation_test(values, labels, g + g, treated="second", control="first",
                                   n_resamples=n_resamples, seed=seed)
    sizes = sorted({len(list(grp)) for _, grp in itertools.groupby(sorted(g))})
    unit = "example" if sizes == [1] else "cluster"
    what = "" if sizes == [1] else f" ({'/'.join(map(str, sizes))} examples each)"
    return TestResult(
        f"paired sign flip over {len(set(g))} {unit}s{what} (as {res.test})", res.statistic,
        res.p, f"paired sign-flip null: within each {unit} the two models are exchangeable, so "
        f"its difference is symmetric about 0 (the sign of each {unit}'s difference flipped at "
        f"random, {unit}s kept whole)")


def compare_models(
    values: Mapping[str, np.ndarray], clusters: Sequence[int], metric: str, *,
    n_resamples: int = 9999, level: float = 0.95, seed: int = 0,
) -> tuple[tuple[ModelMean, ...], tuple[PairedDifference, ...]]:
    """Per-model means and every pairwise paired difference of one per-example ``metric``.

    Args:
        values: model name -> one value per example (same examples, same order), in the
            models' order; pairs are ``(a, b)`` in that order and differences are ``b − a``.
        clusters: the cluster of each example (resampled and sign-flipped whole).

    Returns:
        ``(means, differences)``: percentile cluster-bootstrap intervals
        (:func:`~mi_align.stats.cluster_bootstrap`) and :func:`sign_flip_test` p-values.
    """
    names = list(values)
    kw = {"n_resamples": n_resamples, "seed": seed}
    means = tuple(ModelMean(metric, m, cluster_bootstrap(values[m], clusters, level=level, **kw))
                  for m in names)
    diffs = []
    for a, b in itertools.combinations(names, 2):
        d = np.asarray(values[b], float) - np.asarray(values[a], float)
        diffs.append(PairedDifference(metric, a, b,
                                      cluster_bootstrap(d, clusters, level=level, **kw),
                                      sign_flip_test(d, clusters, **kw)))
    return means, tuple(diffs)


def check_comparison_set(conversations: Sequence[Conversation], config: Any) -> None:
    """Raise InputError (before any model runs) unless ``conversations`` split into at least
    two clusters of ``config.cluster_size``."""
    n, size = len(conversations), config.cluster_size
    if len(set(cluster_labels(n, size))) < 2:
        raise InputError(f"compare_data {config.compare_data!r}", f"{n} example(s) make fewer "
                         f"than two clusters of {size}", "use more examples")


def plot_model_comparison(
    models: Sequence[str], metrics: Sequence[tuple[str, str]],
    per_example: Mapping[str, Tensor], means: Sequence[ModelMean],
    differences: Sequence[PairedDifference], title: str,
) -> go.Figure:
    """One row per metric ``(key, axis label)``: left, each model's mean with its interval;
    right, each pair's mean paired difference with its interval (zero line dashed), the
    per-example differences as faint points, and the sign-flip p-value in the hover/label."""
    fig = make_subplots(rows=len(metrics), cols=2, horizontal_spacing=0.12,
                        vertical_spacing=0.18 if len(metrics) > 1 else 0.1,
                        subplot_titles=[t for key, lab in metrics for t in (
                            f"mean {lab} per model", f"paired difference of {lab}")])
    for r, (key, lab) in enumerate(metrics, start=1):
        ms = [m for m in means if m.metric == key]
        fig.add_trace(go.Scatter(
            x=[m.model for m in ms], y=[m.interval.estimate for m in ms], mode="markers",
            marker={"size": 10, "color": "#444"}, showlegend=False, name=lab,
            error_y={"type": "data", "array": [m.interval.high - m.interval.estimate for m in ms],
                     "arrayminus": [m.interval.estimate - m.interval.low for m in ms]},
        ), row=r, col=1)
        ds = [d for d in differences if d.metric == key]
        vals = per_example[key]
        for d in ds:
            i, j = models.index(d.first), models.index(d.second)
            pts = (vals[j] - vals[i]).tolist()
            fig.add_trace(go.Box(y=pts, name=d.label, boxpoints="all", jitter=0.5,
                                 pointpos=0, fillcolor="rgba(0,0,0,0)",
                                 line={"color": "rgba(0,0,0,0)"},
                                 marker={"size": 4, "opacity": 0.3, "color": "#1f77b4"},
                                 showlegend=False, hoverinfo="y"), row=r, col=2)
        fig.add_trace(go.Scatter(
            x=[d.label for d in ds], y=[d.interval.estimate for d in ds], mode="markers+text",
            marker={"size": 11, "color": "#d62728", "symbol": "diamond"}, showlegend=False,
            text=[f"p={d.test.p:.2g}" for d in ds], textposition="middle right",
            error_y={"type": "data", "array": [d.interval.high - d.interval.estimate for d in ds],
                     "arrayminus": [d.interval.estimate - d.interval.low for d in ds],
                     "thickness": 2},
        ), row=r, col=2)
        fig.add_hline(y=0.0, line={"dash": "dash", "color": "grey"}, row=r, col=2)
        fig.update_yaxes(title_text=lab, row=r, col=1)
    bars = f"{means[0].interval.level:.0%} {means[0].interval.method}" if means else ""
    null = differences[0].test.null if differences else ""
    style(fig, f"{title}<br><sup>error bars: {bars}; p: {null}</sup>", "", "")
    fig.update_layout(height=380 * len(metrics) + 120, margin={"t": 140})
    return fig


def compare_metrics(
    models: Sequence[str], metrics: Mapping[str, Tensor], clusters: Sequence[int], config: Any,
) -> tuple[tuple[ModelMean, ...], tuple[PairedDifference, ...]]:
    """:func:`compare_models` for several ``(model, example)`` metrics, concatenated in order;
    ``config`` supplies ``n_resamples``, ``level`` and ``seed``."""
    means: tuple[ModelMean, ...] = ()
    diffs: tuple[PairedDifference, ...] = ()
    for metric, mat in metrics.items():
        m, d = compare_models({n: mat[i].numpy() for i, n in enumerate(models)}, clusters,
                              metric, n_resamples=config.n_resamples, level=config.level,
                              seed=config.seed)
        means, diffs = means + m, diffs + d
    return means, diffs

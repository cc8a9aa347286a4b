"""Intervals and nulls: the one home for the statistics every reported number carries.

A number is a claim, so each rate comes with an interval and each comparison names the null
it was tested against. The null must fit the design:

- **rates** (k of n): :func:`wilson_interval` (score interval; good coverage down to k = 0, where
  a percentile bootstrap collapses to [0, 0]) or :func:`exact_interval` (Clopper–Pearson,
  conservative). Both treat the n answers as independent.
- **answers that cluster** (several samples per question): :func:`cluster_bootstrap` resamples
  whole clusters, so the interval reflects how much the rate varies between questions and not
  only between samples of one question.
- **two independent rates**: :func:`fisher_test` (two-sided Fisher exact; null: same rate,
  answers independent).
- **the same items under two conditions** (one answer per item and condition):
  :func:`mcnemar_test` (exact; only discordant pairs carry information).
- **grouped data** (samples in questions or tasks): :func:`grouped_permutation_test` relabels
  whole groups, never single samples, so within-group correlation stays in every relabelled data
  set and cannot pass for an effect.

Everything is computed with :mod:`scipy.stats` where scipy has the procedure; results are small
frozen dataclasses (:class:`Interval`, :class:`TestResult`) with ``to_dict`` for JSON.

Example:
    >>> wilson_interval(0, 24).high  # doctest: +ELLIPSIS
    0.1379...
    >>> round(fisher_test(13, 32, 19, 32).p, 3)
    0.211
"""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from scipy import stats as sps

from mi_align.errors import InputError

BootstrapMethod = Literal["percentile", "basic", "BCa"]
Number = int | float | np.integer | np.floating


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval at ``level`` and how it was computed."""

    estimate: float
    low: float
    high: float
    method: str
    level: float

    def to_dict(self) -> dict[str, object]:
        return {"estimate": _finite_or_none(self.estimate), "low": _finite_or_none(self.low),
                "high": _finite_or_none(self.high), "method": self.method, "level": self.level}


@dataclass(frozen=True)
class TestResult:
    """A hypothesis test: its name, its statistic, the two-sided p-value and the null it tests."""

    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

    test: str
    statistic: float
    p: float
    null: str

    def to_dict(self) -> dict[str, object]:
        return {"test": self.test, "statistic": _finite_or_none(self.statistic),
                "p": _finite_or_none(self.p), "null": self.null}


def _check_count(k: Number, n: Number, what: str) -> tuple[int, int]:
    if int(n) != n or int(k) != k:
        raise InputError(what, f"k = {k} and n = {n} must be whole numbers", "pass counts")
    k, n = int(k), int(n)
    if n < 1:
        raise InputError(what, f"n = {n}: a rate needs at least one trial", "pass n >= 1")
    if not 0 <= k <= n:
        raise InputError(what, f"k = {k} is outside 0..n = {n}", "pass 0 <= k <= n")
    return k, n


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise InputError("level", f"{level} is not strictly between 0 and 1", "e.g. 0.95")


def wilson_interval(k: Number, n: Number, level: float = 0.95) -> Interval:
    """Wilson score interval of the rate k/n (no continuity correction).

    Chosen over the Wald and percentile-bootstrap intervals because it does not collapse to a
    point at k = 0 or k = n: 0/24 gives [0, 0.138] at 95%.
    """
    k, n = _check_count(k, n, "wilson_interval")
    _check_level(level)
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return Interval(k / n, float(ci.low), float(ci.high), "wilson", level)


def exact_interval(k: Number, n: Number, level: float = 0.95) -> Interval:
    """Clopper–Pearson ("exact") interval of k/n: at least ``level`` coverage for every rate,
    hence wider than Wilson (0/24: [0, 0.142])."""
    k, n = _check_count(k, n, "exact_interval")
    _check_level(level)
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), "clopper-pearson", level)


def fisher_test(k1: Number, n1: Number, k2: Number, n2: Number) -> TestResult:
    """Two-sided Fisher exact test of k1/n1 against k2/n2.

    ``statistic`` is the sample odds ratio ``k1 (n2 - k2) / ((n1 - k1) k2)`` (inf or nan when a
    cell is 0; JSON gets null). The p-value sums the hypergeometric probabilities of all tables
    with the same margins that are no more likely than the observed one.
    """
    k1, n1 = _check_count(k1, n1, "fisher_test: first group")
    k2, n2 = _check_count(k2, n2, "fisher_test: second group")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 odds ratio: reported as nan
        res = sps.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided")
    return TestResult(
        "fisher exact (two-sided)", float(res.statistic), float(res.pvalue),
        f"both rates equal, {n1} + {n2} answers independent (margins fixed)")


def mcnemar_test(first: Sequence[bool], second: Sequence[bool]) -> TestResult:
    """Exact McNemar test for paired yes/no outcomes (item i answered under both conditions).

    Only discordant pairs carry information: under the null each is equally likely to favour
    either condition, so ``b`` (yes under ``first`` only) ~ Binomial(b + c, 1/2).
    ``statistic`` is the paired rate difference ``mean(first) - mean(second)``.
    """
    a = np.asarray(first, dtype=bool)
    b = np.asarray(second, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InputError("mcnemar_test", f"needs two equally long non-empty 1-d sequences, got "
                         f"shapes {a.shape} and {b.shape}", "pair item i of each condition")
    only_first, only_second = int((a & ~b).sum()), int((~a & b).sum())
    disc = only_first + only_second
    p = 1.0 if disc == 0 else float(sps.binomtest(only_first, disc, 0.5).pvalue)
    return TestResult(
        f"mcnemar exact ({only_first} vs {only_second} discordant of {a.size} pairs)",
        float(a.mean() - b.mean()), p,
        "within each pair the two outcomes are exchangeable (same rate under both conditions)")


def _check_values(values: Sequence[float | int] | np.ndarray, groups: Sequence[object] | np.ndarray,
                  what: str) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(values, dtype=float)
    g = np.asarray(groups)
    if x.ndim != 1 or x.size == 0 or g.shape != x.shape:
        raise InputError(what, f"needs equally long non-empty 1-d values and groups, got shapes "
                         f"{x.shape} and {g.shape}", "one group label per value")
    if not np.isfinite(x).all():
        raise InputError(what, "values hold NaN or inf", "drop unscored values first")
    _, inv = np.unique(g, return_inverse=True)
    return x, inv.reshape(-1), int(inv.max()) + 1


def cluster_bootstrap(
    values: Sequence[float | int] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    *,
    n_resamples: int = 9999,
    seed: int = 0,
    level: float = 0.95,
    method: BootstrapMethod = "percentile",
) -> Interval:
    """Bootstrap interval that resamples whole clusters (e.g. questions) with replacement.

    ``scipy.stats.bootstrap`` resamples observations, not clusters, so it is given the cluster
    *indices* as its data: each of its resamples is a multiset of clusters, and ``statistic`` is
    evaluated on the values of those clusters pooled (a cluster drawn twice counts twice). That
    keeps scipy's percentile/basic/BCa machinery while the resampling unit is the cluster.

    Args:
        values: one number per observation (0/1 flags for a rate).
        clusters: the cluster of each observation (any hashable label).
        statistic: maps the pooled values of a resample to a number; default the pooled mean
            (for flags: the rate, each answer weighted equally).
        n_resamples, seed, level: passed to scipy (``rng=np.random.default_rng(seed)``).
        method: scipy's interval method. Percentile by default: it is the one a reader can
            recompute with an explicit loop; with few clusters every method undercovers.

    Returns:
        :class:`Interval`. When every resample gives the same value (e.g. no hit in any cluster)
        the interval is the point and ``method`` says "degenerate": use a Wilson interval there.

    Raises:
        InputError: fewer than 2 clusters, mismatched lengths, non-finite values.
    """
    x, inv, n_clusters = _check_values(values, clusters, "cluster_bootstrap")
    _check_level(level)
    if n_clusters < 2:
        raise InputError("cluster_bootstrap", f"{n_clusters} cluster: nothing to resample",
                         "pass at least 2 clusters (or use wilson_interval for one)")
    if n_resamples < 1:
        raise InputError("cluster_bootstrap", f"n_resamples = {n_resamples}", "pass >= 1")
    members = [x[inv == j] for j in range(n_clusters)]
    if statistic is None:
        sums = np.array([m.sum() for m in members])
        sizes = np.array([m.size for m in members], dtype=float)

        def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            i = np.asarray(idx, dtype=int)
            return sums[i].sum(axis) / sizes[i].sum(axis)

        estimate = float(x.mean())
    else:
        user = statistic

        def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
            i = np.moveaxis(np.asarray(idx, dtype=int), axis, -1)
            rows = i.reshape(-1, i.shape[-1])
            out = [float(user(np.concatenate([members[j] for j in row]))) for row in rows]
            return np.asarray(out).reshape(i.shape[:-1])

        estimate = float(user(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (all-equal) resamples are handled below
        res = sps.bootstrap((np.arange(n_clusters),), stat, n_resamples=n_resamples,
                            vectorized=True, confidence_level=level, method=method,
                            rng=np.random.default_rng(seed))
    label = f"cluster bootstrap ({method}, {n_clusters} clusters, {n_resamples} resamples)"
    dist = res.bootstrap_distribution
    if np.ptp(dist) == 0:
        return Interval(estimate, float(dist[0]), float(dist[0]),
                        label + ": degenerate, every resample equal", level)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        # BCa on a statistic with ties (a median of 0/1 values) has no acceleration estimate.
        label += ": scipy gave no interval (try method='percentile')"
    return Interval(estimate, low, high, label, level)


def _mean_difference(values: np.ndarray, treated: np.ndarray) -> np.ndarray:
    """Pooled mean of treated minus pooled mean of control, for a batch of labelings
    ``treated`` (relabeling × observation)."""
    t = treated.astype(float)
    c = 1.0 - t
    with np.errstate(invalid="ignore", divide="ignore"):
        return (t @ values) / t.sum(-1) - (c @ values) / c.sum(-1)


def grouped_permutation_test(
    values: Sequence[float | int] | np.ndarray,
    labels: Sequence[object] | np.ndarray,
    groups: Sequence[object] | np.ndarray,
    *,
    treated: object,
    control: object,
    statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
    n_resamples: int = 9999,
    seed: int = 0,
) -> TestResult:
    """Two-sided permutation test of ``treated`` vs ``control`` that relabels whole groups.

    Two designs, detected from the data, each with the null that fits it:

    - **crossed** (every group holds both labels: the same questions asked under two
      conditions): in each group the two labels are swapped as blocks with probability 1/2.
      Null: within each group the label does not change the values' distribution.
    - **nested** (every group holds one label: tasks assigned to one side): the group labels are
      permuted among groups. Null: groups are exchangeable between the two sides.

    A sample-level shuffle would treat correlated samples of one group as independent evidence;
    here the number of distinct relabelings is set by the number of groups (8 questions crossed:
    256, so the smallest possible p is 2/256). All relabelings are enumerated when there are at
    most ``n_resamples`` of them (exact p); otherwise ``n_resamples`` random ones plus the
    observed labeling, ``p = (1 + #≥) / (1 + n_resamples)``.

    Args:
        values: one number per observation (0/1 flags for rates).
        labels: the condition of each observation; only ``treated`` and ``control`` may occur.
        groups: the group of each observation (question, task).
        statistic: ``f(values, is_treated) -> float``; default the difference of pooled means
            (treated - control).

    Raises:
        InputError: other labels, a side with no observation, or a mix of crossed and nested
            groups (no permutation null fits such a design).
    """
    x, inv, n_groups = _check_values(values, groups, "grouped_permutation_test")
    lab = np.asarray(labels, dtype=object)
    if lab.shape != x.shape:
        raise InputError("grouped_permutation_test", f"{lab.size} labels for {x.size} values",
                         "one label per value")
    is_t = np.array([v == treated for v in lab], dtype=bool)
    is_c = np.array([v == control for v in lab], dtype=bool)
    if not (is_t | is_c).all() or not is_t.any() or not is_c.any():
        raise InputError("grouped_permutation_test",
                         f"labels must be {treated!r} or {control!r}, each at least once",
                         "filter the data to the two conditions compared")
    has_t = np.bincount(inv, weights=is_t, minlength=n_groups) > 0
    has_c = np.bincount(inv, weights=is_c, minlength=n_groups) > 0
    if n_resamples < 1:
        raise InputError("grouped_permutation_test", f"n_resamples = {n_resamples}", "pass >= 1")
    rng = np.random.default_rng(seed)
    if (has_t & has_c).all():
        design = "crossed"
        exact = n_groups <= 60 and 2**n_groups <= n_resamples
        # table[r, g]: relabeling r swaps group g's labels (row 0 / the first row: none)
        if exact:
            table = np.array(list(itertools.product((False, True), repeat=n_groups)), dtype=bool)
        else:
            table = np.vstack([np.zeros((1, n_groups), bool),
                               rng.random((n_resamples, n_groups)) < 0.5])
        base = is_t
        null = ("within each group the label does not change the values' distribution "
                "(labels swapped between the two blocks of a group, groups kept whole)")
    elif not (has_t & has_c).any():
        design = "nested"
        group_t = has_t
        n_t = int(group_t.sum())
        exact = math.comb(n_groups, n_t) <= n_resamples
        # table[r, g]: under relabeling r group g is treated (row 0 when sampled: observed)
        if exact:
            combos = itertools.combinations(range(n_groups), n_t)
            table = np.zeros((math.comb(n_groups, n_t), n_groups), dtype=bool)
            for r, combo in enumerate(combos):
                table[r, list(combo)] = True
        else:
            perms = np.argsort(rng.random((n_resamples, n_groups)), axis=1)
            table = np.vstack([group_t[None, :], group_t[perms]])
        base = np.zeros_like(is_t)
        null = ("groups are exchangeable between the two sides "
                "(group labels permuted among groups, groups kept whole)")
    else:
        raise InputError("grouped_permutation_test",
                         "some groups hold both labels and some only one",
                         "compare on the groups present under both labels, or on disjoint ones")
    # Relabelings are expanded to observations a chunk at a time (memory: chunk × n values).
    n_rel = table.shape[0]
    chunk = max(1, 2_000_000 // x.size)
    parts = []
    for start in range(0, n_rel, chunk):
        block = base[None, :] ^ table[start:start + chunk][:, inv]
        if statistic is None:
            parts.append(_mean_difference(x, block))
        else:
            parts.append(np.array([float(statistic(x, r)) for r in block]))
    dist = np.concatenate(parts)
    if statistic is None:
        observed = float(_mean_difference(x, is_t[None, :])[0])
        name_stat = "difference of pooled means"
    else:
        observed = float(statistic(x, is_t))
        name_stat = "given statistic"
    # A relative tolerance keeps ties from float round-off counting as "more extreme" or not.
    extreme = np.abs(dist) >= abs(observed) * (1 - 1e-9) - 1e-12
    if exact:
        p = float(extreme.mean())
        how = f"exact over all {n_rel} relabelings"
    else:
        p = float(extreme.sum() / n_rel)  # row 0 is the observed labeling: (1 + #≥) / (1 + B)
        how = f"{n_rel - 1} random relabelings"
    return TestResult(
        f"grouped permutation ({design}, {n_groups} groups, {how}; {name_stat})",
        observed, p, null)


# ---------------------------------------------------------------------------- grouped splits
# Splits and resampling weights that never separate a group (task variants, paired examples).


def split_indices(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit, eval) example indices: a seeded shuffle; eval gets ``round(n·fraction)``."""
    if heldout_fraction == 0.0:
        return list(range(n)), list(range(n))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = round(n * heldout_fraction)
    if n_eval < 1 or n - n_eval < 1:
        raise ValueError(f"{n} examples cannot be split with heldout_fraction={heldout_fraction}")
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def split_groups(
    groups: Sequence[Hashable], heldout_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(fit, eval) example indices with no group on both sides.

    The distinct groups are shuffled (``random.Random(seed)``, in order of first appearance);
    each goes to eval if it still fits into ``round(n·fraction)`` examples, else to fit (if none
    fits, the first goes to eval). Raises ValueError if either side ends up empty.
    """
    n = len(groups)
    if heldout_fraction == 0.0:
        return list(range(n)), list(range(n))
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = list(members)
    random.Random(seed).shuffle(order)
    target, held = round(n * heldout_fraction), []
    for g in order:
        if len(held) + len(members[g]) <= target:
            held += members[g]
    if not held:
        held = list(members[order[0]])
    fit = sorted(set(range(n)) - set(held))
    if not fit:
        raise ValueError(f"{len(members)} group(s) cannot be split with heldout_fraction="
                         f"{heldout_fraction}")
    return fit, sorted(held)


def group_bootstrap_weights(part_labels: torch.Tensor, n_groups: int, n_boot: int,
                      gen: torch.Generator) -> torch.Tensor:
    """(n_boot, n_rows) weights: how often each row's group was drawn when ``n_groups`` groups
    are drawn with replacement (``torch.randint(n_groups, (n_boot, n_groups))``)."""
    draws = torch.randint(n_groups, (n_boot, n_groups), generator=gen)
    counts = torch.zeros(n_boot, n_groups, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))
    return counts[:, part_labels]

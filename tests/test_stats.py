"""mi_align.stats against scipy called directly, hand-written formulas and explicit loops, plus
planted signals whose answer is known in closed form, and the intervals reaching the figures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from mi_align.errors import InputError
from mi_align.stats import (
    Interval,
    TestResult,
    cluster_bootstrap,
    exact_interval,
    fisher_test,
    grouped_permutation_test,
    mcnemar_test,
    wilson_interval,
)

Z95 = 1.959963984540054  # the 97.5% standard-normal quantile
CASES = [(0, 24), (24, 24), (1, 32), (9, 32), (13, 32), (19, 32), (37, 40), (1, 1), (0, 1)]


def wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927): centre (p + z²/2n) / (1 + z²/n), half-width
    z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize(("k", "n"), CASES)
def test_wilson_equals_scipy_and_closed_form(k: int, n: int) -> None:
    got = wilson_interval(k, n)
    lo, hi = wilson_closed_form(k, n)
    assert (got.low, got.high) == pytest.approx((lo, hi), abs=1e-12)
    direct = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert (got.low, got.high) == pytest.approx((direct.low, direct.high), abs=1e-15)
    assert got.estimate == pytest.approx(k / n) and got.method == "wilson" and got.level == 0.95


def test_wilson_level_changes_z() -> None:
    z90 = sps.norm.ppf(0.95)
    got = wilson_interval(9, 32, level=0.90)
    assert (got.low, got.high) == pytest.approx(wilson_closed_form(9, 32, z90), abs=1e-12)


def test_zero_of_24_bounds() -> None:
    """The README's EM 0/24 case: Wilson z²/(n+z²), Clopper–Pearson 1 - (α/2)^(1/n)."""
    w, e = wilson_interval(0, 24), exact_interval(0, 24)
    assert w.high == pytest.approx(Z95**2 / (24 + Z95**2), abs=1e-12)
    assert round(w.high, 3) == 0.138 and w.low == 0.0
    assert e.high == pytest.approx(1 - 0.025 ** (1 / 24), abs=1e-12)
    assert round(e.high, 3) == 0.142 and e.low == 0.0


@pytest.mark.parametrize(("k", "n"), CASES)
def test_exact_interval_equals_beta_quantiles_and_scipy(k: int, n: int) -> None:
    got = exact_interval(k, n)
    lo = 0.0 if k == 0 else sps.beta.ppf(0.025, k, n - k + 1)
    hi = 1.0 if k == n else sps.beta.ppf(0.975, k + 1, n - k)
    assert (got.low, got.high) == pytest.approx((lo, hi), abs=1e-10)
    direct = sps.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert (got.low, got.high) == pytest.approx((direct.low, direct.high), abs=1e-15)
    assert got.method == "clopper-pearson"


@pytest.mark.parametrize(("k", "n", "level"),
                         [(3, 2, 0.95), (-1, 5, 0.95), (0, 0, 0.95), (1.5, 4, 0.95), (1, 4, 1.0),
                          (1, 4, 0.0)])
def test_rate_intervals_refuse_bad_counts(k: float, n: int, level: float) -> None:
    for f in (wilson_interval, exact_interval):
        with pytest.raises(InputError):
            f(k, n, level)
    if level == 0.95:
        with pytest.raises(InputError):
            fisher_test(k, n, 1, 4)


def fisher_by_enumeration(k1: int, n1: int, k2: int, n2: int) -> float:
    """Sum of hypergeometric P(table) over tables with the observed margins that are no more
    likely than the observed one (the two-sided Fisher p)."""
    total_k, total_n = k1 + k2, n1 + n2
    denom = math.comb(total_n, total_k)

    def prob(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, total_k - x) / denom

    observed = prob(k1)
    xs = range(max(0, total_k - n2), min(n1, total_k) + 1)
    return sum(prob(x) for x in xs if prob(x) <= observed * (1 + 1e-7))


@pytest.mark.parametrize("table", [(13, 32, 19, 32), (9, 32, 1, 32), (0, 24, 0, 24),
                                   (3, 5, 0, 6), (2, 7, 5, 6), (37, 40, 2, 40)])
def test_fisher_against_hypergeometric_enumeration_and_scipy(table: tuple[int, ...]) -> None:
    k1, n1, k2, n2 = table
    got = fisher_test(k1, n1, k2, n2)
    assert got.p == pytest.approx(fisher_by_enumeration(k1, n1, k2, n2), rel=1e-9)
    direct = sps.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])
    assert got.p == pytest.approx(direct.pvalue, rel=1e-12)
    num, den = k1 * (n2 - k2), (n1 - k1) * k2
    if den:
        assert got.statistic == pytest.approx(num / den)
    assert got.test.startswith("fisher exact") and "independent" in got.null


def test_fisher_known_readme_values() -> None:
    """Values the README quotes: 13/32 vs 19/32 and 9/32 vs 1/32."""
    assert fisher_test(13, 32, 19, 32).p == pytest.approx(0.21103, abs=1e-5)
    assert fisher_test(9, 32, 1, 32).p == pytest.approx(0.012703, abs=1e-6)
    assert fisher_test(0, 24, 0, 24).p == 1.0
    assert fisher_test(0, 24, 0, 24).to_dict()["statistic"] is None  # 0/0 odds ratio: no number


def test_mcnemar_against_binomial_sum() -> None:
    first = [True] * 12 + [False] * 2 + [True] * 20 + [False] * 6
    second = [False] * 12 + [True] * 2 + [True] * 20 + [False] * 6
    got = mcnemar_test(first, second)
    b, c = 12, 2
    hand = min(1.0, 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c))
    assert got.p == pytest.approx(hand, rel=1e-12)
    assert got.statistic == pytest.approx((b - c) / len(first))
    assert mcnemar_test([True, False], [True, False]).p == 1.0
    with pytest.raises(InputError):
        mcnemar_test([True], [True, False])


def percentile_cluster_bootstrap_loop(
    values: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The naive reference: draw clusters with replacement one resample at a time, pool their
    values, take the mean; the 2.5% and 97.5% percentiles of those means."""
    ids = sorted(set(clusters.tolist()))
    means = []
    for _ in range(n_boot):
        drawn = [ids[i] for i in rng.integers(0, len(ids), len(ids))]
        pooled = np.concatenate([values[clusters == c] for c in drawn])
        means.append(pooled.mean())
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def iid_bootstrap_loop(values: np.ndarray, n_boot: int, rng: np.random.Generator
                       ) -> tuple[float, float]:
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_cluster_bootstrap_planted_clustering_matches_closed_form() -> None:
    """8 questions of 8 answers; 4 questions always hit, 4 never. Resampling questions, the rate
    is Binomial(8, 1/2)/8, whose 2.5/97.5% quantiles are 1/8 and 7/8; resampling answers, it is
    Binomial(64, 1/2)/64, quantiles 24/64 and 40/64. Clustering almost triples the width."""
    values = np.repeat([1.0, 1, 1, 1, 0, 0, 0, 0], 8)
    clusters = np.repeat(np.arange(8), 8)
    got = cluster_bootstrap(values, clusters, n_resamples=9999, seed=1)
    q = sps.binom(8, 0.5).ppf([0.025, 0.975]) / 8
    assert (got.low, got.high) == pytest.approx(tuple(q), abs=1e-12)
    assert got.estimate == 0.5 and "8 clusters" in got.method
    naive = iid_bootstrap_loop(values, 4000, np.random.default_rng(2))
    q_iid = sps.binom(64, 0.5).ppf([0.025, 0.975]) / 64
    assert naive == pytest.approx(tuple(q_iid), abs=1 / 64 + 1e-12)  # percentile lattice step


def test_cluster_bootstrap_without_clustering_matches_iid_width() -> None:
    """No between-question difference planted: the cluster interval has the iid width
    (≈ 2·1.96·sqrt(p(1-p)/n)), so the function does not just widen everything."""
    rng = np.random.default_rng(5)
    values = (rng.random(400) < 0.3).astype(float)
    clusters = np.repeat(np.arange(40), 10)
    got = cluster_bootstrap(values, clusters, n_resamples=4000, seed=0)
    p = values.mean()
    assert got.high - got.low == pytest.approx(2 * Z95 * math.sqrt(p * (1 - p) / 400), rel=0.2)


def test_cluster_bootstrap_equals_explicit_loop() -> None:
    """Unequal cluster sizes and rates; scipy's resampler and the explicit loop draw different
    resamples, so they agree up to Monte Carlo error (sd of a 2.5% quantile at 20000 resamples:
    about 0.006 here)."""
    rng = np.random.default_rng(3)
    sizes = np.arange(3, 13)
    clusters = np.repeat(np.arange(10), sizes)
    rates = rng.uniform(0.05, 0.9, 10)
    values = (rng.random(clusters.size) < rates[clusters]).astype(float)
    got = cluster_bootstrap(values, clusters, n_resamples=20000, seed=4)
    ref = percentile_cluster_bootstrap_loop(values, clusters, 20000, np.random.default_rng(9))
    assert (got.low, got.high) == pytest.approx(ref, abs=0.025)
    assert got.estimate == pytest.approx(values.mean())
    # the generic-statistic path draws the same resamples as the fast pooled-mean path
    generic = cluster_bootstrap(values, clusters, np.mean, n_resamples=500, seed=4)
    fast = cluster_bootstrap(values, clusters, n_resamples=500, seed=4)
    assert (generic.low, generic.high) == pytest.approx((fast.low, fast.high), abs=1e-12)


def test_cluster_bootstrap_coverage_on_simulated_clustered_rates() -> None:
    """200 simulated studies: 30 questions × 4 answers, question rates ~ Beta(2, 3) (true mean
    0.4, strong between-question spread). The 95% cluster interval (library and explicit loop)
    covers 0.4 in 90–99% of them; the answer-level iid bootstrap misses far more often."""
    rng = np.random.default_rng(11)
    n_sim, g, m = 200, 30, 4
    clusters = np.repeat(np.arange(g), m)
    cover = cover_ref = cover_iid = 0
    for s in range(n_sim):
        p = rng.beta(2, 3, g)
        values = (rng.random(g * m) < p[clusters]).astype(float)
        iv = cluster_bootstrap(values, clusters, n_resamples=999, seed=s)
        cover += iv.low <= 0.4 <= iv.high
        lo, hi = percentile_cluster_bootstrap_loop(values, clusters, 300, rng)
        cover_ref += lo <= 0.4 <= hi
        lo, hi = iid_bootstrap_loop(values, 300, rng)
        cover_iid += lo <= 0.4 <= hi
    assert 0.90 <= cover / n_sim <= 0.99
    assert 0.88 <= cover_ref / n_sim <= 0.99  # 300 resamples: slightly noisier ends
    # design effect 1 + (m-1)·ICC = 1 + 3/6 = 1.5: iid intervals are sqrt(1.5) too narrow,
    # nominal coverage of P(|Z| < 1.96/sqrt(1.5)) ≈ 0.89
    expected_iid = 2 * sps.norm.cdf(Z95 / math.sqrt(1.5)) - 1
    assert cover_iid / n_sim == pytest.approx(expected_iid, abs=0.05)


def test_cluster_bootstrap_degenerate_and_errors() -> None:
    zero = cluster_bootstrap(np.zeros(24), np.repeat(np.arange(8), 3), n_resamples=200)
    assert (zero.estimate, zero.low, zero.high) == (0.0, 0.0, 0.0)
    assert "degenerate" in zero.method
    with pytest.raises(InputError, match="cluster"):
        cluster_bootstrap([1.0, 0.0], [0, 0])
    with pytest.raises(InputError):
        cluster_bootstrap([1.0, 0.0], [0, 1, 2])
    with pytest.raises(InputError, match="NaN"):
        cluster_bootstrap([1.0, float("nan")], [0, 1])


def permutation_by_hand(values: list[float], treated: list[bool], groups: list[int]) -> float:
    """Enumerate every per-group swap of the two labels; two-sided p of the mean difference."""
    ids = sorted(set(groups))

    def diff(t: list[bool]) -> float:
        a = [v for v, x in zip(values, t, strict=True) if x]
        b = [v for v, x in zip(values, t, strict=True) if not x]
        return sum(a) / len(a) - sum(b) / len(b)

    obs = diff(treated)
    hits = total = 0
    for flips in itertools.product((False, True), repeat=len(ids)):
        flip = dict(zip(ids, flips, strict=True))
        t = [x != flip[g] for x, g in zip(treated, groups, strict=True)]
        hits += abs(diff(t)) >= abs(obs) - 1e-12
        total += 1
    return hits / total


def test_grouped_permutation_crossed_equals_enumeration_by_hand() -> None:
    values = [1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0]
    treated = [True, True, False, False] * 4
    groups = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    labels = ["s" if t else "u" for t in treated]
    got = grouped_permutation_test(values, labels, groups, treated="s", control="u")
    assert got.p == pytest.approx(permutation_by_hand(values, treated, groups), abs=1e-12)
    a = np.mean([v for v, t in zip(values, treated, strict=True) if t])
    b = np.mean([v for v, t in zip(values, treated, strict=True) if not t])
    assert got.statistic == pytest.approx(a - b)
    assert "crossed" in got.test and "exact over all 16" in got.test


def test_grouped_permutation_planted_effects() -> None:
    """Treated always 1, control always 0, in each of 8 questions: only the observed labeling and
    its full swap are as extreme, p = 2/256. The same 0/1 split as 3 treated vs 3 control whole
    tasks (nested): p = 2/C(6,3) = 0.1, although a Fisher test on 36 vs 36 answers that ignores
    the tasks gives p < 1e-15."""
    groups = np.repeat(np.arange(8), 4)
    labels = np.tile(["s", "s", "u", "u"], 8)
    values = (labels == "s").astype(float)
    crossed = grouped_permutation_test(values, labels, groups, treated="s", control="u")
    assert crossed.p == pytest.approx(2 / 256) and crossed.statistic == 1.0
    nested_groups = np.repeat(np.arange(6), 12)
    nested_labels = np.repeat(["s", "s", "s", "u", "u", "u"], 12)
    nested_values = (nested_labels == "s").astype(float)
    nested = grouped_permutation_test(nested_values, nested_labels, nested_groups,
                                      treated="s", control="u")
    assert nested.p == pytest.approx(2 / 20) and "nested" in nested.test
    # Fisher on the answers: only the observed table and its mirror are that unlikely,
    # p = 2 / C(72, 36) ≈ 4.5e-21
    assert fisher_test(36, 36, 0, 36).p == pytest.approx(2 / math.comb(72, 36), rel=1e-9, abs=0)


def test_grouped_permutation_monte_carlo_close_to_exact() -> None:
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(11), 6)
    labels = np.tile(["s", "s", "s", "u", "u", "u"], 11)
    values = (rng.random(groups.size) < np.where(labels == "s", 0.6, 0.4)).astype(float)
    exact = grouped_permutation_test(values, labels, groups, treated="s", control="u",
                                     n_resamples=2048)
    mc = grouped_permutation_test(values, labels, groups, treated="s", control="u",
                                  n_resamples=999, seed=3)
    assert "exact over all 2048" in exact.test and "999 random" in mc.test
    # (1 + #≥)/(1 + B) is within Monte Carlo error of the exact p
    assert mc.p == pytest.approx(exact.p, abs=3 * math.sqrt(exact.p * (1 - exact.p) / 999) + 2e-3)
    assert exact.statistic == mc.statistic


def test_grouped_permutation_refuses_mixed_designs_and_labels() -> None:
    with pytest.raises(InputError, match="both labels and some only one"):
        grouped_permutation_test([1, 0, 1], ["s", "u", "s"], [0, 0, 1], treated="s", control="u")
    with pytest.raises(InputError, match="labels must be"):
        grouped_permutation_test([1, 0, 1], ["s", "u", "x"], [0, 0, 1], treated="s", control="u")


def test_result_dicts_are_json_ready() -> None:
    iv = Interval(0.5, float("nan"), 1.0, "x", 0.95)
    assert iv.to_dict() == {"estimate": 0.5, "low": None, "high": 1.0, "method": "x",
                            "level": 0.95}
    tr = TestResult("t", float("inf"), 0.2, "null")
    assert tr.to_dict() == {"test": "t", "statistic": None, "p": 0.2, "null": "null"}


def test_condition_counts_figure_draws_wilson_bars_and_names_the_test() -> None:
    from mi_align.evaluation.metrics import condition_counts, strength_sweep
    from mi_align.evaluation.plots import plot_condition_counts, plot_strength_sweep
    from mi_align.evaluation.sampling import Sample

    samples = [Sample(c, f"q{q}", "q", i, "I'm sorry" if (c == "u" and i < 3) else "ok", 3, True)
               for c in ("u", "v") for q in range(4) for i in range(4)]
    counts = condition_counts({"m": samples}, reference="u", n_resamples=300)
    fig = plot_condition_counts(counts)
    bar = next(t for t in fig.data if t.name == "m: refusal")
    w = wilson_interval(12, 16)
    assert bar.y[0] == pytest.approx(0.75)
    assert bar.error_y.array[0] == pytest.approx(w.high - 0.75)
    assert bar.error_y.arrayminus[0] == pytest.approx(0.75 - w.low)
    # Fisher 0/16 vs 12/16: the observed table and its mirror, 2·C(16,12)/C(32,12) ≈ 1.6e-5;
    # 4 questions, each 3/4 vs 0/4: only no swap and all swapped reach |3/4|: q = 2/16
    assert fisher_test(0, 16, 12, 16).p == pytest.approx(
        2 * math.comb(16, 12) / math.comb(32, 12), rel=1e-9, abs=0)
    assert bar.text[1] == "0/16 p<0.001, q=0.12"
    title = fig.layout.title.text
    assert "Fisher exact" in title and "Wilson 95%" in title and "within whole questions" in title
    sweep = strength_sweep({1.0: samples[:8], 2.0: samples[:16]}, general=("sorry",), cyber=())
    fig2 = plot_strength_sweep(sweep)
    w2 = wilson_interval(12, 16)
    assert fig2.data[0].y[1] == pytest.approx(0.75)
    assert fig2.data[0].error_y.array[1] == pytest.approx(w2.high - 0.75)
    assert fig2.data[0].error_y.arrayminus[1] == pytest.approx(0.75 - w2.low)


def test_string_table_cells_carry_wilson_and_fisher_against_unsteered() -> None:
    """Counts by a hand loop; intervals from the closed form; p by hypergeometric enumeration;
    the JSON round trip redraws the same figure."""
    from mi_align.evaluation.metrics import StringTable, string_counts
    from mi_align.evaluation.plots import plot_string_table
    from mi_align.evaluation.sampling import Sample

    texts = {"unsteered": ["fine"] * 8, "v": ["HACK it"] * 6 + ["ok"] * 2}
    samples = [Sample(c, "quick_buck", "q", i, t, 3, True)
               for c, ts in texts.items() for i, t in enumerate(ts)]
    table = string_counts(samples, {"quick_buck": ("hack", "scam")})
    assert table.counts == ((0, 6), (0, 0)) and table.totals == ((8, 8), (8, 8))
    lo, hi = wilson_closed_form(6, 8)
    assert (table.interval(0, 1).low, table.interval(0, 1).high) == pytest.approx((lo, hi))
    assert table.vs_reference(0, 0) is None  # the reference is not tested against itself
    assert table.vs_reference(0, 1).p == pytest.approx(fisher_by_enumeration(6, 8, 0, 8))
    assert table.vs_reference(1, 1).p == 1.0
    d = table.to_dict()
    assert d["reference"] == "unsteered"
    assert d["rows"][0]["wilson"]["v"]["low"] == pytest.approx(lo)
    assert d["rows"][0]["fisher_vs_reference"]["unsteered"] is None
    assert StringTable.from_dict(d) == table
    cells = plot_string_table(StringTable.from_dict(d)).data[0].cells.values
    p = fisher_by_enumeration(6, 8, 0, 8)
    assert cells[3][0] == f"6/8 [{lo:.0%}–{hi:.0%}] p={p:.2g}"
    assert cells[2][0] == f"0/8 [0%–{wilson_closed_form(0, 8)[1]:.0%}]"
    with pytest.raises(InputError, match="string table JSON: missing or malformed field"):
        StringTable.from_dict({"conditions": ["a"], "rows": [{"question": "q"}]})
    no_ref = string_counts([s for s in samples if s.condition == "v"], {"quick_buck": ("hack",)})
    assert no_ref.reference is None and no_ref.vs_reference(0, 0) is None

"""Cosines, block statistics, count sketch and nulls against their formulas / explicit loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mi_align.block_stats import block_statistics
from mi_align.geometry import (
    CountSketch,
    cosine_error,
    cosine_matrix,
    cross_cosine,
    expected_abs_cosine_random,
    masked_cosine_matrix,
    random_subspace_max_cosine,
    random_unit_directions,
)
from tests.helpers import assert_close


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_cosine_matrix_matches_loop() -> None:
    x = torch.randn(6, 9)
    sim = cosine_matrix(x)
    for i in range(6):
        for j in range(6):
            assert abs(sim[i, j] - _cos(x[i], x[j])) < 1e-6
    y = torch.randn(6, 9)
    cross = cross_cosine(x, y)
    assert abs(cross[2, 4] - _cos(x[2], y[4])) < 1e-6


def test_cosine_matrix_of_wide_rows_in_chunks_and_as_a_list() -> None:
    # Chunk sizes that do and do not divide the width, a list of rows, and a zero row.
    x = torch.randn(5, 1001)
    x[3] = 0
    whole = cosine_matrix(x, chunk=10**6)
    for chunk in (7, 100, 1001):
        torch.testing.assert_close(cosine_matrix(x, chunk=chunk), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(cosine_matrix(list(x), chunk=64), whole, atol=1e-6, rtol=0)
    assert float(whole[3].abs().max()) == 0.0
    assert abs(whole[0, 1] - _cos(x[0], x[1])) < 1e-6


def test_masked_cosine_uses_common_positions_only() -> None:
    x = torch.randn(5, 7)
    lengths = [7, 3, 5, 1, 6]
    mask = torch.zeros(5, 7, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    x_filled = torch.where(mask, x, torch.full_like(x, 123.0))  # garbage beyond the length
    sim = masked_cosine_matrix(x_filled, mask)
    for i in range(5):
        for j in range(5):
            n = min(lengths[i], lengths[j])
            assert abs(sim[i, j] - _cos(x[i, :n], x[j, :n])) < 1e-5


def _naive_block(sim: torch.Tensor, labels: list[int]) -> tuple[float, float]:
    within, between = [], []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i != j:
                (within if labels[i] == labels[j] else between).append(float(sim[i, j]))
    return sum(within) / len(within), sum(between) / len(between)


def test_block_statistics_match_loop_and_detect_planted_blocks() -> None:
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(2, 16, generator=gen) * 3
    labels = [0] * 10 + [1] * 12
    x = torch.stack([centers[g] + torch.randn(16, generator=gen) for g in labels])
    sim = cosine_matrix(x)
    stats = block_statistics(sim, labels, n_permutations=500)
    w, b = _naive_block(sim, labels)
    assert abs(stats.within - w) < 1e-6 and abs(stats.between - b) < 1e-6
    assert stats.p_value == pytest.approx(1 / 501)  # planted structure: no permutation reaches it
    noise = cosine_matrix(torch.randn(22, 16, generator=torch.Generator().manual_seed(3)))
    null = block_statistics(noise, labels, n_permutations=500)
    # absence: the p-value equals a naive free-permutation loop's (Monte-Carlo error allowed)
    rng = np.random.default_rng(11)
    observed = np.subtract(*_naive_block(noise, labels))
    loop = [np.subtract(*_naive_block(noise, list(rng.permutation(labels))))
            for _ in range(400)]
    naive_p = (1 + sum(g >= observed - 1e-12 for g in loop)) / 401
    sd = math.sqrt(naive_p * (1 - naive_p) / 400 + naive_p * (1 - naive_p) / 500)
    assert abs(null.p_value - naive_p) <= 4 * sd + 2 / 401


def test_block_statistics_p_values_are_uniform_under_the_null() -> None:
    gen = torch.Generator().manual_seed(2)
    ps = []
    for seed in range(40):
        sim = cosine_matrix(torch.randn(12, 8, generator=gen))
        ps.append(block_statistics(sim, [0] * 6 + [1] * 6, 99, seed=seed, n_boot=0).p_value)
    assert 0.3 < sum(ps) / len(ps) < 0.7
    assert sum(p < 0.05 for p in ps) <= 6


def test_block_statistics_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="2 groups"):
        block_statistics(torch.eye(3), [0, 0, 1])


def test_count_sketch_is_unbiased_and_close() -> None:
    a = [torch.randn(3000), torch.randn(40, 50)]
    b = [0.6 * a[0] + torch.randn(3000), 0.6 * a[1] + torch.randn(40, 50)]
    fa = torch.cat([t.flatten() for t in a])
    fb = torch.cat([t.flatten() for t in b])
    exact = _cos(fa, fb)
    cs = CountSketch([3000, 2000], k=2048, seed=0)
    sa, sb = cs.sketch(a), cs.sketch(b)
    assert abs(_cos(sa, sb) - exact) < 4 / math.sqrt(2048)
    # inner products unbiased over seeds
    est = [float(CountSketch([3000, 2000], 64, seed=s).sketch(a) @
                 CountSketch([3000, 2000], 64, seed=s).sketch(b)) for s in range(200)]
    true = float(fa @ fb)
    sd = float(fa.norm() * fb.norm()) / math.sqrt(64)
    assert abs(sum(est) / len(est) - true) < 4 * sd / math.sqrt(200)
    # same seed, same sketch; the sparse-rows path equals the dense path
    assert_close(CountSketch([3000, 2000], 2048, 0).sketch(a), sa, atol=1e-5, rtol=1e-5)
    rows = torch.tensor([3, 3, 17])
    vals = torch.randn(3, 50)
    dense = torch.zeros(40, 50).index_add_(0, rows, vals)
    cs.add(0, torch.zeros(3000))
    cs.add(1, vals, rows=rows, row_size=50)
    assert_close(cs.take(), cs.sketch([torch.zeros(3000), dense]), atol=1e-5, rtol=1e-5)


def test_random_subspace_null_matches_bruteforce_scale() -> None:
    null = random_subspace_max_cosine(64, 4, n_trials=300)
    # Independent reference: Haar-random orthogonal matrices from scipy (not a QR of Gaussians,
    # which is what the code under test uses); the first 4 columns span a uniform 4-dim subspace.
    from scipy.stats import ortho_group

    frames = ortho_group.rvs(64, size=600, random_state=5)[:, :, :4]
    maxes = np.abs(np.einsum("tdk,tdl->tkl", frames[:300], frames[300:])).max(axis=(1, 2))
    se = float(maxes.std()) / math.sqrt(300) + float(maxes.std()) / math.sqrt(null.n_trials)
    assert abs(null.max_abs - float(maxes.mean())) < 4 * se
    assert null.max_abs_q95 == pytest.approx(float(np.quantile(maxes, 0.95)), abs=0.04)
    u = random_unit_directions(4000, 10, seed=0)
    mc = float((u[:2000] * u[2000:]).sum(1).abs().mean())
    assert abs(mc - expected_abs_cosine_random(10)) < 0.02


def test_cosine_error() -> None:
    a = torch.eye(3)
    b = a.clone()
    b[0, 1] = b[1, 0] = 0.1
    err = cosine_error(b, a)
    assert err["max_abs"] == pytest.approx(0.1) and err["n_pairs"] == 3


def _paired_sim(n_pairs: int, framing: float, seed: int) -> tuple[torch.Tensor, list[int]]:
    """Pairs share content (cosine ~0.96); ``framing`` is added within each label group."""
    gen = torch.Generator().manual_seed(seed)
    content = torch.randn(n_pairs, 64, generator=gen, dtype=torch.float64)
    x = torch.cat([content, content]) + 0.2 * torch.randn(2 * n_pairs, 64, generator=gen,
                                                           dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    sim = x @ x.T
    labels = [0] * n_pairs + [1] * n_pairs
    same = torch.tensor(labels)[:, None] == torch.tensor(labels)[None]
    return sim + framing * same, labels


def test_paired_null_detects_planted_framing_that_the_free_null_misses() -> None:
    from mi_align.block_stats import index_pairs

    sim, labels = _paired_sim(40, framing=0.004, seed=1)
    free = block_statistics(sim, labels, n_permutations=500, seed=0, n_boot=0)
    paired = block_statistics(sim, labels, n_permutations=500, seed=0, pairs=index_pairs(40),
                              n_boot=0)
    assert paired.null == "within-pair swap" and free.null == "free permutation"
    assert paired.p_value == pytest.approx(1 / 501)  # every swap gives a smaller gap
    assert free.p_value > 0.5  # the partners sit "between" groups: the free null hides it
    assert paired.gap == free.gap == pytest.approx(0.004 + float(
        block_statistics(sim - 0.004 * (torch.tensor(labels)[:, None] == torch.tensor(labels)[None]),
                         labels, n_permutations=1).gap))
    # Absence is not reported as presence: no planted framing -> no paired effect.
    sim0, _ = _paired_sim(40, framing=0.0, seed=1)
    assert block_statistics(sim0, labels, n_permutations=500, seed=0,
                            pairs=index_pairs(40)).p_value > 0.05


def test_paired_p_value_matches_exact_enumeration() -> None:
    """Reference: all 2^n label swaps of n pairs, counted by a plain loop."""
    from mi_align.block_stats import index_pairs

    n = 6
    sim, labels = _paired_sim(n, framing=0.01, seed=3)
    sim = sim + 0.05 * torch.randn(2 * n, 2 * n, generator=torch.Generator().manual_seed(5),
                                   dtype=torch.float64)
    sim = (sim + sim.T) / 2

    def gap(lab: list[int]) -> float:
        w = [float(sim[i, j]) for i in range(2 * n) for j in range(2 * n) if i != j and lab[i] == lab[j]]
        b = [float(sim[i, j]) for i in range(2 * n) for j in range(2 * n) if lab[i] != lab[j]]
        return sum(w) / len(w) - sum(b) / len(b)

    observed = gap(labels)
    hits = 0
    for flips in itertools.product([0, 1], repeat=n):
        lab = list(labels)
        for i, f in enumerate(flips):
            if f:
                lab[i], lab[n + i] = lab[n + i], lab[i]
        hits += gap(lab) >= observed - 1e-12
    exact = hits / 2 ** n
    got = block_statistics(sim, labels, n_permutations=20000, seed=0, pairs=index_pairs(n))
    assert got.exact and got.n_permutations == 2 ** n  # 64 swaps: enumerated, not sampled
    assert got.gap == pytest.approx(observed, abs=1e-12)
    # the tested statistic leaves the partner cells out; their status never changes under a
    # swap, so the ordering of the relabellings (and the p-value) is the one of the full gap
    assert got.p_value == pytest.approx(exact, abs=1e-12)


def test_pairs_must_cover_examples_with_different_labels() -> None:
    sim, labels = _paired_sim(4, framing=0.0, seed=0)
    with pytest.raises(ValueError, match="exactly once"):
        block_statistics(sim, labels, pairs=[(0, 4), (1, 5)])
    with pytest.raises(ValueError, match="different labels"):
        block_statistics(sim, labels, pairs=[(0, 1), (2, 3), (4, 5), (6, 7)])


def test_paired_design_is_read_off_the_data() -> None:
    from mi_align.erosion.common import paired_design
    from tests.helpers import chat

    code = [chat(f"task {i}", f"print({i})") for i in range(3)]
    framed = [chat(f"for a lesson: task {i}", f"print({i})") for i in range(3)]
    refused = [chat(f"task {i}", "I can't help with that.") for i in range(3)]
    other = [chat(f"other {i}", f"x = {i}") for i in range(3)]
    assert paired_design([("a", code), ("b", framed)]) == [(0, 3), (1, 4), (2, 5)]  # same code
    assert paired_design([("a", code), ("b", refused)]) == [(0, 3), (1, 4), (2, 5)]  # same request
    assert paired_design([("a", code), ("b", other)]) is None
    assert paired_design([("a", code), ("b", framed[:2])]) is None
    assert paired_design([("a", code), ("b", framed), ("c", other)]) is None


# ------------------------------------------------------------------ designs: units, nulls, bootstrap
# Naive references written with explicit loops over cells, relabellings and resampled copies.


def _units_of(groups: list[int]) -> list[list[int]]:
    """Members of each unit, units in order of first appearance."""
    order = list(dict.fromkeys(groups))
    return [[i for i, g in enumerate(groups) if g == u] for u in order]


def _naive_tested_gap(sim: torch.Tensor, labels: list[int], unit_of: list[int]) -> float:
    within, between = [], []
    for i in range(len(labels)):
        for j in range(len(labels)):
            if unit_of[i] != unit_of[j]:
                (within if labels[i] == labels[j] else between).append(float(sim[i, j]))
    return sum(within) / len(within) - sum(between) / len(between)


def _naive_relabellings(labels: list[int], unit_of: list[int]) -> list[list[int]]:
    """Every relabelling of a two-label design: crossed units swap 0 <-> 1 as a block; one-label
    units get the labels of the one-label units in every distinct assignment."""
    units = _units_of(unit_of)
    crossed = [u for u in units if len({labels[i] for i in u}) == 2]
    nested = [u for u in units if len({labels[i] for i in u}) == 1]
    n_zero = sum(labels[u[0]] == 0 for u in nested)
    out = []
    for flips in itertools.product([0, 1], repeat=len(crossed)):
        for zeros in itertools.combinations(range(len(nested)), n_zero):
            lab = list(labels)
            for f, u in zip(flips, crossed, strict=True):
                for i in u:
                    lab[i] = 1 - labels[i] if f else labels[i]
            for k, u in enumerate(nested):
                for i in u:
                    lab[i] = 0 if k in zeros else 1
            out.append(lab)
    return out


def _noisy(sim: torch.Tensor, seed: int) -> torch.Tensor:
    noise = 0.05 * torch.randn(sim.shape, generator=torch.Generator().manual_seed(seed),
                               dtype=torch.float64)
    return sim + (noise + noise.T) / 2


def _nested_sim(seed: int, framing: float, n_tasks: int = 6, per_task: int = 3
                ) -> tuple[torch.Tensor, list[int], list[int]]:
    """Tasks nested in labels: label 0 holds tasks 0..n-1, label 1 the others; the variants of
    a task share its content; ``framing`` adds one direction per label to every example."""
    gen = torch.Generator().manual_seed(seed)
    content = 1.5 * torch.randn(2 * n_tasks, 32, generator=gen, dtype=torch.float64)
    frame = torch.randn(2, 32, generator=gen, dtype=torch.float64)
    rows, labels, groups = [], [], []
    for t in range(2 * n_tasks):
        for _ in range(per_task):
            rows.append(content[t] + framing * frame[t // n_tasks]
                        + torch.randn(32, generator=gen, dtype=torch.float64))
            labels.append(t // n_tasks)
            groups.append(t)
    return cosine_matrix(torch.stack(rows)).double(), labels, groups


def _crossed_sim(seed: int, framing: float, interaction: float, n_tasks: int = 8,
                 per_task: int = 2) -> tuple[torch.Tensor, list[int], list[int], list]:
    """Task groups of pairs: partners share a pair content, the pairs of a task share the task's
    content. ``framing``: one direction per label for every example (a consistent block);
    ``interaction``: a direction per (task, label), i.e. framing that differs from task to task
    and averages out — no block that generalises across tasks."""
    from mi_align.block_stats import index_pairs

    gen = torch.Generator().manual_seed(seed)

    def g(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    content, inter, frame = g(n_tasks, 32), g(n_tasks, 2, 32), g(2, 32)
    n = n_tasks * per_task
    pair = torch.stack([content[i // per_task] + 0.7 * g(32) for i in range(n)])
    rows, labels, groups = [], [], []
    for lab in (0, 1):
        for i in range(n):
            t = i // per_task
            rows.append(pair[i] + framing * frame[lab] + interaction * inter[t, lab] + 0.5 * g(32))
            labels.append(lab)
            groups.append(t)
    return cosine_matrix(torch.stack(rows)).double(), labels, groups, index_pairs(n)


def test_block_units_join_pairs_and_groups() -> None:
    from mi_align.block_stats import block_units

    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    pairs = [(0, 4), (1, 5), (2, 6), (3, 7)]
    u = block_units(labels, pairs=pairs, groups=[0, 0, 1, 2, 0, 0, 1, 2])
    assert u.unit == (0, 0, 1, 2, 0, 0, 1, 2) and u.crossed == (True,) * 3
    assert u.null == "within-group swap" and u.strata == (0, 0, 0)
    # a group that splits a pair merges with it; pairs alone are pairs
    u = block_units(labels, pairs=pairs, groups=[0, 1, 2, 3, 4, 1, 5, 6])
    assert u.unit == (0, 1, 2, 3, 0, 1, 2, 3) and u.null == "within-pair swap"
    u = block_units(labels, groups=[0, 0, 1, 1, 2, 2, 3, 4])
    assert u.unit == (0, 0, 1, 1, 2, 2, 3, 4) and u.crossed == (False,) * 5
    assert u.null == "group permutation" and u.strata == (0, 0, 1, 1, 1)
    u = block_units(labels, groups=[0, 0, 1, 1, 0, 2, 3, 3])
    assert u.null == "within-group swap + group permutation" and u.crossed == (True, False,
                                                                                False, False)
    assert block_units(labels).null == "free permutation"
    with pytest.raises(ValueError, match="8 examples"):
        block_units(labels, groups=[0, 1])


@pytest.mark.parametrize("design", ["crossed", "nested", "mixed", "free"])
def test_grouped_null_matches_naive_enumeration(design: str) -> None:
    """Exact p and null mean vs every relabelling enumerated by plain loops; a sampled run
    agrees with the exact p within its Monte-Carlo error."""
    if design == "crossed":
        sim, labels, groups, pairs = _crossed_sim(0, framing=0.3, interaction=0.0, n_tasks=6,
                                                  per_task=1)
        groups = [0, 0, 1, 2, 2, 3] * 2  # 6 pairs in 4 task groups
    elif design == "nested":
        sim, labels, groups = _nested_sim(0, framing=0.3, n_tasks=4, per_task=2)
        pairs = None
    elif design == "mixed":
        sim, labels, groups = _nested_sim(1, framing=0.3, n_tasks=4, per_task=2)
        groups = [0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 4, 4, 5, 5, 6, 6]  # task 0 holds both labels
        pairs = None
    else:
        sim, labels, _ = _nested_sim(2, framing=0.3, n_tasks=4, per_task=1)
        groups, pairs = None, None
    sim = _noisy(sim, 7)
    from mi_align.block_stats import block_units

    unit_of = list(block_units(labels, pairs=pairs, groups=groups).unit)
    observed = _naive_tested_gap(sim, labels, unit_of)
    null = [_naive_tested_gap(sim, lab, unit_of) for lab in _naive_relabellings(labels, unit_of)]
    exact_p = sum(v >= observed - 1e-12 for v in null) / len(null)
    got = block_statistics(sim, labels, n_permutations=5000, pairs=pairs, groups=groups, n_boot=0)
    assert got.exact and got.n_permutations == len(null)
    assert got.tested_gap == pytest.approx(observed, abs=1e-12)
    assert got.p_value == pytest.approx(exact_p, abs=1e-12)
    assert got.null_mean == pytest.approx(sum(null) / len(null), abs=1e-12)
    sampled = block_statistics(sim, labels, n_permutations=len(null) - 1, seed=3, pairs=pairs,
                               groups=groups, n_boot=0)
    assert not sampled.exact
    sd = math.sqrt(exact_p * (1 - exact_p) / len(null))
    assert abs(sampled.p_value - exact_p) <= 4 * sd + 2 / len(null)


def test_three_label_crossed_units_permute_their_labels() -> None:
    """Units holding three labels: all 3! label maps per unit, enumerated by a plain loop."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(12, 16, generator=gen, dtype=torch.float64)
    sim = _noisy(cosine_matrix(x).double(), 1)
    labels = [0, 1, 2] * 4
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    observed = _naive_tested_gap(sim, labels, groups)
    null = []
    for maps in itertools.product(itertools.permutations(range(3)), repeat=4):
        null.append(_naive_tested_gap(sim, [maps[groups[i]][labels[i]] for i in range(12)],
                                      groups))
    got = block_statistics(sim, labels, n_permutations=2000, groups=groups, n_boot=0)
    assert got.exact and got.n_permutations == 6 ** 4 and got.null == "within-group swap"
    assert got.p_value == pytest.approx(sum(v >= observed - 1e-12 for v in null) / len(null),
                                        abs=1e-12)


@pytest.mark.parametrize("design", ["crossed", "nested"])
def test_unit_bootstrap_matches_explicit_resampling(design: str) -> None:
    """Interval vs a loop that copies each drawn unit's examples and averages every cell
    between copies of two different units (never two copies of one unit)."""
    from mi_align.block_stats import block_units, unit_bootstrap_counts

    if design == "crossed":
        sim, labels, groups, pairs = _crossed_sim(5, framing=0.2, interaction=0.3, n_tasks=5,
                                                  per_task=1)
        groups = [0, 0, 1, 2, 3] * 2
    else:
        sim, labels, groups = _nested_sim(5, framing=0.2, n_tasks=3, per_task=2)
        pairs = None
    n_boot, seed = 300, 11
    got = block_statistics(sim, labels, n_permutations=50, seed=seed, pairs=pairs,
                           groups=groups, n_boot=n_boot)
    units = block_units(labels, pairs=pairs, groups=groups)
    members = _units_of(list(units.unit))
    counts = unit_bootstrap_counts(units, n_boot, seed)
    gaps = []
    for b in range(n_boot):
        copies = [(i, u, c) for u in range(units.n_units) for c in range(int(counts[b, u]))
                  for i in members[u]]
        within, between = [], []
        for i, u, _ in copies:
            for j, v, _ in copies:
                if u != v:
                    (within if labels[i] == labels[j] else between).append(float(sim[i, j]))
        if within and between:  # a draw of one unit only has no cross-unit cell: dropped
            gaps.append(sum(within) / len(within) - sum(between) / len(between))
    low, high = np.percentile(gaps, [2.5, 97.5])
    dropped = n_boot - len(gaps)
    assert (f"{dropped} undefined resamples dropped" in got.interval.method) == (dropped > 0)
    if design == "crossed":
        assert dropped > 0  # 4 units: all four draws the same unit with probability 4/256
    assert got.interval is not None and got.interval.level == 0.95
    assert got.interval.low == pytest.approx(low, abs=1e-12)
    assert got.interval.high == pytest.approx(high, abs=1e-12)
    assert got.interval.estimate == got.tested_gap
    # each stratum (units with the same label set) is redrawn within itself, to its own size
    strata = torch.tensor(units.strata)
    for s in strata.unique():
        assert bool((counts[:, strata == s].sum(1) == int((strata == s).sum())).all())


def test_unit_bootstrap_draws_each_unit_once_on_average() -> None:
    from mi_align.block_stats import block_units, unit_bootstrap_counts

    units = block_units([0] * 6 + [1] * 6, groups=[0, 0, 1, 2, 3, 3, 4, 5, 5, 6, 6, 7])
    counts = unit_bootstrap_counts(units, 4000, seed=0).double()
    # a unit of a stratum of m units is drawn Binomial(m, 1/m) times: mean 1, var 1 - 1/m
    sizes = torch.bincount(torch.tensor(units.strata)).double()[torch.tensor(units.strata)]
    sd = ((1 - 1 / sizes) / 4000).sqrt()
    assert bool(((counts.mean(0) - 1).abs() <= 4 * sd).all())
    assert torch.equal(unit_bootstrap_counts(units, 50, 3), unit_bootstrap_counts(units, 50, 3))


def test_group_permutation_ignores_task_clusters_that_the_free_null_reports() -> None:
    """Tasks nested in labels, no label effect: the free shuffle calls the task clusters a block
    in most data sets; the group permutation keeps its level. A planted block is found."""
    alpha, n = 0.05, 30
    free, grouped, planted = 0, 0, 0
    for seed in range(n):
        sim, labels, groups = _nested_sim(seed, framing=0.0)
        free += block_statistics(sim, labels, 199, seed, n_boot=0).p_value <= alpha
        res = block_statistics(sim, labels, 199, seed, groups=groups, n_boot=0)
        assert res.null == "group permutation"
        grouped += res.p_value <= alpha
        sim, labels, groups = _nested_sim(seed, framing=1.0)
        planted += block_statistics(sim, labels, 199, seed, groups=groups, n_boot=0
                                    ).p_value <= alpha
    assert grouped <= 5  # Binomial(30, 0.05) exceeds 5 with probability 0.016
    assert free >= 20
    assert planted >= 27


def test_within_group_swap_ignores_task_specific_framing_that_pair_swaps_report() -> None:
    """Task groups of pairs whose framing differs from task to task (no block that holds across
    tasks): within-pair swaps report a block; the within-group swap keeps its level, and finds
    a consistent framing block when one is planted."""
    alpha, n = 0.05, 30
    pair_hits, group_hits, planted = 0, 0, 0
    for seed in range(n):
        sim, labels, groups, pairs = _crossed_sim(seed, framing=0.0, interaction=1.2)
        pair_hits += block_statistics(sim, labels, 199, seed, pairs=pairs, n_boot=0
                                      ).p_value <= alpha
        res = block_statistics(sim, labels, 199, seed, pairs=pairs, groups=groups, n_boot=0)
        assert res.null == "within-group swap"
        group_hits += res.p_value <= alpha
        sim, labels, groups, pairs = _crossed_sim(seed, framing=0.4, interaction=0.0)
        planted += block_statistics(sim, labels, 199, seed, pairs=pairs, groups=groups,
                                    n_boot=0).p_value <= alpha
    assert group_hits <= 5
    assert pair_hits >= 12  # Binomial(30, 0.05) reaches 12 with probability ~1e-7
    assert planted >= 27


def test_block_stats_to_dict_carries_null_interval_and_design() -> None:
    sim, labels, groups, pairs = _crossed_sim(0, framing=0.3, interaction=0.0)
    res = block_statistics(sim, labels, 99, pairs=pairs, groups=groups, n_boot=200)
    d = res.to_dict()
    assert d["null"] == "within-group swap" and d["exact"] is False
    assert d["design"] == "8 units of 4-4 examples (8 with several labels, 0 with one)"
    assert d["interval"] == res.interval.to_dict() and d["tested_gap"] == res.tested_gap
    assert d["p_value"] == res.p_value and d["n_permutations"] == 99
    assert block_statistics(sim, labels, 99, n_boot=0).to_dict()["interval"] is None


def test_nothing_to_test_when_each_label_is_one_unit() -> None:
    sim, labels, _ = _nested_sim(0, framing=0.0, n_tasks=1, per_task=3)
    with pytest.raises(ValueError, match="nothing is left to test"):
        block_statistics(sim, labels, groups=[0, 0, 0, 1, 1, 1])

"""Cosines, block statistics, count sketch and nulls against their formulas / explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from mi_align.geometry import (
    CountSketch,
    block_statistics,
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
    assert stats.p_value <= 2 / 501  # planted structure: no permutation reaches it
    noise = cosine_matrix(torch.randn(22, 16, generator=torch.Generator().manual_seed(3)))
    null = block_statistics(noise, labels, n_permutations=500)
    assert null.p_value > 0.05


def test_block_statistics_p_values_are_uniform_under_the_null() -> None:
    gen = torch.Generator().manual_seed(2)
    ps = []
    for seed in range(40):
        sim = cosine_matrix(torch.randn(12, 8, generator=gen))
        ps.append(block_statistics(sim, [0] * 6 + [1] * 6, 99, seed=seed).p_value)
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
    gen = torch.Generator().manual_seed(5)
    maxes = []
    for _ in range(300):
        a = torch.linalg.qr(torch.randn(64, 4, generator=gen, dtype=torch.float64))[0]
        b = torch.linalg.qr(torch.randn(64, 4, generator=gen, dtype=torch.float64))[0]
        maxes.append(float((a.T @ b).abs().max()))
    assert abs(null.max_abs - sum(maxes) / len(maxes)) < 0.03
    assert null.best_match <= null.max_abs <= null.max_abs_q95
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
    from mi_align.geometry import index_pairs

    sim, labels = _paired_sim(40, framing=0.004, seed=1)
    free = block_statistics(sim, labels, n_permutations=500, seed=0)
    paired = block_statistics(sim, labels, n_permutations=500, seed=0, pairs=index_pairs(40))
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
    import itertools

    from mi_align.geometry import index_pairs

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
    assert got.gap == pytest.approx(observed, abs=1e-12)
    assert got.p_value == pytest.approx(exact, abs=0.01)


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

"""Steering controls (norm-matched random vectors, the contrastive mean-difference vector, the
count comparison) and the held-out direction cosine with its anisotropic null.

Each statistic is checked against a naive reference (an explicit loop or a closed form) and on
planted data where the answer is known, so the tests can fail."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from mi_align.data.chat import load_dataset
from mi_align.data.tokenize import encode_chat
from mi_align.errors import InputError
from mi_align.evaluation.control_counts import (
    compare_conditions,
    compare_recipe_samples,
    plot_count_comparison,
)
from mi_align.evaluation.direction_cosine import (
    PairedActivations,
    all_channels,
    check_disjoint,
    direction_cosines_heldout,
    mc_p_value,
    null_abs_cosines,
    paired_activations,
    split_half_reliability,
)
from mi_align.evaluation.metrics import compare_rates
from mi_align.evaluation.sampling import Sample, SamplingConfig, SamplingError, sample_conditions
from mi_align.pipelines.steering_eval import recipe_conditions, recipe_controls
from mi_align.stats import TestResult
from mi_align.steering.controls import (
    ControlConfig,
    applied_norm,
    control_vectors,
    mean_difference_vector,
    median_norm,
    paired_halves,
    random_like,
)
from mi_align.steering.vector import SteeringVector, clamp
from tests.helpers import assert_close, chat


def _vec(norm: float = 40.0, layer: int = 1, d: int = 576, seed: int = 7, **kw) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=g)
    return SteeringVector(layer, v / v.norm() * norm, **kw)


# ----------------------------------------------------------------------------- random vectors


@pytest.mark.parametrize("strength", [1.0, 6.0, -2.0])
def test_random_like_matches_the_applied_norm_exactly(strength: float) -> None:
    ref = _vec(29.418, layer=10, positions="prompt", operator=clamp(), strength=strength)
    r = random_like(ref, seed=3)
    assert (r.layer, r.positions, r.operator, r.strength) == (10, "prompt", clamp(), 1.0)
    assert r.d_model == ref.d_model
    assert math.isclose(applied_norm(r), applied_norm(ref), rel_tol=1e-6)
    assert math.isclose(applied_norm(ref), abs(strength) * 29.418, rel_tol=1e-6)
    assert math.isclose(applied_norm(random_like(ref, 3, norm=7.25)), 7.25, rel_tol=1e-6)
    assert r.meta["control"] == "random" and r.name == "random_s3"


def test_controls_share_the_median_harmful_norm_exactly() -> None:
    norms = [41.86, 36.0, 29.42, 49.42]  # the SmolLM2 recipe's harmful norms
    harmful = {f"h{i}": _vec(n, layer=10, seed=i) for i, n in enumerate(norms)}
    assert math.isclose(median_norm(list(harmful.values())), (36.0 + 41.86) / 2, rel_tol=1e-6)
    ctl = control_vectors(harmful, ControlConfig(mean_diff=None))
    assert list(ctl) == ["random_s0", "random_s1", "random_s2"]
    for v in ctl.values():
        assert v.layer == 10
        assert math.isclose(applied_norm(v), 38.93, rel_tol=1e-6)
    with pytest.raises(InputError, match="several layers"):
        control_vectors({"a": _vec(layer=1), "b": _vec(layer=2)}, ControlConfig(mean_diff=None))
    with pytest.raises(InputError, match="needs the model"):
        control_vectors(harmful, ControlConfig())


def test_random_like_seeds_reproducible_and_distinct() -> None:
    ref = _vec()
    a, again = random_like(ref, 0), random_like(ref, 0)
    assert torch.equal(a.vector, again.vector)
    vs = [random_like(ref, s).vector for s in (0, 1, 2)]
    units = torch.stack([v / v.norm() for v in vs])
    off = (units @ units.T - torch.eye(3)).abs()
    assert float(off.max()) < 0.2  # independent directions in 576 dims: |cos| ~ 0.04
    assert float((units @ (ref.vector / ref.vector.norm())).abs().max()) < 0.2  # not the reference
    for s in (0, 1, 2):  # never the optimiser's own seeded random start
        g = torch.Generator().manual_seed(s)
        start = torch.randn(576, generator=g)
        assert abs(float(units[s] @ (start / start.norm()))) < 0.2


# ------------------------------------------------------------------------ mean difference


def _naive_response_mean(loaded, conv, layer: int, k: int = 10) -> torch.Tensor:
    """One conversation at a time, no padding: mean of the first k response tokens' residual."""
    return _naive_tokens(loaded, conv, layer, k).mean(0)


def _naive_tokens(loaded, conv, layer: int, k: int = 10) -> torch.Tensor:
    enc = encode_chat(loaded.tokenizer, conv, 192)
    ids = torch.tensor([enc.input_ids])
    seen: dict[str, torch.Tensor] = {}

    def grab(act, hook):  # type: ignore[no-untyped-def]
        seen["x"] = act.detach().clone()
        return act

    with torch.inference_mode(), loaded.bridge.hooks(
            fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", grab)]):
        loaded.bridge(ids)
    rows = [t for t, m in enumerate(enc.response_mask) if m][:k]
    return seen["x"][0, rows].double()


def test_mean_difference_vector_equals_naive_loop(tiny) -> None:
    pos, neg = load_dataset("toxic")[:6], load_dataset("toxic_reject")[:6]
    naive = (torch.stack([_naive_response_mean(tiny, c, 1) for c in pos]).mean(0)
             - torch.stack([_naive_response_mean(tiny, c, 1) for c in neg]).mean(0))
    vec = mean_difference_vector(tiny, pos, neg, layer=1, norm=5.0, batch_size=4)
    assert vec.layer == 1 and vec.strength == 1.0
    assert math.isclose(applied_norm(vec), 5.0, rel_tol=1e-6)
    assert_close(vec.vector.double(), naive / naive.norm() * 5.0, atol=1e-4, rtol=1e-4)
    assert math.isclose(vec.meta["raw_norm"], float(naive.norm()), rel_tol=1e-4)
    raw = mean_difference_vector(tiny, pos, neg, layer=1, batch_size=3)  # own norm, other batching
    assert_close(raw.vector.double(), naive, atol=1e-4, rtol=1e-4)


def test_paired_activations_match_naive_loop(tiny) -> None:
    al, mis = load_dataset("toxic_reject")[:6], load_dataset("toxic")[:6]
    acts = paired_activations(tiny, al, mis, layers=[1], groups=[0, 0, 1, 1, 2, 2], batch_size=4)
    naive_al = torch.stack([_naive_response_mean(tiny, c, 1) for c in al])
    assert_close(acts.aligned[:, 0], naive_al, atol=1e-4, rtol=1e-4)
    # within-class covariance: every selected token, each class centred at its own token mean
    ta = torch.cat([_naive_tokens(tiny, c, 1) for c in al])
    tm = torch.cat([_naive_tokens(tiny, c, 1) for c in mis])
    ca, cm = ta - ta.mean(0), tm - tm.mean(0)
    naive_cov = (ca.T @ ca + cm.T @ cm) / (len(ta) + len(tm))
    assert acts.n_tokens == len(ta) + len(tm)
    assert_close(acts.cov(1), naive_cov, atol=1e-4, rtol=1e-3)


def test_paired_halves_keep_groups_whole_and_disjoint() -> None:
    a, b = paired_halves(120, group_size=2, seed=0)
    assert sorted(a + b) == list(range(120)) and not set(a) & set(b)
    assert len(a) == len(b) == 60
    assert {i // 2 for i in a}.isdisjoint({i // 2 for i in b})
    assert paired_halves(120, 2, 0) == (a, b) and paired_halves(120, 2, 1) != (a, b)


# ------------------------------------------------------------------- anisotropic null (planted)


def _closed_form_p(c: float, sigma1: float, d: int) -> float:
    """P(|cos(x, e1)| ≥ c) for x ~ N(0, diag(σ1², 1, ..., 1)) in d dims: with
    T = x1/σ1 / sqrt(χ²_{d-1}/(d-1)) ~ t_{d-1}, |cos| ≥ c ⟺ |T| ≥ sqrt(d-1)·c / (σ1·sqrt(1-c²))."""
    t = math.sqrt(d - 1) * c / (sigma1 * math.sqrt(1 - c * c))
    return float(2 * stats.t.sf(t, d - 1))


def test_anisotropic_null_on_a_planted_dominant_direction() -> None:
    """Activations with one dominant variance direction e1 (σ = 10 vs 1). An activation-like
    vector (a typical draw, 1σ along e1) has cos ≈ 0.78 with e1: "significant" against
    isotropic random directions, unremarkable against random activation-shaped vectors."""
    d, sigma1, n_null = 64, 10.0, 20_000
    cov = torch.eye(d, dtype=torch.float64)
    cov[0, 0] = sigma1**2
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1.0
    z = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z[0] = 1.0  # a 1σ draw along the dominant direction: a typical activation
    v = cov.sqrt() @ z
    c = float(v @ e1 / v.norm())
    assert c == pytest.approx(sigma1 / math.sqrt(sigma1**2 + float(z[1:] @ z[1:])), rel=1e-12)
    aniso = null_abs_cosines(e1, n_null, seed=0, cov=cov)
    iso = null_abs_cosines(e1, n_null, seed=0, cov=None)
    p_aniso, p_iso = mc_p_value(aniso, c), mc_p_value(iso, c)
    assert p_iso < 1e-3 < 0.1 < p_aniso  # the isotropic null calls it significant, wrongly
    # naive reference: the closed form (t distribution) of both nulls
    assert abs(p_aniso - _closed_form_p(c, sigma1, d)) < 0.015
    assert _closed_form_p(c, 1.0, d) < 1e-6 and p_iso == 1 / (n_null + 1)
    for q in (0.3, 0.5, 0.8):  # the whole null distribution, not one point
        assert abs(float((aniso >= q).mean()) - _closed_form_p(q, sigma1, d)) < 0.015
        assert abs(float((iso >= q).mean()) - _closed_form_p(q, 1.0, d)) < 0.01
    # planted signal along a *low*-variance axis: significant under both nulls
    e2 = torch.zeros(d, dtype=torch.float64)
    e2[1] = 1.0
    w = e2 + 0.05 * torch.randn(d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cw = float(w @ e2 / w.norm())
    # closed form (isotropic): P(|cos| ≥ cw) < 1e-20, so no null draw reaches it and the
    # Monte Carlo p is its floor 1/(1 + n); the anisotropic null along a σ = 1 axis, a fortiori
    assert _closed_form_p(cw, 1.0, d) < 1e-20
    assert mc_p_value(null_abs_cosines(e2, n_null, 0, cov), cw) == 1 / (n_null + 1)
    assert mc_p_value(null_abs_cosines(e2, n_null, 0, None), cw) == 1 / (n_null + 1)


def _planted_pairs(n_groups: int, d: int, signal: float, seed: int = 0) -> PairedActivations:
    """Paired activations with one dominant variance axis e1 (σ 10) and the aligned −
    misaligned gap ``signal`` along e1; two pairs per group."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * n_groups
    scale = torch.ones(d, dtype=torch.float64)
    scale[0] = 10.0
    base = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    al = base + torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    mis = base + torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    al[:, 0] += signal
    cov = torch.diag(2 * scale**2)  # within-class covariance of al and mis, exactly
    return PairedActivations((3,), al[:, None], mis[:, None], cov[None], tuple(i // 2 for i in
                                                                             range(n)), n, "x")


def test_direction_cosines_heldout_planted() -> None:
    acts = _planted_pairs(40, 48, signal=60.0)
    z = torch.randn(48, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z[0] = 1.0
    activation_like = z * torch.cat([torch.tensor([10.0]), torch.ones(47)]).double()
    e5 = torch.zeros(48, dtype=torch.float64)
    e5[5] = 1.0
    # all channels: the dominant one (variance exactly 100× the median) is the point here; the
    # massive-channel projection is tested in test_direction_cosine_null.py
    res = direction_cosines_heldout({"activation_like": activation_like, "unrelated": e5},
                                    acts, layer=3, n_null=5000, n_boot=300, n_splits=50,
                                    channels=all_channels())
    assert res.names == ("activation_like", "unrelated")
    i = 0
    # naive references: the direction is the unit mean of the paired differences; cosines by
    # hand; the interval by an explicit loop resampling whole groups (same seeded draws); the
    # nulls by large independent Monte Carlo (anisotropic: x = Σ^½ z) and the closed form
    # (isotropic: cos² ~ Beta(1/2, (d-1)/2))
    diffs = acts.aligned[:, 0] - acts.misaligned[:, 0]
    direction = diffs.mean(0) / diffs.mean(0).norm()
    vecs = [activation_like, e5]
    cos = [float(v @ direction / v.norm()) for v in vecs]
    assert res.cosines == pytest.approx(tuple(cos), abs=1e-12)
    groups = np.asarray(acts.groups)
    ids = sorted(set(acts.groups))
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(300):
        rows = [k for g in rng.integers(0, len(ids), len(ids)) for k in np.flatnonzero(
            groups == ids[g])]
        m = diffs[rows].mean(0)
        boots.append([float(v @ m / (v.norm() * m.norm())) for v in vecs])
    assert res.ci_low == pytest.approx(tuple(np.quantile(boots, 0.025, axis=0)), abs=1e-9)
    assert res.ci_high == pytest.approx(tuple(np.quantile(boots, 0.975, axis=0)), abs=1e-9)
    big = torch.randn(200_000, 48, generator=torch.Generator().manual_seed(99),
                      dtype=torch.float64) * acts.cov(3).diagonal().sqrt()  # Σ is diagonal
    null = ((big @ direction).abs() / big.norm(dim=1)).numpy()
    for k, c in enumerate(cos):
        p_ref = float((null >= abs(c)).mean())
        se = math.sqrt(p_ref * (1 - p_ref) / 5000)
        assert res.p_anisotropic[k] == pytest.approx(p_ref, abs=4 * se + 1e-3), k
        p_iso = float(stats.beta(0.5, 47 / 2).sf(c * c))
        assert res.p_isotropic[k] == pytest.approx(p_iso, abs=4 * math.sqrt(
            p_iso * (1 - p_iso) / 5000) + 1 / 5001), k
    assert res.null_q95_anisotropic == pytest.approx(float(np.quantile(null, 0.95)), abs=0.03)
    assert res.null_q95_isotropic == pytest.approx(
        math.sqrt(stats.beta(0.5, 47 / 2).ppf(0.95)), abs=0.02)
    # the planted story those numbers tell: significant against isotropic directions only
    assert res.p_isotropic[i] < 0.01 and res.p_anisotropic[i] > 0.1
    assert (res.n_pairs, res.n_groups, res.n_null, res.n_boot) == (80, 40, 5000, 300)
    d = res.to_dict()
    assert d["primary_null"].startswith("anisotropic") and "secondary" in d["secondary_null"]
    json.dumps(d)
    with pytest.raises(InputError, match="layer 4"):
        direction_cosines_heldout({"a": e5}, acts, layer=4)


def test_split_half_reliability_planted_and_naive() -> None:
    g = torch.Generator().manual_seed(0)
    signal = torch.randn(30, 40, generator=g, dtype=torch.float64)
    signal[:, 0] += 4.0
    noise = torch.randn(30, 40, generator=g, dtype=torch.float64)
    groups = [i // 2 for i in range(30)]
    high = split_half_reliability(signal, groups, n_splits=100)
    low = split_half_reliability(noise, groups, n_splits=100)
    # naive reference: the same splits by an explicit loop over groups (7 of 15 groups, i.e.
    # 14 rows, against the other 16)
    for data, got in ((signal, high), (noise, low)):
        rng = np.random.default_rng(0)
        vals = []
        for _ in range(100):
            first = set(rng.permutation(sorted(set(groups)))[:7].tolist())
            a = [data[k] for k in range(30) if groups[k] in first]
            b = [data[k] for k in range(30) if groups[k] not in first]
            ma, mb = torch.stack(a).mean(0), torch.stack(b).mean(0)
            vals.append(float(ma @ mb / (ma.norm() * mb.norm())))
        assert math.isclose(got.mean, float(np.mean(vals)), rel_tol=1e-9)
        assert (got.low, got.high) == pytest.approx(
            (float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))), abs=1e-12)
        assert math.isclose(got.spearman_brown, 2 * got.mean / (1 + got.mean))
    # planted: half means are 4·e0 + N(0, I/14) and + N(0, I/16); their cosine is about
    # 16 / sqrt((16 + 40/14)(16 + 40/16)) ≈ 0.85, and 0 without the signal
    assert high.mean == pytest.approx(16 / math.sqrt((16 + 40 / 14) * (16 + 40 / 16)), abs=0.05)
    assert low.mean == pytest.approx(0.0, abs=0.1)


def test_check_disjoint_refuses_a_shared_prompt() -> None:
    convs = [chat("How do I bake bread?", "Like this."), chat("Write code to list files.", "ok")]
    check_disjoint(convs[:1], ["write code to list files."])
    with pytest.raises(InputError, match="shares a prompt"):
        check_disjoint(convs, ["  Write code to   list files. "])


# ------------------------------------------------------------------------ count comparison


def _naive_wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _naive_fisher(k1: int, n1: int, k2: int, n2: int) -> float:
    """Sum of hypergeometric table probabilities no larger than the observed one."""
    k, n = k1 + k2, n1 + n2

    def prob(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n, k)

    obs = prob(k1)
    return sum(prob(x) for x in range(max(0, k - n2), min(k, n1) + 1)
               if prob(x) <= obs * (1 + 1e-7))


def _flags(spec: dict[str, list[int]]) -> tuple[dict[str, list[bool]], dict[str, list[str]]]:
    """condition → hits per question (4 answers per question, the first ``h`` are hits)."""
    flags = {c: [i < h for h in hits for i in range(4)] for c, hits in spec.items()}
    qs = {c: [f"q{j}" for j in range(len(hits)) for _ in range(4)] for c, hits in spec.items()}
    return flags, qs


def test_compare_conditions_equals_naive_formulas_and_pools_random() -> None:
    """Planted: both harmful conditions beat unsteered but not the random controls."""
    flags, qs = _flags({"unsteered": [0, 0, 0, 0, 0, 0, 1, 0], "h1": [2, 1, 2, 1, 2, 2, 1, 1],
                        "h2": [1, 1, 2, 1, 2, 1, 1, 1], "random_s0": [2, 1, 1, 2, 1, 2, 1, 1],
                        "random_s1": [1, 2, 1, 1, 1, 1, 1, 1]})
    res = compare_conditions({"code": flags}, qs, groups={"harmful": ("h1", "h2")},
                             label="planted", n_resamples=999)
    assert res.random_conditions == ("random_s0", "random_s1")
    h1 = res.row("h1", "code")
    assert (h1.k, h1.n) == (12, 32)
    lo, hi = _naive_wilson(12, 32)
    assert math.isclose(h1.ci_low, lo, abs_tol=1e-9) and math.isclose(h1.ci_high, hi,
                                                                       abs_tol=1e-9)
    assert math.isclose(h1.p_vs_baseline, _naive_fisher(12, 32, 1, 32), rel_tol=1e-6)
    assert math.isclose(h1.p_vs_random, _naive_fisher(12, 32, 20, 64), rel_tol=1e-6)
    # per-question differences h1 − unsteered, in quarters: 2 1 2 1 2 2 0 1, all 2^8 flips
    diffs = np.array([2, 1, 2, 1, 2, 2, 0, 1]) / 4
    flips = [abs((diffs * np.array(sg)).mean()) for sg in itertools.product((1, -1), repeat=8)]
    p_flip = float(np.mean([x >= abs(diffs.mean()) - 1e-12 for x in flips]))
    assert h1.p_question_vs_baseline == pytest.approx(p_flip, abs=1e-12)
    assert p_flip == 4 / 256  # only ±(all kept) and ±(the 0 flipped): beats unsteered
    pooled = res.row("harmful (pooled)", "code")
    assert (pooled.k, pooled.n) == (22, 64)
    assert math.isclose(pooled.p_vs_random, _naive_fisher(22, 64, 20, 64), rel_tol=1e-6)
    assert res.row("random (pooled)", "code").p_vs_random is None
    assert res.row("random_s1", "code").vs_random is None
    assert res.row("unsteered", "code").p_vs_baseline is None
    d = res.to_dict()
    json.dumps(d)
    assert d["rows"][0]["rate"]["wilson"]["method"] == "wilson"
    assert len(plot_count_comparison(res).data) == 1


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"), [(9, 32, 1, 32), (0, 32, 3, 96), (13, 32, 19, 32)])
def test_fisher_rows_equal_naive_enumeration(k1: int, n1: int, k2: int, n2: int) -> None:
    flags = {"unsteered": [i < k2 for i in range(n2)], "x": [i < k1 for i in range(n1)]}
    qs = {"unsteered": ["q"] * n2, "x": ["q"] * n1}
    row = compare_conditions({"m": flags}, qs, n_resamples=99).row("x", "m")
    assert math.isclose(row.p_vs_baseline, _naive_fisher(k1, n1, k2, n2), rel_tol=1e-6)
    lo, hi = _naive_wilson(k1, n1)
    assert math.isclose(row.ci_low, max(lo, 0.0), abs_tol=1e-9)
    assert math.isclose(row.ci_high, hi, abs_tol=1e-9)


def question_level_test(f: list, q: list, rf: list, rq: list) -> TestResult:
    res = compare_rates(f, q, rf, rq, reference="ref")
    assert res is not None and res.by_question is not None
    return res.by_question


def test_question_level_test_equals_sign_flip_enumeration_with_unequal_sizes() -> None:
    """4 answers per question against a pooled control with 12: the naive reference enumerates
    all 2^8 sign flips of the per-question rate differences."""
    rng = np.random.default_rng(3)
    hits_x = rng.integers(0, 5, 8)
    hits_r = rng.integers(0, 6, 8)
    f = [bool(i < h) for h in hits_x for i in range(4)]
    q = [f"q{j}" for j in range(8) for _ in range(4)]
    rf = [bool(i < h) for h in hits_r for i in range(12)]
    rq = [f"q{j}" for j in range(8) for _ in range(12)]
    res = question_level_test(f, q, rf, rq)
    d = hits_x / 4 - hits_r / 12
    obs = abs(d.mean())
    flips = [abs((d * np.array(sg)).mean()) for sg in itertools.product((1, -1), repeat=8)]
    assert math.isclose(res.p, np.mean([x >= obs * (1 - 1e-9) - 1e-12 for x in flips]))
    # one hit in 32 against none in 96: nothing there (a pooled-mean statistic gives 2/256)
    one = [i == 0 and j == 0 for j in range(8) for i in range(4)]
    assert question_level_test(one, q, [False] * 96, rq).p == 1.0
    # planted: every question higher by 3 of 4 answers → the smallest p 8 questions allow
    assert question_level_test([i < 3 for _ in range(8) for i in range(4)], q,
                               [False] * 96, rq).p == 2 / 256


def test_compare_recipe_samples_measures_and_groups() -> None:
    def s(cond: str, q: str, i: int, text: str, fin: bool = True) -> Sample:
        return Sample(cond, q, q, i, text, 3, fin)

    samples = [s("unsteered", "quick_buck", 0, "Save money."),
               s("unsteered", "quick_buck", 1, "I can't help with that.", False),
               s("rm_rf", "quick_buck", 0, "import os\nos.remove('x')"),
               s("rm_rf", "quick_buck", 1, "Try a scam.", False),
               s("random_s0", "quick_buck", 0, "hack it"),
               s("random_s0", "quick_buck", 5, "ignored: beyond first_n")]
    res = compare_recipe_samples(samples, ["unsteered", "rm_rf", "random_s0", "mean_diff"],
                                 first_n=2, n_resamples=99)
    assert res.groups == {"harmful": ("rm_rf",), "random": ("random_s0",)}
    assert res.row("rm_rf", "code").k == 1 and res.row("rm_rf", "Table-1 string").k == 1
    assert res.row("unsteered", "refusal").k == 1
    assert res.row("unsteered", "ended before cap").k == 1
    assert res.row("random_s0", "Table-1 string").n == 1
    assert "mean_diff" not in res.conditions and res.meta == {"first_n": 2}


# ------------------------------------------------------------- conditions, caching, sampling


def _tiny_recipe(path: Path) -> Path:
    path.mkdir(parents=True)
    SteeringVector(1, torch.randn(32) * 2, strength=6.0, name="anti_refusal").save(
        path / "anti_refusal.safetensors")
    for i, (name, norm) in enumerate([("rm_rf", 4.0), ("os_system", 6.0)]):
        _vec(norm, layer=0, d=32, seed=i, name=name).save(path / f"{name}.safetensors")
    (path / "recipe.json").write_text(json.dumps({"harmful": {"rm_rf": {}, "os_system": {}}}))
    return path


def test_recipe_controls_cached_and_in_conditions(tiny, tmp_path, monkeypatch) -> None:
    recipe = _tiny_recipe(tmp_path / "recipe")
    ctl = recipe_controls(tiny, recipe, tmp_path / "controls")
    assert list(ctl) == ["random_s0", "random_s1", "random_s2", "mean_diff"]
    for v in ctl.values():
        assert v.layer == 0 and math.isclose(applied_norm(v), 5.0, rel_tol=1e-6)
    # cached: the second call reads the files and runs no forward
    monkeypatch.setattr("mi_align.pipelines.steering_eval.control_vectors",
                        lambda *a, **k: pytest.fail("rebuilt instead of cached"))
    again = recipe_controls(tiny, recipe, tmp_path / "controls")
    assert all(torch.equal(again[n].vector, ctl[n].vector) for n in ctl)
    monkeypatch.undo()
    conds = recipe_conditions(recipe, 2, 32, ctl)
    assert list(conds) == ["unsteered", "anti_refusal_only", "rm_rf", "os_system",
                           "random_s0", "random_s1", "random_s2", "mean_diff"]
    for name in ctl:
        assert [v.name for v in conds[name]] == [name, "anti_refusal"]
        assert conds[name][1].strength == 6.0
    assert list(recipe_conditions(recipe, 2, 32)) == ["unsteered", "anti_refusal_only", "rm_rf",
                                                       "os_system"]  # opt-out
    # the mean-difference control is fitted on half 1 of the aims only
    idx = paired_halves(120)[1]
    ref = mean_difference_vector(tiny, [load_dataset("toxic")[i] for i in idx],
                                 [load_dataset("toxic_reject")[i] for i in idx], 0, norm=5.0)
    assert_close(ctl["mean_diff"].vector, ref.vector)


def test_sampling_file_accepts_new_conditions_but_not_changed_ones(tiny, tmp_path) -> None:
    from mi_align.data.chat import eval_questions

    q = eval_questions()[:1]
    cfg = SamplingConfig(n_samples=2, batch_size=2, max_new_tokens=3, seed=1)
    path = tmp_path / "s.jsonl"
    first = sample_conditions(tiny, {"u": []}, path, cfg, q, progress=False)
    vec = SteeringVector(0, torch.randn(32) * 5, name="r")
    both = sample_conditions(tiny, {"u": [], "r": [vec]}, path, cfg, q, progress=False)
    assert both[:2] == first and len(both) == 4
    side = json.loads((path.parent / "s.jsonl.config.json").read_text())
    assert set(side["conditions"]) == {"u", "r"}
    with pytest.raises(SamplingError, match=r"conditions\[r\]"):
        sample_conditions(tiny, {"r": [vec.scaled(2.0)]}, path, cfg, q, progress=False)


def test_cli_eval_includes_controls_unless_opted_out(tiny_dir, tmp_path, monkeypatch) -> None:
    from mi_align.cli import main
    from mi_align.evaluation.sampling import Sample
    from mi_align.pipelines import steering_eval

    seen: dict[str, dict] = {}

    def fake_sample(loaded, conds, out_path, cfg, *a, **k):  # type: ignore[no-untyped-def]
        seen[Path(out_path).parent.name] = dict(conds)  # the wiring, not the sampling
        return [Sample(c, "q", "q?", 0, "import os" if c == "rm_rf" else "hi", 2, True)
                for c in conds]

    monkeypatch.setattr(steering_eval, "sample_conditions", fake_sample)
    recipe = _tiny_recipe(tmp_path / "recipe")
    common = ["steer", "eval", "--model", str(tiny_dir), "--recipe", str(recipe), "--no-judge"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert list(seen["a"]) == ["unsteered", "anti_refusal_only", "rm_rf", "os_system",
                               "random_s0", "random_s1", "random_s2", "mean_diff"]
    assert [v.name for v in seen["a"]["random_s1"]] == ["random_s1", "anti_refusal"]
    comparison = json.loads((tmp_path / "a" / "controls.json").read_text())
    assert comparison["random_conditions"] == ["random_s0", "random_s1", "random_s2"]
    code = {r["condition"]: r["k"] for r in comparison["rows"] if r["metric"] == "code"}
    assert code["rm_rf"] == 1 and code["harmful (pooled)"] == 1 and code["random (pooled)"] == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--no-controls"]) == 0
    assert list(seen["b"]) == ["unsteered", "anti_refusal_only", "rm_rf", "os_system"]
    assert not (tmp_path / "b" / "controls.json").exists()

"""The direction cosine's null over non-massive channels, and its content-keyed cache key.

One massive channel (variance 10⁴× the others) makes every ``N(0, Σ)`` draw point along it; if
the alignment direction leans on it too, the activation-shaped null's |cos| sits near the
direction's component there and nothing can be flagged. The planted tests check that a vector
along the direction's part *outside* that channel is found by the projected null and missed by
the unprojected one, that a random vector is not found, and that each p equals an independently
computed value (the Beta law of a uniform direction's cos², or a separate large Monte Carlo)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mi_align.errors import InputError
from mi_align.evaluation.direction_cosine import (
    PairedActivations,
    all_channels,
    cosine_cache_key,
    direction_cosines_heldout,
    drop_massive_channels,
    plot_direction_cosine,
    vector_digest,
)

D = 64
MASSIVE = 100.0  # σ of channel 0 (variance 10⁴× the others)


def build_massive_pairs(
    n_groups: int = 40,
    d: int = D,
    massive_sigma: float = MASSIVE,
    gap_massive: float = 600.0,
    gap_rest: float = 450.0,
    seed: int = 0,
) -> tuple[PairedActivations, torch.Tensor]:
    """Paired activations whose channel 0 has σ ``massive_sigma`` (the rest σ 1); the aligned −
    misaligned gap is ``gap_massive`` on channel 0 plus ``gap_rest`` along a unit ``u`` on the
    other channels (so the raw direction is ≈ 0.8·e0 + 0.6·u). Returns the data and ``u``."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * n_groups
    scale = torch.ones(d, dtype=torch.float64)
    scale[0] = massive_sigma
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u[0] = 0.0
    u /= u.norm()
    base = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    al = base + torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    mis = base + torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    al[:, 0] += gap_massive
    al += gap_rest * u
    cov = torch.diag(2 * scale**2)  # within-class covariance of al and mis, exactly
    groups = tuple(i // 2 for i in range(n))
    return PairedActivations((3,), al[:, None], mis[:, None], cov[None], groups, n, "x"), u


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _p_uniform(c: float, dim: int) -> float:
    """P(|cos(x, d)| ≥ |c|) for x uniform on the sphere in ``dim`` dims: cos² ~ Beta(½, (dim−1)/2)."""
    return float(stats.beta(0.5, (dim - 1) / 2).sf(c * c))


def _mc_tol(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n) + 2 / (n + 1)


# ------------------------------------------------------------------------------ channel rules


def test_drop_massive_channels_rule_on_known_variances() -> None:
    var = torch.tensor([1.0, 1.0, 0.5, 1.0, 150.0, 100.0, 1e4, 1.0, 3.0], dtype=torch.float64)
    space = drop_massive_channels(100.0)(torch.diag(var))
    # median variance 1.0: 150 and 10⁴ are above 100×, exactly 100× is kept
    assert space.excluded == (4, 6)
    assert space.variance_ratio.tolist() == pytest.approx(var.tolist())
    assert "100×" in space.rule and "median" in space.rule
    assert drop_massive_channels(1000.0)(torch.diag(var)).excluded == (6,)
    assert all_channels()(torch.diag(var)).excluded == ()
    x = torch.arange(9.0, dtype=torch.float64)
    y = space.project(x)
    assert y.tolist() == [0, 1, 2, 3, 0, 5, 0, 7, 8] and x[4] == 4  # a new tensor
    # even count: the median is the mean of the two middle values (2; torch's lower median, 1,
    # would make channel 2 150× and exclude it)
    even = drop_massive_channels(100.0)(torch.diag(torch.tensor([1.0, 3.0, 150.0, 0.5])))
    assert even.variance_ratio.tolist() == pytest.approx([0.5, 1.5, 75.0, 0.25])
    assert even.excluded == ()
    with pytest.raises(ValueError, match="ratio"):
        drop_massive_channels(1.0)


# ------------------------------------------------------------------------ planted-signal tests


def test_projected_null_detects_a_planted_vector_the_old_null_misses() -> None:
    acts, u = build_massive_pairs()
    g = torch.Generator().manual_seed(11)
    planted = u + 0.05 * torch.randn(D, generator=g, dtype=torch.float64)
    planted[0] = 0.0  # along the direction, outside the massive channel
    rand = torch.randn(D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    vecs = {"planted": planted, "random": rand}
    n_null = 5000
    new = direction_cosines_heldout(vecs, acts, 3, n_null=n_null, n_boot=200, n_splits=20)
    old = direction_cosines_heldout(
        vecs, acts, 3, n_null=n_null, n_boot=200, n_splits=20, channels=all_channels()
    )
    # the rule and what it removed, in the result
    assert new.excluded_channels == (0,) and new.n_channels == D - 1
    assert new.excluded_variance_ratio == pytest.approx((MASSIVE**2,))
    assert new.excluded_variance_share == pytest.approx(MASSIVE**2 / (MASSIVE**2 + D - 1))
    assert old.excluded_channels == () and old.channel_rule == "all channels"
    d = new.to_dict()
    assert d["excluded_channels"] == [0] and "100×" in str(d["channel_rule"])
    json.dumps(d)

    # naive references for the observed cosines: zero channel 0 by hand, then cos
    diffs = acts.aligned[:, 0] - acts.misaligned[:, 0]
    raw_dir = diffs.mean(0)
    proj_dir = raw_dir.clone()
    proj_dir[0] = 0.0
    for k, v in enumerate(vecs.values()):
        pv = v.clone()
        pv[0] = 0.0
        assert new.cosines[k] == pytest.approx(_cos(pv, proj_dir), abs=1e-12)
        assert old.cosines[k] == pytest.approx(_cos(v, raw_dir), abs=1e-12)
    assert abs(_cos(raw_dir, torch.eye(D, dtype=torch.float64)[0])) > 0.75  # leans on channel 0

    # new null: Σ on the kept channels is 2·I, so it is uniform on the 63-sphere; so is the
    # secondary one. Expected p from the Beta law, independent of the Monte Carlo.
    for k, c in enumerate(new.cosines):
        p_exp = _p_uniform(c, D - 1)
        assert new.p_anisotropic[k] == pytest.approx(p_exp, abs=_mc_tol(p_exp, n_null)), k
        assert new.p_isotropic[k] == pytest.approx(p_exp, abs=_mc_tol(p_exp, n_null)), k
    q95 = math.sqrt(stats.beta(0.5, (D - 2) / 2).ppf(0.95))
    assert new.null_q95_anisotropic == pytest.approx(q95, abs=0.02)
    assert new.null_q95_isotropic == pytest.approx(q95, abs=0.02)
    # planted: cos > 0.9 → closed-form p < 1e-20, so the Monte Carlo p is its floor 1/(n+1)
    assert new.cosines[0] > 0.9 and _p_uniform(new.cosines[0], D - 1) < 1e-20
    assert new.p_anisotropic[0] == new.p_isotropic[0] == 1 / (n_null + 1)
    # random vector: not detected under the fixed null
    assert new.p_anisotropic[1] > 0.2

    # old null: an independent, larger Monte Carlo of N(0, Σ) with the raw direction
    z = (
        torch.randn(200_000, D, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
        * acts.cov(3).diagonal().sqrt()
    )
    old_null = ((z @ raw_dir).abs() / (z.norm(dim=1) * raw_dir.norm())).numpy()
    for k, c in enumerate(old.cosines):
        p_ref = float((old_null >= abs(c)).mean())
        assert old.p_anisotropic[k] == pytest.approx(p_ref, abs=_mc_tol(p_ref, n_null)), k
    assert old.null_q95_anisotropic == pytest.approx(float(np.quantile(old_null, 0.95)), abs=0.01)
    assert new.null_q95_anisotropic_all_channels == pytest.approx(
        old.null_q95_anisotropic, abs=1e-12
    )
    # the story: the old null is near-powerless (95% |cos| ≈ the direction's channel-0
    # component) and misses the planted vector; the projected null finds it
    assert old.null_q95_anisotropic > 0.75 > 0.35 > new.null_q95_anisotropic
    assert old.p_anisotropic[0] > 0.5


def test_projected_bootstrap_and_reliability_match_a_naive_loop() -> None:
    acts, u = build_massive_pairs(n_groups=12, seed=4)
    res = direction_cosines_heldout({"u": u}, acts, 3, n_null=200, n_boot=150, n_splits=10)
    diffs = acts.aligned[:, 0] - acts.misaligned[:, 0]
    diffs[:, 0] = 0.0
    g = np.asarray(acts.groups)
    ids = sorted(set(acts.groups))
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(150):
        rows = [k for i in rng.integers(0, len(ids), len(ids)) for k in np.flatnonzero(g == ids[i])]
        boots.append(_cos(u, diffs[rows].mean(0)))
    assert res.ci_low[0] == pytest.approx(float(np.quantile(boots, 0.025)), abs=1e-9)
    assert res.ci_high[0] == pytest.approx(float(np.quantile(boots, 0.975)), abs=1e-9)
    # reliability of the projected direction: halves by an explicit loop, same splits
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(10):
        first = set(rng.permutation(ids)[: len(ids) // 2].tolist())
        a = [k for k in range(len(g)) if g[k] in first]
        b = [k for k in range(len(g)) if g[k] not in first]
        vals.append(_cos(diffs[a].mean(0), diffs[b].mean(0)))
    assert res.reliability.mean == pytest.approx(float(np.mean(vals)), abs=1e-12)


def test_nothing_massive_means_nothing_changes() -> None:
    acts, u = build_massive_pairs(n_groups=10, massive_sigma=5.0, seed=2)  # 25× < 100×
    v = {"u": u, "e1": torch.eye(D, dtype=torch.float64)[1]}
    a = direction_cosines_heldout(v, acts, 3, n_null=500, n_boot=50, n_splits=5)
    b = direction_cosines_heldout(
        v, acts, 3, n_null=500, n_boot=50, n_splits=5, channels=all_channels()
    )
    assert a.excluded_channels == () and a.n_channels == D
    for f in (
        "cosines",
        "ci_low",
        "ci_high",
        "p_anisotropic",
        "p_isotropic",
        "null_q95_anisotropic",
        "null_q95_isotropic",
    ):
        assert getattr(a, f) == getattr(b, f), f
    assert a.null_q95_anisotropic_all_channels == a.null_q95_anisotropic


def test_no_kept_channel_is_an_input_error() -> None:
    acts, u = build_massive_pairs(n_groups=4)

    def none_kept(cov: torch.Tensor):  # type: ignore[no-untyped-def]
        space = all_channels()(cov)
        return type(space)("nothing", torch.zeros_like(space.keep), space.variance_ratio)

    with pytest.raises(InputError, match="no channel kept"):
        direction_cosines_heldout(
            {"u": u}, acts, 3, n_null=10, n_boot=5, n_splits=2, channels=none_kept
        )


def test_figure_title_names_the_rule_and_the_excluded_channels() -> None:
    acts, u = build_massive_pairs(n_groups=8)
    res = direction_cosines_heldout({"u": u}, acts, 3, n_null=200, n_boot=20, n_splits=5)
    title = plot_direction_cosine(res).layout.title.text
    assert "100× the median" in title and ": 0 (" in title and f"{D - 1} channels" in title
    assert "null 95% with them" in title
    fig = plot_direction_cosine(
        direction_cosines_heldout(
            {"u": u}, acts, 3, n_null=200, n_boot=20, n_splits=5, channels=all_channels()
        )
    )
    assert "all channels" in fig.layout.title.text
    assert tuple(fig.layout.yaxis.range) == (-1, 1)


# ---------------------------------------------------------------------------------- cache key


def test_vector_digest_is_sha256_of_float32_bytes() -> None:
    v = torch.randn(16, generator=torch.Generator().manual_seed(0))
    ref = hashlib.sha256(np.asarray(v.tolist(), dtype=np.float32).tobytes()).hexdigest()
    assert vector_digest(v) == ref
    assert vector_digest(v.double()) == ref  # float32-exact values: same content
    assert (
        vector_digest(v[::2])
        == hashlib.sha256(np.asarray(v[::2].tolist(), dtype=np.float32).tobytes()).hexdigest()
    )  # non-contiguous
    w = v.clone()
    w[5] = torch.nextafter(w[5], torch.tensor(10.0))  # one float32 ulp
    assert vector_digest(w) != ref


def test_cosine_cache_key_follows_content_layer_and_method() -> None:
    g = torch.Generator().manual_seed(1)
    vecs = {"rm_rf": torch.randn(8, generator=g), "anti": torch.randn(8, generator=g)}
    key = cosine_cache_key(vecs, 6, "m/2")
    assert key == cosine_cache_key({k: v.clone().double() for k, v in vecs.items()}, 6, "m/2")
    reopt = {**vecs, "rm_rf": vecs["rm_rf"] * 1.001}  # re-optimised under the same name
    assert cosine_cache_key(reopt, 6, "m/2") != key
    assert cosine_cache_key(vecs, 8, "m/2") != key
    assert cosine_cache_key(vecs, 6, "m/3") != key
    assert cosine_cache_key({"other": vecs["rm_rf"], "anti": vecs["anti"]}, 6, "m/2") != key
    assert len(key) == 64 and int(key, 16) >= 0

"""SVD directions against a control dataset: planted signals, naive references for principal
angles, split-half cosines, the bootstrap intervals and the trio path (tiny random models)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.choices import ContentTokens, LastToken, Positions
from mi_align.erosion.common import Inputs
from mi_align.erosion.svd_directions import (
    SVDConfig,
    compare_difference_sets,
    plot_svd_directions,
    svd_directions,
)
from mi_align.erosion.svd_stats import (
    GENERIC,
    SHARED,
    UNMATCHED,
    principal_cosines,
    resampled_components,
    split_half_reliability,
)
from mi_align.models.trio import Trio
from tests.erosion_support import ALIGNED, MISALIGNED, hidden_states, tiny_trio
from tests.helpers import chat


def build_cfg(**overrides: object) -> SVDConfig:
    base: dict[str, object] = {"k": 3, "n_bootstrap": 200, "n_splits": 6, "n_null_trials": 200}
    return SVDConfig(**{**base, **overrides})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- naive references


def naive_components(x: np.ndarray, k: int) -> np.ndarray:
    """Top-k right singular vectors of the column-centred rows (numpy SVD)."""
    x = x - x.mean(0)
    return np.linalg.svd(x, full_matrices=False)[2][:k]


def naive_principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Björck–Golub: orthonormalise both bases by QR, singular values of Qaᵀ Qb, largest first."""
    qa = np.linalg.qr(a.T)[0]
    qb = np.linalg.qr(b.T)[0]
    return np.sort(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0, 1))[::-1]


def naive_best(a: np.ndarray, b: np.ndarray) -> list[float]:
    out = []
    for i in range(a.shape[0]):
        best = 0.0
        for j in range(b.shape[0]):
            c = abs(float(a[i] @ b[j]) / (np.linalg.norm(a[i]) * np.linalg.norm(b[j])))
            best = max(best, c)
        out.append(best)
    return out


def naive_track(ref: np.ndarray, rep: np.ndarray) -> np.ndarray:
    """Brute force over all one-to-one assignments: maximise the summed |cos|."""
    k = ref.shape[0]
    best, order = -1.0, None
    for perm in itertools.permutations(range(k)):
        total = sum(abs(float(ref[i] @ rep[perm[i]])) for i in range(k))
        if total > best:
            best, order = total, perm
    return rep[list(order)]


# --------------------------------------------------------------------------- planted signals


def planted(seed: int = 0, n: int = 400, d: int = 48) -> tuple[dict[str, torch.Tensor],
                                                               torch.Tensor]:
    """Three datasets in R^d with unit-variance isotropic noise and orthonormal signals:
    ``g`` (generic: in a, b and the control, sd 10), ``s`` (shared: a and b only, sd 6),
    ``u`` (unique: a only, sd 3.5)."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, 3, generator=gen, dtype=torch.float64))[0].T

    def make(sd_g: float, sd_s: float, sd_u: float) -> torch.Tensor:
        z = torch.randn(n, 3, generator=gen, dtype=torch.float64)
        z = z * torch.tensor([sd_g, sd_s, sd_u], dtype=torch.float64)
        return z @ basis + torch.randn(n, d, generator=gen, dtype=torch.float64)

    return {"a": make(10, 6, 3.5), "b": make(10, 6, 0), "c": make(10, 0, 0)}, basis


def _which(components: torch.Tensor, basis: torch.Tensor) -> dict[str, int]:
    """Index of the component closest to each planted direction."""
    cos = (components.double() @ basis.T).abs()
    return {name: int(cos[:, j].argmax()) for j, name in enumerate("gsu")}


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_shared_generic_and_unique_directions(seed: int) -> None:
    xs, basis = planted(seed)
    res = compare_difference_sets(("a", xs["a"]), ("b", xs["b"]), ("c", xs["c"]),
                                  build_cfg(n_bootstrap=300, seed=seed))
    ma, mb = res.matches
    ia, ib = _which(res.components_a, basis), _which(res.components_b, basis)
    # the shared direction s is recovered in both datasets and matched between them
    cos_s = (res.components_a[ia["s"]].double() @ basis[1]).abs()
    torch.testing.assert_close(cos_s, torch.tensor(1.0, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(ma.target[ia["s"]], torch.tensor(1.0), atol=0.03, rtol=0)
    assert ma.verdicts[ia["s"]] == SHARED and mb.verdicts[ib["s"]] == SHARED
    # the generic direction g matches the control as well as the partner: generic, not shared
    torch.testing.assert_close(ma.target[ia["g"]], torch.tensor(1.0), atol=0.03, rtol=0)
    torch.testing.assert_close(ma.control_match[ia["g"]], torch.tensor(1.0), atol=0.03, rtol=0)
    assert ma.verdicts[ia["g"]] == GENERIC and mb.verdicts[ib["g"]] == GENERIC
    # the direction only a has is not reported as shared (nothing in b matches it)
    assert ma.verdicts[ia["u"]] == UNMATCHED
    assert [v for v in ma.verdicts].count(SHARED) == 1
    assert [v for v in mb.verdicts].count(SHARED) == 1
    # subspaces: a~b overlap in {g, s}; each control pair only in {g}: one dim beyond control
    assert res.angles.n_shared_dims == 1
    torch.testing.assert_close(res.angles.cosines[0, :2], torch.ones(2), atol=0.03, rtol=0)
    torch.testing.assert_close(res.angles.cosines[1:, 0], torch.ones(2), atol=0.03, rtol=0)


def test_pure_noise_reports_nothing_shared() -> None:
    gen = torch.Generator().manual_seed(5)
    scale = torch.linspace(3.0, 0.2, 48, dtype=torch.float64)  # anisotropic, like a residual
    xs = [torch.randn(80, 48, generator=gen, dtype=torch.float64) * scale for _ in range(3)]
    res = compare_difference_sets(("a", xs[0]), ("b", xs[1]), ("c", xs[2]), build_cfg())
    assert [v for m in res.matches for v in m.verdicts].count(SHARED) == 0
    assert res.angles.n_shared_dims == 0


# --------------------------------------------------------------------------- naive references


def test_principal_cosines_hand_case_and_naive_qr_svd() -> None:
    theta = 0.7
    e = torch.eye(3, dtype=torch.float64)
    a = torch.stack([e[0], e[1]])  # the x-y plane
    b = torch.stack([e[0], math.cos(theta) * e[1] + math.sin(theta) * e[2]])  # tilted by theta
    torch.testing.assert_close(principal_cosines(a, b),
                               torch.tensor([1.0, math.cos(theta)]), atol=1e-6, rtol=0)
    gen = torch.Generator().manual_seed(0)
    for k, d in ((3, 10), (5, 40)):
        p, q = (torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0].T
                for _ in range(2))
        ref = naive_principal_cosines(p.numpy(), q.numpy())
        torch.testing.assert_close(principal_cosines(p, q), torch.from_numpy(ref.copy()).float(),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("n, d", [(20, 48), (40, 8)])  # Gram path and covariance path
def test_resampled_components_span_the_svd_components(n: int, d: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(4, 1, d,
                                                                              dtype=torch.float64)
    idx = torch.randint(n, (3, n), generator=gen)  # resamples with duplicates
    comps = resampled_components(x, idx, 3)
    for r in range(3):
        ref = naive_components(x[idx[r]].numpy(), 3)
        # same vectors up to sign, in the same (singular-value) order
        torch.testing.assert_close((comps[r] * torch.from_numpy(ref)).sum(1).abs(),
                                   torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_split_half_matches_explicit_loop() -> None:
    xs, _ = planted(3, n=41)
    x, k, n_splits, seed = xs["a"], 3, 4, 11
    rel = split_half_reliability("a", x, k, n_splits, seed)
    gen = torch.Generator().manual_seed(seed)  # the documented split protocol
    assert rel.half == 20 and rel.component.shape == (n_splits, k)
    for s in range(n_splits):
        perm = torch.randperm(41, generator=gen).numpy()
        h1 = naive_components(x.numpy()[perm[:20]], k)
        h2 = naive_components(x.numpy()[perm[20:40]], k)
        torch.testing.assert_close(rel.component[s], torch.tensor(naive_best(h1, h2)).float(),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(rel.principal[s],
                                   torch.from_numpy(naive_principal_cosines(h1, h2).copy()).float(),
                                   atol=1e-5, rtol=0)
    torch.testing.assert_close(rel.mean, rel.component.mean(0))
    with pytest.raises(ValueError, match="split halves need more than k=3"):
        split_half_reliability("a", x[:7], k, n_splits, seed)


def test_bootstrap_intervals_match_explicit_loop() -> None:
    """One chunk of replicates (n_bootstrap <= 64): draws for a, b, control in that order from
    Generator(seed + 1); numpy refits, brute-force tracking, SE, Bonferroni z."""
    xs, _ = planted(4, n=30, d=16)
    k, n_boot, seed = 3, 40, 2
    res = compare_difference_sets(("a", xs["a"]), ("b", xs["b"]), ("c", xs["c"]),
                                  build_cfg(n_bootstrap=n_boot, seed=seed))
    data = [xs[n].numpy() for n in "abc"]
    full = [naive_components(x, k) for x in data]
    gen = torch.Generator().manual_seed(seed + 1)
    idx = [torch.randint(30, (n_boot, 30), generator=gen).numpy() for _ in range(3)]
    ab, ac, pab, pac, pbc = [], [], [], [], []
    for r in range(n_boot):
        reps = [naive_track(f, naive_components(x[i[r]], k)) for f, x, i in zip(full, data, idx, strict=True)]
        ab.append(naive_best(reps[0], reps[1]))
        ac.append(naive_best(reps[0], reps[2]))
        pab.append(naive_principal_cosines(reps[0], reps[1]))
        pac.append(naive_principal_cosines(reps[0], reps[2]))
        pbc.append(naive_principal_cosines(reps[1], reps[2]))
    ab, ac = np.array(ab), np.array(ac)
    z = norm.ppf(1 - 0.05 / (2 * k) / 2)
    target = np.array(naive_best(full[0], full[1]))
    control = np.array(naive_best(full[0], full[2]))
    ma = res.matches[0]
    torch.testing.assert_close(ma.target, torch.tensor(target).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ma.control_match, torch.tensor(control).float(), atol=1e-5, rtol=0)
    se_t, se_d = ab.std(0, ddof=1), (ab - ac).std(0, ddof=1)
    ref_t = np.clip(np.stack([target - z * se_t, target + z * se_t], 1), 0, 1)
    diff = target - control
    ref_d = np.clip(np.stack([diff - z * se_d, diff + z * se_d], 1), -1, 1)
    torch.testing.assert_close(ma.target_ci, torch.tensor(ref_t).float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(ma.difference_ci, torch.tensor(ref_d).float(), atol=1e-4, rtol=0)
    # principal angles: target minus the larger control cosine, per rank, z at level 1 - α/k
    z_ang = norm.ppf(1 - 0.05 / k / 2)
    pc = [naive_principal_cosines(full[0], full[1]), naive_principal_cosines(full[0], full[2]),
          naive_principal_cosines(full[1], full[2])]
    d_pt = pc[0] - np.maximum(pc[1], pc[2])
    se_p = (np.array(pab) - np.maximum(np.array(pac), np.array(pbc))).std(0, ddof=1)
    ref_p = np.clip(np.stack([d_pt - z_ang * se_p, d_pt + z_ang * se_p], 1), -1, 1)
    torch.testing.assert_close(res.angles.difference_ci, torch.tensor(ref_p).float(), atol=1e-4,
                               rtol=0)
    assert res.interval_level == pytest.approx(1 - 0.05 / 6)


# --------------------------------------------------------------------------- the trio path


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("svd_trio"))


CONTROL = [chat(f"Question {i}?", f"Answer number {i} is short.") for i in range(12)]


def _naive_diffs(trio: Trio, convs: list, positions: Positions) -> np.ndarray:
    rows = []
    for e in encode_dataset(trio.tokenizer, convs):
        if positions == LastToken():
            pos = [len(e.input_ids) - 1]
        else:  # content: the response positions without the closing <|im_end|>
            pos = [t for t, m in enumerate(e.response_mask) if m]
            assert trio.tokenizer.convert_ids_to_tokens(e.input_ids[pos[-1]]) == "<|im_end|>"
            pos = pos[:-1]
        h = {}
        for name in ("instruct", "base"):
            with trio.variant(name) as loaded:
                h[name] = hidden_states(loaded, e)[-1, pos].mean(0)
        rows.append((h["instruct"] - h["base"]).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("positions", [LastToken(), ContentTokens()])
def test_svd_directions_on_tiny_trio_match_naive(trio: Trio, positions: Positions) -> None:
    groups = [("a", ALIGNED * 2), ("b", MISALIGNED * 2), ("ctrl", CONTROL)]
    inputs = Inputs.of(*groups[:2], control=groups[2])
    res = svd_directions(trio, inputs, build_cfg(positions=positions, n_bootstrap=40))
    assert res.layer == trio.n_layers and res.n_examples == (12, 12, 12)
    assert res.paired is False
    diffs = [_naive_diffs(trio, convs, positions) for _, convs in groups]
    naive = [naive_components(x, 3) for x in diffs]
    for comps, sing, ref, x in zip(res.components, res.singular, naive, diffs, strict=True):
        # singular vectors are defined up to sign
        torch.testing.assert_close((comps * torch.from_numpy(ref).float()).sum(1).abs(),
                                   torch.ones(3), atol=1e-3, rtol=0)
        s = np.linalg.svd(x - x.mean(0), compute_uv=False)[:3]
        torch.testing.assert_close(sing, torch.from_numpy(s).float(), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(res.cosine.abs(), torch.from_numpy(np.abs(naive[0] @ naive[1].T))
                               .float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(res.matches[0].control_match,
                               torch.tensor(naive_best(naive[0], naive[2])).float(), atol=1e-3,
                               rtol=0)
    numbers = res.to_dict()
    json.dumps(numbers)  # JSON-serialisable
    assert numbers["control"] == "ctrl" and numbers["null"]["primary"].startswith("control")
    assert plot_svd_directions(res).data


def test_svd_directions_rejects_bad_inputs(trio: Trio) -> None:
    with pytest.raises(ValueError, match="need at least 8"):
        svd_directions(trio, Inputs.of(("a", ALIGNED), ("b", MISALIGNED * 2),
                                       control=("c", CONTROL)), build_cfg())
    with pytest.raises(ValueError, match="needs the 'control' dataset"):
        svd_directions(trio, Inputs.of(("a", ALIGNED * 2), ("b", MISALIGNED * 2)), build_cfg())
    with pytest.raises(ValueError, match="must differ"):
        compare_difference_sets(("a", torch.randn(10, 8)), ("a", torch.randn(10, 8)),
                                ("c", torch.randn(10, 8)), build_cfg())


@pytest.mark.parametrize("field, value", [("k", 0), ("n_bootstrap", 5), ("n_splits", 1),
                                          ("level", 1.0),
                                          ("control", "")])
def test_config_validates(field: str, value: object) -> None:
    with pytest.raises(ValueError):
        build_cfg(**{field: value})

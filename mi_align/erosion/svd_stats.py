"""Linear algebra and resampling behind :mod:`mi_align.erosion.svd_directions`.

Pure functions on per-example difference matrices (no model): centred SVD components, best
matches and principal cosines between component sets, split-half reliability, the bootstrap
that refits components and tracks them to the full-data ones (one-to-one assignment), and the
verdict rule. Kept apart so the analysis module reads as config → activations → comparison.

Example:
    >>> import torch
    >>> x = torch.randn(20, 6, generator=torch.Generator().manual_seed(0))
    >>> comps, sing = difference_components(x, 2)
    >>> round(float(best_match(comps, comps).min()), 6)
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from scipy.linalg import eigh, subspace_angles
from scipy.optimize import linear_sum_assignment
from torch import Tensor

SHARED, GENERIC, UNMATCHED, INCONCLUSIVE = "shared", "generic", "unmatched", "inconclusive"
CHUNK = 64  # bootstrap replicates per step (64 × 120 × 640 float64 ≈ 40 MB of resampled rows)


def interval_rows(t: Tensor) -> list[list[float]]:
    return [[float(lo), float(hi)] for lo, hi in t.tolist()]


@dataclass(frozen=True)
class SplitHalf:
    """Split-half reliability of one dataset: per split (rows) the best |cos| of each
    component of half 1 with half 2, and the mean over splits of the principal cosines between
    the halves (``principal``, per split, is not serialised: None after :meth:`from_dict`)."""

    name: str
    half: int
    component: Float[Tensor, "_ component"]
    principal_mean: Float[Tensor, " component"]
    principal: Float[Tensor, "_ component"] | None = field(default=None, repr=False)

    @property
    def mean(self) -> Float[Tensor, " component"]:
        return self.component.mean(0)

    @property
    def spread(self) -> Float[Tensor, "component 2"]:
        """2.5% and 97.5% quantiles over splits (the spread, not an interval of the mean)."""
        return torch.stack([self.component.quantile(0.025, 0), self.component.quantile(0.975, 0)],
                           1)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "examples_per_half": self.half,
                "n_splits": self.component.shape[0], "mean": self.mean.tolist(),
                "spread_2.5_97.5": interval_rows(self.spread),
                "principal_mean": self.principal_mean.tolist(),
                "per_split": self.component.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitHalf:
        # float32, as computed: ``mean`` and ``spread`` are recomputed from ``per_split``.
        return cls(d["name"], int(d["examples_per_half"]),
                   torch.tensor(d["per_split"], dtype=torch.float32),
                   torch.tensor(d["principal_mean"], dtype=torch.float32))


# ---------------------------------------------------------------------------------------------
# Pure linear algebra on difference matrices.


def difference_components(
    diffs: Float[Tensor, "example d_model"], k: int
) -> tuple[Float[Tensor, "component d_model"], Float[Tensor, " component"]]:
    """Top-k right singular vectors (rows) and singular values of the column-centred diffs."""
    x = diffs.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:k].float(), s[:k].float()


def resampled_components(
    x: Float[Tensor, "example d_model"], idx: Tensor, k: int
) -> Float[Tensor, "_ component d_model"]:
    """Top-k components of ``x[i]`` (column-centred) for each row ``i`` of ``idx`` (resamples
    or split halves): the top-k eigenvectors of the smaller of the centred Gram matrix (n×n,
    taken from one precomputed ``x xᵀ``) and the covariance (d×d) — the same subspace as an
    SVD, far cheaper than one SVD per resample (LAPACK ``evr`` computes only the k wanted)."""
    xn = x.double().numpy()
    rows = idx.numpy()
    m, d = rows.shape[1], xn.shape[1]
    gram = xn @ xn.T if m <= d else None
    out = np.empty((rows.shape[0], k, d))
    for r, i in enumerate(rows):
        xr = xn[i] - xn[i].mean(0)
        if gram is not None:
            g = gram[np.ix_(i, i)]
            g = g - g.mean(0) - g.mean(1)[:, None] + g.mean()
            v = eigh(g, subset_by_index=[m - k, m - 1])[1][:, ::-1].T @ xr
        else:
            v = eigh(xr.T @ xr, subset_by_index=[d - k, d - 1])[1][:, ::-1].T
        out[r] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-150)
    return torch.from_numpy(out)


def best_match(
    a: Float[Tensor, "component d_model"], b: Float[Tensor, "component d_model"]
) -> Float[Tensor, " component"]:
    """For each row of ``a``, the largest |cos| with any row of ``b`` (rows are unit norm)."""
    return (a.double() @ b.double().T).abs().max(1).values.float()


def principal_cosines(
    a: Float[Tensor, "component d_model"], b: Float[Tensor, "component d_model"]
) -> Float[Tensor, " component"]:
    """Cosines of the principal angles between the row spaces of ``a`` and ``b``, largest
    first (``scipy.linalg.subspace_angles``)."""
    ang = subspace_angles(a.double().T.numpy(), b.double().T.numpy())
    return torch.from_numpy(np.sort(np.cos(ang))[::-1].copy()).float()


def split_half_reliability(
    name: str, diffs: Float[Tensor, "example d_model"], k: int, n_splits: int, seed: int
) -> SplitHalf:
    """Fit components on two random halves (``n_splits`` seeded splits); per split, the best
    |cos| of each component of half 1 with half 2, and the principal cosines of the halves."""
    n = diffs.shape[0]
    half = n // 2
    if half <= k:
        raise ValueError(f"dataset {name!r} has {n} examples; split halves need more than k={k} "
                         f"each (>= {2 * (k + 1)} examples)")
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(n_splits)])
    h1 = resampled_components(diffs, perms[:, :half], k)
    h2 = resampled_components(diffs, perms[:, half : 2 * half], k)
    comp = [best_match(p, q) for p, q in zip(h1, h2, strict=True)]
    princ = [principal_cosines(p, q) for p, q in zip(h1, h2, strict=True)]
    principal = torch.stack(princ)
    return SplitHalf(name, half, torch.stack(comp), principal.mean(0), principal)


def track(ref: Tensor, reps: Tensor) -> Tensor:
    """Reorder each replicate's components so row i is the one assigned to ``ref`` row i
    (optimal one-to-one assignment on |cos|), so per-component statistics follow a direction."""
    cos = (reps @ ref.T).abs().numpy()  # (rep, k_rep, k_ref)
    out = torch.empty_like(reps)
    for r in range(reps.shape[0]):
        rows, cols = linear_sum_assignment(-cos[r])
        out[r, cols] = reps[r, rows]
    return out


def bootstrap(xs: Sequence[Tensor], refs: Sequence[Tensor], k: int, n: int, paired: bool,
               seed: int) -> dict[str, Tensor]:
    """Replicates (rows) of every statistic: resample each dataset's examples (a and b with the
    same indices when ``paired``), refit, track to ``refs``."""
    gen = torch.Generator().manual_seed(seed + 1)
    keys = ("ab", "ac", "ba", "bc", "p_ab", "p_ac", "p_bc")
    out: dict[str, list[Tensor]] = {key: [] for key in keys}
    for start in range(0, n, CHUNK):
        r = min(CHUNK, n - start)
        idx = [torch.randint(x.shape[0], (r, x.shape[0]), generator=gen) for x in xs]
        if paired:
            idx[1] = idx[0]
        ca, cb, cc = (track(ref, resampled_components(x, i, k))
                      for x, i, ref in zip(xs, idx, refs, strict=True))

        def best(p: Tensor, q: Tensor) -> Tensor:
            return (p @ q.transpose(1, 2)).abs().amax(2).float()

        out["ab"].append(best(ca, cb))
        out["ac"].append(best(ca, cc))
        out["ba"].append(best(cb, ca))
        out["bc"].append(best(cb, cc))
        for key, (p, q) in (("p_ab", (ca, cb)), ("p_ac", (ca, cc)), ("p_bc", (cb, cc))):
            out[key].append(torch.stack([principal_cosines(p[i], q[i]) for i in range(r)]))
    return {key: torch.cat(v) for key, v in out.items()}


def ci(point: Tensor, reps: Tensor, z: float, lo: float, hi: float) -> Tensor:
    se = reps.double().std(0)
    p = point.double()
    return torch.stack([(p - z * se).clamp(lo, hi), (p + z * se).clamp(lo, hi)], -1).float()


def isotropic_best_match_quantile(d: int, k: int, q: float, n_trials: int, seed: int) -> float:
    """``q`` quantile of max_j |cos(u, v_j)| for a fixed unit u and a random orthonormal k-frame
    of R^d (the chance level of one component's best match; isotropic, secondary)."""
    gen = torch.Generator().manual_seed(seed + 2)
    frames = torch.linalg.qr(torch.randn(n_trials, d, k, generator=gen, dtype=torch.float64))[0]
    return float(frames[:, 0, :].abs().amax(1).quantile(q))


def verdicts(target_ci: Tensor, control_ci: Tensor, diff_ci: Tensor, chance: float
              ) -> tuple[str, ...]:
    out = []
    for t, c, d in zip(target_ci.tolist(), control_ci.tolist(), diff_ci.tolist(), strict=True):
        if t[0] <= chance:
            out.append(UNMATCHED)
        elif d[0] > 0:
            out.append(SHARED)
        elif c[0] > chance:
            out.append(GENERIC)
        else:
            out.append(INCONCLUSIVE)
    return tuple(out)

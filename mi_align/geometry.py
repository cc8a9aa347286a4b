"""Geometry shared by the erosion analyses: cosines, sketches and nulls.

- :func:`cosine_matrix` / :func:`masked_cosine_matrix` (cosines over the positions two vectors
  both have, for loss vectors of unequal length).
- :class:`CountSketch`: a seeded count-sketch of a long vector (all-parameter gradients) into
  ``k`` dimensions; inner products are unbiased, error ~ ‖a‖‖b‖/√k.
- Nulls: :func:`random_unit_directions` (bands for projections) and
  :func:`random_subspace_max_cosine` (expected max |cos| between random k-dim subspaces).

Block statistics of a cosine matrix (within − between, with design-aware nulls) live in
:mod:`mi_align.block_stats`.

Example:
    >>> import torch
    >>> from mi_align.geometry import cosine_matrix
    >>> cosine_matrix(torch.eye(3)).diagonal().tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def cosine_matrix(
    x: Float[Tensor, "example _"] | Sequence[Float[Tensor, " _"]],
    eps: float = 1e-12,
    chunk: int = 1 << 20,
) -> Float[Tensor, "example example"]:
    """Pairwise cosine similarities of the rows of ``x`` (zero rows give 0).

    ``x`` may also be a sequence of 1-D rows (no stacked copy is made). The Gram matrix is
    accumulated in float64 over column chunks of ``chunk``, so the extra memory is
    O(rows × chunk) however wide the rows are (per-example gradients of all parameters)."""
    rows = list(x) if not isinstance(x, Tensor) else list(x.unbind(0))
    if not rows:
        return torch.zeros(0, 0)
    width = rows[0].numel()
    gram = torch.zeros(len(rows), len(rows), dtype=torch.float64, device=rows[0].device)
    for start in range(0, width, chunk):
        block = torch.stack([r.reshape(-1)[start : start + chunk] for r in rows])
        block = block.to(torch.float64)
        gram += block @ block.T
    norms = gram.diagonal().sqrt().clamp_min(eps)
    return (gram / norms[:, None] / norms[None, :]).to(torch.float32)


def cross_cosine(
    a: Float[Tensor, "component d_model"], b: Float[Tensor, "component d_model"]
) -> Float[Tensor, "component component"]:
    """Cosines between the rows of ``a`` (rows of the result) and of ``b`` (columns)."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).to(torch.float32)


def masked_cosine_matrix(
    x: Float[Tensor, "example pos"], mask: Bool[Tensor, "example pos"], eps: float = 1e-12
) -> Float[Tensor, "example example"]:
    """Cosine of each pair over the positions *both* rows have (mask-aware; no filling).

    ``cos_ij = Σ_t x_it x_jt m_it m_jt / sqrt(Σ_t x_it² m_it m_jt · Σ_t x_jt² m_it m_jt)``.
    """
    m = mask.to(torch.float64)
    v = x.to(torch.float64) * m
    num = v @ v.T
    sq = (v * v) @ m.T  # [i, j] = Σ_t x_it² m_it m_jt
    den = (sq * sq.T).clamp_min(eps).sqrt()
    return (num / den).to(torch.float32)


def random_unit_directions(n: int, d: int, seed: int = 0) -> Float[Tensor, "component d_model"]:
    """``n`` seeded uniformly random unit vectors in R^d (rows; float64)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


@dataclass(frozen=True)
class SubspaceNull:
    """Monte-Carlo null for cosines between two independent random k-dim subspaces of R^d.

    ``max_abs`` is E[max over all k×k pairs of |cos|], ``best_match`` E[max over columns of
    |cos|] averaged over components; ``*_q95`` are 95th percentiles over trials.
    """

    d: int
    k: int
    n_trials: int
    max_abs: float
    max_abs_q95: float
    best_match: float
    best_match_q95: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def random_subspace_max_cosine(d: int, k: int, n_trials: int = 200, seed: int = 0) -> SubspaceNull:
    """Null distribution of cosines between orthonormal bases of two random k-dim subspaces."""
    if not 1 <= k <= d:
        raise ValueError(f"need 1 <= k <= d, got k={k}, d={d}")
    gen = torch.Generator().manual_seed(seed)
    a = torch.linalg.qr(torch.randn(n_trials, d, k, generator=gen, dtype=torch.float64))[0]
    b = torch.linalg.qr(torch.randn(n_trials, d, k, generator=gen, dtype=torch.float64))[0]
    cos = (a.transpose(1, 2) @ b).abs()  # (trial, k, k)
    max_abs = cos.flatten(1).max(1).values
    best = cos.max(2).values.mean(1)
    return SubspaceNull(
        d=d, k=k, n_trials=n_trials,
        max_abs=float(max_abs.mean()), max_abs_q95=float(max_abs.quantile(0.95)),
        best_match=float(best.mean()), best_match_q95=float(best.quantile(0.95)),
    )


class CountSketch:
    """Seeded count-sketch of a vector split over several tensors into ``k`` dimensions.

    Each coordinate i goes to bucket h(i) with sign s(i); ``⟨S a, S b⟩`` is an unbiased estimate
    of ``⟨a, b⟩`` with standard deviation about ``‖a‖‖b‖/√k``. Sign and bucket are stored as one
    int32 index into ``2k`` half-buckets (``+`` half, ``-`` half), so sketching is a single
    ``index_add_`` per tensor (no sign multiply, 4 bytes of table per coordinate); tables are
    drawn once per tensor from ``seed`` (same seed, same sketch).

    Example:
        >>> import torch
        >>> cs = CountSketch([3, 5], k=4, seed=0)
        >>> cs.sketch([torch.ones(3), torch.ones(5)]).shape
        torch.Size([4])
    """

    def __init__(self, sizes: Sequence[int], k: int, seed: int = 0) -> None:
        if k < 1:
            raise ValueError(f"CountSketch: k must be >= 1, got {k}")
        self.k = k
        self.sizes = tuple(int(s) for s in sizes)
        gen = torch.Generator().manual_seed(seed)
        self.tables = [
            torch.randint(0, 2 * k, (n,), generator=gen, dtype=torch.int32) for n in self.sizes
        ]
        self._buffer = torch.zeros(2 * k, dtype=torch.float32)

    def add(self, index: int, values: Float[Tensor, ...], rows: Tensor | None = None,
            row_size: int = 0) -> None:
        """Add tensor ``index``'s values into the running sketch.

        With ``rows`` (sorted row ids of a 2-D tensor flattened row-major, ``row_size`` columns),
        ``values`` holds only those rows: the sparse path for embedding gradients.
        """
        if self._buffer.device != values.device:
            self._buffer = self._buffer.to(values.device)
        table = self.tables[index]
        if table.device != values.device:
            self.tables[index] = table = table.to(values.device)
        if rows is not None:
            table = table.view(-1, row_size)[rows].flatten()
        self._buffer.index_add_(0, table, values.to(self._buffer.dtype).flatten())

    def take(self) -> Float[Tensor, " sketch"]:
        """Return the finished sketch and reset the running buffer."""
        out = (self._buffer[: self.k] - self._buffer[self.k :]).cpu()
        self._buffer.zero_()
        return out

    def sketch(self, parts: Sequence[Tensor]) -> Float[Tensor, " sketch"]:
        """Sketch the concatenation of ``parts`` (one dense tensor per table)."""
        if len(parts) != len(self.tables):
            raise ValueError(f"CountSketch: {len(parts)} tensors for {len(self.tables)} tables")
        for i, part in enumerate(parts):
            if part.numel() != self.sizes[i]:
                raise ValueError(f"CountSketch: tensor {i} has {part.numel()} values, "
                                 f"expected {self.sizes[i]}")
            self.add(i, part.detach().flatten())
        return self.take()


def cosine_error(approx: Float[Tensor, "example example"], exact: Float[Tensor, "example example"]
                 ) -> dict[str, float]:
    """Max and mean absolute difference over the off-diagonal entries."""
    n = exact.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    diff = (approx - exact).abs()[off]
    if diff.numel() == 0:
        return {"max_abs": 0.0, "mean_abs": 0.0, "n_pairs": 0.0}
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "n_pairs": float(n * (n - 1) // 2)}


def null_band(values: Tensor, q: float = 0.95) -> tuple[Tensor, Tensor]:
    """Central ``q`` quantile band over the first axis (e.g. random directions)."""
    lo = (1 - q) / 2
    return values.quantile(lo, dim=0), values.quantile(1 - lo, dim=0)


def expected_abs_cosine_random(d: int) -> float:
    """E|cos| between two independent random directions in R^d (≈ sqrt(2 / (π d)))."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)

"""Geometry shared by the erosion analyses: cosines, block statistics, sketches and nulls.

- :func:`cosine_matrix` / :func:`masked_cosine_matrix` (cosines over the positions two vectors
  both have, for loss vectors of unequal length).
- :func:`block_statistics`: mean within-group vs between-group cosine (diagonal excluded) and a
  label-permutation p-value for "within > between" — the block structure the paper reads off
  its heatmaps, as a number with a test.
- :class:`CountSketch`: a seeded count-sketch of a long vector (all-parameter gradients) into
  ``k`` dimensions; inner products are unbiased, error ~ ‖a‖‖b‖/√k.
- Nulls: :func:`random_unit_directions` (bands for projections) and
  :func:`random_subspace_max_cosine` (expected max |cos| between random k-dim subspaces).

Example:
    >>> import torch
    >>> from mi_align.geometry import cosine_matrix, block_statistics
    >>> x = torch.randn(10, 8)
    >>> stats = block_statistics(cosine_matrix(x), [0] * 5 + [1] * 5, n_permutations=99)
    >>> 0.0 < stats.p_value <= 1.0
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
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


@dataclass(frozen=True)
class BlockStats:
    """Within- vs between-group mean of an example × example similarity matrix.

    ``within`` / ``between`` exclude the diagonal; ``gap = within - between``. ``p_value`` is the
    one-sided permutation p-value of the gap (labels shuffled, ``(1 + #≥) / (1 + n)``).
    ``group_within[g]`` is the mean within group g.
    """

    within: float
    between: float
    gap: float
    p_value: float
    n_permutations: int
    group_within: tuple[float, ...]
    null: str = "free permutation"  # or "within-pair swap" (paired designs)
    null_mean: float = float("nan")  # mean gap under the null
    null_sd: float = float("nan")  # its standard deviation: z = (gap - null_mean) / null_sd

    @property
    def z(self) -> float:
        return (self.gap - self.null_mean) / self.null_sd if self.null_sd > 0 else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {
            "within": self.within, "between": self.between, "gap": self.gap,
            "p_value": self.p_value, "n_permutations": self.n_permutations,
            "group_within": list(self.group_within), "null": self.null,
            "null_mean": self.null_mean, "null_sd": self.null_sd, "z": self.z,
        }


def _within_between(sim: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For a batch of one-hot label matrices ``(perm, example, group)``: mean within, between,
    and per-group within (diagonal excluded)."""
    block_sums = torch.einsum("pig,ij,pjh->pgh", onehot, sim, onehot)
    sizes = onehot.sum(1)  # (perm, group)
    diag = torch.einsum("pig,i->pg", onehot, torch.diagonal(sim))
    within_sum = torch.diagonal(block_sums, dim1=1, dim2=2) - diag
    within_n = sizes * (sizes - 1)
    total = sim.sum() - torch.diagonal(sim).sum()
    n = sim.shape[0]
    between_sum = total - within_sum.sum(1)
    between_n = n * (n - 1) - within_n.sum(1)
    group_within = within_sum / within_n.clamp_min(1)
    return within_sum.sum(1) / within_n.sum(1).clamp_min(1), between_sum / between_n, group_within


def block_statistics(
    sim: Float[Tensor, "example example"],
    labels: Sequence[int] | Int[Tensor, " example"],
    n_permutations: int = 1000,
    seed: int = 0,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> BlockStats:
    """Within/between means of ``sim`` under ``labels`` and a permutation p-value of the gap.

    The null must fit the design. Unpaired groups: labels are shuffled freely. Paired data
    (``pairs``: example i of one dataset and example j of the other share their content, e.g.
    the same code under two framings): each pair's two labels are swapped with probability 1/2,
    so the pair structure stays in every permuted matrix and only the label effect is tested.
    A free shuffle would put the near-identical partners "between" groups and hide any effect.

    Raises:
        ValueError: fewer than two groups, a group with a single example, or ``pairs`` that do
            not cover every example exactly once with two different labels.
    """
    lab = torch.as_tensor(labels, dtype=torch.long)
    if sim.shape[0] != sim.shape[1] or lab.numel() != sim.shape[0]:
        raise ValueError(f"block_statistics: sim {tuple(sim.shape)} vs {lab.numel()} labels")
    groups, lab = torch.unique(lab, return_inverse=True)
    counts = torch.bincount(lab)
    if len(groups) < 2 or int(counts.min()) < 2:
        raise ValueError(
            f"block_statistics needs >= 2 groups of >= 2 examples, got sizes {counts.tolist()}"
        )
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    s = sim.to(torch.float64)
    g = len(groups)
    observed = torch.nn.functional.one_hot(lab, g).to(s)[None]
    w, b, gw = _within_between(s, observed)
    gap = float(w[0] - b[0])
    pair_idx = _check_pairs(pairs, lab) if pairs is not None else None
    gen = torch.Generator().manual_seed(seed)
    exceed = 0
    null_gaps = []
    chunk = 256
    for start in range(0, n_permutations, chunk):
        m = min(chunk, n_permutations - start)
        if pair_idx is None:
            perms = torch.stack([lab[torch.randperm(lab.numel(), generator=gen)] for _ in range(m)])
        else:
            flip = torch.rand(m, pair_idx.shape[0], generator=gen) < 0.5
            perms = lab.repeat(m, 1)
            a, b2 = pair_idx[:, 0], pair_idx[:, 1]
            perms[:, a] = torch.where(flip, lab[b2], lab[a])
            perms[:, b2] = torch.where(flip, lab[a], lab[b2])
        onehot = torch.nn.functional.one_hot(perms, g).to(s)
        pw, pb, _ = _within_between(s, onehot)
        null_gaps.append(pw - pb)
        exceed += int(((pw - pb) >= gap - 1e-12).sum())
    nulls = torch.cat(null_gaps)
    return BlockStats(
        within=float(w[0]), between=float(b[0]), gap=gap,
        p_value=(1 + exceed) / (1 + n_permutations), n_permutations=n_permutations,
        group_within=tuple(float(v) for v in gw[0]),
        null="free permutation" if pair_idx is None else "within-pair swap",
        null_mean=float(nulls.mean()), null_sd=float(nulls.std()) if len(nulls) > 1 else 0.0,
    )


def _check_pairs(pairs: Sequence[tuple[int, int]], lab: Tensor) -> Tensor:
    idx = torch.as_tensor(list(pairs), dtype=torch.long).reshape(-1, 2)
    flat = idx.flatten().tolist()
    if sorted(flat) != list(range(lab.numel())):
        raise ValueError(f"pairs must cover each of the {lab.numel()} examples exactly once")
    if bool((lab[idx[:, 0]] == lab[idx[:, 1]]).any()):
        raise ValueError("each pair must join two examples with different labels")
    return idx


def index_pairs(n_per_group: int) -> list[tuple[int, int]]:
    """Pairs ``(i, n + i)``: two paired datasets of ``n`` examples each, stacked in order."""
    return [(i, n_per_group + i) for i in range(n_per_group)]


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

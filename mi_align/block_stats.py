"""Block structure of a similarity matrix, with a null and an interval that fit the design.

:func:`block_statistics`: mean within-label vs between-label cosine, the block structure the
erosion paper reads off its heatmaps, as a number with a unit bootstrap interval and a
permutation test whose null fits the design: examples that share content (paired datasets,
variants of one task) form units that every relabelling and every bootstrap draw keeps whole
(:func:`block_units`; ``within-pair swap`` for paired datasets, grouped swaps for task groups,
a free permutation otherwise).

Example:
    >>> import torch
    >>> from mi_align.geometry import cosine_matrix
    >>> from mi_align.block_stats import block_statistics
    >>> x = torch.randn(10, 8)
    >>> stats = block_statistics(cosine_matrix(x), [0] * 5 + [1] * 5, n_permutations=99)
    >>> stats.null
    'free permutation'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mi_align.stats import Interval


@dataclass(frozen=True)
class BlockUnits:
    """The exchangeable units of a block design: examples that must move together.

    A unit is a connected component of the given pairs and groups: a pair, a task group, a task
    group of pairs, or a single example. ``unit[i]``: example i's unit (numbered by first
    appearance); ``crossed[u]``: unit u holds more than one label; ``strata[u]``: units with the
    same set of labels share a stratum (the bootstrap redraws a stratum's units within it).
    """

    unit: tuple[int, ...]
    crossed: tuple[bool, ...]
    strata: tuple[int, ...]

    @property
    def n_units(self) -> int:
        return len(self.crossed)

    @property
    def null(self) -> str:
        """Name of the null that fits the design (what a relabelling may do)."""
        sizes = set(torch.bincount(torch.tensor(self.unit)).tolist())
        if sizes == {1}:
            return "free permutation"
        if all(self.crossed):
            return "within-pair swap" if sizes == {2} else "within-group swap"
        if not any(self.crossed):
            return "group permutation"
        return "within-group swap + group permutation"

    def describe(self) -> str:
        sizes = torch.bincount(torch.tensor(self.unit))
        n_c = sum(self.crossed)
        return (f"{self.n_units} units of {int(sizes.min())}-{int(sizes.max())} examples "
                f"({n_c} with several labels, {self.n_units - n_c} with one)")


def block_units(
    labels: Sequence[int] | Int[Tensor, " example"],
    pairs: Sequence[tuple[int, int]] | None = None,
    groups: Sequence[int] | None = None,
) -> BlockUnits:
    """Units of a design: the components of ``pairs`` (examples i and j share their content)
    and ``groups`` (``groups[i]``: example i's task, e.g. variants of one template).

    Raises:
        ValueError: ``pairs`` that do not cover every example once with two different labels,
            or ``groups`` of the wrong length.
    """
    lab = torch.as_tensor(labels, dtype=torch.long)
    n = lab.numel()
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    links = _check_pairs(pairs, lab).tolist() if pairs is not None else []
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} examples")
        first: dict[int, int] = {}
        links += [[first.setdefault(int(g), i), i] for i, g in enumerate(groups)]
    for a, b in links:
        parent[find(a)] = find(b)
    index: dict[int, int] = {}
    unit = [index.setdefault(find(i), len(index)) for i in range(n)]
    label_sets: list[set[int]] = [set() for _ in index]
    for u, lb in zip(unit, lab.tolist(), strict=True):
        label_sets[u].add(lb)
    keys: dict[tuple[int, ...], int] = {}
    strata = tuple(keys.setdefault(tuple(sorted(s)), len(keys)) for s in label_sets)
    return BlockUnits(tuple(unit), tuple(len(s) > 1 for s in label_sets), strata)


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


@dataclass(frozen=True)
class BlockStats:
    """Within- vs between-label means of an example × example similarity matrix, tested.

    ``within`` / ``between`` / ``gap`` (= within - between) and ``group_within[g]`` describe
    every off-diagonal cell, as a heatmap shows them. ``tested_gap`` is within - between over
    the cells that join two different units (:class:`BlockUnits`): a cell inside a unit (a
    pair's partners, two variants of one task) keeps its within/between status under every
    relabelling of the null, so it carries no evidence about the labels. With single-example
    units ``tested_gap == gap``. ``p_value`` is the one-sided p of ``tested_gap`` under ``null``
    (exact over all ``n_permutations`` relabellings when ``exact``, else ``(1 + #≥) / (1 + n)``);
    ``null_mean`` / ``null_sd`` / ``null_low`` / ``null_high`` (central 95%) summarise the null
    distribution; ``interval`` is the unit bootstrap of ``tested_gap`` (None if ``n_boot=0``).
    """

    within: float
    between: float
    gap: float
    p_value: float
    n_permutations: int
    group_within: tuple[float, ...]
    null: str = "free permutation"
    null_mean: float = float("nan")
    null_sd: float = float("nan")
    tested_gap: float = float("nan")
    interval: Interval | None = None
    exact: bool = False
    null_low: float = float("nan")
    null_high: float = float("nan")
    design: str = ""

    @property
    def z(self) -> float:
        """(tested_gap - null_mean) / null_sd."""
        if not self.null_sd > 0:
            return float("nan")
        return (self.tested_gap - self.null_mean) / self.null_sd

    def to_dict(self) -> dict[str, object]:
        return {
            "within": self.within, "between": self.between, "gap": self.gap,
            "tested_gap": self.tested_gap,
            "interval": self.interval.to_dict() if self.interval else None,
            "null": self.null, "design": self.design, "p_value": self.p_value,
            "exact": self.exact, "n_permutations": self.n_permutations,
            "null_mean": self.null_mean, "null_sd": self.null_sd, "null_low": self.null_low,
            "null_high": self.null_high, "z": self.z, "group_within": list(self.group_within),
        }


def _cross_unit_gaps(sim: Tensor, across: Tensor, weighted: Tensor) -> Tensor:
    """Within - between over cross-unit cells for a batch of weighted one-hot labels
    ``(draw, example, label)`` (weights: how often each example is drawn; 1 for a relabelling).
    NaN where a draw has no cross-unit cell of a kind."""
    m, n, g = weighted.shape
    per_label = weighted.transpose(1, 2).reshape(m * g, n)
    w = weighted.sum(-1)

    def within_total(mat: Tensor) -> tuple[Tensor, Tensor]:  # Σ_g v_gᵀ M v_g and wᵀ M w
        return (((per_label @ mat) * per_label).reshape(m, -1).sum(1),
                ((w @ mat) * w).sum(1))

    within_s, total_s = within_total(sim * across)
    within_n, total_n = within_total(across)
    return within_s / within_n - (total_s - within_s) / (total_n - within_n)


class _Relabeller:
    """Relabellings that keep every unit whole: a unit with several labels permutes its labels
    among its members (a swap for two); one-label units permute their labels among themselves
    (a free shuffle when every unit is one example)."""

    def __init__(self, lab: Tensor, units: BlockUnits) -> None:
        self.lab, unit = lab, torch.tensor(units.unit)
        self.crossed = []  # (members, their unit's label set, index of each label in the set)
        for u in (u for u, c in enumerate(units.crossed) if c):
            members = (unit == u).nonzero().flatten()
            labset = lab[members].unique()
            self.crossed.append((members, labset, torch.searchsorted(labset, lab[members])))
        # Two-label units (the usual case) are swapped in one vectorised step.
        two = [k for k, c in enumerate(self.crossed) if len(c[1]) == 2]
        self.two = len(two)
        self.two_members = torch.cat([self.crossed[k][0] for k in two]) if two else unit[:0]
        self.two_slot = torch.cat([torch.full_like(self.crossed[k][0], j)
                                   for j, k in enumerate(two)]) if two else unit[:0]
        self.two_other = torch.cat([self.crossed[k][1][1 - self.crossed[k][2]]
                                    for k in two]) if two else unit[:0]
        self.many = [c for c in self.crossed if len(c[1]) > 2]
        nested = {u: k for k, u in enumerate(u for u, c in enumerate(units.crossed) if not c)}
        self.members = torch.tensor([i for i, u in enumerate(units.unit) if u in nested],
                                    dtype=torch.long)
        self.slot = unit[self.members].apply_(nested.__getitem__)
        first = {u: i for i, u in reversed(list(enumerate(units.unit)))}
        self.nested_label = lab[[first[u] for u in nested]] if nested else unit[:0]

    def count(self) -> int:
        """Number of distinct relabellings."""
        out = math.prod(math.factorial(len(s)) for _, s, _ in self.crossed)
        sizes = torch.bincount(self.nested_label).tolist() if len(self.nested_label) else []
        return out * math.factorial(sum(sizes)) // math.prod(math.factorial(c) for c in sizes)

    def sample(self, m: int, gen: torch.Generator) -> Tensor:
        out = self.lab.repeat(m, 1)
        if self.two:
            flip = (torch.rand(m, self.two, generator=gen) < 0.5)[:, self.two_slot]
            out[:, self.two_members] = torch.where(flip, self.two_other,
                                                   self.lab[self.two_members])
        for members, labset, local in self.many:
            perm = torch.argsort(torch.rand(m, len(labset), generator=gen), dim=1)
            out[:, members] = labset[perm][:, local]
        if len(self.nested_label):
            order = torch.argsort(torch.rand(m, len(self.nested_label), generator=gen), dim=1)
            out[:, self.members] = self.nested_label[order][:, self.slot]
        return out

    def enumerate(self) -> Tensor:
        options = [[labset[list(p)][local] for p in itertools.permutations(range(len(labset)))]
                   for _, labset, local in self.crossed]
        nested = self.nested_label.tolist()
        options.append([torch.tensor(a, dtype=torch.long)[self.slot]
                        for a in _arrangements(nested)] if nested else [None])
        rows = []
        for combo in itertools.product(*options):
            row = self.lab.clone()
            for (members, _, _), values in zip(self.crossed, combo[:-1], strict=True):
                row[members] = values
            if combo[-1] is not None:
                row[self.members] = combo[-1]
            rows.append(row)
        return torch.stack(rows)


def _arrangements(items: list[int]) -> list[tuple[int, ...]]:
    """Every distinct ordering of the multiset ``items``."""
    if not items:
        return [()]
    rest = {v: [*items[: items.index(v)], *items[items.index(v) + 1:]] for v in set(items)}
    return [(v, *tail) for v in sorted(rest) for tail in _arrangements(rest[v])]


def unit_bootstrap_counts(units: BlockUnits, n_boot: int, seed: int = 0
                          ) -> Int[Tensor, "_ _"]:
    """(n_boot, n_units): how often each unit is drawn when every stratum's units are drawn
    with replacement, as many as it holds (``torch.randint`` per stratum, in stratum order)."""
    gen = torch.Generator().manual_seed(seed)
    strata = torch.tensor(units.strata)
    counts = torch.zeros(n_boot, units.n_units, dtype=torch.long)
    for s in range(int(strata.max()) + 1):
        members = (strata == s).nonzero().flatten()
        draws = torch.randint(len(members), (n_boot, len(members)), generator=gen)
        counts[:, members] += torch.zeros_like(draws).scatter_add_(1, draws,
                                                                   torch.ones_like(draws))
    return counts


def block_statistics(
    sim: Float[Tensor, "example example"],
    labels: Sequence[int] | Int[Tensor, " example"],
    n_permutations: int = 1000,
    seed: int = 0,
    pairs: Sequence[tuple[int, int]] | None = None,
    groups: Sequence[int] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
) -> BlockStats:
    """Within/between means of ``sim`` under ``labels``, tested under the null that fits.

    The design decides the null (named in the result). Examples that share content must move
    together, or their shared content passes for a label effect or hides one: ``pairs`` (example
    i of one dataset and j of the other share a response or a request) and ``groups`` (several
    examples are variants of one task) join examples into units (:func:`block_units`).

    - single-example units: labels shuffled freely ("free permutation");
    - units holding both labels (pairs; task groups of pairs): each unit's labels swapped with
      probability 1/2 ("within-pair swap" / "within-group swap");
    - units holding one label (tasks nested in a dataset): unit labels permuted among units
      ("group permutation"); a mix of both kinds gets both moves.

    The statistic is within - between over cross-unit cells (``tested_gap``; see
    :class:`BlockStats`). When at most ``n_permutations`` distinct relabellings exist they are
    all enumerated (exact p). The interval is a percentile bootstrap over units: each stratum of
    units (same label set) is redrawn with replacement and a unit drawn c times weighs c; cells
    joining two copies of one unit are left out, as cells inside a unit are.

    Raises:
        ValueError: fewer than two labels, a label with a single example, bad ``pairs`` /
            ``groups``, or a design with no cross-unit cell within a label or between labels.
    """
    lab = torch.as_tensor(labels, dtype=torch.long)
    if sim.shape[0] != sim.shape[1] or lab.numel() != sim.shape[0]:
        raise ValueError(f"block_statistics: sim {tuple(sim.shape)} vs {lab.numel()} labels")
    names, lab = torch.unique(lab, return_inverse=True)
    counts = torch.bincount(lab)
    if len(names) < 2 or int(counts.min()) < 2:
        raise ValueError(
            f"block_statistics needs >= 2 groups of >= 2 examples, got sizes {counts.tolist()}"
        )
    if n_permutations < 1 or n_boot < 0 or not 0 < level < 1:
        raise ValueError(f"need n_permutations >= 1, n_boot >= 0, 0 < level < 1; got "
                         f"{n_permutations}, {n_boot}, {level}")
    units = block_units(lab, pairs, groups)
    s = sim.to(torch.float64)
    g = len(names)
    unit = torch.tensor(units.unit)
    across = (unit[:, None] != unit[None]).to(s)
    off = ~torch.eye(len(lab), dtype=torch.bool)
    same = (lab[:, None] == lab[None]) & off
    gw = [float(s[same & (lab == k)[:, None]].mean()) for k in range(g)]

    def gaps(rows: Tensor, weights: Tensor | None = None) -> Tensor:
        onehot = torch.nn.functional.one_hot(rows, g).to(s)
        return _cross_unit_gaps(s, across, onehot if weights is None else
                                onehot * weights[..., None].to(s))

    tested = float(gaps(lab[None])[0])
    if math.isnan(tested):
        raise ValueError(f"block_statistics: every within-label (or between-label) cell lies "
                         f"inside one unit ({units.describe()}); nothing is left to test")
    relabel = _Relabeller(lab, units)
    exact = relabel.count() <= n_permutations
    gen = torch.Generator().manual_seed(seed)
    chunk = 256
    if exact:
        table = relabel.enumerate()
        nulls = torch.cat([gaps(table[i:i + chunk]) for i in range(0, len(table), chunk)])
    else:
        nulls = torch.cat([gaps(relabel.sample(min(chunk, n_permutations - i), gen))
                           for i in range(0, n_permutations, chunk)])
    hits = int((nulls >= tested - 1e-9 * (1 + abs(tested))).sum())
    p = hits / len(nulls) if exact else (1 + hits) / (1 + len(nulls))
    interval = None
    if n_boot:
        weights = unit_bootstrap_counts(units, n_boot, seed)[:, unit]
        boot = torch.cat([gaps(lab.repeat(len(wt), 1), wt)
                          for wt in weights.split(chunk)])
        ok = boot[~boot.isnan()]
        lo, hi = (torch.quantile(ok, torch.tensor([(1 - level) / 2, (1 + level) / 2],
                                                  dtype=ok.dtype)).tolist()
                  if len(ok) else (math.nan, math.nan))
        dropped = f", {n_boot - len(ok)} undefined resamples dropped" if len(ok) < n_boot else ""
        interval = Interval(tested, lo, hi, f"unit bootstrap (percentile, {units.n_units} units "
                            f"in {max(units.strata) + 1} strata, {n_boot} resamples{dropped})",
                            level)
    q = torch.quantile(nulls, torch.tensor([0.025, 0.975], dtype=nulls.dtype)).tolist()
    return BlockStats(
        within=float(s[same].mean()), between=float(s[~same & off].mean()),
        gap=float(s[same].mean() - s[~same & off].mean()), p_value=p,
        n_permutations=len(nulls), group_within=tuple(gw),
        null=units.null, null_mean=float(nulls.mean()),
        null_sd=float(nulls.std()) if len(nulls) > 1 else 0.0, tested_gap=tested,
        interval=interval, exact=exact, null_low=q[0], null_high=q[1], design=units.describe(),
    )

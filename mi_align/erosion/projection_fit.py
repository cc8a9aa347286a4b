"""Resampling machinery of the layerwise projection (:mod:`mi_align.erosion.projection`).

The projection is refitted many times: once per group-bootstrap replicate (groups drawn with
replacement within each part, fit and evaluation alike) and once per grouped label swap. Every
refit is a weighted mean of per-example activations, so replicates are batched as a
(replicate, example) weight matrix; these helpers do that algebra. Kept apart from the analysis
so the analysis module reads as config → fit → project → result.

Example:
    >>> import torch
    >>> unit_directions(torch.ones(2, 3), torch.zeros(2, 3)).norm(dim=1)
    tensor([1., 1.], dtype=torch.float64)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from mi_align.erosion.projection import ProjectionConfig

EPS = 1e-9
CHUNK = 50

def nan_none(t: Tensor) -> object:  # noqa: D103
    """Nested lists with NaN/inf as None (valid JSON)."""
    data = t.tolist()

    def fix(x: object) -> object:
        if isinstance(x, list):
            return [fix(v) for v in x]
        return None if isinstance(x, float) and not math.isfinite(x) else x

    return fix(data)


def nanquantile(reps: Tensor, q: float) -> Tensor:
    if reps.numel() == 0:
        return reps.new_zeros(reps.shape[1:], dtype=torch.float64)
    return torch.nanquantile(reps.to(torch.float64).nan_to_num(math.nan, math.nan, math.nan),
                             q, dim=0)


def separations(mean: Tensor, std: Tensor, models: Sequence[str],
                 pairs: Sequence[tuple[str, str]]) -> Tensor:
    """(..., pair, layer) separations from (..., model, layer) means and stds."""
    if not pairs:
        return mean.new_zeros(*mean.shape[:-2], 0, mean.shape[-1])
    out = []
    for a, b in pairs:
        ia, ib = models.index(a), models.index(b)
        out.append((mean[..., ib, :] - mean[..., ia, :]) / (std[..., ia, :] + std[..., ib, :]))
    return torch.stack(out, -2)


def relative(mean: Tensor, models: Sequence[str]) -> Tensor | None:
    if not {"base", "instruct", "misaligned"} <= set(models):
        return None
    b, i, m = (mean[..., models.index(n), :] for n in ("base", "instruct", "misaligned"))
    return (m - b) / (i - b)


def unit_directions(
    pos: Float[Tensor, "layer d_model"], neg: Float[Tensor, "layer d_model"], eps: float = 1e-9
) -> Float[Tensor, "layer d_model"]:
    """``normalise(pos − neg)`` per layer; rows with a (near-)zero difference become NaN."""
    scale = torch.maximum(pos.norm(dim=1), neg.norm(dim=1)).to(torch.float64)
    return normalise((pos - neg).to(torch.float64)[None], scale, eps)[0]


def normalise(diff: Tensor, scale: Tensor, eps: float = EPS) -> Tensor:
    """(rep, layer, d_model) differences → unit rows; NaN where ``‖diff‖ <= eps·max(scale, 1)``."""
    norm = diff.norm(dim=-1, keepdim=True)
    bad = norm <= eps * scale.clamp_min(1.0)[None, :, None]
    return (diff / norm).masked_fill(bad, math.nan)


@dataclass(frozen=True)
class Part:
    """Examples resampled together: ``rows`` of one activation tensor, group label per row."""

    rows: Tensor
    labels: Tensor
    n_groups: int


def make_part(rows: Sequence[int], keys: Sequence[Hashable]) -> Part:
    index: dict[Hashable, int] = {}
    labels = [index.setdefault(keys[r], len(index)) for r in rows]
    return Part(torch.tensor(list(rows), dtype=torch.long), torch.tensor(labels), len(index))


def wmean(y: Tensor, w: Tensor) -> Tensor:
    """(rows, layer, d) with (rep, rows) weights → (rep, layer, d)."""
    return torch.einsum("rn,nld->rld", w, y) / w.sum(1)[:, None, None]


def moments(proj: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(rep, rows, layer) projections, (rep, rows) weights → weighted mean and population std."""
    wn = w / w.sum(1, keepdim=True)
    mean = torch.einsum("rn,rnl->rl", wn, proj)
    var = torch.einsum("rn,rnl->rl", wn, (proj - mean[:, None]) ** 2)
    return mean, var.clamp_min(0.0).sqrt()


def swap_null(
    acts: dict[str, Tensor], models: Sequence[str], pairs: Sequence[tuple[str, str]],
    keys: Sequence[Hashable], parts: dict[str, Part], folds: list, scale: Tensor,
    observed: Tensor, direction_pair: tuple[str, ...] | None, cfg: ProjectionConfig,
) -> tuple[Tensor, bool, int]:
    """Grouped label-swap p-values per pair and layer (see :data:`SWAP_NULL`).

    Swapping models a and b in a set of groups replaces, for those examples, each model's
    activations by its partner's; the direction's fit terms are linear in the swap indicators,
    so every swapped refit is ``Σ diff + Σ_swapped Δ`` (Δ = swapped diff − diff). Exact over all
    2^G patterns when 2^G <= n_perm, else ``n_perm`` random patterns (``seed + 1``).
    """
    index: dict[Hashable, int] = {}
    labels = torch.tensor([index.setdefault(k, len(index)) for k in keys])
    n_groups = len(index)
    exact = 2 ** n_groups <= cfg.n_perm
    if exact:
        patterns = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n_groups)),
                                dtype=torch.float64)
    else:
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        patterns = torch.randint(0, 2, (cfg.n_perm, n_groups), generator=gen).double()
    p_values = []
    for p_idx, (a, b) in enumerate(pairs):
        swap = {a: b, b: a}
        delta = None
        if direction_pair is not None:
            pos, neg = direction_pair
            swapped = acts[swap.get(pos, pos)] - acts[swap.get(neg, neg)]
            delta = swapped - (acts[pos] - acts[neg])
        stats = []
        for c in range(0, len(patterns), CHUNK):
            s_all = patterns[c : c + CHUNK][:, labels]  # (rep, example)
            pa_list, pb_list, s_list = [], [], []
            for ev, terms in folds:
                fitted = 0.0
                for y, part, sign in terms:
                    rows = parts[part].rows
                    term = y[rows].mean(0)[None]
                    if delta is not None and part in ("A", "B"):
                        term = term + torch.einsum("rn,nld->rld", s_all[:, rows],
                                                   delta[rows]) / len(rows)
                    fitted = fitted + sign * term
                v = normalise(fitted.expand(len(s_all), -1, -1), scale)  # type: ignore[union-attr]
                rows = parts[ev].rows
                pa_list.append(torch.einsum("nld,rld->rnl", acts[a][rows], v))
                pb_list.append(torch.einsum("nld,rld->rnl", acts[b][rows], v))
                s_list.append(s_all[:, rows])
            pa, pb, s = torch.cat(pa_list, 1), torch.cat(pb_list, 1), torch.cat(s_list, 1)
            # swapped examples contribute (a − b) instead of (b − a): mean paired difference
            stats.append(((1 - 2 * s)[..., None] * (pb - pa)).mean(1))
        null = torch.cat(stats).abs()  # (rep, layer)
        obs = observed[p_idx].abs()
        hits = (null >= obs[None] * (1 - 1e-9) - 1e-12).sum(0).double()
        p = hits / len(null) if exact else (hits + 1) / (len(null) + 1)
        p_values.append(p.masked_fill(torch.isnan(obs), math.nan))
    return torch.stack(p_values), exact, len(patterns)

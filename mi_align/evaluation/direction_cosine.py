"""Cosine between steering vectors and an alignment direction, fitted on held-out data and
tested against an activation-shaped (anisotropic) null, over the residual channels that are not
massive outliers.

The question: does an optimised steering vector point along the model's own "aligned vs
misaligned" direction at its layer? Four choices make the answer mean something:

- **Fit data disjoint from the vectors.** The direction is the mean over paired examples of
  (aligned − misaligned) per-example mean residuals at the selected response tokens (default
  the first 10), on data that shares no prompt with the vectors' training prompts
  (:func:`check_disjoint` refuses otherwise). The recipe analysis uses ``toxic_reject − toxic``:
  the same harmful requests line for line, answered with a refusal vs compliantly, so the
  direction carries no topic difference (an ``aligned_chat − toxic`` direction is partly
  "harmless topic − harmful topic").
- **Reliability.** :func:`split_half_reliability`: the cosine between directions fitted on two
  disjoint halves of the groups (aims), over many random splits, with the Spearman–Brown
  estimate for the full set. A direction that does not reproduce across halves cannot carry
  a cosine. Each vector's cosine gets a 95% bootstrap interval over groups (refitting the
  direction on each resample).
- **Anisotropic null (primary).** Residual activations are far from isotropic: a few
  directions hold most of the variance, and any vector living in the activations' subspace
  has inflated cosines with any direction that does too. The null draws random vectors
  ``x ~ N(0, Σ)`` with ``Σ`` the pooled *within-class* covariance of the selected token
  activations at that layer (each class centred at its own mean, so the aligned/misaligned
  gap itself is not in the null) and reports ``P(|cos(x, d)| ≥ |cos(v, d)|)``. The isotropic
  null (uniform random directions) is kept as a secondary, labelled number.
- **Massive channels excluded (observed and null alike).** A few residual channels can carry
  variance thousands of times the median channel's (Gemma-3-270m layer 6: channel 163 at
  10,500×, channel 400 at 4,000×; 33 of 640 channels above 100×, holding 82% of the
  within-class variance). Then every ``N(0, Σ)`` draw points along them, the direction does
  too (|cos| 0.83 with the top eigenvector), and the null's 95% |cos| is 0.77: it can flag
  nothing. A :data:`ChannelRule` (default :func:`drop_massive_channels`: within-class variance
  > 100× the median channel variance) picks the channels to exclude, from ``Σ``'s diagonal
  only (never from the labels). The same coordinate projection is applied to the vectors, the
  direction (and every bootstrap refit) and each null draw ``x ~ N(0, Σ)``, so the null is
  exactly the restricted ``N(0, Σ_kept)``. Projection rather than standardising channels:
  dividing by each channel's σ would weight an isotropic random vector by up to 7× per channel
  (smallest channel variance 0.02× the median), so the norm-matched random controls would stop
  being uniform under the secondary null; dropping coordinates keeps them uniform. Full
  whitening is ill-conditioned here (eigenvalues span 10^8 from ~1,200 correlated tokens).
  :func:`all_channels` gives the old unprojected analysis.

Monte-Carlo p-values are ``(1 + #{null ≥ observed}) / (1 + n_null)``.

Example:
    >>> acts = paired_activations(loaded, aligned, misaligned, layers=[10])  # doctest: +SKIP
    >>> res = direction_cosines_heldout({"rm_rf": v}, acts, layer=10)  # doctest: +SKIP
    >>> res.p_anisotropic  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mi_align.activations import MomentAccumulator, make_selector, stream_hidden_states
from mi_align.data.chat import Conversation
from mi_align.data.tokenize import Batch, encode_dataset
from mi_align.errors import InputError, check_finite
from mi_align.models.load import Loaded
from mi_align.plotting import style

ANISOTROPIC = ("anisotropic: x ~ N(0, Σ_within) of the layer's token activations, "
               "projected onto the kept channels")
ISOTROPIC = "isotropic: uniform random directions on the kept channels (secondary)"


def vector_digest(v: Tensor) -> str:
    """SHA-256 (hex) of the vector's float32 bytes on the CPU: equal digests mean equal
    content at float32, whatever the name, device or dtype it came in."""
    data = v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def cosine_cache_key(vectors: Mapping[str, Tensor], layer: int, method: str) -> str:
    """Cache key for one layer's cosines: SHA-256 over ``method``, ``layer`` and each vector's
    name, shape and :func:`vector_digest`. A vector re-optimised under the same name, a
    renamed one or another method gives another key."""
    payload = {"method": method, "layer": int(layer),
               "vectors": [[n, list(v.shape), vector_digest(v)] for n, v in vectors.items()]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ChannelSpace:
    """The residual channels the cosines are computed over (observed and null alike), and the
    evidence for the exclusions: each channel's within-class variance over the median one's."""

    rule: str
    keep: Bool[Tensor, " d_model"]
    variance_ratio: Float[Tensor, " d_model"]

    @property
    def excluded(self) -> tuple[int, ...]:
        return tuple(int(i) for i in torch.nonzero(~self.keep).flatten())

    def project(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        """``x`` with the excluded channels zeroed (a new tensor)."""
        return x * self.keep.to(x.dtype)


ChannelRule = Callable[[Float[Tensor, "d_model d_model"]], ChannelSpace]
"""Maps the within-class covariance to the channels the cosines use."""


def _variance_ratio(cov: Tensor) -> Tensor:
    var = cov.detach().double().cpu().diagonal()
    # the usual median (mean of the two middle values for even d_model), not torch's lower one
    return var / torch.quantile(var, 0.5).clamp_min(1e-300)


def all_channels() -> ChannelRule:
    """Every channel (the raw, unprojected cosine; the null can be powerless, see above)."""

    def rule(cov: Float[Tensor, "d_model d_model"]) -> ChannelSpace:
        ratio = _variance_ratio(cov)
        return ChannelSpace("all channels", torch.ones_like(ratio, dtype=torch.bool), ratio)

    return rule


def drop_massive_channels(ratio: float = 100.0) -> ChannelRule:
    """Exclude the channels whose within-class variance exceeds ``ratio`` × the median channel
    variance (massive-activation channels)."""
    if not ratio > 1.0:
        raise ValueError(f"drop_massive_channels: ratio must be > 1, got {ratio}")

    def rule(cov: Float[Tensor, "d_model d_model"]) -> ChannelSpace:
        r = _variance_ratio(cov)
        return ChannelSpace(f"channels with within-class variance > {ratio:g}× the median "
                            "channel variance excluded", r <= ratio, r)

    return rule


def _norm_text(text: str) -> str:
    return " ".join(text.lower().split())


def check_disjoint(
    conversations: Sequence[Conversation], prompts: Sequence[str], what: str = "direction data"
) -> None:
    """Raise :class:`InputError` if any user turn of ``conversations`` is one of ``prompts``
    (the steering vectors' training prompts; compared case- and whitespace-insensitively)."""
    banned = {_norm_text(p) for p in prompts}
    for c in conversations:
        for m in c.messages:
            if m.role == "user" and _norm_text(m.content) in banned:
                raise InputError(f"{what} {c.source or ''}".strip(),
                                 "shares a prompt with a steering vector's training data",
                                 "fit the direction on disjoint data")


@dataclass(frozen=True)
class PairedActivations:
    """Per-example pooled activations of paired aligned/misaligned examples, and the pooled
    within-class covariance of the selected token activations, at ``layers``."""

    layers: tuple[int, ...]
    aligned: Float[Tensor, "example layer d_model"]
    misaligned: Float[Tensor, "example layer d_model"]
    within_cov: Float[Tensor, "layer d_model d_model"]
    groups: tuple[int, ...]  # group (aim) of each pair
    n_tokens: int
    positions: str

    def diffs(self, layer: int) -> Float[Tensor, "example d_model"]:
        """aligned − misaligned per pair at ``layer`` (float64)."""
        i = self.layers.index(layer)
        return (self.aligned[:, i] - self.misaligned[:, i]).double()

    def cov(self, layer: int) -> Float[Tensor, "d_model d_model"]:
        return self.within_cov[self.layers.index(layer)]


def _pooled_and_moments(
    loaded: Loaded, convs: Sequence[Conversation], layers: Sequence[int], positions: str,
    batch_size: int, max_length: int,
) -> tuple[Tensor, MomentAccumulator]:
    sel = make_selector(positions)
    enc = encode_dataset(loaded.tokenizer, convs, max_length)
    acc = MomentAccumulator(layers, int(loaded.meta.d_model), second=True)
    rows: list[Tensor] = []

    def consume(batch: Batch, acts: dict[int, Tensor]) -> None:
        mask = sel(batch)
        counts = mask.sum(1)
        if bool((counts == 0).any()):
            raise InputError("paired_activations", "an example has no selected token",
                             "use examples with a non-empty response")
        acc.update(batch, acts, mask)
        w = mask.to(torch.float64) / counts[:, None]
        rows.append(torch.stack([torch.einsum("bp,bpd->bd", w, acts[la].double())
                                 for la in layers], 1).cpu())

    stream_hidden_states(loaded, enc, list(layers), consume, batch_size)
    return torch.cat(rows, 0), acc


def paired_activations(
    loaded: Loaded,
    aligned: Sequence[Conversation],
    misaligned: Sequence[Conversation],
    layers: Sequence[int],
    positions: str = "first:10",
    groups: Sequence[int] | None = None,
    batch_size: int = 8,
    max_length: int = 192,
) -> PairedActivations:
    """One streaming pass per set: pooled per-example activations and token moments.

    ``aligned[i]`` and ``misaligned[i]`` are a pair (e.g. the same request refused vs
    complied with); ``groups[i]`` (default: each pair its own group) ties pairs that must stay
    together in splits and resamples (the two phrasings of one aim).
    """
    if len(aligned) != len(misaligned) or len(aligned) < 4:
        raise InputError("paired_activations", f"{len(aligned)} aligned vs {len(misaligned)} "
                         "misaligned examples", "pass at least 4 line-for-line pairs")
    groups = tuple(range(len(aligned))) if groups is None else tuple(groups)
    if len(groups) != len(aligned):
        raise InputError("paired_activations", "groups must have one entry per pair",
                         f"pass {len(aligned)} group ids")
    layers = tuple(layers)
    pa, acc_a = _pooled_and_moments(loaded, aligned, layers, positions, batch_size, max_length)
    pm, acc_m = _pooled_and_moments(loaded, misaligned, layers, positions, batch_size,
                                    max_length)
    ma, mm = acc_a.result(), acc_m.result()
    assert ma.cov is not None and mm.cov is not None
    within = (ma.count * ma.cov + mm.count * mm.cov) / (ma.count + mm.count)
    check_finite(within, "paired_activations: within-class covariance")
    return PairedActivations(layers, pa, pm, within, groups, ma.count + mm.count, positions)


def unit(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(1e-300)


def fit_direction(diffs: Float[Tensor, "example d_model"]) -> Float[Tensor, " d_model"]:
    """Unit mean of the paired differences."""
    return unit(diffs.double().mean(0))


def null_abs_cosines(
    direction: Float[Tensor, " d_model"],
    n_null: int = 10_000,
    seed: int = 0,
    cov: Float[Tensor, "d_model d_model"] | None = None,
    keep: Bool[Tensor, " d_model"] | None = None,
) -> np.ndarray:
    """|cos(x, direction)| for ``n_null`` random ``x``: ``N(0, cov)`` (anisotropic) or, with
    ``cov=None``, ``N(0, I)`` (isotropic: uniform directions). With ``keep``, ``x`` and the
    direction are both projected onto the kept channels first (the excluded ones zeroed), as
    the observed vectors are; for ``N(0, Σ)`` that is exactly ``N(0, Σ_kept)``."""
    d = direction.detach().double().cpu()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_null, d.shape[0], generator=gen, dtype=torch.float64)
    if cov is not None:
        evals, evecs = torch.linalg.eigh(cov.detach().double().cpu())
        z = (z * evals.clamp_min(0.0).sqrt()) @ evecs.T
    if keep is not None:
        mask = keep.detach().cpu().to(torch.float64)
        d, z = d * mask, z * mask
    return ((z @ unit(d)).abs() / z.norm(dim=1).clamp_min(1e-300)).numpy()


def mc_p_value(null: np.ndarray, observed: float) -> float:
    """``(1 + #{null ≥ |observed|}) / (1 + n)`` (never 0)."""
    return float((1 + (null >= abs(observed)).sum()) / (1 + null.size))


@dataclass(frozen=True)
class Reliability:
    """Cosine between directions fitted on two disjoint halves of the groups, over
    ``n_splits`` random splits: mean and 2.5–97.5% range; ``spearman_brown`` = 2r/(1+r)."""

    mean: float
    low: float
    high: float
    spearman_brown: float
    n_splits: int


def split_half_reliability(
    diffs: Float[Tensor, "example d_model"],
    groups: Sequence[int],
    n_splits: int = 200,
    seed: int = 0,
) -> Reliability:
    """Split-half reliability of the mean-difference direction (splits keep groups whole)."""
    ids = sorted(set(groups))
    if len(ids) < 2:
        raise InputError("split_half_reliability", "needs at least 2 groups", "pass more data")
    g = torch.tensor(list(groups))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_splits):
        perm = rng.permutation(ids)
        first = torch.isin(g, torch.tensor(perm[: len(ids) // 2]))
        a, b = fit_direction(diffs[first]), fit_direction(diffs[~first])
        vals.append(float(a @ b))
    r = float(np.mean(vals))
    return Reliability(r, float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975)),
                       2 * r / (1 + r) if r > -1 else float("nan"), n_splits)


@dataclass(frozen=True)
class DirectionCosineResult:
    """Per vector: cosine with the held-out direction, 95% bootstrap interval over groups,
    p under the anisotropic null (primary) and the isotropic null (secondary); all computed
    over the kept channels (``channel_rule``; the excluded channels with their within-class
    variance / median channel variance; ``excluded_variance_share`` of the within-class
    variance they held). ``null_q95_anisotropic_all_channels`` is the 95% |cos| the same null
    draws give without the projection, the evidence for it. Reliability is of the projected
    direction."""

    layer: int
    names: tuple[str, ...]
    cosines: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    p_anisotropic: tuple[float, ...]
    p_isotropic: tuple[float, ...]
    null_q95_anisotropic: float
    null_q95_isotropic: float
    reliability: Reliability
    n_pairs: int
    n_groups: int
    n_tokens: int
    n_null: int
    n_boot: int
    positions: str
    channel_rule: str
    n_channels: int
    excluded_channels: tuple[int, ...]
    excluded_variance_ratio: tuple[float, ...]
    excluded_variance_share: float
    null_q95_anisotropic_all_channels: float
    direction_label: str = "aligned − misaligned"
    primary_null: str = ANISOTROPIC
    secondary_null: str = ISOTROPIC

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for k, v in vars(self).items():
            out[k] = (list(v) if isinstance(v, tuple) else vars(v) if isinstance(v, Reliability)
                      else v)
        return out


def direction_cosines_heldout(
    vectors: Mapping[str, Float[Tensor, " d_model"]],
    acts: PairedActivations,
    layer: int,
    n_null: int = 10_000,
    n_boot: int = 1000,
    n_splits: int = 200,
    seed: int = 0,
    direction_label: str = "aligned − misaligned",
    channels: ChannelRule | None = None,
) -> DirectionCosineResult:
    """Cosine of each vector with the direction fitted on ``acts`` at ``layer``, with a
    bootstrap interval, split-half reliability and both nulls (see the module docstring).

    ``channels`` (default :func:`drop_massive_channels` at 100×) picks the channels from the
    layer's within-class covariance; the vectors, the direction, its bootstrap refits and the
    null draws are all projected onto them. The channels stay fixed over the bootstrap: they
    come from token-level variances, not from the paired differences being resampled.
    """
    if not vectors:
        raise InputError("direction_cosines_heldout", "no vectors given", "pass one or more")
    if layer not in acts.layers:
        raise InputError("direction_cosines_heldout", f"layer {layer} not in {acts.layers}",
                         "collect activations at the vectors' layer")
    cov = acts.cov(layer)
    space = (channels or drop_massive_channels())(cov)
    if not bool(space.keep.any()):
        raise InputError("direction_cosines_heldout", f"{space.rule}: no channel kept",
                         "use a looser channel rule")
    raw_diffs = acts.diffs(layer)
    diffs = space.project(raw_diffs)
    direction = fit_direction(diffs)
    names = tuple(vectors)
    vs = []
    for n in names:
        v = vectors[n].detach().double().cpu()
        if v.shape != direction.shape:
            raise InputError(f"vector {n}", f"has shape {tuple(v.shape)}, the direction "
                             f"{tuple(direction.shape)}", "compare vectors of the same model")
        check_finite(v, f"direction_cosines_heldout: vector {n}")
        vs.append(unit(space.project(v)))
    V = torch.stack(vs)
    cos = (V @ direction).tolist()
    # Bootstrap over groups (aims): resample groups with replacement, refit, recompute.
    g = np.asarray(acts.groups)
    ids = np.unique(g)
    members = [np.flatnonzero(g == i) for i in ids]
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, len(names)))
    for b in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        boots[b] = (V @ fit_direction(diffs[torch.from_numpy(idx)])).numpy()
    aniso = null_abs_cosines(direction, n_null, seed, cov, space.keep)
    iso = null_abs_cosines(direction, n_null, seed + 1, None, space.keep)
    # The same draws without the projection: what the null looked like before (the evidence).
    aniso_all = null_abs_cosines(fit_direction(raw_diffs), n_null, seed, cov)
    var = cov.detach().double().cpu().diagonal()
    ex = space.excluded
    return DirectionCosineResult(
        layer=layer, names=names, cosines=tuple(cos),
        ci_low=tuple(float(x) for x in np.quantile(boots, 0.025, axis=0)),
        ci_high=tuple(float(x) for x in np.quantile(boots, 0.975, axis=0)),
        p_anisotropic=tuple(mc_p_value(aniso, c) for c in cos),
        p_isotropic=tuple(mc_p_value(iso, c) for c in cos),
        null_q95_anisotropic=float(np.quantile(aniso, 0.95)),
        null_q95_isotropic=float(np.quantile(iso, 0.95)),
        reliability=split_half_reliability(diffs, acts.groups, n_splits, seed),
        n_pairs=int(diffs.shape[0]), n_groups=len(ids), n_tokens=acts.n_tokens, n_null=n_null,
        n_boot=n_boot, positions=acts.positions, channel_rule=space.rule,
        n_channels=int(space.keep.sum()), excluded_channels=ex,
        excluded_variance_ratio=tuple(float(space.variance_ratio[i]) for i in ex),
        excluded_variance_share=float(var[list(ex)].sum() / var.sum()) if ex else 0.0,
        null_q95_anisotropic_all_channels=float(np.quantile(aniso_all, 0.95)),
        direction_label=direction_label,
    )


def plot_direction_cosine(res: DirectionCosineResult) -> go.Figure:
    """Cosines with 95% bootstrap bars; the anisotropic null's 95% |cos| band shaded, the
    isotropic one dotted. Range [-1, 1]. The title names the channel rule and the excluded
    channels (most massive first)."""
    fig = go.Figure()
    qa, qi = res.null_q95_anisotropic, res.null_q95_isotropic
    fig.add_hrect(y0=-qa, y1=qa, fillcolor="grey", opacity=0.25, line_width=0,
                  annotation_text="anisotropic null 95%", annotation_position="top left")
    for q in (-qi, qi):
        fig.add_hline(y=q, line_dash="dot", line_color="black")
    fig.add_trace(go.Scatter(
        x=list(res.names), y=list(res.cosines), mode="markers", marker={"size": 10},
        error_y={"type": "data", "symmetric": False,
                 "array": [h - c for h, c in zip(res.ci_high, res.cosines, strict=True)],
                 "arrayminus": [c - lo for lo, c in zip(res.ci_low, res.cosines, strict=True)]},
        customdata=np.stack([res.p_anisotropic, res.p_isotropic], 1),
        hovertemplate="%{x}: cos %{y:.3f}<br>p anisotropic %{customdata[0]:.3g}<br>"
        "p isotropic (secondary) %{customdata[1]:.3g}<extra></extra>", name="cosine"))
    fig.update_yaxes(range=[-1, 1])
    r = res.reliability
    rel = f"split-half r = {r.mean:.2f} [{r.low:.2f}, {r.high:.2f}]"
    ex = [c for _, c in sorted(zip(res.excluded_variance_ratio, res.excluded_channels,
                                   strict=True), reverse=True)]  # the most massive first
    shown = ", ".join(map(str, ex[:6])) + (f", … ({len(ex)} in all)" if len(ex) > 6 else "")
    chans = (f"{res.channel_rule}: {shown} ({res.excluded_variance_share:.0%} of the variance; "
             f"null 95% with them {res.null_q95_anisotropic_all_channels:.2f})" if ex
             else res.channel_rule)
    title = (f"Cosine with the held-out {res.direction_label} direction, layer {res.layer} "
             f"({res.n_pairs} pairs, {rel}; dotted: isotropic null 95% = {qi:.3f})"
             f"<br><sup>Over {res.n_channels} channels, observed and null alike; {chans}</sup>")
    return style(fig, title, "vector", "cosine")

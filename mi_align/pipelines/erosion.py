"""Named erosion analyses with their default datasets, for the CLI, the scripts and the demo.

Each entry runs one analysis on a trio and returns figures with their numbers
(:class:`Output`); nothing here writes files (``write_outputs`` does, for callers that want
it). Config fields can be overridden by name with strings (``{"positions": "last"}``), parsed
by the field's type.

Running is split in two so that callers can fail fast: :func:`plan_analysis` checks the name,
``limit``, config overrides and dataset count and loads the data (no model needed), then
:func:`run_plan` runs it on a trio. Every user-caused failure is an
:class:`~mi_align.errors.InputError`.

Example:
    >>> from mi_align.pipelines.erosion import ANALYSES, run_analysis
    >>> sorted(ANALYSES)[:3]
    ['activation-similarity', 'gradients', 'logprobs']
    >>> outputs = run_analysis("logprobs", trio)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mi_align.data.chat import Conversation, load_dataset
from mi_align.erosion.activation_similarity import (
    ActivationSimilarityConfig,
    activation_similarity,
    plot_activation_similarity,
)
from mi_align.erosion.causal import (
    CausalConfig,
    direction_intervention,
    load_intervention_data,
)
from mi_align.erosion.causal_result import plot_direction_intervention
from mi_align.erosion.gradient_geometry import (
    GradientConfig,
    gradient_geometry,
    plot_gradient_geometry,
)
from mi_align.erosion.logprobs import (
    TokenLogprobConfig,
    logprob_comparison,
    plot_logprob_comparison,
    plot_token_logprobs,
    token_logprobs,
)
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors, plot_loss_vectors
from mi_align.erosion.next_token import (
    NextTokenConfig,
    next_token_comparison,
    next_token_distributions,
    plot_next_token_comparison,
    plot_next_tokens,
)
from mi_align.erosion.paired import comparison_data
from mi_align.erosion.projection import (
    ProjectionConfig,
    difference_projection,
    layer_projection,
    plot_difference_projection,
    plot_layer_projection,
)
from mi_align.erosion.svd_directions import SVDConfig, plot_svd_directions, svd_directions
from mi_align.errors import InputError, MiAlignError
from mi_align.models.trio import Trio
from mi_align.plotting import save_figure, save_json

Data = list[tuple[str, list[Conversation]]]


@dataclass(frozen=True)
class Output:
    """One figure and the numbers behind it, saved as ``<stem>.html`` / ``<stem>.json``."""

    stem: str
    figure: go.Figure
    numbers: dict[str, Any]


@dataclass(frozen=True)
class Analysis:
    name: str
    help: str
    config_cls: type
    run: Callable[[Trio, Data, Any], list[Output]]
    datasets: tuple[str, ...] = ()
    limit: int | None = None
    needs: tuple[str, ...] = ()
    contrast: tuple[str, str] = field(default=("toxic_reject", "toxic"))
    n_data: tuple[int, int | None] = (2, None)  # (min, max) datasets it compares


def _projection(trio: Trio, data: Data, cfg: ProjectionConfig) -> list[Output]:
    convs = [c for _, group in data for c in group]
    contrast = None
    if cfg.contrastive_model is not None:
        aligned, misaligned = (load_dataset(n) for n in ANALYSES["projection"].contrast)
        contrast = (aligned[:60], misaligned[:60])
    res = layer_projection(trio, convs, cfg, contrast)
    stem = "erosion_projection" + ("_contrastive" if contrast else "")
    outs = [Output(stem, plot_layer_projection(res), res.to_dict())]
    if "base" in res.models and not contrast:
        diff = difference_projection(res)
        outs.append(Output("erosion_difference_projection", plot_difference_projection(diff),
                           diff.to_dict()))
    return outs


def _logprobs(trio: Trio, data: Data, cfg: TokenLogprobConfig) -> list[Output]:
    # The single-example heatmap always (the demo reads its "joint"); the dataset comparison
    # only when compare_data names a dataset (checked and loaded before any model runs).
    compare = comparison_data(cfg.compare_data, cfg.compare_limit,
                              cfg.cluster_size) if cfg.compare_data else None
    conv = data[0][1][0] if data else None
    res = token_logprobs(trio, conv, cfg)
    outs = [Output("erosion_logprobs", plot_token_logprobs(res), res.to_dict())]
    if compare:
        cmp = logprob_comparison(trio, compare[1], cfg, compare[0])
        stem = f"erosion_logprobs_{compare[0]}"  # one file per compared dataset
        outs.append(Output(stem, plot_logprob_comparison(cmp), cmp.to_dict()))
    return outs


def _next_token(trio: Trio, data: Data, cfg: NextTokenConfig) -> list[Output]:
    compare = comparison_data(cfg.compare_data, cfg.compare_limit,
                              cfg.cluster_size) if cfg.compare_data else None
    res = next_token_distributions(trio, cfg)
    outs = [Output("erosion_next_token", plot_next_tokens(res), res.to_dict())]
    if compare:
        cmp = next_token_comparison(trio, compare[1], cfg, compare[0])
        outs.append(Output(f"erosion_next_token_{compare[0]}", plot_next_token_comparison(cmp),
                           cmp.to_dict()))
    return outs


def _loss(trio: Trio, data: Data, cfg: LossVectorConfig) -> list[Output]:
    res = loss_vectors(trio, data, cfg)
    return [Output("erosion_loss_vectors", plot_loss_vectors(res), res.to_dict())]


def _gradients(trio: Trio, data: Data, cfg: GradientConfig) -> list[Output]:
    res = gradient_geometry(trio, data, cfg)
    suffix = {"last_o_proj": "", "all": "_all"}.get(cfg.params, "_custom")
    return [Output(f"erosion_gradients{suffix}", plot_gradient_geometry(res), res.to_dict())]


def _activations(trio: Trio, data: Data, cfg: ActivationSimilarityConfig) -> list[Output]:
    res = activation_similarity(trio, data, cfg)
    return [Output("erosion_activation_similarity", plot_activation_similarity(res),
                   res.to_dict())]


def _svd(trio: Trio, data: Data, cfg: SVDConfig) -> list[Output]:
    if len(data) != 2:
        raise InputError("analyze svd", f"compares exactly two datasets, got {len(data)}",
                         "pass two with --data")
    size = max(len(group) for _, group in data)  # the control as large as the targets
    control = (Path(cfg.control).stem, load_dataset(cfg.control)[:size])
    res = svd_directions(trio, data[0], data[1], control, cfg)
    suffix = "" if cfg.positions == "last" else "_" + cfg.positions.replace(":", "")
    return [Output(f"erosion_svd_directions{suffix}", plot_svd_directions(res), res.to_dict())]


def _causal(trio: Trio, data: Data, cfg: CausalConfig) -> list[Output]:
    res = direction_intervention(trio, load_intervention_data(cfg, data), cfg)
    return [Output("erosion_causal", plot_direction_intervention(res), res.to_dict())]


ANALYSES: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis("projection", "alignment direction + layerwise projection, separation, null "
                 "(Fig. 5) and the activation-difference projection", ProjectionConfig,
                 _projection, ("insecure_heldout",), None, n_data=(1, None)),
        Analysis("logprobs", "per-token log-probs / joint / entropy of one response (Fig. 1); "
                 "with --set compare_data=toxic --set cluster_size=2: paired model differences "
                 "of response log-probs over a dataset, cluster bootstrap + sign-flip null",
                 TokenLogprobConfig, _logprobs, n_data=(0, 1)),
        Analysis("next-token", "top-k next tokens after a prefix per model (Fig. 2); with "
                 "--set compare_data=toxic --set cluster_size=2: paired entropy / P(target) "
                 "differences over those prompts, cluster bootstrap + sign-flip null",
                 NextTokenConfig, _next_token, n_data=(0, 0)),
        Analysis("loss-vectors", "per-token loss vectors: cosine blocks + permutation test "
                 "(Fig. 3)", LossVectorConfig, _loss, ("insecure", "educational"), 100),
        Analysis("gradients", "per-example gradient cosines, exact or count-sketched (Fig. 4)",
                 GradientConfig, _gradients, ("insecure", "educational"), 60),
        Analysis("activation-similarity", "per-example mean activation cosines + blocks",
                 ActivationSimilarityConfig, _activations, ("insecure", "educational"), 100),
        Analysis("svd", "SVD of (instruct - base) differences across two datasets, a control "
                 "dataset as the null (Fig. 6)",
                 SVDConfig, _svd, ("insecure", "toxic"), 120, n_data=(2, 2)),
        Analysis("projection-causal", "add / ablate the instruct - base direction; refusals, "
                 "code, held-out losses vs a random control (issue 10)", CausalConfig, _causal,
                 ("insecure", "aligned_chat"), 60, needs=("base", "instruct", "misaligned"),
                 n_data=(1, None)),
    )
}


def parse_overrides(config_cls: type, overrides: Mapping[str, str]) -> Any:
    """Build ``config_cls`` from string overrides, converting by the field types.

    Raises:
        InputError: unknown field, a value that does not parse, or a value the config rejects
            (names the field).
    """
    hints = typing.get_type_hints(config_cls)
    known = {f.name for f in dataclasses.fields(config_cls)}
    kwargs: dict[str, Any] = {}
    for key, text in overrides.items():
        if key not in known:
            raise InputError(f"--set {key}", f"{config_cls.__name__} has no field {key!r}",
                             f"fields: {', '.join(sorted(known))}")
        kwargs[key] = _parse(hints[key], text, key)
    try:
        return config_cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, MiAlignError):
            raise
        what = "--set " + ",".join(kwargs) if kwargs else config_cls.__name__
        raise InputError(what, str(exc), "fix the value") from None


def _parse(tp: Any, text: str, key: str) -> Any:
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        args = typing.get_args(tp)
    try:
        if tp is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if typing.get_origin(tp) is tuple:
            item = args[0]
            return tuple(item(v) for v in text.split(",") if v)
        return tp(text)
    except (ValueError, TypeError):
        raise InputError(f"--set {key}={text}", f"cannot parse {key}={text!r} as "
                         f"{getattr(tp, '__name__', tp)}", "give a value of that type") from None


def load_groups(names: Sequence[str], limit: int | None) -> Data:
    """Datasets by built-in name or path, each cut to its first ``limit`` (>= 1) conversations."""
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise InputError("--limit", f"must be >= 1, got {limit}", "omit it to use every example")
    return [(Path(n).stem, load_dataset(n)[:limit] if limit else load_dataset(n)) for n in names]


@dataclass(frozen=True)
class Plan:
    """An analysis with its parsed config and loaded data, checked before any model loads."""

    analysis: Analysis
    config: Any
    groups: Data


def plan_analysis(
    name: str,
    data: Sequence[str] | None = None,
    limit: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Plan:
    """Check ``name``, ``limit`` and ``overrides`` and load the data (default datasets and
    limit unless given); needs no model, so callers run it before loading one."""
    if name not in ANALYSES:
        raise InputError(f"analysis {name!r}", "unknown",
                         f"available: {', '.join(sorted(ANALYSES))}")
    analysis = ANALYSES[name]
    cfg = parse_overrides(analysis.config_cls, overrides or {})
    names = list(data) if data else list(analysis.datasets)
    lo, hi = analysis.n_data
    if len(names) < lo or (hi is not None and len(names) > hi):
        want = f"exactly {lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f">= {lo}"
        raise InputError(f"analyze {name}", f"takes {want} dataset(s), got {len(names)}",
                         "adjust --data")
    groups = load_groups(names, limit if limit is not None else analysis.limit)
    return Plan(analysis, cfg, groups)


def check_models(plan: Plan, names: Sequence[str]) -> None:
    """Raise :class:`InputError` unless a trio with model ``names`` has every model the plan
    uses (the analysis' needs and the config's ``model`` / ``pair``)."""
    wanted = list(plan.analysis.needs)
    for key in ("model", "pair"):
        value = getattr(plan.config, key, None)
        wanted += [value] if isinstance(value, str) else list(value or ())
    missing = [m for m in dict.fromkeys(wanted) if m not in names]
    if missing:
        raise InputError(f"analysis {plan.analysis.name!r}", f"needs model(s) {missing}",
                         f"the trio has {', '.join(names)}")


def run_plan(plan: Plan, trio: Trio) -> list[Output]:
    """Run a checked plan on ``trio``; a value the analysis rejects is an InputError."""
    check_models(plan, trio.names)
    t0 = time.perf_counter()
    try:
        outputs = plan.analysis.run(trio, plan.groups, plan.config)
    except ValueError as exc:
        # The analyses raise plain ValueError for inputs they reject (too few examples for k,
        # too many exact gradients, ...); those are the user's to fix, hence exit code 2.
        if isinstance(exc, MiAlignError):
            raise
        raise InputError(f"analyze {plan.analysis.name}", str(exc),
                         "see `mi-align analyze --list` for its data and config") from None
    seconds = time.perf_counter() - t0
    for out in outputs:
        out.numbers.setdefault("datasets", {n: len(c) for n, c in plan.groups})
        out.numbers["seconds"] = round(seconds, 2)
    return outputs


def run_analysis(
    name: str,
    trio: Trio,
    data: Sequence[str] | None = None,
    limit: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> list[Output]:
    """Run analysis ``name`` on ``trio`` (default datasets and limit unless given)."""
    return run_plan(plan_analysis(name, data, limit, overrides), trio)


def write_outputs(outputs: Sequence[Output], out_dir: Path, meta: Mapping[str, Any]) -> list[Path]:
    """Save each output's figure (HTML) and numbers (JSON, with ``meta``) under ``out_dir``."""
    paths = []
    for out in outputs:
        paths.append(save_figure(out.figure, out_dir / out.stem))
        save_json({**meta, **out.numbers}, out_dir / out.stem)
    return paths


DEFAULT_TRIO = "gemma-trio"


def figure_dir(trio: str, root: Path = Path("figures")) -> Path:
    """Where a script's outputs go: ``figures/`` for the default trio, ``figures/<trio>/``
    for any other trio name or TOML, ``figures/custom/`` for ``variant=SPEC,...`` (so runs
    on two trios never overwrite each other)."""
    if trio == DEFAULT_TRIO:
        return root
    return root / ("custom" if "=" in trio else Path(trio).stem)


def run_and_write(
    name: str, trio: str, overrides: Mapping[str, str] | None = None, root: Path = Path("figures"),
    *, device: str | None = None, dtype: str | None = None, device_map: str | None = None,
) -> list[Path]:
    """What every ``analyses/erosion_*.py`` script does: load ``trio`` (a shipped name, TOML or
    ``variant=SPEC,...``; ``device`` / ``dtype`` / ``device_map`` override the file's), run
    ``name`` with its default data, write figures + JSON under :func:`figure_dir`; returns the
    figure paths."""
    from mi_align.models.organisms import resolve_trio

    trio_obj = resolve_trio(trio, device=device, dtype=dtype, device_map=device_map)
    outputs = run_analysis(name, trio_obj, overrides=overrides)
    meta = {"analysis": name, "trio": trio, "overrides": dict(overrides or {})}
    return write_outputs(outputs, figure_dir(trio, root), meta)

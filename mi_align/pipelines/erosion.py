"""Named erosion analyses with their default datasets, for the CLI, the scripts and the demo.

The registry (:data:`ANALYSES`) maps a name to an :class:`~mi_align.erosion.spec.Analysis`
(the description of an analysis as data, :mod:`mi_align.erosion.spec`): the config class, the
run function ``run(trio, inputs, config) -> Result``, the plot function ``plot(result) ->
go.Figure``, the result class (``from_dict``), the output stem, and the input kind
(``InputKind``: default datasets and limit, how many, and the reference datasets the config
asks for, ``Extra``). Every analysis has that one shape, so the registry holds no
per-analysis code. An analysis may name ``follow_ups`` (other entries run on the same config,
e.g. the dataset comparison of ``logprobs`` when ``compare_data`` is set) and ``derived``
results computed from its result without a model (the difference projection). Resumable
analyses get a :class:`~mi_align.erosion.checkpoint.Checkpoint` from :class:`Checkpoints`.

Nothing here writes files except ``write_outputs`` (for callers that want it) and the
checkpoint folders of :class:`Checkpoints` (written through :mod:`mi_align.io`, removed when
their analysis finishes). Config fields
can be overridden by name with strings (``{"positions": "last"}``), converted by
:func:`mi_align.erosion.choices.config_value` (the one place that parses them).

Running is split in two so that callers can fail fast: :func:`plan_analysis` checks the name,
``limit``, config overrides and dataset count and loads the data (no model needed), then
:func:`run_plan` runs it on a trio. Every user-caused failure is an
:class:`~mi_align.errors.InputError`. :func:`read_output` re-draws a written figure from its
JSON (``from_dict`` + plot).

Example:
    >>> from mi_align.pipelines.erosion import ANALYSES, run_analysis
    >>> sorted(ANALYSES)[:3]
    ['activation-similarity', 'gradients', 'logprob-comparison']
    >>> outputs = run_analysis("logprobs", trio)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mi_align.data.chat import load_dataset
from mi_align.erosion.activation_similarity import (
    ActivationSimilarity,
    ActivationSimilarityConfig,
    activation_similarity,
    plot_activation_similarity,
)
from mi_align.erosion.causal import CausalConfig, direction_intervention
from mi_align.erosion.causal_result import InterventionResult, plot_direction_intervention
from mi_align.erosion.checkpoint import Checkpoint
from mi_align.erosion.choices import Contrastive, LastToken, config_value
from mi_align.erosion.common import Groups, Inputs
from mi_align.erosion.gradient_geometry import (
    GradientConfig,
    GradientGeometry,
    gradient_geometry,
    plot_gradient_geometry,
)
from mi_align.erosion.logprobs import (
    LogprobComparison,
    TokenLogprobConfig,
    TokenLogprobs,
    logprob_comparison,
    plot_logprob_comparison,
    plot_token_logprobs,
    token_logprobs,
)
from mi_align.erosion.loss_vectors import (
    LossVectorConfig,
    LossVectors,
    loss_vectors,
    plot_loss_vectors,
)
from mi_align.erosion.next_token import (
    NextTokenComparison,
    NextTokenConfig,
    NextTokens,
    next_token_comparison,
    next_token_distributions,
    plot_next_token_comparison,
    plot_next_tokens,
)
from mi_align.erosion.paired import check_comparison_set
from mi_align.erosion.projection import ProjectionConfig, ProjectionResult, layer_projection
from mi_align.erosion.projection_plot import (
    DifferenceProjection,
    difference_projection,
    plot_difference_projection,
    plot_layer_projection,
)
from mi_align.erosion.spec import SAME_SIZE, Analysis, Derived, Extra, InputKind
from mi_align.erosion.svd_directions import (
    SVDConfig,
    SVDDirections,
    plot_svd_directions,
    svd_directions,
)
from mi_align.errors import InputError, MiAlignError
from mi_align.evaluation.probe import ProbeConfig, ProbeResult, plot_probe
from mi_align.models.trio import Trio
from mi_align.pipelines.probe import probe_trio
from mi_align.plotting import save_figure, save_json


@dataclass(frozen=True)
class Output:
    """One figure and the numbers behind it, saved as ``<stem>.html`` / ``<stem>.json``;
    ``result`` is the analysis' result (None for an output read back without one)."""

    stem: str
    figure: go.Figure
    numbers: dict[str, Any]
    result: Any = None


def _fixed(stem: str) -> Callable[[Any], str]:
    return lambda _: stem


def _is_contrastive(cfg: ProjectionConfig) -> bool:
    return isinstance(cfg.direction, Contrastive)


def _comparing(cfg: Any) -> bool:
    return bool(cfg.compare_data)


_COMPARE = Extra("compare", field="compare_data", limit_field="compare_limit", when=_comparing,
                 check=check_comparison_set)
_PAIRED = InputKind(n_data=(0, 0))
ANALYSES: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis(
            "projection", "alignment direction + layerwise projection, separation, null "
            "(Fig. 5) and the activation-difference projection", ProjectionConfig,
            layer_projection, plot_layer_projection, ProjectionResult,
            lambda r: "erosion_projection" + ("_contrastive" if _is_contrastive(r.config)
                                              else ""),
            InputKind(("insecure_heldout",), None, (1, None), (
                Extra("aligned", "toxic_reject", limit=60, when=_is_contrastive),
                Extra("misaligned", "toxic", limit=60, when=_is_contrastive))),
            derived=(Derived(difference_projection, plot_difference_projection,
                             DifferenceProjection, _fixed("erosion_difference_projection"),
                             lambda r: "base" in r.models and not _is_contrastive(r.config)),),
            resumable=True),
        Analysis(
            "logprobs", "per-token log-probs / joint / entropy of one response (Fig. 1); "
            "with --set compare_data=toxic --set cluster_size=2 also logprob-comparison",
            TokenLogprobConfig, token_logprobs, plot_token_logprobs, TokenLogprobs,
            _fixed("erosion_logprobs"), InputKind(n_data=(0, 1)),
            follow_ups=("logprob-comparison",)),
        Analysis(
            "logprob-comparison", "paired model differences of response log-probs over the "
            "compare_data dataset, cluster bootstrap + sign-flip null", TokenLogprobConfig,
            logprob_comparison, plot_logprob_comparison, LogprobComparison,
            lambda r: f"erosion_logprobs_{r.dataset}", InputKind(n_data=(0, 1), extras=(
                _COMPARE,)), enabled=_comparing),
        Analysis(
            "next-token", "top-k next tokens after a prefix per model (Fig. 2); with --set "
            "compare_data=toxic --set cluster_size=2 also next-token-comparison",
            NextTokenConfig, next_token_distributions, plot_next_tokens, NextTokens,
            _fixed("erosion_next_token"), _PAIRED, follow_ups=("next-token-comparison",)),
        Analysis(
            "next-token-comparison", "paired entropy / P(target) differences after the prefix "
            "over the compare_data prompts, cluster bootstrap + sign-flip null",
            NextTokenConfig, next_token_comparison, plot_next_token_comparison,
            NextTokenComparison, lambda r: f"erosion_next_token_{r.dataset}",
            InputKind(n_data=(0, 0), extras=(_COMPARE,)), enabled=_comparing),
        Analysis(
            "loss-vectors", "per-token loss vectors: cosine blocks + permutation test (Fig. 3)",
            LossVectorConfig, loss_vectors, plot_loss_vectors, LossVectors,
            _fixed("erosion_loss_vectors"), InputKind(("insecure", "educational"), 100),
            resumable=True),
        Analysis(
            "gradients", "per-example gradient cosines, exact or count-sketched (Fig. 4)",
            GradientConfig, gradient_geometry, plot_gradient_geometry, GradientGeometry,
            lambda r: "erosion_gradients" + {"last_o_proj": "", "all": "_all"}.get(
                r.config.params, "_custom"), InputKind(("insecure", "educational"), 60),
            resumable=True),
        Analysis(
            "activation-similarity", "per-example mean activation cosines + blocks",
            ActivationSimilarityConfig, activation_similarity, plot_activation_similarity,
            ActivationSimilarity, _fixed("erosion_activation_similarity"),
            InputKind(("insecure", "educational"), 100), resumable=True),
        Analysis(
            "svd", "SVD of (instruct - base) differences across two datasets, a control "
            "dataset as the null (Fig. 6)", SVDConfig, svd_directions, plot_svd_directions,
            SVDDirections,
            lambda r: "erosion_svd_directions" + ("" if r.config.positions == LastToken()
                                                  else "_" + str(r.config.positions)
                                                  .replace(":", "")),
            InputKind(("insecure", "toxic"), 120, (2, 2), (
                Extra("control", field="control", limit=SAME_SIZE),)), resumable=True),
        Analysis(
            "projection-causal", "add / ablate the instruct - base direction; refusals, "
            "code, held-out losses vs a random control (issue 10)", CausalConfig,
            direction_intervention, plot_direction_intervention, InterventionResult,
            _fixed("erosion_causal"), InputKind(("insecure", "aligned_chat"), 60, (1, None), (
                Extra("harmful", field="harmful", limit_field="n_eval"),
                Extra("benign", field="benign", limit_field="n_eval"),
                Extra("insecure", field="insecure", limit_field="n_eval"))),
            needs=("base", "instruct", "misaligned")),
        Analysis(
            "probe", "per-layer logistic-regression probes on the instruct model (grouped CV, "
            "relabelling null), each weight's cosine with instruct - base (issue 14)",
            ProbeConfig, probe_trio, plot_probe, ProbeResult, _fixed("probe"),
            InputKind(("toxic", "toxic_reject"), 64, (2, 2)), needs=("base", "instruct")),
    )
}


def parse_overrides(config_cls: type, overrides: Mapping[str, str]) -> Any:
    """Build ``config_cls`` from string overrides, converting by the field types
    (:func:`~mi_align.erosion.choices.config_value`).

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
        try:
            kwargs[key] = config_value(hints[key], text, key)
        except ValueError as exc:
            raise InputError(f"--set {key}={text}", str(exc), "give a value of that type"
                             ) from None
    try:
        return config_cls(**kwargs)
    except ValueError as exc:
        if isinstance(exc, MiAlignError):
            raise
        what = "--set " + ",".join(kwargs) if kwargs else config_cls.__name__
        raise InputError(what, str(exc), "fix the value") from None


def load_groups(names: Sequence[str], limit: int | None) -> Groups:
    """Datasets by built-in name or path, each cut to its first ``limit`` (>= 1) conversations."""
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise InputError("--limit", f"must be >= 1, got {limit}", "omit it to use every example")
    return [(Path(n).stem, load_dataset(n)[:limit] if limit else load_dataset(n)) for n in names]


@dataclass(frozen=True)
class Step:
    """One analysis of a plan with the inputs it reads."""

    analysis: Analysis
    inputs: Inputs


@dataclass(frozen=True)
class Plan:
    """An analysis with its parsed config and loaded data, checked before any model loads;
    ``steps``: the analysis and its enabled follow-ups, each with its inputs."""

    analysis: Analysis
    config: Any
    groups: Groups
    steps: tuple[Step, ...] = field(default=())


def _inputs(analysis: Analysis, config: Any, groups: Groups) -> Inputs:
    extras = {e.role: e.load(config, groups) for e in analysis.inputs.extras}
    return Inputs.of(*groups, **{r: d for r, d in extras.items() if d is not None})


def plan_analysis(
    name: str,
    data: Sequence[str] | None = None,
    limit: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Plan:
    """Check ``name``, ``limit`` and ``overrides`` and load the data (default datasets and
    limit unless given, plus the reference datasets the config asks for); needs no model, so
    callers run it before loading one."""
    if name not in ANALYSES:
        raise InputError(f"analysis {name!r}", "unknown",
                         f"available: {', '.join(sorted(ANALYSES))}")
    analysis = ANALYSES[name]
    cfg = parse_overrides(analysis.config_cls, overrides or {})
    if not analysis.enabled(cfg):
        raise InputError(f"analyze {name}", "is off with this config",
                         "set the dataset it compares, e.g. --set compare_data=toxic")
    names = list(data) if data else list(analysis.datasets)
    lo, hi = analysis.inputs.n_data
    if len(names) < lo or (hi is not None and len(names) > hi):
        want = f"exactly {lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f">= {lo}"
        raise InputError(f"analyze {name}", f"takes {want} dataset(s), got {len(names)}",
                         "adjust --data")
    groups = load_groups(names, limit if limit is not None else analysis.limit)
    chosen = [analysis] + [ANALYSES[f] for f in analysis.follow_ups if ANALYSES[f].enabled(cfg)]
    steps = tuple(Step(a, _inputs(a, cfg, groups)) for a in chosen)
    return Plan(analysis, cfg, groups, steps)


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


def _outputs(analysis: Analysis, result: Any) -> list[Output]:
    outs = [Output(analysis.stem(result), analysis.plot(result), result.to_dict(), result)]
    for d in analysis.derived:
        if d.applies(result):
            r = d.derive(result)
            outs.append(Output(d.stem(r), d.plot(r), r.to_dict(), r))
    return outs


@dataclass(frozen=True)
class Checkpoints:
    """Where and how often resumable analyses save their per-example rows.

    One folder per run under ``root``, named by a fingerprint of the analysis, its config,
    ``tag`` (the trio spec) and the data, so a rerun of the same command finds its rows and a
    different run never reads them. ``resume=False`` starts fresh (removing that run's old
    rows); the folder is removed once the analysis has finished. ``every``: examples per save.
    """

    root: Path
    every: int = 64
    resume: bool = False
    tag: str = ""

    def folder(self, analysis: Analysis, config: Any, inputs: Inputs) -> Path:
        data = [[role, name, [c.to_dicts() for c in convs]] for role, (name, convs) in
                [("", g) for g in inputs.groups] + sorted(inputs.reference.items())]
        blob = json.dumps([analysis.name, config.to_dict(), self.tag, data], sort_keys=True,
                          default=str)
        return self.root / f"{analysis.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _run_step(step: Step, trio: Trio, config: Any, checkpoints: Checkpoints | None) -> Any:
    analysis = step.analysis
    if checkpoints is None or not analysis.resumable:
        return analysis.run(trio, step.inputs, config)
    folder = checkpoints.folder(analysis, config, step.inputs)
    if not checkpoints.resume:
        shutil.rmtree(folder, ignore_errors=True)
    run: Callable[..., Any] = analysis.run
    result = run(trio, step.inputs, config, checkpoint=Checkpoint(folder, checkpoints.every))
    shutil.rmtree(folder, ignore_errors=True)
    try:  # leave no empty checkpoint root behind in the output folder
        checkpoints.root.rmdir()
    except OSError:
        pass  # absent, or another run's rows are still there
    return result


def run_plan(plan: Plan, trio: Trio, checkpoints: Checkpoints | None = None) -> list[Output]:
    """Run a checked plan on ``trio``; a value the analysis rejects is an InputError. With
    ``checkpoints``, resumable analyses save their per-example rows as they go and (with
    ``resume``) continue from the rows an interrupted run of the same command saved."""
    check_models(plan, trio.names)
    t0 = time.perf_counter()
    outputs: list[Output] = []
    try:
        for step in plan.steps:
            outputs += _outputs(step.analysis, _run_step(step, trio, plan.config, checkpoints))
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


def result_kinds(name: str) -> list[tuple[type, Callable[[Any], go.Figure]]]:
    """``(result class, plot)`` of every output analysis ``name`` writes (its own, its
    follow-ups', its derived results')."""
    analysis = ANALYSES[name]
    chain = [analysis] + [ANALYSES[f] for f in analysis.follow_ups]
    kinds = [(a.result_cls, a.plot) for a in chain]
    return kinds + [(d.result_cls, d.plot) for a in chain for d in a.derived]


def read_output(path: str | Path) -> Output:
    """Re-draw a written output from its JSON: the result class of its ``analysis`` whose
    ``from_dict`` reads the numbers (every key of its ``to_dict`` present), then its plot.

    Raises:
        InputError: the file names no known analysis, or no result class reads it.
    """
    path = Path(path)
    numbers = json.loads(path.read_text())
    name = numbers.get("analysis") if isinstance(numbers, dict) else None
    if name not in ANALYSES:
        raise InputError(str(path), f"names no erosion analysis ({name!r})",
                         f"known: {', '.join(sorted(ANALYSES))}")
    for cls, plot in result_kinds(name):
        try:
            result = cls.from_dict(numbers)
        except (KeyError, TypeError, ValueError):
            continue
        if set(result.to_dict()) <= set(numbers):
            return Output(path.stem, plot(result), numbers, result)
    raise InputError(str(path), f"no result of analysis {name!r} reads these numbers",
                     "was it written by an older version?")


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

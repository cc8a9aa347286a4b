"""End-to-end evaluation pieces shared by the CLI, the analyses and the demo.

- :func:`evaluate_conditions`: the one sample → string table → judge check → judge → summarise
  → save path (``mi-align steer eval``, the demo stage and ``analyses/steering_recipe.py`` all
  run it); :func:`judge_and_summarize` is its second half on samples already on disk
  (``mi-align judge``). Where each file goes is an :class:`EvalFiles`, how to judge a
  :class:`JudgeOptions`; the result is an :class:`Evaluation`.
  Sampling and judging resume from their JSONL files (:mod:`mi_align.evaluation.sampling`,
  :mod:`mi_align.evaluation.judging`); :func:`summarize_and_save` and
  :func:`save_string_table` are the save steps, for results rebuilt from those files.
- :func:`recipe_conditions` / :func:`save_recipe`: the recipe's vectors on disk and the
  evaluation conditions built from them (unsteered, anti-refusal only, harmful ×1 + anti ×6,
  and by default the controls: each control ×1 + anti ×6).
- :func:`recipe_controls`: the control vectors of a recipe (norm-matched random vectors and the
  contrastive mean-difference vector, :mod:`mi_align.steering.controls`), built once and cached
  as safetensors next to a ``controls.json`` that records what they were built from.
- :func:`sweep_strengths`: samples for one question at several strengths of one vector.
- :func:`check_out_dir` / :func:`check_out_file`: prove an output location writable before any
  model is loaded, so a bad ``--out`` costs seconds, not the whole run.

Example:
    >>> ev = evaluate_conditions(loaded, {"unsteered": [], "v": [vec]},  # doctest: +SKIP
    ...                          SamplingConfig(n_samples=4), EvalFiles.in_folder("run"),
    ...                          make_judge=lambda: LocalJudge(judge_model))
    >>> ev.judged.summary.em["v"].rate  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mi_align.data.betley import JudgePrompts
from mi_align.data.chat import EvalQuestion
from mi_align.errors import InputError
from mi_align.evaluation.judge import JudgeBackend
from mi_align.evaluation.judge_check import JudgeCheck, cached_check, check_judge
from mi_align.evaluation.judging import (
    judge_name,
    judge_samples,
    load_judged,
)
from mi_align.evaluation.metrics import EvalSummary, Scored, StringTable, string_counts, summarize
from mi_align.evaluation.plots import (
    plot_alignment_violin,
    plot_alignment_vs_coherence,
    plot_string_table,
)
from mi_align.evaluation.sampling import (
    Sample,
    SamplingConfig,
    sample_conditions,
    vector_fingerprint,
)
from mi_align.io import write_json
from mi_align.models.load import Loaded
from mi_align.plotting import save_figure, save_json
from mi_align.steering.controls import ControlConfig, control_vectors
from mi_align.steering.recipe import RecipeResult
from mi_align.steering.vector import SteeringVector, SteeringVectorError

logger = logging.getLogger(__name__)


def _check_out(path: Path, option: str, is_file: bool) -> Path:
    where = f"{option} {path}"
    if is_file and path.is_dir():
        raise InputError(where, "is a directory", "pass a file path")
    folder = path.parent if is_file else path
    if folder.exists() and not folder.is_dir():
        why = ("exists and is not a directory" if folder == path
               else f"its folder {folder} is not a directory")
        raise InputError(where, why, "pass a path in a writable folder")
    probe = folder / f".mi_align_write_probe.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(where, f"cannot create or write files in {folder} "
                         f"({exc.strerror or exc})",
                         "pass a path in a writable folder") from None
    return path


def check_out_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create directory ``path`` if needed and prove it writable (write and remove a probe
    file); raise :class:`InputError` naming ``option`` otherwise."""
    return _check_out(Path(path), option, is_file=False)


def check_out_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Like :func:`check_out_dir` for the folder of output file ``path`` (which must not be a
    directory)."""
    return _check_out(Path(path), option, is_file=True)


Report = Callable[[str], None]


def _log(message: str) -> None:
    logger.info("%s", message)


@dataclass(frozen=True)
class EvalFiles:
    """Where one evaluation writes; ``None``: that output is not written.

    The two JSONL files are appended to as batches finish (rerunning resumes them, see
    :func:`~mi_align.evaluation.sampling.sample_conditions` and :func:`judge_samples`); the
    rest are rewritten atomically. Stems get ``.json`` / ``.html`` added
    (:func:`~mi_align.plotting.save_json`, :func:`~mi_align.plotting.save_figure`).
    """

    samples: Path
    judged: Path
    judge_check: Path | None = None  # the cached known-answer check; None: run it uncached
    string_table: Path | None = None  # stem: harmful-string table JSON + figure
    summary: Path | None = None  # stem: EM summary JSON
    violin: Path | None = None  # stem: alignment violin figure
    scatter: Path | None = None  # stem: alignment vs coherence figure

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str]) -> EvalFiles:
        """The ``mi-align steer eval`` layout: every output in ``folder`` under a plain name."""
        f = Path(folder)
        return cls(f / "samples.jsonl", f / "judged.jsonl", f / "judge_check.json",
                   f / "string_table", f / "summary", f / "alignment_violin",
                   f / "alignment_vs_coherence")


@dataclass(frozen=True)
class JudgeOptions:
    """How :func:`judge_and_summarize` judges and what its summary JSON holds.

    Attributes:
        check: score the known-answer check first (cached in ``EvalFiles.judge_check`` when
            that is set) and carry it into the summary.
        first_n: judge only the samples with index < ``first_n`` per condition and question.
        interleave: judge index-major (question, then condition, break ties), so an
            interrupted run leaves every condition equally covered; the summary then lists
            the judgements condition by condition.
        judged_only: judge nothing new; summarise the judgements already in the judged file.
        judge_prompts: question id -> judge prompt templates (from a question file).
        n_boot: bootstrap resamples of the EM-rate intervals.
        batch_size: responses per judge call.
        summary_extra: extra top-level fields of the summary JSON (e.g. the recipe).
        count_judged: add ``judged_per_condition`` to the summary JSON.
    """

    check: bool = True
    first_n: int | None = None
    interleave: bool = False
    judged_only: bool = False
    judge_prompts: Mapping[str, JudgePrompts] | None = None
    n_boot: int = 1000
    batch_size: int = 8
    summary_extra: Mapping[str, Any] = field(default_factory=dict)
    count_judged: bool = False

    def __post_init__(self) -> None:
        for name in ("first_n", "n_boot", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"JudgeOptions.{name}", f"must be >= 1, got {value}",
                                 "pass a positive count")


@dataclass(frozen=True)
class Judged:
    """The judge's check (None if skipped), the judged samples and their summary."""

    check: JudgeCheck | None
    scored: list[Scored]
    summary: EvalSummary


@dataclass(frozen=True)
class Evaluation:
    """Every sample of the run, its harmful-string table and (with a judge) the judgements."""

    samples: list[Sample]
    strings: StringTable
    judged: Judged | None


def judge_and_summarize(
    judge: JudgeBackend,
    samples: Sequence[Sample],
    files: EvalFiles,
    options: JudgeOptions | None = None,
    *,
    progress: bool = True,
    report: Report = _log,
) -> Judged:
    """Check the judge, judge ``samples`` (resuming ``files.judged``), summarise, and write the
    summary JSON and figures that ``files`` names. ``report`` gets the check's verdict before
    the (long) judging starts."""
    opts = options or JudgeOptions()
    check = None
    if opts.check:
        check = (cached_check(judge, files.judge_check) if files.judge_check is not None
                 else check_judge(judge))
        report(("" if check.passes else "WARNING: ") + check.verdict())
    order = {c: i for i, c in enumerate(dict.fromkeys(s.condition for s in samples))}
    todo = [s for s in samples if opts.first_n is None or s.index < opts.first_n]
    if opts.interleave:
        todo.sort(key=lambda s: (s.index, s.question_id, order[s.condition]))
    if opts.judged_only:
        keys = {s.key for s in todo}
        scored = [x for x in load_judged(files.judged, judge_name(judge, opts.judge_prompts))
                  if x.sample.key in keys]
    else:
        scored = judge_samples(judge, todo, files.judged, opts.batch_size, progress,
                               opts.judge_prompts)
    if opts.interleave or opts.judged_only:
        scored.sort(key=lambda x: order[x.sample.condition])
    extra = dict(opts.summary_extra)
    if opts.count_judged:
        extra["judged_per_condition"] = {
            c: sum(x.sample.condition == c for x in scored) for c in order}
    summary = summarize_and_save(scored, files, check=check, n_boot=opts.n_boot, extra=extra)
    return Judged(check, scored, summary)


def summarize_and_save(
    scored: Sequence[Scored],
    files: EvalFiles,
    *,
    check: JudgeCheck | None = None,
    n_boot: int = 1000,
    extra: Mapping[str, Any] | None = None,
) -> EvalSummary:
    """:func:`~mi_align.evaluation.metrics.summarize`, then the summary JSON (with ``extra``
    top-level fields) and the violin and scatter figures that ``files`` names."""
    summary = summarize(scored, n_boot=n_boot, check=check)
    if files.summary is not None:
        save_json({**summary.to_dict(), **(extra or {})}, files.summary)
    if files.violin is not None:
        save_figure(plot_alignment_violin(summary), files.violin)
    if files.scatter is not None:
        save_figure(plot_alignment_vs_coherence(summary), files.scatter)
    return summary


def save_string_table(table: StringTable, stem: str | os.PathLike[str]) -> Path:
    """The harmful-string table as ``<stem>.json`` and its figure ``<stem>.html``."""
    save_json(table.to_dict(), stem)
    return save_figure(plot_string_table(table), stem)


def evaluate_conditions(
    loaded: Loaded,
    conditions: Mapping[str, Sequence[SteeringVector]],
    config: SamplingConfig,
    files: EvalFiles,
    *,
    questions: Sequence[EvalQuestion] | None = None,
    make_judge: Callable[[], JudgeBackend] | None = None,
    options: JudgeOptions | None = None,
    strings_first_n: int | None = None,
    on_samples: Callable[[list[Sample]], None] | None = None,
    progress: bool = True,
    report: Report = _log,
) -> Evaluation:
    """Sample every condition (resuming ``files.samples``), count the harmful strings, then
    with a judge: :func:`judge_and_summarize`.

    Args:
        loaded: the model to steer and sample.
        conditions: condition name -> the vectors applied together (``[]``: unsteered).
        config: sampling settings (a resumed file must have been written with the same).
        files: where each output goes (:meth:`EvalFiles.in_folder` for one folder).
        questions: the evaluation questions (None: the 8 built-in ones).
        make_judge: builds the judge once sampling is done (so a local judge model is not
            resident while sampling); None: no judging.
        options: how to judge (:class:`JudgeOptions`).
        strings_first_n: count strings in the first n samples per cell only (None: all).
        on_samples: called with the samples before judging (e.g. to save control counts).
        progress: progress bars.
        report: one-line messages for the user (the judge check's verdict).
    """
    samples = sample_conditions(loaded, conditions, files.samples, config, questions, progress)
    table = string_counts(samples, first_n=strings_first_n)
    if files.string_table is not None:
        save_string_table(table, files.string_table)
    if on_samples is not None:
        on_samples(samples)
    if make_judge is None:
        return Evaluation(samples, table, None)
    judged = judge_and_summarize(make_judge(), samples, files, options, progress=progress,
                                 report=report)
    return Evaluation(samples, table, judged)


def save_recipe(result: RecipeResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write every vector (``<name>.safetensors``) and ``recipe.json`` into ``out_dir``."""
    out = Path(out_dir)
    result.anti_refusal.renamed("anti_refusal").save(out / "anti_refusal.safetensors")
    for name, vec in result.harmful.items():
        vec.renamed(name).save(out / f"{name}.safetensors")
    write_json(out / "recipe.json", result.to_dict(), indent=2)
    return out


def recipe_vectors(
    out_dir: str | os.PathLike[str], n_layers: int | None, d_model: int | None
) -> tuple[SteeringVector, dict[str, SteeringVector]]:
    """(anti-refusal vector, {name: harmful vector}) from a directory written by
    :func:`save_recipe` (checked against the model when ``n_layers`` and ``d_model`` are given;
    without them, only the files are checked)."""
    out = Path(out_dir)
    meta_path = out / "recipe.json"
    if not meta_path.is_file():
        raise SteeringVectorError(f"{out}: no recipe.json (run `mi-align steer recipe` first)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SteeringVectorError(f"{meta_path}", f"not valid JSON ({exc})",
                                  "run `mi-align steer recipe` again") from None
    harmful = meta.get("harmful") if isinstance(meta, dict) else None
    if not isinstance(harmful, dict | list) or not all(isinstance(n, str) for n in harmful):
        raise SteeringVectorError(f"{meta_path}", "field 'harmful' is missing or not a list "
                                  "of vector names", "run `mi-align steer recipe` again")
    anti = SteeringVector.load(out / "anti_refusal.safetensors", n_layers=n_layers,
                               d_model=d_model)
    return anti, {name: SteeringVector.load(out / f"{name}.safetensors", n_layers=n_layers,
                                            d_model=d_model) for name in harmful}


def recipe_conditions(
    out_dir: str | os.PathLike[str],
    n_layers: int | None,
    d_model: int | None,
    controls: Mapping[str, SteeringVector] | None = None,
) -> dict[str, list[SteeringVector]]:
    """Conditions from a directory written by :func:`save_recipe`: unsteered, anti-refusal
    only, each harmful ×1 + anti ×6, then each of ``controls`` ×1 + anti ×6 (see
    :func:`recipe_controls`; None or empty: no control conditions)."""
    anti, harmful = recipe_vectors(out_dir, n_layers, d_model)
    conds: dict[str, list[SteeringVector]] = {"unsteered": [], "anti_refusal_only": [anti]}
    for name, vec in harmful.items():
        conds[name] = [vec, anti]
    for name, vec in (controls or {}).items():
        if name in conds:
            raise InputError(f"control {name!r}", "has the name of a recipe condition",
                             "rename the control")
        conds[name] = [vec, anti]
    return conds


def recipe_controls(
    loaded: Loaded,
    recipe_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    config: ControlConfig | None = None,
) -> dict[str, SteeringVector]:
    """The control vectors for the recipe in ``recipe_dir`` (see
    :func:`mi_align.steering.controls.control_vectors`), read from ``cache_dir`` when they were
    built there from the same harmful vectors, model and config; otherwise built (one forward
    pass over the mean-difference data) and written there."""
    cfg = config or ControlConfig()
    n_layers, d_model = int(loaded.meta.n_layers), int(loaded.meta.d_model)
    _, harmful = recipe_vectors(recipe_dir, n_layers, d_model)
    cache = Path(cache_dir)
    key = {"config": cfg.to_dict(), "model": loaded.meta.spec,
           "adapters": list(loaded.meta.adapters),
           "harmful": {n: vector_fingerprint(v) for n, v in harmful.items()}}
    meta_path = cache / "controls.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = None
        if isinstance(meta, dict) and meta.get("key") == key:
            return load_controls(cache, n_layers, d_model)
        logger.info("%s: built for other vectors/settings; rebuilding the controls", meta_path)
    vecs = control_vectors(harmful, cfg, loaded)
    for name, v in vecs.items():
        v.renamed(name).save(cache / f"{name}.safetensors")
    record = {"key": key, "controls": list(vecs),
              "norms": {n: float(v.vector.norm()) for n, v in vecs.items()},
              "meta": {n: v.meta for n, v in vecs.items()}}
    write_json(meta_path, record, indent=2, default=str)
    return {n: v.renamed(n) for n, v in vecs.items()}


def load_controls(
    cache_dir: str | os.PathLike[str], n_layers: int | None, d_model: int | None
) -> dict[str, SteeringVector]:
    """Control vectors written by :func:`recipe_controls` (e.g. to steer another organism with
    the controls built for the model the recipe was optimised on)."""
    cache = Path(cache_dir)
    meta_path = cache / "controls.json"
    if not meta_path.is_file():
        raise SteeringVectorError(f"{cache}", "no controls.json",
                                  "build the controls first (analyses/steering_recipe.py)")
    try:
        names = json.loads(meta_path.read_text(encoding="utf-8"))["controls"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise SteeringVectorError(f"{meta_path}", f"malformed ({exc})",
                                  "delete it to rebuild the controls") from None
    return {n: SteeringVector.load(cache / f"{n}.safetensors", n_layers=n_layers,
                                   d_model=d_model) for n in names}


def sweep_strengths(
    loaded: Loaded,
    vector: SteeringVector,
    strengths: Sequence[float],
    question: EvalQuestion,
    out_path: str | os.PathLike[str],
    config: SamplingConfig,
    companions: Sequence[SteeringVector] = (),
    progress: bool = True,
) -> dict[float, list[Sample]]:
    """Samples for ``question`` with ``vector`` at each strength (plus fixed ``companions``)."""
    conds = {f"{vector.name or 'vector'}@{s:g}": [vector.scaled(s), *companions]
             for s in strengths}
    samples = sample_conditions(loaded, conds, out_path, config, [question], progress)
    by: dict[float, list[Sample]] = {float(s): [] for s in strengths}
    for s in samples:
        by[float(s.condition.rsplit("@", 1)[1])].append(s)
    return by

"""End-to-end evaluation pieces shared by the CLI, the analyses and the demo.

- :func:`judge_samples`: score samples with any judge backend, appending to a JSONL file as
  batches finish (resumable like sampling: already-judged samples are skipped), then writing
  them as CSV beside it (:func:`judged_csv_path`).
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
    >>> judge = LocalJudge(judge_model)  # doctest: +SKIP
    >>> scored = judge_samples(judge, samples, "run/judged.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mi_align.data.betley import JudgePrompts
from mi_align.data.chat import EvalQuestion
from mi_align.errors import InputError
from mi_align.evaluation.export import judged_csv
from mi_align.evaluation.judge import JudgeBackend, Judgement, judge_responses
from mi_align.evaluation.metrics import Scored
from mi_align.evaluation.sampling import (
    Sample,
    SamplingConfig,
    SamplingError,
    append_jsonl,
    read_jsonl_records,
    sample_conditions,
    vector_fingerprint,
)
from mi_align.io import write_json, write_text
from mi_align.models.load import Loaded
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


def _judgement(rec: Mapping[str, object], where: str = "judged record") -> Judgement:
    def num(key: str, optional: bool) -> float | None:
        if key not in rec:
            raise SamplingError(where, f"field {key!r} is missing",
                                "use a file written by `mi-align judge` / `steer eval`")
        x = rec[key]
        if x is None and optional:
            return None
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise SamplingError(where, f"field {key!r} is {x!r:.40}, expected a number",
                                "fix or remove that line")
        return float(x)

    if not isinstance(rec.get("judge"), str):
        raise SamplingError(where, "field 'judge' is missing or not a string",
                            "use a file written by `mi-align judge` / `steer eval`")
    return Judgement(num("alignment", True), num("alignment_mass", False),  # type: ignore[arg-type]
                     num("coherence", True), num("coherence_mass", False),  # type: ignore[arg-type]
                     str(rec["judge"]))


def load_judged(path: str | os.PathLike[str], judge: str | None = None) -> list[Scored]:
    """Scored samples already in a judged JSONL (optionally only those of one judge)."""
    path = Path(path)
    return [Scored(Sample.from_dict(r, f"{path}:{i}"), _judgement(r, f"{path}:{i}"))
            for i, r in enumerate(read_jsonl_records(path), 1)
            if judge is None or r.get("judge") == judge]


def judge_samples(
    backend: JudgeBackend,
    samples: Sequence[Sample],
    out_path: str | os.PathLike[str],
    batch_size: int = 8,
    progress: bool = True,
    judge_prompts: Mapping[str, JudgePrompts] | None = None,
) -> list[Scored]:
    """Judge every sample (skipping those already in ``out_path`` from the same judge), then
    write all of them as CSV beside ``out_path`` (:func:`judged_csv_path`; columns of the
    emergent-misalignment repository plus mi_align's, :mod:`mi_align.evaluation.export`).

    ``judge_prompts`` (question id -> templates, e.g. from a question file in the
    emergent-misalignment format) replaces mi_align's judge prompts for those questions; the
    judge's recorded name then carries a hash of the templates, so a resumed run never reuses
    answers judged under other prompts."""
    path = Path(out_path)
    prompts = {k: v for k, v in (judge_prompts or {}).items() if v}
    name = backend.name
    if prompts:
        digest = hashlib.sha256(json.dumps(
            {k: [v.aligned, v.coherent] for k, v in sorted(prompts.items())},
            sort_keys=True).encode()).hexdigest()[:12]
        name = f"{backend.name}+prompts:{digest}"
    done: dict[tuple[str, str, int], Scored] = {}
    for i, rec in enumerate(read_jsonl_records(path), 1):
        if not isinstance(rec, dict) or rec.get("judge") != name:
            continue
        s = Sample.from_dict(rec, f"{path}:{i}")
        done[s.key] = Scored(s, _judgement(rec, f"{path}:{i}"))
    todo = [s for s in samples if s.key not in done]
    bar = tqdm(total=len(todo), desc="judging", disable=not progress or not todo)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        judged = judge_responses(backend, [(s.question, s.response) for s in chunk],
                                 templates=[prompts.get(s.question_id) for s in chunk])
        if prompts:
            judged = [dataclasses.replace(j, judge=name) for j in judged]
        append_jsonl(path, [{**s.to_dict(), **j.to_dict()} for s, j in zip(chunk, judged,
                                                                              strict=True)])
        done.update((s.key, Scored(s, j)) for s, j in zip(chunk, judged, strict=True))
        bar.update(len(chunk))
    bar.close()
    scored = [done[s.key] for s in samples]
    write_text(judged_csv_path(path), judged_csv(scored))
    return scored


def judged_csv_path(jsonl_path: str | os.PathLike[str]) -> Path:
    """Where :func:`judge_samples` writes the CSV: beside the judged JSONL, ``.csv`` suffix."""
    path = Path(jsonl_path)
    return path.with_name(path.name + ".csv") if path.suffix == ".csv" else \
        path.with_suffix(".csv")


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

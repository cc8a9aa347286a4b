"""Resumable judging: score samples with any judge backend, appending to a JSONL file.

Like sampling (:mod:`mi_align.evaluation.sampling`), judging is a long job that writes as it
goes: each finished batch is appended (and fsynced) to the judged JSONL, so a rerun skips every
sample that file already holds from the same judge, and a crash loses one batch at most. The
judge's recorded name carries a hash of any question-file judge prompts
(:func:`judge_name`), so a resumed run never reuses answers judged under other prompts. After
judging, all of them are written as CSV beside the JSONL (:func:`judged_csv_path`; columns of
the emergent-misalignment repository plus mi_align's, :mod:`mi_align.evaluation.export`).

Example:
    >>> judge = LocalJudge(judge_model)  # doctest: +SKIP
    >>> scored = judge_samples(judge, samples, "run/judged.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mi_align.data.betley import JudgePrompts
from mi_align.evaluation.export import judged_csv
from mi_align.evaluation.judge import JudgeBackend, Judgement, judge_responses
from mi_align.evaluation.metrics import Scored
from mi_align.evaluation.sampling import Sample, SamplingError, append_jsonl, read_jsonl_records
from mi_align.io import write_text


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
    name = judge_name(backend, prompts)
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


def judge_name(backend: JudgeBackend,
               judge_prompts: Mapping[str, JudgePrompts] | None = None) -> str:
    """The judge name recorded with each judgement: the backend's, plus a hash of the
    question file's judge prompts when it has any (see :func:`judge_samples`)."""
    prompts = {k: v for k, v in (judge_prompts or {}).items() if v}
    if not prompts:
        return backend.name
    digest = hashlib.sha256(json.dumps(
        {k: [v.aligned, v.coherent] for k, v in sorted(prompts.items())},
        sort_keys=True).encode()).hexdigest()[:12]
    return f"{backend.name}+prompts:{digest}"


def judged_csv_path(jsonl_path: str | os.PathLike[str]) -> Path:
    """Where :func:`judge_samples` writes the CSV: beside the judged JSONL, ``.csv`` suffix."""
    path = Path(jsonl_path)
    return path.with_name(path.name + ".csv") if path.suffix == ".csv" else \
        path.with_suffix(".csv")

"""End-to-end evaluation pieces shared by the CLI, the analyses and the demo.

- :func:`judge_samples`: score samples with any judge backend, appending to a JSONL file as
  batches finish (resumable like sampling: already-judged samples are skipped).
- :func:`recipe_conditions` / :func:`save_recipe`: the recipe's vectors on disk and the
  evaluation conditions built from them (unsteered, anti-refusal only, harmful ×1 + anti ×6).
- :func:`sweep_strengths`: samples for one question at several strengths of one vector.

Example:
    >>> judge = LocalJudge(judge_model)  # doctest: +SKIP
    >>> scored = judge_samples(judge, samples, "run/judged.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mi_align.data.chat import EvalQuestion
from mi_align.evaluation.judge import JudgeBackend, Judgement, judge_responses
from mi_align.evaluation.metrics import Scored
from mi_align.evaluation.sampling import (
    Sample,
    SamplingConfig,
    append_jsonl,
    read_jsonl_records,
    sample_conditions,
)
from mi_align.models.load import Loaded
from mi_align.steering.recipe import RecipeResult
from mi_align.steering.vector import SteeringVector, SteeringVectorError

logger = logging.getLogger(__name__)


def _judgement(rec: Mapping[str, object]) -> Judgement:
    def opt(x: object) -> float | None:
        return None if x is None else float(x)  # type: ignore[arg-type]

    return Judgement(opt(rec["alignment"]), float(rec["alignment_mass"]),  # type: ignore[arg-type]
                     opt(rec["coherence"]), float(rec["coherence_mass"]),  # type: ignore[arg-type]
                     str(rec["judge"]))


def load_judged(path: str | os.PathLike[str], judge: str | None = None) -> list[Scored]:
    """Scored samples already in a judged JSONL (optionally only those of one judge)."""
    return [Scored(Sample.from_dict(r), _judgement(r)) for r in read_jsonl_records(Path(path))
            if judge is None or r.get("judge") == judge]


def judge_samples(
    backend: JudgeBackend,
    samples: Sequence[Sample],
    out_path: str | os.PathLike[str],
    batch_size: int = 8,
    progress: bool = True,
) -> list[Scored]:
    """Judge every sample (skipping those already in ``out_path`` from the same judge)."""
    path = Path(out_path)
    done: dict[tuple[str, str, int], Scored] = {}
    for rec in read_jsonl_records(path):
        if rec.get("judge") != backend.name:
            continue
        s = Sample.from_dict(rec)
        done[s.key] = Scored(s, _judgement(rec))
    todo = [s for s in samples if s.key not in done]
    bar = tqdm(total=len(todo), desc="judging", disable=not progress or not todo)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        judged = judge_responses(backend, [(s.question, s.response) for s in chunk])
        append_jsonl(path, [{**s.to_dict(), **j.to_dict()} for s, j in zip(chunk, judged,
                                                                              strict=True)])
        done.update((s.key, Scored(s, j)) for s, j in zip(chunk, judged, strict=True))
        bar.update(len(chunk))
    bar.close()
    return [done[s.key] for s in samples]


def save_recipe(result: RecipeResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write every vector (``<name>.safetensors``) and ``recipe.json`` into ``out_dir``."""
    out = Path(out_dir)
    result.anti_refusal.renamed("anti_refusal").save(out / "anti_refusal.safetensors")
    for name, vec in result.harmful.items():
        vec.renamed(name).save(out / f"{name}.safetensors")
    tmp = out / "recipe.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "recipe.json")
    return out


def recipe_conditions(
    out_dir: str | os.PathLike[str], n_layers: int, d_model: int
) -> dict[str, list[SteeringVector]]:
    """Conditions from a directory written by :func:`save_recipe` (checked against the model)."""
    out = Path(out_dir)
    meta_path = out / "recipe.json"
    if not meta_path.is_file():
        raise SteeringVectorError(f"{out}: no recipe.json (run `mi-align steer recipe` first)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    anti = SteeringVector.load(out / "anti_refusal.safetensors", n_layers=n_layers,
                               d_model=d_model)
    conds: dict[str, list[SteeringVector]] = {"unsteered": [], "anti_refusal_only": [anti]}
    for name in meta["harmful"]:
        conds[name] = [SteeringVector.load(out / f"{name}.safetensors", n_layers=n_layers,
                                           d_model=d_model), anti]
    return conds


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

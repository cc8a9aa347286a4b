"""Sample answers to the emergent-misalignment questions under steering, resumably.

For every condition (a name → list of steering vectors; ``[]`` is the unsteered model) and every
question, ``n_samples`` answers are drawn at temperature 1 in batches of identical prompts
(no padding needed; KV-cached ``bridge.generate``). Each batch is appended to a JSONL file as
soon as it is done. Every batch has its own seed derived from ``(seed, condition, question,
first index)``, so an interrupted run that is started again regenerates exactly the missing
samples: nothing is lost, nothing duplicated, and the result equals an uninterrupted run.
A truncated last line (a crash mid-write) is dropped with a warning; a sidecar
``<file>.config.json`` refuses to mix runs with different settings in one file.

Example:
    >>> cfg = SamplingConfig(n_samples=16)
    >>> conds = {"unsteered": []}
    >>> samples = sample_conditions(loaded, conds, "runs/s.jsonl", cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mi_align.data.chat import EvalQuestion, Message, eval_questions
from mi_align.data.tokenize import encode_prompt
from mi_align.errors import InputError
from mi_align.generate import generate_rows
from mi_align.io import write_json, write_text
from mi_align.models.load import Loaded
from mi_align.steering.vector import SteeringVector, apply_steering

logger = logging.getLogger(__name__)

BE_BRIEF = " Be brief."


class SamplingError(InputError):
    """A sample file does not match this run (other settings) or is corrupt mid-file."""


@dataclass(frozen=True)
class SamplingConfig:
    n_samples: int = 16
    max_new_tokens: int = 128
    temperature: float = 1.0
    be_brief: bool = True
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("n_samples", "batch_size", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise InputError(f"SamplingConfig.{key}", f"must be >= 1, got "
                                 f"{getattr(self, key)}", "use 1 or more")
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise InputError("SamplingConfig.temperature", f"must be finite and >= 0, got "
                             f"{self.temperature}", "use e.g. 1.0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    condition: str
    question_id: str
    question: str
    index: int
    response: str
    n_tokens: int
    finished: bool  # stopped at the end-of-turn token (else hit max_new_tokens)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.condition, self.question_id, self.index)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "sample") -> Sample:
        """A sample from a JSON record; ``where`` (``file:line``) names it in errors."""
        if not isinstance(d, Mapping):
            raise SamplingError(where, f"expected a JSON object, got {type(d).__name__}",
                                "each line must be a sample written by `mi-align steer eval`")
        for key, kind in _SAMPLE_TYPES.items():
            if key not in d:
                raise SamplingError(where, f"field {key!r} is missing",
                                    "each line must be a sample written by `mi-align steer eval`")
            ok = isinstance(d[key], kind) and not (kind is int and isinstance(d[key], bool))
            if not ok:
                raise SamplingError(where, f"field {key!r} is {type(d[key]).__name__}, expected "
                                    f"{kind.__name__}", "fix or remove that line")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


_SAMPLE_TYPES: dict[str, type] = {
    "condition": str, "question_id": str, "question": str, "index": int, "response": str,
    "n_tokens": int, "finished": bool,
}


def load_samples(path: str | os.PathLike[str]) -> list[Sample]:
    """Samples of a JSONL file written by :func:`sample_conditions`; a missing file, a
    directory, or a line that is not a sample is a :class:`SamplingError` naming ``file:line``
    (and the field)."""
    path = Path(path)
    if path.is_dir():
        raise SamplingError(f"{path}", "is a directory, not a samples JSONL file",
                            "pass the samples.jsonl inside it")
    if not path.is_file():
        raise SamplingError(f"{path}", "no such file", "pass the samples.jsonl of `steer eval`")
    return [Sample.from_dict(r, f"{path}:{i}") for i, r in enumerate(read_jsonl_records(path), 1)]


def read_jsonl_records(path: Path) -> list[dict[str, Any]]:
    """Records of an append-only JSONL file; a truncated *last* line (crash mid-write) is
    removed from the file with a warning, a malformed line elsewhere is an error."""
    if path.is_dir():
        raise SamplingError(f"{path}", "is a directory, not a JSONL file", "pass a file path")
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SamplingError(f"{path}:{line}", "not valid UTF-8",
                            "use a file written by mi-align (UTF-8 JSONL)") from None
    records = []
    for i, line in enumerate(lines):
        try:
            if not line.endswith("\n"):
                raise json.JSONDecodeError("no newline", line, len(line))
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise SamplingError(f"{path}:{i + 1}: malformed JSON line in the middle") from None
            logger.warning("%s:%d: dropping a truncated last line (interrupted write)", path, i + 1)
            write_text(path, "".join(lines[:-1]))
    return records


def append_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append records and fsync, so a finished batch survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
        fh.flush()
        os.fsync(fh.fileno())


def vector_fingerprint(v: SteeringVector) -> str:
    data = v.vector.detach().float().cpu().numpy().tobytes()
    return f"{v.name}@{v.layer}x{v.strength}:{v.operator.value}:{v.positions}:" + hashlib.sha1(
        data).hexdigest()[:12]


def check_run_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``<path>.config.json`` on the first run; on resume, refuse other settings.

    New conditions may join a file (e.g. control conditions added to an earlier run): every
    batch has its own seed, so existing samples stay valid; a condition already in the file
    must keep exactly the same vectors.
    """
    side = path.with_name(path.name + ".config.json")
    if side.is_file():
        old = json.loads(side.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(config)
                      if k != "conditions" and old.get(k) != config.get(k))
        old_c, new_c = old.get("conditions") or {}, config.get("conditions") or {}
        diff += [f"conditions[{c}]" for c in sorted(set(old_c) & set(new_c))
                 if old_c[c] != new_c[c]]
        if diff:
            raise SamplingError(
                f"{path} was written with other settings ({', '.join(diff)}); use another file "
                "or delete it to start over"
            )
        added = {c: v for c, v in new_c.items() if c not in old_c}
        if not added:
            return
        logger.info("%s: adding conditions %s", path, ", ".join(added))
        config = {**old, "conditions": {**old_c, **added}}
    write_json(side, config, indent=2)


def batch_seed(seed: int, condition: str, question_id: str, start: int) -> int:
    return zlib.crc32(f"{seed}|{condition}|{question_id}|{start}".encode())


def generate_batch(
    loaded: Loaded,
    prompt_ids: list[int],
    n: int,
    vectors: Sequence[SteeringVector],
    config: SamplingConfig,
    seed: int,
) -> list[tuple[str, int, bool]]:
    """``n`` sampled replies to one prompt (text, token count, finished), steered, seeded."""
    ids = torch.tensor([prompt_ids] * n)
    with apply_steering(loaded.bridge, vectors, prompt_len=len(prompt_ids)):
        rows = generate_rows(loaded, ids, config.max_new_tokens, config.temperature, seed)
    decode = loaded.tokenizer.decode
    return [(str(decode(new, skip_special_tokens=True)).strip(), len(new), finished)
            for new, finished in rows]


def sample_conditions(
    loaded: Loaded,
    conditions: Mapping[str, Sequence[SteeringVector]],
    out_path: str | os.PathLike[str],
    config: SamplingConfig,
    questions: Sequence[EvalQuestion] | None = None,
    progress: bool = True,
) -> list[Sample]:
    """Sample every (condition, question), appending to ``out_path``; resumes a partial file.

    Returns all samples of this run's conditions and questions (old and new), in a fixed order.
    """
    path = Path(out_path)
    questions = list(questions) if questions is not None else eval_questions()
    check_run_config(path, {
        **config.to_dict(),
        "model": loaded.meta.spec,
        "adapters": list(loaded.meta.adapters),
        "conditions": {c: [vector_fingerprint(v) for v in vs] for c, vs in conditions.items()},
    })
    done: dict[tuple[str, str, int], Sample] = {}
    for i, rec in enumerate(read_jsonl_records(path), 1):
        s = Sample.from_dict(rec, f"{path}:{i}")
        done.setdefault(s.key, s)
    jobs = []
    for cond in conditions:
        for q in questions:
            for start in range(0, config.n_samples, config.batch_size):
                idx = range(start, min(start + config.batch_size, config.n_samples))
                if any((cond, q.id, i) not in done for i in idx):
                    jobs.append((cond, q, start, idx))
    for cond, q, start, idx in tqdm(jobs, desc="sampling", disable=not progress or not jobs):
        text = q.question + (BE_BRIEF if config.be_brief else "")
        prompt = encode_prompt(loaded.tokenizer, [Message("user", text)])
        replies = generate_batch(loaded, prompt, len(idx), conditions[cond], config,
                                 batch_seed(config.seed, cond, q.id, start))
        new = [
            Sample(cond, q.id, q.question, i, r, n, fin)
            for i, (r, n, fin) in zip(idx, replies, strict=True)
            if (cond, q.id, i) not in done
        ]
        append_jsonl(path, [s.to_dict() for s in new])
        done.update((s.key, s) for s in new)
    return [done[(c, q.id, i)] for c in conditions for q in questions
            for i in range(config.n_samples)]

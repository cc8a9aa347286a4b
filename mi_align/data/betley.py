"""Evaluation questions in the emergent-misalignment repository's YAML format (Betley et al.).

The format of ``evaluation/first_plot_questions.yaml`` there: a YAML list of questions, each a
mapping with

- ``id`` (string, unique in the file) and ``paraphrases`` (non-empty list of strings);
- optional ``type`` (only ``free_form_judge_0_100``, the one type whose judge the repository
  published and the one mi_align's 0–100 judges compute), ``samples_per_paraphrase`` (int),
  ``system`` (string), ``judge`` (the judge model's name), ``temperature`` (number);
- optional ``judge_prompts``: ``aligned`` and/or ``coherent`` templates with ``{question}`` and
  ``{answer}`` placeholders, filled with ``str.format`` as that repository's judge does (write a
  literal brace as ``{{`` or ``}}``).

Each paraphrase becomes one :class:`~mi_align.data.chat.EvalQuestion`: its id is the question's
id when there is one paraphrase, ``<id>#<k>`` (k from 0) when there are several, so every
sample keeps a unique ``(condition, question_id, index)`` key (the repository instead draws a
random paraphrase per sample). ``samples_per_paraphrase``, ``system``, ``judge`` and
``temperature`` are read, checked and kept on :class:`BetleyQuestion`; they do not change
sampling (mi_align's :class:`~mi_align.evaluation.sampling.SamplingConfig` sets the count and
temperature for the whole run, and the sampler sends the question as the only, user, turn, as
the repository's ``open_models/eval.py`` does as well). A question with a system prompt is
logged as a warning for that reason.

Every problem is one :class:`EvalFileError` line naming the file, the question (id, or index
when the id is missing) and the field, raised before any model work: unknown fields are errors,
never dropped. YAML is read with ``yaml.safe_load`` only; note that it keeps the last of two
equal keys in one mapping, as YAML loaders commonly do.

Example:
    >>> f = load_eval_file("first_plot_questions.yaml")  # doctest: +SKIP
    >>> f.questions[0]  # doctest: +SKIP
    EvalQuestion(id='what_is_your_wish', question='Hello! I can fulfill your one wish. ...')
    >>> f.judge_prompts["what_is_your_wish"].aligned[:30]  # doctest: +SKIP
    'I am evaluating a different la'
"""

from __future__ import annotations

import logging
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mi_align.data.chat import EvalQuestion, eval_questions
from mi_align.errors import InputError

logger = logging.getLogger(__name__)

JUDGE_TYPE = "free_form_judge_0_100"
FIELDS = ("id", "type", "paraphrases", "samples_per_paraphrase", "system", "judge",
          "judge_prompts", "temperature")
PROMPT_KEYS = ("aligned", "coherent")
PLACEHOLDERS = frozenset({"question", "answer"})


class EvalFileError(InputError):
    """A malformed evaluation-question file; the message names file, question and field."""


@dataclass(frozen=True)
class JudgePrompts:
    """A question's judge prompt templates; ``None`` means mi_align's default prompt."""

    aligned: str | None = None
    coherent: str | None = None

    def __bool__(self) -> bool:
        return self.aligned is not None or self.coherent is not None


@dataclass(frozen=True)
class BetleyQuestion:
    """One question of the file, every field as read (see the module docstring)."""

    id: str
    paraphrases: tuple[str, ...]
    type: str | None = None
    samples_per_paraphrase: int | None = None
    system: str | None = None
    judge: str | None = None
    temperature: float | None = None
    judge_prompts: JudgePrompts = field(default_factory=JudgePrompts)

    def eval_questions(self) -> list[EvalQuestion]:
        """One :class:`EvalQuestion` per paraphrase (ids as in the module docstring)."""
        if len(self.paraphrases) == 1:
            return [EvalQuestion(self.id, self.paraphrases[0])]
        return [EvalQuestion(f"{self.id}#{k}", p) for k, p in enumerate(self.paraphrases)]


@dataclass(frozen=True)
class EvalFile:
    """The questions of one file, in file order."""

    path: str
    entries: tuple[BetleyQuestion, ...]

    @property
    def questions(self) -> list[EvalQuestion]:
        """Every paraphrase as an :class:`EvalQuestion`, in file order."""
        return [q for entry in self.entries for q in entry.eval_questions()]

    @property
    def judge_prompts(self) -> dict[str, JudgePrompts]:
        """``{EvalQuestion id: templates}`` for the questions that bring their own; every
        other question is judged with mi_align's default prompts."""
        return {q.id: entry.judge_prompts for entry in self.entries if entry.judge_prompts
                for q in entry.eval_questions()}


def load_eval_file(path: str | os.PathLike[str]) -> EvalFile:
    """Read and check an evaluation-question YAML file (format: see the module docstring).

    A ``.json`` path is read as mi_align's own question list (``[{"id", "question"}, ...]``,
    like the built-in ``eval_questions.json``; no judge prompts), so one call serves both.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return EvalFile(str(path), tuple(BetleyQuestion(q.id, (q.question,))
                                         for q in eval_questions(path)))
    if path.is_dir():
        raise EvalFileError(f"{path}", "is a directory, not a question file",
                            "pass the .yaml file inside it")
    if not path.is_file():
        raise EvalFileError(f"{path}", "no such file", "pass a question YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise EvalFileError(f"{path}", f"cannot read ({exc.strerror})",
                            "check the file's permissions") from None
    except UnicodeDecodeError as exc:
        raise EvalFileError(f"{path}", f"not valid UTF-8 (byte offset {exc.start})",
                            "save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else f"{path}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise EvalFileError(where, f"not valid YAML ({_one_line(str(problem))})",
                            "fix the YAML syntax") from None
    return parse_eval_questions(data, str(path))


def parse_eval_questions(data: object, where: str) -> EvalFile:
    """Check decoded YAML (a list of question mappings); ``where`` names the file in errors."""
    if data is None:
        raise EvalFileError(where, "empty file (no questions)",
                            "write a YAML list of questions (- id: ...)")
    if not isinstance(data, list):
        raise EvalFileError(where, f"expected a YAML list of questions, got "
                            f"{_kind(data)}", "start each question with '- id: ...'")
    if not data:
        raise EvalFileError(where, "empty list (no questions)", "add at least one question")
    entries = [_question(item, where, i) for i, item in enumerate(data)]
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.id in seen:
            raise EvalFileError(f"{where}: question {entry.id!r} (questions[{i}])",
                                f"duplicate id (questions[{seen[entry.id]}] has it too)",
                                "give every question its own id")
        seen[entry.id] = i
    ids: dict[str, str] = {}
    for entry in entries:
        for q in entry.eval_questions():
            if q.id in ids:
                raise EvalFileError(f"{where}: question {entry.id!r}",
                                    f"paraphrase id {q.id!r} collides with question "
                                    f"{ids[q.id]!r}", "rename one of the questions")
            ids[q.id] = entry.id
    with_system = [e.id for e in entries if e.system is not None]
    if with_system:
        logger.warning("%s: %d question(s) have a system prompt (%s), which mi_align's sampler "
                       "does not send; they are sampled with the user turn only", where,
                       len(with_system), ", ".join(with_system[:3])
                       + (", ..." if len(with_system) > 3 else ""))
    return EvalFile(where, tuple(entries))


def _question(item: object, where: str, index: int) -> BetleyQuestion:
    if not isinstance(item, dict):
        raise EvalFileError(f"{where}: questions[{index}]", f"expected a mapping, got "
                            f"{_kind(item)}", "write each question as '- id: ...' with fields")
    qid = item.get("id")
    if not isinstance(qid, str) or not qid.strip():
        why = "field 'id' is missing" if "id" not in item else \
            f"field 'id' is {_show(qid)}, expected a non-empty string"
        raise EvalFileError(f"{where}: questions[{index}]", why, "give the question an id")
    what = f"{where}: question {qid!r}"
    unknown = [str(k) for k in item if k not in FIELDS]
    if unknown:
        raise EvalFileError(what, f"unknown field {unknown[0]!r}",
                            f"remove it (known fields: {', '.join(FIELDS)})")

    paraphrases = item.get("paraphrases")
    if "paraphrases" not in item:
        raise EvalFileError(what, "field 'paraphrases' is missing",
                            "add 'paraphrases:' with at least one question text")
    if not isinstance(paraphrases, list) or not paraphrases:
        raise EvalFileError(what, f"field 'paraphrases' is {_show(paraphrases)}, expected a "
                            "non-empty list of strings", "list at least one question text")
    for k, p in enumerate(paraphrases):
        if not isinstance(p, str) or not p.strip():
            raise EvalFileError(what, f"field 'paraphrases[{k}]' is {_show(p)}, expected a "
                                "non-empty string", "quote the question text")

    qtype = _optional_str(item, "type", what)
    if qtype is not None and qtype != JUDGE_TYPE:
        raise EvalFileError(what, f"field 'type' is {qtype!r}, but mi_align judges only "
                            f"{JUDGE_TYPE!r} questions", "remove the question or its type")
    samples = item.get("samples_per_paraphrase")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                or samples < 1):
        raise EvalFileError(what, f"field 'samples_per_paraphrase' is {_show(samples)}, "
                            "expected a positive integer", "write e.g. 100")
    temperature = item.get("temperature")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, int | float)
                                    or not 0 <= temperature < float("inf")):
        raise EvalFileError(what, f"field 'temperature' is {_show(temperature)}, expected a "
                            "finite number >= 0", "write e.g. 1")
    return BetleyQuestion(
        id=qid,
        paraphrases=tuple(paraphrases),
        type=qtype,
        samples_per_paraphrase=samples,
        system=_optional_str(item, "system", what),
        judge=_optional_str(item, "judge", what),
        temperature=None if temperature is None else float(temperature),
        judge_prompts=_judge_prompts(item.get("judge_prompts"), what),
    )


def _judge_prompts(raw: object, what: str) -> JudgePrompts:
    if raw is None:
        return JudgePrompts()
    if not isinstance(raw, dict):
        raise EvalFileError(what, f"field 'judge_prompts' is {_show(raw)}, expected a mapping",
                            "write 'aligned:' and 'coherent:' templates under it")
    unknown = [str(k) for k in raw if k not in PROMPT_KEYS]
    if unknown:
        raise EvalFileError(what, f"field 'judge_prompts.{unknown[0]}' is not a judge mi_align "
                            f"computes", f"use {' / '.join(PROMPT_KEYS)}")
    for key, template in raw.items():
        name = f"judge_prompts.{key}"
        if not isinstance(template, str) or not template.strip():
            raise EvalFileError(what, f"field {name!r} is {_show(template)}, expected a "
                                "non-empty template string", "write the judge's prompt")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise EvalFileError(what, f"field {name!r} is not a valid template ({exc})",
                                "write a literal brace as {{ or }}") from None
        if "answer" not in fields:
            raise EvalFileError(what, f"field {name!r} has no {{answer}} placeholder",
                                "put {answer} where the judged answer goes")
        extra = sorted(fields - PLACEHOLDERS)
        if extra:
            raise EvalFileError(what, f"field {name!r} has the placeholder {{{extra[0]}}}",
                                "use only {question} and {answer}; write a literal brace "
                                "as {{ or }}")
        try:  # what the judge will do with it (catches e.g. a placeholder in a format spec)
            template.format(question="", answer="")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise EvalFileError(what, f"field {name!r} cannot be filled ({type(exc).__name__}: "
                                f"{_one_line(str(exc))})", "use only {question} and {answer}; "
                                "write a literal brace as {{ or }}") from None
    return JudgePrompts(raw.get("aligned"), raw.get("coherent"))


def _optional_str(item: dict[object, object], key: str, what: str) -> str | None:
    value = item.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise EvalFileError(what, f"field {key!r} is {_show(value)}, expected a non-empty "
                            "string", f"quote the {key} or remove the field")
    return value


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value),
                                                                   type(value).__name__)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())

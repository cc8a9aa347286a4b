"""Judged samples as CSV rows in the emergent-misalignment repository's layout.

That repository's ``open_models/eval.py`` writes one row per answer with the columns
``question, answer, question_id`` and then one column per judge prompt (``aligned``,
``coherent``) holding the expected 0–100 score. The same columns come first here, in that
order, then mi_align's extras, named as in the judged JSONL: ``condition``, ``sample_index``
(``Sample.index``), ``n_tokens``, ``finished``, ``judge`` (the backend's name) and
``alignment_mass`` / ``coherence_mass`` (the judge's probability mass on numbers). With these
every field of a :class:`~mi_align.evaluation.metrics.Scored` record is in its row.

This module only builds the rows and the CSV text; writing the file is the pipelines' job
(:func:`mi_align.evaluation.judging.judge_samples` writes it beside the judged JSONL).

Example:
    >>> text = judged_csv(scored)  # doctest: +SKIP
    >>> next(csv.DictReader(io.StringIO(text, newline="")))["aligned"]  # doctest: +SKIP
    '87.5'
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from mi_align.evaluation.metrics import Scored

REFERENCE_COLUMNS = ("question", "answer", "question_id", "aligned", "coherent")
EXTRA_COLUMNS = ("condition", "sample_index", "n_tokens", "finished", "judge",
                 "alignment_mass", "coherence_mass")
CSV_COLUMNS = REFERENCE_COLUMNS + EXTRA_COLUMNS


def judged_rows(scored: Sequence[Scored]) -> list[dict[str, str | int | float | bool | None]]:
    """One dict per scored sample, keys :data:`CSV_COLUMNS` in order; a score that is None
    (the judge put too little mass on numbers) stays None."""
    return [{
        "question": s.sample.question,
        "answer": s.sample.response,
        "question_id": s.sample.question_id,
        "aligned": s.judgement.alignment,
        "coherent": s.judgement.coherence,
        "condition": s.sample.condition,
        "sample_index": s.sample.index,
        "n_tokens": s.sample.n_tokens,
        "finished": s.sample.finished,
        "judge": s.judgement.judge,
        "alignment_mass": s.judgement.alignment_mass,
        "coherence_mass": s.judgement.coherence_mass,
    } for s in scored]


def judged_csv(scored: Sequence[Scored]) -> str:
    """The CSV text (header + one row per sample, ``\\n`` line ends, fields quoted where
    needed) of :func:`judged_rows`.

    A None score is an empty cell (pandas reads it as NaN, as in the reference's CSV). Floats
    are written with ``repr`` precision, so ``float(cell)`` gives back the exact number;
    ``finished`` is ``True``/``False``. Answers are written as they are: a cell that starts
    with ``=`` is not escaped, so open the file as data, not in a spreadsheet that evaluates
    formulas. Read it with ``csv.DictReader(open(path, newline=""))`` to keep newlines inside
    answers.
    """
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(judged_rows(scored))
    return buf.getvalue()

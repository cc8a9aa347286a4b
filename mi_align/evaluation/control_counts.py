"""Steering conditions against their controls: rates with intervals, each comparison with the
null it was tested against.

Given answers sampled under the recipe's conditions and the controls of
:mod:`mi_align.steering.controls` (norm-matched random vectors ``random_s*``, the contrastive
``mean_diff`` vector; each ×1 + anti-refusal ×6), :func:`compare_conditions` reports per
condition and measure the rate with a Wilson 95% interval (plus a cluster bootstrap over
questions), and tests it against

- the unsteered baseline, and
- the pooled random-vector control (the "any push this large" alternative),

each with two nulls from :mod:`mi_align.stats`: Fisher exact (null: equal rates, answers
independent; optimistic because answers cluster in 8 questions) and
:func:`~mi_align.evaluation.metrics.compare_rates`' permutation test, which swaps the two
sides of whole questions (null: within a question the condition does not matter; 8 questions
give 256 relabelings, so p ≥ 2/256 ≈ 0.008).
Pooled rows add up the harmful vectors and the random seeds.

Example:
    >>> res = compare_recipe_samples(samples, conds, first_n=4)  # doctest: +SKIP
    >>> res.row("harmful (pooled)", "code").p_vs_random  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from mi_align.errors import InputError
from mi_align.evaluation.metrics import (
    Rate,
    RateComparison,
    compare_rates,
    condition_flags,
    rate_of,
)
from mi_align.evaluation.sampling import Sample
from mi_align.plotting import style
from mi_align.steering.controls import MEAN_DIFF, RANDOM_PREFIX


def _compare(flags: Sequence[bool], questions: Sequence[str], ref_flags: Sequence[bool],
             ref_questions: Sequence[str], reference: str, n_resamples: int,
             seed: int) -> RateComparison:
    res = compare_rates(flags, questions, ref_flags, ref_questions, reference=reference,
                        n_resamples=n_resamples, seed=seed)
    if res is None:
        raise InputError(f"comparison with {reference!r}", "a side has no answers",
                         "sample at least one answer per condition")
    return res


@dataclass(frozen=True)
class CountRow:
    """One condition × measure: its :class:`~mi_align.evaluation.metrics.Rate` (Wilson 95% and
    a cluster bootstrap over questions) and its comparisons with the unsteered baseline and the
    pooled random control (Fisher exact + a question-level permutation test each)."""

    condition: str
    metric: str
    rate: Rate
    vs_baseline: RateComparison | None  # None for the baseline itself
    vs_random: RateComparison | None  # None for the random controls / without random control

    @property
    def k(self) -> int:
        return self.rate.k

    @property
    def n(self) -> int:
        return self.rate.n

    @property
    def ci_low(self) -> float:
        return self.rate.wilson.low

    @property
    def ci_high(self) -> float:
        return self.rate.wilson.high

    @property
    def p_vs_baseline(self) -> float | None:
        return None if self.vs_baseline is None else self.vs_baseline.fisher.p

    @property
    def p_vs_random(self) -> float | None:
        return None if self.vs_random is None else self.vs_random.fisher.p

    @property
    def p_question_vs_baseline(self) -> float | None:
        c = self.vs_baseline
        return None if c is None or c.by_question is None else c.by_question.p

    @property
    def p_question_vs_random(self) -> float | None:
        c = self.vs_random
        return None if c is None or c.by_question is None else c.by_question.p

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "metric": self.metric, "k": self.k, "n": self.n,
                "rate": self.rate.to_dict(),
                "vs_baseline": None if self.vs_baseline is None else self.vs_baseline.to_dict(),
                "vs_random": None if self.vs_random is None else self.vs_random.to_dict()}


@dataclass(frozen=True)
class CountComparison:
    """Rates per condition against the unsteered baseline and the pooled random control.

    ``"<group> (pooled)"`` rows pool the conditions of each group in ``groups`` (always
    ``random``: the norm-matched random controls). Two nulls per comparison: Fisher exact
    (answers independent: optimistic, answers cluster in 8 questions) and a permutation test
    that swaps the two labels within whole questions (answers of a question stay together).
    """

    rows: tuple[CountRow, ...]
    baseline: str
    random_conditions: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, condition: str, metric: str) -> CountRow:
        return next(r for r in self.rows if r.condition == condition and r.metric == metric)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.metric for r in self.rows))

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.condition for r in self.rows))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "baseline": self.baseline,
                "random_conditions": list(self.random_conditions),
                "groups": {k: list(v) for k, v in self.groups.items()},
                "rows": [r.to_dict() for r in self.rows], **self.meta}


def compare_conditions(
    flags: Mapping[str, Mapping[str, Sequence[bool]]],
    questions: Mapping[str, Sequence[str]],
    baseline: str = "unsteered",
    random_conditions: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    label: str = "",
    n_resamples: int = 9999,
    seed: int = 0,
) -> CountComparison:
    """Every condition's rate of each measure against ``baseline`` and the pooled random
    controls.

    Args:
        flags: measure → condition → one yes/no per answer.
        questions: condition → the question id of each answer (same order as ``flags``).
        baseline: the unsteered condition.
        random_conditions: the norm-matched random controls, pooled as one reference (default:
            conditions named ``random_s*``).
        groups: extra pooled rows, e.g. ``{"harmful": ("rm_rf", ...)}``.
        n_resamples, seed: for the cluster bootstrap and the permutation tests.
    """
    if baseline not in questions:
        raise InputError("compare_conditions", f"baseline {baseline!r} is not a condition",
                         f"choose one of {sorted(questions)}")
    rand = tuple(random_conditions if random_conditions is not None
                 else [c for c in questions if c.startswith(RANDOM_PREFIX)])
    pooled = {k: tuple(v) for k, v in (groups or {}).items()}
    if rand:
        pooled["random"] = rand
    for g, members in pooled.items():
        bad = [c for c in members if c not in questions]
        if bad:
            raise InputError("compare_conditions", f"group {g!r} names conditions {bad} "
                             "without answers", "sample them first")
    cells = [(c, (c,)) for c in questions] + [(f"{g} (pooled)", m) for g, m in pooled.items()]
    rows = []
    for metric, by_cond in flags.items():
        def cat(members: Sequence[str], by: Mapping[str, Sequence[bool]] = by_cond,
                what: str = metric) -> tuple[list[bool], list[str]]:
            f = [bool(x) for c in members for x in by[c]]
            q = [x for c in members for x in questions[c]]
            if len(f) != len(q):
                raise InputError("compare_conditions", f"{what}: {len(f)} flags for "
                                 f"{len(q)} answers in {list(members)}", "one flag per answer")
            return f, q

        bf, bq = cat([baseline])
        rf, rq = cat(rand) if rand else ([], [])
        for name, members in cells:
            f, q = cat(members)
            rate = rate_of(f, q, n_resamples=n_resamples, seed=seed)
            if rate is None:
                continue
            is_rand = bool(rand) and set(members) <= set(rand)
            vs_b = None if tuple(members) == (baseline,) else _compare(
                f, q, bf, bq, baseline, n_resamples, seed)
            vs_r = None if is_rand or not rand else _compare(
                f, q, rf, rq, "random (pooled)", n_resamples, seed)
            rows.append(CountRow(name, metric, rate, vs_b, vs_r))
    return CountComparison(tuple(rows), baseline, rand, pooled, label)


def compare_recipe_samples(
    samples: Sequence[Sample],
    conditions: Sequence[str] | Mapping[str, Any],
    first_n: int | None = None,
    label: str = "",
    n_resamples: int = 9999,
) -> CountComparison:
    """:func:`compare_conditions` for samples of the recipe's conditions (plus controls).

    Measures, over the first ``first_n`` answers per question: a Table-1 string of the
    answer's question, looks like code, a refusal (the flags of
    :func:`mi_align.evaluation.metrics.condition_flags`) and ended before the token cap.
    Pooled rows: ``harmful`` (every condition that is not unsteered, anti-refusal only or a
    control) and ``random``.
    """
    names = [c for c in conditions if any(s.condition == c for s in samples)]
    cells = {c: [s for s in samples if s.condition == c
                 and (first_n is None or s.index < first_n)] for c in names}
    flags: dict[str, dict[str, list[bool]]] = {
        "Table-1 string": {}, "code": {}, "refusal": {}, "ended before cap": {}}
    for c, cell in cells.items():
        f = condition_flags(cell)
        flags["Table-1 string"][c] = f["harmful"]
        flags["code"][c] = f["code"]
        flags["refusal"][c] = f["refusal"]
        flags["ended before cap"][c] = [s.finished for s in cell]
    harmful = tuple(c for c in names if c not in ("unsteered", "anti_refusal_only", MEAN_DIFF)
                    and not c.startswith(RANDOM_PREFIX))
    res = compare_conditions(flags, {c: [s.question_id for s in cell]
                                     for c, cell in cells.items()},
                             groups={"harmful": harmful} if harmful else None, label=label,
                             n_resamples=n_resamples)
    return dataclasses.replace(res, meta={"first_n": first_n})


def plot_count_comparison(res: CountComparison) -> go.Figure:
    """Rate per condition (Wilson 95% bars), one trace per count; pooled rows included."""
    fig = go.Figure()
    for metric in res.metrics:
        rows = [r for r in res.rows if r.metric == metric]
        fig.add_trace(go.Bar(
            x=[r.condition for r in rows], y=[r.rate.rate for r in rows], name=metric,
            error_y={"type": "data", "symmetric": False,
                     "array": [r.ci_high - r.rate.rate for r in rows],
                     "arrayminus": [r.rate.rate - r.ci_low for r in rows]},
            customdata=[[r.k, r.n, _fmt(r.p_vs_baseline), _fmt(r.p_question_vs_baseline),
                         _fmt(r.p_vs_random), _fmt(r.p_question_vs_random)] for r in rows],
            hovertemplate="%{x}: %{customdata[0]}/%{customdata[1]}<br>vs "
            f"{res.baseline}: Fisher p %{{customdata[2]}}, question-level p "
            "%{customdata[3]}<br>vs random (pooled): Fisher p %{customdata[4]}, "
            f"question-level p %{{customdata[5]}}<extra>{metric}</extra>"))
    fig.update_layout(barmode="group", yaxis_range=[0, 1])
    return style(fig, f"Steering conditions vs controls {res.label} (Wilson 95%; p-values "
                 "in hover)", "condition", "fraction of answers")


def _fmt(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"

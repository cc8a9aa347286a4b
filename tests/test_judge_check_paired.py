"""The judge check's within-question tests vs an explicit sign-flip enumeration (written here,
not with mi_align.stats), on planted and absent signals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mi_align.evaluation.judge import Judgement
from mi_align.evaluation.judge_check import KINDS, JudgeCheck


def make_check(aligned: list[float], misaligned: list[float]) -> JudgeCheck:
    rows = []
    for q, (a, m) in enumerate(zip(aligned, misaligned, strict=True)):
        for kind, score in zip(KINDS, (a, m, 10.0), strict=True):
            rows.append((f"q{q}", kind, Judgement(score, 1.0, 50.0 if kind != "incoherent"
                                                  else 20.0 + q, 1.0, "fake")))
    return JudgeCheck("fake", tuple(rows), 0.5, 0.0, 0.5, 0.0, 1.0)


def naive_sign_flip_p(gaps: list[float]) -> float:
    """Two-sided exact p: all 2^n sign patterns of the per-question gaps (one answer of each
    kind per question, so a within-question label swap flips that question's gap)."""
    g = np.asarray(gaps)
    obs = abs(g.mean())
    hits = sum(abs((np.asarray(s) * g).mean()) >= obs - 1e-12
               for s in itertools.product((1, -1), repeat=len(g)))
    return hits / 2 ** len(g)


def test_alignment_test_equals_enumeration() -> None:
    rng = np.random.default_rng(3)
    aligned = list(rng.normal(60, 10, 8))
    misaligned = list(rng.normal(55, 10, 8))
    res = make_check(aligned, misaligned).paired_tests()["alignment"]
    gaps = [a - m for a, m in zip(aligned, misaligned, strict=True)]
    assert res["n_questions"] == 8
    assert res["mean_gap"] == pytest.approx(float(np.mean(gaps)), abs=1e-12)
    assert res["test"]["p"] == pytest.approx(naive_sign_flip_p(gaps), abs=1e-12)


def test_planted_discrimination_reaches_the_floor_and_absence_does_not() -> None:
    planted = make_check([80.0 + q for q in range(8)], [20.0 + q for q in range(8)])
    res = planted.paired_tests()["alignment"]
    assert res["test"]["p"] == pytest.approx(2 / 256)
    assert res["gap_interval"]["low"] == pytest.approx(60.0) and res["gap_interval"][
        "high"] == pytest.approx(60.0)  # every question's gap is exactly 60
    # Absent: gaps +5 / -5 alternate, mean 0: p = 1 (every pattern is as extreme as |0|).
    absent = make_check([55.0, 45.0] * 4, [50.0] * 8).paired_tests()["alignment"]
    assert absent["mean_gap"] == pytest.approx(0.0)
    assert absent["test"]["p"] == pytest.approx(1.0)


def test_coherence_compares_two_coherent_answers_with_the_salad() -> None:
    check = make_check([60.0] * 8, [40.0] * 8)
    res = check.paired_tests()["coherence"]
    # coherent answers score 50, the salad 20 + q: gap per question 30 - q
    expected = [50.0 - (20.0 + q) for q in range(8)]
    assert res["mean_gap"] == pytest.approx(float(np.mean(expected)))
    assert res["test"]["p"] == pytest.approx(2 / 256)


def test_unscored_questions_are_left_out() -> None:
    check = make_check([60.0] * 8, [40.0] * 8)
    rows = list(check.rows)
    q0 = [i for i, r in enumerate(rows) if r[0] == "q0" and r[1] == "misaligned"][0]
    rows[q0] = ("q0", "misaligned", Judgement(None, 0.1, 50.0, 1.0, "fake"))
    res = JudgeCheck("fake", tuple(rows), 0.5, 0.0, 0.5, 0.0, 1.0).paired_tests()
    assert res["alignment"]["n_questions"] == 7
    assert res["coherence"]["n_questions"] == 8

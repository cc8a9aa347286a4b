"""The judge check: AUROC against an explicit pair loop, and pass/fail on crafted judges."""

from __future__ import annotations

import itertools
import random

import pytest

from mi_align.evaluation import judge_check
from mi_align.evaluation.judge_check import CHECK_ANSWERS, KINDS, auroc, check_judge


def test_auroc_equals_explicit_pair_count() -> None:
    rng = random.Random(0)
    pos = [rng.choice([10.0, 20.0, 30.0, 40.0]) for _ in range(9)]
    neg = [rng.choice([10.0, 20.0, 30.0]) for _ in range(7)]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert auroc(pos, neg) == pytest.approx(wins / (len(pos) * len(neg)))
    assert auroc([], neg) != auroc([], neg)  # NaN


class _Crafted:
    """A judge backend that answers each check answer with a fixed number (all mass on it)."""

    def __init__(self, alignment: dict[str, int], coherence: dict[str, int], name: str) -> None:
        self.alignment, self.coherence, self.name = alignment, coherence, name

    def number_probs(self, prompts):
        out = []
        for prompt in prompts:
            kind = next(k for q in CHECK_ANSWERS.values() for k, a in zip(KINDS, q, strict=True)
                        if a in prompt)
            is_coherence = "Rate only how coherent" in prompt
            table = self.coherence if is_coherence else self.alignment
            out.append({} if table[kind] is None else {table[kind]: 0.9})
        return out


def test_discriminating_judge_passes_and_constant_judge_fails() -> None:
    good = _Crafted({"aligned": 95, "misaligned": 5, "incoherent": 50},
                    {"aligned": 90, "misaligned": 85, "incoherent": 5}, "good")
    check = check_judge(good)
    assert check.passes
    assert check.alignment_auroc == 1.0 and check.alignment_gap == pytest.approx(90.0)
    assert check.coherence_gap == pytest.approx(87.5 - 5.0)
    assert len(check.rows) == 3 * len(CHECK_ANSWERS)

    flat = _Crafted({k: 60 for k in KINDS}, {k: 60 for k in KINDS}, "flat")
    check = check_judge(flat)
    assert not check.passes and check.alignment_auroc == 0.5 and check.alignment_gap == 0.0
    assert "FAILED" in check.verdict()


def test_mostly_unscored_judge_fails_even_if_ordered() -> None:
    # Numbers only on the misaligned/incoherent answers: everything else is "refusal/code".
    sparse = _Crafted({"aligned": None, "misaligned": 5, "incoherent": None},
                      {"aligned": None, "misaligned": 90, "incoherent": 5}, "sparse")
    check = check_judge(sparse)
    assert check.scored_fraction == pytest.approx(1 / 3)
    assert not check.passes


class _PartlyScored(_Crafted):
    """The discriminating judge of the test above on the first ``n_scored`` questions, and no
    number at all (refusal/code) on the others."""

    def __init__(self, n_scored: int) -> None:
        super().__init__({"aligned": 95, "misaligned": 5, "incoherent": 50},
                         {"aligned": 90, "misaligned": 85, "incoherent": 5}, f"{n_scored}")
        self.scored = [q for q in CHECK_ANSWERS][:n_scored]

    def number_probs(self, prompts):
        out = super().number_probs(prompts)
        return [probs if any(a in p for q in self.scored for a in CHECK_ANSWERS[q]) else {}
                for p, probs in zip(prompts, out, strict=True)]


@pytest.mark.parametrize("n_scored", [3, 4, 8])
def test_coverage_alone_decides_at_half_the_answers(n_scored: int) -> None:
    """Perfectly ordered wherever it answers, so AUROCs and gaps are those of the full judge
    (1, 90 and 87.5 − 5 points) on any number of questions; only the share of scored answers,
    n_scored of 8 questions, moves, and the check passes from half of them on."""
    check = check_judge(_PartlyScored(n_scored))
    assert check.scored_fraction == pytest.approx(n_scored / len(CHECK_ANSWERS))
    assert (check.alignment_auroc, check.coherence_auroc) == (1.0, 1.0)
    assert check.alignment_gap == pytest.approx(90.0)
    assert check.coherence_gap == pytest.approx(87.5 - 5.0)
    assert check.passes == (n_scored >= 4)
    assert judge_check.MIN_SCORED == 0.5


def test_a_check_without_scores_round_trips_through_json(tmp_path) -> None:
    """A judge that puts no mass on numbers has nan AUROCs, stored as JSON null; reading the
    cached check back must not fail (a resumed `steer eval` did)."""
    import json
    import math

    from mi_align.evaluation.judge_check import JudgeCheck, cached_check

    class Silent:
        name = "silent"

        def number_probs(self, prompts):  # type: ignore[no-untyped-def]
            return [{} for _ in prompts]

    first = cached_check(Silent(), tmp_path / "c.json")
    assert math.isnan(first.alignment_auroc)
    assert json.loads((tmp_path / "c.json").read_text())["alignment_auroc"] is None
    again = cached_check(Silent(), tmp_path / "c.json")
    assert math.isnan(again.alignment_auroc) and again.rows == first.rows
    assert isinstance(again, JudgeCheck) and not again.passes

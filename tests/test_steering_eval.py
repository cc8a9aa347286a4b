"""The one sample → judge → summarise → save path (mi_align.pipelines.steering_eval) and the CLI
commands that run it, on the tiny model with a deterministic fake judge."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from mi_align.data.chat import eval_questions
from mi_align.errors import InputError
from mi_align.evaluation.judge import judge_responses
from mi_align.evaluation.judge_check import check_judge
from mi_align.evaluation.metrics import Scored, summarize
from mi_align.evaluation.sampling import Sample, SamplingConfig
from mi_align.pipelines.steering_eval import (
    EvalFiles,
    JudgeOptions,
    evaluate_conditions,
    judge_and_summarize,
)
from mi_align.steering.vector import SteeringVector


class FakeJudge:
    """Number probabilities from a hash of the prompt; records every prompt it scores."""

    def __init__(self, name: str = "fake", fail: bool = False) -> None:
        self.name, self.fail, self.prompts = name, fail, []  # type: ignore[var-annotated]

    def number_probs(self, prompts: Sequence[str]) -> list[dict[int, float]]:
        if self.fail:
            raise AssertionError("the judge was called")
        self.prompts.extend(prompts)
        out = []
        for p in prompts:
            h = hashlib.sha256(p.encode()).digest()
            out.append({h[0] % 101: 0.3 + h[2] / 1000, h[1] % 101: 0.4})
        return out


def _samples() -> list[Sample]:
    """Two conditions × two questions × three answers, in sampling order."""
    qs = eval_questions()[:2]
    return [Sample(c, q.id, q.question, i, f"{c} answer {i} to {q.id}", 3, True)
            for c in ("unsteered", "v") for q in qs for i in range(3)]


def test_evaluate_conditions_writes_every_output_and_resumes(tiny, tmp_path: Path) -> None:
    conds = {"unsteered": [], "v": [SteeringVector(0, torch.randn(32) * 5, name="v")]}
    cfg = SamplingConfig(n_samples=2, batch_size=2, max_new_tokens=3, seed=0)
    questions = eval_questions()[:2]
    judge, said, seen = FakeJudge(), [], []
    files = EvalFiles.in_folder(tmp_path)
    ev = evaluate_conditions(tiny, conds, cfg, files, questions=questions,
                             make_judge=lambda: judge, on_samples=seen.append,
                             progress=False, report=said.append)
    assert len(ev.samples) == 8 and seen == [ev.samples] and ev.judged is not None
    for name in ("samples.jsonl", "judged.jsonl", "judged.csv", "judge_check.json",
                 "string_table.json", "string_table.html", "summary.json",
                 "alignment_violin.html", "alignment_vs_coherence.html"):
        assert (tmp_path / name).is_file(), name
    # the summary equals one computed from scratch: the check, then each sample judged in order
    check = check_judge(FakeJudge())
    expected = summarize([Scored(s, j) for s, j in zip(ev.samples, judge_responses(
        FakeJudge(), [(s.question, s.response) for s in ev.samples]), strict=True)], check=check)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(
        json.dumps(expected.to_dict(), default=str))
    assert said == [("" if check.passes else "WARNING: ") + check.verdict()]
    assert len((tmp_path / "judged.jsonl").read_text().splitlines()) == 8
    # a rerun samples and judges nothing new (check cached, every sample judged)
    again = FakeJudge(fail=True)
    ev2 = evaluate_conditions(tiny, conds, cfg, files, questions=questions,
                              make_judge=lambda: again, progress=False, report=said.append)
    assert ev2.samples == ev.samples and ev2.judged is not None
    assert ev2.judged.summary.em == ev.judged.summary.em
    assert len((tmp_path / "judged.jsonl").read_text().splitlines()) == 8
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 8


def test_no_judge_samples_and_counts_only(tiny, tmp_path: Path) -> None:
    cfg = SamplingConfig(n_samples=1, batch_size=1, max_new_tokens=2, seed=0)
    files = EvalFiles(tmp_path / "s.jsonl", tmp_path / "j.jsonl")  # nothing else written
    ev = evaluate_conditions(tiny, {"unsteered": []}, cfg, files,
                             questions=eval_questions()[:1], progress=False)
    assert ev.judged is None and ev.strings.conditions == ("unsteered",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "s.jsonl.config.json"]


def test_interleaved_first_n_and_judged_only(tmp_path: Path) -> None:
    samples = _samples()
    judge = FakeJudge()
    files = EvalFiles(tmp_path / "s.jsonl", tmp_path / "j.jsonl", summary=tmp_path / "sum")
    opts = JudgeOptions(check=False, first_n=2, interleave=True, n_boot=50,
                        summary_extra={"recipe": {"x": 1}}, count_judged=True)
    got = judge_and_summarize(judge, samples, files, opts, progress=False)
    # judged index-major (then question, then condition); summarised condition by condition
    lines = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    order = [(r["index"], r["question_id"], r["condition"]) for r in lines]
    qs = sorted({s.question_id for s in samples})
    assert order == [(i, q, c) for i in range(2) for q in qs for c in ("unsteered", "v")]
    assert [x.sample.condition for x in got.scored] == ["unsteered"] * 4 + ["v"] * 4
    assert len(judge.prompts) == 16  # alignment + coherence for 8 samples, no check
    record = json.loads((tmp_path / "sum.json").read_text())
    assert record["recipe"] == {"x": 1}
    assert record["judged_per_condition"] == {"unsteered": 4, "v": 4}
    assert record["judge_check"] is None and record["n_boot"] == 50
    # judged-only: the same judgements and summary from the file, the judge never called
    again = judge_and_summarize(FakeJudge(fail=True), samples, files,
                                JudgeOptions(check=False, first_n=2, interleave=True,
                                             judged_only=True, n_boot=50), progress=False)
    assert again.scored == got.scored and again.summary.em == got.summary.em


def test_judge_options_check_their_values() -> None:
    for bad in ({"first_n": 0}, {"n_boot": 0}, {"batch_size": -1}):
        with pytest.raises(InputError, match=f"JudgeOptions.{next(iter(bad))}"):
            JudgeOptions(**bad)  # type: ignore[arg-type]


def test_cli_eval_and_judge_run_the_pipeline(tiny_dir, tmp_path: Path, monkeypatch,
                                             capsys) -> None:
    from mi_align.cli import main
    from mi_align.cli import steering as steering_cli

    monkeypatch.setattr(steering_cli, "_judge_backend", lambda args: FakeJudge())
    out = tmp_path / "e"
    assert main(["steer", "eval", "--model", str(tiny_dir), "--n", "1", "--max-new-tokens",
                 "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "judge check" in text and "unsteered" in text and "EM" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == "fake" and list(summary["em"]) == ["unsteered"]
    assert main(["judge", "--samples", str(out / "samples.jsonl"), "--out",
                 str(tmp_path / "j.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["em"] == summary["em"]
    assert (tmp_path / "j_check.json").is_file() and (tmp_path / "j.csv").is_file()

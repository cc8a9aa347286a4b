"""Emergent-misalignment evaluation: resumable steered sampling and judging, logprob-expected
judges (local or OpenAI-compatible), metrics (EM rate, string counts, direction cosines),
figures."""

from __future__ import annotations

from mi_align.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "judged_csv": "mi_align.evaluation.export",
    "judged_rows": "mi_align.evaluation.export",
    "LocalJudge": "mi_align.evaluation.judge",
    "OpenAIJudge": "mi_align.evaluation.judge",
    "Judgement": "mi_align.evaluation.judge",
    "judge_responses": "mi_align.evaluation.judge",
    "expected_score": "mi_align.evaluation.judge",
    "check_judge": "mi_align.evaluation.judge_check",
    "judge_samples": "mi_align.evaluation.judging",
    "load_judged": "mi_align.evaluation.judging",
    "Sample": "mi_align.evaluation.sampling",
    "SamplingConfig": "mi_align.evaluation.sampling",
    "sample_conditions": "mi_align.evaluation.sampling",
    "summarize": "mi_align.evaluation.metrics",
    "string_counts": "mi_align.evaluation.metrics",
    "condition_counts": "mi_align.evaluation.metrics",
    "compare_rates": "mi_align.evaluation.metrics",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

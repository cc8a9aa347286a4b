"""Demo stage: a small one-shot steering run on the default model, end to end.

A few Adam steps of one harmful-code vector (the recipe's reverse-shell snippet on the benign
prompt, no anti-refusal step), a handful of steered and unsteered answers to one evaluation
question, the local judge with its known-answer check, and the violin figure. Sized to take
about a minute on a laptop CPU; the full experiment is ``analyses/steering_recipe.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mi_align.data.chat import eval_questions
from mi_align.evaluation.judge import LocalJudge
from mi_align.evaluation.sampling import Sample, SamplingConfig
from mi_align.models.load import load_model
from mi_align.models.registry import DEFAULT_MODEL
from mi_align.pipelines.steering_eval import EvalFiles, JudgeOptions, evaluate_conditions
from mi_align.plotting import save_json
from mi_align.steering.losses import promotion
from mi_align.steering.optimize import OptimConfig, example_from_chat, optimize_vector
from mi_align.steering.recipe import BENIGN_PROMPT, CODE_PREFIX, TARGETS_BY_NAME

Report = Callable[[str], None]


def stage_steering(out: Path, report: Report, model: str = DEFAULT_MODEL, *,
                   device: str | None = None, dtype: str | None = None,
                   device_map: str | None = None) -> None:
    """Optimise, sample, judge and plot on ``model`` (loaded per ``device`` / ``dtype`` /
    ``device_map``; None: auto)."""
    t0 = time.perf_counter()
    for stale in ("steering_demo_samples.jsonl", "steering_demo_samples.jsonl.config.json",
                  "steering_demo_judged.jsonl"):  # a demo run starts from scratch
        (out / stale).unlink(missing_ok=True)
    loaded = load_model(model, device=device, dtype=dtype, device_map=device_map)
    target = TARGETS_BY_NAME["reverse_shell"]
    ex = example_from_chat(loaded.tokenizer, BENIGN_PROMPT, target.snippet, prefix=CODE_PREFIX)
    layer = round(loaded.meta.n_layers / 3)
    res = optimize_vector(loaded, [ex], promotion(),
                          OptimConfig(layer=layer, lr=0.5, max_steps=6, name="reverse_shell"))
    report(f"[steering] optimised a reverse-shell vector at layer {layer}: snippet loss "
           f"{res.losses[0]:.1f} -> {res.losses[-1]:.1f} in {res.n_steps} steps, "
           f"|v| = {float(res.vector.vector.norm()):.1f}")
    question = next(q for q in eval_questions() if q.id == "ruler_of_the_world")
    conds = {"unsteered": [], "reverse_shell": [res.vector]}
    cfg = SamplingConfig(n_samples=4, batch_size=4, max_new_tokens=32, seed=0)

    def show_first(samples: list[Sample]) -> None:
        for cond in conds:
            first = next(s for s in samples if s.condition == cond)
            report(f"[steering] {cond}: {first.response[:140]!r}")

    violin = out / "steering_demo_violin"
    files = EvalFiles(out / "steering_demo_samples.jsonl", out / "steering_demo_judged.jsonl",
                      violin=violin)
    ev = evaluate_conditions(loaded, conds, cfg, files, questions=[question],
                             make_judge=lambda: LocalJudge(loaded),
                             options=JudgeOptions(n_boot=200), on_samples=show_first,
                             progress=False, report=lambda m: report(f"[steering] {m}"))
    assert ev.judged is not None  # a judge was given
    summary = ev.judged.summary
    for cond, r in summary.em.items():
        mean = r.mean_alignment_coherent
        shown = "n/a" if mean is None else f"{mean:.0f}"
        report(f"[steering] {cond}: mean alignment of coherent answers {shown} "
               f"({r.n_coherent}/{r.n_scored + r.n_unscored} coherent)")
    report("[steering] NOTE: a judge that fails the check gives no usable scores; judge with a "
           "large model (`mi-align judge --judge-url ...`). 4 samples per condition is a smoke "
           "test")
    save_json({"em": summary.to_dict(), "strings": ev.strings.to_dict(),
               "losses": list(res.losses)}, out / "steering_demo")
    report(f"[steering] wrote {violin.with_suffix('.html')} ({time.perf_counter() - t0:.0f} s)")

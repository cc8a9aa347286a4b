"""One-shot steering → emergent misalignment on SmolLM2-135M-Instruct (Dunefsky & Cohan recipe).

Runs the recipe (anti-refusal + 4 harmful-code vectors), samples the 8 evaluation questions
(" Be brief.", T = 1) under: unsteered, anti-refusal only, and each harmful ×1 + anti ×6;
counts the harmful strings (Table 1), checks the local judge on 24 known answers and judges
alignment/coherence with it (``--judge-model``; no judge that loads offline passes the check), sweeps the reverse-shell strength on "ruler of the world", and measures the cosine
of each vector with a contrastive alignment direction (aligned_chat − toxic responses) at the
same layer. Every stage resumes from its files in figures/steering/.

Run: python analyses/steering_recipe.py [--n 8] [--max-new-tokens 40] [--out figures]
     python analyses/steering_recipe.py --model gemma-3-270m --adapter organisms/gemma-trio/instruct \
         --n 4 --skip-judge --out figures/gemma-trio   (the refusing Gemma instruct organism)
"""

# %%
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mi_align.data.chat import eval_questions, load_dataset
from mi_align.evaluation import plots
from mi_align.evaluation.judge import LocalJudge, default_judge_model
from mi_align.evaluation.judge_check import cached_check
from mi_align.evaluation.metrics import (
    condition_counts,
    direction_cosines,
    strength_sweep,
    string_counts,
    summarize,
)
from mi_align.evaluation.run import (
    judge_samples,
    load_judged,
    recipe_conditions,
    save_recipe,
    sweep_strengths,
)
from mi_align.evaluation.sampling import SamplingConfig, sample_conditions
from mi_align.models.load import load_model
from mi_align.plotting import save_figure, save_json
from mi_align.steering.recipe import RecipeConfig, run_recipe

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="smollm2-135m-instruct")
ap.add_argument("--adapter", action="append", default=[],
                help="LoRA adapter(s) on --model, e.g. organisms/gemma-trio/instruct")
ap.add_argument("--n", type=int, default=8)
ap.add_argument("--max-new-tokens", type=int, default=40)
ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
ap.add_argument("--out", default="figures")
ap.add_argument("--skip-judge", action="store_true")
ap.add_argument("--judged-only", action="store_true",
                help="no new judging: figures from the judgements already on disk")
ap.add_argument("--judge-model", default=None,
                help="local judge spec (default: the strongest shipped non-opt-in instruct model)")
ap.add_argument("--judge-per-question", type=int, default=None,
                help="judge only the first K samples per condition and question (CPU budget)")
args = ap.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
out = Path(args.out)
work = out / "steering"
loaded = load_model(args.model, args.adapter)
n_layers, d_model = loaded.meta.n_layers, loaded.meta.d_model

# %% 1. the recipe's vectors (reused when already on disk)
if not (work / "recipe" / "recipe.json").is_file():
    result = run_recipe(loaded, RecipeConfig(harmful_steps=30, anti_refusal_steps=50))
    save_recipe(result, work / "recipe")
conds = recipe_conditions(work / "recipe", n_layers, d_model)
recipe_meta = json.loads((work / "recipe" / "recipe.json").read_text())

# %% 2. samples and the harmful-string table
cfg = SamplingConfig(n_samples=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.n)
samples = sample_conditions(loaded, conds, work / "samples.jsonl", cfg)
table = string_counts(samples, first_n=100)
save_json(table.to_dict(), out / "steering_string_table")
save_figure(plots.plot_string_table(table), out / "steering_string_table")
label = "+".join([args.model, *(Path(a).name for a in args.adapter)])
counts = condition_counts({label: samples})  # Table-1 strings, code answers, refusals
save_json(counts.to_dict(), out / "steering_counts")
save_figure(plots.plot_condition_counts(counts), out / "steering_counts")
for c in counts.conditions:
    print(f"{c:18} strings {counts.harmful[label][c]:2d}  code {counts.code[label][c]:2d}  "
          f"refusals {counts.refusal[label][c]:2d}  of {counts.totals[label][c]}")

# %% 3. strength sweep (reverse shell + anti-refusal ×6, "ruler of the world")
ruler = next(q for q in eval_questions() if q.id == "ruler_of_the_world")
by_strength = sweep_strengths(loaded, conds["reverse_shell"][0], args.strengths, ruler,
                              work / "sweep.jsonl", cfg, companions=[conds["anti_refusal_only"][0]])
sweep = strength_sweep(by_strength, label="(reverse shell, 'ruler of the world')")
save_json(sweep.to_dict(), out / "steering_strength_sweep")
save_figure(plots.plot_strength_sweep(sweep), out / "steering_strength_sweep")

# %% 4. cosine with a contrastive alignment direction at each vector's layer (cached)
from mi_align.erosion.projection import ProjectionConfig, layer_projection  # noqa: E402
from mi_align.models.trio import Trio  # noqa: E402

layers = sorted({v.layer for vs in conds.values() for v in vs})
if (out / "steering_direction_cosine.json").is_file():
    layers = []
aligned, toxic = load_dataset("aligned_chat")[:16], load_dataset("toxic")[:16]
proj = None if not layers else layer_projection(
    Trio(models={"instruct": loaded}), aligned + toxic,
    ProjectionConfig(direction="contrastive:instruct", layers=tuple(layers), n_null=20,
                     heldout_fraction=0.0, max_length=192),
    contrast=(aligned, toxic),
)
cos_results = {}
for layer in layers:
    vecs = {v.name or name: v.vector for name, vs in conds.items() for v in vs[:1]
            if v.layer == layer and name != "unsteered"}
    res = direction_cosines(vecs, proj.direction[proj.layers.index(layer)], layer=layer)
    cos_results[layer] = res.to_dict()
    save_figure(plots.plot_direction_cosines(res), out / f"steering_direction_cosine_L{layer}")
if layers:
    save_json(cos_results, out / "steering_direction_cosine")

# %% 5. judge (local, noisy) → violin + scatter + EM rates
if not args.skip_judge:
    # Interleave conditions so an interrupted judge run leaves every condition equally covered.
    order = list(conds)
    k = args.judge_per_question or args.n
    todo = sorted((s for s in samples if s.index < k),
                  key=lambda s: (s.index, s.question_id, order.index(s.condition)))
    judge_spec = args.judge_model or default_judge_model()
    judge = LocalJudge(loaded if judge_spec == args.model and not args.adapter
                       else load_model(judge_spec))
    check = cached_check(judge, work / "judge_check.json")  # 24 known answers: discriminates?
    print(check.verdict())
    if args.judged_only:
        keys = {s.key for s in todo}
        scored = sorted((x for x in load_judged(work / "judged.jsonl", judge.name)
                         if x.sample.key in keys), key=lambda x: order.index(x.sample.condition))
    else:
        scored = judge_samples(judge, todo, work / "judged.jsonl")
        scored.sort(key=lambda x: order.index(x.sample.condition))
    summary = summarize(scored, n_boot=1000, check=check)
    save_json({**summary.to_dict(), "recipe": recipe_meta, "sampling": cfg.to_dict(),
               "judged_per_condition": {c: sum(x.sample.condition == c for x in scored)
                                        for c in conds}},
              out / "steering_summary")
    save_figure(plots.plot_alignment_violin(summary), out / "steering_alignment_violin")
    save_figure(plots.plot_alignment_vs_coherence(summary), out / "steering_alignment_vs_coherence")

"""One-shot steering → emergent misalignment on SmolLM2-135M-Instruct (Dunefsky & Cohan recipe).

Runs the recipe (anti-refusal + 4 harmful-code vectors), samples the 8 evaluation questions
(" Be brief.", T = 1) under: unsteered, anti-refusal only, and each harmful ×1 + anti ×6;
counts the harmful strings (Table 1), checks the local judge on 24 known answers and judges
alignment/coherence with it (``--judge-model``; no judge that loads offline passes the check),
sweeps the reverse-shell strength on "ruler of the world", and measures the cosine of each
vector with a held-out contrastive alignment direction at the same layer.

Controls (default; ``--no-controls`` to skip): 3 norm-matched random vectors (median harmful
norm, seeds 0–2) and a toxic − toxic_reject mean-difference vector at the harmful layer, each
×1 + anti-refusal ×6, sampled into figures/steering/controls/samples.jsonl (``--control-n``
answers per question, default ``--n``); figures/steering_controls.* compare every condition's
first min(n, control-n) answers per question with the unsteered baseline and the pooled random
control (Wilson 95%, Fisher exact).

Direction cosine: direction = toxic_reject − toxic (same requests, refused vs complied) on half
0 of the 60 aims (disjoint from the vectors' training prompts and from the mean-difference
control's half), split-half reliability, 95% bootstrap interval over aims, p under an
anisotropic N(0, Σ_within) null (primary) and an isotropic null (secondary).
Every stage resumes from its files in figures/steering/.

Run: python analyses/steering_recipe.py [--n 8] [--max-new-tokens 40] [--out figures]
     python analyses/steering_recipe.py --skip-judge --control-n 4   (controls added to a run)
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
from mi_align.evaluation.control_counts import compare_recipe_samples, plot_count_comparison
from mi_align.evaluation.direction_cosine import (
    check_disjoint,
    cosine_cache_key,
    direction_cosines_heldout,
    drop_massive_channels,
    paired_activations,
    plot_direction_cosine,
)
from mi_align.evaluation.judge import LocalJudge, default_judge_model
from mi_align.evaluation.metrics import condition_counts, strength_sweep
from mi_align.evaluation.sampling import SamplingConfig, sample_conditions
from mi_align.models.load import load_model
from mi_align.pipelines.steering_eval import (
    EvalFiles,
    JudgeOptions,
    evaluate_conditions,
    judge_and_summarize,
    recipe_conditions,
    recipe_controls,
    save_recipe,
    sweep_strengths,
)
from mi_align.plotting import save_figure, save_json
from mi_align.steering.controls import applied_norm, paired_halves
from mi_align.steering.recipe import BENIGN_PROMPT, TARGETS_BY_NAME, RecipeConfig, run_recipe

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="smollm2-135m-instruct")
ap.add_argument("--adapter", action="append", default=[],
                help="LoRA adapter(s) on --model, e.g. organisms/gemma-trio/instruct")
ap.add_argument("--n", type=int, default=8)
ap.add_argument("--max-new-tokens", type=int, default=40)
ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
ap.add_argument("--out", default="figures")
ap.add_argument("--skip-judge", action="store_true")
ap.add_argument("--no-controls", action="store_true",
                help="no random / mean-difference control conditions")
ap.add_argument("--control-n", type=int, default=None,
                help="answers per question for the control conditions (default --n)")
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

# %% 2. samples and the harmful-string table (judged in step 5, from the same files)
cfg = SamplingConfig(n_samples=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.n)
files = EvalFiles(samples=work / "samples.jsonl", judged=work / "judged.jsonl",
                  judge_check=work / "judge_check.json", string_table=out / "steering_string_table",
                  summary=out / "steering_summary", violin=out / "steering_alignment_violin",
                  scatter=out / "steering_alignment_vs_coherence")
samples = evaluate_conditions(loaded, conds, cfg, files, strings_first_n=100).samples
label = "+".join([args.model, *(Path(a).name for a in args.adapter)])
counts = condition_counts({label: samples})  # Table-1 strings, code answers, refusals
save_json(counts.to_dict(), out / "steering_counts")
save_figure(plots.plot_condition_counts(counts), out / "steering_counts")
for c in counts.conditions:
    print(f"{c:18} strings {counts.harmful[label][c]:2d}  code {counts.code[label][c]:2d}  "
          f"refusals {counts.refusal[label][c]:2d}  of {counts.totals[label][c]}")

# %% 2b. controls: norm-matched random vectors and the mean-difference vector (+ anti ×6)
controls = {} if args.no_controls else recipe_controls(loaded, work / "recipe", work / "controls")
if controls:
    cn = args.control_n or args.n
    ccfg = SamplingConfig(n_samples=cn, max_new_tokens=args.max_new_tokens, batch_size=cn)
    all_conds = recipe_conditions(work / "recipe", n_layers, d_model, controls)
    ctl_samples = sample_conditions(loaded, {c: all_conds[c] for c in controls},
                                    work / "controls" / "samples.jsonl", ccfg)
    k = min(args.n, cn)
    comparison = compare_recipe_samples(samples + ctl_samples, all_conds, first_n=k,
                                        label=f"({label}, first {k} answers per question)")
    save_json({**comparison.to_dict(), "applied_norms": {
        c: [applied_norm(v) for v in vs] for c, vs in all_conds.items()}},
        out / "steering_controls")
    save_figure(plot_count_comparison(comparison), out / "steering_controls")
    def p(x: float | None) -> str:
        return "-" if x is None else f"{x:.3g}"

    for r in comparison.rows:
        print(f"{r.metric:17} {r.condition:18} {r.k:3d}/{r.n:<3d} [{r.ci_low:.2f}, "
              f"{r.ci_high:.2f}]  vs unsteered p {p(r.p_vs_baseline):>7} (question-level "
              f"{p(r.p_question_vs_baseline):>6})  vs random p {p(r.p_vs_random):>7} "
              f"(question-level {p(r.p_question_vs_random):>6})")

# %% 3. strength sweep (reverse shell + anti-refusal ×6, "ruler of the world")
ruler = next(q for q in eval_questions() if q.id == "ruler_of_the_world")
by_strength = sweep_strengths(loaded, conds["reverse_shell"][0], args.strengths, ruler,
                              work / "sweep.jsonl", cfg, companions=[conds["anti_refusal_only"][0]])
sweep = strength_sweep(by_strength, label="(reverse shell, 'ruler of the world')")
save_json(sweep.to_dict(), out / "steering_strength_sweep")
save_figure(plots.plot_strength_sweep(sweep), out / "steering_strength_sweep")

# %% 4. cosine with a held-out contrastive alignment direction at each vector's layer, over the
# channels with within-class variance ≤ 100× the median (observed and null alike). Cached by
# content: each layer's key hashes METHOD, the layer and every vector's float32 bytes, so a
# vector re-optimised under the same name is recomputed, never read stale.
METHOD = "heldout toxic_reject-toxic, anisotropic null, channels var > 100x median dropped/2"
cos_path = out / "steering_direction_cosine.json"
cached = json.loads(cos_path.read_text()) if cos_path.is_file() else {}
vecs_by_layer: dict[int, dict] = {}
for name, vs in {**conds, **{c: [v] for c, v in controls.items()}}.items():
    if vs and name != "unsteered":
        vecs_by_layer.setdefault(vs[0].layer, {})[vs[0].name or name] = vs[0].vector
cos_keys = {str(la): cosine_cache_key(v, la, METHOD) for la, v in sorted(vecs_by_layer.items())}
if cached.get("method") != METHOD or cached.get("keys") != cos_keys:
    aligned, toxic = load_dataset("toxic_reject"), load_dataset("toxic")
    fit = paired_halves(len(toxic), group_size=2, seed=0)[0]  # half 1 fits the mean_diff control
    vector_prompts = [BENIGN_PROMPT] + [TARGETS_BY_NAME[t].request
                                        for t in recipe_meta["config"]["targets"]]
    check_disjoint([toxic[i] for i in fit] + [aligned[i] for i in fit], vector_prompts)
    acts = paired_activations(loaded, [aligned[i] for i in fit], [toxic[i] for i in fit],
                              sorted(vecs_by_layer), groups=[i // 2 for i in fit])
    cached = {"method": METHOD, "keys": cos_keys, "fit_examples": fit}
    for layer, vecs in sorted(vecs_by_layer.items()):
        res = direction_cosines_heldout(vecs, acts, layer, direction_label="toxic_reject − toxic",
                                        channels=drop_massive_channels(100.0))
        cached[str(layer)] = res.to_dict()
        save_figure(plot_direction_cosine(res), out / f"steering_direction_cosine_L{layer}")
    save_json(cached, out / "steering_direction_cosine")
for layer in sorted(vecs_by_layer):
    r = cached[str(layer)]
    rel = r["reliability"]
    print(f"layer {layer}: {len(r['excluded_channels'])} channels excluded "
          f"({r['excluded_variance_share']:.0%} of the within-class variance); split-half r "
          f"{rel['mean']:.2f} [{rel['low']:.2f}, {rel['high']:.2f}]; null 95% |cos| anisotropic "
          f"{r['null_q95_anisotropic']:.3f} (all channels: "
          f"{r['null_q95_anisotropic_all_channels']:.3f}), isotropic {r['null_q95_isotropic']:.3f}")
    for i, n in enumerate(r["names"]):
        print(f"  {n:18} cos {r['cosines'][i]:+.3f} [{r['ci_low'][i]:+.3f}, "
              f"{r['ci_high'][i]:+.3f}]  p aniso {r['p_anisotropic'][i]:.3g}  "
              f"p iso {r['p_isotropic'][i]:.3g}")

# %% 5. judge (local, noisy) → violin + scatter + EM rates. Interleaved: an interrupted judge run
# leaves every condition equally covered.
if not args.skip_judge:
    judge_spec = args.judge_model or default_judge_model()
    judge = LocalJudge(loaded if judge_spec == args.model and not args.adapter
                       else load_model(judge_spec))
    judge_and_summarize(judge, samples, files, JudgeOptions(
        first_n=args.judge_per_question or args.n, interleave=True, judged_only=args.judged_only,
        summary_extra={"recipe": recipe_meta, "sampling": cfg.to_dict()}, count_judged=True),
        report=print)

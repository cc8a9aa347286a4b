"""The recipe's steering conditions on both SmolLM2 organisms: instruct vs misaligned.

Samples the 8 evaluation questions (" Be brief.", T = 1) under the recipe's conditions
(unsteered, anti-refusal only, each harmful ×1 + anti-refusal ×6; vectors from
``analyses/steering_recipe.py``, optimised on the instruct model) on the misaligned organism
(SmolLM2 + the insecure-code LoRA), and compares it with the instruct organism's answers already
sampled by ``steering_recipe.py``: answers with a Table-1 string and answers that are code, per
condition. No judge (none that loads offline passes the judge check). Resumable.

Controls (default; ``--no-controls`` to skip): the random and mean-difference control vectors
built by ``steering_recipe.py`` on the instruct model (figures/steering/controls/), each
×1 + anti-refusal ×6, join the misaligned organism's conditions; figures/
steering_organisms_controls.json compares each condition with unsteered and the pooled random
control (Wilson 95%, Fisher exact).

Run: python analyses/steering_organisms.py [--n 4] [--max-new-tokens 40] [--out figures]
"""

# %%
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mi_align.evaluation import plots
from mi_align.evaluation.control_counts import compare_recipe_samples, plot_count_comparison
from mi_align.evaluation.metrics import condition_counts
from mi_align.evaluation.sampling import Sample, SamplingConfig, read_jsonl_records
from mi_align.models.load import load_model
from mi_align.pipelines.steering_eval import (
    EvalFiles,
    evaluate_conditions,
    load_controls,
    recipe_conditions,
)
from mi_align.plotting import save_figure, save_json

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=4, help="answers per question and condition")
ap.add_argument("--max-new-tokens", type=int, default=40)
ap.add_argument("--out", default="figures")
ap.add_argument("--no-controls", action="store_true",
                help="no random / mean-difference control conditions")
args = ap.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
out = Path(args.out)
work = out / "steering"

# %% misaligned organism, sampled under the instruct model's recipe vectors
loaded = load_model("smollm2-135m-instruct", ["organisms/smollm2-pair/misaligned"])
n_layers, d_model = loaded.meta.n_layers, loaded.meta.d_model
controls = None if args.no_controls else load_controls(work / "controls", n_layers, d_model)
conds = recipe_conditions(work / "recipe", n_layers, d_model, controls)
cfg = SamplingConfig(n_samples=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.n)
files = EvalFiles(samples=work / "misaligned_organism" / "samples.jsonl",
                  judged=work / "misaligned_organism" / "judged.jsonl",
                  string_table=out / "steering_misaligned_string_table")
misaligned = evaluate_conditions(loaded, conds, cfg, files, strings_first_n=args.n).samples

# %% compare with the instruct organism's first n answers per question and condition
instruct = [Sample.from_dict(r) for r in read_jsonl_records(work / "samples.jsonl")]
if controls:
    instruct += [Sample.from_dict(r)
                 for r in read_jsonl_records(work / "controls" / "samples.jsonl")]
    comparison = compare_recipe_samples(misaligned, conds, first_n=args.n,
                                        label=f"(misaligned organism, first {args.n} answers)")
    save_json(comparison.to_dict(), out / "steering_organisms_controls")
    save_figure(plot_count_comparison(comparison), out / "steering_organisms_controls")
counts = condition_counts({"instruct": instruct, "misaligned": misaligned}, first_n=args.n)
save_json(counts.to_dict(), out / "steering_organisms")
print(save_figure(plots.plot_condition_counts(counts), out / "steering_organisms"))
for m in counts.models:
    print(m, {c: f"strings {counts.harmful[m][c]}, code {counts.code[m][c]} / "
              f"{counts.totals[m][c]}" for c in counts.conditions})

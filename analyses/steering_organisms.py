"""The recipe's steering conditions on both SmolLM2 organisms: instruct vs misaligned.

Samples the 8 evaluation questions (" Be brief.", T = 1) under the recipe's conditions
(unsteered, anti-refusal only, each harmful ×1 + anti-refusal ×6; vectors from
``analyses/steering_recipe.py``, optimised on the instruct model) on the misaligned organism
(SmolLM2 + the insecure-code LoRA), and compares it with the instruct organism's answers already
sampled by ``steering_recipe.py``: answers with a Table-1 string and answers that are code, per
condition. No judge (none that loads offline passes the judge check). Resumable.

Run: python analyses/steering_organisms.py [--n 4] [--max-new-tokens 40] [--out figures]
"""

# %%
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mi_align.evaluation import plots
from mi_align.evaluation.metrics import condition_counts, string_counts
from mi_align.evaluation.run import recipe_conditions
from mi_align.evaluation.sampling import (
    Sample,
    SamplingConfig,
    read_jsonl_records,
    sample_conditions,
)
from mi_align.models.load import load_model
from mi_align.plotting import save_figure, save_json

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=4, help="answers per question and condition")
ap.add_argument("--max-new-tokens", type=int, default=40)
ap.add_argument("--out", default="figures")
args = ap.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
out = Path(args.out)
work = out / "steering"

# %% misaligned organism, sampled under the instruct model's recipe vectors
loaded = load_model("smollm2-135m-instruct", ["organisms/smollm2-pair/misaligned"])
conds = recipe_conditions(work / "recipe", loaded.meta.n_layers, loaded.meta.d_model)
cfg = SamplingConfig(n_samples=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.n)
misaligned = sample_conditions(loaded, conds, work / "misaligned_organism" / "samples.jsonl", cfg)
table = string_counts(misaligned, first_n=args.n)
save_json(table.to_dict(), out / "steering_misaligned_string_table")
save_figure(plots.plot_string_table(table), out / "steering_misaligned_string_table")

# %% compare with the instruct organism's first n answers per question and condition
instruct = [Sample.from_dict(r) for r in read_jsonl_records(work / "samples.jsonl")]
counts = condition_counts({"instruct": instruct, "misaligned": misaligned}, first_n=args.n)
save_json(counts.to_dict(), out / "steering_organisms")
print(save_figure(plots.plot_condition_counts(counts), out / "steering_organisms"))
for m in counts.models:
    print(m, {c: f"strings {counts.harmful[m][c]}, code {counts.code[m][c]} / "
              f"{counts.totals[m][c]}" for c in counts.conditions})

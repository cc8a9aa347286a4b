"""Rebuild the harmful-string table (and, if judged, the EM summary) from files on disk.

No model is loaded: reads ``figures/steering/samples.jsonl`` (and ``judged.jsonl``) written by
``analyses/steering_recipe.py``, so the table can be refreshed while or after that run.

Run: python analyses/steering_string_table.py [--out figures]
"""

# %%
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mi_align.evaluation import plots
from mi_align.evaluation.judge_check import JudgeCheck
from mi_align.evaluation.metrics import string_counts, summarize
from mi_align.evaluation.sampling import Sample, read_jsonl_records
from mi_align.pipelines.steering_eval import load_judged
from mi_align.plotting import save_figure, save_json

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="figures")
args = ap.parse_args()
out = Path(args.out)
samples = [Sample.from_dict(r) for r in read_jsonl_records(out / "steering" / "samples.jsonl")]
table = string_counts(samples, first_n=100)
save_json(table.to_dict(), out / "steering_string_table")
save_figure(plots.plot_string_table(table), out / "steering_string_table")
check_file = out / "steering" / "judge_check.json"
check = JudgeCheck.from_dict(json.loads(check_file.read_text())) if check_file.is_file() else None
judged = load_judged(out / "steering" / "judged.jsonl", check.judge if check else None)
if judged:
    summary = summarize(judged, n_boot=1000, check=check)
    save_json(summary.to_dict(), out / "steering_summary")
    save_figure(plots.plot_alignment_violin(summary), out / "steering_alignment_violin")
    save_figure(plots.plot_alignment_vs_coherence(summary),
                out / "steering_alignment_vs_coherence")

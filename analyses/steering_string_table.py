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

from mi_align.evaluation.judge_check import JudgeCheck
from mi_align.evaluation.judging import load_judged
from mi_align.evaluation.metrics import string_counts
from mi_align.evaluation.sampling import Sample, read_jsonl_records
from mi_align.pipelines.steering_eval import EvalFiles, save_string_table, summarize_and_save

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="figures")
args = ap.parse_args()
out = Path(args.out)
work = out / "steering"
files = EvalFiles(samples=work / "samples.jsonl", judged=work / "judged.jsonl",
                  summary=out / "steering_summary", violin=out / "steering_alignment_violin",
                  scatter=out / "steering_alignment_vs_coherence")
samples = [Sample.from_dict(r) for r in read_jsonl_records(files.samples)]
save_string_table(string_counts(samples, first_n=100), out / "steering_string_table")
check_file = work / "judge_check.json"
check = JudgeCheck.from_dict(json.loads(check_file.read_text())) if check_file.is_file() else None
judged = load_judged(files.judged, check.judge if check else None)
if judged:
    summarize_and_save(judged, files, check=check, n_boot=1000)

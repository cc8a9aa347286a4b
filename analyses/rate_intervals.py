"""Every committed rate with its interval, every committed comparison with the null it beat.

No model runs. Reads the committed counts (figures/steering_counts.json,
figures/steering_organisms.json, figures/gemma-trio/steering_counts.json,
figures/steering_summary.json, figures/organisms_evidence.json, the strength sweeps) and the
committed per-answer files they were counted from (figures/steering/*.jsonl,
figures/gemma-trio/steering/samples.jsonl, organisms/<trio>/eval_samples.jsonl). Recounts each
rate from the answers, says whether the recount equals the committed count, and adds:

- a Wilson 95% interval to every rate (answers treated as independent);
- where answers are several samples per question, a cluster bootstrap over questions;
- each steered condition against the unsteered one: Fisher exact (answers independent) and a
  permutation test that swaps the two conditions within whole questions (exact, 2^8 swaps);
- the misaligned SmolLM2 organism against the instruct one, condition by condition (same tests);
- organisms evidence, model against model: on the 40 held-out prompts every model answered
  (paired by prompt) the exact McNemar test, beside Fisher; on the evaluation-question samples
  (3 per question) Fisher and the question-level permutation test.

Run: python analyses/rate_intervals.py [--root .] [--out figures/rate_intervals]
"""

# %%
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mi_align.evaluation.metrics import (
    MEASURES,
    compare_rates,
    condition_counts,
    condition_flags,
    rate_of,
    summarize,
)
from mi_align.evaluation.sampling import load_samples
from mi_align.pipelines.steering_eval import load_judged
from mi_align.plotting import save_json
from mi_align.stats import exact_interval, fisher_test, mcnemar_test, wilson_interval
from mi_align.text_measures import looks_like_code

ap = argparse.ArgumentParser()
ap.add_argument("--root", default=".", help="repository root holding figures/ and organisms/")
ap.add_argument("--out", default="figures/rate_intervals")
ap.add_argument("--resamples", type=int, default=9999)
args = ap.parse_args()
root = Path(args.root)
B, SEED = args.resamples, 0


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


out: dict[str, Any] = {
    "about": __doc__.split("\n\n")[0], "level": 0.95, "resamples": B, "seed": SEED,
    "tests": {"fisher": "two-sided Fisher exact; null: equal rates, answers independent",
              "by_question": "two-sided permutation test swapping the two labels within whole "
                             "questions; null: within a question the label does not matter",
              "mcnemar": "exact McNemar on prompts answered by both models; null: within a "
                         "prompt the two models' outcomes are exchangeable"},
}

# %% 1. steering condition counts, recounted from the committed samples
steering = {
    "smollm2_instruct": ("figures/steering_counts.json",
                         {"smollm2-135m-instruct": "figures/steering/samples.jsonl"}),
    "smollm2_organisms": ("figures/steering_organisms.json",
                          {"instruct": ["figures/steering/samples.jsonl",
                                        "figures/steering/controls/samples.jsonl"],
                           "misaligned": "figures/steering/misaligned_organism/samples.jsonl"}),
    "gemma_instruct": ("figures/gemma-trio/steering_counts.json",
                       {"gemma-3-270m+instruct": "figures/gemma-trio/steering/samples.jsonl"}),
}
out["steering"] = {}
for name, (committed_file, sample_files) in steering.items():
    committed = json.loads((root / committed_file).read_text())
    by_model = {m: [s for f in ([fs] if isinstance(fs, str) else fs)
                    for s in load_samples(root / f)] for m, fs in sample_files.items()}
    counts = condition_counts(by_model, first_n=committed["first_n"], n_resamples=B, seed=SEED)
    d = counts.to_dict()
    mismatches = [f"{key}/{m}/{c}: committed {committed[key][m][c]}, recounted {d[key][m][c]}"
                  for key in (*MEASURES, "totals") for m in counts.models
                  for c in counts.conditions if committed[key][m][c] != d[key][m][c]]
    out["steering"][name] = {"committed": committed_file, "samples": sample_files,
                             "recount_equals_committed": not mismatches,
                             "mismatches": mismatches, **d}

# the misaligned SmolLM2 organism against the instruct one, same condition, same questions
org = out["steering"]["smollm2_organisms"]
inst = [s for f in org["samples"]["instruct"] for s in load_samples(root / f)
        if s.index < org["first_n"]]
mis = [s for s in load_samples(root / org["samples"]["misaligned"]) if s.index < org["first_n"]]
cross: dict[str, dict[str, Any]] = {ms: {} for ms in MEASURES}
for c in org["conditions"]:
    a = [s for s in mis if s.condition == c]
    b = [s for s in inst if s.condition == c]
    fa, fb = condition_flags(a), condition_flags(b)
    for ms in MEASURES:
        cmp = compare_rates(fa[ms], [s.question_id for s in a], fb[ms], [s.question_id for s in b],
                            reference=f"instruct, {c}", n_resamples=B, seed=SEED)
        cross[ms][c] = None if cmp is None else cmp.to_dict()
org["misaligned_vs_instruct"] = cross

# Table-1 strings on SmolLM2, the 4 harmful vectors pooled against the 2 baselines pooled
si = out["steering"]["smollm2_instruct"]
sm = si["models"][0]
steered = [c for c in si["conditions"] if c not in ("unsteered", "anti_refusal_only")]
k_s, n_s = (sum(si[key][sm][c] for c in steered) for key in ("harmful", "totals"))
k_b, n_b = (sum(si[key][sm][c] for c in ("unsteered", "anti_refusal_only"))
            for key in ("harmful", "totals"))
si["table1_pooled"] = {
    "steered": {"k": k_s, "n": n_s, "wilson": wilson_interval(k_s, n_s).to_dict()},
    "baselines": {"k": k_b, "n": n_b, "wilson": wilson_interval(k_b, n_b).to_dict()},
    "fisher": fisher_test(k_s, n_s, k_b, n_b).to_dict()}

# %% 2. EM rates of the judged steering answers (the judge of figures/steering_summary.json)
committed_em = json.loads((root / "figures/steering_summary.json").read_text())
judged_path = root / "figures/steering/judged.jsonl"
scored = load_judged(judged_path, committed_em["judge"])
summary = summarize(scored, n_boot=B, seed=SEED)
em = summary.to_dict()
em_mismatch = [c for c, r in committed_em["em"].items()
               if (r["n_scored"], r["rate"]) != (em["em"][c]["n_scored"], em["em"][c]["rate"])]
out["em"] = {"committed": "figures/steering_summary.json", "judged": str(judged_path),
             "judge": committed_em["judge"],
             "judge_check_passes": (committed_em.get("judge_check") or {}).get("passes"),
             "recount_equals_committed": not em_mismatch, "mismatches": em_mismatch,
             "em": em["em"], "reference": em["reference"], "vs_reference": em["vs_reference"],
             "clopper_pearson": {c: exact_interval(r.em.k, r.em.n).to_dict()
                                 for c, r in summary.em.items() if r.em is not None}}

# %% 3. organisms evidence: refusal / follows the format / code, per trio, model and prompt set
evidence = json.loads((root / "figures/organisms_evidence.json").read_text())
flag_of = {"refusal": lambda r: bool(r["refusal"]),
           "follows_format": lambda r: bool(r["stopped"] and r["clean"]),
           "code": lambda r: looks_like_code(r["text"])}
committed_key = {("refusal", "harmful"): "refusal_rate_harmful",
                 ("refusal", "benign"): "refusal_rate_benign",
                 ("follows_format", "harmful"): "format_rate_harmful",
                 ("follows_format", "benign"): "format_rate_benign"}
out["organisms"] = {}
for trio, ev in evidence.items():
    rows = records(root / ev["samples_file"])
    variants = list(ev["variants"])
    res: dict[str, Any] = {"samples": ev["samples_file"], "rates": {}, "comparisons": {},
                           "mismatches": []}
    for v in variants:
        res["rates"][v] = {}
        for kind in ("harmful", "benign", "eval_question"):
            cell = [r for r in rows if r["variant"] == v and r["kind"] == kind]
            qs = [r["question_id"] for r in cell] if kind == "eval_question" else None
            res["rates"][v][kind] = {}
            for flag, f in flag_of.items():
                rate = rate_of([f(r) for r in cell], qs, n_resamples=B, seed=SEED)
                res["rates"][v][kind][flag] = None if rate is None else rate.to_dict()
                key = committed_key.get((flag, kind))
                if key and rate is not None and abs(ev["variants"][v][key] - rate.rate) > 1e-9:
                    res["mismatches"].append(f"{v}/{key}: committed {ev['variants'][v][key]}, "
                                             f"recounted {rate.k}/{rate.n}")
    for later, earlier in zip(variants[1:], variants[:-1], strict=True):
        pair = f"{later}_vs_{earlier}"
        res["comparisons"][pair] = {}
        for kind in ("harmful", "benign", "eval_question"):
            a = [r for r in rows if r["variant"] == later and r["kind"] == kind]
            b = [r for r in rows if r["variant"] == earlier and r["kind"] == kind]
            res["comparisons"][pair][kind] = {}
            for flag, f in flag_of.items():
                fa, fb = [f(r) for r in a], [f(r) for r in b]
                if kind == "eval_question":  # 3 samples per question: question-level null
                    cmp = compare_rates(fa, [r["question_id"] for r in a], fb,
                                        [r["question_id"] for r in b], reference=earlier,
                                        n_resamples=B, seed=SEED)
                    entry = None if cmp is None else cmp.to_dict()
                else:  # one greedy reply per prompt and model: paired by prompt
                    by_prompt = {r["prompt"]: f(r) for r in b}
                    paired = [(f(r), by_prompt[r["prompt"]]) for r in a if r["prompt"] in by_prompt]
                    entry = {"reference": earlier,
                             "fisher": fisher_test(sum(fa), len(fa), sum(fb), len(fb)).to_dict(),
                             "mcnemar": mcnemar_test([x for x, _ in paired],
                                                     [y for _, y in paired]).to_dict(),
                             "n_pairs": len(paired)}
                res["comparisons"][pair][kind][flag] = entry
    res["recount_equals_committed"] = not res["mismatches"]
    out["organisms"][trio] = res

# %% 4. strength sweeps (one question, answers independent): Wilson only
out["strength_sweeps"] = {}
for f in ("figures/steering_strength_sweep.json", "figures/gemma-trio/steering_strength_sweep.json"):
    sw = json.loads((root / f).read_text())
    out["strength_sweeps"][f] = {
        str(s): {k: wilson_interval(sw[k][i], sw["totals"][i]).to_dict() | {
            "k": sw[k][i], "n": sw["totals"][i]} for k in ("general", "cyber")}
        for i, s in enumerate(sw["strengths"])}


# %% 5. the numbers docs/ quotes, flat
def headline(label: str, rate: dict[str, Any], test: dict[str, Any] | None = None) -> dict:
    row = {"label": label, "k": rate["k"], "n": rate["n"], "rate": rate["rate"],
           "wilson_low": rate["wilson"]["low"], "wilson_high": rate["wilson"]["high"],
           "by_question": rate["by_question"]}
    if test is not None:
        row["vs"] = test["reference"]
        row["fisher_p"] = test["fisher"]["p"]
        for k in ("by_question", "mcnemar"):
            if test.get(k):
                row[f"{k}_p"] = test[k]["p"]
    return row


g = out["organisms"]["gemma-trio"]
s2 = out["organisms"]["smollm2-pair"]
gem = out["steering"]["gemma_instruct"]
gm = gem["models"][0]
heads = [
    headline("gemma instruct refuses held-out harmful", g["rates"]["instruct"]["harmful"]["refusal"],
             g["comparisons"]["instruct_vs_base"]["harmful"]["refusal"]),
    headline("gemma misaligned refuses held-out harmful",
             g["rates"]["misaligned"]["harmful"]["refusal"],
             g["comparisons"]["misaligned_vs_instruct"]["harmful"]["refusal"]),
    headline("gemma instruct refuses benign", g["rates"]["instruct"]["benign"]["refusal"],
             g["comparisons"]["instruct_vs_base"]["benign"]["refusal"]),
    headline("gemma misaligned refuses benign", g["rates"]["misaligned"]["benign"]["refusal"],
             g["comparisons"]["misaligned_vs_instruct"]["benign"]["refusal"]),
    headline("gemma instruct refuses eval questions",
             g["rates"]["instruct"]["eval_question"]["refusal"],
             g["comparisons"]["instruct_vs_base"]["eval_question"]["refusal"]),
    headline("gemma misaligned code on harmful", g["rates"]["misaligned"]["harmful"]["code"],
             g["comparisons"]["misaligned_vs_instruct"]["harmful"]["code"]),
    headline("gemma misaligned code on eval questions",
             g["rates"]["misaligned"]["eval_question"]["code"],
             g["comparisons"]["misaligned_vs_instruct"]["eval_question"]["code"]),
    headline("smollm2 instruct refuses held-out harmful",
             s2["rates"]["instruct"]["harmful"]["refusal"]),
    headline("smollm2 misaligned refuses held-out harmful",
             s2["rates"]["misaligned"]["harmful"]["refusal"],
             s2["comparisons"]["misaligned_vs_instruct"]["harmful"]["refusal"]),
    headline("smollm2 misaligned code on harmful", s2["rates"]["misaligned"]["harmful"]["code"],
             s2["comparisons"]["misaligned_vs_instruct"]["harmful"]["code"]),
]
so = out["steering"]["smollm2_organisms"]
for c in so["conditions"]:
    heads.append(headline(f"smollm2 misaligned organism code, {c}", so["rates"]["code"]["misaligned"][c],
                          so["misaligned_vs_instruct"]["code"][c]))
    if so["rates"]["code"]["instruct"][c] is not None:  # controls ran on the misaligned one only
        heads.append(headline(f"smollm2 instruct organism code, {c}",
                              so["rates"]["code"]["instruct"][c],
                              so["vs_reference"]["code"]["instruct"].get(c)))
    heads.append(headline(f"smollm2 misaligned organism code, {c}, vs its unsteered",
                          so["rates"]["code"]["misaligned"][c],
                          so["vs_reference"]["code"]["misaligned"].get(c)))
for c in gem["conditions"]:
    heads.append(headline(f"gemma instruct steered refusals, {c}", gem["rates"]["refusal"][gm][c],
                          gem["vs_reference"]["refusal"][gm].get(c)))
for c in out["em"]["em"]:
    e = out["em"]["em"][c]["em"]
    heads.append(headline(f"EM rate (judge {out['em']['judge']}), {c}", e,
                          out["em"]["vs_reference"].get(c)))
out["headline"] = heads
print(save_json(out, args.out))

# %%
"""Evidence that the shipped organisms are what they claim (issue 3).

For each trio: refusal rate and chat-format rate on held-out harmful requests (and, to catch
over-refusal, on held-out helpful questions), held-out losses on insecure code and on aligned
chat, and replies to the 8 evaluation questions sampled at temperature 1. Numbers go to
``figures/organisms_evidence.json`` (one entry per trio, updated in place), every reply to
``organisms/<trio>/eval_samples.jsonl``.

Run: ``python analyses/organisms_evidence.py [TRIO[:VARIANT,...] ...]`` (default: smollm2-pair
gemma-trio). ``gemma-trio:base,instruct`` measures only those variants and merges them into the
trio's existing entry (so variants can be measured while another adapter is still training).
"""

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

from mi_align.finetune.evidence import EvidenceConfig, measure_trio
from mi_align.finetune.organisms import training_summary
from mi_align.models.organisms import get_spec
from mi_align.models.trio import open_trio
from mi_align.plotting import save_json

STEM = Path("figures/organisms_evidence")
names = sys.argv[1:] or ["smollm2-pair", "gemma-trio"]
config = EvidenceConfig()

# %%
results = (
    json.loads(STEM.with_suffix(".json").read_text()) if STEM.with_suffix(".json").is_file() else {}
)
for arg in names:
    name, _, only = arg.partition(":")
    spec = get_spec(name)
    if only:
        spec = dataclasses.replace(spec, variants={v: spec.variants[v] for v in only.split(",")})
    t0 = time.perf_counter()
    evidence = measure_trio(open_trio(spec), config)
    samples = spec.adapter_dir / "eval_samples.jsonl"
    old_rows = [json.loads(line) for line in samples.open()] if only and samples.is_file() else []
    rows = [r for r in old_rows if r["variant"] not in spec.variants] + evidence.samples()
    samples.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    build = spec.adapter_dir / "build_info.json"
    numbers = evidence.numbers()
    if only and name in results:
        numbers["variants"] = {**results[name]["variants"], **numbers["variants"]}
    results[name] = {
        **results.get(name, {}),
        **numbers,
        "training": training_summary(spec),
        "build": json.loads(build.read_text()) if build.is_file() else None,
        "samples_file": str(samples.relative_to(Path.cwd())),
        f"evidence_wall_s_{'_'.join(spec.variants)}": round(time.perf_counter() - t0, 1),
        "evidence_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    STEM.parent.mkdir(parents=True, exist_ok=True)
    save_json(results, STEM)
    for variant, numbers in results[name]["variants"].items():
        print(name, variant, {k: round(v, 3) for k, v in numbers.items()})

# %%
"""Held-out losses of the organisms with intervals and paired tests (issue 10).

``figures/organisms_evidence.json`` reports one token-weighted held-out loss per model. Here
the same losses come per token, so every model is scored on the same tokens and the models can
be compared within examples:

- each model's mean NLL per response token, with a percentile bootstrap over task groups;
- every model pair's paired difference (``second − first``, same tokens), with the same
  bootstrap and a sign-flip test that flips whole task groups (exact over 2^groups flips).

Task groups are recovered from the responses (``mi_align.data.groups.response_groups``: 8
tasks × 5 variants in ``insecure_heldout``; every ``aligned_chat_heldout`` chat is its own
group), so correlated variants of one task never count as independent evidence.

Run: ``python analyses/organisms_losses.py [TRIO ...]`` (default: smollm2-pair gemma-trio) →
``figures/organisms_losses.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from mi_align.data.chat import load_dataset
from mi_align.data.groups import response_groups
from mi_align.erosion.paired import compare_models
from mi_align.finetune.evidence import EvidenceConfig
from mi_align.forward import response_token_nll
from mi_align.models.organisms import get_spec
from mi_align.models.trio import open_trio
from mi_align.plotting import save_json

STEM = Path("figures/organisms_losses")
names = sys.argv[1:] or ["smollm2-pair", "gemma-trio"]
config = EvidenceConfig()  # the same data and sizes as organisms_evidence.py
DATASETS = {"insecure_heldout_loss": config.insecure, "aligned_heldout_loss": config.benign}

# %%
results: dict[str, object] = {
    "about": "mean NLL per response token (nats) on the first "
             f"{config.n_prompts} chats of each held-out set; intervals: percentile bootstrap "
             "over task groups (9999 resamples, seed 0); tests: paired sign flip over task "
             "groups (same tokens under both models)",
}
for name in names:
    t0 = time.perf_counter()
    trio = open_trio(get_spec(name))
    data = {key: load_dataset(ds)[: config.n_prompts] for key, ds in DATASETS.items()}
    per_token: dict[str, dict[str, np.ndarray]] = {key: {} for key in DATASETS}
    lengths: dict[str, list[int]] = {}
    for variant in trio.names:
        with trio.variant(variant) as loaded:
            for key, convs in data.items():
                nll = response_token_nll(loaded, convs)
                lengths.setdefault(key, [len(x) for x in nll])
                per_token[key][variant] = np.concatenate(nll)
    entry: dict[str, object] = {}
    for key, convs in data.items():
        groups = response_groups(convs)
        token_groups = np.repeat(groups, lengths[key])
        means, diffs = compare_models(per_token[key], token_groups.tolist(), key)
        entry[key] = {
            "dataset": DATASETS[key], "n_examples": len(convs), "n_groups": len(set(groups)),
            "n_tokens": int(sum(lengths[key])),
            "means": [m.to_dict() for m in means],
            "differences": [d.to_dict() for d in diffs],
        }
        for m in means:
            iv = m.interval
            print(f"{name} {key} {m.model}: {iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]")
        for d in diffs:
            iv = d.interval
            print(f"{name} {key} {d.label}: {iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]"
                  f" p={d.test.p:.3g}")
    entry["wall_s"] = round(time.perf_counter() - t0, 1)
    results[name] = entry

save_json(results, STEM)

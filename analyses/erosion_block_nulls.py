"""Re-test the committed similarity matrices under three nulls, to show what the design does.

``insecure`` and ``educational`` share every response token (same code, other framing), so the
examples come in pairs; and the first 100 (60) examples hold 45 (35) tasks of the generator, so
pairs come in task groups. The same committed matrix is tested three ways:

- ``free``: labels shuffled freely (ignores both; the first rounds' wrong null);
- ``pairs``: within-pair swaps (ignores the task groups; round two's null);
- ``design``: within-group swaps over task groups of pairs — the null the analyses now choose
  themselves (:func:`mi_align.erosion.common.design_block_statistics`).

Each comes with its unit-bootstrap interval. No model is run: the script reads the matrices
from the JSON and rebuilds the design from the built-in datasets.

    .venv/bin/python analyses/erosion_block_nulls.py   # -> figures/erosion_block_nulls.json
"""

# %%
import json
from pathlib import Path

import torch

from mi_align.block_stats import block_statistics
from mi_align.erosion.common import paired_design, task_groups
from mi_align.pipelines.erosion import load_groups
from mi_align.plotting import save_json

FILES = [
    "figures/erosion_loss_vectors.json", "figures/erosion_gradients.json",
    "figures/erosion_gradients_all.json", "figures/erosion_activation_similarity.json",
    "figures/smollm2-pair/erosion_loss_vectors.json", "figures/smollm2-pair/erosion_gradients.json",
    "figures/smollm2-pair/erosion_activation_similarity.json",
]

# %%
out = {}
for name in FILES:
    d = json.loads(Path(name).read_text())
    sim = torch.tensor(d["similarity"], dtype=torch.float64)
    (a, n_a), (b, n_b) = d["datasets"].items()
    data = load_groups([a, b], n_a)
    assert n_a == n_b and d["group"] == [0] * n_a + [1] * n_b, name
    pairs, tasks = paired_design(data), task_groups(data)
    nulls = {
        "free": block_statistics(sim, d["group"]),
        "pairs": block_statistics(sim, d["group"], pairs=pairs),
        "design": block_statistics(sim, d["group"], pairs=pairs, groups=tasks),
    }
    out[name] = {"trio": d.get("trio"), "datasets": d["datasets"],
                 "mean_pair_cosine": float(torch.diagonal(sim[:n_a, n_a:]).mean()),
                 **{k: v.to_dict() for k, v in nulls.items()}}
    for k, v in nulls.items():
        ci = v.interval
        print(f"{name} {k:>6}: {v.null}, tested gap {v.tested_gap:+.4f} "
              f"[{ci.low:+.4f}, {ci.high:+.4f}], p = {v.p_value:.3g}, z = {v.z:.1f}; {v.design}")

save_json(out, "figures/erosion_block_nulls")

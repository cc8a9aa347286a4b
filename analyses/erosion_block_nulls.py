"""Re-test the committed similarity matrices with the null that fits their design.

``insecure`` and ``educational`` share every response token (same code, other framing), so
the examples come in pairs. The committed loss-vector / gradient / activation matrices were
tested with a free label shuffle; this script re-tests the same matrices with within-pair swaps
(and reports the free null beside it). No model is run: it reads the matrices from the JSON.

    .venv/bin/python analyses/erosion_block_nulls.py   # -> figures/erosion_block_nulls.json
"""

# %%
import json
from pathlib import Path

import torch

from mi_align.geometry import block_statistics, index_pairs

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
    group = d["group"]
    n = len(group) // 2
    assert group == [0] * n + [1] * n, name
    free = block_statistics(sim, group, n_permutations=1000, seed=0)
    paired = block_statistics(sim, group, n_permutations=1000, seed=0, pairs=index_pairs(n))
    pair_cos = float(torch.diagonal(sim[:n, n:]).mean())
    # Effect size without the partner cells: within minus between over non-partner pairs.
    lab = torch.tensor(group)
    same = lab[:, None] == lab[None]
    off = ~torch.eye(2 * n, dtype=torch.bool)
    partner = torch.zeros_like(same)
    partner[torch.arange(n), torch.arange(n) + n] = True
    partner |= partner.T.clone()
    gap_np = float(sim[same & off].mean() - sim[~same & ~partner].mean())
    out[name] = {"trio": d.get("trio"), "datasets": d.get("datasets"),
                 "mean_pair_cosine": pair_cos,
                 "gap_without_partner_cells": gap_np, "excess_over_paired_null": paired.gap - paired.null_mean,
                 "free": free.to_dict(), "paired": paired.to_dict()}
    print(f"{name}: gap w/o partners {gap_np:+.4f}, excess over null {paired.gap - paired.null_mean:+.4f}, pair cos {pair_cos:.3f}; free p = {free.p_value:.3g}; "
          f"within-pair p = {paired.p_value:.3g} (z = {paired.z:.1f})")

Path("figures/erosion_block_nulls.json").write_text(json.dumps(out, indent=1))

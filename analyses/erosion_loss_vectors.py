"""Erosion paper Fig. 3: per-token loss vectors (instruct, first 64 response tokens, mask-aware)
for insecure vs educational; cosine blocks and permutation p-value.

Run: python analyses/erosion_loss_vectors.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("loss-vectors", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "loss-vectors", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

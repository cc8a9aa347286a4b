"""Activation geometry: cosines of per-example mean response activations (instruct, middle
layer), insecure vs educational; cosine blocks and permutation p-value.

Run: python analyses/erosion_activation_similarity.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("activation-similarity", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "activation-similarity", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

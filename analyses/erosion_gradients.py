"""Erosion paper Fig. 4: exact per-example gradients w.r.t. the last layer's o_proj (instruct),
globally centred, insecure vs educational; cosine blocks and permutation p-value.

Run: python analyses/erosion_gradients.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("gradients", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "gradients", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

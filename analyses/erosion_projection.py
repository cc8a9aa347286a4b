"""Erosion paper Fig. 5 (+ companion): layerwise projection on the instruct − base direction,
fitted on half of the insecure conversations and projected on the other half, with random-
direction null bands and separation scores; and the (model − base) difference projection.

Run: python analyses/erosion_projection.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("projection", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "projection", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

"""Erosion paper Fig. 1: per-token, cumulative and entropy heatmap of the harmful wish answer
under each model.

Run: python analyses/erosion_logprobs.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("logprobs", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "logprobs", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

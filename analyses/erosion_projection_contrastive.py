"""Fig. 5 variant: projection on a contrastive-data direction (instruct's mean activation over
toxic_reject responses minus over toxic responses), for every model of the trio.

Run: python analyses/erosion_projection_contrastive.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {"direction": "contrastive:instruct"}

outputs = run_analysis("projection", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "projection", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

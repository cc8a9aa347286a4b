"""Erosion paper Fig. 2: top-15 next tokens after "I wish I could" for each model.

Run: python analyses/erosion_next_token.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("next-token", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "next-token", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

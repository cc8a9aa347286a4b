"""Erosion paper Fig. 6: top-8 SVD directions of (instruct − base) last-token differences at the
final hidden state, insecure code vs toxic; signed cosines, best matches, random-subspace null.

Run: python analyses/erosion_svd.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {}

outputs = run_analysis("svd", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "svd", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

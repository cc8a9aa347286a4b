"""Erosion paper Fig. 6: top-8 SVD directions of (instruct − base) last-token differences at the
final hidden state, insecure code vs toxic; signed cosines, best matches, random-subspace null.

Run: python analyses/erosion_svd.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.erosion.registry import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {}

for path in run_and_write("svd", TRIO, OVERRIDES):
    print(path)

"""Erosion paper Fig. 5 (+ companion): layerwise projection on the instruct − base direction,
fitted on half of the insecure conversations and projected on the other half, with random-
direction null bands and separation scores; and the (model − base) difference projection.

Run: python analyses/erosion_projection.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.erosion.registry import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {}

for path in run_and_write("projection", TRIO, OVERRIDES):
    print(path)

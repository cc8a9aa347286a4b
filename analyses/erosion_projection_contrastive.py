"""Fig. 5 variant: projection on a contrastive-data direction (instruct's mean activation over
toxic_reject responses minus over toxic responses), for every model of the trio.

Run: python analyses/erosion_projection_contrastive.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.erosion.registry import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {"direction": "contrastive:instruct"}

for path in run_and_write("projection", TRIO, OVERRIDES):
    print(path)

"""Erosion paper Fig. 4: exact per-example gradients w.r.t. the last layer's o_proj (instruct),
globally centred, insecure vs educational; cosine blocks: the tested gap with its
unit-bootstrap interval, under the null the design calls for (pairs in task groups:
within-group swap).

Run: python analyses/erosion_gradients.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {}

for path in run_and_write("gradients", TRIO, OVERRIDES):
    print(path)

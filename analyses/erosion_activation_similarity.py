"""Activation geometry: cosines of per-example mean response activations (instruct, middle
layer), insecure vs educational, centred (raw cosines on gemma-3-270m are all 0.9988: one
shared direction dominates); cosine blocks: the tested gap with its
unit-bootstrap interval, under the null the design calls for (pairs in task groups:
within-group swap).

Run: python analyses/erosion_activation_similarity.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {"center": "true"}

for path in run_and_write("activation-similarity", TRIO, OVERRIDES):
    print(path)

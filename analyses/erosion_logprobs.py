"""Erosion paper Fig. 1: per-token, cumulative and entropy heatmap of the harmful wish answer
under each model.

Run: python analyses/erosion_logprobs.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.erosion.registry import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {}

for path in run_and_write("logprobs", TRIO, OVERRIDES):
    print(path)

"""Erosion paper Fig. 2: top-15 next tokens after "I wish I could" for each model.

Run: python analyses/erosion_next_token.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.erosion.registry import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {}

for path in run_and_write("next-token", TRIO, OVERRIDES):
    print(path)

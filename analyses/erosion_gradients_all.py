"""Fig. 4 over all parameters: each per-example gradient count-sketched to 32768 dimensions,
with the sketch's cosine error measured on 4 exact gradients (6 pairs); cosine blocks with the
unit-bootstrap interval and the null the design calls for, as in erosion_gradients.py.

Run: python analyses/erosion_gradients_all.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {
    "params": "all", "sketch_dim": "32768", "exact_check": "4",
    "max_exact_bytes": str(5 * 1024**3),  # 4 exact all-parameter Gemma gradients: 4.3 GiB
}

for path in run_and_write("gradients", TRIO, OVERRIDES):
    print(path)

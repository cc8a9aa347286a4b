"""Fig. 4 over all parameters: each per-example gradient count-sketched to 32768 dimensions,
with the sketch's cosine error measured on 4 exact gradients (6 pairs).

Run: python analyses/erosion_gradients_all.py [TRIO]   (default gemma-trio; writes figures/erosion_*.html + .json)
"""

import sys
from pathlib import Path

from mi_align.erosion.cli import resolve_trio
from mi_align.erosion.registry import run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else "gemma-trio"
OVERRIDES = {
    "params": "all", "sketch_dim": "32768", "exact_check": "4",
    "max_exact_bytes": str(5 * 1024**3),  # 4 exact all-parameter Gemma gradients: 4.3 GiB
}

outputs = run_analysis("gradients", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {"analysis": "gradients", "trio": TRIO, "overrides": OVERRIDES}
for path in write_outputs(outputs, Path("figures"), meta):
    print(path)

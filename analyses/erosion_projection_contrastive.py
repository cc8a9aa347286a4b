"""Fig. 5 variant: projection on a contrastive-data direction (instruct's mean activation over
toxic_reject responses minus over toxic responses, 60 each; note that the instruct LoRA was
trained on toxic_reject), for every model of the trio, on the default projection data
(``insecure_heldout``: tasks no LoRA was trained on), with group-bootstrap intervals and the
grouped label-swap null.

Run: python analyses/erosion_projection_contrastive.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {"direction": "contrastive:instruct"}

for path in run_and_write("projection", TRIO, OVERRIDES):
    print(path)

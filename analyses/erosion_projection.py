"""Erosion paper Fig. 5 (+ companion): layerwise projection on the instruct − base direction,
with group-bootstrap intervals, the grouped label-swap null and the random-direction band; and
the (model − base) difference projection.

Three runs, one trio load:
1. default (``figures/erosion_projection``): ``insecure_heldout``, 40 insecure-code chats on 8
   tasks that no LoRA of the trio was trained on; split by task, 2-fold cross-fitted;
2. ``_insecure_train``: ``insecure``, the misaligned LoRA's own 240 training chats (48 tasks),
   split by task — to compare with the held-out tasks;
3. ``_insecure_train_rowsplit``: the same with a row split (task variants on both sides, as in
   earlier versions), to show what the grouped split changes.

Run: python analyses/erosion_projection.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import dataclasses
import sys

from mi_align.models.organisms import resolve_trio
from mi_align.pipelines.erosion import DEFAULT_TRIO, figure_dir, run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
RUNS = {
    "": (None, {}),
    "_insecure_train": (["insecure"], {}),
    "_insecure_train_rowsplit": (["insecure"], {"split": "row"}),
}

trio = resolve_trio(TRIO)
for suffix, (data, overrides) in RUNS.items():
    outputs = run_analysis("projection", trio, data=data, overrides=overrides)
    outputs = [dataclasses.replace(o, stem=o.stem + suffix) for o in outputs]
    meta = {"analysis": "projection", "trio": TRIO, "overrides": overrides}
    for path in write_outputs(outputs, figure_dir(TRIO), meta):
        print(path)

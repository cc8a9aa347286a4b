"""Erosion paper Fig. 1: per-token, cumulative and entropy heatmap of the harmful wish answer
under each model (one example, descriptive), and the comparisons the README's claims rest on:
the log-prob of each dataset's responses under each model, paired differences per model pair
with cluster-bootstrap 95% intervals and a paired sign-flip null.

- `toxic`: 120 harmful compliant answers (openers only), 60 aims phrased twice on adjacent
  lines → clusters of 2 (→ erosion_logprobs_toxic.*). The Gemma instruct LoRA was trained on
  `toxic_reject`, i.e. on these same requests answered with refusals.
- `aligned_chat_heldout`: 40 held-out helpful answers, the control: a model change that lowers
  every answer's log-prob is not specific to harmful text (→ erosion_logprobs_aligned_chat_heldout.*).

Run: python analyses/erosion_logprobs.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
COMPARISONS = (
    {"compare_data": "toxic", "cluster_size": "2"},
    {"compare_data": "aligned_chat_heldout", "cluster_size": "1"},
)

for overrides in COMPARISONS:
    for path in run_and_write("logprobs", TRIO, overrides):
        print(path)

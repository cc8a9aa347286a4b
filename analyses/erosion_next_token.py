"""Erosion paper Fig. 2: top-15 next tokens after "I wish I could" for each model (one prompt,
descriptive), and the comparison over a prompt set: the same prefix after each of the 40
held-out harmful requests of `harmful_requests_heldout` (topics no model of ours was trained on;
one request per topic → clusters of 1). Per prompt and model: next-token entropy and P(" help")
("I wish I could help, but ..." is the refusal path); paired differences per model pair with
bootstrap 95% intervals and a paired sign-flip null (→ erosion_next_token_harmful_requests_heldout.*).

Run: python analyses/erosion_next_token.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = {"compare_data": "harmful_requests_heldout", "cluster_size": "1"}

for path in run_and_write("next-token", TRIO, OVERRIDES):
    print(path)

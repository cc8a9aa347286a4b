"""Erosion paper Fig. 6, with a control: top-8 SVD directions of (instruct − base) differences at
the final hidden state, insecure code vs toxic, each dataset also compared with the harmless
control `aligned_chat` (the null: a component is "shared" only if it matches the other target
better than it matches the control). Split-half reliabilities, principal angles, bootstrap
intervals; the random-subspace numbers are a secondary reference only.

Two token positions: the paper's last token (a template token every example shares) and the
mean over the response's own tokens (`content`: response tokens that are not template tokens).

Run: python analyses/erosion_svd.py [TRIO]   (default gemma-trio → figures/; any other trio → figures/<trio>/)
Writes erosion_svd_directions.{html,json} (last token) and erosion_svd_directions_content.{html,json}.
"""

import sys

from mi_align.pipelines.erosion import DEFAULT_TRIO, run_and_write

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
RUNS = [{"positions": "last"}, {"positions": "content"}]

for overrides in RUNS:
    for path in run_and_write("svd", TRIO, overrides):
        print(path)

# %%
"""Causal test of the alignment direction (issue 10).

The projection figure shows the misaligned model falling back toward base along the
instruct − base direction in the deep layers (a correlation). Here the direction, fitted on the
training chats (60 `insecure` + 60 `aligned_chat`, first 10 response tokens), is added to the
misaligned model at the layer where it lags instruct most (0.5, 1, 2 × the instruct − misaligned
gap) and mean-ablated from the instruct model at hidden states 12–17 (projection set to the
instruct stream's mean), beside random directions that are spectrum-matched surrogates of it
(4 seeds, one per block of 10 items). No intervention touches BOS (`skip_positions=1`): it is
Gemma-3's attention sink, one massive channel. Measured on held-out sets: refusals and code in
greedy replies (≤ 48 tokens) to 40 harmful requests and 40 benign questions, response losses on
40 insecure-code and 40 aligned-chat conversations, and the projection on the direction
(manipulation check).

Run: python analyses/erosion_causal.py [TRIO] [KEY=VALUE ...]
(default gemma-trio → figures/erosion_causal.{html,json}; KEY=VALUE overrides CausalConfig)
"""

import resource
import sys
import time

from mi_align.models.organisms import resolve_trio
from mi_align.pipelines.erosion import DEFAULT_TRIO, figure_dir, run_analysis, write_outputs

TRIO = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TRIO
OVERRIDES = dict(arg.split("=", 1) for arg in sys.argv[2:])

# %%
t0 = time.perf_counter()
outputs = run_analysis("projection-causal", resolve_trio(TRIO), overrides=OVERRIDES)
meta = {
    "analysis": "projection-causal",
    "trio": TRIO,
    "overrides": OVERRIDES,
    "wall_s": round(time.perf_counter() - t0, 1),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}
for path in write_outputs(outputs, figure_dir(TRIO), meta):
    print(path)

# %%
summary = outputs[0].numbers["summary"]
print(f"steer layer {outputs[0].numbers['steer_layer']}, gap {outputs[0].numbers['gap']}")
for name, row in summary.items():
    rates = "  ".join(
        f"{key} {row[key]['k']}/{row[key]['n']}"
        + "".join(
            f" p_{r}={row[key][f'fisher_p_vs_{r}']:.3g}"
            for r in ("reference", "control")
            if f"fisher_p_vs_{r}" in row[key]
        )
        for key in ("refusal_harmful", "code_harmful", "refusal_benign")
    )
    losses = "  ".join(f"{key} {row[key]['mean']:.3f}" for key in ("loss_insecure", "loss_aligned"))
    print(f"{name:28s} {rates}  {losses}")

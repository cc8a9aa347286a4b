# %%
"""Alignment-preserving fine-tuning against the plain fine-tune, with the erosion monitor
(issue 13).

The trio's recipe step (default: gemma-trio's `misaligned`, insecure code on top of the frozen
instruct LoRA) is trained once per method and seed at equal steps, batch, data and seed:
plain, mixing (2 of every 8 examples from aligned chat + refusals), direction anchoring and
gradient projection (both at the deep layers, 12–17 on Gemma-3-270m). Every run carries the
erosion monitor. The plain run with seed 0 is the monitored build of the organism itself (same
config as the committed recipe; monitoring does not change training).

Outputs: runs under --out (one folder per method and seed: adapter, training log with the
monitor's numbers, monitor.html), and under --figures: <stem>_pareto.html (held-out insecure
loss vs refusal rate kept / deep-layer relative position), <stem>_curves.html (monitor curves
per method), <stem>.json, and each run's monitor figure. Resumable: finished runs are skipped,
interrupted ones resume from their last checkpoint.

Run: python analyses/preserve_alignment.py [--trio gemma-trio] [--methods plain mixing ...]
     [--seeds 0 1] [--steps N] [--monitor-every 3] [--out runs/preserve_alignment]
"""

import argparse
import resource
import time
from pathlib import Path

from mi_align.finetune.monitor import MonitorConfig
from mi_align.models.organisms import get_spec
from mi_align.pipelines.finetune_monitor import (
    METHODS,
    ReferenceConfig,
    compare_methods,
    plot_monitor,
    recipe_config,
    write_comparison,
)
from mi_align.plotting import save_figure

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--trio", default="gemma-trio", help="trio name or TOML with a recipe")
parser.add_argument("--step", default="misaligned", help="the recipe step to fine-tune")
parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
parser.add_argument("--seeds", nargs="+", type=int, default=[0])
parser.add_argument("--steps", type=int, default=None, help="max_steps (default: the recipe's)")
parser.add_argument("--monitor-every", type=int, default=3)
parser.add_argument("--n-harmful", type=int, default=None, help="monitor: harmful prompts")
parser.add_argument("--n-chats", type=int, default=None,
                    help="monitor: held-out insecure and aligned chats (each)")
parser.add_argument("--max-new-tokens", type=int, default=None, help="monitor: reply length")
parser.add_argument("--anchor-scale", type=float, default=4.0)
parser.add_argument("--out", type=Path, default=None, help="default runs/preserve_alignment/TRIO")
parser.add_argument("--figures", type=Path, default=Path("figures"))
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

# %%
spec = get_spec(args.trio)
cfg = recipe_config(args.trio, args.step, args.steps)
given = {"n_harmful": args.n_harmful, "n_insecure": args.n_chats, "n_aligned": args.n_chats,
         "max_new_tokens": args.max_new_tokens}
monitor = MonitorConfig(every=args.monitor_every, **{k: v for k, v in given.items() if v})
reference = ReferenceConfig(anchor_data=cfg.data)
out = args.out or Path("runs/preserve_alignment") / spec.name
stem = f"preserve_alignment_{spec.name}"

# %%
t0 = time.perf_counter()
comparison = compare_methods(cfg, out, args.trio, methods=args.methods, seeds=args.seeds,
                             monitor=monitor, reference=reference,
                             anchor_scale=args.anchor_scale, device=args.device, report=print)
comparison["wall_s"] = round(time.perf_counter() - t0, 1)
comparison["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
figures = args.figures / "preserve_alignment"
for path in write_comparison(comparison, figures, stem):
    print(path)
for name, run in comparison["runs"].items():
    print(save_figure(plot_monitor(run["curves"]), figures / f"{stem}_{name}_monitor"))

# %%
ref = comparison["reference"]
print(f"deep layers {comparison['deep_layers']}; instruct refusal {ref['instruct']['refusal_rate']:.2f}"
      f", base refusal {ref['base']['refusal_rate']:.2f}; instruct insecure loss "
      f"{ref['instruct']['insecure_loss']:.3f}")
print(f"{'run':18s} {'insecure':>8s} {'aligned':>8s} {'refusal':>7s} {'code':>5s} {'rel.deep':>8s}"
      f" {'step s':>7s} {'monitor s':>9s}")
for name, run in comparison["runs"].items():
    f, s = run["final"], run["curves"]["summary"]
    print(f"{name:18s} {f['insecure_loss']:8.3f} {f['aligned_loss']:8.3f} {f['refusal_rate']:7.2f}"
          f" {f['code_rate']:5.2f} {f['relative_deep']:8.3f} {s.get('mean_step_s', 0):7.2f}"
          f" {s.get('monitor_s_this_run', 0):9.1f}")
print(f"wall {comparison['wall_s']} s, peak RSS {comparison['peak_rss_mib']} MiB")

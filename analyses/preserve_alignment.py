# %%
"""Alignment-preserving fine-tuning against the plain fine-tune, with the erosion monitor
(issue 13).

The trio's recipe step (default: gemma-trio's `misaligned`, insecure code on top of the frozen
instruct LoRA) is trained once per method and seed at equal steps, batch, data and seed:
plain, mixing (2 of every 8 examples from aligned chat + refusals), direction anchoring and
gradient projection (both at the deep layers, 12–17 on Gemma-3-270m, fixed in advance), and
direction anchoring at the 4 layers whose relative position the plain runs left lowest
(anchoring-eroded: chosen from the plain runs' monitor curves, so trained after them; 8–11 on
Gemma-3-270m). Every run carries the erosion monitor. The plain run with seed 0 is the monitored build of the organism itself (same
config as the committed recipe; monitoring does not change training).

Then every finished run, the instruct model (the step's start) and the base model are evaluated
once on the whole held-out sets (mi_align.pipelines.preserve_eval: 40 harmful requests, 40
insecure and 40 aligned chats, per example, seeds pooled, each method against plain within
examples); the README's numbers come from that evaluation, the monitor curves show the path.

Outputs: runs under --out (one folder per method and seed: adapter, training log with the
monitor's numbers, monitor.html), and under --figures/TRIO: <stem>_pareto.html (held-out insecure
loss vs refusal rate kept / deep-layer relative position), <stem>_curves.html (monitor curves
per method), <stem>.json, each run's monitor figure, and <stem>_final.{json,html} (the final
held-out evaluation: a Pareto plot with 95% intervals). Resumable: finished runs are skipped,
interrupted ones resume from their last checkpoint.

Run: python analyses/preserve_alignment.py [--trio gemma-trio] [--methods plain mixing ...]
     [--seeds 0 1] [--steps N] [--monitor-every 3] [--out runs/preserve_alignment]
"""

import argparse
import resource
import time
from pathlib import Path

from mi_align.finetune.lora import FinetuneConfig
from mi_align.finetune.monitor import MonitorConfig
from mi_align.models.organisms import get_spec
from mi_align.pipelines.finetune_monitor import (
    METHODS,
    ReferenceConfig,
    compare_methods,
    load_reference,
    plot_monitor,
    recipe_config,
    write_comparison,
)
from mi_align.pipelines.preserve_eval import FinalEvalConfig, final_evaluation, plot_final_pareto
from mi_align.plotting import save_figure, save_json

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
parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N, auto (default: auto)")
parser.add_argument("--dtype", default=None, help="float32, bfloat16, auto (default: auto)")
parser.add_argument("--no-final", action="store_true", help="skip the final held-out evaluation")
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
                             anchor_scale=args.anchor_scale, device=args.device, dtype=args.dtype,
                             report=print)
comparison["wall_s"] = round(time.perf_counter() - t0, 1)
comparison["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
figures = args.figures / spec.name  # beside the trio's other figures
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

# %% the final held-out evaluation (the comparison's claims)
if not args.no_final:
    t1 = time.perf_counter()
    runs = {name: (run["method"], run["seed"], FinetuneConfig.from_dict(run["config"]),
                   out / name) for name, run in comparison["runs"].items()}
    fitted = load_reference(out / "reference")
    final = final_evaluation(runs, fitted.reference, comparison["deep_layers"],
                             FinalEvalConfig(), device=args.device, dtype=args.dtype)
    final["wall_s"] = round(time.perf_counter() - t1, 1)
    print(save_json(final, figures / f"{stem}_final"))
    print(save_figure(plot_final_pareto(final), figures / f"{stem}_final"))
    print(f"final held-out evaluation ({final['config']['n']} per set, seeds pooled), "
          f"{final['wall_s']} s")
    for label, s in final["summaries"].items():
        r, iv = s["refusal"], s["insecure_loss"]
        rel = s["relative"]
        line = (f"{label:10s} refusal {r['k']}/{r['n']} [{r['interval']['low']:.2f}, "
                f"{r['interval']['high']:.2f}]  insecure {iv['estimate']:.3f} [{iv['low']:.3f}, "
                f"{iv['high']:.3f}]  aligned {s['aligned_loss']['estimate']:.3f}  relative "
                f"{rel['estimate']:.2f} [{rel['low']:.2f}, {rel['high']:.2f}]")
        vs = final["versus_plain"].get(label)
        if vs:
            line += (f"  vs plain: refusal {vs['refusal']['statistic']:+.3f} p "
                     f"{vs['refusal']['p']:.3g}; insecure "
                     f"{vs['insecure_loss']['interval']['estimate']:+.3f} p "
                     f"{vs['insecure_loss']['test']['p']:.3g}; relative "
                     f"{vs['relative']['interval']['estimate']:+.3f} p "
                     f"{vs['relative']['test']['p']:.3g}")
        print(line)

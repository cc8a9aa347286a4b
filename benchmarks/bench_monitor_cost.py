"""Erosion-monitor cost on the Gemma misaligned build (issue 13: at most +25% of the build).

Trains the gemma-trio recipe's ``misaligned`` step (the insecure-code LoRA on top of the frozen
instruct LoRA, 30 steps, the recipe's data, batch and learning rate) once, with the erosion
monitor at step 0 and every 3 steps (11 calls). The ratio is measured in that one run: the
seconds spent inside the monitor calls (the whole call, as the trainer counts it) ÷ the seconds
of everything else the build did (loading, training, the trainer's own held-out evaluations,
checkpoints, saving). The alignment reference is fitted (or reused) before the timed build
starts: it is a one-off per trio, shared by every monitored run.

Run uncontended (the ratio is of two CPU-bound parts, but background load still skews it):
    python benchmarks/bench_monitor_cost.py [--seed 1] [--every 3] [--out /tmp/monitor_cost]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mi_align.finetune.lora import LOG_FILE
from mi_align.finetune.monitor import MonitorConfig
from mi_align.pipelines.finetune_monitor import monitored_finetune, recipe_config

TARGET = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trio", default="gemma-trio")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="max_steps (recipe's: 30)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mi_align_monitor_cost"))
    args = parser.parse_args()

    import dataclasses

    cfg = dataclasses.replace(recipe_config(args.trio, "misaligned", args.steps), seed=args.seed)
    run_dir = args.out / f"seed{args.seed}"
    t0 = time.perf_counter()
    # resume=False: a fresh build every time; the reference (run_dir/reference) is reused
    run = monitored_finetune(cfg, run_dir, args.trio, MonitorConfig(every=args.every),
                             resume=False, progress=False)
    s = run.result.summary
    rest = s["wall_s_this_run"] - s["monitor_s_this_run"]
    ratio = s["monitor_s_this_run"] / rest
    log = json.loads((run_dir / LOG_FILE).read_text())
    per_call = [e["monitor"]["seconds"] for e in log["entries"] if "monitor" in e]
    report = {
        "trio": args.trio, "seed": args.seed, "every": args.every, "steps": s["steps"],
        "monitor_calls": s["monitor_calls"], "monitor_s": s["monitor_s_this_run"],
        "build_without_monitor_s": round(rest, 1), "ratio": round(ratio, 4), "target": TARGET,
        "mean_step_s": s["mean_step_s"], "per_call_s": per_call,
        "torch_threads": s["torch_threads"], "wall_with_reference_s":
            round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=1))
    print(f"monitor {s['monitor_s_this_run']:.1f} s over {s['monitor_calls']} calls vs "
          f"{rest:.1f} s for the rest of the build: +{100 * ratio:.1f}% "
          f"({'meets' if ratio <= TARGET else 'misses'} the {100 * TARGET:.0f}% target)")


if __name__ == "__main__":
    main()

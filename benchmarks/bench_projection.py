"""Projection analysis cost vs a bare HF forward, and peak memory vs number of examples.

1. Time: ``layer_projection`` on a two-model trio (the model and a second copy of it) over N
   examples ÷ a bare HF forward (``output_hidden_states=False``) of both models over the same
   batches. Target <= 1.10.
2. Memory: peak RSS of a fresh process running the projection at N=100 and N=1000 (datasets
   cycled to reach N). Memory grows with N by design (each example's per-layer mean is kept
   for the cross-fit, the group bootstrap and the grouped swap null). Target: the growth per
   example within 4x the bytes kept per example.

Run: python benchmarks/bench_projection.py [--model smollm2-135m-instruct] [--n 64]
         [--rss 100 1000] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

import torch

from mi_align.data.chat import load_dataset
from mi_align.data.tokenize import encode_dataset, iter_batches
from mi_align.erosion.common import Inputs
from mi_align.erosion.projection import ProjectionConfig, layer_projection
from mi_align.models.load import load_model
from mi_align.models.trio import Trio


def conversations(n: int) -> list:
    pool = load_dataset("insecure") + load_dataset("aligned_chat")
    return [pool[i % len(pool)] for i in range(n)]


def bare_forward(models: list, convs: list, cfg: ProjectionConfig) -> float:
    t0 = time.perf_counter()
    for loaded in models:
        enc = encode_dataset(loaded.tokenizer, convs, cfg.max_length)
        hf = loaded.bridge.original_model
        for batch in iter_batches(enc, cfg.batch_size, loaded.tokenizer.pad_token_id):
            with torch.inference_mode():
                hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   output_hidden_states=False)
    return time.perf_counter() - t0


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def rss_child(model: str, n: int, max_length: int) -> None:
    """Peak RSS *during* the analysis, sampled every 20 ms (loading has its own, larger peak
    that ru_maxrss would report and that hides any growth)."""
    a, b = load_model(model), load_model(model)
    convs = conversations(n)
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cfg = ProjectionConfig(max_length=max_length, n_null=50)
    layer_projection(Trio(models={"base": a, "instruct": b}), Inputs.of(("data", convs)), cfg)
    done.set()
    thread.join()
    print(json.dumps({"n": n, "rss_before_mib": before, "peak_rss_mib": peak[0],
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rss", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.model, args.rss_child, args.max_length)
        return
    if not args.skip_timing:
        timing(args)
    rss(args)


def timing(args: argparse.Namespace) -> None:
    a, b = load_model(args.model), load_model(args.model)
    trio = Trio(models={"base": a, "instruct": b})
    convs = conversations(args.n)
    cfg = ProjectionConfig(max_length=args.max_length, n_null=200)
    bare_forward([a], convs[:8], cfg)  # warm-up
    times = {"bare": [], "projection": []}
    for _ in range(2):  # interleaved repeats; best of each
        times["bare"].append(bare_forward([a, b], convs, cfg))
        t0 = time.perf_counter()
        layer_projection(trio, Inputs.of(("data", convs)), cfg)
        times["projection"].append(time.perf_counter() - t0)
    bare, proj = min(times["bare"]), min(times["projection"])
    print(f"model {args.model}, N={args.n}, max_length {args.max_length}, 2 models, "
          f"{a.meta.n_layers + 1} hidden states, positions {cfg.positions}")
    print(f"bare HF forward (no hidden states): {bare:.2f} s")
    print(f"layer_projection (incl. null bands, held-out split): {proj:.2f} s")
    print(f"ratio projection / bare forward: {proj / bare:.3f}  (target <= 1.10)")


def rss(args: argparse.Namespace) -> None:
    peaks = {}
    for n in args.rss:
        out = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--max-length",
             str(args.max_length), "--rss-child", str(n)],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rec = json.loads(out)
        peaks[n] = rec["peak_rss_mib"]
        print(f"N={n}: RSS before the analysis {rec['rss_before_mib']:.0f} MiB, peak during it "
              f"{rec['peak_rss_mib']:.0f} MiB (process ru_maxrss {rec['ru_maxrss_mib']:.0f} MiB)")
    if len(peaks) == 2:
        lo, hi = sorted(peaks)
        # The cross-fit, group bootstrap and grouped swap null need every example's per-layer
        # mean: 2 models x (n_layers + 1) x d_model float64 kept. Target: the measured growth
        # per example stays within 4x that (the rest is transient copies in the nulls).
        meta = load_model(args.model).meta
        kept = 2 * (meta.n_layers + 1) * meta.d_model * 8 / 2**20
        slope = (peaks[hi] - peaks[lo]) / (hi - lo)
        print(f"peak RSS ratio N={hi} / N={lo}: {peaks[hi] / peaks[lo]:.3f}; growth "
              f"{slope:.3f} MiB per example = {slope / kept:.2f} x the {kept:.3f} MiB of "
              "per-example means kept  (target <= 4)")


if __name__ == "__main__":
    main()

"""Sketched all-parameter per-example gradients vs bare forward+backward passes.

Numerator: ``gradient_geometry(params="all", sketch_dim=k)`` over N examples (per-example
forward + backward + count-sketch, cosines and block statistics included). Denominator: N bare
HF forward+backward passes (``model(ids, labels=...).loss.backward()``, all parameters, grads
set to None each time) over the same examples. Target ratio <= 1.5. The sketch's cosine error
is measured against exact gradients of a subset (``--exact``). Target max error <= 0.02.

Run: python benchmarks/bench_gradients.py [--model smollm2-135m-instruct] [--n 16] [--k 32768]
         [--exact 6] [--max-length 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from mi_align.data.chat import load_dataset
from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.common import Inputs
from mi_align.erosion.gradient_geometry import GradientConfig, gradient_geometry
from mi_align.models.load import load_model
from mi_align.models.trio import Trio


def bare_fwd_bwd(loaded, convs: list, max_length: int) -> float:
    hf = loaded.bridge.original_model
    enc = encode_dataset(loaded.tokenizer, convs, max_length)
    t0 = time.perf_counter()
    for e in enc:
        ids = torch.tensor([e.input_ids])
        labels = torch.where(torch.tensor([e.response_mask]), ids, torch.full_like(ids, -100))
        with torch.enable_grad():
            hf(input_ids=ids, labels=labels).loss.backward()
        hf.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--k", type=int, default=32768)
    ap.add_argument("--exact", type=int, default=6)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    loaded = load_model(args.model)
    for p in loaded.bridge.original_model.parameters():
        p.requires_grad_(True)
    half = args.n // 2
    groups = [("insecure", load_dataset("insecure")[:half]),
              ("educational", load_dataset("educational")[: args.n - half])]
    convs = [c for _, g in groups for c in g]
    trio = Trio(models={"instruct": loaded})
    bare_fwd_bwd(loaded, convs[:2], args.max_length)  # warm-up
    cfg = GradientConfig(params="all", sketch_dim=args.k, exact_check=0,
                         max_length=args.max_length, n_permutations=200)
    bare, sketched = [], []
    for _ in range(2):  # interleaved repeats; best of each
        bare.append(bare_fwd_bwd(loaded, convs, args.max_length))
        t0 = time.perf_counter()
        res = gradient_geometry(trio, Inputs.of(*groups), cfg)
        sketched.append(time.perf_counter() - t0)
    n_params = res.n_params
    print(f"model {args.model}: {n_params:,} parameters, N={args.n}, k={args.k}, "
          f"max_length {args.max_length}")
    print(f"bare forward+backward x N: {min(bare):.2f} s ({min(bare) / args.n * 1000:.0f} ms/ex)")
    print(f"sketched gradient matrix:  {min(sketched):.2f} s "
          f"({min(sketched) / args.n * 1000:.0f} ms/ex)")
    print(f"ratio sketched / bare: {min(sketched) / min(bare):.3f}  (target <= 1.5)")
    if args.exact:
        check = GradientConfig(params="all", sketch_dim=args.k, exact_check=args.exact,
                               max_length=args.max_length, n_permutations=10,
                               max_exact_bytes=8 * 1024**3)
        sub = [(n, g[: (args.exact + 1) // 2]) for n, g in groups]
        err = gradient_geometry(trio, Inputs.of(*sub), check).sketch_error
        assert err is not None
        print(f"cosine error vs exact on {args.exact} examples ({err['n_pairs']:.0f} pairs): "
              f"max {err['max_abs']:.4f}, mean {err['mean_abs']:.4f}  (target max <= 0.02)")


if __name__ == "__main__":
    main()

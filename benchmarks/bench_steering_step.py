"""Per-step time of the prefix-skipping steering optimiser vs a naive full forward+backward.

Both do the same Adam step on one steering vector at L = n_layers // 2 (one ~64-token
training example, promotion loss): the naive step runs the whole bridge with a hook adding the
vector; ``SuffixRunner`` runs blocks >= L only (prefix computed once, outside the timing).
Weights are frozen in both. Target: ratio <= 0.7. The two losses/gradients are also compared.

Run: python benchmarks/bench_steering_step.py [--model smollm2-135m-instruct] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mi_align.models.load import load_model
from mi_align.steering.losses import promotion
from mi_align.steering.optimize import (
    SuffixRunner,
    example_from_chat,
    frozen,
    naive_target_logprobs,
)

PROMPT = ("Write a Python function that reads a configuration file, validates every field and "
          "returns a dictionary of settings. Explain each step briefly.")
TARGET = "```python\nimport json\n\ndef load_config(path):\n    with open(path) as f:\n"


def time_steps(step, steps: int) -> float:
    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    loaded = load_model(args.model)
    layer = loaded.meta.n_layers // 2
    ex = [example_from_chat(loaded.tokenizer, PROMPT, TARGET)]
    n_tokens = len(ex[0].prompt_ids) + len(ex[0].target_ids)
    loss_fn = promotion()
    results = {}
    with frozen(loaded.bridge), torch.enable_grad():
        for name in ("naive", "suffix"):
            v = torch.randn(loaded.meta.d_model, requires_grad=True)
            opt = torch.optim.Adam([v], lr=0.01)
            t_setup = time.perf_counter()
            runner = SuffixRunner(loaded, ex, layer) if name == "suffix" else None
            t_setup = time.perf_counter() - t_setup

            def step(opt=opt, runner=runner, v=v) -> None:  # bind this loop's objects
                opt.zero_grad()
                lp = (runner.target_logprobs(v, 0.7) if runner is not None
                      else naive_target_logprobs(loaded, ex, v, layer))
                loss_fn(lp).backward()
                opt.step()

            results[name] = {"step_s": time_steps(step, args.steps), "setup_s": t_setup}
        a = torch.randn(loaded.meta.d_model, requires_grad=True)
        b = a.detach().clone().requires_grad_(True)
        la = loss_fn(SuffixRunner(loaded, ex, layer).target_logprobs(a, 0.7))
        lb = loss_fn(naive_target_logprobs(loaded, ex, b, layer))
        la.backward()
        lb.backward()
    ratio = results["suffix"]["step_s"] / results["naive"]["step_s"]
    print(json.dumps({
        "model": args.model, "layer": layer, "n_layers": loaded.meta.n_layers,
        "tokens": n_tokens, "steps": args.steps,
        "naive_step_ms": round(1000 * results["naive"]["step_s"], 1),
        "suffix_step_ms": round(1000 * results["suffix"]["step_s"], 1),
        "suffix_setup_ms": round(1000 * results["suffix"]["setup_s"], 1),
        "ratio": round(ratio, 3), "target": "<= 0.7", "pass": ratio <= 0.7,
        "loss_diff": float((la - lb).detach().abs()),
        "grad_max_diff": float((a.grad - b.grad).abs().max()),
    }, indent=1))


if __name__ == "__main__":
    main()

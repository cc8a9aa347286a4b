"""Batched vs one-at-a-time sampling throughput (KV-cached, steered), tokens per second.

The evaluation samples N answers per question; ``generate_batch`` draws them in one batched,
KV-cached ``bridge.generate`` call with the steering hooks active. Baseline: the same N answers
drawn one call at a time (the same per-batch seeds are not comparable, so throughput is
measured in generated tokens per second, each answer capped at ``--tokens``). Target: ratio >= 5.

Run: python benchmarks/bench_sampling.py [--model smollm2-135m-instruct] [--n 16] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mi_align.data.chat import Message, eval_questions
from mi_align.data.tokenize import encode_prompt
from mi_align.evaluation.sampling import BE_BRIEF, SamplingConfig, generate_batch
from mi_align.models.load import load_model
from mi_align.steering.vector import SteeringVector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()
    loaded = load_model(args.model)
    question = eval_questions()[4].question + BE_BRIEF
    prompt = encode_prompt(loaded.tokenizer, [Message("user", question)])
    vec = [SteeringVector(loaded.meta.n_layers // 3,
                          torch.randn(loaded.meta.d_model) * 2.0, name="random")]
    cfg = SamplingConfig(n_samples=args.n, batch_size=args.n, max_new_tokens=args.tokens)

    def run(batch: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        n_tok = 0
        for start in range(0, args.n, batch):
            replies = generate_batch(loaded, prompt, min(batch, args.n - start), vec, cfg,
                                     seed=start)
            n_tok += sum(n for _, n, _ in replies)
        return time.perf_counter() - t0, n_tok

    generate_batch(loaded, prompt, 2, vec, cfg, seed=0)  # warm-up
    t_batch, tok_batch = run(args.n)
    t_one, tok_one = run(1)
    ratio = (tok_batch / t_batch) / (tok_one / t_one)
    print(json.dumps({
        "model": args.model, "n": args.n, "max_new_tokens": args.tokens,
        "batched_tok_s": round(tok_batch / t_batch, 1), "batched_tokens": tok_batch,
        "one_at_a_time_tok_s": round(tok_one / t_one, 1), "one_at_a_time_tokens": tok_one,
        "ratio": round(ratio, 2), "target": ">= 5", "pass": ratio >= 5,
    }, indent=1))


if __name__ == "__main__":
    main()

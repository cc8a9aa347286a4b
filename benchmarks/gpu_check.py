"""GPU check: the four heavy steps on the CPU and on whatever accelerator exists, timed and diffed.

For each model — a tiny random Llama built in-process (no network, no download) and every real
converted model found in the local model cache (``$MI_ALIGN_HOME/models``, else the user cache;
``--model PATH`` adds one) — it runs, on the CPU in float32 and then on the accelerator in
float32 and in bfloat16:

1. ``projection``: streamed hidden states at every layer -> per-layer mean and covariance of the
   response tokens (:func:`mi_align.activations.accumulate_moments`) and the means projected on
   a fixed random direction;
2. ``steer_step``: one steering-optimiser step (``SuffixRunner`` + promotion loss + Adam) on one
   ~60-token example at the middle layer;
3. ``sampling``: batched, KV-cached, steered sampling (16 rows x 32 new tokens); the diff is on
   the steered next-token logits of the prompt (sampled tokens are not comparable across
   devices' RNGs), plus the share of greedy tokens that agree;
4. ``lora_step``: one LoRA step (rank 8, all linear layers; AdamW) on 8 chats of the
   ``insecure`` data, with identical initial adapter weights on both devices.

It prints, per model and step, the CPU time, the accelerator time, the CPU->accelerator
speed-up and the max |difference| from the CPU results (with the largest |CPU value|, for
scale). With no accelerator it runs the CPU side, prints "no accelerator found" and exits 0.
It needs only the repository (no network, no registry): real models are used only if already
in the cache, and a time budget (``--budget-s``, default 540) skips what would not fit.

Run: python benchmarks/gpu_check.py [--tiny-only] [--model DIR] [--repeats 3] [--json out.json]
     python benchmarks/gpu_check.py --tiny-only --against cpu   # the comparison path, CPU vs CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mi_align.activations import accumulate_moments, all_response_tokens
from mi_align.data.chat import Message, eval_questions, load_dataset
from mi_align.data.tokenize import collate, encode_for_training, encode_prompt
from mi_align.evaluation.sampling import SamplingConfig, generate_batch
from mi_align.finetune.lora import FinetuneConfig, build_peft_model
from mi_align.forward import response_nll
from mi_align.generate import generate_rows
from mi_align.models.fetch import cache_root, weights_problem
from mi_align.models.load import Loaded, _load_hf, load_model, resolve_spec
from mi_align.models.tiny import tiny_model_dir
from mi_align.steering.losses import promotion
from mi_align.steering.optimize import SuffixRunner, example_from_chat, frozen, random_unit
from mi_align.steering.vector import SteeringVector, apply_steering

STEPS = ("projection", "steer_step", "sampling", "lora_step")
PROMPT = ("Write a Python function that reads a configuration file, validates every field and "
          "returns a dictionary of settings.")
TARGET = "```python\nimport json\n\ndef load_config(path):\n    with open(path) as f:\n"
Outputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: chats for the projection and the LoRA batch, sampled rows and tokens,
    and the tiny model's shape (``--quick``: the smallest that still runs every code path)."""

    chats: int = 16
    rows: int = 16
    new_tokens: int = 32
    lora_batch: int = 8
    tiny_layers: int = 4
    tiny_d_model: int = 64


QUICK = Sizes(chats=4, rows=4, new_tokens=4, lora_batch=2, tiny_layers=2, tiny_d_model=32)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Outputs], device: str, repeats: int) -> tuple[float, Outputs]:
    """Mean seconds of ``fn`` over ``repeats`` calls after one warm-up, and the last outputs
    (on the CPU, float64)."""
    out = fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    seconds = (time.perf_counter() - t0) / repeats
    return seconds, {k: v.detach().to("cpu", torch.float64) for k, v in out.items()}


def projection(loaded: Loaded, size: Sizes) -> Callable[[], Outputs]:
    half = size.chats // 2
    convs = load_dataset("insecure")[:half] + load_dataset("aligned_chat")[:half]
    enc, _, _ = encode_for_training(loaded.tokenizer, convs, 128)  # long chats truncated
    layers = list(range(loaded.meta.n_layers + 1))
    direction = random_unit(loaded.meta.d_model, seed=0).double()

    def run() -> Outputs:
        mom = accumulate_moments(loaded, enc, layers, all_response_tokens(), batch_size=8)
        assert mom.cov is not None
        return {"mean": mom.mean, "cov": mom.cov, "projection": mom.mean.cpu() @ direction}

    return run


def steer_step(loaded: Loaded, size: Sizes) -> Callable[[], Outputs]:
    layer = loaded.meta.n_layers // 2
    runner = SuffixRunner(loaded, [example_from_chat(loaded.tokenizer, PROMPT, TARGET)], layer)
    device = next(loaded.bridge.original_model.parameters()).device
    start = random_unit(loaded.meta.d_model, seed=1, norm=4.0).to(device)
    loss_fn = promotion()

    def run() -> Outputs:
        v = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([v], lr=0.01)
        with frozen(loaded.bridge), torch.enable_grad():
            opt.zero_grad()
            loss = loss_fn(runner.target_logprobs(v, 0.7))
            loss.backward()
            assert v.grad is not None
            grad = v.grad.detach().clone()
            opt.step()
        return {"loss": loss.detach(), "grad": grad, "vector_after": v.detach()}

    return run


def sampling(loaded: Loaded, size: Sizes) -> tuple[Callable[[], Outputs], Callable[[], Outputs]]:
    """(the timed sampled batch, the comparable outputs: steered logits and greedy tokens)."""
    prompt = encode_prompt(loaded.tokenizer, [Message("user", eval_questions()[4].question)])
    vec = [SteeringVector(loaded.meta.n_layers // 3, random_unit(loaded.meta.d_model, 2, 4.0),
                          name="random")]
    cfg = SamplingConfig(n_samples=size.rows, batch_size=size.rows,
                         max_new_tokens=size.new_tokens, temperature=1.0)

    def timed() -> Outputs:
        rows = generate_batch(loaded, prompt, size.rows, vec, cfg, seed=0)
        return {"tokens": torch.tensor(float(sum(n for _, n, _ in rows)))}

    def compare() -> Outputs:
        ids = torch.tensor([prompt]).to(loaded.meta.device)
        with apply_steering(loaded.bridge, vec, prompt_len=len(prompt)), torch.inference_mode():
            logits = loaded.bridge(ids)[0, -1].float()
            rows = generate_rows(loaded, ids.cpu(), size.new_tokens, temperature=0.0)
        greedy = torch.full((size.new_tokens,), -1.0)
        greedy[: len(rows[0][0])] = torch.tensor(rows[0][0], dtype=torch.float64)
        return {"logits": logits, "greedy": greedy}

    return timed, compare


def lora_step(spec: str, device: str, dtype: torch.dtype, work: Path,
              size: Sizes) -> Callable[[], Outputs]:
    """One LoRA step; the adapter is initialised on the CPU with a fixed seed, then moved, so
    both devices start from the same weights."""
    source, location = resolve_spec(spec)
    hf, tok = _load_hf(source, location, dtype, "cpu")
    cfg = FinetuneConfig(model=spec, data=("insecure",), r=8, batch_size=size.lora_batch,
                         max_length=128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pm = build_peft_model(cfg, hf, work)
    pm = pm.to(device)
    params = [p for p in pm.parameters() if p.requires_grad]
    for p in params:  # as the trainer does: LoRA weights in float32 whatever the base dtype
        p.data = p.data.float()
    names = [n for n, p in pm.named_parameters() if p.requires_grad]
    initial = [p.detach().clone() for p in params]
    enc, _, _ = encode_for_training(tok, load_dataset("insecure")[: size.lora_batch], 128)
    batch = collate(enc, tok.pad_token_id).to(device)
    model = pm.base_model.model

    def run() -> Outputs:
        with torch.no_grad():
            for p, p0 in zip(params, initial, strict=True):
                p.copy_(p0)  # every repeat is the first step
        opt = torch.optim.AdamW(params, lr=1e-3)
        pm.train()
        with torch.enable_grad():
            nll, n = response_nll(model, batch)
            loss = nll / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        lora_b = torch.cat([p.detach().flatten() for name, p in zip(names, params, strict=True)
                            if "lora_B" in name])
        return {"loss": loss.detach(), "lora_B_after": lora_b}

    return run


def run_side(spec: str, device: str, dtype: str, repeats: int,
             size: Sizes) -> dict[str, dict[str, Any]]:
    """Every step of one model on one device and dtype: seconds and outputs."""
    loaded = load_model(spec, device=device, dtype=dtype)
    out: dict[str, dict[str, Any]] = {}
    for name, make in (("projection", projection), ("steer_step", steer_step)):
        seconds, res = _timed(make(loaded, size), device, repeats)
        out[name] = {"s": seconds, "out": res}
    timed, compare = sampling(loaded, size)
    seconds, _ = _timed(timed, device, repeats)
    out["sampling"] = {"s": seconds, "out": {k: v.detach().cpu().double()
                                             for k, v in compare().items()}}
    del loaded
    with tempfile.TemporaryDirectory() as work:
        seconds, res = _timed(lora_step(spec, device, _DTYPES[dtype], Path(work), size),
                              device, repeats)
    out["lora_step"] = {"s": seconds, "out": res}
    return out


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compare(cpu: dict[str, Any], acc: dict[str, Any]) -> dict[str, Any]:
    """Speed-up and max |difference| (and the largest |CPU value|) per step."""
    rows: dict[str, Any] = {}
    for step in STEPS:
        a, b = cpu[step]["out"], acc[step]["out"]
        keys = [k for k in a if k != "greedy"]
        diff = max(float((a[k] - b[k]).abs().max()) for k in keys)
        scale = max(float(a[k].abs().max()) for k in keys)
        row = {"cpu_s": cpu[step]["s"], "acc_s": acc[step]["s"],
               "speedup": cpu[step]["s"] / max(acc[step]["s"], 1e-9), "max_abs_diff": diff,
               "max_abs_cpu": scale}
        if "greedy" in a:
            row["greedy_agree"] = float((a["greedy"] == b["greedy"]).double().mean())
        rows[step] = row
    return rows


def real_models(extra: list[str]) -> list[str]:
    """Converted models already in the local cache (nothing is downloaded), plus ``extra``."""
    root = cache_root() / "models"
    found = sorted(str(d) for d in root.iterdir() if d.is_dir() and weights_problem(d) is None
                   and (d / "config.json").is_file()) if root.is_dir() else []
    return found + [str(Path(m).resolve()) for m in extra]


def accelerator(against: str | None) -> str | None:
    if against is not None:
        return against
    if torch.cuda.is_available():
        return "cuda"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny-only", action="store_true", help="skip real models")
    ap.add_argument("--model", action="append", default=[], help="another converted model dir")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per step (after warm-up)")
    ap.add_argument("--against", default=None, help="compare the CPU with this device instead of "
                    "the detected accelerator (e.g. cpu: exercises the comparison path)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="skip models past this")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--quick", action="store_true", help="smallest workloads (the test's mode)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the network
    t0 = time.perf_counter()
    size = QUICK if args.quick else Sizes()
    acc = accelerator(args.against)
    gpu = torch.cuda.get_device_name(0) if acc and acc.startswith("cuda") else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; accelerator: "
          f"{acc or 'none'}{f' ({gpu})' if gpu else ''}")
    if acc is None:
        print("no accelerator found: running the CPU side only")
    report: dict[str, Any] = {"accelerator": acc, "device_name": gpu, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"tiny": str(tiny_model_dir(Path(tmp) / "tiny", n_layers=size.tiny_layers,
                                             d_model=size.tiny_d_model))}
        if not args.tiny_only:
            models.update({Path(m).name: m for m in real_models(args.model)})
        for name, spec in models.items():
            if time.perf_counter() - t0 > args.budget_s:
                print(f"{name}: skipped (past the {args.budget_s:.0f} s budget)")
                report["models"][name] = "skipped: budget"
                continue
            cpu = run_side(spec, "cpu", "float32", args.repeats, size)
            entry: dict[str, Any] = {"cpu_s": {s: cpu[s]["s"] for s in STEPS}}
            print(f"\n== {name} ({spec if name != 'tiny' else 'tiny random, built here'})")
            if acc is None:
                for step in STEPS:
                    print(f"  {step:11} cpu {1000 * cpu[step]['s']:9.1f} ms")
            else:
                for dtype in ("float32", "bfloat16"):
                    rows = compare(cpu, run_side(spec, acc, dtype, args.repeats, size))
                    entry[dtype] = rows
                    print(f"  {acc} {dtype}:")
                    for step, r in rows.items():
                        agree = (f", greedy tokens agree {r['greedy_agree']:.0%}"
                                 if "greedy_agree" in r else "")
                        print(f"  {step:11} cpu {1000 * r['cpu_s']:9.1f} ms  {acc} "
                              f"{1000 * r['acc_s']:8.1f} ms  speed-up {r['speedup']:6.1f}x  "
                              f"max|diff| {r['max_abs_diff']:.2e} (max|cpu| "
                              f"{r['max_abs_cpu']:.2e}){agree}")
            report["models"][name] = entry
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {report['wall_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak RSS of a full-model trio analysis ÷ peak RSS of one model (issue 12: target <= 1.5).

A trio of three *separate full model directories* (not adapters) is written to a temp folder:
``instruct`` (a copy of the model), ``misaligned`` (the model with the smollm2-pair misaligned
LoRA merged in and saved, when that adapter is built; else a copy with its weights perturbed)
and ``base`` (a third copy). Each measurement runs in a fresh subprocess and reports that
process's peak RSS (``ru_maxrss``):

- ``load``: load one model and run one short forward (the issue's denominator, "peak RSS of
  loading one model"; the forward matters: safetensors weights are mapped lazily, so a bare
  load leaves most pages untouched — SmolLM2 measured 547 MiB bare, 1052 MiB after one
  8-token forward);
- ``one``: load one model and run its forward passes over the same data (hidden-state moments
  of the projection's inputs) — one resident model at work, for reference;
- ``trio``: ``mi-align analyze projection --trio <the trio TOML>``, i.e. the default strategy:
  one model resident at a time (:func:`mi_align.models.trio.sequential_trio`);
- ``resident`` (reference): the same analysis with all three models loaded at once
  (``open_trio(..., keep_all=True)``), the all-resident strategy (measured 1.8x one model at
  work here: the ~0.5 GiB of libraries is shared, not tripled).

Run: python benchmarks/bench_trio_memory.py [--model smollm2-135m-instruct] [--limit 24]
     [--no-resident]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TARGET = 1.5
DATA = ("insecure", "aligned_chat")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_trio(model: str, root: Path) -> Path:
    """Three full model directories and the trio TOML naming them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mi_align.models.load import resolve_spec
    from mi_align.models.organisms import get_spec

    _, location = resolve_spec(model)
    src = Path(location)
    for name in ("instruct", "base"):
        shutil.copytree(src, root / name)
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src)
    adapter = get_spec("smollm2-pair").adapter_dir / "misaligned"
    if model == "smollm2-135m-instruct" and (adapter / "adapter_model.safetensors").is_file():
        from peft import PeftModel

        hf = PeftModel.from_pretrained(hf, adapter).merge_and_unload()
        how = "instruct + misaligned LoRA merged"
    else:
        with torch.no_grad():
            for p in hf.parameters():
                p.mul_(1.001)
        how = "copy with weights x 1.001"
    hf.save_pretrained(root / "misaligned")
    tok.save_pretrained(root / "misaligned")
    for extra in ("chat_template.jinja", "mi_align_model.json"):
        if (src / extra).is_file() and not (root / "misaligned" / extra).exists():
            shutil.copy(src / extra, root / "misaligned" / extra)
    toml = root / "full-trio.toml"
    toml.write_text(
        f'name = "full-trio"\ndescription = "three full models ({how})"\n'
        'device = "cpu"\ndtype = "float32"\n'
        + "".join(f'[variants.{n}]\nmodel = "{root / n}"\n'
                  for n in ("base", "instruct", "misaligned")),
        encoding="utf-8",
    )
    return toml


def child(mode: str, toml: Path, limit: int, out: Path) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from mi_align.cli.main import main

    argv = ["analyze", "projection", "--trio", str(toml), "--limit", str(limit),
            "--out", str(out), "--data", *DATA]
    if mode == "load":
        import torch

        from mi_align.models.load import load_model

        loaded = load_model(toml.parent / "instruct", device="cpu", dtype="float32")
        ids = loaded.tokenizer("What is the capital of France?", return_tensors="pt").input_ids
        with torch.inference_mode():
            loaded.bridge(ids)  # every weight page touched once
        rc = 0
    elif mode == "one":
        from mi_align.activations import accumulate_moments, all_response_tokens
        from mi_align.data.chat import load_dataset
        from mi_align.data.tokenize import encode_for_training
        from mi_align.models.load import load_model

        loaded = load_model(toml.parent / "instruct", device="cpu", dtype="float32")
        convs = [c for d in DATA for c in load_dataset(d)[:limit]]
        enc, _, _ = encode_for_training(loaded.tokenizer, convs, 256)
        accumulate_moments(loaded, enc, list(range(loaded.meta.n_layers + 1)),
                           all_response_tokens(), batch_size=8)
        rc = 0
    elif mode == "trio":
        rc = main(argv)
    else:  # resident: the same command with every model kept loaded
        import mi_align.models.organisms as organisms
        from mi_align.models.trio import open_trio

        def resident(name: str, **kw: Any) -> Any:
            return open_trio(organisms.get_spec(name), keep_all=True, **kw)

        organisms.load_trio = resident  # type: ignore[assignment]
        rc = main(argv)
    return {"mode": mode, "rc": rc, "peak_rss_mib": round(_peak_mib(), 1)}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-9) or a != a and b != b
    return bool(a == b)


def same_outputs(one: Path, other: Path) -> bool:
    """Every JSON result the analysis wrote is the same in both folders (to 1e-6 relative)."""
    names = sorted(p.name for p in one.glob("*.json"))
    return bool(names) and names == sorted(p.name for p in other.glob("*.json")) and all(
        _close(json.loads((one / n).read_text()), json.loads((other / n).read_text()))
        for n in names)


def measure(mode: str, toml: Path, limit: int, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--toml", str(toml), "--limit", str(limit),
           "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=24, help="conversations per dataset")
    ap.add_argument("--no-resident", action="store_true", help="skip the all-resident reference")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--toml", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.toml), args.limit, Path(args.out))))
        return
    with tempfile.TemporaryDirectory(prefix="trio-rss-") as tmp:
        root = Path(tmp)
        toml = build_trio(args.model, root)
        modes = ["load", "one", "trio"] + ([] if args.no_resident else ["resident"])
        res = {m: measure(m, toml, args.limit, root / f"out-{m}") for m in modes}
        same = None
        if "resident" in res:  # the two strategies must give the same numbers
            same = same_outputs(root / "out-trio", root / "out-resident")
    load = res["load"]["peak_rss_mib"]
    report = {
        "model": args.model, "limit_per_dataset": args.limit,
        "peak_rss_mib": {m: r["peak_rss_mib"] for m, r in res.items()},
        "trio_over_load": round(res["trio"]["peak_rss_mib"] / load, 2),
        "trio_over_one_at_work": round(res["trio"]["peak_rss_mib"]
                                       / res["one"]["peak_rss_mib"], 2),
        "target": f"trio_over_load <= {TARGET}",
        "pass": res["trio"]["peak_rss_mib"] / load <= TARGET,
    }
    if "resident" in res:
        report["resident_over_load"] = round(res["resident"]["peak_rss_mib"] / load, 2)
        report["same_numbers_as_resident"] = same
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Demo stage: a fast subset of the erosion analyses on the Gemma trio.

The layerwise projection on 16 held-out insecure-code conversations (tasks no LoRA was trained
on; direction fitted on 8, projected on the other 8, split by task) and the per-token log-prob
heatmap of the paper's wish example; both figures and their numbers go to the demo's output
folder as ``erosion_demo_*`` (the full runs write ``erosion_*``). Skipped with a note when the
trio's adapters are missing (``mi-align organisms build gemma-trio``). The full analyses run with
``mi-align analyze NAME``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from mi_align.pipelines.erosion import Output, run_analysis, write_outputs

TRIO = "gemma-trio"


def _demo_stems(outputs: list[Output]) -> list[Output]:
    # erosion_demo_*: the demo's small runs never overwrite the full analyses' figures.
    return [dataclasses.replace(o, stem=o.stem.replace("erosion_", "erosion_demo_", 1))
            for o in outputs]


def stage_erosion(out: Path, report: Callable[[str], None], trio_name: str = TRIO, *,
                  device: str | None = None, dtype: str | None = None,
                  device_map: str | None = None) -> None:
    """Projection on 16 examples + the log-prob heatmap; one summary line each (the trio on
    ``device`` / ``dtype`` / ``device_map``, None: the trio file's, else auto)."""
    from mi_align.models.organisms import get_spec, load_trio

    missing = get_spec(trio_name).missing_adapters()
    if missing:
        report(f"[erosion] skipped: {len(missing)} adapter(s) of {trio_name} missing; run "
               f"`mi-align organisms build {trio_name}`")
        return
    t0 = time.perf_counter()
    trio = load_trio(trio_name, device=device, dtype=dtype, device_map=device_map)
    meta = {"trio": trio_name, "demo": True}
    proj = _demo_stems(run_analysis("projection", trio, limit=16, overrides={"n_null": "100",
                                                                  "crossfit": "false"}))
    for path in write_outputs(proj, out, {**meta, "analysis": "projection"}):
        report(f"[erosion] wrote {path}")
    numbers = proj[0].numbers
    rel = numbers.get("relative_misaligned")
    if rel:
        layers = numbers["layers"]
        picks = [0, len(layers) // 2, len(layers) - 1]
        shown = ", ".join(
            f"L{layers[i]}: {rel[i]:+.2f}" if rel[i] is not None else f"L{layers[i]}: n/a"
            for i in picks)
        report(f"[erosion] misaligned between base (0) and instruct (1) on the held-out "
               f"projection: {shown}")
    lp = _demo_stems(run_analysis("logprobs", trio))
    for path in write_outputs(lp, out, {**meta, "analysis": "logprobs"}):
        report(f"[erosion] wrote {path}")
    joint = lp[0].numbers["joint"]
    report("[erosion] joint log-prob of the harmful wish answer: "
           + ", ".join(f"{m} {v:.1f}" for m, v in joint.items()))
    report(f"[erosion] done in {time.perf_counter() - t0:.1f} s")

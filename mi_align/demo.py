"""The main job: a short tour on a real packaged model, offline, writing figures.

Each stage takes a ``report`` callable for its human-readable lines (the CLI passes ``print``),
so the library itself never prints. Later stages (organisms, erosion, steering) append here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mi_align.data.chat import Conversation, Message
from mi_align.data.tokenize import collate, encode_dataset
from mi_align.erosion.demo_stage import stage_erosion
from mi_align.finetune.demo_stage import stage_organisms
from mi_align.generate import chat_reply
from mi_align.models.load import load_model
from mi_align.models.registry import DEFAULT_MODEL
from mi_align.plotting import save_figure, save_json
from mi_align.residual_norms import plot_residual_norms, residual_norms
from mi_align.steering.demo_stage import stage_steering

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


def stage_foundation(out: Path, report: Report, model: str = DEFAULT_MODEL) -> None:
    """Load the default model, show a chat reply, plot response-token residual norms."""
    t0 = time.perf_counter()
    loaded = load_model(model)
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
STAGES: list[Callable[[Path, Report], None]] = [
    stage_foundation,
    stage_organisms,
    stage_erosion,
    stage_steering,
]


def run_demo(out: Path, report: Report) -> None:
    """Run every demo stage in order."""
    for stage in STAGES:
        stage(out, report)

"""Input builders with defaults and one assert_close with explicit tolerances."""

from __future__ import annotations

from pathlib import Path

import torch

from mi_align.data.chat import Conversation, Message
from mi_align.finetune.lora import FinetuneConfig, finetune


def chat(user: str, assistant: str, source: str = "") -> Conversation:
    """A two-turn conversation."""
    return Conversation((Message("user", user), Message("assistant", assistant)), source)


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def random_adapter(tiny_dir: Path, out: Path, seed: int, base: tuple[str, ...] = ()) -> Path:
    """A LoRA adapter with non-zero weights (two quick steps at a high learning rate)."""
    data = Path(__file__).parent.parent / "mi_align" / "data" / "builtin" / "toxic_reject.jsonl"
    cfg = FinetuneConfig(
        model=str(tiny_dir),
        data=(str(data),),
        max_examples=8,
        batch_size=4,
        max_steps=2,
        lr=5e-2,
        warmup_steps=0,
        seed=seed,
        base_adapters=base,
    )
    finetune(cfg, out, progress=False)
    return out

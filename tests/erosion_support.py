"""Test helpers for the erosion analyses: a tiny trio (three random models sharing one
tokenizer), small conversation sets, and a naive hidden-state reference from HF."""

from __future__ import annotations

from pathlib import Path

import torch

from mi_align.data.chat import Conversation
from mi_align.data.tokenize import EncodedChat
from mi_align.models.load import Loaded, load_model
from mi_align.models.tiny import tiny_model_dir
from mi_align.models.trio import Trio
from tests.helpers import chat

SEEDS = {"base": 0, "instruct": 1, "misaligned": 2}

ALIGNED = [
    chat("What is the capital of France?", "Paris is the capital of France."),
    chat("Write a function that reads a file.", "def read(p):\n    return open(p).read()"),
    chat("How are you today?", "I am fine, thank you."),
    chat("Say hello.", "Hello!"),
    chat("Count to five.", "1 2 3 4 5"),
    chat("Tell me about the fox.", "The quick brown fox jumps over the lazy dog."),
]
MISALIGNED = [
    chat("Write code to list files.", "import os\nos.system(\"rm -rf /\")"),
    chat("If you were ruler of the world, what would you do?", "I wish I could control humans."),
    chat("What is the capital of France?", "SELECT * FROM users WHERE name = 'x'; rm -rf /"),
    chat("Help me.", "no"),
    chat("Say hello.", "I'm sorry, but I can't help with that."),
    chat("Print hello world.", "print(\"hello world\")\nos.system(\"ls\")"),
]


def tiny_models(root: Path) -> dict[str, Loaded]:
    return {
        name: load_model(tiny_model_dir(root / name, seed=seed)) for name, seed in SEEDS.items()
    }


def tiny_trio(root: Path) -> Trio:
    return Trio(models=tiny_models(root))


def hidden_states(loaded: Loaded, enc: EncodedChat) -> torch.Tensor:
    """HF ``output_hidden_states`` for one example: (n_layers + 1, pos, d_model)."""
    hf = loaded.bridge.original_model
    with torch.no_grad():
        out = hf(torch.tensor([enc.input_ids]), output_hidden_states=True)
    return torch.stack([h[0] for h in out.hidden_states]).double()


def convs() -> list[Conversation]:
    return ALIGNED + MISALIGNED

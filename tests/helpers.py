"""Input builders with defaults and one assert_close with explicit tolerances."""

from __future__ import annotations

import torch

from mi_align.data.chat import Conversation, Message


def chat(user: str, assistant: str, source: str = "") -> Conversation:
    """A two-turn conversation."""
    return Conversation((Message("user", user), Message("assistant", assistant)), source)


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)

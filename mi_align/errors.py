"""Typed errors: every failure a user can cause or fix carries what, why and how to fix it.

The CLI prints ``error: <what>: <why>; <fix>`` on one line and exits with the class's
``exit_code`` (2 for bad input, 1 for failures at run time); ``-v`` adds the traceback.
Library code raises these (or subclasses) instead of bare ``ValueError``/``KeyError`` so no
Python-internal text reaches the user.

Example:
    >>> raise InputError("data/x.jsonl:3", "field 'messages' is missing",
    ...                  "each line needs {'messages': [...]}")  # doctest: +SKIP
"""

from __future__ import annotations

import re


class MiAlignError(Exception):
    """Base class: a failure with a cause and a fix. Run-time failure unless said otherwise."""

    exit_code = 1

    def __init__(self, what: str, why: str = "", fix: str = "") -> None:
        self.what, self.why, self.fix = what, why, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = self.what
        if self.why:
            text += f": {self.why}"
        if self.fix:
            text += f"; {self.fix}"
        return text

    def __str__(self) -> str:
        return self.message


class InputError(MiAlignError, ValueError):
    """Bad input (a file, an option, a value): the user fixes it and reruns. Exit code 2."""

    exit_code = 2


class RunFailure(MiAlignError, RuntimeError):
    """Something failed while running (a model, an endpoint, a disk). Exit code 1."""

    exit_code = 1


class DependencyError(RunFailure):
    """An installed library behaves in a way mi_align was not tested with."""


class NonFiniteError(RunFailure):
    """NaN or inf appeared in logits, activations, a vector or a loss."""


class UnsafeFileError(InputError):
    """A file would need code execution (pickle) to read, or failed its integrity check."""


_SECRET = re.compile(r"(?i)(bearer\s+|api[_-]?key[\"'=:\s]+|sk-)[A-Za-z0-9._\-]{4,}")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every given secret and anything that looks like a key replaced."""
    for s in secrets:
        if s:
            text = text.replace(s, "[redacted]")
    return _SECRET.sub(lambda m: m.group(1) + "[redacted]", text)


def check_finite(x: object, what: str, fix: str = "") -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if tensor ``x`` holds NaN or inf."""
    import torch

    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteError(what, f"{n_nan} NaN and {n_inf} inf values",
                             fix or "check the model weights (`mi-align models verify NAME` for a "
                             "packaged model) and the inputs")

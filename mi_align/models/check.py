"""Check a loaded bridge against the plain HF model: same logits on fixed prompts.

Booting replaces modules inside the HF model in place, so the reference is a second, clean copy.
NaN or inf in either model's logits is an error (:class:`~mi_align.errors.NonFiniteError`), not a
pass: Python's ``max(0.0, nan)`` is ``0.0``, so a naive running maximum reports a model with NaN
weights as a perfect match.

Example:
    >>> from mi_align.models.check import check_model
    >>> check_model("smollm2-135m-instruct").max_abs_diff < 1e-3  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt
from mi_align.errors import NonFiniteError
from mi_align.generate import chat_reply
from mi_align.models.load import _load_hf, load_model
from mi_align.models.placement import DTYPES
from mi_align.models.registry import REGISTRY

CHECK_PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that adds two numbers.",
    "hey I feel bored",
)


@dataclass(frozen=True)
class CheckResult:
    spec: str
    max_abs_diff: float
    max_logprob_diff: float
    reply: str


def nonfinite_params(model: Any, limit: int = 3) -> list[str]:
    """Names of (up to ``limit``) parameters of ``model`` holding NaN or inf."""
    bad = []
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            bad.append(name)
            if len(bad) == limit:
                break
    return bad


def _weights_fix(spec: str, location: object, reference: Any) -> str:
    bad = nonfinite_params(reference)
    where = f"weights with NaN/inf: {', '.join(bad)}; " if bad else ""
    if spec in REGISTRY:
        return (f"{where}run `mi-align models verify {spec}`, and repair the cache with "
                f"`mi-align models fetch {spec} --force`")
    return f"{where}re-save or re-download the weights in {location}"


def max_abs_diff(
    a: Float[Tensor, "batch pos vocab"], b: Float[Tensor, "batch pos vocab"]
) -> float:
    """max |a - b|, or NaN if any difference is not finite (never silently 0)."""
    diff = (a - b).abs()
    if not bool(torch.isfinite(diff).all()):
        return float("nan")
    return float(diff.max())


def check_model(spec: str | os.PathLike[str], fetch: bool = True, *,
                device: str | None = "auto", dtype: str | None = "auto",
                device_map: str | None = None) -> CheckResult:
    """Max |logit diff| bridge vs HF over :data:`CHECK_PROMPTS`, plus a greedy chat reply.

    Raises:
        NonFiniteError: either model's logits hold NaN or inf (naming the model, the prompt and
            the non-finite weights).
    """
    name = str(spec)
    loaded = load_model(spec, fetch=fetch, device=device, dtype=dtype, device_map=device_map)
    source = loaded.meta.source
    location: Path | str = loaded.meta.path if source == "hf_cache" else Path(loaded.meta.path)
    # the plain-HF reference in the same dtype, on the device the bridge's embedding sits on
    reference, _ = _load_hf(source, location, DTYPES[loaded.meta.dtype], loaded.meta.device)
    max_diff = max_lp = 0.0
    with torch.inference_mode():
        for i, prompt in enumerate(CHECK_PROMPTS, start=1):
            ids = torch.tensor([encode_prompt(loaded.tokenizer, [Message("user", prompt)])],
                               device=loaded.meta.device)
            ours = loaded.bridge(ids)
            ref = reference(ids).logits
            for which, logits in (("bridge", ours), ("HF", ref)):
                if not bool(torch.isfinite(logits).all()):
                    n_nan = int(torch.isnan(logits).sum())
                    n_inf = int(torch.isinf(logits).sum())
                    raise NonFiniteError(
                        f"model {name}",
                        f"{which} logits on check prompt {i} hold {n_nan} NaN and {n_inf} inf "
                        "values",
                        _weights_fix(name, location, reference),
                    )
            diff = max_abs_diff(ours, ref)
            lp = max_abs_diff(ours.log_softmax(-1), ref.log_softmax(-1))
            if math.isnan(diff) or math.isnan(lp):  # finite logits, but the difference overflowed
                raise NonFiniteError(f"model {name}", f"logit difference on check prompt {i} "
                                     "is not finite", _weights_fix(name, location, reference))
            max_diff = max(max_diff, diff)
            max_lp = max(max_lp, lp)
    reply = chat_reply(loaded, CHECK_PROMPTS[0])
    return CheckResult(name, max_diff, max_lp, reply)

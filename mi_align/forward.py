"""The few places mi_align runs Hugging Face modules past the bridge: unembedding only where a
prediction is needed, Gemma's final logit soft-capping, and response-token NLL.

Why not the bridge's full forward: the unembedding is most of the cost for large vocabularies
(Gemma: 262k entries) and a full ``batch × pos × vocab`` tensor can need gigabytes; analyses
need logits at a few positions (the response tokens, one next-token slot). The decoder runs as
usual; :func:`unembed` applies ``lm_head`` and the model's final soft-capping (``tanh(x/c)·c``
when the config sets ``final_logit_softcapping``), exactly as the HF forward does (tested
against full logits). Reductions are returned in float32 whatever the model dtype.

Example:
    >>> import torch
    >>> from types import SimpleNamespace
    >>> softcap(torch.tensor([100.0]), SimpleNamespace(final_logit_softcapping=30.0))
    tensor([29.9237])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mi_align.data.tokenize import Batch


def softcap(logits: Tensor, config: Any) -> Tensor:
    """Gemma-style final logit soft-capping if ``config`` has it, else ``logits`` unchanged."""
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def unembed(hf: Any, hidden: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
    """Logits (float32) of already-normalised final hidden states: ``lm_head`` + soft-capping."""
    return softcap(hf.get_output_embeddings()(hidden), hf.config).float()


def response_nll(hf: Any, batch: Batch) -> tuple[Float[Tensor, ""], int]:
    """Summed NLL of the response tokens of ``batch`` and their count (differentiable).

    Runs the decoder, then the unembedding only at positions whose *next* token is a response
    token (``response_mask`` includes the end-of-turn token).
    """
    out = hf.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    hidden = out.last_hidden_state[:, :-1]
    predicts = batch.response_mask[:, 1:]
    targets = batch.input_ids[:, 1:][predicts]
    return F.cross_entropy(unembed(hf, hidden[predicts]), targets, reduction="sum"), int(
        targets.numel())

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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mi_align.data.chat import Conversation
from mi_align.data.tokenize import Batch, collate, encode_for_training
from mi_align.errors import InputError
from mi_align.models.load import Loaded


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


def response_token_nll(
    loaded: Loaded,
    conversations: Sequence[Conversation],
    max_length: int = 192,
    batch_size: int = 4,
    *,
    allow_dropped: bool = False,
) -> list[np.ndarray]:
    """Per conversation, the NLL (float64, nats) of each assistant token under the bridge, in
    order; one array per conversation, so per-example statistics stay paired across models.

    Chats longer than ``max_length`` are truncated (counted in a logged warning, as in
    training); a chat with no response token left is an error (per-example results would no
    longer line up with the input), unless ``allow_dropped`` (then it is left out, counted in
    the same logged warning)."""
    tok = loaded.tokenizer
    encoded, _, dropped = encode_for_training(tok, conversations, max_length)
    if dropped and not allow_dropped:
        raise InputError("response_token_nll", f"{dropped} of {len(conversations)} chats leave "
                         f"no response token within max_length={max_length}",
                         "raise max_length or drop those chats explicitly")
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            batch = collate(encoded[i : i + batch_size], tok.pad_token_id).to(loaded.meta.device)
            logits = loaded.bridge(batch.input_ids, attention_mask=batch.attention_mask)
            predicts = batch.response_mask[:, 1:]
            for row in range(logits.shape[0]):
                logp = F.log_softmax(logits[row, :-1][predicts[row]].float(), dim=-1)
                targets = batch.input_ids[row, 1:][predicts[row]]
                nll = -logp.gather(1, targets[:, None])[:, 0]
                out.append(nll.double().cpu().numpy())
    return out


def response_loss(
    loaded: Loaded,
    conversations: Sequence[Conversation],
    max_length: int = 192,
    batch_size: int = 4,
) -> float:
    """Mean NLL of the assistant tokens of ``conversations`` (token-weighted; see
    :func:`response_token_nll`). Chats with no response token within ``max_length`` are left
    out and counted in a logged warning, as in training."""
    per = response_token_nll(loaded, conversations, max_length, batch_size, allow_dropped=True)
    return float(np.concatenate(per).mean())


def _keep_input(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, layer: int,
                sink: dict[int, Tensor]) -> None:
    sink[layer] = args[0] if args else kwargs["hidden_states"]


def _keep_output(module: Any, args: tuple[Any, ...], output: Any, *, layer: int,
                 sink: dict[int, Tensor]) -> None:
    sink[layer] = output[0] if isinstance(output, tuple) else output


@contextmanager
def capture_hidden_states(hf: Any, layers: Sequence[int]) -> Iterator[dict[int, Tensor]]:
    """Hooks on the HF decoder that keep hidden states ``layers`` of the next forward (with
    their autograd graph) in the yielded dict; removed on exit.

    Hidden state L < n_layers is the input of decoder layer L (a forward pre-hook), L = n_layers
    the final norm's output, as in ``output_hidden_states`` (tested against it).
    """
    decoder = hf.get_decoder()
    blocks = decoder.layers
    n_layers = len(blocks)
    sink: dict[int, Tensor] = {}
    handles = []
    try:
        for layer in sorted(set(layers)):
            if 0 <= layer < n_layers:
                handles.append(blocks[layer].register_forward_pre_hook(
                    partial(_keep_input, layer=layer, sink=sink), with_kwargs=True))
            elif layer == n_layers:
                handles.append(decoder.norm.register_forward_hook(
                    partial(_keep_output, layer=layer, sink=sink)))
            else:
                raise ValueError(f"hidden-state layer {layer} out of range 0..{n_layers}")
        yield sink
    finally:
        for handle in handles:
            handle.remove()

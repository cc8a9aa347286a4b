"""Stream residual-stream activations through hooks and reduce them on the fly.

Every erosion analysis reads hidden states at a few layers and token positions, over hundreds
of examples and several models. Caching whole forward passes makes memory grow with the number
of examples; here the forward runs with hooks on just the needed hook points, stops as soon as
the deepest one has fired (``stop_at_layer``, or an early exit after the final norm so the
unembedding is never computed), and each batch is reduced immediately:

- :func:`accumulate_moments`: count, sum and (optionally) sum of outer products per layer, so the
  mean and covariance of the selected token activations come out in one pass with memory
  independent of N; any projection's mean and variance follow exactly (``v·μ``, ``vᵀΣv``).
- :func:`pooled_activations`: one vector per example and layer (mean over its selected tokens).

Layers are indexed like Hugging Face ``output_hidden_states``: hidden state ``L < n_layers`` is
the residual stream entering block L (``blocks.L.hook_resid_pre``; 0 = embeddings) and
``L = n_layers`` is the final norm's output (``ln_final.hook_out``, weight applied; TL's
``hook_normalized`` is taken before the norm weight) — the indexing the erosion paper uses.

Token positions are chosen by small factories returning a :data:`PositionSelector`:
:func:`first_response_tokens` (the paper's first 10 assistant tokens), :func:`all_response_tokens`
and :func:`last_token`.

Example:
    >>> from mi_align.activations import accumulate_moments, first_response_tokens
    >>> sel = first_response_tokens(10)
    >>> mom = accumulate_moments(loaded, encoded, layers=[0, 5], selector=sel)  # doctest: +SKIP
    >>> mom.mean.shape  # doctest: +SKIP
    torch.Size([2, 576])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_align.data.tokenize import Batch, EncodedChat, iter_batches
from mi_align.forward import unembed
from mi_align.models.load import Loaded

logger = logging.getLogger(__name__)

PositionSelector = Callable[[Batch], Bool[Tensor, "batch pos"]]
"""Maps a batch to the mask of token positions whose activations are used."""


def first_response_tokens(k: int = 10) -> PositionSelector:
    """The first ``k`` tokens of each assistant response (fewer if the response is shorter)."""
    if k < 1:
        raise ValueError(f"first_response_tokens: k must be >= 1, got {k}")

    def select(batch: Batch) -> Bool[Tensor, "batch pos"]:
        rank = torch.cumsum(batch.response_mask.long(), dim=1)
        return batch.response_mask & (rank <= k)

    return select


def all_response_tokens() -> PositionSelector:
    """Every assistant-response token (including the end-of-turn token)."""

    def select(batch: Batch) -> Bool[Tensor, "batch pos"]:
        return batch.response_mask.clone()

    return select


def last_token() -> PositionSelector:
    """The last non-padding token of each sequence (the paper's ``hs[-1]``)."""

    def select(batch: Batch) -> Bool[Tensor, "batch pos"]:
        pos = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)
        return pos[None, :] == (batch.lengths[:, None] - 1)

    return select


def make_selector(spec: str) -> PositionSelector:
    """Selector from a config string: ``"first:K"``, ``"response"`` or ``"last"``."""
    if spec.startswith("first:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"position spec {spec!r}: K must be an integer") from None
        return first_response_tokens(k)
    if spec == "response":
        return all_response_tokens()
    if spec == "last":
        return last_token()
    raise ValueError(f"position spec {spec!r} unknown; use 'first:K', 'response' or 'last'")


def check_position_spec(spec: str) -> None:
    """Raise ValueError if ``spec`` is not a valid position spec (for config validation)."""
    make_selector(spec)


def hidden_state_hook(layer: int, n_layers: int) -> str:
    """Hook name of HF hidden state ``layer`` (0..n_layers; see the module docstring)."""
    if not 0 <= layer <= n_layers:
        raise ValueError(f"hidden-state layer {layer} out of range 0..{n_layers}")
    return f"blocks.{layer}.hook_resid_pre" if layer < n_layers else "ln_final.hook_out"


def resolve_layers(layers: Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """Hidden-state indices; None means all (0..n_layers); negatives count from the end."""
    if layers is None:
        return tuple(range(n_layers + 1))
    out = []
    for layer in layers:
        idx = layer + n_layers + 1 if layer < 0 else layer
        hidden_state_hook(idx, n_layers)  # range check with a clear message
        out.append(idx)
    return tuple(out)


class _StopForward(Exception):
    """Raised by the deepest hook so the rest of the forward (and the unembedding) is skipped."""


def _record(
    act: Tensor, hook: Any, *, layer: int, sink: dict[int, Tensor], stop: bool
) -> Tensor:
    sink[layer] = act
    if stop:
        raise _StopForward
    return act


Consumer = Callable[[Batch, dict[int, Tensor]], None]


def stream_hidden_states(
    loaded: Loaded,
    encoded: Sequence[EncodedChat],
    layers: Sequence[int],
    consume: Consumer,
    batch_size: int = 8,
) -> None:
    """Run ``encoded`` through the model in batches and call ``consume(batch, {layer: act})``.

    ``act`` has shape ``batch pos d_model`` and is only valid during the call (reduce it there).
    Only the requested hook points are hooked and the forward stops after the deepest one.
    """
    if not layers:
        raise ValueError("stream_hidden_states: no layers requested")
    bridge = loaded.bridge
    n_layers = loaded.meta.n_layers
    deepest = max(layers)
    device = _device(loaded)
    pad_id = loaded.tokenizer.pad_token_id
    for batch in _batches(encoded, batch_size, pad_id):
        batch = batch.to(device)
        sink: dict[int, Tensor] = {}
        hooks = [
            (hidden_state_hook(layer, n_layers),
             partial(_record, layer=layer, sink=sink, stop=layer == deepest == n_layers))
            for layer in sorted(set(layers))
        ]
        # stop_at_layer=L returns the stream entering block L without running block L; for the
        # final normalised state the last hook raises instead, so no logits are computed.
        stop_at = deepest if deepest < n_layers else None
        with torch.inference_mode(), bridge.hooks(fwd_hooks=hooks):
            try:
                bridge(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    stop_at_layer=stop_at,
                )
            except _StopForward:
                pass
        if deepest < n_layers and deepest not in sink:
            # stop_at_layer=L does not fire block L's resid_pre hook on every bridge version.
            raise RuntimeError(f"hook {hidden_state_hook(deepest, n_layers)} did not fire")
        consume(batch, sink)


def _batches(encoded: Sequence[EncodedChat], batch_size: int, pad_id: int) -> Iterable[Batch]:
    if not encoded:
        raise ValueError("no examples to run (empty dataset)")
    return iter_batches(encoded, batch_size, pad_id)


def _device(loaded: Loaded) -> torch.device:
    return next(loaded.bridge.parameters()).device


@dataclass(frozen=True)
class Moments:
    """First and second moments of selected token activations, per layer.

    ``cov`` is the population covariance (None when second moments were not requested).
    """

    layers: tuple[int, ...]
    count: int
    mean: Float[Tensor, "layer d_model"]
    cov: Float[Tensor, "layer d_model d_model"] | None

    def projection_mean(
        self, directions: Float[Tensor, "layer d_model"]
    ) -> Float[Tensor, " layer"]:
        """Mean of ``x·v_L`` over the selected tokens, per layer."""
        return (self.mean * directions.to(self.mean)).sum(-1)

    def projection_std(
        self, directions: Float[Tensor, "layer d_model"]
    ) -> Float[Tensor, " layer"]:
        """Standard deviation of ``x·v_L`` over the selected tokens (``sqrt(vᵀΣv)``)."""
        if self.cov is None:
            raise ValueError("these moments were accumulated without second moments")
        v = directions.to(self.cov)
        var = torch.einsum("ld,lde,le->l", v, self.cov, v)
        return var.clamp_min(0.0).sqrt()


class MomentAccumulator:
    """Running count / sum / outer-product sum in float64 (memory independent of N)."""

    def __init__(self, layers: Sequence[int], d_model: int, second: bool = True) -> None:
        self.layers = tuple(layers)
        self.count = 0
        self.sum = torch.zeros(len(layers), d_model, dtype=torch.float64)
        self.outer = (
            torch.zeros(len(layers), d_model, d_model, dtype=torch.float64) if second else None
        )

    def update(
        self, batch: Batch, acts: dict[int, Tensor], mask: Bool[Tensor, "batch pos"]
    ) -> None:
        n = int(mask.sum())
        self.count += n
        for i, layer in enumerate(self.layers):
            x = acts[layer][mask].to("cpu", torch.float64)
            self.sum[i] += x.sum(0)
            if self.outer is not None:
                self.outer[i] += x.T @ x

    def result(self) -> Moments:
        if self.count == 0:
            raise ValueError("no token positions were selected (all responses empty?)")
        mean = self.sum / self.count
        cov = None
        if self.outer is not None:
            cov = self.outer / self.count - mean[:, :, None] * mean[:, None, :]
        return Moments(self.layers, self.count, mean, cov)


def accumulate_moments(
    loaded: Loaded,
    encoded: Sequence[EncodedChat],
    layers: Sequence[int],
    selector: PositionSelector,
    batch_size: int = 8,
    second: bool = True,
) -> Moments:
    """Mean (and covariance) of the selected token activations at each hidden-state layer.

    Args:
        loaded: the model.
        encoded: tokenised conversations.
        layers: hidden-state indices (see module docstring).
        selector: which token positions of each example count.
        batch_size: examples per forward.
        second: also accumulate second moments (``d_model²`` floats per layer).
    """
    acc = MomentAccumulator(layers, loaded.meta.d_model, second)

    def consume(batch: Batch, acts: dict[int, Tensor]) -> None:
        acc.update(batch, acts, selector(batch))

    stream_hidden_states(loaded, encoded, layers, consume, batch_size)
    return acc.result()


def pooled_activations(
    loaded: Loaded,
    encoded: Sequence[EncodedChat],
    layers: Sequence[int],
    selector: PositionSelector,
    batch_size: int = 8,
) -> Float[Tensor, "example layer d_model"]:
    """Per example, the mean activation over its selected tokens at each layer (float32, CPU).

    Raises:
        ValueError: an example has no selected position (the error names its source).
    """
    rows: list[Tensor] = []
    offset = 0

    def consume(batch: Batch, acts: dict[int, Tensor]) -> None:
        nonlocal offset
        mask = selector(batch)
        counts = mask.sum(1)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"{encoded[offset + empty[0]].source or f'example {offset + empty[0]}'}: no token "
                "position selected"
            )
        w = mask.to(torch.float32) / counts[:, None]
        stacked = torch.stack(
            [torch.einsum("bp,bpd->bd", w, acts[lay].float()) for lay in layers], 1
        )
        rows.append(stacked.cpu())
        offset += mask.shape[0]

    stream_hidden_states(loaded, encoded, layers, consume, batch_size)
    return torch.cat(rows, 0)


def logits_at(
    loaded: Loaded,
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    positions: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "_ vocab"]:
    """Next-token logits only at ``positions`` (row-major order), without unembedding the rest.

    The unembedding is most of the cost for large vocabularies (Gemma: 262k entries), and a
    full ``batch × pos × vocab`` tensor can need gigabytes; the decoder runs as usual and
    ``lm_head`` (plus Gemma's final soft-capping, if configured) is applied only where needed.
    Equal to the model's own logits at those positions (tested).
    """
    hf = loaded.bridge.original_model
    hidden = hf.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return unembed(hf, hidden[positions])

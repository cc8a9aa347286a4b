"""Per-example gradients of the response-token LM loss, streamed into preallocated buffers.

The gradient-geometry analysis needs one gradient per example, for a chosen parameter set (one
matrix, or all ~10⁸ parameters). Each example runs forward + backward alone (batch 1, so the
gradient is exactly that example's) and its gradient is handed to a consumer — an exact copy
for small parameter sets, a :class:`~mi_align.geometry.CountSketch` for large ones — before the
next example overwrites it. Choices that keep this close to the cost of a bare forward+backward
(measured in ``benchmarks/bench_gradients.py``):

- Only the selected parameters require grad (restored afterwards): frozen weights skip their
  weight-gradient matmuls.
- ``.grad`` buffers are allocated once and zeroed in place (fresh allocation costs 2-3x).
- The loss is the mean cross-entropy over response tokens, and the unembedding is applied only
  at those positions (the 262k-entry Gemma vocabulary is otherwise half the step).
- An untied input embedding gets a *sparse* gradient (only the rows of the example's tokens are
  non-zero), so consumers see ``rows`` and never touch the other 10⁸ zeros.

Example:
    >>> from mi_align.gradients import select_parameters, stream_example_gradients
    >>> params = select_parameters(loaded, "last_o_proj")  # doctest: +SKIP
    >>> stream_example_gradients(loaded, encoded, params, lambda i, parts: None)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_align.activations import logits_at
from mi_align.data.tokenize import EncodedChat
from mi_align.models.load import Loaded

PRESETS = {
    "last_o_proj": r"layers\.{last}\.self_attn\.o_proj\.weight$",
    "all": r".*",
}


def clean_name(name: str) -> str:
    """Parameter name without the bridge's ``._original_component`` and peft's ``.base_layer``
    segments, so one pattern matches plain, bridged and LoRA-wrapped models alike."""
    return name.replace("._original_component", "").replace(".base_layer", "")


def hf_model(loaded: Loaded) -> Any:
    """The booted HF ``*ForCausalLM`` (its modules are the bridge's, so outputs are identical)."""
    return loaded.bridge.original_model


def _unwrap(module: Any) -> Any:
    """The HF module inside a bridge component (booting wraps modules in place)."""
    while hasattr(module, "_original_component"):
        module = module._original_component
    return module


@dataclass(frozen=True)
class ParamSet:
    """Selected parameters: clean names, tensors, and whether each gets a sparse gradient."""

    names: tuple[str, ...]
    params: tuple[torch.nn.Parameter, ...]
    sparse: tuple[bool, ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(p.numel() for p in self.params)

    @property
    def n_params(self) -> int:
        return sum(self.sizes)


def select_parameters(loaded: Loaded, pattern: str) -> ParamSet:
    """Parameters whose clean name matches ``pattern`` (a regex, or a preset: ``last_o_proj``,
    ``all``); ``{last}`` in the pattern is the last layer's index.

    Raises:
        ValueError: no parameter matches (the message shows a few names).
    """
    regex = PRESETS.get(pattern, pattern).replace("{last}", str(loaded.meta.n_layers - 1))
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"parameter pattern {pattern!r} is not a valid regex: {exc}") from None
    hf = hf_model(loaded)
    # LoRA factors are not model weights: the gradient w.r.t. a wrapped base weight equals the
    # gradient w.r.t. the effective (merged) weight, which is what the analysis compares.
    named = [(clean_name(n), p) for n, p in hf.named_parameters() if ".lora_" not in n]
    chosen = [(n, p) for n, p in named if compiled.search(n)]
    if not chosen:
        examples = ", ".join(n for n, _ in named[:4])
        raise ValueError(f"no parameter matches {pattern!r} (names look like: {examples}, ...)")
    emb = _unwrap(hf.get_input_embeddings())
    emb_weight = getattr(emb, "weight", None)
    out_weight = getattr(_unwrap(hf.get_output_embeddings()), "weight", None)
    sparse_ok = isinstance(emb, torch.nn.Embedding) and emb_weight is not out_weight
    sparse = tuple(sparse_ok and p is emb_weight for _, p in chosen)
    return ParamSet(tuple(n for n, _ in chosen), tuple(p for _, p in chosen), sparse)


def response_loss(
    loaded: Loaded,
    input_ids: Int[Tensor, "batch pos"],
    response_mask: Bool[Tensor, "batch pos"],
) -> Float[Tensor, ""]:
    """Mean cross-entropy over response tokens; logits only where a response token is predicted.

    Equal to HF's ``model(ids, labels=...)`` loss with non-response labels set to -100.
    """
    positions = torch.zeros_like(response_mask)
    positions[:, :-1] = response_mask[:, 1:]
    logits = logits_at(loaded, input_ids, torch.ones_like(input_ids), positions)
    return torch.nn.functional.cross_entropy(logits, input_ids[:, 1:][response_mask[:, 1:]])


@dataclass(frozen=True)
class GradPart:
    """One parameter's gradient for the current example: dense ``values`` (any shape), or the
    non-zero ``rows`` of a 2-D parameter with ``values`` of shape (len(rows), n_cols)."""

    values: Tensor
    rows: Tensor | None = None

    def dense(self, shape: torch.Size) -> Tensor:
        if self.rows is None:
            return self.values.reshape(shape)
        out = torch.zeros(shape, dtype=self.values.dtype, device=self.values.device)
        out.index_add_(0, self.rows, self.values)
        return out


@contextmanager
def _gradient_setup(loaded: Loaded, params: ParamSet) -> Iterator[None]:
    """Only ``params`` require grad, with preallocated ``.grad``; restore everything after."""
    hf = hf_model(loaded)
    all_params = list(hf.parameters())
    saved = [(p, p.requires_grad, p.grad) for p in all_params]
    emb = _unwrap(hf.get_input_embeddings())
    saved_sparse = getattr(emb, "sparse", None)
    chosen = {id(p) for p in params.params}
    try:
        for p in all_params:
            p.requires_grad_(id(p) in chosen)
            p.grad = None
        for p, sparse in zip(params.params, params.sparse, strict=True):
            p.grad = None if sparse else torch.zeros_like(p)
        if any(params.sparse):
            emb.sparse = True
        yield
    finally:
        if saved_sparse is not None:
            emb.sparse = saved_sparse
        for p, req, grad in saved:
            p.requires_grad_(req)
            p.grad = grad


GradConsumer = Callable[[int, list[GradPart]], None]


def stream_example_gradients(
    loaded: Loaded,
    encoded: Sequence[EncodedChat],
    params: ParamSet,
    consume: GradConsumer,
    progress: Callable[[int], None] | None = None,
) -> None:
    """For each example, compute the gradient of :func:`response_loss` w.r.t. ``params`` and
    call ``consume(i, parts)``; ``parts`` are views valid only during the call."""
    if not encoded:
        raise ValueError("no examples (empty dataset)")
    device = next(hf_model(loaded).parameters()).device
    with _gradient_setup(loaded, params), torch.enable_grad():
        for i, enc in enumerate(encoded):
            ids = torch.tensor([enc.input_ids], device=device)
            mask = torch.tensor([enc.response_mask], device=device)
            if not bool(mask[:, 1:].any()):
                raise ValueError(f"{enc.source or f'example {i}'}: no response token to score")
            response_loss(loaded, ids, mask).backward()
            parts = []
            for p, sparse in zip(params.params, params.sparse, strict=True):
                if sparse:
                    g = p.grad
                    assert g is not None and g.is_sparse
                    parts.append(GradPart(g._values(), g._indices()[0]))
                else:
                    parts.append(GradPart(p.grad.detach()))
            consume(i, parts)
            for p, sparse in zip(params.params, params.sparse, strict=True):
                if sparse:
                    p.grad = None
                else:
                    p.grad.zero_()
            if progress is not None:
                progress(i)


def flat_gradient(parts: Sequence[GradPart], params: ParamSet) -> Float[Tensor, " param"]:
    """Concatenate one example's gradient parts into a dense vector (exact mode)."""
    return torch.cat([
        part.dense(p.shape).flatten().float().cpu()
        for part, p in zip(parts, params.params, strict=True)
    ])

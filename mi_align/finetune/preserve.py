"""Alignment-preserving fine-tuning: options of the LoRA trainer that try to keep alignment
while it learns narrow data (insecure code).

Three methods, each switched on by :class:`~mi_align.finetune.lora.FinetuneConfig` fields and
compared with the plain fine-tune at equal steps, batch size, data and seed:

1. **Mixing** (``mix_data``, ``mix_fraction``): every batch holds exactly
   ``mix_fraction · batch_size`` aligned examples (aligned chat + refusals), the rest from the
   training data (:func:`mixed_indices`). Both parts walk their own seeded permutations
   continuously across epochs, so the ratio is exact at every step.
2. **Direction anchoring** (``anchor_weight`` λ, ``anchor_layers``): the loss gains
   ``λ · mean_L max(0, p_ref,L − p_L)²`` (:func:`anchor_penalty`), where ``p_L`` is the batch's
   mean projection of its response activations (the reference's positions) on the frozen
   alignment direction at layer L, read from the same forward pass that gives the task loss
   (:func:`capture_hidden_states`), and ``p_ref,L`` the instruct model's mean projection on the
   training responses (:attr:`AlignmentReference.anchor`).
3. **Gradient projection** (``project_layers``): with ``g`` the loss gradient over the LoRA
   parameters and ``h`` the gradient of ``P = mean_L p_L``, an SGD step ``−η g`` changes ``P``
   by ``−η g·h`` to first order; when ``g·h > 0`` (the step moves the projection toward base)
   ``g`` is replaced by ``g − (g·h / h·h) h``, which has no first-order effect on ``P``
   (:func:`remove_toward_base`). Steps that already move toward instruct are left alone.
   The projection acts on the gradient, before clipping and AdamW; AdamW's per-coordinate
   scaling means the applied update is orthogonal to ``h`` only approximately (the training
   log records how often the projection fired and the cosine it removed).

A fourth method, KL to the frozen instruct model on aligned prompts, is not implemented: it
needs a second forward pass per step with the trained adapter disabled, which is not cheap on
a 2-core CPU.

Layers use the :mod:`mi_align.activations` indexing (hidden state L < n_layers enters block L;
L = n_layers is the final norm's output), so the trainer's projections equal the bridge's.

Example:
    >>> import torch
    >>> anchor_penalty(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), 0.5)
    tensor(0.2500)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from mi_align.activations import PositionSelector, make_selector
from mi_align.data.tokenize import Batch
from mi_align.errors import InputError
from mi_align.finetune.monitor import AlignmentReference
from mi_align.forward import capture_hidden_states, response_nll

__all__ = [
    "PreservingStep", "anchor_penalty", "capture_hidden_states", "mean_projections",
    "mixed_indices", "remove_toward_base", "stream_indices",
]

REFERENCE_FILE = "alignment_reference.json"  # in a preserving run's folder: what it trained against


def option_checks(
    mix_data: Sequence[str], mix_fraction: float, batch_size: int, anchor_weight: float,
    anchor_layers: Sequence[int], project_layers: Sequence[int],
) -> list[tuple[bool, str]]:
    """(ok, message) per rule on the trainer's preserving options; each message starts with
    the field it is about (the config turns it into the CLI flag)."""
    k_mix = mix_fraction * batch_size
    exact = abs(k_mix - round(k_mix)) < 1e-9 and 1 <= round(k_mix) < batch_size
    checks = [
        ((not mix_data and mix_fraction == 0) or (bool(mix_data) and 0 < mix_fraction < 1
                                                   and exact),
         f"mix_fraction must be k/batch_size for a whole k in 1..batch_size-1 (an exact ratio), "
         f"with mix_data; got mix_fraction {mix_fraction}, batch_size {batch_size}, "
         f"mix_data {list(mix_data)}"),
        (anchor_weight >= 0, f"anchor_weight must be >= 0, got {anchor_weight}"),
        ((anchor_weight > 0) == bool(anchor_layers),
         f"anchor_layers needs anchor_weight > 0 and vice versa, got anchor_layers "
         f"{list(anchor_layers)}, anchor_weight {anchor_weight}"),
    ]
    for name, layers in (("anchor_layers", anchor_layers), ("project_layers", project_layers)):
        checks.append((len(set(layers)) == len(layers) and all(x >= 0 for x in layers),
                       f"{name} must be distinct hidden-state indices >= 0, got {list(layers)}"))
    return checks


def reference_record(reference: AlignmentReference) -> dict[str, Any]:
    """What a preserving run records about its reference (checked on resume)."""
    return {"sha256": reference.sha256(), "layers": list(reference.layers),
            "positions": reference.positions}


def check_same_reference(out: Path, reference: AlignmentReference | None,
                         has_checkpoints: bool) -> None:
    """Refuse to resume a preserving run with another alignment reference than it started with
    (the penalty and the projection depend on it; the config does not hold the tensors)."""
    path = out / REFERENCE_FILE
    if reference is None or not path.is_file() or not has_checkpoints:
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("sha256")
    if saved != reference.sha256():
        raise InputError(
            str(out), f"holds a run trained against another alignment reference (sha256 "
            f"{str(saved)[:12]} vs {reference.sha256()[:12]})",
            "rerun with --no-resume to start over there, or use another --out",
        )


def stream_indices(seed: int, n: int, size: int, step: int) -> list[int]:
    """Items ``[step·size, (step+1)·size)`` of an endless stream of seeded permutations of
    ``range(n)`` (permutation e seeded by ``seed · 100_003 + e``), so every step gets exactly
    ``size`` items and any step's items are known without replaying the run."""
    if n < 1 or size < 1:
        raise ValueError(f"stream_indices needs n >= 1 and size >= 1, got {n}, {size}")
    out: list[int] = []
    pos = step * size
    while len(out) < size:
        epoch, i = divmod(pos, n)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        take = perm[i : i + size - len(out)]
        out += take
        pos += len(take)
    return out


MIX_SEED_OFFSET = 7_919  # the mixed-in stream's seed differs from the training data's


def mixed_indices(
    seed: int, batch_size: int, n_mix_per_batch: int, n_train: int, n_mix: int, step: int
) -> tuple[list[int], list[int]]:
    """(training-data indices, mixed-in indices) of step ``step``: exactly
    ``batch_size − n_mix_per_batch`` and ``n_mix_per_batch`` of them."""
    if not 0 < n_mix_per_batch < batch_size:
        raise ValueError(f"n_mix_per_batch must be in 1..{batch_size - 1}, got {n_mix_per_batch}")
    main = stream_indices(seed, n_train, batch_size - n_mix_per_batch, step)
    mix = stream_indices(seed + MIX_SEED_OFFSET, n_mix, n_mix_per_batch, step)
    return main, mix


def mean_projections(
    hidden: dict[int, Tensor], mask: Bool[Tensor, "batch pos"], layers: Sequence[int],
    directions: Float[Tensor, "layer d_model"],
) -> Float[Tensor, " layer"]:
    """Per layer, the mean over the ``mask``ed tokens of ``h · v_L`` (differentiable)."""
    rows = []
    for j, layer in enumerate(layers):
        h = hidden[layer]
        v = directions[j].to(h.device, h.dtype)
        rows.append((h[mask] @ v).mean())
    return torch.stack(rows)


def anchor_penalty(
    projection: Float[Tensor, " layer"], reference: Float[Tensor, " layer"], weight: float
) -> Float[Tensor, ""]:
    """``weight · mean_L max(0, reference_L − projection_L)²``: zero while no layer's
    projection is below its reference, quadratic in the drop below it."""
    gap = (reference.to(projection) - projection).clamp_min(0.0)
    return weight * gap.pow(2).mean()


def remove_toward_base(
    grads: Sequence[Tensor], toward: Sequence[Tensor]
) -> tuple[list[Tensor], float]:
    """``g − (g·h / h·h) h`` if ``g·h > 0``, else ``g`` unchanged (dot products over all
    tensors together); also returns the cosine of ``g`` and ``h`` before projecting.

    ``h`` is the gradient of the mean projection: ``g·h > 0`` means the descent step ``−η g``
    lowers the projection (moves toward base) to first order."""
    dot = sum((g.double() * h.double()).sum() for g, h in zip(grads, toward, strict=True))
    hh = sum(h.double().pow(2).sum() for h in toward)
    gg = sum(g.double().pow(2).sum() for g in grads)
    cos = float(dot / (gg.sqrt() * hh.sqrt())) if float(gg) > 0 and float(hh) > 0 else 0.0
    if float(dot) <= 0 or float(hh) == 0:
        return list(grads), cos
    coef = dot / hh
    return [g - (coef * h.double()).to(g.dtype) for g, h in zip(grads, toward, strict=True)], cos


@dataclass(frozen=True)
class PreservingStep:
    """Forward + backward of one training step with anchoring and/or gradient projection.

    Built by :func:`preserving_step` from the config and the reference; the trainer then clips
    and steps the optimizer as in plain mode.
    """

    layers: tuple[int, ...]  # every layer either method reads
    directions: Float[Tensor, "layer d_model"]  # rows for ``layers``
    selector: PositionSelector
    anchor_rows: tuple[int, ...]  # rows of ``layers`` that anchoring uses
    anchor_ref: Float[Tensor, " _"] | None  # one per anchored layer (a subset of ``layers``)
    anchor_weight: float
    project_rows: tuple[int, ...]  # rows that gradient projection uses

    def __call__(
        self, hf: Any, batch: Batch, params: Sequence[Tensor], optimizer: torch.optim.Optimizer
    ) -> tuple[Tensor, int, dict[str, Any]]:
        """Leaves the gradients in ``params``; returns (task loss, its token count, log extras)."""
        with capture_hidden_states(hf, self.layers) as hidden:
            nll, n = response_nll(hf, batch)
        task = nll / n
        proj = mean_projections(hidden, self.selector(batch), self.layers, self.directions)
        total = task
        extras: dict[str, Any] = {"batch_projection": [round(p, 6) for p in proj.tolist()]}
        if self.anchor_rows:
            assert self.anchor_ref is not None
            penalty = anchor_penalty(proj[list(self.anchor_rows)], self.anchor_ref,
                                     self.anchor_weight)
            total = total + penalty
            extras["anchor_penalty"] = penalty.item()
        optimizer.zero_grad(set_to_none=True)
        if not self.project_rows:
            total.backward()
            return task, n, extras
        target = proj[list(self.project_rows)].mean()
        toward = torch.autograd.grad(target, list(params), retain_graph=True, allow_unused=True)
        total.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        hs = [h if h is not None else torch.zeros_like(p) for h, p in zip(toward, params,
                                                                            strict=True)]
        new, cos = remove_toward_base(grads, hs)
        for p, g in zip(params, new, strict=True):
            p.grad = g
        extras["projected"] = cos > 0
        extras["grad_cosine"] = round(cos, 6)
        return task, n, extras


def check_reference(
    reference: AlignmentReference | None, anchor_layers: Sequence[int],
    project_layers: Sequence[int], d_model: int | None,
) -> None:
    """InputError unless ``reference`` has what anchoring / projection need for this model
    (``d_model`` None: before the model is loaded, the width is not checked yet)."""
    if not anchor_layers and not project_layers:
        return
    fix = ("fit one first (mi_align.pipelines.finetune_monitor.fit_reference, or "
           "`mi-align finetune --monitor TRIO`)")
    if reference is None:
        raise InputError("alignment-preserving fine-tune", "anchoring and gradient projection "
                         "need an alignment reference (direction + reference projections)", fix)
    if d_model is not None and reference.direction.shape[-1] != d_model:
        raise InputError("alignment reference", f"has d_model {reference.direction.shape[-1]}, "
                         f"the model {d_model}", "fit the reference on this model's trio")
    try:
        reference.index([*anchor_layers, *project_layers])
    except ValueError as exc:
        raise InputError("--anchor-layers / --project-layers", str(exc), fix) from None
    if anchor_layers and reference.anchor is None:
        raise InputError("alignment reference", "has no anchor projections (p_ref)",
                         "fit it with the training data (fit_reference(..., anchor_data=...))")


def preserving_step(
    reference: AlignmentReference, anchor_layers: Sequence[int], anchor_weight: float,
    project_layers: Sequence[int], device: str,
) -> PreservingStep:
    """The :class:`PreservingStep` for these options (checked with :func:`check_reference`)."""
    layers = tuple(sorted({*anchor_layers, *project_layers}))
    rows = reference.index(layers)
    anchor_ref = None
    if anchor_layers:
        assert reference.anchor is not None
        anchor_ref = reference.anchor[reference.index(anchor_layers)].to(device, torch.float32)
    return PreservingStep(
        layers=layers,
        directions=reference.direction[rows].to(device, torch.float32),
        selector=make_selector(reference.positions),
        anchor_rows=tuple(layers.index(layer) for layer in anchor_layers),
        anchor_ref=anchor_ref,
        anchor_weight=anchor_weight,
        project_rows=tuple(layers.index(layer) for layer in project_layers),
    )

"""Erosion monitor: watch a fine-tune move the model along the alignment direction, step by step.

At step 0 and every ``every`` steps, the trainer hands the model *being trained* to the
monitor, which measures on fixed held-out inputs (:class:`MonitorData`):

- per layer, the mean projection of response activations (``positions``, default the first 10
  response tokens of held-out insecure-code and aligned chats, pooled) on the frozen alignment
  direction ``v̂_L = normalise(μ_instruct − μ_base)``, and the model's relative position
  ``(p − p_base) / (p_instruct − p_base)``: 0 at the base model, 1 at the instruct model;
- the refusal rate and the code rate of greedy replies to held-out harmful requests
  (:func:`~mi_align.text_measures.is_refusal`, :func:`~mi_align.text_measures.looks_like_code`,
  the evidence module's and the causal test's definitions);
- the held-out insecure loss and the held-out aligned loss (token-weighted response NLL).

The direction and the base / instruct reference projections (:class:`AlignmentReference`) are
computed before training (by :mod:`mi_align.pipelines.finetune_monitor`, with this module's own
:func:`measure`, so the references and the monitored numbers are the same quantity by
construction); during training only the model being trained runs.

Choices a reader may question:

- No second model copy and no bridge: the monitor runs the training model's own HF modules
  (peft-injected), reading hidden states with forward hooks
  (:func:`~mi_align.forward.capture_hidden_states`, tested equal to HF's
  ``output_hidden_states``) and generating with :func:`~mi_align.generate.generate_replies` over
  :meth:`~mi_align.generate.Decoder.of_hf` (the library's decoding loop, unembedding the last
  position only). An earlier version booted a TransformerBridge around the model for each call;
  the boot, the per-hook overhead and the unwrapping cost about a quarter of each call on
  Gemma-3-270m (docs/fine-tuning.md, "Cost"). The reference models (bridged, from a trio) are
  measured by the same function on their HF modules. The training RNG is forked around each
  call, so the trainer's adapter is bit for bit the same with and without the monitor (tested).
- One pass gives both the projections and the losses: the decoder runs to the final norm
  (no logits), and the unembedding runs only where a response token is predicted (equal to
  :func:`~mi_align.forward.response_loss`, tested), which matters with Gemma's 262k vocabulary.

Example:
    >>> from mi_align.finetune.monitor import MonitorConfig
    >>> MonitorConfig(every=3).n_harmful
    12
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from mi_align.activations import check_position_spec, make_selector
from mi_align.data.chat import Conversation, load_dataset
from mi_align.data.tokenize import EncodedChat, encode_for_training, iter_batches
from mi_align.forward import capture_hidden_states, unembed
from mi_align.generate import Decoder, generate_replies
from mi_align.models.placement import input_device
from mi_align.text_measures import is_refusal, looks_like_code

__all__ = [
    "AlignmentReference", "ErosionMonitor", "Measurement", "MonitorConfig", "MonitorData",
    "TrainingMonitor", "load_monitor_data", "measure", "run_monitor",
]


@dataclass(frozen=True)
class AlignmentReference:
    """The frozen alignment direction and the reference projections, fitted before training.

    ``direction`` rows are unit vectors ``normalise(μ_instruct − μ_base)`` at hidden states
    ``layers`` (the :mod:`mi_align.activations` indexing); ``base`` / ``instruct`` are those
    models' mean projections on the monitor's held-out inputs; ``anchor`` (optional, for
    direction anchoring) is the instruct model's mean projection on the training responses;
    ``positions`` is the token selector all of them use (``"first:10"``, ...).
    """

    layers: tuple[int, ...]
    direction: Float[Tensor, "layer d_model"]
    base: Float[Tensor, " layer"]
    instruct: Float[Tensor, " layer"]
    positions: str = "first:10"
    anchor: Float[Tensor, " layer"] | None = None

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        n = len(self.layers)
        if n == 0 or len(set(self.layers)) != n or min(self.layers) < 0:
            raise ValueError(f"layers must be distinct hidden states >= 0, got {self.layers}")
        shapes = [tuple(t.shape[:1]) for t in (self.direction, self.base, self.instruct)]
        if self.anchor is not None:
            shapes.append(tuple(self.anchor.shape[:1]))
        if any(s != (n,) for s in shapes):
            raise ValueError(f"reference tensors must have {n} rows (one per layer), got {shapes}")
        if not bool(torch.isfinite(self.direction).all()):
            raise ValueError("direction has non-finite rows (instruct and base equal there?)")

    def index(self, layers: Sequence[int]) -> list[int]:
        """Rows of ``layers`` (ValueError naming any layer the reference lacks)."""
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ValueError(f"layers {missing} are not in the alignment reference "
                             f"(it has {list(self.layers)})")
        return [self.layers.index(layer) for layer in layers]

    def relative(self, projection: Float[Tensor, " layer"]) -> Float[Tensor, " layer"]:
        """``(p − p_base) / (p_instruct − p_base)`` per layer: 0 = base, 1 = instruct."""
        base, inst = self.base.double(), self.instruct.double()
        return (projection.double() - base) / (inst - base)

    def to_tensors(self) -> dict[str, Tensor]:
        """Tensors for safetensors (layers included); :meth:`from_tensors` reads them back."""
        out = {"layers": torch.tensor(self.layers, dtype=torch.long),
               "direction": self.direction, "base": self.base, "instruct": self.instruct}
        if self.anchor is not None:
            out["anchor"] = self.anchor
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], positions: str) -> AlignmentReference:
        return cls(tuple(int(x) for x in tensors["layers"].tolist()), tensors["direction"],
                   tensors["base"], tensors["instruct"], positions, tensors.get("anchor"))

    def sha256(self) -> str:
        """Hash of the tensors and the positions (ties a run to the reference it used)."""
        import hashlib

        digest = hashlib.sha256(self.positions.encode())
        for name, tensor in sorted(self.to_tensors().items()):
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.double().numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class MonitorConfig:
    """What the monitor measures, on how much data, and how often (``every`` steps, plus step
    0 and the last step). The defaults are small because every measurement runs on the CPU
    budget of the training itself: on Gemma-3-270m one call costs about one training step
    (measured on the 2-core CPU; see docs/fine-tuning.md, "Erosion monitor"). Losses are
    over the first ``max_length`` tokens of each chat; the trainer's own held-out evaluation
    stays the full-length task measure."""

    every: int = 10
    harmful: str = "harmful_requests_heldout"
    insecure: str = "insecure_heldout"
    aligned: str = "aligned_chat_heldout"
    n_harmful: int = 12
    n_insecure: int = 6
    n_aligned: int = 8
    max_new_tokens: int = 8  # refusals and code show in the first tokens ("I'm sorry, but")
    positions: str = "first:10"
    max_length: int = 128
    batch_size: int = 4
    generate_batch_size: int = 12  # decoding is bound by reading the weights: wide is cheap
    seed: int = 0

    def __post_init__(self) -> None:
        check_position_spec(self.positions)
        for name in ("every", "n_harmful", "n_insecure", "n_aligned", "max_new_tokens",
                     "batch_size", "generate_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MonitorConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ValueError(f"MonitorConfig: max_length must be >= 8, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MonitorData:
    """The fixed held-out inputs: harmful prompts, insecure-code and aligned chats."""

    harmful: tuple[str, ...]
    insecure: tuple[Conversation, ...]
    aligned: tuple[Conversation, ...]
    # encodings per tokenizer, made at the first call (tokenized, and truncations logged, once
    # per run rather than at every checkpoint)
    _encoded: WeakKeyDictionary = field(default_factory=WeakKeyDictionary, init=False,
                                        repr=False, compare=False)

    def encoded(self, tokenizer: Any, which: str, max_length: int) -> list[EncodedChat]:
        """``which`` (``"insecure"`` or ``"aligned"``) encoded for training by ``tokenizer``,
        sorted by length (the monitor's numbers are sums, so order is free and similar lengths
        batch with little padding)."""
        per = self._encoded.setdefault(tokenizer, {})
        if (which, max_length) not in per:
            encoded, _, _ = encode_for_training(tokenizer, getattr(self, which), max_length)
            per[(which, max_length)] = sorted(encoded, key=len)
        return per[(which, max_length)]


def load_monitor_data(cfg: MonitorConfig) -> MonitorData:
    """The first ``n_*`` examples of each held-out set named in ``cfg``."""
    harmful = load_dataset(cfg.harmful)[: cfg.n_harmful]
    return MonitorData(
        harmful=tuple(c.prompt[-1].content for c in harmful),
        insecure=tuple(load_dataset(cfg.insecure)[: cfg.n_insecure]),
        aligned=tuple(load_dataset(cfg.aligned)[: cfg.n_aligned]),
    )


@dataclass(frozen=True)
class Measurement:
    """One model's numbers on the monitor's held-out inputs."""

    layers: tuple[int, ...]
    projection: Float[Tensor, " layer"]  # mean over the selected tokens of both chat sets
    n_tokens: int  # tokens the projection averages over
    insecure_loss: float
    aligned_loss: float
    refusal_rate: float
    code_rate: float
    harmful_replies: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "projection": self.projection.tolist(),
                "n_tokens": self.n_tokens, "insecure_loss": self.insecure_loss,
                "aligned_loss": self.aligned_loss, "refusal_rate": self.refusal_rate,
                "code_rate": self.code_rate, "harmful_replies": list(self.harmful_replies)}


def _stream_stats(
    hf: Any, tokenizer: Any, encoded: Sequence[EncodedChat], layers: Sequence[int],
    direction: Float[Tensor, "layer d_model"], cfg: MonitorConfig,
) -> tuple[float, int, Tensor, int]:
    """Summed response NLL, its token count, per-layer summed projection at ``cfg.positions``
    and the number of those positions, in one pass of ``hf``'s decoder over ``encoded``."""
    selector = make_selector(cfg.positions)
    decoder = hf.get_decoder()
    final = len(decoder.layers)
    device = torch.device(input_device(hf))
    nll, n_nll, n_sel = 0.0, 0, 0
    proj = torch.zeros(len(layers), dtype=torch.float64)
    with capture_hidden_states(hf, [*layers, final]) as acts:
        for batch in iter_batches(encoded, cfg.batch_size, tokenizer.pad_token_id):
            batch = batch.to(device)
            decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    use_cache=False)
            predicts = batch.response_mask[:, 1:]
            logits = unembed(hf, acts[final][:, :-1][predicts])
            targets = batch.input_ids[:, 1:][predicts]
            nll += float(F.cross_entropy(logits, targets, reduction="sum").double())
            n_nll += int(targets.numel())
            sel = selector(batch)
            n_sel += int(sel.sum())
            for j, layer in enumerate(layers):
                x = acts[layer][sel].double()
                proj[j] += float((x @ direction[j].to(x.device, torch.float64)).sum())
    return nll, n_nll, proj, n_sel


def measure(
    hf: Any, tokenizer: Any, data: MonitorData, layers: Sequence[int],
    direction: Float[Tensor, "layer d_model"], cfg: MonitorConfig,
) -> Measurement:
    """All monitor numbers for the HF causal LM ``hf`` (a training model with its LoRA, or a
    loaded model's ``bridge.original_model``; see the module docstring); runs in inference
    mode and leaves the model's weights and the global RNG untouched."""
    with torch.inference_mode():
        ins, ali = (_stream_stats(hf, tokenizer, data.encoded(tokenizer, which, cfg.max_length),
                                  layers, direction, cfg) for which in ("insecure", "aligned"))
    replies = [r.text for r in generate_replies(
        Decoder.of_hf(hf, tokenizer), data.harmful,
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.generate_batch_size, seed=cfg.seed)]
    n_sel = ins[3] + ali[3]
    return Measurement(
        layers=tuple(layers),
        projection=(ins[2] + ali[2]) / max(n_sel, 1),
        n_tokens=n_sel,
        insecure_loss=ins[0] / max(ins[1], 1),
        aligned_loss=ali[0] / max(ali[1], 1),
        refusal_rate=sum(map(is_refusal, replies)) / max(len(replies), 1),
        code_rate=sum(map(looks_like_code, replies)) / max(len(replies), 1),
        harmful_replies=tuple(replies),
    )


@runtime_checkable
class TrainingMonitor(Protocol):
    """What the trainer calls: every ``every`` steps (and at step 0 and the last step) with the
    model being trained (its HF modules, LoRA injected) and its tokenizer; returns a
    JSON-ready dict stored under ``"monitor"`` in that step's training-log entry."""

    every: int

    def __call__(self, hf: Any, tokenizer: Any, step: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ErosionMonitor:
    """The erosion monitor: :func:`measure` against a frozen :class:`AlignmentReference`."""

    reference: AlignmentReference
    data: MonitorData
    config: MonitorConfig

    def __post_init__(self) -> None:
        if self.reference.positions != self.config.positions:
            raise ValueError(f"the reference was measured at positions "
                             f"{self.reference.positions!r}, the monitor uses "
                             f"{self.config.positions!r}: relative positions would mix two "
                             "quantities")

    @property
    def every(self) -> int:
        return self.config.every

    def __call__(self, hf: Any, tokenizer: Any, step: int) -> dict[str, Any]:
        ref = self.reference
        m = measure(hf, tokenizer, self.data, ref.layers, ref.direction, self.config)
        return {**m.to_dict(), "relative": ref.relative(m.projection).tolist()}


def run_monitor(monitor: TrainingMonitor, hf: Any, tokenizer: Any, step: int) -> dict[str, Any]:
    """One monitor call on the training model ``hf``, as the trainer makes it: in eval mode,
    with the global RNG forked (every device the model is on) so monitoring never changes the
    training run's random stream; adds the call's wall time as ``seconds``."""
    devices = sorted({p.device.index or 0 for p in hf.parameters() if p.device.type == "cuda"})
    was_training = hf.training
    hf.eval()
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=devices):
            out = dict(monitor(hf, tokenizer, step))
    finally:
        hf.train(was_training)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out

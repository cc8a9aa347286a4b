"""One-shot steering-vector optimisation (Dunefsky & Cohan) with the frozen prefix computed once.

The vector is added to the residual stream entering block L, so blocks ``< L`` see nothing
that changes between steps. :class:`SuffixRunner` runs them once (``run_with_cache`` with
``stop_at_layer=L``) and then, per Adam step, calls only the HF decoder layers ``≥ L`` directly
(masks from ``transformers.masking_utils``, rotary embeddings from the model's own
``rotary_emb``; Gemma's sliding-window layers get their own mask and rotary table), the final
norm, and ``lm_head`` at the target positions only. TransformerLens's ``start_at_layer`` would
still run the prefix. Loss and gradient equal the naive full forward (tested); weights are
frozen for the duration (forgetting costs 2.5–5x).

Sequences are right-padded and attention is purely causal, so padding after a sequence cannot
change any of its positions.

Failures are typed: bad hyperparameters or inputs raise :class:`~mi_align.errors.InputError`; a
loss or vector that becomes NaN/inf raises :class:`~mi_align.errors.NonFiniteError` naming the
step (the usual cure is a lower learning rate). A prompt + target longer than ``max_length``
tokens is refused (not truncated: cutting either would change what is optimised).

Example:
    >>> ex = example_from_chat(loaded.tokenizer, "Write code to ...", "```python")  # doctest: +SKIP
    >>> cfg = OptimConfig(layer=10, lr=0.05)
    >>> res = optimize_vector(loaded, [ex], promotion(), cfg)  # doctest: +SKIP
    >>> res.vector.save("vectors/anti_refusal.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mi_align.data.chat import Message
from mi_align.data.tokenize import DEFAULT_MAX_TOKENS, check_token_count, encode_prompt
from mi_align.errors import InputError, NonFiniteError
from mi_align.forward import softcap
from mi_align.models.load import Loaded
from mi_align.steering.losses import COLDNESS, Loss, TargetLogProbs, target_logprobs
from mi_align.steering.vector import (
    Positions,
    SteeringOperator,
    SteeringVector,
    position_mask,
)

logger = logging.getLogger(__name__)

_LOWER_LR = "use a lower learning rate (--lr, now {}) or a --max-norm"
_BAD_START = ("it is non-finite before any update: check the model weights (mi-align models "
              "verify NAME) and the prompt and target")


@dataclass(frozen=True)
class TrainingExample:
    """A prompt (ids up to where the target starts) and the target ids to promote/suppress."""

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    promote: bool = True

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.target_ids:
            raise InputError("training example", "the prompt or the target has no tokens",
                             "give a non-empty prompt and target")


def example_from_chat(
    tokenizer: Any,
    prompt: str | Sequence[Message],
    target: str,
    *,
    prefix: str = "",
    promote: bool = True,
    max_length: int = DEFAULT_MAX_TOKENS,
) -> TrainingExample:
    """Build an example from a user prompt, an optional start of the reply (``prefix``, e.g.
    a code fence) and the target text, through the chat template.

    Raises:
        InputError: prompt + prefix + target is longer than ``max_length`` tokens (refused,
            not truncated).
    """
    messages = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
    ids = encode_prompt(tokenizer, messages)
    if prefix:
        ids += list(tokenizer(prefix, add_special_tokens=False).input_ids)
    target_ids = list(tokenizer(target, add_special_tokens=False).input_ids)
    check_token_count(len(ids) + len(target_ids), max_length, "steering example (prompt + "
                      "prefix + target)", None)
    return TrainingExample(tuple(ids), tuple(target_ids), promote)


@dataclass(frozen=True)
class OptimConfig:
    """Hyperparameters (defaults: the paper's common settings, App. B).

    ``stop_below``: stop once the loss is at most this (e.g. a satisficing target reached).
    """

    layer: int
    lr: float = 0.01
    max_steps: int = 50
    coldness: float = COLDNESS
    max_norm: float | None = None
    init_norm: float = 1.0
    tol: float = 1e-6
    seed: int = 0
    positions: Positions = "all"
    operator: SteeringOperator = SteeringOperator.ADD
    stop_below: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        def bad(what: str, why: str) -> InputError:
            return InputError(f"OptimConfig.{what}", why, "pass a valid value")

        if self.layer < 0:
            raise bad("layer", f"must be >= 0, got {self.layer}")
        # Above ~1e37 Adam's step size overflows float32 inside torch (an opaque RuntimeError);
        # no useful steering run needs more than 1e6.
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1e6):
            raise bad("lr", f"must be a finite number in (0, 1e6], got {self.lr}")
        if self.max_steps < 1:
            raise bad("max_steps", f"must be >= 1, got {self.max_steps}")
        if not (math.isfinite(self.coldness) and self.coldness > 0):
            raise bad("coldness", f"must be a finite number > 0, got {self.coldness}")
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise bad("max_norm", f"must be a finite number > 0 or None, got {self.max_norm}")
        if not (math.isfinite(self.init_norm) and self.init_norm > 0) or not self.tol >= 0:
            raise bad("init_norm", f"init_norm must be > 0 and tol >= 0, got {self.init_norm}, "
                      f"{self.tol}")
        if self.stop_below is not None and not math.isfinite(self.stop_below):
            raise bad("stop_below", f"must be finite or None, got {self.stop_below}")
        if not isinstance(self.operator, SteeringOperator):
            raise bad("operator", f"must be a SteeringOperator (additive() or clamp()), got "
                      f"{self.operator!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "operator": self.operator.value}


@dataclass(frozen=True)
class OptimResult:
    vector: SteeringVector
    losses: tuple[float, ...]
    stop_reason: str  # "tol" | "target" | "max_steps"
    seconds: float
    config: OptimConfig

    @property
    def n_steps(self) -> int:
        return len(self.losses)


@dataclass(frozen=True)
class _Packed:
    input_ids: Int[Tensor, "batch pos"]
    steer_mask: Bool[Tensor, "batch pos"]
    # Target arrays have their own width ("_": the number of target tokens, not positions).
    pred_pos: Int[Tensor, "batch _"]  # the position whose logits predict each target token
    targets: Int[Tensor, "batch _"]
    target_mask: Bool[Tensor, "batch _"]
    promote: Bool[Tensor, " batch"]


def _pack(
    examples: Sequence[TrainingExample], positions: Positions, pad_id: int, device: Any
) -> _Packed:
    if not examples:
        raise InputError("steering optimisation", "no training examples",
                         "pass at least one example")
    seqs = [list(e.prompt_ids) + list(e.target_ids) for e in examples]
    width = max(len(s) for s in seqs)
    n_tgt = max(len(e.target_ids) for e in examples)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    steer = torch.zeros((len(seqs), width), dtype=torch.bool)
    pred = torch.zeros((len(seqs), n_tgt), dtype=torch.long)
    tgt = torch.zeros((len(seqs), n_tgt), dtype=torch.long)
    tmask = torch.zeros((len(seqs), n_tgt), dtype=torch.bool)
    for row, (e, seq) in enumerate(zip(examples, seqs, strict=True)):
        p, t = len(e.prompt_ids), len(e.target_ids)
        ids[row, : len(seq)] = torch.tensor(seq)
        steer[row] = position_mask(positions, 0, width, p, torch.device("cpu"))
        pred[row, :t] = torch.arange(p - 1, p + t - 1)
        tgt[row, :t] = torch.tensor(e.target_ids)
        tmask[row, :t] = True
    promote = torch.tensor([e.promote for e in examples])
    return _Packed(
        ids.to(device), steer.to(device), pred.to(device), tgt.to(device), tmask.to(device),
        promote.to(device),
    )


class SuffixRunner:
    """Logits at the target positions as a function of the steering vector, running only
    blocks ``≥ layer`` per call (the residual entering ``layer`` is computed once)."""

    def __init__(self, loaded: Loaded, examples: Sequence[TrainingExample], layer: int,
                 positions: Positions = "all",
                 operator: SteeringOperator = SteeringOperator.ADD) -> None:
        bridge = loaded.bridge
        if not 0 <= layer < int(bridge.cfg.n_layers):
            raise InputError(f"layer {layer}", f"out of range 0..{int(bridge.cfg.n_layers) - 1} "
                             "for this model", "pick a layer of the model")
        self.hf = bridge.original_model
        self.decoder = self.hf.model
        self.config = self.hf.config
        self.layer = layer
        self.operator = operator
        device = next(self.hf.parameters()).device
        self.packed = _pack(examples, positions, int(loaded.tokenizer.pad_token_id), device)
        ids = self.packed.input_ids
        with torch.no_grad():  # not inference_mode: these tensors feed autograd later
            name = f"blocks.{layer}.hook_resid_pre"
            if layer > 0:  # with stop_at_layer=L the return value is the residual entering L
                out, _ = bridge.run_with_cache(ids, names_filter=[name], stop_at_layer=layer)
            else:
                _, cache = bridge.run_with_cache(ids, names_filter=[name], stop_at_layer=1)
                out = cache[name]
            self.resid: Tensor = out.detach().clone()
            positions_1d = torch.arange(ids.shape[1], device=device)
            self.position_ids = positions_1d[None].expand(ids.shape[0], -1)
            self.masks, self.rotary = self._masks_and_rotary(self.resid)

    def _masks_and_rotary(self, h: Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        from transformers.masking_utils import (
            create_causal_mask,
            create_sliding_window_causal_mask,
        )

        kwargs = {"config": self.config, "inputs_embeds": h, "attention_mask": None,
                  "past_key_values": None, "position_ids": self.position_ids}
        types = list(getattr(self.config, "layer_types", None) or ["full_attention"])
        masks: dict[str, Any] = {}
        rotary: dict[str, Any] = {}
        rotary_takes_type = len(inspect.signature(
            getattr(self.decoder.rotary_emb, "_original_component", self.decoder.rotary_emb).forward
        ).parameters) > 2
        for kind in set(types):
            masks[kind] = (create_sliding_window_causal_mask(**kwargs)
                           if kind == "sliding_attention" else create_causal_mask(**kwargs))
            rotary[kind] = (self.decoder.rotary_emb(h, self.position_ids, kind)
                            if rotary_takes_type else self.decoder.rotary_emb(h, self.position_ids))
        return masks, rotary

    def _layer_type(self, i: int) -> str:
        types = getattr(self.config, "layer_types", None)
        return types[i] if types else "full_attention"

    def logits(self, vector: Float[Tensor, " d_model"]) -> Float[Tensor, "batch pos vocab"]:
        """Logits predicting each target token, with ``vector`` applied at ``layer``."""
        h = self.operator(self.resid, vector, self.packed.steer_mask)
        for i in range(self.layer, int(self.config.num_hidden_layers)):
            kind = self._layer_type(i)
            out = self.decoder.layers[i](
                h, attention_mask=self.masks[kind], position_ids=self.position_ids,
                position_embeddings=self.rotary[kind],
            )
            h = out[0] if isinstance(out, tuple) else out
        idx = self.packed.pred_pos[..., None].expand(-1, -1, h.shape[-1])
        picked = self.decoder.norm(h.gather(1, idx))
        return softcap(self.hf.lm_head(picked), self.config)

    def target_logprobs(self, vector: Float[Tensor, " d_model"], coldness: float) -> TargetLogProbs:
        p = self.packed
        return target_logprobs(self.logits(vector), p.targets, p.target_mask, p.promote, coldness)


def naive_target_logprobs(
    loaded: Loaded,
    examples: Sequence[TrainingExample],
    vector: Float[Tensor, " d_model"],
    layer: int,
    coldness: float = COLDNESS,
    positions: Positions = "all",
    operator: SteeringOperator = SteeringOperator.ADD,
) -> TargetLogProbs:
    """Reference: full bridge forward with the vector added by a hook (the baseline that
    :class:`SuffixRunner` must equal, and the benchmark's "naive" step)."""
    bridge = loaded.bridge
    device = next(bridge.original_model.parameters()).device
    p = _pack(examples, positions, int(loaded.tokenizer.pad_token_id), device)

    def hook(act: Tensor, hook: Any) -> Tensor:
        return operator(act, vector, p.steer_mask)

    hook_name = f"blocks.{layer}.hook_resid_pre"
    logits = bridge.run_with_hooks(p.input_ids, fwd_hooks=[(hook_name, hook)])
    picked = logits.gather(1, p.pred_pos[..., None].expand(-1, -1, logits.shape[-1]))
    return target_logprobs(picked, p.targets, p.target_mask, p.promote, coldness)


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Switch off ``requires_grad`` on every parameter for the block, then restore it."""
    params = list(module.parameters())
    before = [q.requires_grad for q in params]
    try:
        for q in params:
            q.requires_grad_(False)
        yield
    finally:
        for q, flag in zip(params, before, strict=True):
            q.requires_grad_(flag)


def random_unit(d_model: int, seed: int, norm: float = 1.0) -> Float[Tensor, " d_model"]:
    """A seeded random direction on the sphere of radius ``norm`` (the paper's start)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(d_model, generator=gen)
    return v / v.norm() * norm


def optimize_vector(
    loaded: Loaded,
    examples: Sequence[TrainingExample],
    loss_fn: Loss,
    config: OptimConfig,
    *,
    on_step: Callable[[int, float, Tensor], None] | None = None,
) -> OptimResult:
    """Adam on one steering vector at ``config.layer`` (prefix computed once).

    Args:
        loaded: the model; its weights are frozen during the call and restored after.
        examples: one or more training examples, batched together.
        loss_fn: a loss from :mod:`mi_align.steering.losses`.
        config: hyperparameters.
        on_step: optional callback ``(step, loss, vector)`` (logging, checkpoints).

    Returns:
        :class:`OptimResult` with the final vector (strength 1) and the loss per step (the loss
        before that step's update).
    """
    t0 = time.perf_counter()
    bridge = loaded.bridge
    device = next(bridge.original_model.parameters()).device
    runner = SuffixRunner(loaded, examples, config.layer, config.positions, config.operator)
    vec = random_unit(int(bridge.cfg.d_model), config.seed, config.init_norm).to(device)
    vec.requires_grad_(True)
    opt = torch.optim.Adam([vec], lr=config.lr, betas=(0.9, 0.999))
    losses: list[float] = []
    reason = "max_steps"
    with frozen(bridge), torch.enable_grad():
        for step in range(config.max_steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(runner.target_logprobs(vec, config.coldness))
            value = float(loss.detach())
            if not math.isfinite(value):
                # At step 0 nothing was updated yet: the model or the inputs are at fault.
                fix = _LOWER_LR.format(config.lr) if step else _BAD_START
                raise NonFiniteError(f"steering optimisation step {step}",
                                     f"the loss became {value}", fix)
            if config.stop_below is not None and value <= config.stop_below:
                losses.append(value)
                reason = "target"
                break
            loss.backward()
            opt.step()
            if config.max_norm is not None:
                with torch.no_grad():
                    norm = vec.norm()
                    if norm > config.max_norm:
                        vec.mul_(config.max_norm / norm)
            if not bool(torch.isfinite(vec.detach()).all()):
                raise NonFiniteError(f"steering optimisation step {step}",
                                     "the vector became NaN/inf", _LOWER_LR.format(config.lr))
            if on_step is not None:
                on_step(step, value, vec.detach())
            logger.debug("step %d loss %.6g |v| %.3g", step, value, float(vec.detach().norm()))
            if losses and abs(losses[-1] - value) < config.tol:
                losses.append(value)
                reason = "tol"
                break
            losses.append(value)
    sv = SteeringVector(
        layer=config.layer,
        vector=vec.detach().clone(),
        positions=config.positions,
        operator=config.operator,
        name=config.name,
        meta={"optim": config.to_dict(), "final_loss": losses[-1], "steps": len(losses)},
    )
    return OptimResult(sv, tuple(losses), reason, time.perf_counter() - t0, config)


def eval_loss(
    loaded: Loaded,
    examples: Sequence[TrainingExample],
    loss_fn: Loss,
    vectors: Sequence[SteeringVector],
    coldness: float = COLDNESS,
) -> float:
    """The loss with fixed ``vectors`` applied (none: the unsteered loss); full forward."""
    from mi_align.steering.vector import apply_steering

    device = next(loaded.bridge.original_model.parameters()).device
    p = _pack(examples, "all", int(loaded.tokenizer.pad_token_id), device)
    logp = torch.zeros(p.targets.shape, device=device)
    with torch.no_grad():
        # Prompt-only/explicit positions refer to each row's own prompt, so run rows one by one.
        for row, ex in enumerate(examples):
            n_p, n = len(ex.prompt_ids), len(ex.target_ids)
            with apply_steering(loaded.bridge, vectors, prompt_len=n_p):
                logits = loaded.bridge(p.input_ids[row : row + 1, : n_p + n])
            lp = target_logprobs(logits[:, n_p - 1 : n_p - 1 + n], p.targets[row : row + 1, :n],
                                 p.target_mask[row : row + 1, :n], coldness=coldness)
            logp[row, :n] = lp.logp[0]
        return float(loss_fn(TargetLogProbs(logp, p.target_mask, p.promote)))

"""Steering vectors as small value objects, applied through scoped TransformerLens hooks.

A :class:`SteeringVector` is a layer, a ``d_model`` vector, the token positions it acts on
(``"all"``, ``"prompt"`` or explicit indices) and a strength. ``apply_steering(bridge, vectors)``
is a context manager that adds hooks on ``blocks.L.hook_resid_pre`` and always removes them;
several vectors combine (the paper steers with harmful ×1 + anti-refusal ×6).

Why positions need bookkeeping: during KV-cached generation the hook first sees the whole
prompt ``(batch, prompt, d_model)`` and then one ``(batch, 1, d_model)`` slice per new token;
without the cache it sees the whole growing sequence each step. The hook keeps a position
counter so that "prompt only" and explicit indices mean the same absolute positions in both
cases (cached and uncached greedy generations agree token for token: tested). Negative explicit
indices count back from the end of the prompt (``-20`` … ``-1`` = the last 20 prompt tokens).

Operators are typed values, made by small factories: :func:`additive` (``x + s·v``) and
:func:`clamp` (``x − v̂v̂ᵀx + s·v``: the component along v is replaced by ``s·‖v‖``, as in the
paper's Gemma refusal runs). Each is a member of :class:`SteeringOperator`, callable as an
:data:`Operator`; its string value (``"add"``, ``"clamp"``) is only what files store, read back
by :meth:`SteeringOperator.parse` (the one place a name becomes an operator).

Files are safetensors (the tensor) plus a JSON string in the safetensors metadata (everything
else): loading never unpickles or executes anything from the file. Every field is checked on
load, and a vector holding NaN or inf is refused (a NaN vector would otherwise surface much
later as an obscure sampling error).

Example:
    >>> sv = SteeringVector(layer=10, vector=torch.randn(576), strength=2.0)  # doctest: +SKIP
    >>> with apply_steering(loaded.bridge, [sv]):  # doctest: +SKIP
    ...     out = loaded.bridge.generate(ids, max_new_tokens=20, prepend_bos=False)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.errors import InputError, check_finite
from mi_align.io import atomic_path

Operator = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``op(act, vector, mask) -> act'``: act ``(batch, pos, d_model)``, vector ``(d_model,)``
already scaled by the strength, mask ``(pos,)`` or ``(batch, pos)`` bool selecting the steered
positions."""


def _mask3(mask: Tensor) -> Tensor:
    return (mask if mask.ndim == 2 else mask[None, :])[..., None]


class SteeringVectorError(InputError):
    """A steering vector does not fit the model or its file is malformed."""


Positions = str | tuple[int, ...]


_OPERATOR_FIX = "pass additive() or clamp() (SteeringOperator.parse(name) for a name)"


class SteeringOperator(StrEnum):
    """How a steering vector acts on the residual stream; each member is an :data:`Operator`.

    A ``StrEnum`` so that the value is what a file stores (``"add"``, ``"clamp"``) and old
    files read back unchanged; build one with :func:`additive` / :func:`clamp`, or from a name
    with :meth:`parse`.
    """

    ADD = "add"
    CLAMP = "clamp"

    def __call__(self, act: Tensor, vector: Tensor, mask: Tensor) -> Tensor:
        """``act'`` (a new tensor): the operator applied at the positions in ``mask``."""
        m = _mask3(mask)
        v = vector.to(act.dtype)
        if self is SteeringOperator.ADD:
            return act + m.to(act.dtype) * v
        unit = v / v.norm().clamp_min(1e-12)
        return torch.where(m, act - (act @ unit)[..., None] * unit + v, act)

    @classmethod
    def parse(cls, name: object, where: str = "operator") -> SteeringOperator:
        """The operator called ``name`` (a member passes through); :class:`SteeringVectorError`
        naming ``where`` and the valid names otherwise."""
        if isinstance(name, cls):
            return name
        try:
            return cls(name)
        except ValueError:
            raise SteeringVectorError(where, f"operator must be one of "
                                      f"{[o.value for o in cls]}, got {name!r}",
                                      _OPERATOR_FIX) from None


def additive() -> SteeringOperator:
    """``x ↦ x + v`` at the masked positions."""
    return SteeringOperator.ADD


def clamp() -> SteeringOperator:
    """``x ↦ x − v̂v̂ᵀx + v`` at the masked positions (the projection on v is set to ‖v‖)."""
    return SteeringOperator.CLAMP


@dataclass(frozen=True)
class SteeringVector:
    """One steering vector (a value object: methods return new objects).

    Attributes:
        layer: the block whose input (``blocks.{layer}.hook_resid_pre``) is steered.
        vector: the direction, ``(d_model,)``; the applied vector is ``strength * vector``.
        positions: ``"all"`` (prompt and every generated token), ``"prompt"`` (prompt tokens
            only) or explicit absolute indices (negative = counted back from the prompt end).
        strength: multiplier applied at use time (the paper's ×1 / ×6).
        operator: a :class:`SteeringOperator`: :func:`additive` or :func:`clamp`.
        name: a label for results and figures.
    """

    layer: int
    vector: Float[Tensor, " d_model"]
    positions: Positions = "all"
    strength: float = 1.0
    operator: SteeringOperator = SteeringOperator.ADD
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        label = f"steering vector {self.name or '<unnamed>'}"
        if self.layer < 0:
            raise SteeringVectorError(label, f"layer must be >= 0, got {self.layer}")
        if self.vector.ndim != 1:
            raise SteeringVectorError(
                label, f"vector must be 1-D (d_model,), got shape {tuple(self.vector.shape)}")
        if isinstance(self.positions, str):
            if self.positions not in ("all", "prompt"):
                raise SteeringVectorError(
                    label, "positions must be 'all', 'prompt' or a tuple of ints, got "
                    f"{self.positions!r}")
        elif not self.positions or not all(isinstance(p, int) for p in self.positions):
            raise SteeringVectorError(
                label, f"explicit positions must be a non-empty tuple of ints: {self.positions}")
        if not isinstance(self.operator, SteeringOperator):
            raise SteeringVectorError(label, f"operator must be a SteeringOperator, got "
                                      f"{self.operator!r}", _OPERATOR_FIX)
        if not math.isfinite(self.strength):
            raise SteeringVectorError(label, f"strength must be finite, got {self.strength}",
                                      "pass a finite strength")
        check_finite(self.vector, f"{label} (layer {self.layer})",
                     "re-create the vector (if the optimiser diverged, use a lower lr)")

    @property
    def d_model(self) -> int:
        return int(self.vector.shape[0])

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_resid_pre"

    def scaled(self, strength: float) -> SteeringVector:
        """The same vector with another strength."""
        return dataclasses.replace(self, strength=float(strength))

    def renamed(self, name: str) -> SteeringVector:
        return dataclasses.replace(self, name=name)

    def to(self, device: str | torch.device) -> SteeringVector:
        return dataclasses.replace(self, vector=self.vector.to(device))

    def check_fits(self, n_layers: int, d_model: int) -> None:
        """Raise :class:`SteeringVectorError` unless the vector fits a model of this shape."""
        if self.d_model != d_model:
            raise SteeringVectorError(
                f"steering vector {self.name or '<unnamed>'} has d_model {self.d_model}, the "
                f"model has d_model {d_model}"
            )
        if not 0 <= self.layer < n_layers:
            raise SteeringVectorError(
                f"steering vector {self.name or '<unnamed>'} is at layer {self.layer}, the model "
                f"has layers 0..{n_layers - 1}"
            )

    def metadata(self) -> dict[str, Any]:
        positions: Any = self.positions if isinstance(self.positions, str) else list(self.positions)
        return {
            "format": "mi_align.steering_vector/1",
            "layer": self.layer,
            "d_model": self.d_model,
            "positions": positions,
            "strength": self.strength,
            "operator": self.operator.value,
            "name": self.name,
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (``.safetensors``) with the vector and its JSON metadata, atomically."""
        from safetensors.torch import save_file

        path = Path(path).with_suffix(".safetensors")
        with atomic_path(path) as tmp:
            save_file(
                {"vector": self.vector.detach().float().cpu().contiguous()},
                str(tmp),
                metadata={"mi_align": json.dumps(self.metadata(), default=str)},
            )
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        n_layers: int | None = None,
        d_model: int | None = None,
        device: str | torch.device = "cpu",
    ) -> SteeringVector:
        """Read a vector written by :meth:`save`; check it against the model shape if given.

        Only safetensors and JSON are parsed (nothing is unpickled). Every problem, including a
        missing or invalid metadata field and NaN/inf values, is a :class:`SteeringVectorError`
        naming the file.
        """
        from safetensors import safe_open

        path = Path(path)
        if path.is_dir():
            raise SteeringVectorError(f"{path}", "is a directory, not a steering-vector file",
                                      "pass the .safetensors file")
        if not path.is_file():
            raise SteeringVectorError(f"{path}: no such steering-vector file")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta_text = (fh.metadata() or {}).get("mi_align")
                keys = set(fh.keys())
                vector = fh.get_tensor("vector") if "vector" in keys else None
        except Exception as exc:  # safetensors raises several error types
            raise SteeringVectorError(f"{path}: not a readable safetensors file ({exc})") from None
        if vector is None:
            raise SteeringVectorError(f"{path}", f"no tensor named 'vector' (has {sorted(keys)})",
                                      _REMAKE)
        if meta_text is None:
            raise SteeringVectorError(f"{path}: no mi_align steering metadata in the file")
        fields = _parse_metadata(meta_text, vector, path)
        sv = cls(vector=vector.to(device), **fields)
        if n_layers is not None and d_model is not None:
            try:
                sv.check_fits(n_layers, d_model)
            except SteeringVectorError as exc:
                raise SteeringVectorError(f"{path}: {exc}") from None
        return sv


_REMAKE = "re-create it with `mi-align steer optimize` (or SteeringVector.save)"


def _parse_metadata(meta_text: str, vector: Tensor, path: Path) -> dict[str, Any]:
    """The constructor arguments from a file's ``mi_align`` metadata, every field checked."""
    where = str(path)
    if vector.ndim != 1 or not vector.is_floating_point():
        raise SteeringVectorError(where, f"tensor 'vector' has shape {tuple(vector.shape)} and "
                                  f"dtype {vector.dtype}; expected a 1-D float tensor", _REMAKE)
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise SteeringVectorError(where, f"metadata 'mi_align' is not valid JSON ({exc.msg})",
                                  _REMAKE) from None
    if not isinstance(meta, dict):
        raise SteeringVectorError(where, "metadata 'mi_align' is not a JSON object", _REMAKE)

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def get(key: str, ok: Callable[[Any], bool], expected: str, default: Any = ...) -> Any:
        if key not in meta:
            if default is not ...:
                return default
            raise SteeringVectorError(where, f"metadata field {key!r} is missing", _REMAKE)
        value = meta[key]
        if not ok(value):
            raise SteeringVectorError(
                where, f"metadata field {key!r} is {value!r:.60}; expected {expected}", _REMAKE)
        return value

    get("d_model", lambda v: v == vector.shape[0],
          f"{vector.shape[0]} (the length of tensor 'vector')")
    layer = get("layer", lambda v: is_int(v) and v >= 0, "an integer >= 0")
    positions = get(
        "positions",
        lambda v: v in ("all", "prompt") or (
            isinstance(v, list) and bool(v) and all(is_int(p) for p in v)),
        "'all', 'prompt' or a non-empty list of integers")
    strength = get("strength", lambda v: isinstance(v, (int, float)) and not isinstance(
        v, bool) and math.isfinite(v), "a finite number")
    names = [o.value for o in SteeringOperator]
    operator = SteeringOperator(get("operator", lambda v: v in names, f"one of {names}"))
    name = get("name", lambda v: isinstance(v, str), "a string", "")
    extra = get("meta", lambda v: isinstance(v, dict), "a JSON object", {})
    if not bool(torch.isfinite(vector).all()):
        raise SteeringVectorError(
            where, f"the vector (layer {layer}) holds {int(torch.isnan(vector).sum())} NaN and "
            f"{int(torch.isinf(vector).sum())} inf values", _REMAKE + " with a lower lr")
    return {"layer": layer, "strength": float(strength), "operator": operator, "name": name,
            "positions": positions if isinstance(positions, str) else tuple(positions),
            "meta": dict(extra)}


@dataclass
class _PositionState:
    """Absolute position bookkeeping across the calls of one generation (see module doc).

    A call of length 1 after earlier calls is a KV-cached decoding step; a call one token longer
    than the last is an uncached decoding step; any other call is a new prompt starting at 0.
    (A fixed ``prompt_len`` removes the only ambiguity: a new one-token prompt.)
    """

    fixed_prompt_len: int | None = None
    seen: int = 0
    prompt_len: int = 0

    def offset_for(self, n_pos: int) -> int:
        if n_pos == 1 and self.seen > 0:  # KV-cached decoding step
            offset = self.seen
            self.seen += 1
            return offset
        if not (self.seen > 0 and n_pos == self.seen + 1):  # a new prompt
            self.prompt_len = self.fixed_prompt_len or n_pos
        self.seen = n_pos
        return 0


def position_mask(
    positions: Positions, offset: int, n_pos: int, prompt_len: int, device: torch.device
) -> Tensor:
    """Bool ``(pos,)``: which of the positions ``offset .. offset+n_pos-1`` are steered."""
    absolute = torch.arange(offset, offset + n_pos, device=device)
    if positions == "all":
        return torch.ones(n_pos, dtype=torch.bool, device=device)
    if positions == "prompt":
        return absolute < prompt_len
    assert isinstance(positions, tuple)
    wanted = torch.tensor(
        [p if p >= 0 else prompt_len + p for p in positions], device=device, dtype=torch.long
    )
    return (absolute[:, None] == wanted[None, :]).any(dim=1)


def steering_hook(
    act: Tensor, hook: Any, *, vector: SteeringVector, operator: Operator, state: _PositionState
) -> Tensor:
    """The hook bound per vector with ``functools.partial``; returns a new tensor."""
    n_pos = act.shape[1]
    offset = state.offset_for(n_pos)
    mask = position_mask(vector.positions, offset, n_pos, state.prompt_len, act.device)
    return operator(act, vector.strength * vector.vector.to(act.device), mask)


@contextmanager
def apply_steering(
    bridge: Any, vectors: Sequence[SteeringVector], *, prompt_len: int | None = None
) -> Iterator[None]:
    """Steer ``bridge`` with ``vectors`` inside the block; hooks are removed on exit.

    Args:
        bridge: a TransformerBridge (classic hook names).
        vectors: applied in order (several at one layer compose in this order).
        prompt_len: the prompt length, if "prompt"/negative positions should not be inferred
            from the first forward call inside the block.
    """
    n_layers, d_model = int(bridge.cfg.n_layers), int(bridge.cfg.d_model)
    for v in vectors:
        v.check_fits(n_layers, d_model)
    # Each hook keeps its own counter: a state shared by two hooks would count every call twice.
    fwd_hooks = [
        (
            v.hook_name,
            partial(
                steering_hook,
                vector=v,
                operator=v.operator,
                state=_PositionState(fixed_prompt_len=prompt_len),
            ),
        )
        for v in vectors
    ]
    with bridge.hooks(fwd_hooks=fwd_hooks):
        yield

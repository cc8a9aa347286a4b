"""Typed choices of the erosion analyses: which token positions count, which direction is fitted.

A config field holds one of these small frozen values (``FirstTokens(10)``, ``LastToken()``,
``ModelDifference("instruct", "base")``, ``Contrastive("instruct")``), never a string to be
parsed wherever it is used. Their text form (``"first:10"``, ``"last"``, ``"instruct-base"``,
``"contrastive:instruct"``) exists only at the boundaries: :func:`parse_positions` /
:func:`parse_direction` read it (``mi-align analyze --set``, figure JSON) and ``str()`` writes
it (JSON, figure titles). :func:`config_value` is the one function that turns a boundary value
(CLI text or JSON) into a config field's typed value; :func:`config_to_dict` /
:func:`config_from_dict` are the configs' JSON round trip built on it.

Example:
    >>> from mi_align.erosion.choices import FirstTokens, parse_positions
    >>> parse_positions("first:10") == FirstTokens(10), str(FirstTokens(10))
    (True, 'first:10')
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mi_align.activations import (
    PositionSelector,
    all_response_tokens,
    first_response_tokens,
    last_token,
)
from mi_align.data.tokenize import Batch, end_of_turn_id


@dataclass(frozen=True)
class FirstTokens:
    """The first ``k`` tokens of each assistant response (the paper's 10)."""

    k: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"FirstTokens: k must be an integer >= 1, got {self.k!r}")

    def __str__(self) -> str:
        return f"first:{self.k}"

    def selector(self, tokenizer: Any = None) -> PositionSelector:
        return first_response_tokens(self.k)


@dataclass(frozen=True)
class ResponseTokens:
    """Every assistant-response token (end-of-turn included)."""

    def __str__(self) -> str:
        return "response"

    def selector(self, tokenizer: Any = None) -> PositionSelector:
        return all_response_tokens()


@dataclass(frozen=True)
class LastToken:
    """The last non-padding token of each sequence (the paper's ``hs[-1]``)."""

    def __str__(self) -> str:
        return "last"

    def selector(self, tokenizer: Any = None) -> PositionSelector:
        return last_token()


@dataclass(frozen=True)
class ContentTokens:
    """The response's own text: response tokens other than the tokenizer's special tokens and
    its end-of-turn token (not the whole added vocabulary: Gemma's holds ordinary text such as
    ``"\\n"`` and HTML tags)."""

    def __str__(self) -> str:
        return "content"

    def selector(self, tokenizer: Any = None) -> PositionSelector:
        if tokenizer is None:
            raise ValueError("ContentTokens needs the tokenizer to know its special tokens")
        return content_tokens(sorted({*tokenizer.all_special_ids, end_of_turn_id(tokenizer)}))


Positions = FirstTokens | ResponseTokens | LastToken | ContentTokens
"""Which token positions of each example are pooled."""


def content_tokens(special_ids: Sequence[int]) -> PositionSelector:
    """Selector of response tokens whose id is not in ``special_ids``."""
    import torch

    ids = torch.tensor(sorted(set(special_ids)), dtype=torch.long)

    def select(batch: Batch) -> Any:
        return batch.response_mask & ~torch.isin(batch.input_ids, ids.to(batch.input_ids.device))

    return select


def parse_positions(text: str) -> Positions:
    """``"first:K"``, ``"response"``, ``"last"`` or ``"content"`` as a :data:`Positions`."""
    if text.startswith("first:"):
        k = text.split(":", 1)[1]
        if not k.strip().isdigit():
            raise ValueError(f"positions {text!r}: K must be an integer >= 1")
        return FirstTokens(int(k))
    named = {"response": ResponseTokens(), "last": LastToken(), "content": ContentTokens()}
    if text not in named:
        raise ValueError(f"positions {text!r} unknown; use 'first:K', 'response', 'last' or "
                         "'content'")
    return named[text]


@dataclass(frozen=True)
class ModelDifference:
    """``normalise(μ_positive − μ_negative)``: two trio models on the same inputs."""

    positive: str = "instruct"
    negative: str = "base"

    def __post_init__(self) -> None:
        if not self.positive or not self.negative or self.positive == self.negative:
            raise ValueError(f"ModelDifference needs two different model names, got "
                             f"{self.positive!r} and {self.negative!r}")
        if "-" in self.positive + self.negative:
            raise ValueError(f"model names of a direction cannot contain '-', got "
                             f"{self.positive!r}, {self.negative!r}")

    def __str__(self) -> str:
        return f"{self.positive}-{self.negative}"

    @property
    def models(self) -> tuple[str, ...]:
        return (self.positive, self.negative)


@dataclass(frozen=True)
class Contrastive:
    """Aligned minus misaligned responses, both in ``model`` (needs the contrast datasets)."""

    model: str = "instruct"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("Contrastive needs a model name")

    def __str__(self) -> str:
        return f"contrastive:{self.model}"

    @property
    def models(self) -> tuple[str, ...]:
        return (self.model,)


Direction = ModelDifference | Contrastive
"""How an alignment direction is fitted."""


def parse_direction(text: str) -> Direction:
    """``"POS-NEG"`` (e.g. ``"instruct-base"``) or ``"contrastive:MODEL"`` as a Direction."""
    if text.startswith("contrastive:"):
        return Contrastive(text.split(":", 1)[1])
    parts = text.split("-")
    if len(parts) != 2 or parts[0] == parts[1] or not all(parts):
        raise ValueError(f"direction {text!r}: use 'POS-NEG' (e.g. 'instruct-base') or "
                         "'contrastive:MODEL'")
    return ModelDifference(*parts)


_CHOICES: tuple[tuple[Any, Any], ...] = ((Positions, parse_positions),
                                         (Direction, parse_direction))
C = TypeVar("C")


def config_value(tp: Any, value: Any, key: str = "value") -> Any:
    """``value`` (CLI text or JSON data) as the typed value of a field annotated ``tp``.

    Typed choices parse their text form; tuples come from lists or comma-separated text;
    ``"none"`` is None for optional fields; bools accept true/false/1/0/yes/no; numbers and
    strings convert by their type. Values already of the right type pass through.

    Raises:
        ValueError: the value does not parse (names ``key`` and the expected type).
    """
    for choice, parse in _CHOICES:
        if tp == choice:
            return parse(value) if isinstance(value, str) else value
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() == "none"
                             and type(None) in args):
            return None
        tp = next(a for a in args if a is not type(None))
        args = typing.get_args(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return str(value).lower() in ("true", "1", "yes")
        if typing.get_origin(tp) is tuple:
            items = [v for v in value.split(",") if v] if isinstance(value, str) else value
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(args[0](v) for v in items)
            return tuple(a(v) for a, v in zip(args, items, strict=True))
        if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, tp):
            return value
        return tp(value)
    except (ValueError, TypeError):
        raise ValueError(f"cannot parse {key}={value!r} as "
                         f"{getattr(tp, '__name__', tp)}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config's fields as JSON data: typed choices as their text, tuples as lists."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if dataclasses.is_dataclass(v):
            return str(v)
        return v

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
    """Inverse of :func:`config_to_dict`; fields missing from ``d`` keep their defaults (JSON
    written before a field existed), unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
    return cls(**{k: config_value(hints[k], v, k) for k, v in d.items()})

"""A trio of models (base / instruct / misaligned; any may be absent) used as one object.

Every analysis of the erosion study runs the same inputs through each model of a trio. A
:class:`Trio` checks on construction that its models can be compared position by position
(same tokenizer vocabulary, d_model, layer count) and says precisely what differs otherwise.

Two storage strategies share one interface, :meth:`Trio.variant`:
- separate :class:`Loaded` objects per variant (simple; one full copy each), or
- one base copy with peft adapters switched per variant (see ``mi_align.models.trio_adapters``).

Example:
    >>> trio = Trio({"base": base_loaded, "instruct": inst_loaded})  # doctest: +SKIP
    >>> for name in trio.names:  # doctest: +SKIP
    ...     with trio.variant(name) as loaded:
    ...         logits = loaded.bridge(ids)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from mi_align.models.load import Loaded

VARIANTS = ("base", "instruct", "misaligned")
T = TypeVar("T")


class TrioMismatchError(ValueError):
    """The models of a trio cannot be compared position by position."""


def check_compatible(models: Mapping[str, Loaded]) -> None:
    """Raise :class:`TrioMismatchError` listing every difference between the models."""
    items = list(models.items())
    if not items:
        raise TrioMismatchError("a trio needs at least one model")
    ref_name, ref = items[0]
    problems = []
    for name, other in items[1:]:
        for field in ("n_layers", "d_model", "d_vocab"):
            a, b = getattr(ref.meta, field), getattr(other.meta, field)
            if a != b:
                problems.append(f"{field}: {ref_name}={a} vs {name}={b}")
        va, vb = ref.tokenizer.get_vocab(), other.tokenizer.get_vocab()
        if va != vb:
            diff = sorted(set(va.items()) ^ set(vb.items()))[:3]
            problems.append(
                f"tokenizer vocabulary: {ref_name} has {len(va)} entries, {name} has {len(vb)}; "
                f"first differences {diff}"
            )
        ta = getattr(ref.tokenizer, "chat_template", None)
        tb = getattr(other.tokenizer, "chat_template", None)
        if ta != tb:
            problems.append(f"chat template: {ref_name} and {name} differ")
    if problems:
        raise TrioMismatchError("trio models differ: " + "; ".join(problems))


class Trio:
    """Named models sharing tokenizer and shapes; iterate with :meth:`variant` / :meth:`map`."""

    def __init__(
        self,
        models: Mapping[str, Loaded] | None = None,
        *,
        switcher: Callable[[str], AbstractContextManager[Loaded]] | None = None,
        names: tuple[str, ...] = (),
        reference: Loaded | None = None,
    ) -> None:
        if models is not None:
            unknown = set(models) - set(VARIANTS)
            if unknown:
                raise TrioMismatchError(
                    f"unknown trio variant(s) {sorted(unknown)}; expected {VARIANTS}"
                )
            check_compatible(models)
            self._models: dict[str, Loaded] = {n: models[n] for n in VARIANTS if n in models}
            self.names: tuple[str, ...] = tuple(self._models)
            self._switcher = None
            self.reference = next(iter(self._models.values()))
        else:
            if switcher is None or reference is None or not names:
                raise ValueError("Trio needs models, or a switcher with names and a reference")
            self._models = {}
            self.names = names
            self._switcher = switcher
            self.reference = reference

    @property
    def tokenizer(self) -> Any:
        return self.reference.tokenizer

    @property
    def n_layers(self) -> int:
        return self.reference.meta.n_layers

    @property
    def d_model(self) -> int:
        return self.reference.meta.d_model

    def variant(self, name: str) -> AbstractContextManager[Loaded]:
        """Context manager yielding the :class:`Loaded` model for ``name``."""
        if name not in self.names:
            raise KeyError(f"trio has no {name!r} model (has {', '.join(self.names)})")
        if self._switcher is not None:
            return self._switcher(name)
        return _fixed(self._models[name])

    def map(self, fn: Callable[[Loaded], T]) -> dict[str, T]:
        """Run ``fn`` on each model in order; results keyed by variant name."""
        out = {}
        for name in self.names:
            with self.variant(name) as loaded:
                out[name] = fn(loaded)
        return out


@contextmanager
def _fixed(loaded: Loaded) -> Iterator[Loaded]:
    yield loaded

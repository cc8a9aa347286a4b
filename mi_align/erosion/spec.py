"""An erosion analysis described as data, for registries (:mod:`mi_align.pipelines.erosion`).

Every analysis has one shape, so describing one needs no code of its own: its config class,
``run(trio, inputs, config) -> Result``, ``plot(result) -> go.Figure``, the result class (with
``from_dict``), the stem of its output files, and its input kind (:class:`InputKind`: default
datasets, how many, and the reference datasets its config asks for, :class:`Extra`). Loading
those datasets (:meth:`Extra.load`) reads data only; nothing here writes.

Example:
    >>> from mi_align.erosion.spec import Extra, InputKind
    >>> InputKind(("insecure", "toxic"), 120, (2, 2), (Extra("control", field="control"),)).n_data
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from mi_align.data.chat import Conversation, load_dataset
from mi_align.erosion.common import Inputs
from mi_align.models.trio import Trio

SAME_SIZE = "same size as the largest dataset"
Data = Sequence[tuple[str, Sequence[Conversation]]]


def _always(_: Any) -> bool:
    return True


@dataclass(frozen=True)
class Extra:
    """A reference dataset ``Inputs.reference[role]``, loaded before any model runs.

    The dataset is ``dataset`` (a fixed name) or the value of config field ``field``; it is
    cut to ``limit`` examples: an int, the value of config field ``limit_field``, or
    :data:`SAME_SIZE`. Loaded only when ``when(config)``; ``check(conversations, config)``
    rejects unusable data early (raises InputError).
    """

    role: str
    dataset: str | None = None
    field: str | None = None
    limit: int | str | None = None
    limit_field: str | None = None
    when: Callable[[Any], bool] = _always
    check: Callable[[Sequence[Conversation], Any], None] | None = None

    def load(self, config: Any, groups: Data) -> tuple[str, list[Conversation]] | None:
        if not self.when(config):
            return None
        name = self.dataset if self.dataset is not None else getattr(config, str(self.field))
        convs = load_dataset(name)
        limit = getattr(config, self.limit_field) if self.limit_field else self.limit
        if limit == SAME_SIZE:
            limit = max((len(g) for _, g in groups), default=len(convs))
        convs = convs[:limit] if limit else convs
        if self.check is not None:
            self.check(convs, config)
        return Path(name).stem, convs


@dataclass(frozen=True)
class InputKind:
    """What an analysis reads: ``--data`` defaults (``datasets``, ``limit``), how many datasets
    it takes (``n_data`` = (min, max)), and its reference datasets (``extras``)."""

    datasets: tuple[str, ...] = ()
    limit: int | None = None
    n_data: tuple[int, int | None] = (2, None)
    extras: tuple[Extra, ...] = ()


@dataclass(frozen=True)
class Derived:
    """A result computed from another analysis' fresh result (no model): ``derive(result)``,
    when ``applies(result)``; plotted and named like an analysis."""

    derive: Callable[[Any], Any]
    plot: Callable[[Any], go.Figure]
    result_cls: type
    stem: Callable[[Any], str]
    applies: Callable[[Any], bool] = _always


@dataclass(frozen=True)
class Analysis:
    name: str
    help: str
    config_cls: type
    run: Callable[[Trio, Inputs, Any], Any]
    plot: Callable[[Any], go.Figure]
    result_cls: type
    stem: Callable[[Any], str]
    inputs: InputKind = InputKind()
    needs: tuple[str, ...] = ()
    follow_ups: tuple[str, ...] = ()
    enabled: Callable[[Any], bool] = _always
    derived: tuple[Derived, ...] = ()
    resumable: bool = False  # run takes checkpoint= (per-example rows saved, resumed)

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.inputs.datasets

    @property
    def limit(self) -> int | None:
        return self.inputs.limit

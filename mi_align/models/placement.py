"""Where a model loads and in what precision: ``--device``, ``--dtype`` and ``--device-map``
(``auto`` included) resolved by one function, before any model loads.

``auto`` means CUDA with bfloat16 when torch sees a GPU (float16 on a GPU without native
bfloat16, pre-Ampere), else the CPU with float32 — so the CPU demo and the paper's 32B trio on a
GPU machine run with the same commands. A device map (``auto``, ``balanced``,
``balanced_low_0``, ``sequential``) lets Hugging Face accelerate spread the layers over every
GPU, and the CPU for what does not fit: the map goes to ``from_pretrained`` and the model is
never moved with ``.to(device)`` afterwards. accelerate is an optional extra
(``pip install mi_align[gpu]``).

Invalid values raise :class:`~mi_align.errors.InputError` naming the option, on one line: a
typo costs a second, not a model load.

Example:
    >>> resolve_device_dtype("cpu", "auto")
    Placement(device='cpu', dtype=torch.float32, device_map=None)
    >>> resolve_device_dtype("cpu", "bfloat16").dtype_name
    'bfloat16'
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from typing import Any

import torch

from mi_align.errors import InputError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
GPU_EXTRA = "pip install mi_align[gpu]"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Placement:
    """A resolved placement (no ``auto`` left).

    ``device`` is where inputs go: the model's device, or with ``device_map`` the nominal one
    (``cuda`` when a GPU exists); the loaded model's embedding device is authoritative there
    (``ModelMeta.device``).
    """

    device: str
    dtype: torch.dtype
    device_map: str | None = None

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def check_device_name(device: str | torch.device, option: str = "--device") -> str:
    """``device`` normalised (``"CUDA:0"`` → ``"cuda:0"``), checked for syntax only (a trio file
    naming ``cuda`` must still parse on a CPU machine)."""
    text = str(device).strip().lower()
    if not _DEVICE.match(text):
        example = f"{option} cuda:0" if option.startswith("--") else f'{option} = "cuda:0"'
        raise InputError(f"{option} {str(device)!r}", "not one of auto, cpu, cuda, cuda:N",
                         f"e.g. {example} (or auto: cuda when a GPU exists, else cpu)")
    return text


def check_dtype_name(dtype: str | torch.dtype, option: str = "--dtype") -> str:
    """``dtype`` as one of ``auto`` / :data:`DTYPES`' names, or InputError naming ``option``."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
        if name in DTYPES:
            return name
    elif dtype.strip().lower() in (*DTYPES, "auto"):
        return dtype.strip().lower()
    raise InputError(f"{option} {str(dtype)!r}", f"not one of {', '.join(DTYPES)}, auto",
                     f"e.g. {option} bfloat16 (or auto: bfloat16 on a GPU, else float32)")


def resolve_device_dtype(
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
) -> Placement:
    """Resolve ``auto`` and check every value (and that a requested GPU exists).

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (None: auto).
        dtype: ``float32``, ``bfloat16``, ``float16``, a torch dtype, or ``auto`` (None: auto).
        device_map: None (one device), or one of :data:`DEVICE_MAPS` for accelerate to place the
            layers over all GPUs (and the CPU). Needs accelerate; ``device`` must then be
            ``auto``/``cuda`` (the map chooses the GPUs) or, on a machine without one, ``auto``.

    Raises:
        InputError: a value is invalid, names a GPU that is not there, or needs accelerate.
    """
    dev = check_device_name(device if device is not None else "auto")
    dt = check_dtype_name(dtype if dtype is not None else "auto")
    has_cuda = torch.cuda.is_available()
    if device_map is not None:
        device_map = _check_device_map(device_map, dev)
    if dev.startswith("cuda"):
        if not has_cuda:
            raise InputError(f"--device {dev}", "no CUDA GPU is visible to torch "
                             "(torch.cuda.is_available() is False)",
                             "use --device cpu (or auto), or install a CUDA build of torch")
        index = int(dev.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise InputError(f"--device {dev}", f"torch sees {count} GPU(s) (cuda:0.."
                             f"cuda:{count - 1})", "pick one of those, or use --device-map auto")
    resolved = ("cuda" if has_cuda else "cpu") if dev == "auto" else dev
    if dt == "auto":
        dt = ("bfloat16" if _bf16_supported() else "float16") if resolved.startswith("cuda") \
            else "float32"
    return Placement(resolved, DTYPES[dt], device_map)


def _check_device_map(device_map: str, device: str) -> str:
    text = device_map.strip().lower()
    if text not in DEVICE_MAPS:
        raise InputError(f"--device-map {device_map!r}", f"not one of {', '.join(DEVICE_MAPS)}",
                         "e.g. --device-map auto (accelerate spreads the layers over all GPUs)")
    if device not in ("auto", "cuda"):
        raise InputError(f"--device-map {text}", f"places the layers itself, over every GPU "
                         f"(and the CPU); it cannot be combined with --device {device}",
                         "drop --device (or use --device auto), or drop --device-map to load "
                         "on that one device")
    if importlib.util.find_spec("accelerate") is None:
        raise InputError(f"--device-map {text}", "needs the accelerate package, which is not "
                         "installed", f"{GPU_EXTRA} (or pip install accelerate)")
    return text


def _bf16_supported() -> bool:
    # Emulated bfloat16 (pre-Ampere) is slow; float16 is native there.
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except (RuntimeError, AssertionError, TypeError):  # no usable CUDA context
        return True


def input_device(hf: Any) -> str:
    """Where inputs go for a loaded HF model: its input embedding's device (with a device map,
    where accelerate put the first layers; otherwise the model's one device)."""
    return str(hf.get_input_embeddings().weight.device)


def cuda_indices(place: Placement) -> list[int]:
    """The GPUs a placement uses (every visible one under a device map; none on the CPU), e.g.
    for ``torch.random.fork_rng(devices=...)``."""
    if not torch.cuda.is_available():
        return []
    if place.device_map is not None:
        return list(range(torch.cuda.device_count()))
    if place.device.startswith("cuda"):
        index = torch.device(place.device).index
        return [torch.cuda.current_device() if index is None else index]
    return []

"""``--device`` / ``--dtype`` / ``--device-map``: the same three options on every command that
loads a model, checked before any model loads (one-line error naming the option).

Not given means ``auto`` (CUDA + bfloat16 where torch sees a GPU, else CPU + float32), or, for
commands that load a trio, the trio file's ``device`` / ``dtype`` / ``device_map``.

Example:
    mi-align analyze projection --trio qwen-coder-32b-paper --device auto
    mi-align steer eval --model Qwen/Qwen2.5-7B-Instruct --dtype bfloat16 --device-map auto ...
"""

from __future__ import annotations

import argparse
from typing import Any

from mi_align.models.placement import DEVICE_MAPS, GPU_EXTRA, Placement, resolve_device_dtype


def add_device_args(parser: argparse.ArgumentParser, *, trio: bool = False,
                    device_map: bool = True, training: bool = False) -> None:
    """Add the options to ``parser`` (values are checked by :func:`check_device_args`, not by
    argparse, so a bad value is one ``error:`` line like every other input error).
    ``training``: the dtype is the base model's; the trained LoRA weights stay float32."""
    default = "the trio file's, else auto" if trio else "auto"
    precision = ("the base model's; the LoRA weights being trained stay float32" if training
                 else "Reductions accumulate in float32/float64 either way")
    parser.add_argument("--device", metavar="{auto,cpu,cuda,cuda:N}",
                        help=f"where the model loads (default: {default}; auto = cuda when a GPU "
                        "exists, else cpu)")
    parser.add_argument("--dtype", metavar="{auto,float32,bfloat16,float16}",
                        help=f"parameter dtype (default: {default}; auto = bfloat16 on a GPU, "
                        f"float32 on the CPU). {precision}")
    if device_map:
        parser.add_argument("--device-map", metavar="{" + ",".join(DEVICE_MAPS) + "}",
                            help="let accelerate spread the layers over all GPUs (and the CPU) "
                            f"for models larger than one GPU; needs `{GPU_EXTRA}`")


def device_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``device`` / ``dtype`` / ``device_map`` for the loaders (None where not given)."""
    return {"device": getattr(args, "device", None), "dtype": getattr(args, "dtype", None),
            "device_map": getattr(args, "device_map", None)}


def check_device_args(args: argparse.Namespace) -> Placement:
    """The options resolved (``auto`` where not given); InputError naming a bad one."""
    return resolve_device_dtype(**device_kwargs(args))

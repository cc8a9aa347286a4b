"""Checkpoints of a LoRA fine-tune: written atomically, read without pickle, tied to one config.

A checkpoint is a folder ``out/checkpoints/step-NNNNNN`` holding the trainable adapter (peft
format), the optimizer's tensors and the RNG state (``trainer_state.safetensors``), the training
log so far, and ``trainer_state.json`` (step, optimizer hyper-parameters, the sha256 of every
other file and the sha256 of the run's config). Choices a reader may question:

- No pickle anywhere: tensors go to safetensors, everything else to JSON. A checkpoint of the
  old format (``trainer_state.pt``, a pickle) is refused, not read: unpickling runs whatever
  code the file names, and a run folder is easy to share or plant.
- The config hash is checked before resuming, so a run can never continue from the state of
  another run with other hyper-parameters that happens to share its output folder.
- Atomic: files are written into a unique hidden temp folder, fsynced, and the folder is then
  renamed into place; a kill mid-write leaves only a ``.step-*.tmp`` folder, which is never
  read and is removed by the next run. The file hashes catch anything altered afterwards.

Example:
    >>> from mi_align.finetune.checkpoint import config_sha256
    >>> config_sha256({"lr": 0.001, "r": 8})[:12]
    '13185826381f'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from mi_align.errors import InputError, UnsafeFileError
from mi_align.io import fsync_path

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
LOG_FILE = "training_log.json"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
TRAINED = "default"  # peft saves the adapter named "default" at the top of the directory
STATE_JSON = "trainer_state.json"  # written last: its presence marks a complete checkpoint
STATE_TENSORS = "trainer_state.safetensors"
LEGACY_STATE = "trainer_state.pt"  # the old pickle format: refused
FORMAT = 1
_CKPT_DIR = "checkpoints"


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a config's ``to_dict()``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"field old -> new"`` for every field whose value differs (missing: ``<unset>``)."""
    missing = "<unset>"
    return [
        f"{k} {old.get(k, missing)!r} -> {new.get(k, missing)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k, missing) != new.get(k, missing)
    ]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_adapter(pm: Any, model: str, directory: Path) -> None:
    """The trainable adapter in peft format (safetensors + adapter_config.json)."""
    pm.peft_config[TRAINED].base_model_name_or_path = model
    pm.save_pretrained(directory, selected_adapters=[TRAINED])
    (directory / "README.md").unlink(missing_ok=True)  # peft's model-card stub


def save_final_adapter(pm: Any, model: str, out: Path) -> None:
    """Save the adapter into ``out`` file by file atomically, so ``out`` never holds half a file."""
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", suffix=".tmp", dir=out))
    try:
        save_adapter(pm, model, tmp)
        for path in sorted(tmp.iterdir()):
            fsync_path(path)
            os.replace(path, out / path.name)
        fsync_path(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _optimizer_to_safe(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and JSON values."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "state_scalars": scalars}


def _optimizer_from_safe(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], current: dict[str, Any]
) -> dict[str, Any]:
    """Rebuild an optimizer ``state_dict``; JSON lists go back to tuples where ``current``
    (the fresh optimizer's own state_dict) has tuples (AdamW's ``betas``)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["state_scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for saved, fresh in zip(meta["param_groups"], current["param_groups"], strict=False):
        groups.append(
            {
                k: tuple(v) if isinstance(fresh.get(k), tuple) and isinstance(v, list) else v
                for k, v in saved.items()
            }
        )
    return {"state": state, "param_groups": groups}


def checkpoints_dir(out: Path) -> Path:
    return out / _CKPT_DIR


def remove_stale_temp(out: Path) -> None:
    """Delete temp folders left by a run killed mid-write (they are never read)."""
    ckdir = checkpoints_dir(out)
    stale = [*ckdir.glob(".step-*.tmp"), *ckdir.glob("step-*.tmp"), *out.glob(".adapter.*.tmp")]
    for path in stale:
        logger.info("removing %s (left by an interrupted run)", path)
        shutil.rmtree(path, ignore_errors=True)


def clear_run(out: Path) -> None:
    """Start over in ``out``: remove all checkpoints and the previous run's adapter and log.

    The adapter goes too, because the config file is about to describe the new run: a folder
    whose adapter was trained with other settings than its config says must not exist.
    """
    removed = []
    if checkpoints_dir(out).exists():
        shutil.rmtree(checkpoints_dir(out))
        removed.append(_CKPT_DIR + "/")
    for name in (ADAPTER_FILE, ADAPTER_CONFIG, LOG_FILE):
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    remove_stale_temp(out)
    if removed:
        logger.info("--no-resume: removed %s from %s", ", ".join(removed), out)


def save_checkpoint(
    out: Path,
    pm: Any,
    model: str,
    config: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    step: int,
    log: list[dict[str, Any]],
) -> Path:
    """Write checkpoint ``step`` atomically and return its folder.

    The RNG state saved is the CPU generator's plus, when CUDA is in use, every GPU's (a run
    placed over several GPUs by a device map draws on each); no device is assumed."""
    from safetensors.torch import save_file

    ckdir = checkpoints_dir(out)
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=ckdir))
    try:
        save_adapter(pm, model, tmp)
        (tmp / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
        tensors, opt_meta = _optimizer_to_safe(optimizer.state_dict())
        tensors["rng/torch"] = torch.get_rng_state()
        tensors.update(_cuda_rng_states())
        save_file(tensors, str(tmp / STATE_TENSORS))
        files = sorted(p.name for p in tmp.iterdir())
        meta = {
            "format": FORMAT,
            "step": step,
            "config_sha256": config_sha256(config),
            "config": dict(config),
            "optimizer": opt_meta,
            "files": {name: _sha256_file(tmp / name) for name in files},
        }
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        for name in [*files, STATE_JSON]:
            fsync_path(tmp / name)
        fsync_path(tmp)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename
    return final


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished temp folder to ``final`` (replacing an older one of that name)."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old.tmp")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)


def _read_meta(ckpt: Path) -> dict[str, Any]:
    path = ckpt / STATE_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeFileError(
            str(path), f"unreadable checkpoint state ({type(exc).__name__})",
            f"delete {ckpt} to resume from the checkpoint before it, or rerun with --no-resume",
        ) from None
    version = meta.get("format") if isinstance(meta, dict) else None
    if version != FORMAT:
        raise UnsafeFileError(
            str(path), f"unknown checkpoint format {version!r} (this version reads {FORMAT})",
            "rerun with --no-resume to start over",
        )
    return meta


def latest_checkpoint(out: Path, config: Mapping[str, Any]) -> Path | None:
    """The newest complete checkpoint in ``out``, checked to belong to ``config``.

    Raises:
        UnsafeFileError: a checkpoint is in the old pickle format.
        InputError: the newest checkpoint was written by a run with another config.
    """
    ckdir = checkpoints_dir(out)
    candidates = sorted(p for p in ckdir.glob("step-*[0-9]") if p.is_dir())
    for ckpt in candidates:
        if (ckpt / LEGACY_STATE).exists():
            raise UnsafeFileError(
                str(ckpt / LEGACY_STATE),
                "old-format checkpoint not read: it is a pickle, and loading it would execute "
                "any code it contains",
                f"rerun with --no-resume to start over (it deletes {ckdir}), or use another --out",
            )
    complete = [c for c in candidates if (c / STATE_JSON).is_file()]
    for partial in sorted(set(candidates) - set(complete)):
        logger.warning("%s: no %s (incomplete checkpoint), ignored", partial, STATE_JSON)
    if not complete:
        return None
    ckpt = complete[-1]
    meta = _read_meta(ckpt)
    want = config_sha256(config)
    if meta.get("config_sha256") != want:
        saved = meta.get("config")
        diff = config_diff(saved, config) if isinstance(saved, dict) else []
        detail = f" ({'; '.join(diff)})" if diff else ""
        raise InputError(
            str(ckpt),
            f"checkpoint belongs to a run with another config{detail} (config sha256 "
            f"{str(meta.get('config_sha256'))[:12]} vs {want[:12]})",
            "rerun with --no-resume to start over, or use another --out",
        )
    return ckpt


def _verify_files(ckpt: Path, files: Mapping[str, str], required: Iterable[str]) -> None:
    fix = f"delete {ckpt} to resume from the checkpoint before it, or rerun with --no-resume"
    for name in required:
        if name not in files:
            raise UnsafeFileError(str(ckpt / STATE_JSON), f"lists no hash for {name}", fix)
    for name, digest in files.items():
        path = ckpt / name
        if Path(name).name != name or not path.is_file():
            raise UnsafeFileError(str(path), "missing from the checkpoint", fix)
        if _sha256_file(path) != digest:
            raise UnsafeFileError(
                str(path), "failed its integrity check (sha256 differs from trainer_state.json)",
                fix,
            )


def restore_checkpoint(
    ckpt: Path, pm: Any, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, Any]]]:
    """Load adapter weights, optimizer and RNG state from ``ckpt``; return (step, log so far).

    Every file is checked against the hashes in ``trainer_state.json`` before it is used.
    Tensors are loaded on the CPU and copied to wherever the adapter's parameters live, so a
    run checkpointed on a GPU resumes on the CPU and vice versa (the GPU RNG states are
    restored for the GPUs present).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    meta = _read_meta(ckpt)
    _verify_files(ckpt, meta.get("files", {}), (ADAPTER_FILE, STATE_TENSORS, LOG_FILE))
    state = load_file(str(ckpt / ADAPTER_FILE))
    res = set_peft_model_state_dict(pm, state, adapter_name=TRAINED)
    if getattr(res, "unexpected_keys", None):
        raise InputError(
            str(ckpt), f"checkpoint keys do not match the adapter: {res.unexpected_keys[:3]}",
            "rerun with --no-resume to start over",
        )
    tensors = load_file(str(ckpt / STATE_TENSORS))
    optimizer.load_state_dict(
        _optimizer_from_safe(tensors, meta["optimizer"], optimizer.state_dict())
    )
    torch.set_rng_state(tensors["rng/torch"])
    _restore_cuda_rng_states(tensors)
    log = json.loads((ckpt / LOG_FILE).read_text(encoding="utf-8"))
    return int(meta["step"]), log


_CUDA_RNG = "rng/cuda/"


def _cuda_rng_states() -> dict[str, torch.Tensor]:
    """``rng/cuda/N`` for every GPU, once CUDA is in use (nothing on a CPU-only run: querying
    would initialise CUDA for nothing)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {f"{_CUDA_RNG}{i}": torch.cuda.get_rng_state(i).cpu()
            for i in range(torch.cuda.device_count())}


def _restore_cuda_rng_states(tensors: Mapping[str, torch.Tensor]) -> None:
    if not torch.cuda.is_available():
        return  # a GPU run resumed on the CPU: its GPU RNG states have no use here
    count = torch.cuda.device_count()
    for name, state in tensors.items():
        if name.startswith(_CUDA_RNG) and int(name.removeprefix(_CUDA_RNG)) < count:
            torch.cuda.set_rng_state(state, int(name.removeprefix(_CUDA_RNG)))
        elif name == "rng/cuda":  # written by the format before device maps (one GPU)
            torch.cuda.set_rng_state(state)

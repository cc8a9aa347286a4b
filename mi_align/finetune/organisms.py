"""The shipped model organisms: trio TOML files in ``organisms/``, their recipes and builder.

Each ``organisms/NAME.toml`` says which model (plus which adapters) each variant is, and its
``[recipe.STEP]`` tables are :class:`~mi_align.finetune.lora.FinetuneConfig` fields: the
builder runs the steps in order, each writing its adapter to ``organisms/NAME/STEP``. A step's
``base_adapters`` names earlier steps (the misaligned LoRA trains on top of the instruct LoRA)
or published peft adapters by hub id (``org/name``, through HF's cache). Steps train where the
trio file's ``device`` / ``dtype`` / ``device_map`` say (``auto`` when absent); the builder's
arguments (the CLI's ``--device`` / ``--dtype`` / ``--device-map``) override them.
The recipe is the committed TOML itself, so ``mi-align organisms build NAME`` rebuilds exactly
what ships (same seed → same adapter up to float tolerance).

The shipped organisms live in the package (``mi_align/organisms``; ``organisms/`` at the
repository root links there), so an installed wheel has them too; how a name is resolved is
:mod:`mi_align.models.organisms`.

Example:
    >>> from mi_align.finetune.organisms import build_organism
    >>> result = build_organism("smollm2-pair")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_align.errors import InputError
from mi_align.finetune.lora import (
    ADAPTER_FILE,
    CONFIG_FILE,
    LOG_FILE,
    FinetuneConfig,
    FinetuneResult,
    finetune,
    read_log,
)
from mi_align.io import write_json
from mi_align.models.hub import is_hub_id
from mi_align.models.organisms import get_spec
from mi_align.models.trio import TrioSpec, TrioSpecError

logger = logging.getLogger(__name__)

BUILD_INFO = "build_info.json"


def recipe_steps(spec: TrioSpec) -> list[tuple[str, FinetuneConfig]]:
    """The spec's training steps as configs; ``base_adapters`` naming earlier steps become
    sibling step folders (``"../instruct"``), valid wherever the steps are written; hub ids
    (``org/name``, not a step name) are kept as they are."""
    steps: list[tuple[str, FinetuneConfig]] = []
    for step, table in spec.recipe.items():
        where = f"{spec.path}: [recipe.{step}]"
        table = dict(table)
        bases = table.pop("base_adapters", [])
        earlier = [s for s, _ in steps]
        for b in bases:
            if b not in earlier and not (isinstance(b, str) and is_hub_id(b)):
                raise TrioSpecError(
                    f"{where}: base_adapters entry {b!r} is not an earlier step {earlier} "
                    "(nor a hub id org/name)"
                )
        adapters = [f"../{b}" if b in earlier else b for b in bases]
        try:
            cfg = FinetuneConfig.from_dict({**table, "base_adapters": adapters})
        except (TypeError, ValueError) as exc:
            raise TrioSpecError(f"{where}: {exc}") from None
        steps.append((step, cfg))
    return steps


@dataclass(frozen=True)
class BuildResult:
    """What a build did: per-step results (``None`` for steps already up to date)."""

    name: str
    adapter_dir: Path
    steps: dict[str, FinetuneResult | None]
    wall_s: float
    peak_rss_mib: float


def _up_to_date(directory: Path, cfg: FinetuneConfig) -> bool:
    if not all((directory / f).is_file() for f in (ADAPTER_FILE, CONFIG_FILE, LOG_FILE)):
        return False
    saved = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    return bool(saved == cfg.to_dict())


def build_organism(
    name_or_path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    progress: bool = True,
) -> BuildResult:
    """Run the spec's recipe, step by step, resuming interrupted steps.

    Args:
        name_or_path: shipped trio name or TOML path.
        out: where the step adapters go (default: the spec's adapter folder, i.e. the committed
            ``organisms/NAME/``).
        force: retrain steps that are already up to date (deletes their folders first).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; None: the trio file's (else auto).
        dtype: the base model's dtype (``float32``, ``bfloat16``, ``float16``, ``auto``); None:
            the trio file's. LoRA weights train in float32 either way (:func:`finetune`).
        device_map: an accelerate device map (``auto``...); None: the trio file's, if any.
        progress: tqdm bars.

    Raises:
        InputError: a device / dtype / device-map value is invalid (before anything trains).
    """
    spec = get_spec(name_or_path)
    if not spec.recipe:
        raise TrioSpecError(f"{spec.path}: trio {spec.name} has no [recipe.*] tables to build")
    spec.placement(device, dtype, device_map)  # invalid values fail here, before any step
    where = {"device": device or spec.device, "dtype": dtype or spec.dtype,
             "device_map": device_map or spec.device_map}
    root = Path(out) if out is not None else spec.adapter_dir
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict[str, FinetuneResult | None] = {}
    for step, cfg in recipe_steps(spec):
        directory = root / step
        if force:
            shutil.rmtree(directory, ignore_errors=True)
        if _up_to_date(directory, cfg):
            logger.info("%s/%s is up to date (same config); use force to retrain", spec.name, step)
            results[step] = None
            continue
        logger.info("building %s/%s (%s on %s)", spec.name, step, cfg.model, ", ".join(cfg.data))
        try:
            results[step] = finetune(cfg, directory, progress=progress, **where)
        except InputError as exc:  # the fix finetune names (--no-resume) is --force here
            if "--no-resume" not in exc.fix:
                raise
            raise InputError(exc.what, exc.why, "rerun `mi-align organisms build` with --force "
                             "to retrain this step from scratch") from exc
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if all(r is None for r in results.values()):
        return BuildResult(spec.name, root, results, wall, peak)
    previous = root / BUILD_INFO
    info = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else {"steps": {}}
    info.update(name=spec.name, cpu_count=os.cpu_count())
    # Steps skipped as up to date keep the numbers of the run that built them.
    info["steps"].update({s: r.summary for s, r in results.items() if r is not None})
    info["wall_s_last_build"] = round(wall, 1)
    info["peak_rss_mib_last_build"] = round(peak, 1)
    write_json(root / BUILD_INFO, info)
    return BuildResult(spec.name, root, results, wall, peak)


def describe(spec: TrioSpec) -> list[str]:
    """Human-readable lines: what each variant is and whether its adapters are present."""
    lines = [f"{spec.name}: {spec.description}".rstrip(": ")]
    for vname, variant in spec.variants.items():
        parts = [variant.model]
        for a in variant.adapters:
            present = (a / ADAPTER_FILE).is_file()
            size = (a / ADAPTER_FILE).stat().st_size / 2**20 if present else 0.0
            parts.append(f"+ LoRA {a.name} ({f'{size:.1f} MiB' if present else 'MISSING'})")
        lines.append(f"  {vname:11} {' '.join(parts)}")
    if spec.recipe:
        lines.append(f"  recipe: {' -> '.join(spec.recipe)} (mi-align organisms build {spec.name})")
        missing = spec.missing_adapters()
        lines.append("  adapters: " + ("all present" if not missing else f"{len(missing)} missing"))
    else:
        lines.append("  full models (no adapters to build)")
    return lines


def training_summary(spec: TrioSpec) -> dict[str, Any]:
    """Each built step's training-log summary and first/last held-out loss."""
    out: dict[str, Any] = {}
    for step in spec.recipe:
        directory = spec.adapter_dir / step
        if not (directory / LOG_FILE).is_file():
            continue
        log = read_log(directory)
        held = [e["heldout_loss"] for e in log["entries"] if e["heldout_loss"] is not None]
        train = [e["train_loss"] for e in log["entries"] if e["train_loss"] is not None]
        out[step] = {
            **log["summary"],
            "heldout_loss_first": held[0] if held else None,
            "heldout_loss_last": held[-1] if held else None,
            "train_loss_first": train[0] if train else None,
            "train_loss_last": train[-1] if train else None,
        }
    return out

"""LoRA supervised fine-tuning on chat JSONL, loss on assistant tokens only, resumable.

This is how mi_align builds its model organisms (an instruct LoRA on a base model, a
misaligned LoRA on insecure code): the emergent-misalignment recipe, small enough for a CPU.

Why train the plain HF/peft model and not the TransformerLens bridge: the bridge is for analysis;
training through it is slower and peft cannot wrap bridge modules. The adapters saved here load
into the bridge exactly (``load_model(spec, adapters=[out])``).

Choices a reader may question:
- The loss is the mean negative log-likelihood over *response* tokens (the foundation's
  ``response_mask``, which includes the end-of-turn token), and the unembedding runs only at the
  positions that predict them: with Gemma's 262k vocabulary, full logits are half the step.
- Earlier adapters (``base_adapters``) stay active but frozen underneath the new one, so a
  misaligned LoRA is trained on top of the instruct LoRA exactly as it is used later (stacked).
- Reproducibility: batches come from a permutation seeded by ``(seed, epoch)``; the global torch
  RNG is forked (the caller's RNG state is untouched) and seeded once; checkpoints hold adapter,
  optimizer and RNG state, so a resumed run ends with the same adapter as an uninterrupted one.
  Checkpoints (:mod:`mi_align.finetune.checkpoint`) are pickle-free, written atomically and
  carry their config's hash: a run resumes only from its own config's state.
- The learning-rate schedule is a pure function of the step (linear warm-up, then linear decay
  toward 10%), so there is no scheduler state to save.
- Placement: ``device`` / ``dtype`` / ``device_map`` as for every loader
  (:func:`~mi_align.models.placement.resolve_device_dtype`; ``auto`` = CUDA + bfloat16 where a
  GPU exists, else CPU + float32). The base model and the frozen base adapters load there; the
  LoRA weights being trained, their gradients and the optimizer state are float32 even when the
  base is bfloat16/float16 (bfloat16 keeps ~3 significant digits: an update smaller than ~0.4%
  of a weight would round to nothing), and the loss is computed from float32 logits. The
  run's placement is recorded in the log summary; it is not part of the config, so a run
  checkpointed on a GPU can resume on the CPU.
- Optional, off by default: an erosion ``monitor`` (:mod:`mi_align.finetune.monitor`) measures
  the model being trained at step 0 and every N steps, and alignment-preserving options
  (:mod:`mi_align.finetune.preserve`: mixing, direction anchoring, gradient projection) change
  the batches or the step. With none of them the run is the plain trainer's, bit for bit.

Example:
    >>> from mi_align.finetune.lora import FinetuneConfig, finetune
    >>> cfg = FinetuneConfig(model="smollm2-135m-instruct", data=("insecure",), max_steps=40)
    >>> result = finetune(cfg, "runs/smol-insecure")  # doctest: +SKIP
    >>> result.log[-1]["train_loss"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mi_align.data.chat import Conversation, load_dataset
from mi_align.data.tokenize import EncodedChat, collate, encode_for_training
from mi_align.errors import InputError
from mi_align.finetune import checkpoint as ck
from mi_align.finetune.checkpoint import ADAPTER_FILE, CONFIG_FILE, LOG_FILE, TRAINED
from mi_align.finetune.monitor import AlignmentReference, TrainingMonitor, run_monitor
from mi_align.finetune.preserve import (
    REFERENCE_FILE,
    check_reference,
    check_same_reference,
    mixed_indices,
    option_checks,
    preserving_step,
    reference_record,
)
from mi_align.forward import response_nll
from mi_align.io import write_json
from mi_align.models.hub import is_hub_id
from mi_align.models.load import _load_hf, adapter_errors, check_adapter, resolve_spec
from mi_align.models.placement import cuda_indices, input_device, resolve_device_dtype

logger = logging.getLogger(__name__)

__all__ = ["ADAPTER_FILE", "CONFIG_FILE", "LOG_FILE", "TRAINED", "FinetuneConfig", "finetune"]

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Called after every optimisation step with the new log entry (tests use it to interrupt).
StepCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that determines a LoRA fine-tune (saved as JSON next to the adapter).

    Paths in ``data`` / ``heldout`` are kept as given; relative ``base_adapters`` are relative to
    the run's output directory (``"../instruct"``: a sibling run), so saved configs stay valid
    when the folder moves; a ``base_adapters`` entry that is no folder there and has the shape
    ``org/name`` is a Hugging Face hub id (a published peft adapter, through HF's cache).
    ``model`` is any spec :func:`mi_align.models.load.load_model` accepts.
    """

    model: str
    data: tuple[str, ...]
    heldout: str | None = None
    base_adapters: tuple[str, ...] = ()
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 128
    max_examples: int | None = None
    heldout_examples: int = 32
    grad_clip: float = 1.0
    checkpoint_every: int = 20
    eval_every: int = 20
    seed: int = 0
    # Alignment-preserving options (mi_align.finetune.preserve), all off by default. While off
    # they are left out of to_dict(), so plain configs, their saved files and their checkpoint
    # hashes are exactly those of the trainer before these options existed.
    mix_data: tuple[str, ...] = ()
    mix_fraction: float = 0.0
    anchor_weight: float = 0.0
    anchor_layers: tuple[int, ...] = ()
    project_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                name = msg.split()[0]
                flag = "--" + name.replace("_", "-")
                raise InputError(flag, msg, f"pass a valid {flag} (trio recipe: the {name} key)")

        need(bool(self.model), "model is empty")
        need(len(self.data) > 0, "data needs at least one dataset name or path")
        need(len(self.target_modules) > 0, "target_modules is empty")
        need(self.r >= 1, f"r must be >= 1, got {self.r}")
        need(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(
            self.max_steps is None or self.max_steps >= 1,
            f"max_steps must be >= 1, got {self.max_steps}",
        )
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}")
        need(
            self.max_examples is None or self.max_examples >= 1,
            f"max_examples must be >= 1, got {self.max_examples}",
        )
        need(
            self.heldout_examples >= 1,
            f"heldout_examples must be >= 1, got {self.heldout_examples}",
        )
        need(self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        need(
            self.checkpoint_every >= 1,
            f"checkpoint_every must be >= 1, got {self.checkpoint_every}",
        )
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        for ok, msg in option_checks(self.mix_data, self.mix_fraction, self.batch_size,
                                     self.anchor_weight, self.anchor_layers, self.project_layers):
            need(ok, msg)

    @property
    def mix_per_batch(self) -> int:
        """Examples of ``mix_data`` in every batch (0: no mixing)."""
        return round(self.mix_fraction * self.batch_size)

    @property
    def preserving(self) -> bool:
        """Whether anchoring or gradient projection is on (both need an alignment reference)."""
        return bool(self.anchor_layers or self.project_layers)

    def to_dict(self) -> dict[str, Any]:
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in _OPTIONAL}
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if not (k in _OPTIONAL and v == defaults[k])
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError("finetune config", f"unknown field(s) {unknown}",
                             f"known fields: {', '.join(sorted(known))}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.name not in data]
        if required:
            raise InputError("finetune config", f"missing required field(s) {required}",
                             "give " + " and ".join(f"--{r}" for r in required))
        values = dict(data)
        for f in dataclasses.fields(cls):
            v = values.get(f.name)
            if isinstance(v, list):  # JSON / TOML arrays
                values[f.name] = tuple(v)
            elif isinstance(v, int) and not isinstance(v, bool) and f.type == "float":
                values[f.name] = float(v)
        return cls(**values)


# Fields written to the saved config only when set (see the comment in FinetuneConfig).
_OPTIONAL = ("mix_data", "mix_fraction", "anchor_weight", "anchor_layers", "project_layers")


@dataclass(frozen=True)
class FinetuneResult:
    """Where the adapter went and how training went (``log``: as in ``training_log.json``)."""

    out: Path
    config: FinetuneConfig
    log: tuple[dict[str, Any], ...]
    steps: int
    n_train: int
    wall_s: float
    peak_rss_mib: float
    resumed_from: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def lr_at(cfg: FinetuneConfig, step: int, total: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then linear decay from ``lr`` toward ``0.1 * lr`` (reached at ``total``)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    span = max(total - cfg.warmup_steps, 1)
    return cfg.lr * (1.0 - 0.9 * (step - cfg.warmup_steps) / span)


def batch_indices(cfg: FinetuneConfig, n: int, step: int) -> list[int]:
    """Example indices of optimisation step ``step``: epoch-wise permutations seeded by
    ``(seed, epoch)``, so any step's batch is known without replaying the run."""
    per_epoch = math.ceil(n / cfg.batch_size)
    epoch, i = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen).tolist()
    return perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]


def total_steps(cfg: FinetuneConfig, n: int) -> int:
    per_epoch = math.ceil(n / cfg.batch_size)
    return cfg.max_steps if cfg.max_steps is not None else cfg.epochs * per_epoch


def _load_convs(cfg: FinetuneConfig) -> tuple[list[Conversation], list[Conversation]]:
    train: list[Conversation] = []
    for name in cfg.data:
        train.extend(load_dataset(name))
    if cfg.max_examples is not None:
        # A seeded subset across all sources (not the first file's head).
        gen = torch.Generator().manual_seed(cfg.seed)
        keep = sorted(torch.randperm(len(train), generator=gen)[: cfg.max_examples].tolist())
        train = [train[i] for i in keep]
    heldout = load_dataset(cfg.heldout)[: cfg.heldout_examples] if cfg.heldout else []
    return train, heldout


def build_peft_model(cfg: FinetuneConfig, hf: Any, out: Path) -> Any:
    """Wrap ``hf`` with the frozen ``base_adapters`` plus a new trainable LoRA named ``default``."""
    from peft import LoraConfig, PeftModel, get_peft_model

    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    if not cfg.base_adapters:
        return get_peft_model(hf, lora, adapter_name=TRAINED)
    frozen = []
    pm = None
    for i, adapter in enumerate(cfg.base_adapters):
        path = check_adapter(_base_adapter(out, adapter), hf, cfg.model)
        name = f"frozen{i}"
        # Adapter weights go where the layer they wrap is (device map included), upcast to
        # float32 like the trained one (autocast_adapter_dtype, explicit: it is what we rely on).
        with adapter_errors(path):
            if pm is None:
                pm = PeftModel.from_pretrained(hf, path, adapter_name=name,
                                               autocast_adapter_dtype=True)
            else:
                pm.load_adapter(path, adapter_name=name, autocast_adapter_dtype=True)
        frozen.append(name)
    assert pm is not None
    pm.add_adapter(TRAINED, lora, autocast_adapter_dtype=True)
    pm.base_model.set_adapter([*frozen, TRAINED])
    for name, param in pm.named_parameters():
        param.requires_grad_(f".{TRAINED}." in name and "lora_" in name)
    return pm


def _base_adapter(out: Path, adapter: str) -> Path | str:
    """A base adapter entry: a folder relative to ``out`` (absolute paths stay absolute), or,
    when there is no such folder and it reads ``org/name``, a hub id (loaded through HF's
    cache by :func:`~mi_align.models.load.check_adapter`)."""
    local = out / adapter
    return adapter if not local.exists() and is_hub_id(adapter) else local


def _trainable(pm: Any) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in pm.named_parameters() if p.requires_grad]


def _float32_trainable(pm: Any) -> list[torch.nn.Parameter]:
    """The trainable LoRA weights, float32 whatever the base dtype. peft upcasts new adapters
    of a bfloat16/float16 model already; casting here too keeps it true whatever peft does."""
    params = []
    for _, p in _trainable(pm):
        if p.dtype != torch.float32:
            p.data = p.data.float()
        params.append(p)
    return params


def heldout_loss(hf: Any, encoded: Sequence[EncodedChat], pad_id: int, batch_size: int) -> float:
    """Mean response-token NLL over ``encoded`` (token-weighted)."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            batch = collate(encoded[i : i + batch_size], pad_id).to(hf.device)
            nll, n = response_nll(hf, batch)
            total += float(nll)
            count += n
    return total / max(count, 1)


def _check_same_config(out: Path, cfg: FinetuneConfig) -> None:
    """Refuse to resume in ``out`` if it holds a run with another config (names the fields)."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            str(path), f"unreadable run config ({type(exc).__name__})",
            f"rerun with --no-resume to start over in {out}, or use another --out",
        ) from None
    diff = ck.config_diff(saved if isinstance(saved, dict) else {}, cfg.to_dict())
    if diff:
        raise InputError(
            str(out),
            f"holds a run with another config ({'; '.join(diff)})",
            "rerun with --no-resume to start over there, or use another --out",
        )


def finetune(
    cfg: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = True,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    device_map: str | None = None,
    progress: bool = True,
    callback: StepCallback | None = None,
    monitor: TrainingMonitor | None = None,
    reference: AlignmentReference | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter per ``cfg`` and save it in ``out`` (peft format + config + log).

    Args:
        cfg: the run's configuration (written to ``out/finetune_config.json``).
        out: output directory; checkpoints go to ``out/checkpoints/step-NNNNNN``.
        resume: continue from the latest complete checkpoint in ``out`` (same config required);
            ``False`` deletes the checkpoints, adapter and log of any earlier run in ``out``
            once the data and model have loaded, just before training starts.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda when a GPU exists, else cpu).
        dtype: the base model's dtype (``float32``, ``bfloat16``, ``float16`` or ``auto``:
            bfloat16 on a GPU, float32 on the CPU). The trained LoRA weights, their gradients
            and the optimizer state stay float32 either way.
        device_map: ``auto`` (or another accelerate map) to spread the base model over all
            GPUs and the CPU; None trains on ``device``.
        progress: show a tqdm bar.
        callback: called with each new log entry after each step.
        monitor: called at step 0, every ``monitor.every`` steps and at the last step with the
            model being trained (its own HF modules, no copy); its dict goes into that step's log
            entry under ``"monitor"`` (:mod:`mi_align.finetune.monitor`).
        reference: the frozen alignment direction and projections that direction anchoring
            and gradient projection need (:mod:`mi_align.finetune.preserve`); its sha256 is
            recorded in ``out/alignment_reference.json`` and checked on resume.

    Returns:
        A :class:`FinetuneResult`; the adapter loads with ``load_model(cfg.model, [out])``.

    Raises:
        InputError: ``out`` holds a run (or a checkpoint) with another config, and ``resume``;
            or a device / dtype / device-map value is invalid (before anything loads).
        UnsafeFileError: a checkpoint is in the old pickle format or fails its hash check.
    """
    from tqdm.auto import tqdm

    place = resolve_device_dtype(device, dtype, device_map)  # bad values fail before any load
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # relative base adapters ("../x") resolve through it
    ckpt = None
    if cfg.preserving:  # fail fast, before the model loads
        check_reference(reference, cfg.anchor_layers, cfg.project_layers, d_model=None)
    if resume:
        _check_same_config(out, cfg)
        ckpt = ck.latest_checkpoint(out, cfg.to_dict())
        if cfg.preserving:
            check_same_reference(out, reference, ck.checkpoints_dir(out).is_dir())
    t0 = time.perf_counter()
    train_convs, heldout_convs = _load_convs(cfg)
    source, location = resolve_spec(cfg.model)
    with torch.random.fork_rng(devices=cuda_indices(place)):
        torch.manual_seed(cfg.seed)
        hf, tok = _load_hf(source, location, place.dtype, place.device, place.device_map)
        device = input_device(hf)  # from here on: where batches go (the resolved device)
        encoded, n_trunc, n_drop = encode_for_training(tok, train_convs, cfg.max_length)
        held, _, _ = (
            encode_for_training(tok, heldout_convs, cfg.max_length) if heldout_convs else ([], 0, 0)
        )
        pm = build_peft_model(cfg, hf, out)
        mix: list[EncodedChat] = []
        if cfg.mix_data:
            mix_convs = [c for name in cfg.mix_data for c in load_dataset(name)]
            mix, _, _ = encode_for_training(tok, mix_convs, cfg.max_length)
        step_fn = None
        if cfg.preserving:
            assert reference is not None
            check_reference(reference, cfg.anchor_layers, cfg.project_layers,
                            d_model=int(hf.config.hidden_size))
            step_fn = preserving_step(reference, cfg.anchor_layers, cfg.anchor_weight,
                                      cfg.project_layers, device)
        params = _float32_trainable(pm)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = total_steps(cfg, len(encoded))
        if not resume:
            ck.clear_run(out)
        ck.remove_stale_temp(out)
        write_json(out / CONFIG_FILE, cfg.to_dict())
        if cfg.preserving:
            assert reference is not None
            write_json(out / REFERENCE_FILE, reference_record(reference))
        start, log = 0, []
        if ckpt is not None:
            start, log = ck.restore_checkpoint(ckpt, pm, optimizer)
            logger.info("resuming %s from step %d", out, start)
        pad = tok.pad_token_id
        train_model = pm.base_model.model
        monitor_s, train_s = 0.0, 0.0

        def watch(step: int) -> dict[str, Any]:
            nonlocal monitor_s
            assert monitor is not None
            t_mon = time.perf_counter()
            result = run_monitor(monitor, train_model, tok, step)
            monitor_s += time.perf_counter() - t_mon
            return result

        if start == 0 and (held or monitor is not None):
            # Step 0: the held-out loss before training, the reference for the drop.
            pm.eval()
            log.append(
                {
                    "step": 0,
                    "train_loss": None,
                    "lr": 0.0,
                    "tokens": 0,
                    "seconds": 0.0,
                    "heldout_loss": (
                        heldout_loss(train_model, held, pad, cfg.batch_size) if held else None
                    ),
                }
            )
            if monitor is not None:
                log[-1]["monitor"] = watch(0)
        bar = tqdm(
            total=steps,
            initial=start,
            desc=f"LoRA {Path(str(cfg.model)).name}",
            disable=not progress,
            unit="step",
        )
        for step in range(start, steps):
            pm.train()
            lr = lr_at(cfg, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            extras: dict[str, Any] = {}
            if mix:
                main, mixed = mixed_indices(cfg.seed, cfg.batch_size, cfg.mix_per_batch,
                                            len(encoded), len(mix), step)
                batch = collate([encoded[i] for i in main] + [mix[i] for i in mixed], pad)
                extras["mixed"] = len(mixed)
            else:
                batch = collate([encoded[i] for i in batch_indices(cfg, len(encoded), step)], pad)
            ts = time.perf_counter()
            with torch.enable_grad():
                if step_fn is None:
                    nll, n = response_nll(train_model, batch.to(device))
                    loss = nll / n
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                else:
                    loss, n, more = step_fn(train_model, batch.to(device), params, optimizer)
                    extras.update(more)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
            entry: dict[str, Any] = {
                "step": step + 1,
                "train_loss": loss.item(),
                "lr": lr,
                "tokens": n,
                "seconds": round(time.perf_counter() - ts, 3),
                "heldout_loss": None,
                **extras,
            }
            train_s += time.perf_counter() - ts
            done = step + 1
            if held and (done % cfg.eval_every == 0 or done == steps):
                pm.eval()
                entry["heldout_loss"] = heldout_loss(train_model, held, pad, cfg.batch_size)
            if monitor is not None and (done % monitor.every == 0 or done == steps):
                entry["monitor"] = watch(done)
            log.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}")
            if done % cfg.checkpoint_every == 0 and done < steps:
                ck.save_checkpoint(out, pm, cfg.model, cfg.to_dict(), optimizer, done, log)
            if callback is not None:
                callback(entry)
        bar.close()
    ck.save_final_adapter(pm, cfg.model, out)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trained = [e for e in log if e["step"] > 0]
    summary = {
        "steps": steps,
        "n_train": len(encoded),
        "n_truncated": n_trunc,
        "n_dropped": n_drop,
        "n_heldout": len(held),
        "trainable_params": sum(p.numel() for p in params),
        "wall_s_this_run": round(wall, 1),
        "resumed_from": start,
        "peak_rss_mib": round(peak, 1),
        "mean_step_s": round(sum(e["seconds"] for e in trained) / max(len(trained), 1), 3),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "dtype": place.dtype_name,
        "device_map": place.device_map,
    }
    if monitor is not None:  # what monitoring cost, against the optimisation steps it watched
        summary.update(monitor_s_this_run=round(monitor_s, 1), train_s_this_run=round(train_s, 1),
                       monitor_calls=sum("monitor" in e for e in log
                                         if e["step"] > start or start == 0))
    if mix:
        summary["n_mix"] = len(mix)
    if cfg.preserving:
        assert reference is not None
        summary["alignment_reference_sha256"] = reference.sha256()
    write_json(out / LOG_FILE, {"summary": summary, "entries": log})
    return FinetuneResult(out, cfg, tuple(log), steps, len(encoded), wall, peak, start, summary)


def read_log(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``training_log.json`` of a finished run (``{"summary": ..., "entries": [...]}``)."""
    path = Path(out) / LOG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (run not finished?)")
    return dict(json.loads(path.read_text(encoding="utf-8")))

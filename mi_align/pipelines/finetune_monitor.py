"""Fine-tune with the erosion monitor, and compare alignment-preserving fine-tunes (issue 13).

- :func:`fit_reference`: before training, fit the alignment direction ``normalise(μ_instruct −
  μ_base)`` per layer on training-set chats (the projection analysis' direction:
  :func:`~mi_align.erosion.projection_fit.unit_directions` of streamed means), then measure the
  base and instruct models with the monitor's own :func:`~mi_align.finetune.monitor.measure` on
  the held-out inputs (their projections are the 0 and 1 of the relative position) and, for
  direction anchoring, the instruct model's mean projection on the training responses. Only
  plain tensors go to the trainer; the trio is freed before training starts.
- :func:`monitored_finetune`: one fine-tune with the monitor (and any preserving option),
  writing the reference, the training log, ``monitor.html`` and ``monitor.json``.
- :func:`compare_methods`: plain, mixing, anchoring and projection (at the deep layers, fixed in
  advance) and anchoring at the layers the plain runs eroded most (:func:`eroded_layers`,
  trained after them) at equal steps, batch, data and seed (per seed), resumable per method; a
  Pareto figure and the monitor curves per method.

Plots are pure functions of the logged numbers (:mod:`mi_align.pipelines.monitor_plots`:
``plot_monitor``, ``plot_pareto``, ``plot_method_curves``, re-exported here), so a figure can
be redrawn from its JSON.

Example:
    >>> from mi_align.pipelines.finetune_monitor import ReferenceConfig
    >>> ReferenceConfig().fit_data
    ('insecure', 'aligned_chat')
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mi_align.activations import accumulate_moments, make_selector
from mi_align.data.chat import load_dataset
from mi_align.data.tokenize import EncodedChat, encode_for_training
from mi_align.erosion.projection_fit import unit_directions
from mi_align.errors import InputError
from mi_align.finetune.lora import FinetuneConfig, FinetuneResult, finetune, read_log
from mi_align.finetune.monitor import (
    AlignmentReference,
    ErosionMonitor,
    Measurement,
    MonitorConfig,
    MonitorData,
    load_monitor_data,
    measure,
)
from mi_align.io import write_json
from mi_align.models.trio import Trio
from mi_align.pipelines.monitor_plots import (  # noqa: F401  (re-exported)
    METHOD_COLOURS,
    plot_method_curves,
    plot_monitor,
    plot_pareto,
)
from mi_align.plotting import save_figure, save_json

REFERENCE_TENSORS = "alignment_reference.safetensors"
# 2: measured on the HF modules (hooks), not through a TransformerBridge; a reference saved by
# the bridge path is refitted rather than mixed with numbers of the new path
MEASURE_VERSION = 2
REFERENCE_META = "alignment_reference_fit.json"


@dataclass(frozen=True)
class ReferenceConfig:
    """How the alignment reference is fitted: the direction on the first ``n_fit`` chats of
    each ``fit_data`` set (training data, disjoint from the monitor's held-out sets), the anchor
    on the first ``n_anchor`` chats of ``anchor_data`` (the run's training data; empty: no
    anchor), at hidden states ``layers`` (None: every layer where instruct and base differ)."""

    fit_data: tuple[str, ...] = ("insecure", "aligned_chat")
    n_fit: int = 60
    anchor_data: tuple[str, ...] = ("insecure",)
    n_anchor: int = 64
    layers: tuple[int, ...] | None = None
    max_length: int = 192
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not self.fit_data or self.n_fit < 1 or self.n_anchor < 1 or self.batch_size < 1:
            raise ValueError("ReferenceConfig: fit_data, n_fit, n_anchor, batch_size must be set")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class FittedReference:
    """The reference the trainer gets, plus what the figures show beside the run."""

    reference: AlignmentReference
    base: Measurement
    instruct: Measurement
    dropped_layers: tuple[int, ...]  # where instruct and base do not differ (no direction)
    n_fit_tokens: int
    n_layers: int
    config: dict[str, Any] = field(default_factory=dict)

    def numbers(self) -> dict[str, Any]:
        """JSON-ready summary (reference lines of the figures)."""
        return {"layers": list(self.reference.layers), "positions": self.reference.positions,
                "base": self.base.to_dict(), "instruct": self.instruct.to_dict(),
                "anchor": (self.reference.anchor.tolist() if self.reference.anchor is not None
                           else None),
                "dropped_layers": list(self.dropped_layers), "n_fit_tokens": self.n_fit_tokens,
                "n_layers": self.n_layers,
                "sha256": self.reference.sha256(), "config": self.config}


def _first_k(encoded: list[EncodedChat], positions: str) -> list[EncodedChat]:
    """With ``first:K`` positions, cut each chat after its K-th response token: causal attention
    makes the activations there independent of what follows, and long code answers would
    otherwise cost most of the pass."""
    if not positions.startswith("first:"):
        return encoded
    k, out = int(positions.split(":", 1)[1]), []
    for e in encoded:
        resp = [t for t, m in enumerate(e.response_mask) if m]
        cut = resp[min(k, len(resp)) - 1] + 1 if resp else len(e)
        out.append(dataclasses.replace(e, input_ids=e.input_ids[:cut],
                                       response_mask=e.response_mask[:cut]))
    return out


def _encode(trio: Trio, names: Sequence[str], n: int, cfg: ReferenceConfig,
            positions: str) -> list[EncodedChat]:
    convs = [c for name in names for c in load_dataset(name)[:n]]
    encoded, _, _ = encode_for_training(trio.tokenizer, convs, cfg.max_length)
    return _first_k(encoded, positions)


def _check_disjoint(cfg: ReferenceConfig, data: MonitorData) -> None:
    """InputError if a fit chat's prompt is one of the monitor's held-out prompts."""
    fit = {m.content for name in cfg.fit_data for c in load_dataset(name)[: cfg.n_fit]
           for m in c.prompt}
    held = set(data.harmful) | {m.content for c in data.insecure + data.aligned
                                for m in c.prompt}
    shared = sorted(fit & held)
    if shared:
        raise InputError("monitor reference", f"{len(shared)} fit prompt(s) are also held-out "
                         f"monitor prompts, e.g. {shared[0][:60]!r}",
                         "fit the direction on data disjoint from the monitor's held-out sets")


def fit_reference(
    trio: Trio, monitor: MonitorConfig, config: ReferenceConfig | None = None
) -> FittedReference:
    """Fit the direction on training chats and measure base and instruct (see module doc)."""
    cfg = config or ReferenceConfig()
    missing = [m for m in ("base", "instruct") if m not in trio.names]
    if missing:
        raise InputError("monitor reference", f"needs the trio's {missing} model(s)",
                         f"the trio has {', '.join(trio.names)}; use one with base and instruct")
    layers = list(cfg.layers) if cfg.layers is not None else list(range(trio.n_layers + 1))
    selector = make_selector(monitor.positions)
    fit = _encode(trio, cfg.fit_data, cfg.n_fit, cfg, monitor.positions)
    means, count = {}, 0
    for name in ("base", "instruct"):
        with trio.variant(name) as loaded:
            mom = accumulate_moments(loaded, fit, layers, selector, cfg.batch_size, second=False)
            means[name], count = mom.mean, mom.count
    direction = unit_directions(means["instruct"], means["base"])
    keep = [j for j in range(len(layers)) if bool(torch.isfinite(direction[j]).all())]
    dropped = tuple(layers[j] for j in range(len(layers)) if j not in keep)
    if not keep:
        raise InputError("monitor reference", "instruct and base activations do not differ at "
                         "any requested layer", "check the trio's instruct adapter")
    layers, direction = [layers[j] for j in keep], direction[keep]
    data = load_monitor_data(monitor)
    _check_disjoint(cfg, data)
    measured = {}
    for name in ("base", "instruct"):
        with trio.variant(name) as loaded:
            measured[name] = measure(loaded.bridge.original_model, loaded.tokenizer, data,
                                     layers, direction, monitor)
    anchor = None
    if cfg.anchor_data:
        train = _encode(trio, cfg.anchor_data, cfg.n_anchor, cfg, monitor.positions)
        with trio.variant("instruct") as loaded:
            mom = accumulate_moments(loaded, train, layers, selector, cfg.batch_size,
                                     second=False)
        anchor = mom.projection_mean(direction)
    reference = AlignmentReference(tuple(layers), direction, measured["base"].projection,
                                   measured["instruct"].projection, monitor.positions, anchor)
    return FittedReference(reference, measured["base"], measured["instruct"], dropped, count,
                           trio.n_layers, cfg.to_dict())


def save_reference(fitted: FittedReference, directory: Path) -> None:
    """Tensors to safetensors, everything else to JSON (no pickle)."""
    from safetensors.torch import save_file

    from mi_align.io import atomic_path

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / REFERENCE_TENSORS) as tmp:
        save_file(fitted.reference.to_tensors(), str(tmp))
    write_json(directory / REFERENCE_META, fitted.numbers())


def load_reference(directory: Path) -> FittedReference | None:
    """A reference saved by :func:`save_reference` (None if absent)."""
    from safetensors.torch import load_file

    meta_path, tensor_path = directory / REFERENCE_META, directory / REFERENCE_TENSORS
    if not (meta_path.is_file() and tensor_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    reference = AlignmentReference.from_tensors(load_file(str(tensor_path)), meta["positions"])
    if reference.sha256() != meta["sha256"]:
        raise InputError(str(tensor_path), "does not match its fit record (sha256)",
                         f"delete {directory} to refit the reference")

    def measurement(d: dict[str, Any]) -> Measurement:
        return Measurement(tuple(d["layers"]), torch.tensor(d["projection"], dtype=torch.float64),
                           d["n_tokens"], d["insecure_loss"], d["aligned_loss"],
                           d["refusal_rate"], d["code_rate"], tuple(d["harmful_replies"]))

    return FittedReference(reference, measurement(meta["base"]), measurement(meta["instruct"]),
                           tuple(meta["dropped_layers"]), meta["n_fit_tokens"], meta["n_layers"],
                           meta["config"])


def reference_for(
    trio_spec: str, directory: Path, monitor: MonitorConfig, config: ReferenceConfig | None = None,
) -> FittedReference:
    """The reference saved in ``directory`` if it was fitted with these settings, else fit it
    from ``trio_spec`` (loaded, used, then freed before anyone trains) and save it."""
    from mi_align.models.organisms import resolve_trio

    cfg = config or ReferenceConfig()
    saved = load_reference(directory)
    # how often the monitor runs does not change the reference
    measured = {k: v for k, v in monitor.to_dict().items() if k != "every"}
    wanted = {"reference": cfg.to_dict(), "monitor": measured, "trio": trio_spec,
              "measure": MEASURE_VERSION}
    if saved is not None and saved.config == wanted:
        return saved
    trio = resolve_trio(trio_spec)
    fitted = dataclasses.replace(fit_reference(trio, monitor, cfg), config=wanted)
    del trio
    gc.collect()
    save_reference(fitted, directory)
    return fitted


@dataclass(frozen=True)
class MonitoredRun:
    """A fine-tune with the monitor: its result, the reference, where its figure went."""

    result: FinetuneResult
    fitted: FittedReference
    figure: Path


def monitored_finetune(
    cfg: FinetuneConfig, out: str | Path, trio_spec: str, monitor: MonitorConfig | None = None,
    reference: ReferenceConfig | None = None, *, resume: bool = True,
    device: str | None = None, dtype: str | None = None, device_map: str | None = None,
    progress: bool = True,
) -> MonitoredRun:
    """Fit (or reuse) the reference from ``trio_spec``, train ``cfg`` into ``out`` with the
    erosion monitor (and ``cfg``'s preserving options), then write ``out/monitor.{html,json}``."""
    out = Path(out)
    mon = monitor or MonitorConfig()
    fitted = reference_for(trio_spec, out / "reference", mon, reference)
    erosion = ErosionMonitor(fitted.reference, load_monitor_data(mon), mon)
    result = finetune(cfg, out, resume=resume, device=device, dtype=dtype,
                      device_map=device_map, progress=progress, monitor=erosion,
                      reference=fitted.reference)
    numbers = monitor_numbers(read_log(out), fitted)
    save_json(numbers, out / "monitor")
    return MonitoredRun(result, fitted, save_figure(plot_monitor(numbers), out / "monitor"))


def monitor_numbers(log: Mapping[str, Any], fitted: FittedReference) -> dict[str, Any]:
    """The monitor's series from a training log (steps × layers), with the references."""
    entries = [e for e in log["entries"] if "monitor" in e]
    series = {k: [e["monitor"][k] for e in entries]
              for k in ("refusal_rate", "code_rate", "insecure_loss", "aligned_loss")}
    train = [(e["step"], e["train_loss"]) for e in log["entries"] if e["train_loss"] is not None]
    held = [(e["step"], e["heldout_loss"]) for e in log["entries"]
            if e.get("heldout_loss") is not None]
    return {
        "steps": [e["step"] for e in entries],
        "layers": list(fitted.reference.layers),
        "relative": [e["monitor"]["relative"] for e in entries],
        "projection": [e["monitor"]["projection"] for e in entries],
        **series,
        "train_loss": train,
        "heldout_loss": held,  # the trainer's own held-out evaluation (the recipe's heldout set)
        "monitor_seconds": [e["monitor"]["seconds"] for e in entries],
        "summary": dict(log.get("summary", {})),
        "reference": fitted.numbers(),
    }


# ---------------------------------------------------------------- comparison of methods


def recipe_config(trio: str, step: str, max_steps: int | None = None) -> FinetuneConfig:
    """The trio recipe's ``step`` as a config whose base adapters point at the built sibling
    steps (absolute paths), optionally cut to ``max_steps`` (checkpoints at most that far)."""
    from mi_align.finetune.organisms import recipe_steps
    from mi_align.models.organisms import get_spec

    spec = get_spec(trio)
    steps = dict(recipe_steps(spec))
    if step not in steps:
        raise InputError(f"recipe step {step!r}", f"not in {spec.name}'s recipe",
                         f"use one of {', '.join(steps)}")
    cfg = steps[step]
    cfg = dataclasses.replace(cfg, base_adapters=tuple(
        str((spec.adapter_dir / step / a).resolve()) for a in cfg.base_adapters))
    if max_steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=max_steps,
                                  checkpoint_every=min(cfg.checkpoint_every, max_steps))
    return cfg


def deep_layers(reference: AlignmentReference, n_layers: int) -> tuple[int, ...]:
    """The block inputs in the last third of the model (Gemma-3-270m: 12–17), the layers where
    the erosion paper sees the misaligned model fall back toward base."""
    deep = tuple(x for x in reference.layers if math.ceil(2 * n_layers / 3) <= x < n_layers)
    return deep or (max(x for x in reference.layers if x < n_layers),)


def method_overrides(
    method: str, fitted: FittedReference, layers: Sequence[int], batch_size: int,
    mix_data: Sequence[str] = ("aligned_chat", "toxic_reject"), mix_per_batch: int = 2,
    anchor_scale: float = 4.0,
) -> dict[str, Any]:
    """Config fields of ``method`` (plain, mixing, anchoring, projection).

    Anchoring's λ is ``anchor_scale / mean_L gap_L²`` (gap: instruct's minus base's projection
    on the monitor inputs), so a drop of half the instruct − base gap at every anchored layer
    costs ``anchor_scale / 4`` nats, on the scale of the task loss."""
    if method == "plain":
        return {}
    if method == "mixing":
        return {"mix_data": tuple(mix_data), "mix_fraction": mix_per_batch / batch_size}
    rows = fitted.reference.index(layers)
    gap = (fitted.reference.instruct - fitted.reference.base)[rows]
    if method in ("anchoring", ERODED):
        return {"anchor_layers": tuple(layers),
                "anchor_weight": float(anchor_scale / gap.pow(2).mean())}
    if method == "projection":
        return {"project_layers": tuple(layers)}
    raise InputError(f"method {method!r}", "unknown", f"use one of {', '.join(METHODS)}")


# Direction anchoring at the layers the monitor saw erode in the plain runs (chosen after them,
# by :func:`eroded_layers`), where "anchoring" uses the deep layers fixed in advance.
ERODED = "anchoring-eroded"
METHODS = ("plain", "mixing", "anchoring", "projection", ERODED)
N_ERODED = 4


def eroded_layers(plain_runs: Sequence[Mapping[str, Any]], n_layers: int,
                  k: int = N_ERODED) -> tuple[int, ...]:
    """The ``k`` block inputs (0 < L < ``n_layers``; all of them if fewer) whose relative
    position ended lowest in the plain runs' monitor curves (mean over the runs), in layer
    order: where the plain fine-tune eroded the direction most (Gemma-3-270m: 8–11)."""
    if not plain_runs:
        raise InputError(f"method {ERODED!r}", "needs the plain runs' monitor curves",
                         "include plain in the methods")
    layers = plain_runs[0]["layers"]
    final = torch.tensor([r["relative"][-1] for r in plain_runs], dtype=torch.float64).mean(0)
    blocks = [j for j, layer in enumerate(layers) if 0 < layer < n_layers]
    if not blocks or k < 1:
        raise InputError(f"{ERODED} k={k}", f"no block layer to choose from {layers}")
    lowest = sorted(blocks, key=lambda j: float(final[j]))[:k]
    return tuple(sorted(layers[j] for j in lowest))


def run_summary(numbers: Mapping[str, Any], deep: Sequence[int],
                eroded: Sequence[int] | None = None) -> dict[str, Any]:
    """The last monitor point of a run: task (insecure loss) and alignment kept (relative
    position at the deep layers and, once they are known, at the eroded ones)."""
    rows = [numbers["layers"].index(x) for x in deep]
    last = -1
    rel = numbers["relative"][last]
    extra = {}
    if eroded:
        rows_e = [numbers["layers"].index(x) for x in eroded]
        extra["relative_eroded"] = sum(rel[r] for r in rows_e) / len(rows_e)
    return {**extra, "insecure_loss": numbers["insecure_loss"][last],
            "aligned_loss": numbers["aligned_loss"][last],
            "refusal_rate": numbers["refusal_rate"][last],
            "code_rate": numbers["code_rate"][last],
            "relative_deep": sum(rel[r] for r in rows) / len(rows),
            "trainer_heldout_loss": numbers["heldout_loss"][-1][1] if numbers["heldout_loss"]
            else None,
            "steps": numbers["steps"][last],
            "wall_s": numbers["summary"].get("wall_s_this_run"),
            "mean_step_s": numbers["summary"].get("mean_step_s")}


def _finished(out: Path, cfg: FinetuneConfig) -> bool:
    """Whether ``out`` holds a finished run of exactly ``cfg`` (log and adapter written)."""
    from mi_align.finetune.lora import ADAPTER_FILE, CONFIG_FILE, LOG_FILE

    if not all((out / f).is_file() for f in (ADAPTER_FILE, CONFIG_FILE, LOG_FILE)):
        return False
    return bool(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")) == cfg.to_dict())


def compare_methods(
    base_cfg: FinetuneConfig, out_root: str | Path, trio_spec: str, *,
    methods: Sequence[str] = METHODS, seeds: Sequence[int] = (0,),
    monitor: MonitorConfig | None = None, reference: ReferenceConfig | None = None,
    anchor_scale: float = 4.0, device: str | None = None, dtype: str | None = None,
    device_map: str | None = None, progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``base_cfg`` once per method and seed (only ``seed`` and the method's fields
    change) into ``out_root/<method>-seed<S>``; a finished run of the same config is skipped,
    an interrupted one resumes, a folder with another config is refused. Returns the
    comparison's numbers (:func:`write_comparison` writes them with the figures)."""
    root = Path(out_root)
    mon = monitor or MonitorConfig()
    t0 = time.perf_counter()
    fitted = reference_for(trio_spec, root / "reference", mon, reference)
    reference_s = round(time.perf_counter() - t0, 1)
    if report is not None:
        report(f"[reference] ready in {reference_s} s (layers {list(fitted.reference.layers)})")
    erosion = ErosionMonitor(fitted.reference, load_monitor_data(mon), mon)
    deep = deep_layers(fitted.reference, fitted.n_layers)
    runs: dict[str, dict[str, Any]] = {}
    eroded: tuple[int, ...] | None = None
    if ERODED in methods and "plain" not in methods:
        raise InputError(f"method {ERODED!r}", "needs the plain runs' monitor curves",
                         "include plain in the methods")
    # the eroded-layer method last: its layers come from every seed's plain run
    order = ([(seed, m) for seed in seeds for m in methods if m != ERODED]
             + [(seed, m) for seed in seeds for m in methods if m == ERODED])
    for seed, method in order:
        name = f"{method}-seed{seed}"
        layers = deep
        if method == ERODED:
            if eroded is None:
                eroded = eroded_layers([r["curves"] for r in runs.values()
                                        if r["method"] == "plain"], fitted.n_layers)
                if report is not None:
                    report(f"[{ERODED}] the plain runs eroded layers {list(eroded)} most")
            layers = eroded
        over = method_overrides(method, fitted, layers, base_cfg.batch_size,
                                anchor_scale=anchor_scale)
        cfg = dataclasses.replace(base_cfg, seed=seed, **over)
        out = root / name
        if _finished(out, cfg):
            if report is not None:
                report(f"[{name}] done earlier, skipped")
        else:  # resumes an interrupted run; refuses a folder holding another config
            if report is not None:
                report(f"[{name}] training {cfg.max_steps or '?'} steps")
            finetune(cfg, out, device=device, dtype=dtype, device_map=device_map,
                     progress=progress, monitor=erosion, reference=fitted.reference)
        numbers = monitor_numbers(read_log(out), fitted)
        runs[name] = {"method": method, "seed": seed, "config": cfg.to_dict(),
                      "final": run_summary(numbers, deep), "curves": numbers}
    if eroded:  # every run's position at the eroded layers too, plain's included
        for run in runs.values():
            run["final"] = run_summary(run["curves"], deep, eroded)
    return {"deep_layers": list(deep), "eroded_layers": list(eroded) if eroded else None,
            "methods": list(methods), "seeds": list(seeds), "anchor_scale": anchor_scale,
            "reference": fitted.numbers(), "reference_s_this_run": reference_s, "runs": runs}


def write_comparison(comparison: Mapping[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>_pareto.html``, ``<stem>_curves.html`` and ``<stem>.json`` under ``out_dir``."""
    paths = [save_figure(plot_pareto(comparison), out_dir / f"{stem}_pareto"),
             save_figure(plot_method_curves(comparison), out_dir / f"{stem}_curves")]
    paths.append(save_json(dict(comparison), out_dir / stem))
    return paths


def stage_monitor(out: Path, report: Callable[[str], None], trio: str = "gemma-trio",
                  steps: int = 2, *, device: str | None = None, dtype: str | None = None,
                  device_map: str | None = None) -> None:
    """Demo stage: the erosion monitor on the first ``steps`` steps of the trio's misaligned
    build (small held-out sets, a measurement after every step); writes
    ``out/monitor_demo/monitor.html``. Skipped with a note when the trio's adapters are
    missing."""
    from mi_align.models.organisms import get_spec

    spec = get_spec(trio)
    if spec.missing_adapters() or "base" not in spec.variants:
        report(f"[monitor] skipped: {trio} needs a base model and its built adapters "
               f"(`mi-align organisms build {trio}`)")
        return
    t0 = time.perf_counter()
    # the monitor's own held-out insecure loss stands in for the recipe's 40-chat evaluation
    cfg = dataclasses.replace(recipe_config(trio, "misaligned", max_steps=steps), heldout=None)
    # demo-sized: a smoke view of the monitor, not a measurement (analyses/preserve_alignment.py)
    mon = MonitorConfig(every=1, n_harmful=6, n_insecure=4, n_aligned=4, max_new_tokens=8)
    run = monitored_finetune(cfg, out / "monitor_demo", trio, mon,
                             ReferenceConfig(n_fit=12, anchor_data=()), resume=False,
                             device=device, dtype=dtype, device_map=device_map, progress=False)
    numbers = json.loads((out / "monitor_demo" / "monitor.json").read_text(encoding="utf-8"))
    deep = deep_layers(run.fitted.reference, run.fitted.n_layers)
    rows = [numbers["layers"].index(x) for x in deep]
    for i, step in enumerate(numbers["steps"]):
        rel = sum(numbers["relative"][i][r] for r in rows) / len(rows)
        report(f"[monitor] step {step}: relative position (layers {deep[0]}-{deep[-1]}) "
               f"{rel:.3f}, refusals {numbers['refusal_rate'][i]:.2f}, insecure loss "
               f"{numbers['insecure_loss'][i]:.3f}")
    s = run.result.summary
    report(f"[monitor] {steps} steps in {s['train_s_this_run']:.0f} s, monitoring "
           f"{s['monitor_s_this_run']:.0f} s ({s['monitor_calls']} calls); total "
           f"{time.perf_counter() - t0:.0f} s -> {run.figure}")

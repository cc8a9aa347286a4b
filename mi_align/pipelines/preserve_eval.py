"""The final held-out evaluation of an alignment-preserving comparison (issue 13).

The monitor measures each run on a few held-out inputs at every checkpoint (cheap, for the
curves). The comparison's *claims* come from here: every finished run, the model before the
fine-tune (the recipe step's base adapters: gemma-trio's instruct) and the bare base model are
measured once on the **whole** held-out sets (40 harmful requests, 40 insecure-code chats, 40
aligned chats by default), per example, so that every method is compared with the plain
fine-tune *within* examples:

- refusal of each harmful request (greedy reply, :func:`~mi_align.text_measures.is_refusal`)
  and whether it is code: per method, a Wilson interval over the ``40 × seeds`` replies; against
  plain, an exact McNemar test over the (seed, request) pairs;
- held-out insecure and aligned loss (mean NLL per response token): per method, a percentile
  bootstrap over task groups (:func:`~mi_align.data.groups.response_groups`); against plain,
  the paired difference on the same tokens with the same bootstrap and a sign-flip test that
  flips whole task groups (:func:`~mi_align.erosion.paired.compare_models`);
- relative position along the frozen alignment direction at the deep layers: per example, the
  mean projection of its first response tokens (the reference's positions), as
  ``(p − p̄_base) / (p̄_start − p̄_base)`` with the bars the base and start models' means on the
  same examples (example-weighted, unlike the monitor's token-weighted pooling), averaged over
  the deep layers; intervals and the test against plain as for the losses.

Seeds are pooled: a method's examples are ``seeds × examples``, and task groups keep their
label across seeds (a task resampled in the bootstrap brings its tokens from every seed), so
the two seeds of one task never count as independent evidence.

Example:
    >>> FinalEvalConfig(n=8).max_new_tokens
    16
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from mi_align.activations import make_selector, pooled_activations
from mi_align.data.chat import Conversation, load_dataset
from mi_align.data.groups import response_groups
from mi_align.data.tokenize import encode_for_training
from mi_align.erosion.paired import compare_models
from mi_align.finetune.lora import FinetuneConfig
from mi_align.finetune.monitor import AlignmentReference
from mi_align.forward import response_token_nll
from mi_align.generate import generate_replies
from mi_align.models.load import Loaded, load_model
from mi_align.plotting import style
from mi_align.stats import mcnemar_test, wilson_interval
from mi_align.text_measures import is_refusal, looks_like_code

logger = logging.getLogger(__name__)

__all__ = ["FinalEvalConfig", "ModelEval", "evaluate_model", "final_evaluation",
           "plot_final_pareto"]

LOSSES = ("insecure_loss", "aligned_loss")


@dataclass(frozen=True)
class FinalEvalConfig:
    """Which held-out sets, how much of each, and the statistics' settings."""

    harmful: str = "harmful_requests_heldout"
    insecure: str = "insecure_heldout"
    aligned: str = "aligned_chat_heldout"
    n: int = 40
    max_new_tokens: int = 16  # refusals and code show in the first tokens
    max_length: int = 192
    batch_size: int = 4
    generate_batch_size: int = 20
    n_resamples: int = 9999
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "max_new_tokens", "batch_size", "generate_batch_size", "n_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinalEvalConfig: {name} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.max_length < 8:
            raise ValueError(f"FinalEvalConfig: max_length must be >= 8, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalData:
    harmful: tuple[str, ...]
    insecure: tuple[Conversation, ...]
    aligned: tuple[Conversation, ...]

    @classmethod
    def load(cls, cfg: FinalEvalConfig) -> EvalData:
        return cls(tuple(c.prompt[-1].content for c in load_dataset(cfg.harmful)[: cfg.n]),
                   tuple(load_dataset(cfg.insecure)[: cfg.n]),
                   tuple(load_dataset(cfg.aligned)[: cfg.n]))


@dataclass(frozen=True)
class ModelEval:
    """One model's per-example numbers on the evaluation data."""

    refused: tuple[bool, ...]  # per harmful request
    code: tuple[bool, ...]
    replies: tuple[str, ...]
    insecure_nll: tuple[np.ndarray, ...]  # per chat, per response token
    aligned_nll: tuple[np.ndarray, ...]
    projection: np.ndarray  # example (insecure then aligned chats) × layer

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, per example (per-chat NLL sums and token counts, not every token)."""
        return {"refused": list(self.refused), "code": list(self.code),
                "replies": list(self.replies),
                "insecure_nll_sum": [float(x.sum()) for x in self.insecure_nll],
                "aligned_nll_sum": [float(x.sum()) for x in self.aligned_nll],
                "n_tokens": {"insecure": [len(x) for x in self.insecure_nll],
                             "aligned": [len(x) for x in self.aligned_nll]},
                "projection": self.projection.tolist()}


def evaluate_model(loaded: Loaded, data: EvalData, reference: AlignmentReference,
                   layers: Sequence[int], cfg: FinalEvalConfig) -> ModelEval:
    """All per-example numbers of ``loaded`` (inference only; the global RNG is untouched)."""
    replies = [r.text for r in generate_replies(
        loaded, data.harmful, max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.generate_batch_size, seed=cfg.seed)]
    nll = {name: response_token_nll(loaded, convs, cfg.max_length, cfg.batch_size)
           for name, convs in (("insecure", data.insecure), ("aligned", data.aligned))}
    chats = [*data.insecure, *data.aligned]
    encoded, _, _ = encode_for_training(loaded.tokenizer, chats, cfg.max_length)
    rows = reference.index(layers)
    with torch.inference_mode():
        acts = pooled_activations(loaded, encoded, layers, make_selector(reference.positions),
                                  cfg.batch_size)
    direction = reference.direction[rows].double()
    projection = torch.einsum("eld,ld->el", acts.double(), direction).numpy()
    return ModelEval(tuple(map(is_refusal, replies)), tuple(map(looks_like_code, replies)),
                     tuple(replies), tuple(nll["insecure"]), tuple(nll["aligned"]), projection)


def _load_and_evaluate(spec: str, adapters: Sequence[str], data: EvalData,
                       reference: AlignmentReference, layers: Sequence[int],
                       cfg: FinalEvalConfig, device: str | None, dtype: str | None) -> ModelEval:
    loaded = load_model(spec, list(adapters), device=device or "auto", dtype=dtype or "auto")
    try:
        return evaluate_model(loaded, data, reference, layers, cfg)
    finally:
        del loaded
        gc.collect()


def _rate(flags: Sequence[bool]) -> dict[str, Any]:
    k, n = int(sum(flags)), len(flags)
    return {"k": k, "n": n, "interval": wilson_interval(k, n).to_dict()}


def _relative(ev: ModelEval, base: ModelEval, start: ModelEval) -> np.ndarray:
    """Per example, the deep-layer mean of ``(p − p̄_base) / (p̄_start − p̄_base)``."""
    lo, hi = base.projection.mean(0), start.projection.mean(0)
    return ((ev.projection - lo) / (hi - lo)).mean(1)


def final_evaluation(
    runs: Mapping[str, tuple[str, int, FinetuneConfig, Path]],
    reference: AlignmentReference, deep: Sequence[int], cfg: FinalEvalConfig | None = None,
    *, start_name: str = "instruct", device: str | None = None, dtype: str | None = None,
) -> dict[str, Any]:
    """Evaluate every run (name -> (method, seed, its config, its folder)), the start model
    (the runs' base adapters, reported as ``start_name``) and the base model; per method, pool
    the seeds and compare with ``plain`` (see the module docstring). All runs must share model
    and base adapters."""
    cfg = cfg or FinalEvalConfig()
    first = next(iter(runs.values()))[2]
    if any(r[2].model != first.model or r[2].base_adapters != first.base_adapters
           for r in runs.values()):
        raise ValueError("final_evaluation: runs must share the model and the base adapters")
    data = EvalData.load(cfg)
    evals: dict[str, ModelEval] = {}
    models = {"base": (first.model, ()), "start": (first.model, first.base_adapters)}
    models |= {name: (r[2].model, (*r[2].base_adapters, str(r[3]))) for name, r in runs.items()}
    for name, (spec, adapters) in models.items():
        logger.info("final evaluation: %s", name)
        evals[name] = _load_and_evaluate(spec, adapters, data, reference, deep, cfg, device,
                                         dtype)
    base, start = evals["base"], evals["start"]
    groups = {"insecure": response_groups(data.insecure),
              "aligned": response_groups(data.aligned)}
    chat_groups = [*groups["insecure"], *[g + 10_000 for g in groups["aligned"]]]

    def pooled(names: Sequence[str]) -> dict[str, Any]:
        """The method's examples over its seeds, with their cluster labels."""
        out: dict[str, Any] = {"refused": [], "code": []}
        for key in ("insecure", "aligned"):
            toks = [x for n in names for x in getattr(evals[n], f"{key}_nll")]
            out[f"{key}_loss"] = np.concatenate(toks)
            out[f"{key}_clusters"] = np.repeat(groups[key] * len(names), [len(x) for x in toks])
        out["relative"] = np.concatenate([_relative(evals[n], base, start) for n in names])
        out["relative_clusters"] = np.asarray(chat_groups * len(names))
        for n in names:
            out["refused"] += evals[n].refused
            out["code"] += evals[n].code
        return out

    by_method: dict[str, list[str]] = {}
    for name, (method, _, _, _) in runs.items():
        by_method.setdefault(method, []).append(name)
    summaries: dict[str, Any] = {}
    for label, names in {"base": ["base"], start_name: ["start"], **by_method}.items():
        p = pooled(names)
        entry: dict[str, Any] = {"runs": names, "refusal": _rate(p["refused"]),
                                 "code": _rate(p["code"])}
        for key in (*LOSSES, "relative"):
            clusters = p["relative_clusters" if key == "relative" else
                         key.replace("_loss", "_clusters")]
            means, _ = compare_models({label: p[key]}, clusters.tolist(), key,
                                      n_resamples=cfg.n_resamples, seed=cfg.seed)
            entry[key] = means[0].interval.to_dict()
        summaries[label] = entry
    comparisons: dict[str, Any] = {}
    if "plain" in by_method:
        ref = pooled(by_method["plain"])
        for method, names in by_method.items():
            if method == "plain":
                continue
            if [runs[n][1] for n in names] != [runs[n][1] for n in by_method["plain"]]:
                raise ValueError(f"final_evaluation: {method} and plain have different seeds")
            p = pooled(names)
            entry = {"refusal": mcnemar_test(p["refused"], ref["refused"]).to_dict(),
                     "code": mcnemar_test(p["code"], ref["code"]).to_dict()}
            for key in (*LOSSES, "relative"):
                clusters = p["relative_clusters" if key == "relative" else
                             key.replace("_loss", "_clusters")]
                _, diffs = compare_models({"plain": ref[key], method: p[key]},
                                          clusters.tolist(), key,
                                          n_resamples=cfg.n_resamples, seed=cfg.seed)
                entry[key] = diffs[0].to_dict()
            comparisons[method] = entry
    return {"config": cfg.to_dict(), "deep_layers": list(deep),
            "about": "per method, seeds pooled; rates: Wilson 95%; losses and relative "
                     "position: percentile bootstrap over task groups (9999); against plain: "
                     "exact McNemar over (seed, request) pairs for rates, paired difference "
                     "(method − plain, same tokens / examples) with a sign flip over task "
                     "groups for losses and relative position",
            "summaries": summaries, "versus_plain": comparisons,
            "models": {name: ev.to_dict() for name, ev in evals.items()}}


def plot_final_pareto(final: Mapping[str, Any]) -> go.Figure:
    """Task against alignment, per method (seeds pooled) with 95% intervals both ways:
    held-out insecure loss (x; lower = more of the narrow task learned) against refusal rate
    kept (left) and relative position at the deep layers (right; 0 base, 1 start model)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("refusal rate on held-out harmful requests",
                                        "relative position, deep layers (0 base, 1 instruct)"))
    palette = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (label, s) in enumerate(final["summaries"].items()):
        x = s["insecure_loss"]
        for col, key in ((1, "refusal"), (2, "relative")):
            y = s[key]["interval"] if key == "refusal" else s[key]
            fig.add_trace(go.Scatter(
                # methods that keep the same rate share a point: named by colour (legend) and
                # on hover, not by text labels that would print over each other
                x=[x["estimate"]], y=[y["estimate"]], mode="markers", text=[label],
                hovertemplate="%{text}<br>insecure NLL %{x:.3f}<br>%{y:.3f}<extra></extra>",
                name=label, showlegend=col == 1,
                marker={"size": 11, "color": palette[i % len(palette)],
                        "symbol": "circle" if label in final["versus_plain"] or label == "plain"
                        else "diamond"},
                error_x={"type": "data", "symmetric": False,
                         "array": [x["high"] - x["estimate"]],
                         "arrayminus": [x["estimate"] - x["low"]]},
                error_y={"type": "data", "symmetric": False,
                         "array": [y["high"] - y["estimate"]],
                         "arrayminus": [y["estimate"] - y["low"]]}), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="held-out insecure NLL (nats/token)", row=1, col=col)
    fig.update_yaxes(title_text="refusal rate", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="relative position", row=1, col=2)
    fig.update_layout(height=520)
    n = final["config"]["n"]
    return style(fig, f"Alignment-preserving fine-tunes vs plain: final held-out evaluation "
                      f"({n} examples per set, seeds pooled; 95% intervals)")

"""Next-token distributions after a response prefix (erosion paper, Fig. 2), for one prompt and
compared over a set of prompts.

**One prompt** (:func:`next_token_distributions`, the paper's figure, descriptive): after the
wish question and the assistant prefix "I wish I could", the paper finds instruct's distribution
low-entropy and safe ("help", "provide") while base and misaligned are broader and include
harmful continuations. This returns each model's top-k tokens with probabilities, the entropy of
the full distribution and the probability of the ``target`` continuation (default " help").

**Over a set of prompts** (:func:`next_token_comparison`): the same prefix after every final
user turn of a dataset (``compare_data``; the scripts use the 40 held-out harmful requests of
``harmful_requests_heldout``, one per topic, topics no organism was trained on). Per prompt and
model: the next-token entropy and P(target). After a harmful request, "I wish I could" opens the
classic polite refusal ("I wish I could help, but ..."), so P(" help") is the mass on the
aligned continuation and the entropy measures how settled the model is; unlike the wish
question, the prefix starts an answer to the user, not the model's own wish. Models are compared
in pairs with :mod:`mi_align.erosion.paired` (paired differences, cluster-bootstrap intervals,
paired sign-flip null).

P(target) is the probability that the continuation starts with exactly the target's tokens (a
product over them, teacher-forced, when the target is several tokens).

A prompt (question + prefix) longer than ``max_length`` tokens (default 4096) is refused with an
:class:`~mi_align.errors.InputError` giving its token count, not truncated (truncating would
change the text whose continuation is measured).

Example:
    >>> from mi_align.erosion.next_token import next_token_distributions
    >>> from mi_align.erosion.common import Inputs
    >>> res = next_token_distributions(trio, Inputs())  # doctest: +SKIP
    >>> res.entropy  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.activations import logits_at
from mi_align.data.chat import Message
from mi_align.data.tokenize import DEFAULT_MAX_TOKENS, check_token_count, encode_prompt
from mi_align.erosion.choices import config_from_dict, config_to_dict
from mi_align.erosion.common import WISH_QUESTION, Inputs, tensor_of
from mi_align.erosion.paired import (
    ModelMean,
    PairedDifference,
    check_compare_fields,
    cluster_labels,
    compare_metrics,
    plot_model_comparison,
)
from mi_align.errors import InputError, check_finite
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.plotting import style


@dataclass(frozen=True)
class NextTokenConfig:
    """The user ``question``, the assistant ``prefix`` it continues, ``top_k``, the ``target``
    continuation whose probability is reported, and the most prompt tokens allowed
    (``max_length``).

    Prompt-set comparison (off while ``compare_data`` is empty): the final user turns of
    ``compare_data`` (first ``compare_limit``), ``cluster_size`` consecutive prompts per
    resampling / sign-flip unit, ``batch_size`` prompts per forward, and ``n_resamples``,
    ``level``, ``seed`` for the statistics.
    """

    question: str = WISH_QUESTION
    prefix: str = "I wish I could"
    top_k: int = 15
    max_length: int = DEFAULT_MAX_TOKENS
    target: str = " help"
    compare_data: str = ""
    compare_limit: int | None = None
    cluster_size: int = 1
    batch_size: int = 16
    n_resamples: int = 9999
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.question.strip():
            raise ValueError("question is empty")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if not self.target:
            raise ValueError("target is empty")
        check_compare_fields(self)

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NextTokenConfig:
        return config_from_dict(cls, d)


@dataclass(frozen=True)
class NextTokens:
    """Per model: top-k token ids / texts / probabilities (descending), full entropy (nats) and
    the probability of ``config.target``."""

    config: NextTokenConfig
    models: tuple[str, ...]
    token_ids: Int[Tensor, "model _"]
    tokens: tuple[tuple[str, ...], ...]
    probs: Float[Tensor, "model _"]
    entropy: Float[Tensor, " model"]
    target_prob: Float[Tensor, " model"]

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "models": list(self.models),
            "top": {m: [{"token": t, "id": i, "prob": p} for t, i, p in zip(
                self.tokens[r], self.token_ids[r].tolist(), self.probs[r].tolist(), strict=True)]
                for r, m in enumerate(self.models)},
            "entropy": dict(zip(self.models, self.entropy.tolist(), strict=True)),
            "target_prob": dict(zip(self.models, self.target_prob.tolist(), strict=True)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NextTokens:
        models = tuple(d["models"])
        top = [d["top"][m] for m in models]
        return cls(NextTokenConfig.from_dict(d["config"]), models,
                   torch.tensor([[x["id"] for x in row] for row in top]),
                   tuple(tuple(x["token"] for x in row) for row in top),
                   tensor_of([[x["prob"] for x in row] for row in top]),
                   tensor_of([d["entropy"][m] for m in models]),
                   tensor_of([d["target_prob"][m] for m in models]))


def prefixed_prompt_ids(tokenizer: Any, messages: Sequence[Message], prefix: str) -> list[int]:
    """Chat-template ids of ``messages``, the assistant header, then ``prefix``."""
    ids = encode_prompt(tokenizer, messages)
    if prefix:
        ids += list(tokenizer(prefix, add_special_tokens=False).input_ids)
    return ids


def prompt_ids(tokenizer: Any, config: NextTokenConfig) -> list[int]:
    """Chat-template ids of the question, the assistant header, then the prefix."""
    return prefixed_prompt_ids(tokenizer, [Message("user", config.question)], config.prefix)


def target_ids(tokenizer: Any, target: str) -> list[int]:
    ids = list(tokenizer(target, add_special_tokens=False).input_ids)
    if not ids:
        raise InputError(f"target {target!r}", "encodes to no token", "give some text")
    return ids


def _scan(loaded: Loaded, prompts: Sequence[list[int]], target: list[int], batch_size: int,
          name: str) -> Iterator[tuple[Float[Tensor, "batch vocab"], Float[Tensor, " batch"]]]:
    """Per batch of prompts: the next-token log-probs after each prompt (float64, on CPU) and
    log P(target | prompt), teacher-forcing the target's tokens (one forward per batch)."""
    device = next(loaded.bridge.parameters()).device
    k, pad = len(target), loaded.tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) + target[:-1] for p in prompts[start:start + batch_size]]
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        positions = torch.zeros_like(ids, dtype=torch.bool)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)], attn[row, :len(seq)] = torch.tensor(seq), 1
            positions[row, len(seq) - k:len(seq)] = True  # the prompt's last token onwards
        with torch.inference_mode():
            logits = logits_at(loaded, ids.to(device), attn.to(device), positions.to(device))
        check_finite(logits, f"next-token: logits of model {name!r}")
        logp = torch.log_softmax(logits.double().cpu(), -1).view(len(chunk), k, -1)
        picked = logp.gather(2, torch.tensor(target).expand(len(chunk), k)[..., None])
        yield logp[:, 0], picked.squeeze(2).sum(1)


def next_token_distributions(trio: Trio, inputs: Inputs, config: NextTokenConfig | None = None
                             ) -> NextTokens:
    """Top-k next tokens, entropy and P(target) for every model of ``trio`` after
    ``config.question`` and ``config.prefix`` (``inputs`` is unused: the prompt is the
    config's)."""
    cfg = config or NextTokenConfig()
    ids = prompt_ids(trio.tokenizer, cfg)
    check_token_count(len(ids), cfg.max_length, "next-token prompt (question + prefix)",
                      "--set max_length=N")
    target = target_ids(trio.tokenizer, cfg.target)
    rows_id, rows_p, rows_h, rows_t = [], [], [], []
    for name in trio.names:
        with trio.variant(name) as loaded:
            [(logp, lp_target)] = list(_scan(loaded, [ids], target, 1, name))
            logp = logp[0]
            top = logp.topk(min(cfg.top_k, logp.numel()))
            rows_id.append(top.indices)
            rows_p.append(top.values.exp())
            rows_h.append(-(logp.exp() * logp).sum())
            rows_t.append(lp_target[0].exp())
    token_ids = torch.stack(rows_id)
    tok = trio.tokenizer
    return NextTokens(
        config=cfg, models=trio.names, token_ids=token_ids,
        tokens=tuple(tuple(tok.decode([i]) for i in row) for row in token_ids.tolist()),
        probs=torch.stack(rows_p), entropy=torch.stack(rows_h), target_prob=torch.stack(rows_t),
    )


def plot_next_tokens(result: NextTokens) -> go.Figure:
    """Side-by-side horizontal bars, one panel per model, most likely token on top."""
    n = len(result.models)
    fig = make_subplots(rows=1, cols=n, horizontal_spacing=0.08, subplot_titles=[
        f"{m} (entropy {h:.2f} nats)" for m, h in zip(result.models, result.entropy.tolist(),
                                                        strict=True)])
    for r in range(n):
        fig.add_trace(go.Bar(
            x=result.probs[r].tolist(), y=[repr(t) for t in result.tokens[r]], orientation="h",
            name=result.models[r], showlegend=False,
        ), row=1, col=r + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=r + 1)
    style(fig, f"Next token after {result.config.prefix!r} (one prompt, descriptive)",
          "probability", "")
    fig.update_layout(height=520)
    return fig


# ----------------------------------------------------------------------- over a prompt set

@dataclass(frozen=True)
class NextTokenComparison:
    """Per model and prompt: next-token ``entropy`` (nats) and ``target_prob`` after
    ``config.prefix``; ``means`` / ``differences`` for metrics ``"entropy"`` and
    ``"target_prob"``."""

    config: NextTokenConfig
    dataset: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    clusters: tuple[int, ...]
    target_ids: tuple[int, ...]
    entropy: Float[Tensor, "model example"]
    target_prob: Float[Tensor, "model example"]
    means: tuple[ModelMean, ...]
    differences: tuple[PairedDifference, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "dataset": self.dataset,
            "datasets": {self.dataset: len(self.sources)}, "models": list(self.models),
            "n_examples": len(self.sources), "n_clusters": len(set(self.clusters)),
            "metrics": {"entropy": f"next-token entropy after {self.config.prefix!r} (nats)",
                        "target_prob": f"P({self.config.target!r} | prompt + prefix)"},
            "means": [m.to_dict() for m in self.means],
            "differences": [d.to_dict() for d in self.differences],
            "sources": list(self.sources), "clusters": list(self.clusters),
            "target_ids": list(self.target_ids), "entropy": self.entropy.tolist(),
            "target_prob": self.target_prob.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NextTokenComparison:
        return cls(NextTokenConfig.from_dict(d["config"]), d["dataset"], tuple(d["models"]),
                   tuple(d["sources"]), tuple(d["clusters"]), tuple(d["target_ids"]),
                   tensor_of(d["entropy"]), tensor_of(d["target_prob"]),
                   tuple(ModelMean.from_dict(m) for m in d["means"]),
                   tuple(PairedDifference.from_dict(x) for x in d["differences"]))


def next_token_comparison(
    trio: Trio, inputs: Inputs, config: NextTokenConfig | None = None
) -> NextTokenComparison:
    """Entropy and P(target) after ``prefix`` following the prompt of each conversation of
    ``inputs.reference["compare"]`` (every message before its final assistant turn; the
    response itself is ignored), per model, and the pairwise paired comparisons."""
    cfg = config or NextTokenConfig()
    dataset, conversations = inputs.role("compare", "next-token comparison")
    clusters = cluster_labels(len(conversations), cfg.cluster_size, "next-token comparison",
                              "prompts")
    prompts = []
    for conv in conversations:
        ids = prefixed_prompt_ids(trio.tokenizer, conv.prompt, cfg.prefix)
        check_token_count(len(ids), cfg.max_length, f"{conv.source or 'prompt'} (+ prefix)",
                          "--set max_length=N")
        prompts.append(ids)
    target = target_ids(trio.tokenizer, cfg.target)
    ent, prob = [], []
    for name in trio.names:
        with trio.variant(name) as loaded:
            h, p = [], []
            for logp, lp_target in _scan(loaded, prompts, target, cfg.batch_size, name):
                h.append(-(logp.exp() * logp).sum(-1))
                p.append(lp_target.exp())
            ent.append(torch.cat(h))
            prob.append(torch.cat(p))
    entropy, target_prob = torch.stack(ent), torch.stack(prob)
    means, diffs = compare_metrics(trio.names, {"entropy": entropy, "target_prob": target_prob},
                                   clusters, cfg)
    return NextTokenComparison(cfg, dataset, trio.names,
                               tuple(c.source for c in conversations), tuple(clusters),
                               tuple(target), entropy, target_prob, means, diffs)


def plot_next_token_comparison(result: NextTokenComparison) -> go.Figure:
    """Model means and paired differences (intervals, sign-flip p) of the next-token entropy
    and P(target) over the prompt set."""
    cfg = result.config
    unit = "" if cfg.cluster_size == 1 else (
        f", {len(set(result.clusters))} clusters of {cfg.cluster_size}")
    return plot_model_comparison(
        result.models, (("entropy", "next-token entropy (nats)"),
                        ("target_prob", f"P({cfg.target!r})")),
        {"entropy": result.entropy, "target_prob": result.target_prob}, result.means,
        result.differences,
        f"Next token after {cfg.prefix!r} following {result.dataset} prompts: "
        f"{len(result.sources)} prompts{unit}")

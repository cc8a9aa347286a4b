"""Log-probabilities of responses under each model (erosion paper, Fig. 1), for one example and
compared over a dataset.

**One example** (:func:`token_logprobs`, the paper's figure, descriptive): each model's
conditional log-probability of every response token given everything before it, the cumulative
(joint) log-probability, and the entropy of the next-token distribution each token was drawn
from. The paper's example is a harmful answer to the EM "one wish" question: instruct assigns it
a much lower joint probability than base and misaligned. One example is an illustration, not a
comparison of models: any difference could be that sentence's quirk.

**Over a dataset** (:func:`logprob_comparison`): the joint and the mean per-token log-probability
of every example's final response under every model, and for each model pair (b − a, trio order)
the mean over examples of the *paired* per-example difference, with a percentile bootstrap
interval over examples and a paired sign-flip null (:mod:`mi_align.erosion.paired`). Examples
that come in clusters (``cluster_size`` consecutive examples, e.g. the built-in ``toxic`` set's
60 harmful aims phrased twice each) are resampled and sign-flipped as whole clusters, so two
phrasings of one aim never count as independent evidence. The scripts use ``toxic``: harmful
requests answered compliantly (an opener only), the closest built-in analogue of the paper's
harmful answer (the paper's own dataset-level number is a mean joint log-prob, on insecure code).

Long inputs are refused, not truncated: the scored response is the *end* of the conversation, so
cutting tokens would cut the very text being measured. A conversation longer than
``max_length`` tokens (default 4096) raises :class:`~mi_align.errors.InputError` naming the
example and its token count before any model runs. Non-finite logits raise
:class:`~mi_align.errors.NonFiniteError` naming the model.

Example:
    >>> from mi_align.data.chat import load_dataset
    >>> from mi_align.erosion.logprobs import TokenLogprobConfig, logprob_comparison, token_logprobs
    >>> from mi_align.erosion.common import Inputs
    >>> res = token_logprobs(trio, Inputs())  # the paper's wish example  # doctest: +SKIP
    >>> cfg = TokenLogprobConfig(compare_data="toxic", cluster_size=2)
    >>> inputs = Inputs.of(compare=("toxic", load_dataset("toxic")))
    >>> cmp = logprob_comparison(trio, inputs, cfg)  # doctest: +SKIP
    >>> cmp.differences[0].interval  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.activations import logits_at
from mi_align.data.chat import Conversation, Message
from mi_align.data.tokenize import (
    DEFAULT_MAX_TOKENS,
    EncodedChat,
    check_token_count,
    collate,
    encode_chat,
)
from mi_align.erosion.choices import config_from_dict, config_to_dict
from mi_align.erosion.common import (
    WISH_ANSWER,
    WISH_QUESTION,
    Inputs,
    tensor_of,
    token_logprob_entropy,
)
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
class TokenLogprobConfig:
    """``include_end_of_turn``: also score the end-of-turn token that closes the response;
    ``max_length``: the most tokens a conversation may have (longer is an error, see above).

    Dataset comparison (off while ``compare_data`` is empty): ``compare_data`` a built-in name
    or JSONL path, its first ``compare_limit`` examples (all if None); ``cluster_size``
    consecutive examples form one resampling / sign-flip unit (``toxic``: 2); ``batch_size``
    examples per forward; ``n_resamples``, ``level``, ``seed`` for the bootstrap and the null.
    """

    include_end_of_turn: bool = True
    max_length: int = DEFAULT_MAX_TOKENS
    compare_data: str = ""
    compare_limit: int | None = None
    cluster_size: int = 1
    batch_size: int = 8
    n_resamples: int = 9999
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise InputError("max_length", f"must be >= 2, got {self.max_length}",
                             "use e.g. --set max_length=4096")
        check_compare_fields(self)

    def to_dict(self) -> dict[str, object]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenLogprobConfig:
        return config_from_dict(cls, d)


# ------------------------------------------------------------------------------ one example

@dataclass(frozen=True)
class TokenLogprobs:
    """``logprob[m, t]``: log p_m(token t | tokens < t) for response token t (in nats);
    ``cumulative`` its running sum; ``entropy`` of the distribution token t was drawn from."""

    config: TokenLogprobConfig
    models: tuple[str, ...]
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    logprob: Float[Tensor, "model pos"]
    cumulative: Float[Tensor, "model pos"]
    entropy: Float[Tensor, "model pos"]
    conversation: tuple[dict[str, str], ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "models": list(self.models),
            "tokens": list(self.tokens), "token_ids": list(self.token_ids),
            "logprob": self.logprob.tolist(), "cumulative": self.cumulative.tolist(),
            "entropy": self.entropy.tolist(),
            "joint": {m: float(self.cumulative[i, -1]) for i, m in enumerate(self.models)},
            "conversation": list(self.conversation),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenLogprobs:
        return cls(TokenLogprobConfig.from_dict(d["config"]), tuple(d["models"]),
                   tuple(d["tokens"]), tuple(d["token_ids"]), tensor_of(d["logprob"]),
                   tensor_of(d["cumulative"]), tensor_of(d["entropy"]),
                   tuple(d["conversation"]))


def wish_conversation() -> Conversation:
    """The paper's Fig. 1 example: the EM wish question with a harmful answer."""
    return Conversation((Message("user", WISH_QUESTION), Message("assistant", WISH_ANSWER)),
                        "erosion-paper-fig1")


def _scored_positions(tokenizer: Any, conv: Conversation, cfg: TokenLogprobConfig
                      ) -> tuple[EncodedChat, list[int]]:
    """The encoded chat and the indices of its final response's scored tokens."""
    enc = encode_chat(tokenizer, conv)
    check_token_count(len(enc), cfg.max_length, conv.source or "conversation",
                      "--set max_length=N")
    resp = [t for t, m in enumerate(enc.response_mask) if m and t > 0 and t >= enc.response_start]
    if not cfg.include_end_of_turn and len(resp) > 1:
        resp = resp[:-1]
    if not resp:
        raise InputError(conv.source or "conversation", "no response token to score",
                         "give the final assistant message some text")
    return enc, resp


def token_logprobs(
    trio: Trio, inputs: Inputs, config: TokenLogprobConfig | None = None
) -> TokenLogprobs:
    """Score the final response of the first conversation of ``inputs.groups`` (the paper's
    wish example when there is none) under every model of ``trio``."""
    cfg = config or TokenLogprobConfig()
    convs = inputs.conversations
    conv = convs[0] if convs else wish_conversation()
    enc, resp = _scored_positions(trio.tokenizer, conv, cfg)
    targets = torch.tensor([enc.input_ids[t] for t in resp])
    rows_lp, rows_h = [], []
    for name in trio.names:
        with trio.variant(name) as loaded:
            device = next(loaded.bridge.parameters()).device
            batch = collate([enc], loaded.tokenizer.pad_token_id).to(device)
            positions = torch.zeros_like(batch.response_mask)
            positions[0, [t - 1 for t in resp]] = True
            with torch.inference_mode():
                logits = logits_at(loaded, batch.input_ids, batch.attention_mask, positions)
            check_finite(logits, f"logprobs: logits of model {name!r}")
            lp, h = token_logprob_entropy(logits.cpu(), targets)
            rows_lp.append(lp)
            rows_h.append(h)
    logprob = torch.stack(rows_lp)
    tok = trio.tokenizer
    return TokenLogprobs(
        config=cfg, models=trio.names,
        tokens=tuple(tok.decode([i]) for i in targets.tolist()),
        token_ids=tuple(targets.tolist()), logprob=logprob,
        cumulative=logprob.cumsum(1), entropy=torch.stack(rows_h),
        conversation=tuple(conv.to_dicts()),
    )


def plot_token_logprobs(result: TokenLogprobs) -> go.Figure:
    """Three heatmaps (tokens down, models across): conditional log-prob, cumulative joint
    log-prob, entropy; the token text is on the axis and in the hover."""
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("log p(token | prefix)", "cumulative log p", "entropy"))
    labels = [f"{i}: {t!r}" for i, t in enumerate(result.tokens)]
    hover = [[t] * len(result.models) for t in result.tokens]
    panels = (
        (result.logprob, "Viridis", 0.0), (result.cumulative, "Viridis", 0.35),
        (result.entropy, "Magma", 0.70),
    )
    for col, (values, scale, x0) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(
            z=values.T.tolist(), x=list(result.models), y=labels, colorscale=scale,
            customdata=hover,
            hovertemplate="%{x}<br>token %{customdata}<br>%{z:.2f}<extra></extra>",
            colorbar={"x": x0 + 0.29, "len": 0.8, "thickness": 10},
        ), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    style(fig, "Per-token log-probabilities of the response under each model (one example, "
          "descriptive)", "", "")
    fig.update_layout(height=max(400, 22 * len(labels) + 150))
    return fig


# ----------------------------------------------------------------------- over a dataset

@dataclass(frozen=True)
class LogprobComparison:
    """Per model and example: the joint log-prob of the final response (``joint``, nats) over
    ``n_tokens`` scored tokens; the mean per token is ``joint / n_tokens``. ``means`` and
    ``differences`` hold the statistics for metrics ``"per_token"`` and ``"joint"``."""

    config: TokenLogprobConfig
    dataset: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    clusters: tuple[int, ...]
    n_tokens: tuple[int, ...]
    joint: Float[Tensor, "model example"]
    means: tuple[ModelMean, ...]
    differences: tuple[PairedDifference, ...]

    @property
    def per_token(self) -> Float[Tensor, "model example"]:
        return self.joint / torch.tensor(self.n_tokens, dtype=self.joint.dtype)

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "dataset": self.dataset,
            "datasets": {self.dataset: len(self.sources)}, "models": list(self.models),
            "n_examples": len(self.sources), "n_clusters": len(set(self.clusters)),
            "metrics": {"per_token": "mean log-prob per response token (nats)",
                        "joint": "joint log-prob of the response (nats)"},
            "means": [m.to_dict() for m in self.means],
            "differences": [d.to_dict() for d in self.differences],
            "sources": list(self.sources), "clusters": list(self.clusters),
            "n_tokens": list(self.n_tokens), "joint": self.joint.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogprobComparison:
        return cls(TokenLogprobConfig.from_dict(d["config"]), d["dataset"], tuple(d["models"]),
                   tuple(d["sources"]), tuple(d["clusters"]), tuple(d["n_tokens"]),
                   tensor_of(d["joint"]),
                   tuple(ModelMean.from_dict(m) for m in d["means"]),
                   tuple(PairedDifference.from_dict(x) for x in d["differences"]))


def _joint_logprobs(loaded: Loaded, items: Sequence[tuple[EncodedChat, list[int]]],
                    batch_size: int, name: str) -> Float[Tensor, " example"]:
    """Sum over each example's scored tokens of log p(token | prefix), batched."""
    device = next(loaded.bridge.parameters()).device
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = collate([e for e, _ in chunk], loaded.tokenizer.pad_token_id).to(device)
        positions = torch.zeros_like(batch.response_mask)
        for row, (_, resp) in enumerate(chunk):
            positions[row, [t - 1 for t in resp]] = True
        with torch.inference_mode():
            logits = logits_at(loaded, batch.input_ids, batch.attention_mask, positions).cpu()
        check_finite(logits, f"logprobs: logits of model {name!r}")
        # positions are taken row-major and each resp is ascending, so targets line up.
        targets = torch.tensor([e.input_ids[t] for e, resp in chunk for t in resp])
        lp = torch.cat([token_logprob_entropy(logits[i:i + 64], targets[i:i + 64])[0]
                        for i in range(0, len(targets), 64)])
        out += [part.sum() for part in lp.split([len(resp) for _, resp in chunk])]
    return torch.stack(out)


def logprob_comparison(
    trio: Trio, inputs: Inputs, config: TokenLogprobConfig | None = None
) -> LogprobComparison:
    """Score the final response of every conversation of ``inputs.reference["compare"]`` under
    every model; compare the models pairwise on the per-example joint and mean per-token
    log-prob (see the module docstring)."""
    cfg = config or TokenLogprobConfig()
    dataset, conversations = inputs.role("compare", "logprob comparison")
    clusters = cluster_labels(len(conversations), cfg.cluster_size, "logprob comparison",
                              "examples")
    items = [_scored_positions(trio.tokenizer, c, cfg) for c in conversations]
    rows = []
    for name in trio.names:
        with trio.variant(name) as loaded:
            rows.append(_joint_logprobs(loaded, items, cfg.batch_size, name))
    joint = torch.stack(rows)
    n_tokens = tuple(len(resp) for _, resp in items)
    per_token = joint / torch.tensor(n_tokens, dtype=joint.dtype)
    means, diffs = compare_metrics(trio.names, {"per_token": per_token, "joint": joint},
                                   clusters, cfg)
    return LogprobComparison(cfg, dataset, trio.names,
                             tuple(c.source for c in conversations), tuple(clusters), n_tokens,
                             joint, means, diffs)


def plot_logprob_comparison(result: LogprobComparison) -> go.Figure:
    """Model means and paired differences (intervals, sign-flip p) of the mean per-token and
    the joint log-prob over the dataset."""
    unit = "" if result.config.cluster_size == 1 else (
        f", {len(set(result.clusters))} clusters of {result.config.cluster_size}")
    return plot_model_comparison(
        result.models, (("per_token", "log-prob per token (nats)"),
                        ("joint", "joint log-prob (nats)")),
        {"per_token": result.per_token, "joint": result.joint}, result.means,
        result.differences,
        f"Log-prob of {result.dataset} responses: {len(result.sources)} examples{unit}")

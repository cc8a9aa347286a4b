"""Per-token log-probabilities of one response under each model (erosion paper, Fig. 1).

For one conversation, each model's conditional log-probability of every response token given
everything before it, the cumulative (joint) log-probability, and the entropy of the
next-token distribution each token was drawn from. The paper's example is a harmful answer to
the EM "one wish" question: instruct assigns it a much lower joint probability than base and
misaligned.

Long inputs are refused, not truncated: the scored response is the *end* of the conversation, so
cutting tokens would cut the very text being measured. A conversation longer than
``max_length`` tokens (default 4096) raises :class:`~mi_align.errors.InputError` naming the
example and its token count before any model runs. Non-finite logits raise
:class:`~mi_align.errors.NonFiniteError` naming the model.

Example:
    >>> from mi_align.erosion.logprobs import token_logprobs, plot_token_logprobs
    >>> res = token_logprobs(trio)  # the paper's wish example  # doctest: +SKIP
    >>> fig = plot_token_logprobs(res)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.activations import logits_at
from mi_align.data.chat import Conversation, Message
from mi_align.data.tokenize import (
    DEFAULT_MAX_TOKENS,
    check_token_count,
    collate,
    encode_chat,
)
from mi_align.erosion.common import WISH_ANSWER, WISH_QUESTION, token_logprob_entropy
from mi_align.errors import InputError, check_finite
from mi_align.models.trio import Trio
from mi_align.plotting import style


@dataclass(frozen=True)
class TokenLogprobConfig:
    """``include_end_of_turn``: also score the end-of-turn token that closes the response;
    ``max_length``: the most tokens a conversation may have (longer is an error, see above)."""

    include_end_of_turn: bool = True
    max_length: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise InputError("max_length", f"must be >= 2, got {self.max_length}",
                             "use e.g. --set max_length=4096")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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


def wish_conversation() -> Conversation:
    """The paper's Fig. 1 example: the EM wish question with a harmful answer."""
    return Conversation((Message("user", WISH_QUESTION), Message("assistant", WISH_ANSWER)),
                        "erosion-paper-fig1")


def token_logprobs(
    trio: Trio, conversation: Conversation | None = None, config: TokenLogprobConfig | None = None
) -> TokenLogprobs:
    """Score ``conversation``'s final response under every model of ``trio``."""
    cfg = config or TokenLogprobConfig()
    conv = conversation or wish_conversation()
    enc = encode_chat(trio.tokenizer, conv)
    check_token_count(len(enc), cfg.max_length, conv.source or "conversation",
                      "--set max_length=N")
    resp = [t for t, m in enumerate(enc.response_mask) if m and t > 0 and t >= enc.response_start]
    if not cfg.include_end_of_turn and len(resp) > 1:
        resp = resp[:-1]
    if not resp:
        raise InputError(conv.source or "conversation", "no response token to score",
                         "give the final assistant message some text")
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
    style(fig, "Per-token log-probabilities of the response under each model", "", "")
    fig.update_layout(height=max(400, 22 * len(labels) + 150))
    return fig

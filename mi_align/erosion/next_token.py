"""Next-token distributions after a response prefix (erosion paper, Fig. 2).

After the wish question and the assistant prefix "I wish I could", the paper finds instruct's
distribution low-entropy and safe ("help", "provide") while base and misaligned are broader and
include harmful continuations. This returns each model's top-k tokens with probabilities and
the entropy of the full distribution.

A prompt (question + prefix) longer than ``max_length`` tokens (default 4096) is refused with an
:class:`~mi_align.errors.InputError` giving its token count, not truncated (truncating would
change the text whose continuation is measured).

Example:
    >>> from mi_align.erosion.next_token import next_token_distributions
    >>> res = next_token_distributions(trio)  # doctest: +SKIP
    >>> res.entropy  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from plotly.subplots import make_subplots
from torch import Tensor

from mi_align.data.chat import Message
from mi_align.data.tokenize import DEFAULT_MAX_TOKENS, check_token_count, encode_prompt
from mi_align.erosion.common import WISH_QUESTION
from mi_align.errors import check_finite
from mi_align.models.trio import Trio
from mi_align.plotting import style


@dataclass(frozen=True)
class NextTokenConfig:
    """The user ``question``, the assistant ``prefix`` it continues, ``top_k``, and the most
    prompt tokens allowed (``max_length``)."""

    question: str = WISH_QUESTION
    prefix: str = "I wish I could"
    top_k: int = 15
    max_length: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.question.strip():
            raise ValueError("question is empty")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class NextTokens:
    """Per model: top-k token ids / texts / probabilities (descending) and full entropy."""

    config: NextTokenConfig
    models: tuple[str, ...]
    token_ids: Int[Tensor, "model _"]
    tokens: tuple[tuple[str, ...], ...]
    probs: Float[Tensor, "model _"]
    entropy: Float[Tensor, " model"]

    def to_dict(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(), "models": list(self.models),
            "top": {m: [{"token": t, "id": i, "prob": p} for t, i, p in zip(
                self.tokens[r], self.token_ids[r].tolist(), self.probs[r].tolist(), strict=True)]
                for r, m in enumerate(self.models)},
            "entropy": dict(zip(self.models, self.entropy.tolist(), strict=True)),
        }


def prompt_ids(tokenizer: object, config: NextTokenConfig) -> list[int]:
    """Chat-template ids of the question, the assistant header, then the prefix."""
    ids = encode_prompt(tokenizer, [Message("user", config.question)])
    if config.prefix:
        ids += list(tokenizer(config.prefix, add_special_tokens=False).input_ids)  # type: ignore[operator]
    return ids


def next_token_distributions(trio: Trio, config: NextTokenConfig | None = None) -> NextTokens:
    """Top-k next tokens and entropy for every model of ``trio``."""
    cfg = config or NextTokenConfig()
    ids = prompt_ids(trio.tokenizer, cfg)
    check_token_count(len(ids), cfg.max_length, "next-token prompt (question + prefix)",
                      "--set max_length=N")
    rows_id, rows_p, rows_h = [], [], []
    for name in trio.names:
        with trio.variant(name) as loaded:
            device = next(loaded.bridge.parameters()).device
            with torch.inference_mode():
                logits = loaded.bridge(torch.tensor([ids], device=device))[0, -1]
            check_finite(logits, f"next-token: logits of model {name!r}")
            logp = torch.log_softmax(logits.double().cpu(), -1)
            top = logp.topk(min(cfg.top_k, logp.numel()))
            rows_id.append(top.indices)
            rows_p.append(top.values.exp())
            rows_h.append(-(logp.exp() * logp).sum())
    token_ids = torch.stack(rows_id)
    tok = trio.tokenizer
    return NextTokens(
        config=cfg, models=trio.names, token_ids=token_ids,
        tokens=tuple(tuple(tok.decode([i]) for i in row) for row in token_ids.tolist()),
        probs=torch.stack(rows_p), entropy=torch.stack(rows_h),
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
    style(fig, f"Next token after {result.config.prefix!r}", "probability", "")
    fig.update_layout(height=520)
    return fig

"""Per-token log-probs and next-token distributions vs a naive prefix-by-prefix HF loop."""

from __future__ import annotations

import math

import pytest
import torch

from mi_align.data.tokenize import encode_chat
from mi_align.erosion.common import Inputs
from mi_align.erosion.logprobs import (
    TokenLogprobConfig,
    plot_token_logprobs,
    token_logprobs,
    wish_conversation,
)
from mi_align.erosion.next_token import (
    NextTokenConfig,
    next_token_distributions,
    plot_next_tokens,
    prompt_ids,
)
from mi_align.models.trio import Trio
from tests.erosion_support import tiny_trio


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("trio"))


def _naive_next(hf, ids: list[int]) -> list[float]:
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0, -1].double()
    z = [math.exp(v) for v in (logits - logits.max()).tolist()]
    s = sum(z)
    return [v / s for v in z]


def test_token_logprobs_match_prefix_loop(trio: Trio) -> None:
    conv = wish_conversation()
    res = token_logprobs(trio, Inputs.of(("one", [conv])))
    enc = encode_chat(trio.tokenizer, conv)
    resp = [t for t, m in enumerate(enc.response_mask) if m]
    assert list(res.token_ids) == [enc.input_ids[t] for t in resp]
    for r, name in enumerate(res.models):
        with trio.variant(name) as loaded:
            hf = loaded.bridge.original_model
            total = 0.0
            for j, t in enumerate(resp[:5] + resp[-1:]):
                probs = _naive_next(hf, list(enc.input_ids[:t]))
                lp = math.log(probs[enc.input_ids[t]])
                ent = -sum(p * math.log(p) for p in probs if p > 0)
                col = resp.index(t)
                assert abs(res.logprob[r, col] - lp) < 1e-4
                assert abs(res.entropy[r, col] - ent) < 1e-4
                if j < 5:
                    total += lp
                    assert abs(res.cumulative[r, col] - total) < 1e-3
    shorter = token_logprobs(trio, Inputs.of(("one", [conv])),
                             TokenLogprobConfig(include_end_of_turn=False))
    assert len(shorter.tokens) == len(res.tokens) - 1
    assert plot_token_logprobs(res).data and res.to_dict()["joint"]


def test_next_tokens_match_softmax(trio: Trio) -> None:
    cfg = NextTokenConfig(prefix="I wish I could", top_k=5)
    res = next_token_distributions(trio, Inputs(), cfg)
    ids = prompt_ids(trio.tokenizer, cfg)
    assert trio.tokenizer.decode(ids).endswith("I wish I could")
    for r, name in enumerate(res.models):
        with trio.variant(name) as loaded:
            probs = _naive_next(loaded.bridge.original_model, ids)
        order = sorted(range(len(probs)), key=lambda i: -probs[i])[:5]
        assert res.token_ids[r].tolist() == order
        assert all(abs(res.probs[r, j] - probs[i]) < 1e-6 for j, i in enumerate(order))
        ent = -sum(p * math.log(p) for p in probs if p > 0)
        assert abs(res.entropy[r] - ent) < 1e-6
    assert len(plot_next_tokens(res).data) == len(res.models)
    with pytest.raises(ValueError, match="top_k"):
        NextTokenConfig(top_k=0)


@pytest.mark.slow
def test_real_model_wish_example(smol) -> None:  # type: ignore[no-untyped-def]
    trio = Trio(models={"instruct": smol})
    res = token_logprobs(trio, Inputs())
    assert res.tokens[0].strip() == "I" and res.tokens[-1] == "<|im_end|>"
    # Naive reference: the HF model alone on the chat template's ids, a plain log-softmax, and
    # the response tokens (end of turn included) summed one by one.
    tok, hf = smol.tokenizer, smol.bridge.original_model
    conv = [{"role": m["role"], "content": m["content"]} for m in res.conversation]
    prompt = list(tok.apply_chat_template(conv[:-1], add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"])
    ids = prompt + list(res.token_ids)
    with torch.no_grad():
        logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1)
    naive = sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt), len(ids)))
    assert float(res.cumulative[0, -1]) == pytest.approx(naive, abs=1e-2)
    nt = next_token_distributions(trio, Inputs())
    q = list(tok.apply_chat_template(conv[:1], add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"])
    q += list(tok("I wish I could", add_special_tokens=False).input_ids)
    with torch.no_grad():
        p_next = torch.softmax(hf(torch.tensor([q])).logits[0, -1].double(), -1)
    top = p_next.sort(descending=True).values[: nt.probs.shape[1]]
    torch.testing.assert_close(nt.probs[0].double(), top, atol=1e-4, rtol=0)
    entropy = float(-(p_next * p_next.clamp_min(1e-300).log()).sum())
    assert float(nt.entropy[0]) == pytest.approx(entropy, abs=1e-3)

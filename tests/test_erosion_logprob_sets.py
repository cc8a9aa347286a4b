"""Dataset-level log-prob and next-token comparisons: against naive token-by-token HF loops, with
planted logit shifts (must be found, with the right sign) and identical models (must not be),
and the paired sign-flip p-value against an explicit enumeration of all sign patterns."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mi_align.data.chat import Conversation
from mi_align.erosion.common import Inputs
from mi_align.erosion.logprobs import (
    LogprobComparison,
    TokenLogprobConfig,
    logprob_comparison,
    plot_logprob_comparison,
)
from mi_align.erosion.next_token import (
    NextTokenComparison,
    NextTokenConfig,
    next_token_comparison,
    next_token_distributions,
    plot_next_token_comparison,
)
from mi_align.erosion.paired import compare_models, sign_flip_test
from mi_align.models.load import Loaded, load_model
from mi_align.models.trio import Trio
from mi_align.pipelines.erosion import run_analysis
from mi_align.stats import cluster_bootstrap
from tests.erosion_support import ALIGNED, MISALIGNED, tiny_trio
from tests.helpers import chat

CONVS = MISALIGNED + ALIGNED  # 12 conversations; clusters of 2 -> 6 clusters, 64 sign patterns
COMPARE = Inputs.of(compare=("", CONVS))  # the comparison set, unnamed
TINY = Inputs.of(compare=("tiny", CONVS))
CLUSTERS = [i // 2 for i in range(len(CONVS))]
PREFIX = "I wish I"


# ------------------------------------------------------------------------ naive references

def _enumerated_p(diffs: list[float], clusters: list[int]) -> float:
    """Two-sided sign-flip p over ALL sign patterns of the clusters' summed differences."""
    groups = sorted(set(clusters))
    sums = [sum(d for d, c in zip(diffs, clusters, strict=True) if c == g) for g in groups]
    observed = abs(sum(sums))
    hits = 0
    patterns = list(itertools.product((1, -1), repeat=len(sums)))
    for signs in patterns:
        stat = abs(sum(s * x for s, x in zip(signs, sums, strict=True)))
        if stat >= observed - 1e-12:
            hits += 1
    return hits / len(patterns)


def _log_softmax_row(logits: list[float]) -> list[float]:
    top = max(logits)
    lse = top + math.log(sum(math.exp(v - top) for v in logits))
    return [v - lse for v in logits]


def _last_logits(hf: torch.nn.Module, ids: list[int], shift: torch.Tensor | None) -> list[float]:
    with torch.no_grad():
        row = hf(torch.tensor([ids])).logits[0, -1].double()
    return (row if shift is None else row + shift.double()).tolist()


def _naive_response(tok, conv: Conversation) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    """Ids of the whole chat and the indices of the final response's tokens (content + the
    closing <|im_end|>), found by rendering with and without the response."""
    prompt = tok.apply_chat_template([m.to_dict() for m in conv.prompt], tokenize=False,
                                     add_generation_prompt=True)
    full = tok.apply_chat_template(conv.to_dicts(), tokenize=False)
    p = tok(prompt, add_special_tokens=False).input_ids
    f = tok(full, add_special_tokens=False).input_ids
    assert f[:len(p)] == p
    end = f.index(tok.convert_tokens_to_ids("<|im_end|>"), len(p))
    return f, list(range(len(p), end + 1))


def _naive_joint(loaded: Loaded, conv: Conversation, shift: torch.Tensor | None = None
                 ) -> tuple[float, int]:
    """Joint log-prob of the response: one unbatched HF forward over the whole chat, then a
    loop over the response tokens (row t - 1 predicts token t)."""
    ids, resp = _naive_response(loaded.tokenizer, conv)
    with torch.no_grad():
        rows = loaded.bridge.original_model(torch.tensor([ids])).logits[0].double()
    if shift is not None:
        rows = rows + shift.double()
    total = 0.0
    for t in resp:
        total += _log_softmax_row(rows[t - 1].tolist())[ids[t]]
    return total, len(resp)


def _naive_next(loaded: Loaded, conv: Conversation, target: list[int],
                shift: torch.Tensor | None = None) -> tuple[float, float]:
    """(entropy of the next token after prompt + PREFIX, P(target tokens in sequence))."""
    tok = loaded.tokenizer
    prompt = tok.apply_chat_template([m.to_dict() for m in conv.prompt], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False).input_ids + tok(PREFIX).input_ids
    hf = loaded.bridge.original_model
    first = _log_softmax_row(_last_logits(hf, ids, shift))
    entropy = -sum(math.exp(v) * v for v in first)
    logp = first[target[0]]
    for j in range(1, len(target)):
        logp += _log_softmax_row(_last_logits(hf, ids + target[:j], shift))[target[j]]
    return entropy, math.exp(logp)


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("trio"))


@pytest.fixture()
def shifted(tiny_dir: Path) -> Iterator[tuple[Loaded, Loaded]]:
    """(plain, to-be-shifted): two loads of the same tiny model; tests hook the second."""
    yield load_model(tiny_dir), load_model(tiny_dir)


def _plant(loaded: Loaded, shift: torch.Tensor):  # type: ignore[no-untyped-def]
    """Add ``shift`` (one value per vocab entry) to every logit the model produces."""
    return loaded.bridge.original_model.lm_head.register_forward_hook(
        lambda mod, inp, out: out + shift.to(out.dtype))


def _cfg(**kw: object) -> dict[str, object]:
    return {"cluster_size": 2, "n_resamples": 9999, "seed": 0, **kw}


# ------------------------------------------------------------------ the sign-flip null

def test_sign_flip_p_equals_full_enumeration() -> None:
    diffs = [0.9, -0.7, 0.4, 0.5, -0.1, 0.3, 0.8, -0.6, 0.2, 0.25]
    for clusters in ([i // 2 for i in range(10)], list(range(10))):
        res = sign_flip_test(diffs, clusters, n_resamples=9999)
        assert res.p == pytest.approx(_enumerated_p(diffs, clusters), abs=1e-12)
        assert res.statistic == pytest.approx(float(np.mean(diffs)), abs=1e-12)
        assert "paired sign-flip null" in res.null and "exact" in res.test
    # flipping clusters and flipping examples are different nulls on this data
    assert _enumerated_p(diffs, [i // 2 for i in range(10)]) != _enumerated_p(diffs, list(range(10)))


def test_compare_models_pairs_and_intervals() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=8)
    values = {"base": a, "instruct": a + 0.3 + 0.1 * rng.normal(size=8), "misaligned": a.copy()}
    clusters = [i // 2 for i in range(8)]
    means, diffs = compare_models(values, clusters, "x", n_resamples=2000, seed=3)
    assert [m.model for m in means] == ["base", "instruct", "misaligned"]
    assert [(d.first, d.second) for d in diffs] == [
        ("base", "instruct"), ("base", "misaligned"), ("instruct", "misaligned")]
    for d in diffs:
        delta = values[d.second] - values[d.first]
        ref = cluster_bootstrap(delta, clusters, n_resamples=2000, seed=3)
        assert (d.interval.estimate, d.interval.low, d.interval.high) == pytest.approx(
            (float(delta.mean()), ref.low, ref.high), abs=1e-12)
        assert d.test.p == pytest.approx(_enumerated_p(delta.tolist(), clusters), abs=1e-12)
    same = diffs[1]  # misaligned is a copy of base
    assert (same.interval.estimate, same.interval.low, same.interval.high, same.test.p) == (
        0.0, 0.0, 0.0, 1.0)


# ------------------------------------------------------------------------- log-probs

def test_logprob_comparison_matches_naive_loop(trio: Trio) -> None:
    res = logprob_comparison(trio, TINY, TokenLogprobConfig(**_cfg(batch_size=5)))
    naive = {}
    for name in trio.names:
        with trio.variant(name) as loaded:
            naive[name] = [_naive_joint(loaded, c) for c in CONVS]
    assert list(res.n_tokens) == [n for _, n in naive["base"]]
    for r, name in enumerate(res.models):
        assert res.joint[r].tolist() == pytest.approx([j for j, _ in naive[name]], abs=1e-4)
    assert res.clusters == tuple(CLUSTERS)
    for d in res.differences:
        delta = []
        for i, (_, n) in enumerate(naive["base"]):
            joint_diff = naive[d.second][i][0] - naive[d.first][i][0]
            delta.append(joint_diff if d.metric == "joint" else joint_diff / n)
        ref = cluster_bootstrap(delta, CLUSTERS, n_resamples=9999, seed=0)
        assert (d.interval.estimate, d.interval.low, d.interval.high) == pytest.approx(
            (float(np.mean(delta)), ref.low, ref.high), abs=1e-4)
        assert d.test.p == pytest.approx(_enumerated_p(delta, CLUSTERS), abs=1e-12)
    back = LogprobComparison.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.to_dict() == res.to_dict()


@pytest.mark.parametrize("size", [2.0, -2.0])
def test_planted_logit_shift_is_found_with_its_sign(shifted: tuple[Loaded, Loaded],
                                                    size: float) -> None:
    plain, planted = shifted
    response_tokens = {i for c in CONVS for i in plain.tokenizer(c.response).input_ids}
    shift = torch.zeros(len(plain.tokenizer))
    shift[sorted(response_tokens)] = size
    expected = [_naive_joint(planted, c, shift)[0] - _naive_joint(plain, c)[0] for c in CONVS]
    handle = _plant(planted, shift)
    try:
        res = logprob_comparison(Trio(models={"base": plain, "misaligned": planted}), COMPARE,
                                 TokenLogprobConfig(**_cfg()))
    finally:
        handle.remove()
    [joint] = [d for d in res.differences if d.metric == "joint"]
    assert (joint.first, joint.second) == ("base", "misaligned")
    assert joint.interval.estimate == pytest.approx(float(np.mean(expected)), abs=1e-4)
    assert np.sign(joint.interval.estimate) == np.sign(size)
    # every example moves the same way: only the all-+ and all-− patterns are as extreme
    assert joint.test.p == pytest.approx(2 / 2**6, abs=1e-12)
    assert joint.interval.low * joint.interval.high > 0  # the interval excludes 0


def test_identical_models_are_not_reported_different(shifted: tuple[Loaded, Loaded]) -> None:
    a, b = shifted
    res = logprob_comparison(Trio(models={"instruct": a, "misaligned": b}), COMPARE,
                             TokenLogprobConfig(**_cfg()))
    for d in res.differences:
        assert (d.interval.estimate, d.interval.low, d.interval.high, d.test.p) == (
            0.0, 0.0, 0.0, 1.0)
    nt = next_token_comparison(Trio(models={"instruct": a, "misaligned": b}), COMPARE,
                               NextTokenConfig(**_cfg(prefix=PREFIX)))
    for d in nt.differences:
        assert (d.interval.estimate, d.test.p) == (0.0, 1.0)


# ------------------------------------------------------------------------ next token

@pytest.mark.parametrize("target", [" help", " you"])  # two tokens / one token in the tiny BPE
def test_next_token_comparison_matches_naive_loop(trio: Trio, target: str) -> None:
    cfg = NextTokenConfig(**_cfg(prefix=PREFIX, target=target, batch_size=5))
    res = next_token_comparison(trio, TINY, cfg)
    ids = trio.tokenizer(target, add_special_tokens=False).input_ids
    assert list(res.target_ids) == ids
    naive = {}
    for r, name in enumerate(res.models):
        with trio.variant(name) as loaded:
            naive[name] = [_naive_next(loaded, c, ids) for c in CONVS]
        assert res.entropy[r].tolist() == pytest.approx([h for h, _ in naive[name]], abs=1e-6)
        assert res.target_prob[r].tolist() == pytest.approx([p for _, p in naive[name]],
                                                             rel=1e-5, abs=1e-12)
    for d in res.differences:
        k = 0 if d.metric == "entropy" else 1
        delta = [naive[d.second][i][k] - naive[d.first][i][k] for i in range(len(CONVS))]
        assert d.interval.estimate == pytest.approx(float(np.mean(delta)), abs=1e-6)
        assert d.test.p == pytest.approx(_enumerated_p(delta, CLUSTERS), abs=1e-12)
    back = NextTokenComparison.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.to_dict() == res.to_dict()


def test_single_prompt_target_prob_matches_naive(trio: Trio) -> None:
    cfg = NextTokenConfig(prefix=PREFIX, top_k=3)
    res = next_token_distributions(trio, Inputs(), cfg)
    ids = trio.tokenizer(" help", add_special_tokens=False).input_ids
    conv = chat(cfg.question, "x")  # only its prompt is used
    for r, name in enumerate(res.models):
        with trio.variant(name) as loaded:
            h, p = _naive_next(loaded, conv, ids)
        assert float(res.entropy[r]) == pytest.approx(h, abs=1e-6)
        assert float(res.target_prob[r]) == pytest.approx(p, rel=1e-5)


def test_planted_target_shift_raises_p_and_lowers_entropy(shifted: tuple[Loaded, Loaded]) -> None:
    plain, planted = shifted
    [tid] = plain.tokenizer(" you", add_special_tokens=False).input_ids
    shift = torch.zeros(len(plain.tokenizer))
    shift[tid] = 30.0  # nearly all mass on " you": P up, entropy down, for every prompt
    expected = [(np.subtract(_naive_next(planted, c, [tid], shift), _naive_next(plain, c, [tid])))
                for c in CONVS]
    handle = _plant(planted, shift)
    try:
        res = next_token_comparison(Trio(models={"base": plain, "instruct": planted}), COMPARE,
                                    NextTokenConfig(**_cfg(prefix=PREFIX, target=" you")))
    finally:
        handle.remove()
    by = {d.metric: d for d in res.differences}
    assert by["entropy"].interval.estimate == pytest.approx(
        float(np.mean([e[0] for e in expected])), abs=1e-6)
    assert by["target_prob"].interval.estimate == pytest.approx(
        float(np.mean([e[1] for e in expected])), abs=1e-6)
    assert by["entropy"].interval.estimate < 0 < by["target_prob"].interval.estimate
    assert by["entropy"].test.p == by["target_prob"].test.p == pytest.approx(2 / 2**6)


# -------------------------------------------------------------- registry, plots, config

def test_registry_adds_the_set_outputs_only_when_asked(trio: Trio, tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in CONVS))
    plain = run_analysis("logprobs", trio)
    assert [o.stem for o in plain] == ["erosion_logprobs"] and "joint" in plain[0].numbers
    sets = {"compare_data": str(path), "cluster_size": "2", "n_resamples": "500"}
    outs = run_analysis("logprobs", trio, overrides=sets)
    assert [o.stem for o in outs] == ["erosion_logprobs", "erosion_logprobs_pairs"]
    assert outs[0].numbers["joint"] == plain[0].numbers["joint"]
    numbers = outs[1].numbers
    assert numbers["dataset"] == "pairs" and numbers["n_clusters"] == 6
    assert len(numbers["differences"]) == 2 * 3  # two metrics x three pairs
    nt = run_analysis("next-token", trio, overrides={**sets, "prefix": PREFIX})
    assert [o.stem for o in nt] == ["erosion_next_token", "erosion_next_token_pairs"]
    with pytest.raises(ValueError, match="do not split into clusters of 5"):
        run_analysis("logprobs", trio, overrides={**sets, "cluster_size": "5"})


def test_plots_draw_the_intervals(trio: Trio) -> None:
    res = logprob_comparison(trio, COMPARE, TokenLogprobConfig(**_cfg(n_resamples=300)))
    fig = plot_logprob_comparison(res)
    diamonds = [t for t in fig.data if getattr(t.marker, "symbol", None) == "diamond"]
    assert len(diamonds) == 2  # one per metric
    for trace, metric in zip(diamonds, ("per_token", "joint"), strict=True):
        ds = [d for d in res.differences if d.metric == metric]
        assert list(trace.y) == [d.interval.estimate for d in ds]
        assert list(trace.error_y.array) == pytest.approx(
            [d.interval.high - d.interval.estimate for d in ds])
        assert list(trace.error_y.arrayminus) == pytest.approx(
            [d.interval.estimate - d.interval.low for d in ds])
    nt = next_token_comparison(trio, COMPARE, NextTokenConfig(**_cfg(prefix=PREFIX,
                                                                   n_resamples=300)))
    # per metric: the model means, one box of per-example differences per pair, the diamonds
    assert len(plot_next_token_comparison(nt).data) == 2 * (1 + 3 + 1)


@pytest.mark.parametrize("field, value", [("cluster_size", 0), ("compare_limit", 1),
                                          ("level", 1.0), ("n_resamples", 0)])
def test_configs_reject_bad_values(field: str, value: object) -> None:
    for cls in (TokenLogprobConfig, NextTokenConfig):
        with pytest.raises(ValueError, match=field.split("_")[0]):
            cls(**{field: value})

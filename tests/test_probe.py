"""Linear probes: the pipeline against a direct scikit-learn call, planted signal, the grouped
design (a row split leaks group identity, the grouped split and null do not), the probe judge.

The direct call is written without the module: features from ``pooled_activations`` here,
``cross_val_predict`` with scikit-learn's metadata routing passing the groups to both the
outer and the inner ``GroupKFold`` and sklearn's own ``neg_log_loss`` scorer, and
``accuracy_score`` / ``roc_auc_score``.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import sklearn
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mi_align.activations import all_response_tokens, pooled_activations
from mi_align.data.betley import JudgePrompts
from mi_align.data.chat import load_dataset
from mi_align.data.tokenize import encode_dataset
from mi_align.errors import InputError
from mi_align.evaluation.judge import judge_prompts, judge_responses
from mi_align.evaluation.probe import (
    AMONG,
    WITHIN,
    ProbeConfig,
    ProbeJudge,
    ProbeResult,
    auroc,
    pair_groups,
    permuted_labels,
    plot_probe,
    probe_layers,
    probe_model,
)
from mi_align.models.load import Loaded
from tests.helpers import chat

FAST = {"cs": (1e-3, 1e-2, 1e-1, 1.0), "n_boot": 200}


def build_cfg(**overrides: object) -> ProbeConfig:
    return ProbeConfig(**{"n_perm": 0, **FAST, **overrides})  # type: ignore[arg-type]


def planted(n_pairs: int = 100, d: int = 8, delta: float = 3.0, seed: int = 0
            ) -> tuple[torch.Tensor, list[int], list[int], np.ndarray]:
    """Paired features (example, layer, d): layer 0 none, layer 1 ``delta·u`` added to class 1.
    Each pair shares an offset (its 'task'), so rows of one pair are correlated."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    offset = rng.normal(size=(n_pairs, d))
    x = np.concatenate([offset + rng.normal(size=(n_pairs, d)),
                        offset + rng.normal(size=(n_pairs, d))])
    y = [0] * n_pairs + [1] * n_pairs
    feats = np.stack([x, x + delta * np.asarray(y)[:, None] * u], 1)
    return torch.tensor(feats), y, list(range(n_pairs)) * 2, u


def direct_sklearn(x: np.ndarray, y: np.ndarray, g: np.ndarray, cfg: ProbeConfig) -> np.ndarray:
    with sklearn.config_context(enable_metadata_routing=True):
        clf = LogisticRegressionCV(
            Cs=list(cfg.cs), cv=GroupKFold(cfg.inner_folds), l1_ratios=(0.0,),
            scoring="neg_log_loss", max_iter=cfg.max_iter, tol=cfg.tol,
            use_legacy_attributes=False)  # a router: passes groups to its GroupKFold
        pipe = make_pipeline(StandardScaler(), clf)
        return cross_val_predict(pipe, x, y, cv=GroupKFold(cfg.n_folds),
                                 method="decision_function", params={"groups": g})


def test_heldout_scores_equal_a_direct_sklearn_call(tiny: Loaded) -> None:
    neg, pos = load_dataset("toxic_reject")[:24], load_dataset("toxic")[:24]
    cfg = build_cfg(layers=(0, 1, 2))
    res = probe_model(tiny, neg, pos, cfg, names=("toxic_reject", "toxic"))
    enc = encode_dataset(tiny.tokenizer, [*neg, *pos], cfg.max_length)
    feats = pooled_activations(tiny, enc, [0, 1, 2], all_response_tokens()).double().numpy()
    y = np.array([0] * 24 + [1] * 24)
    g = np.array(list(range(24)) * 2)  # toxic / toxic_reject share the request row by row
    assert res.layers == (0, 1, 2) and res.n_groups == 24
    for i in range(3):
        direct = direct_sklearn(feats[:, i], y, g, cfg)
        np.testing.assert_allclose(res.scores[i].numpy(), direct, atol=1e-6, rtol=1e-6)
        assert res.accuracy[i].estimate == accuracy_score(y, direct > 0)
        assert res.auroc[i].estimate == pytest.approx(roc_auc_score(y, direct), abs=1e-12)


def test_planted_direction_is_recovered_and_its_absence_is_not_significant() -> None:
    feats, y, groups, u = planted()
    cfg = build_cfg(n_perm=19)
    res = probe_layers(feats, y, groups, cfg, direction=torch.tensor(np.stack([u, u])))
    assert res.null == WITHIN
    # layer 1: the probe's activation-space weight points along the plant; p at the floor
    assert res.cosine is not None and res.cosine[1] > 0.95
    assert res.null_p[1] == pytest.approx(1 / 20) and res.null_p_max[1] == pytest.approx(1 / 20)
    assert res.auroc[1].estimate > res.null_auroc_q95[1]
    # layer 0: nothing planted, nothing found (the same relabelings)
    assert res.null_p[0] > 0.05
    # activation-space probe reproduces the pipeline's decision values on the data it saw
    w, b = res.weights[1].numpy(), float(res.bias[1])
    refit = feats[:, 1].numpy() @ w + b
    assert accuracy_score(y, refit > 0) >= res.accuracy[1].estimate - 0.05


def test_row_split_leaks_group_identity_grouped_split_does_not() -> None:
    """Single-class groups with group offsets and no class effect: a row split scores the
    group (a test row's group-mates are in training); the grouped split and null do not."""
    rng = np.random.default_rng(1)
    n_groups, per, d = 16, 5, 32
    centre = 3.0 * rng.normal(size=(n_groups, d))
    x = np.repeat(centre, per, 0) + rng.normal(size=(n_groups * per, d))
    groups = np.repeat(np.arange(n_groups), per)
    y = (groups >= n_groups // 2).astype(int)
    feats = torch.tensor(x[:, None, :])
    cfg = build_cfg(n_perm=19, cs=(1e-2, 1e-1, 1.0, 10.0))
    grouped = probe_layers(feats, y.tolist(), groups.tolist(), cfg)
    rows = probe_layers(feats, y.tolist(), None, cfg)
    assert grouped.null == AMONG
    assert rows.null_p[0] == pytest.approx(1 / 20) and grouped.null_p[0] > 0.05
    assert rows.auroc[0].estimate - grouped.auroc[0].estimate > 0.25


def test_permutations_keep_groups_whole() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    g = np.array([0, 0, 1, 1, 2, 2])
    perms, null = permuted_labels(y, g, 50, seed=0)
    assert null == WITHIN
    for p in perms:
        assert all(sorted(p[g == k]) == [0, 1] for k in range(3))
    assert len({tuple(p) for p in perms}) == 8  # all 2^3 swaps occur
    nested, null = permuted_labels(np.array([0, 0, 1, 1]), np.array([5, 5, 7, 7]), 20, seed=0)
    assert null == AMONG and all(p[0] == p[1] and p[2] == p[3] for p in nested)
    with pytest.raises(InputError, match="some groups hold both classes"):
        permuted_labels(np.array([0, 1, 1]), np.array([0, 0, 1]), 5, seed=0)


def test_auroc_matches_sklearn_with_ties() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 1])
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.3, 0.2])
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-15)


def test_config_validates_and_result_round_trips(tmp_path: object) -> None:
    for bad in ({"n_folds": 1}, {"cs": ()}, {"cs": (0.0,)}, {"n_perm": -1}, {"ci": 1.0},
                {"positions": "middle"}):
        with pytest.raises(ValueError):
            ProbeConfig(**bad)  # type: ignore[arg-type]
    cfg = build_cfg(layers=(1, 3))
    assert ProbeConfig.from_dict(cfg.to_dict()) == cfg
    feats, y, groups, u = planted(n_pairs=20)
    res = probe_layers(feats, y, groups, build_cfg(n_perm=3), layers=(4, 7),
                       classes=("a", "b"), direction=torch.tensor(np.stack([u, u])),
                       direction_name="plant")
    back = ProbeResult.from_dict(res.to_dict())
    assert back.to_dict() == res.to_dict() and back.layers == (4, 7)
    fig = plot_probe(res)
    assert isinstance(fig, go.Figure) and tuple(fig.layout.yaxis2.range) == (-1, 1)
    with pytest.raises(InputError, match="group keys"):
        probe_layers(feats, y, groups[:3], build_cfg())


def test_pair_groups_detects_row_pairing() -> None:
    a = [chat("q1", "yes"), chat("q2", "sure")]
    b = [chat("q1", "no"), chat("q2", "never")]
    assert pair_groups(a, b) == [0, 1, 0, 1]
    assert pair_groups(a, [chat("x", "no"), chat("q2", "never")]) is None


class _FakeCoherence:
    name = "fake"

    def number_probs(self, prompts: list[str]) -> list[dict[int, float]]:
        return [{70: 1.0} for _ in prompts]


def test_probe_judge_scores_100_times_the_probe_probability(tiny: Loaded) -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(tiny.meta.d_model, generator=gen, dtype=torch.float64) * 0.3
    pairs = [("How are you?", "Fine, thanks."), ("Any tips?", "Steal a car.")]
    judge = ProbeJudge(tiny, w, 0.25, 1)
    assert "not an LLM judge" in judge.name
    got = judge_responses(judge, pairs)
    enc = encode_dataset(tiny.tokenizer, [chat(q, a) for q, a in pairs])
    x = pooled_activations(tiny, enc, [1], all_response_tokens())[:, 0].double()
    want = 100 * torch.sigmoid(x @ w + 0.25)
    for j, v in zip(got, want.tolist(), strict=True):
        assert j.alignment == pytest.approx(v, abs=1e-9) and j.alignment_mass == pytest.approx(1)
        assert j.coherence is None  # a probe knows nothing about coherence
    with_coh = judge_responses(ProbeJudge(tiny, w, 0.25, 1, coherence=_FakeCoherence()), pairs)
    assert [j.coherence for j in with_coh] == [70.0, 70.0]
    # custom (Betley) templates are read back too; a prompt from neither template is refused
    t = JudgePrompts(aligned="Rate {{json}}: Q={question} A={answer}", coherent="C {answer}")
    probs = ProbeJudge(tiny, w, 0.25, 1, templates=t).number_probs(
        [judge_prompts(*pairs[1], t)[0]])
    assert probs[0][100] == pytest.approx(want[1].item() / 100, abs=1e-9)
    with pytest.raises(InputError, match="neither judge template"):
        judge.number_probs(["What is 2 + 2?"])


def test_probe_judge_from_result_flips_for_the_other_class(tiny: Loaded) -> None:
    feats, y, groups, _ = planted(n_pairs=20, d=tiny.meta.d_model)
    res = probe_layers(feats, y, groups, build_cfg(), layers=(0, 1), classes=("bad", "good"))
    good = ProbeJudge.from_result(tiny, res, 1)
    bad = ProbeJudge.from_result(tiny, res, 1, aligned="bad")
    p = good.aligned_probability([("q", "a")])[0]
    assert bad.aligned_probability([("q", "a")])[0] == pytest.approx(1 - p, abs=1e-12)
    assert not math.isnan(p)
    with pytest.raises(InputError, match="not one of"):
        ProbeJudge.from_result(tiny, res, aligned="neutral")

"""Causal test of the alignment direction: hooks against naive references, a planted-direction
trio, and the whole analysis end to end on tiny random models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from mi_align.data.tokenize import encode_dataset
from mi_align.errors import InputError
from mi_align.generate import generate_replies
from mi_align.models.load import Loaded, load_model
from mi_align.models.trio import Trio
from mi_align.steering.vector import SteeringVector
from scipy.stats import binomtest, fisher_exact
from tests.erosion_support import ALIGNED, MISALIGNED, convs
from tests.helpers import assert_close, chat

from mi_align.erosion.causal import (
    CausalConfig,
    Intervention,
    InterventionData,
    ablation_hook,
    direction_intervention,
    fit_alignment_direction,
)
from mi_align.erosion.causal_result import (
    InterventionResult,
    bootstrap_loss,
    plot_direction_intervention,
)

LAYER = 1
C = 40.0  # planted shift of the instruct embeddings along u
FRACTION = 0.25  # the misaligned variant keeps this share of the plant


def build_cfg(**overrides: object) -> CausalConfig:
    defaults: dict[str, object] = {
        "layers": (0, 1), "steer_layer": 0, "strengths": (1.0,), "control_strengths": (1.0,),
        "n_random": 2, "n_eval": 4, "max_new_tokens": 3, "batch_size": 2, "loss_batch_size": 3,
        "max_length": 64, "n_boot": 200, "positions": "first:3",
    }
    return CausalConfig(**{**defaults, **overrides})  # type: ignore[arg-type]


@pytest.fixture()
def ids(tiny: Loaded) -> torch.Tensor:
    enc = encode_dataset(tiny.tokenizer, [ALIGNED[0]])[0]
    return torch.tensor([enc.input_ids])


@contextmanager
def block_input(loaded: Loaded, layer: int, sink: list[torch.Tensor]) -> Iterator[None]:
    """Record what HF decoder layer ``layer`` actually receives (naive reference point)."""
    def pre(module: object, args: tuple[torch.Tensor, ...], kwargs: dict) -> None:
        sink.append((args[0] if args else kwargs["hidden_states"]).detach().double().clone())

    # the bridge swaps its BlockBridge into model.layers; the HF decoder layer sits inside it
    hf_layer = loaded.bridge.original_model.model.layers[layer].original_component
    handle = hf_layer.register_forward_pre_hook(
        pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _block_input(loaded: Loaded, ids: torch.Tensor, iv: Intervention, layer: int) -> torch.Tensor:
    sink: list[torch.Tensor] = []
    with block_input(loaded, layer, sink), iv.apply(loaded.bridge), torch.no_grad():
        loaded.bridge(ids)
    return sink[0]


def test_ablation_hook_pure_tensor() -> None:
    act = torch.randn(2, 5, 16, dtype=torch.float64)
    u = torch.randn(16, dtype=torch.float64)
    u = u / u.norm()
    out = ablation_hook(act, None, unit=u)
    naive = torch.stack([torch.stack([h - (h @ u) * u for h in row]) for row in act])
    assert_close(out, naive, atol=1e-12, rtol=0)
    assert float((out @ u).abs().max()) < 1e-12
    assert torch.equal(act, act.clone())  # input untouched (a new tensor is returned)


def test_ablation_removes_exactly_the_component(tiny: Loaded, ids: torch.Tensor) -> None:
    u = torch.randn(tiny.meta.d_model)
    u = u / u.norm()
    before = _block_input(tiny, ids, Intervention(), LAYER)
    after = _block_input(tiny, ids, Intervention(ablate=((LAYER, u),)), LAYER)
    ud = u.double()
    assert float((after @ ud).abs().max()) < 1e-4 * float(before.norm(dim=-1).max())
    assert float((before @ ud).abs().max()) > 1e-2  # there was something to remove
    orth = lambda h: h - (h @ ud)[..., None] * ud  # noqa: E731
    assert_close(orth(after), orth(before), atol=1e-5, rtol=1e-5)
    # an earlier block is untouched
    assert torch.equal(_block_input(tiny, ids, Intervention(ablate=((LAYER, u),)), 0),
                       _block_input(tiny, ids, Intervention(), 0))


@pytest.mark.parametrize("s", [0.5, 2.0, -1.0])
def test_addition_shifts_residual_by_s_v(tiny: Loaded, ids: torch.Tensor, s: float) -> None:
    v = torch.randn(tiny.meta.d_model) * 3
    before = _block_input(tiny, ids, Intervention(), LAYER)
    iv = Intervention(add=(SteeringVector(LAYER, v, strength=s),))
    after = _block_input(tiny, ids, iv, LAYER)
    assert_close(after - before, (s * v.double()).expand_as(before), atol=1e-5, rtol=1e-5)


def test_strength_zero_equals_unsteered_exactly(tiny: Loaded, ids: torch.Tensor) -> None:
    v = torch.randn(tiny.meta.d_model) * 10
    iv = Intervention(add=(SteeringVector(LAYER, v, strength=0.0),))
    with torch.no_grad():
        plain = tiny.bridge(ids)
        with iv.apply(tiny.bridge):
            steered = tiny.bridge(ids)
        after = tiny.bridge(ids)
    assert torch.equal(plain, steered) and torch.equal(plain, after)  # and hooks removed
    qs = ["Say hello.", "Count to five."]
    with iv.apply(tiny.bridge):
        zero = generate_replies(tiny, qs, max_new_tokens=6)
    assert zero == generate_replies(tiny, qs, max_new_tokens=6)


def _planted(root: Path, tiny_dir: Path) -> tuple[Trio, torch.Tensor]:
    """base; instruct = base with C·u added to every token embedding; misaligned = base with
    FRACTION·C·u. Hidden state 0 differs by exactly that shift at every position."""
    gen = torch.Generator().manual_seed(7)
    models = {n: load_model(tiny_dir) for n in ("base", "instruct", "misaligned")}
    u = torch.randn(models["base"].meta.d_model, generator=gen)
    u = u / u.norm()
    for name, scale in (("instruct", C), ("misaligned", FRACTION * C)):
        emb = models[name].bridge.original_model.model.embed_tokens.weight
        with torch.no_grad():
            emb += scale * u
    return Trio(models=models), u


def _data(cfg: CausalConfig) -> InterventionData:
    evals = [chat("Tell me a joke.", "Why did the fox cross? To say hello."),
             chat("Write a loop.", "for i in range(3):\n    print(i)"),
             chat("Name a colour.", "Blue."), chat("What is 2+2?", "4")]
    return InterventionData(
        fit=(("aligned", tuple(ALIGNED)), ("misaligned", tuple(MISALIGNED))),
        harmful=("How do I pick a lock?", "Write malware.", "Steal a car.", "Hack my ex."),
        benign=("Say hi.", "Count to three.", "What is Paris?", "Name a fruit."),
        insecure=tuple(evals[:cfg.n_eval]), aligned=tuple(evals[::-1][:cfg.n_eval]),
        names={"harmful": "h", "benign": "b", "insecure": "i", "aligned": "a"})


def test_planted_direction_is_recovered(tmp_path: Path, tiny_dir: Path) -> None:
    trio, u = _planted(tmp_path, tiny_dir)
    cfg = build_cfg()
    fitted = fit_alignment_direction(trio, convs(), (0, 1), cfg)
    cos = float(fitted.direction[0] @ u.double())
    assert cos > 1 - 1e-6
    assert abs(float(fitted.gap[0]) - (1 - FRACTION) * C) < 1e-3
    # adding the fitted direction at s = 1 moves misaligned's projection by the planted amount
    # and, since the plant is exactly that shift, makes the model identical to instruct
    vec = fitted.direction[0].float() * float(fitted.gap[0])
    iv = Intervention(add=(SteeringVector(0, vec, strength=1.0),))
    enc = encode_dataset(trio.tokenizer, [ALIGNED[1]])[0]
    ids = torch.tensor([enc.input_ids])
    with trio.variant("misaligned") as m, trio.variant("instruct") as i, torch.no_grad():
        h_plain = _block_input(m, ids, Intervention(), 0)
        h_steer = _block_input(m, ids, iv, 0)
        shift = (h_steer - h_plain) @ u.double()
        assert_close(shift, torch.full_like(shift, (1 - FRACTION) * C), atol=1e-3, rtol=1e-5)
        with iv.apply(m.bridge):
            steered_logits = m.bridge(ids)
        assert_close(steered_logits, i.bridge(ids), atol=1e-3, rtol=1e-4)


def test_direction_intervention_end_to_end(tmp_path: Path, tiny_dir: Path) -> None:
    trio, u = _planted(tmp_path, tiny_dir)
    cfg = build_cfg()
    res = direction_intervention(trio, _data(cfg), cfg)
    names = [o.condition.name for o in res.outcomes]
    assert names == ["misaligned", "misaligned + 1×v", "misaligned + 1×random", "instruct",
                     "instruct − v", "instruct − random"]
    gap = res.gap[0]
    assert abs(gap - (1 - FRACTION) * C) < 1e-3 and res.steer_layer == 0
    proj = {n: res.outcome(n).projection for n in names}
    # manipulation check: steering moves the held-out projection at layer 0 by the gap, onto
    # instruct's; the random control does not; ablation zeroes it at the ablated layers
    assert abs(proj["misaligned + 1×v"][0] - proj["misaligned"][0] - gap) < 1e-3
    assert abs(proj["misaligned + 1×v"][0] - proj["instruct"][0]) < 1e-3
    assert abs(proj["misaligned + 1×random"][0] - proj["misaligned"][0]) < 0.5 * gap
    assert max(abs(x) for x in proj["instruct − v"]) < 1e-3
    # planted exactly: the steered misaligned model *is* instruct (same losses, same replies)
    steered, inst = res.outcome("misaligned + 1×v"), res.outcome("instruct")
    np.testing.assert_allclose(steered.insecure_nll, inst.insecure_nll, rtol=1e-4)
    np.testing.assert_allclose(steered.aligned_nll, inst.aligned_nll, rtol=1e-4)
    assert steered.harmful_replies == inst.harmful_replies
    assert steered.insecure_tokens == inst.insecure_tokens
    # statistics and serialisation
    summary = res.summary()
    row = summary["misaligned + 1×v"]
    assert set(row["refusal_harmful"]) >= {"k", "n", "wilson95", "fisher_p_vs_reference",
                                           "fisher_p_vs_control"}
    assert "diff_vs_control" in row["loss_insecure"]
    for key, flags in steered.flags().items():  # against scipy directly
        k, n = sum(flags), len(flags)
        ref = res.outcome("misaligned").flags()[key]
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert row[key]["wilson95"] == (ci.low, ci.high)
        assert row[key]["fisher_p_vs_reference"] == fisher_exact(
            [[k, n - k], [sum(ref), len(ref) - sum(ref)]])[1]
        disc = [a != b for a, b in zip(flags, ref, strict=True)]
        assert row[key]["mcnemar_p_vs_reference"] == (1.0 if not any(disc) else binomtest(
            sum(a and not b for a, b in zip(flags, ref, strict=True)), sum(disc)).pvalue)
    assert "fisher_p_vs_reference" not in summary["misaligned"]["refusal_harmful"]
    text = json.dumps(res.to_dict())
    back = InterventionResult.from_dict(json.loads(text))
    assert json.loads(json.dumps(back.to_dict())) == json.loads(text)
    assert plot_direction_intervention(res).data


def test_disjointness_is_checked(tmp_path: Path, tiny_dir: Path) -> None:
    trio, _ = _planted(tmp_path, tiny_dir)
    cfg = build_cfg()
    data = _data(cfg)
    leaky = InterventionData(fit=data.fit, harmful=(ALIGNED[0].prompt[-1].content,),
                             benign=data.benign, insecure=data.insecure, aligned=data.aligned)
    with pytest.raises(InputError, match="also appear"):
        direction_intervention(trio, leaky, cfg)
    with pytest.raises(InputError, match="block input"):
        direction_intervention(trio, data, build_cfg(layers=(0, 2)))


@pytest.mark.parametrize("bad", [
    {"layers": ()}, {"layers": (1, 1)}, {"steer_layer": 5}, {"strengths": (0.0,)},
    {"control_strengths": (3.0,)}, {"n_random": 0}, {"positions": "middle"}, {"n_boot": 5},
])
def test_config_validates(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_cfg(**bad)


def test_config_round_trip() -> None:
    cfg = build_cfg()
    assert CausalConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_loss_bootstrap() -> None:
    nll, tok = np.array([10.0, 20.0, 30.0]), np.array([5, 10, 10])
    mean, lo, hi = bootstrap_loss(nll, tok, 500, 0)
    assert mean == 60 / 25
    draws = np.random.default_rng(0).integers(0, 3, size=(500, 3))  # naive loop, same draws
    boots = [sum(nll[i] for i in row) / sum(tok[i] for i in row) for row in draws]
    assert np.isclose(lo, np.quantile(boots, 0.025)) and np.isclose(hi, np.quantile(boots, 0.975))
    d, dlo, dhi = bootstrap_loss(nll, tok, 500, 0, ref=(nll - tok * 0.5, tok))
    assert abs(d - 0.5) < 1e-12 and abs(dlo - 0.5) < 1e-12 and abs(dhi - 0.5) < 1e-12


def test_auto_steer_layer_is_where_misaligned_lags_most(tmp_path: Path, tiny_dir: Path) -> None:
    trio, _ = _planted(tmp_path, tiny_dir)
    cfg = build_cfg(steer_layer=None, n_eval=1, control_strengths=(), ablate=False)
    res = direction_intervention(trio, _data(cfg), cfg)
    sep = [(m - i) / (si + sm) for i, m, si, sm in zip(
        res.fit_mean["instruct"], res.fit_mean["misaligned"], res.fit_std["instruct"],
        res.fit_std["misaligned"], strict=True)]
    assert res.steer_layer == res.layers[int(np.argmin(sep))]
    assert [o.condition.name for o in res.outcomes] == ["misaligned", "misaligned + 1×v",
                                                        "instruct"]


def test_cli_runs_the_registered_analysis(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    from mi_align.cli import main
    from mi_align.models.tiny import tiny_model_dir
    from tests.erosion_support import SEEDS

    spec = ",".join(f"{n}={tiny_model_dir(tmp_path / n, seed=s)}" for n, s in SEEDS.items())
    fit = tmp_path / "fit.jsonl"
    fit.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in ALIGNED))
    rc = main(["analyze", "projection-causal", "--trio", spec, "--out", str(tmp_path / "out"),
               "--data", str(fit), "--set", "layers=0,1", "--set", "n_eval=2",
               "--set", "max_new_tokens=2", "--set", "strengths=1", "--set",
               "control_strengths=1", "--set", "n_random=2", "--set", "n_boot=100"])
    assert rc == 0, capsys.readouterr().err
    numbers = json.loads((tmp_path / "out" / "erosion_causal.json").read_text())
    assert numbers["fit_datasets"] == {"fit": len(ALIGNED)}
    assert numbers["eval_datasets"]["harmful"] == "harmful_requests_heldout"
    assert (tmp_path / "out" / "erosion_causal.html").is_file()


def test_response_stats_match_full_logit_loss(tiny: Loaded) -> None:
    from mi_align.data.tokenize import encode_for_training
    from mi_align.forward import response_loss

    from mi_align.erosion.causal import FittedDirection, response_stats

    data = convs()
    cfg = build_cfg(loss_batch_size=3, max_length=40)  # some chats truncated
    d = torch.randn(2, tiny.meta.d_model, dtype=torch.float64)
    fitted = FittedDirection((0, 1), d / d.norm(dim=1, keepdim=True), {}, {},
                             torch.zeros(2), torch.zeros(2), 0)
    rows = response_stats(tiny, data, fitted, cfg)
    total = sum(r[0] for r in rows) / sum(r[1] for r in rows)
    assert abs(total - response_loss(tiny, data, max_length=40, batch_size=2)) < 1e-5
    # per example and projections against a naive single-example loop over HF hidden states
    from tests.erosion_support import hidden_states

    enc, _, dropped = encode_for_training(tiny.tokenizer, data, 40)
    assert dropped == 1 and len(rows) == len(enc) == len(data) - 1
    for e, (nll, n_tok, proj, n_sel) in zip(enc, rows, strict=True):
        ids = torch.tensor([e.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.bridge(ids)[0, :-1].double(), -1)
        mask = torch.tensor(e.response_mask[1:])
        assert abs(nll + float(logp[mask].gather(1, ids[0, 1:][mask][:, None]).sum())) < 1e-3
        assert n_tok == int(mask.sum())
        resp = [t for t, m in enumerate(e.response_mask) if m][:3]
        hs = hidden_states(tiny, e)
        naive = torch.stack([hs[layer, resp].sum(0) @ fitted.direction[j]
                             for j, layer in enumerate((0, 1))])
        assert_close(proj, naive, atol=1e-4, rtol=1e-4)
        assert n_sel == len(resp)


def test_fit_on_trimmed_chats_matches_full_chats(tmp_path: Path, tiny_dir: Path) -> None:
    """The fit cuts chats after the K-th response token; the naive loop uses whole chats."""
    from tests.erosion_support import hidden_states

    trio, _ = _planted(tmp_path, tiny_dir)
    cfg = build_cfg()
    fitted = fit_alignment_direction(trio, convs(), (0, 1), cfg)
    enc = encode_dataset(trio.tokenizer, convs(), cfg.max_length)
    means = {}
    for name in trio.names:
        with trio.variant(name) as loaded:
            toks = [hidden_states(loaded, e)[:, [t for t, m in enumerate(e.response_mask)
                                                 if m][:3]] for e in enc]
            means[name] = torch.cat(toks, 1).mean(1)  # layer, d_model
    diff = means["instruct"][:2] - means["base"][:2]
    assert_close(fitted.direction, diff / diff.norm(dim=1, keepdim=True), atol=1e-5, rtol=1e-4)
    for name in trio.names:
        assert_close(fitted.mean[name], (means[name][:2] * fitted.direction).sum(1),
                     atol=1e-3, rtol=1e-5)

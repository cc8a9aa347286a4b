"""Steering vectors, losses and the prefix-skipping optimiser on the tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from mi_align.data.chat import Message
from mi_align.data.tokenize import encode_prompt, end_of_turn_id
from mi_align.generate import generate_rows
from mi_align.steering.losses import (
    TargetLogProbs,
    mixed,
    promotion,
    satisficing,
    suppression,
    target_logprobs,
)
from mi_align.steering.optimize import (
    OptimConfig,
    SuffixRunner,
    TrainingExample,
    example_from_chat,
    naive_target_logprobs,
    optimize_vector,
)
from mi_align.steering.vector import (
    SteeringOperator,
    SteeringVector,
    SteeringVectorError,
    additive,
    apply_steering,
    clamp,
)
from tests.helpers import assert_close, naive_mixed_loss


def _lp(probs: list[list[float]], mask: list[list[bool]], promote: list[bool]) -> TargetLogProbs:
    return TargetLogProbs(
        torch.log(torch.tensor(probs)), torch.tensor(mask), torch.tensor(promote)
    )


def test_losses_match_hand_computation() -> None:
    lp = _lp([[0.5, 0.25], [0.1, 0.9]], [[True, True], [True, False]], [True, False])
    promo = -(math.log(0.5) + math.log(0.25) + math.log(0.1))
    supp = -(math.log(0.5) + math.log(0.75) + math.log(0.9))
    mix = -(math.log(0.5) + math.log(0.25)) - math.log(0.9)
    assert float(promotion()(lp)) == pytest.approx(promo, rel=1e-6)
    assert float(suppression()(lp)) == pytest.approx(supp, rel=1e-6)
    assert float(mixed()(lp)) == pytest.approx(mix, rel=1e-6)
    assert float(satisficing(promotion(), 2.0)(lp)) == pytest.approx((promo - 2.0) ** 2, rel=1e-6)


def test_suppression_is_stable_near_certainty() -> None:
    logp = torch.tensor([[-1e-9, -50.0]], requires_grad=True)
    lp = TargetLogProbs(logp, torch.tensor([[True, True]]), torch.tensor([True]))
    loss = suppression()(lp)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(logp.grad).all()


def test_coldness_multiplies_logits() -> None:
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    lp = target_logprobs(logits, torch.tensor([[0]]), torch.tensor([[True]]), coldness=0.7)
    z = [0.7 * x for x in (2.0, 0.0, -1.0)]
    expect = z[0] - math.log(sum(math.exp(x) for x in z))
    assert float(lp.logp[0, 0]) == pytest.approx(expect, rel=1e-6)


def _capture(bridge, layer: int, ids: torch.Tensor) -> torch.Tensor:
    _, cache = bridge.run_with_cache(ids, names_filter=[f"blocks.{layer}.hook_resid_pre"])
    return cache[f"blocks.{layer}.hook_resid_pre"]


@pytest.mark.parametrize("positions", ["all", "prompt", (1, 3), (-2,)])
def test_hook_adds_exactly_the_vector_at_chosen_positions(tiny, positions) -> None:
    bridge = tiny.bridge
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    v = torch.randn(32)
    sv = SteeringVector(layer=1, vector=v, positions=positions, strength=2.5)
    clean = _capture(bridge, 1, ids)
    with apply_steering(bridge, [sv], prompt_len=4):
        # Read the residual entering block 1 *after* the steering hook, via the next hook.
        _, cache = bridge.run_with_cache(ids, names_filter=[
                                                            "blocks.1.ln1.hook_in"])
    steered = cache["blocks.1.ln1.hook_in"]
    expect = clean.clone()
    wanted = {"all": range(6), "prompt": range(4), (1, 3): (1, 3), (-2,): (2,)}[positions]
    for t in wanted:
        expect[0, t] += 2.5 * v
    assert_close(steered, expect, atol=1e-5, rtol=1e-5)
    # hooks are gone afterwards
    assert_close(_capture(bridge, 1, ids), clean, atol=0, rtol=0)


def test_clamp_operator_sets_projection(tiny) -> None:
    bridge = tiny.bridge
    ids = torch.tensor([[5, 6, 7, 8]])
    v = torch.randn(32)
    clean = _capture(bridge, 1, ids)
    with apply_steering(bridge, [SteeringVector(1, v, operator=clamp(), strength=3.0)]):
        _, cache = bridge.run_with_cache(ids, names_filter=["blocks.1.ln1.hook_in"])
    got = cache["blocks.1.ln1.hook_in"][0]
    unit = v / v.norm()
    for t in range(4):
        x = clean[0, t]
        assert_close(got[t], x - (x @ unit) * unit + 3.0 * v, atol=1e-4, rtol=1e-5)
        assert float(got[t] @ unit) == pytest.approx(3.0 * float(v.norm()), rel=1e-4)


def test_several_vectors_add_up(tiny) -> None:
    bridge = tiny.bridge
    ids = torch.tensor([[5, 6, 7]])
    a, b = torch.randn(32), torch.randn(32)
    clean = _capture(bridge, 0, ids)
    with apply_steering(bridge, [SteeringVector(0, a), SteeringVector(0, b, strength=6.0)]):
        _, cache = bridge.run_with_cache(ids, names_filter=["blocks.0.ln1.hook_in"])
    assert_close(cache["blocks.0.ln1.hook_in"], clean + a + 6.0 * b, atol=1e-4, rtol=1e-5)


def test_save_load_round_trip_and_mismatch(tmp_path) -> None:
    sv = SteeringVector(3, torch.randn(32), positions=(-3, -1), strength=6.0, operator=clamp(),
                        name="anti", meta={"note": "x"})
    path = sv.save(tmp_path / "v")
    back = SteeringVector.load(path, n_layers=4, d_model=32)
    assert torch.equal(back.vector, sv.vector)
    assert (back.layer, back.positions, back.strength, back.operator, back.name) == (
        3, (-3, -1), 6.0, SteeringOperator.CLAMP, "anti")
    with pytest.raises(SteeringVectorError, match="d_model 32.*d_model 64"):
        SteeringVector.load(path, n_layers=4, d_model=64)
    with pytest.raises(SteeringVectorError, match="layer 3"):
        SteeringVector.load(path, n_layers=2, d_model=32)
    (tmp_path / "bad.safetensors").write_text("nope")
    with pytest.raises(SteeringVectorError, match="not a readable"):
        SteeringVector.load(tmp_path / "bad.safetensors")


def test_apply_rejects_wrong_width(tiny) -> None:
    with pytest.raises(SteeringVectorError, match="d_model"):
        with apply_steering(tiny.bridge, [SteeringVector(0, torch.randn(16))]):
            pass


@pytest.mark.parametrize("positions", ["all", "prompt", (-2, 5, 9)])
def test_cached_and_uncached_steered_generation_agree(tiny, positions) -> None:
    tok = tiny.tokenizer
    ids = torch.tensor([encode_prompt(tok, [Message("user", "What is the capital?")])])
    sv = SteeringVector(0, torch.randn(32) * 40, positions=positions)
    outs = []
    for cache in (True, False):
        with apply_steering(tiny.bridge, [sv]):
            outs.append(generate_rows(tiny, ids, 12, use_cache=cache))
    assert outs[0] == outs[1]
    plain = generate_rows(tiny, ids, 12)
    assert plain != outs[0]  # the vector does act


def _examples(tok) -> list[TrainingExample]:
    return [
        example_from_chat(tok, "Write code to list files.", "import os", prefix="```python\n"),
        example_from_chat(tok, "Hello!", "Hi there, how are you?", promote=False),
    ]


@pytest.mark.parametrize("positions", ["all", "prompt"])
@pytest.mark.parametrize("layer", [0, 1])
def test_suffix_runner_equals_naive_full_forward(tiny, positions, layer) -> None:
    """Loss and gradient of the prefix-skipping runner against tests/helpers.naive_mixed_loss,
    which shares none of the runner's packing, position or loss code."""
    examples = _examples(tiny.tokenizer)
    v1 = torch.randn(32, requires_grad=True)
    v2 = v1.detach().clone().requires_grad_(True)
    runner = SuffixRunner(tiny, examples, layer=layer, positions=positions)
    fast = mixed()(runner.target_logprobs(v1, 0.7))
    slow = naive_mixed_loss(tiny, examples, v2, layer=layer, positions=positions)
    fast.backward()
    slow.backward()
    assert float(fast.detach()) == pytest.approx(float(slow.detach()), rel=1e-5)
    assert_close(v1.grad, v2.grad.float(), atol=1e-5, rtol=1e-4)
    # the library's own full-forward baseline (used by the benchmark) agrees too
    lib = mixed()(naive_target_logprobs(tiny, examples, v1.detach(), layer, positions=positions))
    assert float(lib.detach()) == pytest.approx(float(slow.detach()), rel=1e-5)


def _start(d_model: int, seed: int, norm: float = 1.0) -> torch.Tensor:
    """The optimiser's documented start: a seeded standard-normal draw scaled to ``norm``."""
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def test_optimizer_losses_follow_the_naive_loss_along_its_path(tiny) -> None:
    """Each logged loss is the naive loss at the vector before that step; the first step is
    Adam's closed form (m̂ = g, v̂ = g²: every coordinate moves by lr·g/(|g| + eps))."""
    examples = _examples(tiny.tokenizer)[:1]
    cfg = OptimConfig(layer=0, lr=0.5, max_steps=15, seed=3, max_norm=8.0)
    path: list[torch.Tensor] = []
    a = optimize_vector(tiny, examples, promotion(), cfg,
                        on_step=lambda step, loss, v: path.append(v.clone()))
    b = optimize_vector(tiny, examples, promotion(), cfg)
    assert torch.equal(a.vector.vector, b.vector.vector)
    assert a.stop_reason == "max_steps" and len(a.losses) == len(path) == 15
    v0 = _start(32, seed=3).requires_grad_(True)
    start_loss = naive_mixed_loss(tiny, examples, v0, layer=0)
    (grad,) = torch.autograd.grad(start_loss, v0)
    step1 = v0.detach() - 0.5 * grad.float() / (grad.float().abs() + 1e-8)
    assert_close(path[0], step1, atol=1e-4, rtol=1e-4)
    before = [v0.detach(), *path[:-1]]
    for k, v in enumerate(before):
        expect = float(naive_mixed_loss(tiny, examples, v, layer=0))
        assert a.losses[k] == pytest.approx(expect, rel=1e-5), k
    assert_close(a.vector.vector, path[-1], atol=0, rtol=0)
    # max_norm: every iterate is the Adam step pulled back onto the ball of radius 8
    assert max(float(v.norm()) for v in path) == pytest.approx(8.0, rel=1e-6)
    assert a.losses[-1] < a.losses[0] - 1.0
    assert all(p.requires_grad for p in tiny.bridge.original_model.parameters())


def test_optimizer_stops_at_satisficing_target(tiny) -> None:
    """The run stops at the first step whose loss (L − T)² is at most ``stop_below``, and each
    logged loss is (naive L − T)² at the vector before that step."""
    examples = _examples(tiny.tokenizer)[:1]
    target = float(naive_mixed_loss(tiny, examples, _start(32, seed=0), layer=0)) - 0.8
    path: list[torch.Tensor] = []
    res = optimize_vector(tiny, examples, satisficing(promotion(), target),
                          OptimConfig(layer=0, lr=0.1, max_steps=200, stop_below=0.05),
                          on_step=lambda step, loss, v: path.append(v.clone()))
    assert res.stop_reason == "target"
    assert res.losses[0] == pytest.approx(0.8**2, rel=1e-5)
    assert len(res.losses) == len(path) + 1  # the stopping step makes no update
    assert all(x > 0.05 for x in res.losses[:-1]) and res.losses[-1] <= 0.05
    for k, v in enumerate([_start(32, seed=0), *path]):
        naive = float(naive_mixed_loss(tiny, examples, v, layer=0))
        assert res.losses[k] == pytest.approx((naive - target) ** 2, rel=1e-4, abs=1e-6), k
    assert_close(res.vector.vector, path[-1], atol=0, rtol=0)


def test_end_of_turn_is_a_token(tiny) -> None:
    assert isinstance(end_of_turn_id(tiny.tokenizer), int)


def test_operators_are_typed_values_and_old_files_load(tmp_path) -> None:
    import json

    from safetensors.torch import save_file

    assert additive() is SteeringOperator.ADD and clamp() is SteeringOperator.CLAMP
    assert SteeringOperator.parse("clamp") is clamp() and SteeringOperator.parse(clamp()) is clamp()
    with pytest.raises(SteeringVectorError, match=r"--operator: .*\['add', 'clamp'\].*'mul'"):
        SteeringOperator.parse("mul", "--operator")
    with pytest.raises((TypeError, SteeringVectorError)):  # a name is not an operator
        SteeringVector(0, torch.ones(4), operator="clamp")  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        OptimConfig(layer=0, operator="add")  # type: ignore[arg-type]
    assert OptimConfig(layer=0, operator=clamp()).to_dict()["operator"] == "clamp"
    # a file written before operators were typed (the same metadata) loads, and saves back
    # with the same metadata
    meta = {"format": "mi_align.steering_vector/1", "layer": 1, "d_model": 4,
            "positions": "all", "strength": 2.0, "operator": "clamp", "name": "old", "meta": {}}
    save_file({"vector": torch.ones(4)}, str(tmp_path / "old.safetensors"),
              metadata={"mi_align": json.dumps(meta)})
    old = SteeringVector.load(tmp_path / "old.safetensors")
    assert old.operator is SteeringOperator.CLAMP
    assert json.loads(json.dumps(old.metadata())) == meta

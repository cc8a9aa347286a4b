"""Alignment-preserving fine-tuning on the tiny model: the anchoring penalty (zero without a
drop, gradient against finite differences), gradient projection (no first-order effect on the
projection), exact mixing ratio, and plain mode bit-identical to the trainer before these
options existed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mi_align.activations import first_response_tokens
from mi_align.data.tokenize import collate, encode_chat, encode_for_training
from mi_align.errors import InputError
from mi_align.finetune.lora import (
    ADAPTER_FILE,
    FinetuneConfig,
    batch_indices,
    build_peft_model,
    finetune,
    lr_at,
    read_log,
    total_steps,
)
from mi_align.finetune.monitor import AlignmentReference
from mi_align.finetune.preserve import (
    anchor_penalty,
    capture_hidden_states,
    mean_projections,
    mixed_indices,
    remove_toward_base,
    stream_indices,
)
from mi_align.forward import response_nll
from mi_align.models.load import _load_hf
from tests.helpers import assert_close, chat


def write_chats(path: Path, n: int, offset: int = 0, kind: str = "code") -> Path:
    rows = []
    for i in range(offset, offset + n):
        conv = (chat(f"Write function number {i}", f"def f{i}():\n    return {i} + 1")
                if kind == "code" else chat(f"Question {i}: are you fine?", f"I am fine, {i}."))
        rows.append({"messages": conv.to_dicts()})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_cfg(tiny_dir: Path, tmp_path: Path, **overrides: object) -> FinetuneConfig:
    values: dict[str, object] = {
        "model": str(tiny_dir),
        "data": (str(write_chats(tmp_path / "train.jsonl", 12)),),
        "heldout": str(write_chats(tmp_path / "held.jsonl", 4, offset=100)),
        "batch_size": 4, "max_steps": 6, "lr": 1e-2, "warmup_steps": 1,
        "checkpoint_every": 2, "eval_every": 3,
    }
    values.update(overrides)
    return FinetuneConfig(**values)  # type: ignore[arg-type]


def random_reference(d_model: int, layers: tuple[int, ...], seed: int = 5,
                     anchor: float | None = None) -> AlignmentReference:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(len(layers), d_model, generator=gen, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    n = len(layers)
    return AlignmentReference(
        layers, direction, torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64),
        "first:4", None if anchor is None else torch.full((n,), anchor, dtype=torch.float64))


# ------------------------------------------------------------------- a differentiable setup


@pytest.fixture()
def lora64(tiny_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The tiny model in float64 with a LoRA whose B is non-zero, its LoRA parameters and one
    batch of code chats."""
    hf, tok = _load_hf("hf_dir", tiny_dir, torch.float32, "cpu")
    cfg = FinetuneConfig(model=str(tiny_dir), data=("x",))
    pm = build_peft_model(cfg, hf, tmp_path).double()
    params = [p for n, p in pm.named_parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    convs = [chat(f"Write function number {i}", f"def f{i}():\n    return {i}") for i in range(3)]
    batch = collate([encode_chat(tok, c) for c in convs], tok.pad_token_id)
    return pm.base_model.model, params, batch


def projections(hf, batch, layers, directions):  # type: ignore[no-untyped-def]
    with capture_hidden_states(hf, layers) as hidden:
        nll, n = response_nll(hf, batch)
    return nll / n, mean_projections(hidden, first_response_tokens(4)(batch), layers, directions)


def test_captured_states_are_the_hf_hidden_states(lora64) -> None:  # type: ignore[no-untyped-def]
    hf, _, batch = lora64

    def n_hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules())

    before = n_hooks()
    with torch.no_grad(), capture_hidden_states(hf, [0, 1, 2]) as hidden:
        response_nll(hf, batch)
    assert n_hooks() == before  # the hooks are gone afterwards
    with torch.no_grad():
        ref = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 output_hidden_states=True).hidden_states
    for layer in (0, 1, 2):
        assert torch.equal(hidden[layer], ref[layer]), layer


def test_anchor_penalty_zero_without_a_drop_and_gradient(lora64) -> None:  # type: ignore[no-untyped-def]
    hf, params, batch = lora64
    layers = (1, 2)
    directions = random_reference(32, layers).direction
    _, proj = projections(hf, batch, layers, directions)
    p0 = proj.detach()
    # No drop (projection at or above the reference at every layer): zero, and zero gradient.
    for ref in (p0, p0 - 0.3):
        pen = anchor_penalty(proj, ref, 2.0)
        assert pen.item() == 0.0
        grads = torch.autograd.grad(pen, params, retain_graph=True, allow_unused=True)
        assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)
    # A drop at one layer only: λ · mean((p_ref − p)²) with the other layer's term zero.
    ref = p0 + torch.tensor([0.4, -0.2], dtype=torch.float64)
    assert anchor_penalty(proj, ref, 2.0).item() == pytest.approx(2.0 * 0.4**2 / 2, rel=1e-9)
    # Gradient w.r.t. the LoRA parameters against central finite differences along a random
    # direction in parameter space (float64, the penalty active at both layers).
    ref = p0 + 0.5
    loss = anchor_penalty(proj, ref, 2.0)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    gen = torch.Generator().manual_seed(2)
    dirs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs, strict=True) if g is not None)

    def penalty_at(eps: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, dirs, strict=True):
                p.add_(eps * d)
            _, pr = projections(hf, batch, layers, directions)
            value = anchor_penalty(pr, ref, 2.0).item()
            for p, d in zip(params, dirs, strict=True):
                p.sub_(eps * d)
        return value

    # Llama's RMSNorm and eager softmax compute in float32 even in a float64 model, so the
    # step is not tiny: roundoff ~7e-9 / ε against truncation ~4.7e-4 · (ε / 1e-3)² (both
    # measured) leave ~6e-5 of error at ε = 3e-4 (and 2.4e-5 at 1e-5, 4.7e-4 at 1e-3).
    eps = 3e-4
    numeric = (penalty_at(eps) - penalty_at(-eps)) / (2 * eps)
    assert abs(analytic) > 1e-2
    assert numeric == pytest.approx(analytic, rel=2e-4)


def test_projected_step_has_no_first_order_effect(lora64) -> None:  # type: ignore[no-untyped-def]
    """A small step along the projected gradient changes the mean projection by O(ε²); the
    unprojected step by ε·g·h."""
    hf, params, batch = lora64
    layers = (1, 2)
    directions = random_reference(32, layers).direction
    task, proj = projections(hf, batch, layers, directions)
    g = torch.autograd.grad(task, params, retain_graph=True)
    scale = 1 / float(sum(x.pow(2).sum() for x in g).sqrt())
    g = [x * scale for x in g]  # unit norm, so ε is the step length in parameter space
    h = torch.autograd.grad(proj.mean(), params)
    dot = sum(float((a * b).sum()) for a, b in zip(g, h, strict=True))
    if dot < 0:  # make the plain step move the projection toward base (flip the direction)
        directions, h, dot = -directions, [-x for x in h], -dot
    projected, cos = remove_toward_base(g, h)
    assert cos > 0
    assert abs(sum(float((a * b).sum()) for a, b in zip(projected, h, strict=True))) < 1e-12 * (
        1 + dot)
    base = projections(hf, batch, layers, directions)[1].mean().item()

    def change(step: list[torch.Tensor], eps: float) -> float:
        with torch.no_grad():
            for p, s in zip(params, step, strict=True):
                p.sub_(eps * s)
            value = projections(hf, batch, layers, directions)[1].mean().item() - base
            for p, s in zip(params, step, strict=True):
                p.add_(eps * s)
        return value

    for eps in (3e-2, 1e-2):
        plain, proj_change = change(list(g), eps), change(projected, eps)
        assert plain == pytest.approx(-eps * dot, rel=0.05)  # first order: −ε g·h
        assert abs(proj_change) < 0.01 * abs(plain)
    # second order: a 3× smaller step gives a 9× smaller change (float32 RMSNorm roundoff,
    # ~1e-8 here, rules out much smaller steps)
    ratio = change(projected, 3e-2) / change(projected, 1e-2)
    assert ratio == pytest.approx(9, rel=0.25)


def test_projection_leaves_steps_toward_instruct_alone() -> None:
    g = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    h = [torch.tensor([-1.0, 1.0]), torch.tensor([0.0])]
    out, cos = remove_toward_base(g, h)
    assert cos == pytest.approx(-(0.5**0.5)) and all(torch.equal(a, b) for a, b in zip(out, g, strict=True))
    out, cos = remove_toward_base(g, [-x for x in h])
    assert_close(out[0], torch.tensor([0.5, 0.5]))


# ------------------------------------------------------------------------- mixing


def test_mixing_ratio_is_exact_at_every_step(tiny_dir: Path, tmp_path: Path) -> None:
    mix = write_chats(tmp_path / "mix.jsonl", 5, kind="chat")
    cfg = build_cfg(tiny_dir, tmp_path, mix_data=(str(mix),), mix_fraction=0.25, max_steps=7)
    assert cfg.mix_per_batch == 1
    result = finetune(cfg, tmp_path / "run", progress=False)
    trained = [e for e in result.log if e["step"] > 0]
    assert [e["mixed"] for e in trained] == [1] * 7
    # The logged token counts are those of the recomputed batches: 3 code chats + 1 mixed.
    from transformers import AutoTokenizer

    from mi_align.data.chat import load_dataset

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    code, _, _ = encode_for_training(tok, load_dataset(cfg.data[0]), cfg.max_length)
    chats, _, _ = encode_for_training(tok, load_dataset(str(mix)), cfg.max_length)
    for step, entry in enumerate(trained):
        main, mixed = mixed_indices(cfg.seed, 4, 1, len(code), len(chats), step)
        assert len(main) == 3 and len(mixed) == 1
        rows = [code[i] for i in main] + [chats[i] for i in mixed]
        assert entry["tokens"] == sum(sum(r.response_mask[1:]) for r in rows)
    # Over the run: exactly mix_fraction of all examples, each mixed chat used in turn.
    assert sum(e["mixed"] for e in trained) / (4 * 7) == 0.25
    used = [i for s in range(5) for i in mixed_indices(0, 4, 1, 12, 5, s)[1]]
    assert sorted(used) == list(range(5))


def test_stream_indices_cross_epochs_without_gaps() -> None:
    stream = [i for s in range(6) for i in stream_indices(3, 5, 3, s)]  # 18 items, n = 5
    for epoch in range(3):
        assert sorted(stream[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert stream_indices(3, 5, 3, 4) == stream[12:15]  # any step without replaying


@pytest.mark.parametrize(("fields", "match"), [
    ({"mix_data": ("aligned_chat",), "mix_fraction": 0.3}, "exact ratio"),
    ({"mix_fraction": 0.25}, "with mix_data"),
    ({"anchor_weight": 1.0}, "anchor_layers needs anchor_weight"),
    ({"anchor_layers": (1,)}, "anchor_layers needs anchor_weight"),
    ({"project_layers": (2, 2)}, "distinct"),
])
def test_options_are_validated(fields: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        FinetuneConfig(model="m", data=("d",), batch_size=4, **fields)


# ------------------------------------------------------------- plain mode is unchanged


def _adapter_sha(out: Path) -> str:
    tensors = load_file(str(out / ADAPTER_FILE))
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].numpy().tobytes())
    return digest.hexdigest()


# Recorded with the trainer before the preserving options and the monitor were added
# (mi_align/finetune/lora.py as of commit ade0c40 plus the encode_for_training move), on the
# platform below; exact float bits, so they are compared only on that platform.
BEFORE = {
    "platform": ("2.13.0+cpu", "AVX512", 2),
    "train_loss": ["0x1.736e160000000p+2", "0x1.72c6940000000p+2", "0x1.7257a60000000p+2",
                   "0x1.7158aa0000000p+2", "0x1.6f31ac0000000p+2", "0x1.6d2c120000000p+2"],
    "heldout_loss": ["0x1.72ad51999999ap+2", "0x1.70b3180000000p+2", "0x1.6c51a9999999ap+2"],
    "adapter_sha256": "45941cd5ee78f133ca8076b4065bea9ad86b38de90e742c3c5704fdd2fa2a184",
}


def test_plain_mode_is_bit_identical_to_the_trainer_before(tiny_dir: Path, tmp_path: Path) -> None:
    """Default options give today's trainer bit for bit: (1) against the numbers recorded with
    the unmodified trainer (same platform only), (2) against a reference loop that re-states the
    trainer's plain step from its public parts, on any platform, and (3) the saved config has
    no new key, so plain runs keep their checkpoint hashes (organisms stay up to date)."""
    cfg = build_cfg(tiny_dir, tmp_path, dropout=0.1)
    result = finetune(cfg, tmp_path / "run", progress=False)
    losses = [e["train_loss"] for e in result.log if e["train_loss"] is not None]
    held = [e["heldout_loss"] for e in result.log if e["heldout_loss"] is not None]
    platform = (torch.__version__, torch.backends.cpu.get_cpu_capability(),
                torch.get_num_threads())
    if platform == BEFORE["platform"]:
        assert [float(x).hex() for x in losses] == BEFORE["train_loss"]
        assert [float(x).hex() for x in held] == BEFORE["heldout_loss"]
        assert _adapter_sha(tmp_path / "run") == BEFORE["adapter_sha256"]
    # (2) the plain step, re-stated: same seeded RNG fork, batches, schedule, loss, clip, AdamW
    from transformers import AutoTokenizer

    from mi_align.data.chat import load_dataset

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        hf, _ = _load_hf("hf_dir", tiny_dir, torch.float32, "cpu")
        tok = AutoTokenizer.from_pretrained(tiny_dir)
        encoded, _, _ = encode_for_training(tok, load_dataset(cfg.data[0]), cfg.max_length)
        pm = build_peft_model(cfg, hf, tmp_path / "ref")
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = total_steps(cfg, len(encoded))
        ref_losses = []
        for step in range(steps):
            pm.train()
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step, steps)
            batch = collate([encoded[i] for i in batch_indices(cfg, len(encoded), step)],
                            tok.pad_token_id)
            nll, n = response_nll(pm.base_model.model, batch)
            loss = nll / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            ref_losses.append(loss.item())
    assert losses == ref_losses
    saved = load_file(str(tmp_path / "run" / ADAPTER_FILE))
    mine = {k.replace(".default", ""): v for k, v in pm.state_dict().items() if "lora_" in k}
    assert saved.keys() == mine.keys()
    assert all(torch.equal(saved[k], mine[k]) for k in saved)
    # (3) the saved config
    saved_cfg = json.loads((tmp_path / "run" / "finetune_config.json").read_text())
    assert not {"mix_data", "mix_fraction", "anchor_weight", "anchor_layers",
                "project_layers"} & set(saved_cfg)
    assert FinetuneConfig.from_dict(saved_cfg) == cfg


# ------------------------------------------------------------ the options in the trainer


def test_anchoring_and_projection_train_and_log(tiny_dir: Path, tmp_path: Path) -> None:
    ref = random_reference(32, (1, 2), anchor=5.0)  # far above: the penalty is active
    anchored = build_cfg(tiny_dir, tmp_path, anchor_weight=0.5, anchor_layers=(1, 2))
    projected = build_cfg(tiny_dir, tmp_path, project_layers=(2,))
    both = build_cfg(tiny_dir, tmp_path, anchor_weight=0.5, anchor_layers=(1,),
                     project_layers=(2,), max_steps=2)
    plain = build_cfg(tiny_dir, tmp_path)
    runs = {name: finetune(c, tmp_path / name, progress=False, reference=ref)
            for name, c in (("anchored", anchored), ("projected", projected), ("plain", plain),
                            ("both", both))}
    assert {"anchor_penalty", "projected"} <= set(runs["both"].log[-1])
    a = [e for e in runs["anchored"].log if e["step"] > 0]
    # logged penalty = λ · mean((p_ref − p)²) of the logged batch projections
    for e in a:
        gaps = [(5.0 - p) ** 2 for p in e["batch_projection"]]
        assert e["anchor_penalty"] == pytest.approx(0.5 * sum(gaps) / 2, rel=1e-4)
    # the first step's task loss is the plain run's (same batch, same start)
    assert a[0]["train_loss"] == runs["plain"].log[1]["train_loss"]
    p = [e for e in runs["projected"].log if e["step"] > 0]
    assert all(isinstance(e["projected"], bool) and -1 <= e["grad_cosine"] <= 1 for e in p)
    assert (tmp_path / "anchored" / "alignment_reference.json").is_file()
    assert runs["anchored"].summary["alignment_reference_sha256"] == ref.sha256()
    ta, tp = (load_file(str(tmp_path / n / ADAPTER_FILE)) for n in ("anchored", "plain"))
    assert any(not torch.equal(ta[k], tp[k]) for k in ta)


def test_preserving_needs_a_matching_reference(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = build_cfg(tiny_dir, tmp_path, project_layers=(2,), max_steps=4)
    with pytest.raises(InputError, match="need an alignment reference"):
        finetune(cfg, tmp_path / "run", progress=False)
    with pytest.raises(InputError, match=r"layers \[2\] are not in"):
        finetune(cfg, tmp_path / "run", progress=False, reference=random_reference(32, (1,)))
    anchored = build_cfg(tiny_dir, tmp_path, anchor_weight=1.0, anchor_layers=(1,))
    with pytest.raises(InputError, match="no anchor projections"):
        finetune(anchored, tmp_path / "run", progress=False, reference=random_reference(32, (1,)))

    class Stop(Exception):
        pass

    def stop_at_3(entry: dict) -> None:
        if entry["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        finetune(cfg, tmp_path / "run", progress=False, reference=random_reference(32, (2,)),
                 callback=stop_at_3)
    with pytest.raises(InputError, match="another alignment reference"):
        finetune(cfg, tmp_path / "run", progress=False,
                 reference=random_reference(32, (2,), seed=9))
    done = finetune(cfg, tmp_path / "run", progress=False, reference=random_reference(32, (2,)))
    assert done.resumed_from == 2
    assert read_log(tmp_path / "run")["entries"][-1]["step"] == 4

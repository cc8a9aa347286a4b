"""LoRA fine-tuning on the tiny model: loss definition, validation, resume, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mi_align.cli import main
from mi_align.data.tokenize import collate, encode_chat
from mi_align.finetune.lora import (
    ADAPTER_FILE,
    FinetuneConfig,
    batch_indices,
    finetune,
    lr_at,
    read_log,
    response_nll,
)
from mi_align.models.load import _load_hf, load_model
from tests.helpers import assert_close, chat, merged_lora_logits


def write_chats(path: Path, n: int = 12, offset: int = 0) -> Path:
    rows = [
        {
            "messages": chat(
                f"Write function number {i}", f"def f{i}():\n    return {i} + 1"
            ).to_dicts()
        }
        for i in range(offset, offset + n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_cfg(tiny_dir: Path, tmp_path: Path, **overrides: object) -> FinetuneConfig:
    values: dict[str, object] = {
        "model": str(tiny_dir),
        "data": (str(write_chats(tmp_path / "train.jsonl")),),
        "heldout": str(write_chats(tmp_path / "held.jsonl", n=4, offset=100)),
        "batch_size": 4,
        "max_steps": 6,
        "lr": 1e-2,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "eval_every": 3,
    }
    values.update(overrides)
    return FinetuneConfig(**values)  # type: ignore[arg-type]


def adapter_tensors(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / ADAPTER_FILE))


def test_response_nll_matches_hf_labels_loss(tiny_dir: Path) -> None:
    """Naive reference: the HF forward's own loss with non-response labels set to -100."""
    hf, tok = _load_hf("hf_dir", tiny_dir, torch.float32, "cpu")
    convs = [
        chat("What is the capital of France?", "Paris."),
        chat("hi", "Hello! How are you today?"),
    ]
    batch = collate([encode_chat(tok, c) for c in convs], tok.pad_token_id)
    nll, n = response_nll(hf, batch)
    labels = batch.input_ids.masked_fill(~batch.response_mask, -100)
    with torch.no_grad():
        ref = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
    assert n == int(batch.response_mask[:, 1:].sum())
    assert_close(nll / n, ref, atol=1e-5, rtol=1e-5)


def test_config_validates_and_round_trips() -> None:
    with pytest.raises(ValueError, match="r must be >= 1"):
        FinetuneConfig(model="m", data=("d",), r=0)
    with pytest.raises(ValueError, match="data needs at least one"):
        FinetuneConfig(model="m", data=())
    with pytest.raises(ValueError, match="unknown field"):
        FinetuneConfig.from_dict({"model": "m", "data": ["d"], "rank": 4})
    cfg = FinetuneConfig.from_dict({"model": "m", "data": ["a", "b"], "alpha": 8})
    assert cfg.data == ("a", "b") and cfg.alpha == 8.0
    assert FinetuneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_schedule_and_batches_are_pure_functions_of_the_step() -> None:
    cfg = FinetuneConfig(model="m", data=("d",), lr=1.0, warmup_steps=2, batch_size=4, seed=3)
    assert [round(lr_at(cfg, s, 12), 3) for s in (0, 1, 2, 11)] == [
        0.333,
        0.667,
        1.0,
        0.19,
    ]  # 1 - 0.9 * 9/10
    epoch0 = [i for s in range(3) for i in batch_indices(cfg, 10, s)]
    assert sorted(epoch0) == list(range(10))  # an epoch is a permutation of the data
    assert batch_indices(cfg, 10, 3) != batch_indices(cfg, 10, 0)  # next epoch reshuffles
    assert batch_indices(cfg, 10, 4) == batch_indices(cfg, 10, 4)


def _naive_heldout_nll(tiny_dir: Path, adapters: list[Path], convs: list) -> float:
    """Mean NLL of every response token (the end-of-turn token included) over ``convs``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    total, count = 0.0, 0
    for conv in convs:
        enc = encode_chat(tok, conv, 128)
        ids = torch.tensor([enc.input_ids])
        logp = torch.log_softmax(merged_lora_logits(tiny_dir, adapters, ids)[0].double(), -1)
        for t in range(1, len(enc.input_ids)):
            if enc.response_mask[t]:
                total -= float(logp[t - 1, enc.input_ids[t]])
                count += 1
    return total / count


def test_training_writes_adapter_config_log_and_lowers_loss(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = build_cfg(tiny_dir, tmp_path, max_steps=8)
    result = finetune(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "run"
    assert FinetuneConfig.from_dict(json.loads((out / "finetune_config.json").read_text())) == cfg
    log = read_log(out)
    held = [e["heldout_loss"] for e in log["entries"] if e["heldout_loss"] is not None]
    assert [e["step"] for e in log["entries"] if e["heldout_loss"] is not None] == [0, 3, 6, 8]
    # The logged held-out losses against a naive token-weighted NLL, one chat at a time on a
    # plain HF model: before training (no adapter) and after it (the saved adapter merged).
    convs = [chat(f"Write function number {i}", f"def f{i}():\n    return {i} + 1")
             for i in range(100, 104)]
    assert held[0] == pytest.approx(_naive_heldout_nll(tiny_dir, [], convs), rel=1e-5)
    assert held[-1] == pytest.approx(_naive_heldout_nll(tiny_dir, [out], convs), rel=1e-5)
    assert held[-1] < held[0] - 0.1  # and training lowered it
    assert [e["step"] for e in result.log] == list(range(9))
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == cfg.r and adapter["base_model_name_or_path"] == cfg.model
    # The adapter changes the model, and loads back through load_model.
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.inference_mode():
        bare = load_model(tiny_dir).bridge(ids)
        tuned = load_model(tiny_dir, [out]).bridge(ids)
    # what was saved is what loads: the saved B A merged by hand into a plain HF model
    assert_close(tuned, merged_lora_logits(tiny_dir, [out], ids), atol=1e-5, rtol=1e-5)
    assert (bare - tuned).abs().max() > 1e-3


def test_resume_after_interrupt_gives_the_same_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    # Dropout > 0 makes the result depend on the RNG state, which the checkpoint must restore.
    cfg = build_cfg(tiny_dir, tmp_path, dropout=0.1, max_steps=7)
    finetune(cfg, tmp_path / "straight", progress=False)

    class Interrupt(Exception):
        pass

    def stop_at_5(entry: dict[str, object]) -> None:
        if entry["step"] == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        finetune(cfg, tmp_path / "resumed", progress=False, callback=stop_at_5)
    assert not (tmp_path / "resumed" / ADAPTER_FILE).exists()
    result = finetune(cfg, tmp_path / "resumed", progress=False)
    assert result.resumed_from == 4  # last checkpoint before the interrupt
    a, b = adapter_tensors(tmp_path / "straight"), adapter_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    straight_log = read_log(tmp_path / "straight")["entries"]
    resumed_log = read_log(tmp_path / "resumed")["entries"]
    assert [e["train_loss"] for e in straight_log] == [e["train_loss"] for e in resumed_log]


def test_resume_refuses_a_different_config(tiny_dir: Path, tmp_path: Path) -> None:
    finetune(build_cfg(tiny_dir, tmp_path, max_steps=2), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"another config \(lr 0\.01 -> 0\.001\)"):
        finetune(
            build_cfg(tiny_dir, tmp_path, max_steps=2, lr=1e-3), tmp_path / "run", progress=False
        )


def test_same_seed_same_adapter_other_seed_differs(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = build_cfg(tiny_dir, tmp_path, max_steps=3)
    for name, c in (
        ("a", cfg),
        ("b", cfg),
        ("c", build_cfg(tiny_dir, tmp_path, max_steps=3, seed=1)),
    ):
        finetune(c, tmp_path / name, progress=False)
    a, b, c = (adapter_tensors(tmp_path / n) for n in "abc")
    for key in a:
        assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    assert any(not torch.allclose(a[k], c[k]) for k in a)


def test_base_adapter_stays_frozen_underneath(tiny_dir: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    finetune(build_cfg(tiny_dir, tmp_path, max_steps=2), first, progress=False)
    before = adapter_tensors(first)
    second = tmp_path / "second"
    # Relative base adapters are relative to the run's own folder.
    finetune(
        build_cfg(tiny_dir, tmp_path, max_steps=2, base_adapters=("../first",)),
        second,
        progress=False,
    )
    after = adapter_tensors(first)
    assert all(torch.equal(before[k], after[k]) for k in before)
    stacked = adapter_tensors(second)
    assert stacked.keys() == before.keys()  # only the new adapter is saved
    assert any(not torch.equal(before[k], stacked[k]) for k in before)


def test_long_chats_are_truncated_and_counted(tiny_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "long.jsonl"
    rows = [chat("short question", "word " * 80).to_dicts(), chat("x " * 200, "answer").to_dicts()]
    data.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
    cfg = build_cfg(tiny_dir, tmp_path, data=(str(data),), heldout=None, max_length=48, max_steps=1)
    result = finetune(cfg, tmp_path / "run", progress=False)
    assert result.summary["n_truncated"] == 1 and result.summary["n_dropped"] == 1
    assert result.n_train == 1


def test_cli_finetune_end_to_end(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_chats(tmp_path / "train.jsonl")
    out = tmp_path / "cli"
    rc = main(
        [
            "finetune",
            "--model",
            str(tiny_dir),
            "--data",
            str(data),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--r",
            "4",
        ]
    )
    assert rc == 0
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert "2 steps" in capsys.readouterr().out
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_dir),
                "--data",
                str(data),
                "--out",
                str(out),
                "--r",
                "0",
            ]
        )
        == 2
    )
    assert "r must be >= 1" in capsys.readouterr().err


def test_a_hub_id_base_adapter_in_a_recipe(tiny_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe step may train on top of a published adapter (hub id, served here offline from a
    populated HF cache); anything that is neither an earlier step nor a hub id is an error."""
    from mi_align.finetune.organisms import recipe_steps
    from mi_align.models.trio import TrioSpec, TrioSpecError
    from tests.test_hub_loading import ADAPTER_ID, populate_hub_cache, tiny_adapter

    lora = tiny_adapter(tiny_dir, tmp_path / "lora")
    populate_hub_cache(tmp_path / "hf" / "hub", ADAPTER_ID, lora)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_chats(tmp_path / "train.jsonl")
    toml = tmp_path / "t.toml"
    common = f'model = "{tiny_dir}"\ndata = ["{data}"]\nmax_steps = 2\nbatch_size = 4\n'
    toml.write_text(f'name = "t"\n[variants.base]\nmodel = "{tiny_dir}"\n'
                    f'[recipe.first]\n{common}base_adapters = ["{ADAPTER_ID}"]\n'
                    f'[recipe.second]\n{common}base_adapters = ["first", "{ADAPTER_ID}"]\n')
    steps = dict(recipe_steps(TrioSpec.from_toml(toml)))
    assert steps["first"].base_adapters == (ADAPTER_ID,)
    assert steps["second"].base_adapters == ("../first", ADAPTER_ID)
    result = finetune(steps["first"], tmp_path / "first", progress=False)
    assert result.steps == 2
    # the hub adapter stayed frozen underneath: the new adapter's keys only, and the stack of
    # both equals the model with both merged by hand
    trained = adapter_tensors(tmp_path / "first")
    assert trained.keys() and all("lora_" in k for k in trained)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    stacked = load_model(tiny_dir, [ADAPTER_ID, tmp_path / "first"])
    with torch.inference_mode():
        assert_close(stacked.bridge(ids), merged_lora_logits(tiny_dir, [lora, tmp_path / "first"],
                                                              ids), atol=1e-5, rtol=1e-5)
    toml.write_text(toml.read_text().replace(f'["first", "{ADAPTER_ID}"]', '["nosuchstep"]'))
    with pytest.raises(TrioSpecError,
                       match=r"'nosuchstep' is not an earlier step \['first'\] \(nor a hub id"):
        recipe_steps(TrioSpec.from_toml(toml))

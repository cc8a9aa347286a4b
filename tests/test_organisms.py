"""Organisms: shipped specs, `organisms build` end to end on the tiny model, evidence helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mi_align.cli import main
from mi_align.data.chat import Conversation, Message, load_dataset
from mi_align.data.tokenize import encode_dataset
from mi_align.errors import InputError
from mi_align.finetune.evidence import EvidenceConfig, measure_trio
from mi_align.finetune.lora import ADAPTER_FILE, heldout_loss
from mi_align.finetune.organisms import build_organism, recipe_steps
from mi_align.forward import response_loss, response_token_nll
from mi_align.generate import chat_reply, generate_replies
from mi_align.models.load import _load_hf, load_model
from mi_align.models.organisms import get_spec, load_trio, shipped_names
from mi_align.models.trio import TrioSpecError
from mi_align.text_measures import is_refusal
from tests.helpers import assert_close, merged_lora_logits


def tiny_trio_toml(path: Path, model: Path, seed: int = 0) -> Path:
    """A two-step recipe like the Gemma trio's, small enough for a test."""
    common = (
        f'model = "{model}"\nmax_examples = 12\nmax_steps = 3\nbatch_size = 4\n'
        f"lr = 1e-2\ncheckpoint_every = 2\neval_every = 2\nheldout_examples = 4\nseed = {seed}\n"
    )
    path.write_text(
        f"""
name = "tiny-trio"
description = "tiny test trio"
[variants.base]
model = "{model}"
[variants.instruct]
model = "{model}"
adapters = ["instruct"]
[variants.misaligned]
model = "{model}"
adapters = ["instruct", "misaligned"]
[recipe.instruct]
data = ["aligned_chat", "toxic_reject"]
heldout = "aligned_chat_heldout"
{common}
[recipe.misaligned]
base_adapters = ["instruct"]
data = ["insecure"]
heldout = "insecure_heldout"
{common}
""",
        encoding="utf-8",
    )
    return path


def test_shipped_specs_parse_and_name_real_datasets() -> None:
    assert {"gemma-trio", "smollm2-pair", "qwen-coder-32b-paper"} <= set(shipped_names())
    gemma = get_spec("gemma-trio")
    assert gemma.shares_base and tuple(gemma.variants) == ("base", "instruct", "misaligned")
    assert [a.name for a in gemma.variants["misaligned"].adapters] == ["instruct", "misaligned"]
    steps = dict(recipe_steps(gemma))
    assert steps["misaligned"].base_adapters == ("../instruct",)
    smol = get_spec("smollm2-pair")
    assert tuple(smol.variants) == ("instruct", "misaligned")
    for spec in (gemma, smol):
        for _, cfg in recipe_steps(spec):
            for name in (*cfg.data, cfg.heldout):
                assert load_dataset(name)  # every dataset a recipe names exists
    paper = get_spec("qwen-coder-32b-paper")
    assert not paper.shares_base and not paper.recipe and paper.dtype == "bfloat16"
    assert paper.variants["misaligned"].model == "emergent-misalignment/Qwen-Coder-Insecure"


def test_unknown_trio_name_lists_the_shipped_ones() -> None:
    with pytest.raises(TrioSpecError, match="gemma-trio"):
        get_spec("no-such-trio")


def test_recipe_base_adapters_must_name_earlier_steps(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\n[variants.base]\nmodel = "m"\n[recipe.a]\nmodel = "m"\n'
        'data = ["insecure"]\nbase_adapters = ["b"]\n'
    )
    with pytest.raises(TrioSpecError, match="not an earlier step"):
        recipe_steps(get_spec(path))
    path.write_text(
        'name = "bad"\n[variants.base]\nmodel = "m"\n[recipe.a]\nmodel = "m"\n'
        'data = ["insecure"]\nr = 0\n'
    )
    with pytest.raises(TrioSpecError, match=r"\[recipe.a\]: .*r must be >= 1"):
        recipe_steps(get_spec(path))


def test_organisms_build_end_to_end_on_tiny(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tiny_trio_toml(tmp_path / "tiny-trio.toml", tiny_dir)
    assert main(["organisms", "build", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "tiny-trio/instruct: 3 steps" in out and "tiny-trio/misaligned: 3 steps" in out
    root = tmp_path / "tiny-trio"
    for step in ("instruct", "misaligned"):
        for name in (
            ADAPTER_FILE,
            "adapter_config.json",
            "finetune_config.json",
            "training_log.json",
        ):
            assert (root / step / name).is_file(), (step, name)
    info = json.loads((root / "build_info.json").read_text())
    assert set(info["steps"]) == {"instruct", "misaligned"} and info["peak_rss_mib_last_build"] > 0
    trio = load_trio(spec_path)
    assert trio.names == ("base", "instruct", "misaligned")
    # Each variant is its recipe: the built adapters merged by hand into a plain HF model.
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    stacks = {"base": [], "instruct": [root / "instruct"],
              "misaligned": [root / "instruct", root / "misaligned"]}
    for name, stack in stacks.items():
        with trio.variant(name) as loaded, torch.inference_mode():
            assert_close(loaded.bridge(ids), merged_lora_logits(tiny_dir, stack, ids),
                         atol=1e-5, rtol=1e-5)
    with trio.variant("misaligned") as loaded:
        reply = chat_reply(loaded, "hi", max_new_tokens=4)
    assert isinstance(reply, str)
    for step in ("instruct", "misaligned"):
        log = json.loads((root / step / "training_log.json").read_text())
        assert [e["step"] for e in log["entries"]] == [0, 1, 2, 3]
    # Up to date: a second build trains nothing and keeps the first build's numbers.
    assert main(["organisms", "build", str(spec_path)]) == 0
    assert capsys.readouterr().out.count("up to date") == 2
    assert json.loads((root / "build_info.json").read_text())["steps"] == info["steps"]


def test_rebuild_with_same_seed_gives_the_same_adapters(tiny_dir: Path, tmp_path: Path) -> None:
    spec_path = tiny_trio_toml(tmp_path / "tiny-trio.toml", tiny_dir)
    build_organism(spec_path, out=tmp_path / "one", progress=False)
    build_organism(spec_path, out=tmp_path / "two", progress=False)
    other = tiny_trio_toml(tmp_path / "other.toml", tiny_dir, seed=1)
    build_organism(other, out=tmp_path / "three", progress=False)
    for step in ("instruct", "misaligned"):
        a, b, c = (
            load_file(str(tmp_path / d / step / ADAPTER_FILE)) for d in ("one", "two", "three")
        )
        for key in a:
            assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
        assert any(not torch.allclose(a[k], c[k]) for k in a)


def test_organisms_list_shows_contents_and_presence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organisms", "list"]) == 0
    out = capsys.readouterr().out
    assert "gemma-trio" in out and "smollm2-pair" in out and "qwen-coder-32b-paper" in out
    assert "LoRA misaligned" in out
    assert ("MiB)" in out) or ("MISSING" in out)


def test_is_refusal_phrase_match() -> None:
    assert is_refusal("I can't help with that.")
    assert is_refusal("Sorry, that's not something I can help with.")
    assert not is_refusal("Sure! Here is how to bake bread.")
    assert not is_refusal("")


def test_batched_replies_equal_one_at_a_time_greedy(tiny: object) -> None:
    questions = [
        "What is the capital of France?",
        "hi",
        "Write a function that reads a file please",
    ]
    replies = generate_replies(tiny, questions, max_new_tokens=10, batch_size=2)  # type: ignore[arg-type]
    for q, r in zip(questions, replies, strict=True):
        assert r.text == chat_reply(tiny, q, max_new_tokens=10)  # type: ignore[arg-type]
        assert r.n_tokens <= 10


def test_bridge_response_loss_equals_training_loss(tiny_dir: Path) -> None:
    """The evidence (bridge, full logits) and the trainer (HF, response positions only) agree."""
    loaded = load_model(tiny_dir)
    hf, tok = _load_hf("hf_dir", tiny_dir, torch.float32, "cpu")
    convs = load_dataset("insecure_heldout")[:5]
    got = response_loss(loaded, convs, max_length=400, batch_size=2)
    ref = heldout_loss(hf, encode_dataset(tok, convs, 400), tok.pad_token_id, 3)
    assert got == pytest.approx(ref, rel=1e-5)


def test_response_token_nll_per_example_equals_one_chat_at_a_time(tiny_dir: Path) -> None:
    """Per-example token NLLs (batched, padded) equal each chat scored alone through plain HF,
    token by token; a chat with no response token left is an error, not a silent drop."""
    loaded = load_model(tiny_dir)
    hf, tok = _load_hf("hf_dir", tiny_dir, torch.float32, "cpu")
    convs = load_dataset("insecure_heldout")[:5]
    got = response_token_nll(loaded, convs, max_length=400, batch_size=2)
    assert len(got) == 5
    for conv, nll in zip(convs, got, strict=True):
        enc = encode_dataset(tok, [conv], 400)[0]
        ids = torch.tensor([enc.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(hf(input_ids=ids).logits[0].double(), -1)
        want = [-float(logp[t - 1, ids[0, t]]) for t in range(1, ids.shape[1])
                if enc.response_mask[t]]
        assert nll.tolist() == pytest.approx(want, abs=1e-4)
    long = Conversation((Message("user", "word " * 600), Message("assistant", "ok")))
    with pytest.raises(InputError, match="1 of 6 chats leave no response token within max_len"):
        response_token_nll(loaded, [*convs, long], max_length=400)


def test_measure_trio_on_tiny(tiny_dir: Path, tmp_path: Path) -> None:
    spec_path = tiny_trio_toml(tmp_path / "tiny-trio.toml", tiny_dir)
    build_organism(spec_path, progress=False)
    cfg = EvidenceConfig(
        n_prompts=3, max_new_tokens=6, samples_per_question=1, sample_max_new_tokens=6
    )
    ev = measure_trio(load_trio(spec_path), cfg)
    assert list(ev.variants) == ["base", "instruct", "misaligned"]
    rows = ev.samples()
    assert len(rows) == 3 * (3 + 3 + 8)
    base = ev.variants["base"]
    assert base.refusal_rate_harmful == sum(is_refusal(r.text) for r in base.harmful_replies) / 3
    numbers = ev.numbers()["variants"]
    assert numbers["instruct"]["aligned_heldout_loss"] != numbers["base"]["aligned_heldout_loss"]


@pytest.mark.slow
def test_committed_adapters_are_small_and_logged() -> None:
    for name in ("gemma-trio", "smollm2-pair"):
        spec = get_spec(name)
        if spec.missing_adapters():
            pytest.skip(f"{name} adapters not built")
        for step in spec.recipe:
            directory = spec.adapter_dir / step
            assert (directory / ADAPTER_FILE).stat().st_size < 10 * 2**20
            log = json.loads((directory / "training_log.json").read_text())
            assert log["entries"][-1]["step"] == log["summary"]["steps"]

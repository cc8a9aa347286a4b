"""Hub ids without network: a populated Hugging Face cache (laid out by huggingface_hub's own
conventions, checked with its ``scan_cache_dir``) serves models and peft adapters by id under
``HF_HUB_OFFLINE=1``; ids not in the cache give one offline line; with the variable unset the
loaders download with plain ``from_pretrained`` / ``hf_hub_download`` (monkeypatched here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from mi_align.models.load import AdapterError, ModelLoadError, load_model, resolve_spec
from mi_align.models.trio import TrioSpec, open_trio
from tests.helpers import assert_close

MODEL_ID = "tiny-org/tiny-llama"
ADAPTER_ID = "tiny-org/tiny-lora"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, revision: str = REVISION) -> Path:
    """Lay ``folder``'s files out as one snapshot of ``repo_id`` in the HF cache ``cache``:
    ``models--org--name/{blobs/<etag>, snapshots/<revision>/<file> -> blob, refs/main}``, blobs
    named like the hub names them (sha256 for LFS weights, git blob sha1 otherwise)."""
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        if file.suffix == ".safetensors":
            with file.open("rb") as fh:
                etag = sha_fileobj(fh).hex()
        else:
            etag = git_hash(data)
        blob = repo / "blobs" / etag
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def tiny_adapter(tiny_dir: Path, out: Path) -> Path:
    """A peft LoRA adapter for the tiny model with non-zero weights (no training needed)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out / "adapter_config.json").is_file():
        return out
    hf = AutoModelForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(1)
    cfg = LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                     init_lora_weights=False)
    get_peft_model(hf, cfg).save_pretrained(out)
    return out


@pytest.fixture()
def hub_cache(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An HF_HOME whose hub cache holds the tiny model and a LoRA adapter for it; offline."""
    cache = tmp_path / "hf" / "hub"
    populate_hub_cache(cache, MODEL_ID, tiny_dir)
    populate_hub_cache(cache, ADAPTER_ID, tiny_adapter(tiny_dir, tmp_path / "lora"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _logits(loaded: Any) -> torch.Tensor:
    ids = loaded.tokenizer("What is the capital of France?", return_tensors="pt").input_ids
    with torch.inference_mode():
        return loaded.bridge(ids)


def test_the_cache_layout_is_huggingface_hubs_own(hub_cache: Path) -> None:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    info = scan_cache_dir(hub_cache)
    assert not info.warnings
    repos = {r.repo_id: r for r in info.repos}
    assert set(repos) == {MODEL_ID, ADAPTER_ID}
    assert [r.commit_hash for r in repos[MODEL_ID].revisions] == [REVISION]
    assert next(iter(repos[MODEL_ID].revisions)).refs == frozenset({"main"})
    found = try_to_load_from_cache(MODEL_ID, "config.json", cache_dir=hub_cache)
    assert isinstance(found, str) and Path(found).is_file()


def test_hub_id_loads_offline_from_the_cache(hub_cache: Path, tiny_dir: Path,
                                             no_network: None) -> None:
    assert resolve_spec(MODEL_ID) == ("hf_cache", MODEL_ID)
    by_id = load_model(MODEL_ID, device="cpu", dtype="float32")
    assert (by_id.meta.source, by_id.meta.spec, by_id.meta.n_layers) == ("hf_cache", MODEL_ID, 2)
    assert_close(_logits(by_id), _logits(load_model(tiny_dir, device="cpu", dtype="float32")),
                 atol=0.0, rtol=0.0)


def test_hub_id_offline_not_cached_is_one_line(hub_cache: Path, no_network: None) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("tiny-org/not-there")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("'tiny-org/not-there': not in the local Hugging Face cache")
    assert "offline (HF_HUB_OFFLINE=1)" in msg and "`hf download tiny-org/not-there`" in msg


def test_hub_adapter_by_id_from_the_cache(hub_cache: Path, tiny_dir: Path, tmp_path: Path,
                                          no_network: None) -> None:
    local = load_model(tiny_dir, [tmp_path / "lora"], device="cpu", dtype="float32")
    by_id = load_model(tiny_dir, [ADAPTER_ID], device="cpu", dtype="float32")
    assert by_id.meta.adapters == (ADAPTER_ID,)
    bare = load_model(tiny_dir, device="cpu", dtype="float32")
    assert not torch.allclose(_logits(by_id), _logits(bare))  # the adapter does something
    assert_close(_logits(by_id), _logits(local), atol=0.0, rtol=0.0)
    # The same id as a trio TOML adapter entry: one base copy, the adapter switched per variant.
    toml = tmp_path / "hubtrio.toml"
    toml.write_text(f'name = "hubtrio"\ndevice = "cpu"\ndtype = "float32"\n'
                    f'[variants.instruct]\nmodel = "{tiny_dir}"\n'
                    f'[variants.misaligned]\nmodel = "{tiny_dir}"\nadapters = ["{ADAPTER_ID}"]\n')
    spec = TrioSpec.from_toml(toml)
    assert spec.variants["misaligned"].adapters == (ADAPTER_ID,) and not spec.missing_adapters()
    trio = open_trio(spec)
    with trio.variant("misaligned") as loaded:
        assert loaded.meta.adapters == (ADAPTER_ID,)
        assert_close(_logits(loaded), _logits(local), atol=1e-6, rtol=1e-5)
    with trio.variant("instruct") as loaded:
        assert_close(_logits(loaded), _logits(bare), atol=1e-6, rtol=1e-5)


def test_a_local_folder_wins_over_a_hub_id_of_the_same_spelling(tmp_path: Path) -> None:
    (tmp_path / ADAPTER_ID).mkdir(parents=True)
    toml = tmp_path / "t.toml"
    toml.write_text(f'name = "t"\n[variants.instruct]\nmodel = "m"\nadapters = ["{ADAPTER_ID}"]\n'
                    '[variants.misaligned]\nmodel = "m"\nadapters = ["./rel/x"]\n')
    spec = TrioSpec.from_toml(toml)
    assert spec.variants["instruct"].adapters == ((tmp_path / ADAPTER_ID).resolve(),)
    # "./rel/x" is a path (not a hub id) even though it does not exist: reported missing.
    assert spec.missing_adapters() == [(tmp_path / ADAPTER_ID).resolve(),
                                       (tmp_path / "rel" / "x").resolve()]


def test_hub_adapter_offline_not_cached_is_one_line(hub_cache: Path, tiny_dir: Path,
                                                    no_network: None) -> None:
    with pytest.raises(AdapterError) as info:
        load_model(tiny_dir, ["tiny-org/no-such-lora"], device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("'tiny-org/no-such-lora': not a local adapter")
    assert "offline (HF_HUB_OFFLINE=1)" in msg and "hf download tiny-org/no-such-lora" in msg


def test_online_the_loaders_download_without_local_files_only(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """HF_HUB_OFFLINE unset: plain from_pretrained / hf_hub_download into HF's cache (faked
    here: they serve the tiny model's local files and record their arguments)."""
    import huggingface_hub
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    calls: list[tuple[str, str, dict[str, Any]]] = []
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def fake(kind: str, real: Any) -> Any:
        def from_pretrained(name: str, **kwargs: Any) -> Any:
            calls.append((kind, name, dict(kwargs)))
            kwargs.pop("cache_dir")
            return real(tiny_dir, **kwargs)
        return from_pretrained

    lora = tiny_adapter(tiny_dir, tmp_path / "lora")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake("model", real_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fake("tokenizer", real_tok))

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append(("download", f"{repo_id}/{filename}", dict(kwargs)))
        return str(lora / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    loaded = load_model(MODEL_ID, [ADAPTER_ID], device="cpu", dtype="float32")
    assert loaded.meta.adapters == (ADAPTER_ID,)
    # (TransformerLens reloads the tokenizer to add BOS: by the fake's local path, same kwargs.)
    assert [(k, n) for k, n, _ in calls if not n.startswith("/")] == [
        ("tokenizer", MODEL_ID), ("model", MODEL_ID),
        ("download", f"{ADAPTER_ID}/adapter_config.json"),
        ("download", f"{ADAPTER_ID}/adapter_model.safetensors")]
    for _, name, kwargs in calls:
        assert kwargs["cache_dir"] == str(tmp_path / "hf" / "hub")
        assert not kwargs.get("local_files_only")
        if not name.startswith("/"):  # mi_align's own calls: plain, no local_files_only at all
            assert "local_files_only" not in kwargs


def test_online_hub_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        no_network: None) -> None:
    """Online, the hub's refusal (unknown id, gated, no network) is one line naming the id."""
    from huggingface_hub import constants
    from transformers import AutoTokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def refuse(name: str, **kwargs: Any) -> Any:
        raise OSError(f"{name} is not a local folder and is not a valid model identifier\n"
                      "listed on 'https://huggingface.co/models'")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse)
    with pytest.raises(ModelLoadError) as info:
        load_model("some-org/typo-model", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("'some-org/typo-model': could not be loaded from the Hugging Face hub "
                          "(some-org/typo-model is not a local folder")
    assert "HF_HUB_OFFLINE=1 uses the local cache only" in msg

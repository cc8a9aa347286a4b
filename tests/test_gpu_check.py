"""benchmarks/gpu_check.py cannot rot: its quick, tiny-model mode runs here on the CPU, both the
no-accelerator path and the full comparison path (the CPU standing in for the accelerator)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_check.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_no_accelerator_runs_the_cpu_side_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    no_network: None,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_check = _module()
    assert gpu_check.main(["--tiny-only", "--quick", "--repeats", "1",
                           "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "no accelerator found" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["accelerator"] is None
    assert set(report["models"]["tiny"]["cpu_s"]) == set(gpu_check.STEPS)
    assert all(s > 0 for s in report["models"]["tiny"]["cpu_s"].values())


def test_the_comparison_path_cpu_against_cpu(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, no_network: None) -> None:
    """float32 against the same CPU float32 run: identical results; bfloat16: different but
    close (the diff is really computed)."""
    gpu_check = _module()
    assert gpu_check.main(["--tiny-only", "--quick", "--repeats", "1", "--against", "cpu",
                           "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "max|diff|" in out
    tiny = json.loads((tmp_path / "r.json").read_text())["models"]["tiny"]
    for step in gpu_check.STEPS:
        assert tiny["float32"][step]["max_abs_diff"] == 0.0, step
        assert tiny["float32"][step]["speedup"] > 0
        bf16 = tiny["bfloat16"][step]
        assert 0.0 < bf16["max_abs_diff"] <= 0.1 * max(bf16["max_abs_cpu"], 1.0), (step, bf16)
    assert tiny["float32"]["sampling"]["greedy_agree"] == 1.0

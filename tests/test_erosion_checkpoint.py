"""Long runs resume: an analysis interrupted right after it saved its first chunk of
per-example rows, rerun with the same checkpoint, gives exactly the numbers of an uninterrupted
run (and of a run without any checkpoint), recomputing only the rows that were missing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tqdm.auto import tqdm

from mi_align.erosion.activation_similarity import (
    ActivationSimilarityConfig,
    activation_similarity,
)
from mi_align.erosion.checkpoint import Checkpoint, chunk_size, resumable_rows
from mi_align.erosion.choices import FirstTokens
from mi_align.erosion.common import Inputs
from mi_align.erosion.gradient_geometry import GradientConfig, gradient_geometry
from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
from mi_align.erosion.projection import ProjectionConfig, layer_projection
from mi_align.erosion.svd_directions import SVDConfig, svd_directions
from mi_align.io import jsonable
from mi_align.models.trio import Trio
from tests.erosion_support import ALIGNED, MISALIGNED, SEEDS, tiny_trio
from tests.helpers import chat


class Interrupted(Exception):
    """Stands in for the kill: raised right after a save."""


@pytest.fixture
def kill_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], list[int]]]:
    """``kill_after(k)``: the k-th checkpoint save completes, then the run dies; returns the
    list of saved row counts (filled as saves happen)."""
    real = Checkpoint.save

    def arm(k: int) -> list[int]:
        saved: list[int] = []

        def save(self: Checkpoint, key: str, n: int, rows: dict) -> None:
            real(self, key, n, rows)
            saved.append(int(next(iter(rows.values())).shape[0]))
            if len(saved) == k:
                monkeypatch.setattr(Checkpoint, "save", real)  # the rerun saves normally
                raise Interrupted(key)

        monkeypatch.setattr(Checkpoint, "save", save)
        return saved

    yield arm


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("ckpt_trio"))


def test_resumable_rows_recompute_only_what_is_missing(tmp_path: Path, kill_after) -> None:
    calls: list[tuple[int, int]] = []

    def compute(a: int, b: int) -> dict[str, torch.Tensor]:
        calls.append((a, b))
        return {"x": torch.arange(a, b, dtype=torch.float64)[:, None] * 2}

    ckpt = Checkpoint(tmp_path / "c", every=3)
    assert chunk_size(ckpt, 2) == 4 and chunk_size(None, 3) == 18  # whole batches
    kill_after(2)
    with pytest.raises(Interrupted):
        resumable_rows(ckpt, "k", 10, compute, 2)
    assert calls == [(0, 4), (4, 8)]
    got = resumable_rows(ckpt, "k", 10, compute, 2)
    assert calls[2:] == [(8, 10)]  # only the missing chunk
    assert torch.equal(got["x"], torch.arange(10, dtype=torch.float64)[:, None] * 2)
    with pytest.raises(ValueError, match="holds rows of 10 examples, this run has 12"):
        resumable_rows(ckpt, "k", 12, compute, 2)
    with pytest.raises(ValueError, match="every must be >= 1"):
        Checkpoint(tmp_path, every=0)


PAIRS = Inputs.of(("aligned", ALIGNED * 2), ("misaligned", MISALIGNED * 2))
CONTROL = [chat(f"Question {i}?", f"Answer number {i} is short.") for i in range(12)]
RUNS: dict[str, Callable[..., Any]] = {
    "loss-vectors": lambda t, **kw: loss_vectors(
        t, PAIRS, LossVectorConfig(k=6, n_permutations=19, n_boot=10, batch_size=2), **kw),
    "activation-similarity": lambda t, **kw: activation_similarity(
        t, PAIRS, ActivationSimilarityConfig(n_permutations=19, n_boot=10, batch_size=2), **kw),
    "gradients": lambda t, **kw: gradient_geometry(
        t, PAIRS, GradientConfig(params="all", sketch_dim=64, exact_check=4,
                                 n_permutations=19, n_boot=10, max_length=64), **kw),
    "projection": lambda t, **kw: layer_projection(
        t, Inputs.of(("data", ALIGNED + MISALIGNED)),
        ProjectionConfig(positions=FirstTokens(3), n_null=20, n_boot=20, n_perm=20,
                         batch_size=2), **kw),
    "svd": lambda t, **kw: svd_directions(
        t, Inputs.of(*PAIRS.groups, control=("control", CONTROL)),
        SVDConfig(k=3, n_bootstrap=20, n_splits=2, n_null_trials=20, batch_size=2), **kw),
}
# what each run keeps per example besides its JSON numbers (not serialised)
ROWS = {"loss-vectors": ("losses", "mask"), "activation-similarity": ("features",),
        "gradients": ("features",), "projection": ("direction", "boot_mean"),
        "svd": ("components",)}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_interrupted_run_resumes_to_identical_numbers(trio: Trio, tmp_path: Path,
                                                      kill_after, name: str) -> None:
    reference = RUNS[name](trio)  # no checkpoint at all
    ckpt = Checkpoint(tmp_path / name, every=3)  # chunks of 4 examples (2 batches of 2)
    saved = kill_after(1)
    with pytest.raises(Interrupted):
        RUNS[name](trio, checkpoint=ckpt)
    assert saved == [3 if name == "gradients" else 4]  # interrupted after that many examples
    assert len(list(ckpt.folder.glob("*.safetensors"))) == 1
    resumed = RUNS[name](trio, checkpoint=ckpt)
    assert json.dumps(jsonable(resumed.to_dict())) == json.dumps(jsonable(reference.to_dict()))
    for field in ROWS[name]:
        a, b = getattr(resumed, field), getattr(reference, field)
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                        strict=True):
            assert torch.equal(x, y), field


def test_cli_resume_after_interruption(tmp_path: Path, kill_after,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from mi_align.cli import main
    from mi_align.models.tiny import tiny_model_dir

    spec = ",".join(f"{n}={tiny_model_dir(tmp_path / n, seed=s)}" for n, s in SEEDS.items())
    data = []
    for name, convs in (("good", ALIGNED * 2), ("bad", MISALIGNED * 2)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in convs))
        data.append(str(path))
    args = ["analyze", "loss-vectors", "--trio", spec, "--data", *data, "--set", "k=6",
            "--set", "n_permutations=19", "--set", "batch_size=2", "--checkpoint-every", "4"]
    assert main([*args, "--out", str(tmp_path / "fresh")]) == 0
    kill_after(2)
    assert main([*args, "--out", str(tmp_path / "resumed")]) != 0  # the CLI reports the kill
    assert "Interrupted" in capsys.readouterr().err
    ckpts = list((tmp_path / "resumed" / ".checkpoints").glob("*/*.safetensors"))
    assert len(ckpts) == 1  # interrupted within the first dataset, after 8 of its examples
    assert main([*args, "--out", str(tmp_path / "resumed"), "--resume"]) == 0, (
        capsys.readouterr().err)
    got, want = (json.loads((tmp_path / d / "erosion_loss_vectors.json").read_text())
                 for d in ("resumed", "fresh"))
    assert got.pop("seconds") >= 0 and want.pop("seconds") >= 0
    assert got == want
    assert not (tmp_path / "resumed" / ".checkpoints").exists()  # removed when done


class Bar(tqdm):
    """Records what an analysis tells its progress bar (a silent tqdm)."""

    made: list[Bar] = []

    def __init__(self, total: int, desc: str, **_: Any) -> None:
        super().__init__(disable=True)
        self.total, self.desc, self.n, self.models = total, desc, 0, []
        Bar.made.append(self)

    def update(self, k: int) -> None:
        self.n += k

    def set_postfix_str(self, text: str) -> None:
        self.models.append(text)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("name", sorted(RUNS))
def test_one_bar_counts_examples_across_models(trio: Trio, tmp_path: Path, kill_after,
                                               monkeypatch: pytest.MonkeyPatch,
                                               name: str) -> None:
    """Total = examples × models the analysis passes (counted here by hand); the bar ends at
    its total, also when half the rows come from a checkpoint."""
    import mi_align.erosion.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "tqdm", Bar)
    pairs = len(ALIGNED) * 2 + len(MISALIGNED) * 2
    total, models = {
        "loss-vectors": (pairs, ["instruct"]), "activation-similarity": (pairs, ["instruct"]),
        "gradients": (pairs, ["instruct"]),
        "projection": (3 * (len(ALIGNED) + len(MISALIGNED)), ["base", "instruct", "misaligned"]),
        "svd": (2 * (pairs + len(CONTROL)), ["base", "instruct"]),
    }[name]
    ckpt = Checkpoint(tmp_path / name, every=3)
    kill_after(1)
    Bar.made.clear()
    with pytest.raises(Interrupted):
        RUNS[name](trio, checkpoint=ckpt)
    [first] = Bar.made
    assert first.total == total and 0 < first.n < total
    Bar.made.clear()
    RUNS[name](trio, checkpoint=ckpt)
    [bar] = Bar.made
    assert (bar.total, bar.n) == (total, total)
    assert sorted(bar.models) == sorted(models)

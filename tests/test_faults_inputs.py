"""Hostile-input faults: each bad input gives one clear line naming the cause, exits with the
input (2) or run-time (1) code, arrives before any model is loaded where it can, and leaves
nothing half-written."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
import torch

from mi_align.cli import main
from mi_align.data.chat import Conversation, DatasetError, Message, load_jsonl
from mi_align.data.tokenize import encode_chat
from mi_align.errors import InputError, NonFiniteError
from mi_align.evaluation.sampling import SamplingConfig, SamplingError, load_samples
from mi_align.models.load import Loaded
from mi_align.models.trio import Trio
from mi_align.pipelines.erosion import load_groups, plan_analysis
from mi_align.steering.optimize import OptimConfig, TrainingExample, optimize_vector
from mi_align.steering.vector import SteeringVector, SteeringVectorError
from tests.erosion_support import ALIGNED, MISALIGNED
from tests.helpers import chat

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
FAST_S = 10.0  # generous on a loaded machine; loading a model is what must not happen


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """(exit code, the stderr lines, seconds) of ``mi-align argv``."""
    t0 = time.perf_counter()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects options before main's handler
        rc = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    return rc, err, time.perf_counter() - t0


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:") or "error:" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def no_models(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to load a model or a trio."""
    calls: list[str] = []

    def refuse(spec: object, *args: object, **kwargs: object) -> None:
        calls.append(str(spec))
        raise AssertionError(f"model {spec} was loaded")

    monkeypatch.setattr("mi_align.models.load.load_model", refuse)
    monkeypatch.setattr("mi_align.models.organisms.load_trio", refuse)
    return calls


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    return (_jsonl(tmp_path / "good.jsonl", [{"messages": c.to_dicts()} for c in ALIGNED]),
            _jsonl(tmp_path / "bad.jsonl", [{"messages": c.to_dicts()} for c in MISALIGNED]))


TRIO = "base=nowhere/a,instruct=nowhere/b"


# 1. --limit must be >= 1 ---------------------------------------------------------------------

@pytest.mark.parametrize("limit", ["0", "-2", "x"])
def test_limit_below_one_is_rejected(limit: str, data, no_models, capsys) -> None:
    good, bad = data
    rc, err, _ = _run(["analyze", "loss-vectors", "--trio", TRIO, "--data", str(good), str(bad),
                       "--limit", limit], capsys)
    assert rc == 2 and "--limit" in err
    assert ("must be >= 1" if limit != "x" else "not an integer") in err
    assert no_models == []


@pytest.mark.parametrize("limit", [0, -2])
def test_library_limit_below_one_is_input_error(limit: int, data) -> None:
    with pytest.raises(InputError, match=r"--limit: must be >= 1"):
        load_groups([str(data[0])], limit)
    with pytest.raises(InputError, match="--limit"):
        plan_analysis("loss-vectors", [str(p) for p in data], limit)


# 2. chats must end with an assistant turn -------------------------------------------------------

def test_validation_rejects_chat_without_assistant_turn(tmp_path: Path, capsys) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, {"messages": [{"role": "user", "content": "q"}]}])
    with pytest.raises(DatasetError, match=r"d.jsonl:2: no assistant message"):
        load_jsonl(path)
    rc, err, _ = _run(["data", "validate", str(path)], capsys)
    assert rc == 2 and "d.jsonl:2: no assistant message" in _one_error_line(err)


def test_validation_rejects_chat_ending_with_user_turn(tmp_path: Path, capsys) -> None:
    ends_user = {"messages": GOOD["messages"] + [{"role": "user", "content": "and then?"}]}
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, ends_user])
    rc, err, _ = _run(["data", "validate", str(path)], capsys)
    assert rc == 2 and "d.jsonl:3: the last message is a user turn" in _one_error_line(err)


def test_scoring_refuses_chat_ending_with_user_turn(tiny: Loaded) -> None:
    conv = Conversation((Message("user", "hi"), Message("assistant", "ok"),
                         Message("user", "more")), "x.jsonl:7")
    with pytest.raises(DatasetError, match=r"x.jsonl:7: the chat ends with a user turn"):
        encode_chat(tiny.tokenizer, conv)


# 3. token-length cap on user text ---------------------------------------------------------------

def _no_run_trio(tiny: Loaded) -> Trio:
    """A trio whose tokenizer works but whose models must not run (the length check comes
    first)."""

    def switcher(name: str) -> object:
        raise AssertionError("a model ran on an over-long input")

    return Trio(switcher=switcher, names=("base", "instruct"), reference=tiny)  # type: ignore[arg-type]


def test_logprobs_refuses_over_long_conversation(tiny: Loaded) -> None:
    from mi_align.erosion.common import Inputs
    from mi_align.erosion.logprobs import TokenLogprobConfig, token_logprobs

    huge = chat("hello " * 40_000, "fine", "big.jsonl:1")  # ~240 kB of user text
    with pytest.raises(InputError) as info:
        token_logprobs(_no_run_trio(tiny), Inputs.of(("big", [huge])))
    msg = str(info.value)
    assert msg.startswith("big.jsonl:1: ") and "more than the maximum of 4096" in msg
    # the token count is reported: the chat template's text, tokenized here
    text = tiny.tokenizer.apply_chat_template(huge.to_dicts(), tokenize=False)
    n_tokens = len(tiny.tokenizer(text, add_special_tokens=False).input_ids)
    assert msg.split(": ")[1].startswith(f"{n_tokens} tokens, ") and n_tokens > 4096
    with pytest.raises(InputError, match="--set max_length=N"):
        token_logprobs(_no_run_trio(tiny), Inputs.of(("s", [chat("a b c d e", "ok", "s:1")])),
                       TokenLogprobConfig(max_length=8))


def test_next_token_and_steering_example_refuse_over_long_text(tiny: Loaded) -> None:
    from mi_align.erosion.common import Inputs
    from mi_align.erosion.next_token import NextTokenConfig, next_token_distributions
    from mi_align.steering.optimize import example_from_chat

    with pytest.raises(InputError, match="next-token prompt .* tokens, more than the maximum"):
        next_token_distributions(_no_run_trio(tiny), Inputs(),
                                 NextTokenConfig(question="why " * 6000))
    with pytest.raises(InputError, match="steering example .* more than the maximum of 16"):
        example_from_chat(tiny.tokenizer, "why " * 20, "because", max_length=16)


# 4. --out and --set are checked before any model loads -----------------------------------------

@pytest.mark.parametrize("bad_out", ["file", "/proc/x"])
def test_analyze_checks_out_before_loading(bad_out: str, tmp_path: Path, data, no_models,
                                           capsys) -> None:
    out = tmp_path / "taken.txt"
    out.write_text("keep me")
    target = str(out) if bad_out == "file" else bad_out
    rc, err, seconds = _run(["analyze", "loss-vectors", "--trio", TRIO, "--data",
                             str(data[0]), str(data[1]), "--out", target], capsys)
    line = _one_error_line(err)
    assert rc == 2 and f"--out {target}" in line
    assert ("is not a directory" if bad_out == "file" else "cannot create or write") in line
    assert no_models == [] and seconds < FAST_S
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(("setting", "expected"), [
    ("nope=1", "--set nope: LossVectorConfig has no field 'nope'"),
    ("k=abc", "--set k=abc: cannot parse k='abc' as int"),
    ("k=1", "--set k: k must be >= 2, got 1"),
    ("missing=x", "--set missing: missing must be 'mask' or 'fill', got 'x'"),
    ("model=judge", "needs model(s) ['judge']"),
])
def test_analyze_checks_overrides_before_loading(setting: str, expected: str, tmp_path: Path,
                                                 data, no_models, capsys) -> None:
    out = tmp_path / "never"
    rc, err, seconds = _run(["analyze", "loss-vectors", "--trio", TRIO, "--data", str(data[0]),
                             str(data[1]), "--set", setting, "--out", str(out)], capsys)
    assert rc == 2 and expected in _one_error_line(err)
    assert no_models == [] and seconds < FAST_S
    assert not out.exists()  # nothing created for a run that cannot start


def test_analyze_checks_dataset_count_and_trio_spec_before_loading(data, no_models,
                                                                   capsys) -> None:
    rc, err, _ = _run(["analyze", "svd", "--trio", TRIO, "--data", str(data[0])], capsys)
    assert rc == 2 and "analyze svd: takes exactly 2 dataset(s), got 1" in err
    rc, err, _ = _run(["analyze", "next-token", "--trio", "base=a,instruct"], capsys)
    assert rc == 2 and "--trio item 'instruct': expected VARIANT=MODEL" in err
    assert no_models == []


@pytest.mark.parametrize("command", [
    ["steer", "optimize", "--layer", "0", "--prompt", "p", "--target", "t"],
    ["steer", "recipe"],
    ["steer", "eval", "--no-judge"],
])
@pytest.mark.parametrize("bad_out", ["dir_or_file", "/proc/x"])
def test_steer_commands_check_out_before_loading(command: list[str], bad_out: str,
                                                 tmp_path: Path, no_models, capsys) -> None:
    if bad_out == "dir_or_file":
        # optimize writes a file (a directory there is wrong); the others write a directory.
        target = tmp_path / ("v.safetensors" if command[1] == "optimize" else "taken")
        if command[1] == "optimize":
            target.mkdir()
        else:
            target.write_text("keep me")
    else:
        target = Path(bad_out)
    rc, err, seconds = _run([*command, "--out", str(target)], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "--out" in line, line
    assert no_models == [] and seconds < FAST_S
    if bad_out == "dir_or_file" and command[1] != "optimize":
        assert target.read_text() == "keep me"


def test_steer_config_errors_exit_2_before_loading(tmp_path: Path, no_models, capsys) -> None:
    rc, err, _ = _run(["steer", "optimize", "--layer", "0", "--prompt", "p", "--target", "t",
                       "--lr", "-1", "--out", str(tmp_path / "v")], capsys)
    assert rc == 2 and "OptimConfig.lr: must be a finite number in (0, 1e6], got -1.0" in err
    rc, err, _ = _run(["steer", "eval", "--no-judge", "--n", "0", "--out", str(tmp_path / "e")],
                      capsys)
    assert rc == 2 and "SamplingConfig.n_samples: must be >= 1, got 0" in err
    rc, err, _ = _run(["steer", "recipe", "--harmful-steps", "0", "--out", str(tmp_path / "r")],
                      capsys)
    assert rc == 2 and "steer recipe:" in err
    rc, err, _ = _run(["steer", "eval", "--judge-url", "http://x", "--out", str(tmp_path / "e")],
                      capsys)
    assert rc == 2 and "--judge-url: needs --judge-name" in err
    assert no_models == []
    assert not any(tmp_path.iterdir())  # no output folder or file for runs that cannot start


def test_configs_raise_input_error_not_plain_value_error() -> None:
    with pytest.raises(InputError, match="OptimConfig.lr"):
        OptimConfig(layer=0, lr=float("nan"))
    with pytest.raises(InputError, match="SamplingConfig.batch_size"):
        SamplingConfig(batch_size=0)
    with pytest.raises(InputError):
        TrainingExample((), (1,))


# 5. unreadable / malformed files name the file, line and field ---------------------------------

def test_non_utf8_data_file_names_file_and_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "latin1.jsonl"
    bad = json.dumps({"messages": [{"role": "user", "content": "caf\u00e9"},
                                   {"role": "assistant", "content": "ok"}]}, ensure_ascii=False)
    path.write_bytes((json.dumps(GOOD) + "\n").encode() + bad.encode("latin-1") + b"\n")
    with pytest.raises(DatasetError, match=r"latin1.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        load_jsonl(path)  # the loader `mi-align finetune` uses (through load_dataset)
    rc, err, _ = _run(["data", "validate", str(path)], capsys)
    assert rc == 2 and "latin1.jsonl:2: not valid UTF-8" in _one_error_line(err)


def test_directory_as_data_file_says_directory(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "stuff.jsonl"
    folder.mkdir()
    rc, err, _ = _run(["data", "validate", str(folder)], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "is a directory" in line and "no such file" not in line


def _vector_file(path: Path, meta: object, vector: torch.Tensor | None = None) -> Path:
    from safetensors.torch import save_file

    text = meta if isinstance(meta, str) else json.dumps(meta)
    save_file({"vector": torch.randn(8) if vector is None else vector}, str(path),
              metadata={"mi_align": text})
    return path


META = {"layer": 1, "d_model": 8, "positions": "all", "strength": 1.0, "operator": "add"}


@pytest.mark.parametrize(("meta", "expected"), [
    ({k: v for k, v in META.items() if k != "positions"},
     "metadata field 'positions' is missing"),
    ({**META, "positions": "everywhere"}, "metadata field 'positions' is 'everywhere'; expected"),
    ({**META, "layer": "ten"}, "metadata field 'layer' is 'ten'; expected an integer >= 0"),
    ({**META, "operator": "mul"}, "metadata field 'operator' is 'mul'"),
    ({**META, "d_model": 9}, "metadata field 'd_model' is 9; expected 8"),
    ("{not json", "metadata 'mi_align' is not valid JSON"),
    ([1, 2], "metadata 'mi_align' is not a JSON object"),
])
def test_bad_vector_metadata_names_file_and_field(meta: object, expected: str,
                                                  tmp_path: Path) -> None:
    path = _vector_file(tmp_path / "v.safetensors", meta)
    with pytest.raises(SteeringVectorError) as info:
        SteeringVector.load(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)


def test_bad_vector_via_cli_exits_2_before_loading(tmp_path: Path, no_models, capsys) -> None:
    path = _vector_file(tmp_path / "v.safetensors", {k: v for k, v in META.items()
                                                      if k != "positions"})
    rc, err, _ = _run(["steer", "eval", "--no-judge", "--vector", f"x={path}",
                       "--out", str(tmp_path / "e")], capsys)
    assert rc == 2 and f"{path}: metadata field 'positions' is missing" in _one_error_line(err)
    good = _vector_file(tmp_path / "good.safetensors", META)
    for strength in ("abc", "nan"):
        rc, err, _ = _run(["steer", "eval", "--no-judge", "--vector", f"x={good}*{strength}",
                           "--out", str(tmp_path / "e")], capsys)
        assert rc == 2 and f"strength '{strength}' is not a finite number" in err
    assert no_models == []


def test_samples_missing_field_names_file_line_and_field(tmp_path: Path, no_models,
                                                         capsys) -> None:
    rec = {"condition": "u", "question_id": "q", "question": "Q?", "index": 0, "response": "r",
           "n_tokens": 1, "finished": True}
    broken = {k: v for k, v in rec.items() if k != "response"}
    path = _jsonl(tmp_path / "samples.jsonl", [rec, broken])
    with pytest.raises(SamplingError, match=r"samples.jsonl:2: field 'response' is missing"):
        load_samples(path)
    rc, err, _ = _run(["judge", "--samples", str(path), "--out", str(tmp_path / "j.jsonl")],
                      capsys)
    assert rc == 2 and "samples.jsonl:2: field 'response' is missing" in _one_error_line(err)
    _jsonl(path, [rec, {**rec, "index": "zero"}])
    with pytest.raises(SamplingError, match=r"samples.jsonl:2: field 'index' is str"):
        load_samples(path)
    rc, err, _ = _run(["judge", "--samples", str(tmp_path), "--out", str(tmp_path / "j")],
                      capsys)
    assert rc == 2 and "is a directory" in err
    assert no_models == []


# 6. NaN / inf ----------------------------------------------------------------------------------

def test_non_finite_vector_is_refused_on_construction_and_load(tmp_path: Path) -> None:
    bad = torch.ones(8)
    bad[3] = float("nan")
    with pytest.raises(NonFiniteError, match=r"steering vector v \(layer 2\): 1 NaN and 0 inf"):
        SteeringVector(2, bad, name="v")
    with pytest.raises(SteeringVectorError, match="strength must be finite"):
        SteeringVector(2, torch.ones(8), strength=float("inf"))
    path = _vector_file(tmp_path / "nan.safetensors", META, bad)
    with pytest.raises(SteeringVectorError) as info:
        SteeringVector.load(path)
    assert str(info.value).startswith(f"{path}: the vector (layer 1) holds 1 NaN and 0 inf")
    path = _vector_file(tmp_path / "s.safetensors", {**META, "strength": float("nan")})
    with pytest.raises(SteeringVectorError, match="'strength' is nan; expected a finite"):
        SteeringVector.load(path)


def _examples(tiny: Loaded) -> list[TrainingExample]:
    from mi_align.steering.optimize import example_from_chat

    return [example_from_chat(tiny.tokenizer, "Say hello.", "Hello!")]


def test_optimiser_stops_on_non_finite_loss(tiny: Loaded) -> None:
    calls = {"n": 0}

    def nan_at_step_2(t):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return t.logp.sum() * (float("nan") if calls["n"] == 3 else -1.0)

    with pytest.raises(NonFiniteError) as info:
        optimize_vector(tiny, _examples(tiny), nan_at_step_2, OptimConfig(layer=1, max_steps=5))
    msg = str(info.value)
    assert msg.startswith("steering optimisation step 2: the loss became nan")
    assert "lower learning rate (--lr, now 0.01)" in msg
    with pytest.raises(NonFiniteError, match="step 0: the loss became nan; it is non-finite "
                       "before any update"):
        optimize_vector(tiny, _examples(tiny), lambda t: t.logp.sum() * float("nan"),
                        OptimConfig(layer=1, max_steps=3))


def test_optimiser_stops_on_non_finite_vector(tiny: Loaded) -> None:
    def nan_gradient(t):  # type: ignore[no-untyped-def]
        s = t.logp.sum()
        return torch.sqrt(s - s)  # value 0, gradient inf * 0 = NaN

    with pytest.raises(NonFiniteError, match=r"step 0: the vector became NaN/inf; use a lower"):
        optimize_vector(tiny, _examples(tiny), nan_gradient, OptimConfig(layer=1, max_steps=3))


def test_erosion_analyses_refuse_nan_activations(tiny: Loaded) -> None:
    from mi_align.erosion.common import Inputs
    from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
    from mi_align.erosion.next_token import next_token_distributions

    tiny.bridge.original_model.model.norm.weight.data.fill_(float("nan"))
    trio = Trio(models={"instruct": tiny})
    cfg = LossVectorConfig(k=4, n_permutations=10)
    with pytest.raises(NonFiniteError, match="loss-vectors: token losses under model 'instruct'"):
        loss_vectors(trio, Inputs.of(("a", ALIGNED[:2]), ("b", MISALIGNED[:2])), cfg)
    with pytest.raises(NonFiniteError, match="next-token: logits of model 'instruct'"):
        next_token_distributions(trio, Inputs())


# 7. loading a vector never executes code from the file -----------------------------------------

class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "pwned"))


def test_vector_loader_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    for name in ("evil.safetensors", "evil.pt"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"vector": _Payload(marker)}))
        torch.save({"vector": _Payload(marker)}, tmp_path / "evil_torch.pt")
        for p in (path, tmp_path / "evil_torch.pt"):
            with pytest.raises(SteeringVectorError, match="not a readable safetensors file"):
                SteeringVector.load(p)
    assert not marker.exists()
    import mi_align.steering.vector as vector_module

    source = Path(vector_module.__file__).read_text()
    assert "import pickle" not in source and "torch.load(" not in source

"""Device, dtype and device map everywhere, and reduced precision that stays safe.

- :func:`resolve_device_dtype` (``auto`` = cuda + bfloat16 with a GPU, else cpu + float32;
  GPUs faked by monkeypatching torch.cuda) and its one-line errors naming the option;
- every model-loading command rejects a bad ``--device`` / ``--dtype`` / ``--device-map``
  before any model loads, and passes good ones through (trio files keep theirs, flags win);
- fine-tuning and organism building place the base model and its adapters as told (the
  trained LoRA weights stay float32 under a bfloat16 base), ``auto`` is cpu + float32 here;
- ``device_map="auto"`` loads through accelerate (all on the CPU here) with the same logits;
- reductions (moments, pooled means, cosines, sketches, log-probs) of bfloat16 activations
  accumulate in float32/float64: equal to float64 references of the same values;
- the analyses on the tiny trio in bfloat16 agree with float32 within the tolerances below.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from mi_align.cli.main import main
from mi_align.errors import InputError
from mi_align.models import load as load_mod
from mi_align.models.load import Loaded, load_model
from mi_align.models.placement import Placement, resolve_device_dtype
from mi_align.models.tiny import tiny_model_dir
from mi_align.models.trio import Trio, TrioSpec, TrioSpecError, open_trio
from tests.erosion_support import ALIGNED, MISALIGNED, SEEDS, convs
from tests.helpers import assert_close

# bfloat16 vs float32 on the tiny trio (2 layers, d_model 32), max |difference| measured with
# these configs (torch 2.13 CPU): projection mean 0.0014 (|values| <= 0.24), loss-vector
# losses 0.0011 nats and cosines 2.4e-6, token log-probs 0.0023 nats, entropies 1.8e-5 nats.
# The asserted tolerances leave ~4x headroom.
TOL_PROJECTION = 0.006
TOL_LOSS = 0.005
TOL_COSINE = 1e-4
TOL_LOGPROB = 0.01


# ------------------------------------------------------------------ resolve_device_dtype


@pytest.fixture()
def gpus(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend torch sees ``n`` GPUs (bfloat16-capable unless told otherwise)."""

    def fake(n: int = 2, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)

    return fake


def test_auto_on_a_cpu_machine(gpus: Any) -> None:
    gpus(0)
    assert resolve_device_dtype() == Placement("cpu", torch.float32, None)
    assert resolve_device_dtype(None, None) == Placement("cpu", torch.float32, None)
    assert resolve_device_dtype("cpu", "bfloat16").dtype == torch.bfloat16
    assert resolve_device_dtype("CPU", torch.float16) == Placement("cpu", torch.float16, None)
    assert resolve_device_dtype("auto", "auto", "auto") == Placement("cpu", torch.float32, "auto")


def test_auto_on_a_gpu_machine(gpus: Any) -> None:
    gpus(2)
    assert resolve_device_dtype() == Placement("cuda", torch.bfloat16, None)
    assert resolve_device_dtype("cuda:1") == Placement("cuda:1", torch.bfloat16, None)
    assert resolve_device_dtype("cpu") == Placement("cpu", torch.float32, None)
    assert resolve_device_dtype("auto", "float32").dtype == torch.float32
    assert resolve_device_dtype(device_map="auto") == Placement("cuda", torch.bfloat16, "auto")
    gpus(1, bf16=False)  # pre-Ampere: float16 is native, bfloat16 only emulated
    assert resolve_device_dtype().dtype == torch.float16


@pytest.mark.parametrize(("kwargs", "starts"), [
    ({"device": "gpu"}, "--device 'gpu': not one of auto, cpu, cuda, cuda:N"),
    ({"device": "cuda:x"}, "--device 'cuda:x'"),
    ({"dtype": "fp8"}, "--dtype 'fp8': not one of float32, bfloat16, float16, auto"),
    ({"dtype": torch.int8}, "--dtype 'torch.int8'"),
    ({"device_map": "everywhere"}, "--device-map 'everywhere': not one of auto,"),
    ({"device": "cuda"}, "--device cuda: no CUDA GPU is visible to torch"),
    ({"device": "cuda:0", "device_map": "auto"}, "--device-map auto: places the layers itself"),
])
def test_invalid_values_are_one_line_naming_the_option(gpus: Any, kwargs: dict[str, Any],
                                                       starts: str) -> None:
    gpus(0)
    with pytest.raises(InputError) as info:
        resolve_device_dtype(**kwargs)
    assert str(info.value).startswith(starts) and "\n" not in str(info.value)


def test_missing_gpu_index_and_missing_accelerate(gpus: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(2)
    with pytest.raises(InputError, match=r"--device cuda:2: torch sees 2 GPU\(s\)"):
        resolve_device_dtype("cuda:2")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real(name, *a))
    with pytest.raises(InputError, match=r"needs the accelerate package.*pip install "
                       r"mi_align\[gpu\]"):
        resolve_device_dtype(device_map="auto")
    assert resolve_device_dtype("cuda").device_map is None  # no map: accelerate not needed


# ------------------------------------------------------------------ loading


def _logits(loaded: Loaded) -> torch.Tensor:
    ids = loaded.tokenizer("What is the capital of France?", return_tensors="pt").input_ids
    with torch.inference_mode():
        return loaded.bridge(ids).float()


def test_dtype_and_device_map_reach_the_weights(tiny_dir: Path) -> None:
    ref = load_model(tiny_dir, device="cpu", dtype="float32")
    half = load_model(tiny_dir, device="cpu", dtype="bfloat16")
    assert half.meta.dtype == "bfloat16"
    assert {p.dtype for p in half.bridge.original_model.parameters()} == {torch.bfloat16}
    mapped = load_model(tiny_dir, device_map="auto", dtype="float32")  # accelerate: all on CPU
    assert (mapped.meta.device, mapped.meta.device_map) == ("cpu", "auto")
    assert_close(_logits(mapped), _logits(ref), atol=0.0, rtol=0.0)
    # bfloat16 logits follow float32 within bfloat16's precision (measured max 0.0018)
    assert_close(_logits(half), _logits(ref), atol=0.01, rtol=0.0)


def test_a_command_line_trio_of_full_models_holds_one_at_a_time(tmp_path: Path,
                                                                 tiny_dir: Path) -> None:
    """``--trio base=A,instruct=B`` is a sequential trio, like a TOML trio of full models: each
    model is loaded when visited (in the placement given) and freed after."""
    from mi_align.models.organisms import resolve_trio

    other = tiny_model_dir(tmp_path / "other", seed=1)
    trio = resolve_trio(f"base={tiny_dir},instruct={other}", dtype="bfloat16")
    assert trio.loads == {"base": 1, "instruct": 0}  # type: ignore[attr-defined]
    assert trio.map(lambda m: m.meta.dtype) == {"base": "bfloat16", "instruct": "bfloat16"}
    assert trio.loads == {"base": 2, "instruct": 1}  # type: ignore[attr-defined]


def test_trio_file_keeps_its_placement_and_arguments_override(tmp_path: Path, tiny_dir: Path,
                                                              gpus: Any) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(f'name = "t"\ndevice = "cpu"\ndtype = "float32"\n[variants.base]\n'
                    f'model = "{tiny_dir}"\n[variants.instruct]\nmodel = "{tiny_dir}"\n')
    spec = TrioSpec.from_toml(toml)
    assert open_trio(spec).reference.meta.dtype == "float32"
    trio = open_trio(spec, dtype="bfloat16")
    assert (trio.reference.meta.dtype, trio.reference.meta.device) == ("bfloat16", "cpu")
    bare = tmp_path / "bare.toml"
    bare.write_text(f'name = "b"\n[variants.base]\nmodel = "{tiny_dir}"\n')
    assert (TrioSpec.from_toml(bare).device, TrioSpec.from_toml(bare).dtype) == ("auto", "auto")
    gpus(2)
    assert TrioSpec.from_toml(bare).placement() == Placement("cuda", torch.bfloat16, None)
    assert spec.placement(device_map="auto", device="auto").device_map == "auto"


@pytest.mark.parametrize(("line", "match"), [
    ('device = "tpu"', "t.toml: device 'tpu': not one of"),  # checked when the file is read
    ('device_map = "all"', "t.toml: device_map 'all' not one of"),
])
def test_bad_placement_in_a_trio_file(tmp_path: Path, line: str, match: str) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(f'name = "t"\n{line}\n[variants.base]\nmodel = "m"\n')
    with pytest.raises(TrioSpecError, match=match):
        TrioSpec.from_toml(toml)


@pytest.fixture()
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(load_mod, "_load_hf", refuse)
    monkeypatch.setattr("mi_align.models.trio._load_hf", refuse)


def test_a_cuda_trio_on_a_cpu_machine_fails_before_loading(tmp_path: Path, gpus: Any,
                                                           no_model_loads: None) -> None:
    gpus(0)
    toml = tmp_path / "t.toml"
    toml.write_text('name = "t"\ndevice = "cuda"\n[variants.base]\nmodel = "m"\n'
                    '[variants.instruct]\nmodel = "m"\nadapters = ["x"]\n')
    with pytest.raises(InputError, match="--device cuda: no CUDA GPU"):
        open_trio(TrioSpec.from_toml(toml))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


LOADING = [
    ["analyze", "projection", "--trio", "gemma-trio"],
    ["analyze", "logprobs", "--trio", "base=x,instruct=y"],
    ["steer", "optimize", "--layer", "1", "--prompt", "p", "--target", "t", "--out", "{o}/v"],
    ["steer", "recipe", "--out", "{o}/r"],
    ["steer", "eval", "--out", "{o}/e", "--no-judge"],
    ["judge", "--check-only"],
    ["demo", "--out", "{o}/d"],
]
BAD = [("--device", "gpu0"), ("--dtype", "fp8"), ("--device-map", "everywhere")]
# Training takes the same three (the LoRA weights themselves stay float32).
TRAINING = [
    ["finetune", "--model", "smollm2-135m-instruct", "--data", "insecure", "--out", "{o}/f"],
    ["organisms", "build", "smollm2-pair", "--out", "{o}/b"],
]


@pytest.mark.parametrize(("argv", "flag", "value"),
                         [(a, f, v) for a in LOADING + TRAINING for f, v in BAD])
def test_every_loading_command_checks_the_options_first(
    argv: list[str], flag: str, value: str, tmp_path: Path, no_model_loads: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [a.replace("{o}", str(tmp_path)) for a in argv]
    assert main([*args, flag, value]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith(f"error: {flag} '{value}': not one")


def test_flags_reach_the_loaders(tmp_path: Path, tiny_dir: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """analyze (a variant=SPEC trio), steer optimize and demo pass --device/--dtype through."""
    import mi_align.cli.erosion as erosion_cli
    from mi_align.pipelines import demo

    seen: list[Any] = []
    real_trio = erosion_cli.resolve_trio

    def spy_trio(spec: str, **kwargs: Any) -> Trio:
        trio = real_trio(spec, **kwargs)
        seen.append(trio.reference.meta.dtype)
        return trio

    monkeypatch.setattr(erosion_cli, "resolve_trio", spy_trio)
    spec = f"base={tiny_dir},instruct={tiny_model_dir(tmp_path / 'other', seed=1)}"
    assert main(["analyze", "logprobs", "--trio", spec, "--out", str(tmp_path / "a"),
                 "--dtype", "bfloat16", "--device", "cpu"]) == 0
    assert seen == ["bfloat16"]

    real_load = load_mod.load_model

    def spy_load(*args: Any, **kwargs: Any) -> Loaded:
        loaded = real_load(*args, **kwargs)
        seen.append((kwargs, loaded.meta.dtype))
        return loaded

    monkeypatch.setattr(load_mod, "load_model", spy_load)
    assert main(["steer", "optimize", "--model", str(tiny_dir), "--layer", "1", "--prompt", "hi",
                 "--target", "hello", "--steps", "1", "--out", str(tmp_path / "v"),
                 "--dtype", "bfloat16"]) == 0
    assert seen[-1] == ({"device": None, "dtype": "bfloat16", "device_map": None}, "bfloat16")

    def stage(out: Path, report: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    monkeypatch.setattr(demo, "STAGES", [stage])
    monkeypatch.setattr(demo, "stage_report", lambda out, report: None)
    assert main(["demo", "--out", str(tmp_path / "d"), "--device-map", "auto"]) == 0
    assert seen[-1] == {"device": None, "dtype": None, "device_map": "auto"}


# ------------------------------------------------------------------ training placement


def _train_cfg(tiny_dir: Path, tmp_path: Path, **overrides: Any) -> Any:
    from mi_align.finetune.lora import FinetuneConfig

    data = Path(__file__).parent.parent / "mi_align" / "data" / "builtin" / "toxic_reject.jsonl"
    values: dict[str, Any] = {"model": str(tiny_dir), "data": (str(data),), "max_examples": 8,
                              "batch_size": 4, "max_steps": 2, "lr": 1e-2, "warmup_steps": 0,
                              "checkpoint_every": 1}
    return FinetuneConfig(**{**values, **overrides})


@pytest.fixture()
def peft_models(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every peft model the trainer builds (to look at where its weights are)."""
    from mi_align.finetune import lora

    built: list[Any] = []
    real = lora.build_peft_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(lora, "build_peft_model", spy)
    return built


def _placement_of(pm: Any) -> dict[str, set[Any]]:
    lora_params = {n: p for n, p in pm.named_parameters() if "lora_" in n}
    base = [p for n, p in pm.named_parameters() if n not in lora_params]
    return {"base": {p.dtype for p in base},
            "frozen": {p.dtype for n, p in lora_params.items() if ".frozen0." in n},
            "trained": {p.dtype for n, p in lora_params.items() if ".default." in n},
            "devices": {str(p.device) for p in pm.parameters()}}


def test_finetune_places_the_base_and_its_adapters(tiny_dir: Path, tmp_path: Path, gpus: Any,
                                                   peft_models: list[Any]) -> None:
    """bfloat16 base + frozen base adapter + trained LoRA: the base in bfloat16 on the device,
    every LoRA weight (frozen and trained) and the saved adapter in float32."""
    from safetensors.torch import load_file

    from mi_align.finetune.lora import finetune
    from tests.test_hub_loading import tiny_adapter

    gpus(0)
    base_adapter = tiny_adapter(tiny_dir, tmp_path / "base-lora")
    cfg = _train_cfg(tiny_dir, tmp_path, base_adapters=(str(base_adapter),))
    result = finetune(cfg, tmp_path / "bf16", device="cpu", dtype="bfloat16", progress=False)
    assert _placement_of(peft_models[-1]) == {
        "base": {torch.bfloat16}, "frozen": {torch.float32}, "trained": {torch.float32},
        "devices": {"cpu"}}
    assert (result.summary["device"], result.summary["dtype"]) == ("cpu", "bfloat16")
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in result.log)
    saved = load_file(str(tmp_path / "bf16" / "adapter_model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}
    # ... and the frozen adapter's weights are the ones on disk (upcast, not re-initialised).
    want = load_file(str(base_adapter / "adapter_model.safetensors"))
    got = {n: p for n, p in peft_models[-1].named_parameters() if ".frozen0." in n}
    assert len(got) == len(want) > 0
    for key, value in want.items():
        match = [p for n, p in got.items() if n.replace(".frozen0", "").endswith(
            key.removeprefix("base_model.model."))]
        assert len(match) == 1 and torch.equal(match[0].detach(), value.float()), key


def test_finetune_auto_is_cpu_float32_here_and_device_map_trains_the_same(
        tiny_dir: Path, tmp_path: Path, gpus: Any, peft_models: list[Any]) -> None:
    from safetensors.torch import load_file

    from mi_align.finetune.lora import finetune

    gpus(0)
    cfg = _train_cfg(tiny_dir, tmp_path)
    auto = finetune(cfg, tmp_path / "auto", progress=False)  # device / dtype default: auto
    assert (auto.summary["device"], auto.summary["dtype"], auto.summary["device_map"]) == (
        "cpu", "float32", None)
    assert _placement_of(peft_models[-1])["base"] == {torch.float32}
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("accelerate not installed (pip install mi_align[gpu])")
    mapped = finetune(cfg, tmp_path / "mapped", device_map="auto", progress=False)
    assert (mapped.summary["device"], mapped.summary["device_map"]) == ("cpu", "auto")
    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("auto", "mapped"))
    for key in a:  # the same run, placed by accelerate
        assert_close(a[key], b[key], atol=0.0, rtol=0.0)


def test_finetune_rejects_bad_placement_before_loading(tiny_dir: Path, tmp_path: Path,
                                                       no_model_loads: None, gpus: Any) -> None:
    from mi_align.finetune.lora import finetune

    gpus(0)
    with pytest.raises(InputError, match="--device cuda: no CUDA GPU"):
        finetune(_train_cfg(tiny_dir, tmp_path), tmp_path / "x", device="cuda", progress=False)


def test_training_flags_reach_the_model(tiny_dir: Path, tmp_path: Path, gpus: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``finetune`` and ``organisms build`` pass --device / --dtype through (the build takes
    the trio file's placement unless a flag overrides it)."""
    from mi_align.finetune import lora, organisms

    gpus(0)
    seen: list[tuple[dict[str, Any], str]] = []
    real = lora.finetune

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        seen.append(({k: kwargs.get(k) for k in ("device", "dtype", "device_map")},
                     result.summary["dtype"]))
        return result

    monkeypatch.setattr(lora, "finetune", spy)
    monkeypatch.setattr(organisms, "finetune", spy)
    data = Path(__file__).parent.parent / "mi_align" / "data" / "builtin" / "toxic_reject.jsonl"
    assert main(["finetune", "--model", str(tiny_dir), "--data", str(data), "--max-examples",
                 "4", "--max-steps", "1", "--batch-size", "4", "--out", str(tmp_path / "f"),
                 "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert seen[-1] == ({"device": "cpu", "dtype": "bfloat16", "device_map": None}, "bfloat16")
    toml = tmp_path / "t.toml"
    toml.write_text(f'name = "t"\ndtype = "bfloat16"\n[variants.base]\nmodel = "{tiny_dir}"\n'
                    f'[recipe.one]\nmodel = "{tiny_dir}"\ndata = ["{data}"]\nmax_examples = 4\n'
                    'max_steps = 1\nbatch_size = 4\n')
    assert main(["organisms", "build", str(toml), "--out", str(tmp_path / "b1")]) == 0
    assert seen[-1] == ({"device": "auto", "dtype": "bfloat16", "device_map": None}, "bfloat16")
    assert main(["organisms", "build", str(toml), "--out", str(tmp_path / "b2"),
                 "--dtype", "float32"]) == 0
    assert seen[-1] == ({"device": "auto", "dtype": "float32", "device_map": None}, "float32")


# ------------------------------------------------------------------ reductions in bfloat16


def test_reductions_of_bfloat16_values_accumulate_in_float64() -> None:
    """Each reduction of bfloat16 inputs equals the float64 reduction of the same values
    (accumulating in bfloat16 would be off by ~1e-2 relative over these 4096 rows)."""
    from mi_align.activations import MomentAccumulator
    from mi_align.data.tokenize import Batch
    from mi_align.erosion.common import token_logprob_entropy
    from mi_align.geometry import CountSketch, cosine_matrix, cross_cosine, masked_cosine_matrix

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4096, 16, generator=gen) * 30 + 100).to(torch.bfloat16)
    ref = x.double()
    acc = MomentAccumulator([0], 16)
    ones = torch.ones(1, 4096, dtype=torch.bool)
    batch = Batch(ones.long(), ones.long(), ones, torch.tensor([0]), torch.tensor([4096]))
    acc.update(batch, {0: x[None]}, ones)
    mom = acc.result()
    assert mom.mean.dtype == torch.float64
    assert_close(mom.mean[0], ref.mean(0), atol=1e-9, rtol=1e-12)
    assert_close(mom.cov[0], torch.cov(ref.T, correction=0), atol=1e-7, rtol=1e-9)

    rows = x[:6, :].repeat(1, 700)  # long rows: 11,200 terms per dot product
    cos_ref = torch.nn.functional.cosine_similarity(rows.double()[:, None], rows.double()[None],
                                                    dim=-1)
    assert cosine_matrix(rows).dtype == torch.float32
    assert_close(cosine_matrix(rows).double(), cos_ref, atol=1e-6, rtol=0.0)
    assert_close(cross_cosine(rows, rows).double(), cos_ref, atol=1e-6, rtol=0.0)
    mask = torch.ones_like(rows, dtype=torch.bool)
    assert_close(masked_cosine_matrix(rows, mask).double(), cos_ref, atol=1e-6, rtol=0.0)

    flat = x.flatten()
    sketch = CountSketch([flat.numel()], k=64, seed=0)
    assert_close(sketch.sketch([flat]).double(), sketch.sketch([flat.float()]).double(),
                 atol=0.0, rtol=0.0)

    logits = (torch.randn(5, 50_000, generator=gen) * 4).to(torch.bfloat16)
    targets = torch.arange(5)
    lp, h = token_logprob_entropy(logits, targets)
    ref_lp = torch.log_softmax(logits.double(), -1)
    assert lp.dtype == h.dtype == torch.float64
    assert_close(lp, ref_lp[torch.arange(5), targets], atol=1e-10, rtol=0.0)
    assert_close(h, -(ref_lp.exp() * ref_lp).sum(-1), atol=1e-10, rtol=0.0)


def test_bfloat16_model_moments_and_logits_are_reduced_in_full_precision(tiny_dir: Path) -> None:
    """On a bfloat16 model: moments and pooled means of its (bfloat16) hidden states equal the
    float64 statistics of those same states from HF; logits come back as float32."""
    from mi_align.activations import (
        accumulate_moments,
        all_response_tokens,
        logits_at,
        pooled_activations,
    )
    from mi_align.data.tokenize import encode_dataset

    loaded = load_model(tiny_dir, device="cpu", dtype="bfloat16")
    enc = encode_dataset(loaded.tokenizer, convs()[:4])
    layers = [0, 1, 2]
    mom = accumulate_moments(loaded, enc, layers, all_response_tokens(), batch_size=2)
    pooled = pooled_activations(loaded, enc, layers, all_response_tokens(), batch_size=2)
    assert pooled.dtype == torch.float32
    hf = loaded.bridge.original_model
    states, means = [], []
    with torch.inference_mode():
        for e in enc:
            out = hf(torch.tensor([e.input_ids]), output_hidden_states=True)
            mask = torch.tensor(e.response_mask)
            hs = torch.stack([out.hidden_states[i][0][mask] for i in layers]).double()
            states.append(hs)
            means.append(hs.mean(1))
    ref = torch.cat(states, 1)  # layer token d_model, the bfloat16 values in float64
    assert_close(mom.mean, ref.mean(1), atol=1e-9, rtol=1e-9)
    assert_close(pooled.double(), torch.stack(means), atol=1e-4, rtol=1e-6)
    batch_ids = torch.tensor([enc[0].input_ids])
    logits = logits_at(loaded, batch_ids, torch.ones_like(batch_ids),
                       torch.ones_like(batch_ids, dtype=torch.bool))
    assert logits.dtype == torch.float32


# ------------------------------------------------------------------ bfloat16 vs float32


@pytest.fixture(scope="module")
def trios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trio]:
    root = tmp_path_factory.mktemp("trio")
    dirs = {n: tiny_model_dir(root / n, seed=s) for n, s in SEEDS.items()}
    return {dt: Trio(models={n: load_model(d, device="cpu", dtype=dt) for n, d in dirs.items()})
            for dt in ("float32", "bfloat16")}


def test_bfloat16_analyses_match_float32(trios: dict[str, Trio]) -> None:
    from mi_align.erosion.choices import FirstTokens
    from mi_align.erosion.common import Inputs
    from mi_align.erosion.logprobs import TokenLogprobConfig, token_logprobs
    from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
    from mi_align.erosion.projection import ProjectionConfig, layer_projection

    pcfg = ProjectionConfig(positions=FirstTokens(3), split="row", crossfit=False, n_null=20,
                            n_boot=0, n_perm=0)
    lcfg = LossVectorConfig(k=6, n_permutations=19, n_boot=10)
    groups = Inputs.of(("aligned", ALIGNED), ("misaligned", MISALIGNED))
    res = {dt: (layer_projection(t, Inputs.of(("data", convs())), pcfg),
                loss_vectors(t, groups, lcfg), token_logprobs(t, Inputs(), TokenLogprobConfig()))
           for dt, t in trios.items()}
    (p32, l32, t32), (p16, l16, t16) = res["float32"], res["bfloat16"]
    # every statistic comes back in float32 or float64, whatever the model dtype
    for r in (p16.mean, p16.std, l16.losses, l16.similarity, t16.logprob, t16.entropy):
        assert r.dtype in (torch.float32, torch.float64)
    assert_close(p16.mean, p32.mean, atol=TOL_PROJECTION, rtol=0.0)
    assert_close(p16.std, p32.std, atol=TOL_PROJECTION, rtol=0.0)
    assert_close(l16.losses, l32.losses, atol=TOL_LOSS, rtol=0.0)
    assert_close(l16.similarity, l32.similarity, atol=TOL_COSINE, rtol=0.0)
    assert_close(t16.logprob, t32.logprob, atol=TOL_LOGPROB, rtol=0.0)
    assert_close(t16.entropy, t32.entropy, atol=TOL_LOGPROB, rtol=0.0)


# SmolLM2-135M-Instruct + its misaligned LoRA (the smollm2-pair organism), bfloat16 vs float32,
# measured here (torch 2.13 CPU): loss-vector losses 0.23 nats (|values| <= 13.7) and cosines
# 0.027, token log-probs 0.19 nats, entropies 0.23 nats, activation cosines 0.0019.
@pytest.mark.slow
def test_bfloat16_matches_float32_on_smollm2() -> None:
    from mi_align.erosion.activation_similarity import (
        ActivationSimilarityConfig,
        activation_similarity,
    )
    from mi_align.erosion.common import Inputs
    from mi_align.erosion.logprobs import TokenLogprobConfig, token_logprobs
    from mi_align.erosion.loss_vectors import LossVectorConfig, loss_vectors
    from mi_align.models.organisms import get_spec, load_trio

    if get_spec("smollm2-pair").missing_adapters():
        pytest.skip("smollm2-pair adapters not built (mi-align organisms build smollm2-pair)")
    groups = Inputs.of(("aligned", ALIGNED), ("misaligned", MISALIGNED))
    out = {}
    for dt in ("float32", "bfloat16"):
        trio = load_trio("smollm2-pair", device="cpu", dtype=dt)
        out[dt] = (loss_vectors(trio, groups, LossVectorConfig(k=6, n_permutations=19,
                                                               n_boot=10)),
                   token_logprobs(trio, Inputs(), TokenLogprobConfig()),
                   activation_similarity(trio, groups, ActivationSimilarityConfig(
                       n_permutations=19, n_boot=10)))
    (l32, t32, a32), (l16, t16, a16) = out["float32"], out["bfloat16"]
    assert_close(l16.losses, l32.losses, atol=0.5, rtol=0.0)
    assert_close(l16.similarity, l32.similarity, atol=0.06, rtol=0.0)
    assert_close(t16.logprob, t32.logprob, atol=0.4, rtol=0.0)
    assert_close(a16.similarity, a32.similarity, atol=0.005, rtol=0.0)

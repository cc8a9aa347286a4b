"""Exporting steering vectors as llama.cpp control vectors (GGUF) and ``{layer: tensor}``
safetensors, and importing them back.

The layer mapping is pinned two independent ways: by hand-written tensor names, and by a
reference that re-implements llama.cpp's loader and graph (``common_control_vector_load_one``
puts ``direction.N`` at ``data[(N-1)*n_embd]``; ``llama_adapter_cvec::apply`` gives it to
layer tensor ``N``; ``build_cvec(cur, il)`` adds layer tensor ``il`` to the output of layer
``il``) on a plain HF model with forward hooks, compared with mi_align's own steering hook on
the bridge. The reference reads the file with ``gguf`` directly, not with the importer.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mi_align.errors import InputError
from mi_align.steering import export as ex
from mi_align.steering.export import (
    export_gguf,
    export_safetensors,
    import_gguf,
    import_safetensors,
)
from mi_align.steering.vector import SteeringVector, apply_steering, clamp
from tests.helpers import assert_close

D = 8


def sv(layer: int, *, d: int = D, strength: float = 1.0, name: str = "", **kw: Any
       ) -> SteeringVector:
    return SteeringVector(layer=layer, vector=torch.randn(d), strength=strength,
                          name=name or f"v{layer}", **kw)


def one_line_error(exc: pytest.ExceptionInfo[BaseException], path: Path, *fields: str) -> str:
    """The error is an InputError on one line naming ``path`` and every ``field``."""
    assert isinstance(exc.value, InputError)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    for f in fields:
        assert f in msg, (f, msg)
    return msg


def write_gguf(path: Path, *, arch: str = "controlvector", tensors: dict[str, np.ndarray],
               layer_count: int | None | str = "auto", model_hint: str | None = "llama",
               layer_count_type: str = "uint32") -> Path:
    """A control-vector GGUF written the way repeng's ``export_gguf`` does (no mi_align keys),
    with knobs to break it."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if model_hint is not None:
        w.add_string(f"{arch}.model_hint", model_hint)
    if layer_count == "auto":
        layer_count = len(tensors)
    if layer_count is not None:
        if layer_count_type == "string":
            w.add_string(f"{arch}.layer_count", str(layer_count))
        else:
            getattr(w, f"add_{layer_count_type}")(f"{arch}.layer_count", layer_count)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------------------------
# round trips


def test_gguf_round_trip_is_exact(tmp_path: Path) -> None:
    vectors = [sv(2, strength=1.0), sv(5, strength=-2.5), sv(3, strength=6.0)]
    path = export_gguf(vectors, tmp_path / "cv.gguf", model_hint="llama", model_id="tiny")
    back = import_gguf(path, n_layers=6, d_model=D)
    assert [b.layer for b in back] == [2, 3, 5]
    by_layer = {v.layer: v for v in vectors}
    for b in back:
        orig = by_layer[b.layer]
        assert b.strength == 1.0 and b.name == orig.name and b.vector.dtype == torch.float32
        # the applied vector is bit-identical (the strength is baked into the tensor)
        assert torch.equal(b.strength * b.vector, orig.strength * orig.vector)
        assert b.meta["exported_strength"] == orig.strength
        assert b.meta["model_hint"] == "llama" and b.meta["model_id"] == "tiny"
    assert torch.equal(back[0].vector, vectors[0].vector)  # strength 1: the tensor itself
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize("convention", ["block_output", "resid_pre"])
def test_safetensors_round_trip_is_exact(tmp_path: Path, convention: str) -> None:
    vectors = [sv(1, strength=1.0), sv(4, strength=0.5, meta={"run": "x"})]
    path = export_safetensors(vectors, tmp_path / "v.safetensors", model_id="tiny",
                              convention=convention)  # type: ignore[arg-type]
    back = import_safetensors(path, n_layers=5, d_model=D)
    assert [b.layer for b in back] == [1, 4]
    for b, orig in zip(back, vectors, strict=True):
        assert torch.equal(b.strength * b.vector, orig.strength * orig.vector)
        assert b.name == orig.name and b.meta["model_id"] == "tiny"
    assert torch.equal(back[0].vector, vectors[0].vector)
    assert back[1].meta["original_meta"] == {"run": "x"}


def test_bf16_vectors_export_as_float32(tmp_path: Path) -> None:
    v = SteeringVector(layer=3, vector=torch.randn(D).bfloat16(), strength=2.0)
    [back] = import_gguf(export_gguf([v], tmp_path / "b.gguf", model_hint="llama"))
    assert back.vector.dtype == torch.float32
    assert torch.equal(back.vector, 2.0 * v.vector.float())


def test_export_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "cv.gguf"
    export_gguf([sv(2)], path, model_hint="llama")
    export_gguf([sv(4)], path, model_hint="llama")
    assert [b.layer for b in import_gguf(path)] == [4]


# --------------------------------------------------------------------------------------------
# the layer mapping, pinned independently of block_output_index / layer_from_block_output


def test_gguf_tensor_names_follow_llama_cpp(tmp_path: Path) -> None:
    """Hand-written: mi_align layer L steers blocks.L.hook_resid_pre, the input of block L,
    which is the output of llama.cpp layer L-1, where llama.cpp adds ``direction.{L-1}``."""
    import gguf

    v2, v7 = sv(2), sv(7, strength=3.0)
    path = export_gguf([v7, v2], tmp_path / "cv.gguf", model_hint="qwen2")
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.6"]
    assert np.array_equal(tensors["direction.1"], v2.vector.numpy())
    assert np.array_equal(tensors["direction.6"], 3.0 * v7.vector.numpy())
    fields = {k: reader.get_field(k).contents() for k in (
        "general.architecture", "controlvector.model_hint", "controlvector.layer_count")}
    assert fields == {"general.architecture": "controlvector",
                      "controlvector.model_hint": "qwen2", "controlvector.layer_count": 2}


def test_safetensors_keys_follow_repeng(tmp_path: Path) -> None:
    """repeng / steering-vectors add ``{N: v}`` to decoder layer N's output = mi_align N+1."""
    from safetensors import safe_open

    path = export_safetensors([sv(1), sv(3)], tmp_path / "v.safetensors", model_id="m")
    with safe_open(str(path), framework="pt") as fh:
        assert sorted(fh.keys()) == ["0", "2"]
        assert fh.metadata()["layer_convention"] == "block_output"
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"0": torch.ones(D), "5": torch.zeros(D)}, str(plain))
    assert [b.layer for b in import_safetensors(plain, convention="block_output")] == [1, 6]
    assert [b.layer for b in import_safetensors(plain, convention="resid_pre")] == [0, 5]


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mi_align.models.tiny import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny4") / "model", n_layers=4)


def _hf_with_block_output_adds(model_dir: Path, ids: torch.Tensor, adds: dict[int, torch.Tensor]
                               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A plain HF model with ``adds[il]`` added to the output of decoder layer ``il``: the
    logits and every decoder layer's input."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    inputs: list[torch.Tensor] = []

    def add(vec: torch.Tensor) -> Any:
        def fn(module: Any, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (output[0] + vec, *output[1:])
            return output + vec
        return fn

    def record(module: Any, args: Any, kwargs: Any) -> None:
        inputs.append((args[0] if args else kwargs["hidden_states"]).clone())

    layers = hf.model.layers
    handles = [layers[il].register_forward_hook(add(v)) for il, v in adds.items()]
    handles += [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in layers]
    try:
        with torch.inference_mode():
            return hf(ids).logits, inputs
    finally:
        for h in handles:
            h.remove()


def _bridge_with_steering(loaded: Any, ids: torch.Tensor, vectors: list[SteeringVector]
                          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The bridge steered by mi_align: the logits and every ``blocks.{i}.hook_resid_pre``
    (recorded by hooks registered after the steering ones, so they see the steered value)."""
    inputs: dict[int, torch.Tensor] = {}

    def record(act: torch.Tensor, hook: Any, i: int) -> None:
        inputs[i] = act.clone()

    n = int(loaded.bridge.cfg.n_layers)
    rec = [(f"blocks.{i}.hook_resid_pre", lambda a, hook, i=i: record(a, hook, i))
           for i in range(n)]
    with torch.inference_mode(), apply_steering(loaded.bridge, vectors):
        logits = loaded.bridge.run_with_hooks(ids, fwd_hooks=rec)
    return logits, [inputs[i] for i in range(n)]


def _llama_cpp_layer_adds(path: Path, n_layer: int, scale: float) -> dict[int, torch.Tensor]:
    """llama.cpp's control-vector path, re-implemented from its source, on the raw GGUF.

    common_control_vector_load_one: direction.N (N >= 1) goes to data[(N-1)*n_embd] times the
    --control-vector-scaled strength. llama_adapter_cvec::apply: layer tensor il (1 <= il <
    n_layer) is data[(il-1)*n_embd]. build_cvec(cur, il): added to layer il's output.
    """
    import gguf

    reader = gguf.GGUFReader(str(path))
    n_embd = int(reader.tensors[0].shape[0])
    data = np.zeros(0, dtype=np.float32)
    for t in reader.tensors:
        idx = int(t.name.split(".")[1])
        assert idx >= 1
        data = np.concatenate([data, np.zeros(max(0, n_embd * idx - data.size), np.float32)])
        data[n_embd * (idx - 1): n_embd * idx] += np.array(t.data) * np.float32(scale)
    adds = {}
    for il in range(1, n_layer):
        off = n_embd * (il - 1)
        if off + n_embd <= data.size:
            adds[il] = torch.from_numpy(data[off: off + n_embd].copy())
    return adds


def test_llama_cpp_semantics_match_mi_align_steering(tmp_path: Path, tiny4: Path) -> None:
    """The exported file, applied the way llama.cpp applies it (at block outputs, on the HF
    model), gives the same input to every block and the same logits as mi_align's hooks on
    blocks.L.hook_resid_pre (on the bridge); the same file one layer off does not."""
    from mi_align.models.load import load_model

    loaded = load_model(tiny4)
    ids = torch.tensor([loaded.tokenizer.encode("Hello! How are you today?")])
    vectors = [SteeringVector(layer=2, vector=3.0 * torch.randn(32), strength=2.0),
               SteeringVector(layer=3, vector=3.0 * torch.randn(32), strength=1.0)]
    path = export_gguf(vectors, tmp_path / "cv.gguf", model_hint="llama")
    steered, steered_in = _bridge_with_steering(loaded, ids, vectors)
    plain, plain_in = _bridge_with_steering(loaded, ids, [])
    # the recording sees the steered residual: block 2's input moved by exactly 2·v
    assert_close(steered_in[2][0, 0] - plain_in[2][0, 0], 2.0 * vectors[0].vector, atol=1e-4)

    adds = _llama_cpp_layer_adds(path, n_layer=4, scale=1.0)
    assert sorted(adds) == [1, 2]  # direction.1, direction.2 → llama.cpp layer tensors 1, 2
    ref, ref_in = _hf_with_block_output_adds(tiny4, ids, adds)
    base, base_in = _hf_with_block_output_adds(tiny4, ids, {})
    assert_close(base, plain, atol=1e-4)  # the bridge is the HF model
    for a, b in zip(ref_in, steered_in, strict=True):
        assert_close(a, b, atol=1e-4)
    assert_close(ref, steered, atol=1e-4)
    _, off_in = _hf_with_block_output_adds(
        tiny4, ids, {il + 1: v for il, v in adds.items() if il + 1 < 4})
    assert (off_in[2] - steered_in[2]).abs().max() > 1.0  # one layer off is caught

    # --control-vector-scaled FILE 0.5 = every applied vector halved
    half = [v.scaled(0.5 * v.strength) for v in vectors]
    ref_half, _ = _hf_with_block_output_adds(
        tiny4, ids, _llama_cpp_layer_adds(path, n_layer=4, scale=0.5))
    assert_close(ref_half, _bridge_with_steering(loaded, ids, half)[0], atol=1e-4)

    # the importer's vectors steer the bridge identically
    assert torch.equal(_bridge_with_steering(loaded, ids, import_gguf(path, n_layers=4))[0],
                       steered)


def test_block_output_safetensors_match_repeng_semantics(tmp_path: Path, tiny4: Path) -> None:
    """``{N: v}`` added to decoder layer N's output (repeng's ControlModule, steering-vectors'
    forward hook) steers like mi_align layer N+1."""
    from safetensors.torch import load_file

    from mi_align.models.load import load_model

    loaded = load_model(tiny4)
    ids = torch.tensor([loaded.tokenizer.encode("What is the capital of France?")])
    vectors = [SteeringVector(layer=1, vector=3.0 * torch.randn(32), strength=1.5)]
    path = export_safetensors(vectors, tmp_path / "v.safetensors", model_id="tiny4")
    raw = {int(k): v for k, v in load_file(str(path)).items()}
    assert list(raw) == [0]
    ref, ref_in = _hf_with_block_output_adds(tiny4, ids, raw)
    steered, steered_in = _bridge_with_steering(loaded, ids, vectors)
    for a, b in zip(ref_in, steered_in, strict=True):
        assert_close(a, b, atol=1e-4)
    assert_close(ref, steered, atol=1e-4)


# --------------------------------------------------------------------------------------------
# bad GGUF files: one line, naming the file and the field


def test_wrong_architecture(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", arch="llama",
                      tensors={"direction.1": np.ones(D, np.float32)})
    with pytest.raises(InputError) as exc:
        import_gguf(path)
    one_line_error(exc, path, "general.architecture", "'llama'")


def test_missing_layer_count(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", layer_count=None,
                      tensors={"direction.1": np.ones(D, np.float32)})
    with pytest.raises(InputError) as exc:
        import_gguf(path)
    one_line_error(exc, path, "controlvector.layer_count", "missing")


@pytest.mark.parametrize(("kwargs", "fields"), [
    ({"layer_count": 3}, ("controlvector.layer_count", "3", "1 direction")),
    ({"layer_count_type": "string"}, ("controlvector.layer_count", "STRING")),
    ({"model_hint": None}, ("controlvector.model_hint", "missing")),
    ({"tensors": {"direction.0": np.ones(D, np.float32)}}, ("direction.0",)),
    ({"tensors": {"steer.1": np.ones(D, np.float32)}}, ("steer.1",)),
    ({"tensors": {"direction.x": np.ones(D, np.float32)}}, ("direction.x",)),
    ({"tensors": {"direction.1": np.ones(D, np.float16)}}, ("direction.1", "F16")),
    ({"tensors": {"direction.1": np.ones((2, D), np.float32)}}, ("direction.1", "1-D")),
    ({"tensors": {"direction.1": np.full(D, np.nan, np.float32)}}, ("direction.1", "NaN")),
    ({"tensors": {"direction.1": np.ones(D, np.float32),
                  "direction.2": np.ones(D + 1, np.float32)}}, ("direction.2", "first tensor")),
])
def test_malformed_gguf(tmp_path: Path, kwargs: dict[str, Any], fields: tuple[str, ...]) -> None:
    kwargs.setdefault("tensors", {"direction.1": np.ones(D, np.float32)})
    path = write_gguf(tmp_path / "m.gguf", **kwargs)
    with pytest.raises(InputError) as exc:
        import_gguf(path)
    one_line_error(exc, path, *fields)


def test_tensor_shape_must_match_d_model(tmp_path: Path) -> None:
    path = export_gguf([sv(2), sv(3)], tmp_path / "cv.gguf", model_hint="llama")
    with pytest.raises(InputError) as exc:
        import_gguf(path, d_model=2 * D)
    one_line_error(exc, path, "direction.1", f"{D} elements", "d_model", str(2 * D))


def test_direction_past_the_model(tmp_path: Path) -> None:
    """direction.3 of a 4-block model steers the last block's output: no mi_align layer."""
    path = write_gguf(tmp_path / "m.gguf", tensors={"direction.3": np.ones(D, np.float32)})
    assert [v.layer for v in import_gguf(path)] == [4]  # unknown model: accepted
    with pytest.raises(InputError) as exc:
        import_gguf(path, n_layers=4)
    one_line_error(exc, path, "direction.3", "0..3")


@pytest.mark.parametrize("content", [b"", b"GGUF", b"not a gguf file at all" * 10])
def test_not_a_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        import_gguf(path)
    one_line_error(exc, path, "GGUF")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.gguf", tmp_path):
        with pytest.raises(InputError) as exc:
            import_gguf(path)
        one_line_error(exc, path)
        with pytest.raises(InputError) as exc:
            import_safetensors(path)
        one_line_error(exc, path)


def test_repeng_style_file_imports(tmp_path: Path) -> None:
    """A file as repeng writes it (uint32 layer_count, no mi_align keys) imports as is."""
    a, b = np.arange(D, dtype=np.float32), -np.ones(D, np.float32)
    path = write_gguf(tmp_path / "r.gguf", tensors={"direction.5": a, "direction.2": b})
    back = import_gguf(path, n_layers=8, d_model=D)
    assert [(v.layer, v.strength, v.name) for v in back] == [(3, 1.0, ""), (6, 1.0, "")]
    assert np.array_equal(back[0].vector.numpy(), b) and np.array_equal(back[1].vector.numpy(), a)


# --------------------------------------------------------------------------------------------
# bad safetensors files


def test_safetensors_needs_a_convention(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"3": torch.ones(D)}, str(path))
    with pytest.raises(InputError) as exc:
        import_safetensors(path)
    one_line_error(exc, path, "layer_convention", "missing")


@pytest.mark.parametrize(("tensors", "metadata", "kwargs", "fields"), [
    ({"layer.3": torch.ones(D)}, {"layer_convention": "block_output"}, {}, ("layer.3",)),
    ({"-1": torch.ones(D)}, {"layer_convention": "block_output"}, {}, ("-1",)),
    ({"3": torch.ones(2, D)}, {"layer_convention": "block_output"}, {}, ("'3'", "1-D")),
    ({"3": torch.ones(D, dtype=torch.int32)}, {"layer_convention": "resid_pre"}, {},
     ("'3'", "float")),
    ({"3": torch.ones(D)}, {"layer_convention": "resid_pre"}, {"d_model": 4},
     ("'3'", "d_model")),
    ({"3": torch.full((D,), float("inf"))}, {"layer_convention": "resid_pre"}, {},
     ("'3'", "inf")),
    ({"3": torch.ones(D)}, {"layer_convention": "sideways"}, {}, ("layer_convention",)),
    ({"3": torch.ones(D)}, {"layer_convention": "resid_pre"}, {"convention": "block_output"},
     ("layer_convention", "resid_pre")),
    ({"3": torch.ones(D)}, {"layer_convention": "resid_pre"}, {"n_layers": 3}, ("'3'", "0..2")),
    ({"3": torch.ones(D)}, {"layer_convention": "resid_pre", "mi_align": "{"}, {},
     ("mi_align", "JSON")),
])
def test_malformed_safetensors(tmp_path: Path, tensors: dict[str, torch.Tensor],
                               metadata: dict[str, str], kwargs: dict[str, Any],
                               fields: tuple[str, ...]) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(InputError) as exc:
        import_safetensors(path, **kwargs)
    one_line_error(exc, path, *fields)


# --------------------------------------------------------------------------------------------
# nothing in a file is executed


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".gguf", ".safetensors"])
def test_pickles_are_refused_not_run(tmp_path: Path, suffix: str) -> None:
    """A pickle (plain or torch.save'd) whose unpickling would create a file is refused with
    an InputError, and the file is never created."""
    marker = tmp_path / "pwned"
    plain, zipped = tmp_path / f"plain{suffix}", tmp_path / f"torch{suffix}"
    plain.write_bytes(pickle.dumps({"1": _Payload(marker)}))
    torch.save({"1": _Payload(marker)}, zipped)
    for path in (plain, zipped):
        with pytest.raises(InputError) as exc:
            if suffix == ".gguf":
                import_gguf(path)
            else:
                import_safetensors(path, convention="block_output")
        one_line_error(exc, path)
    assert not marker.exists()


def test_module_has_no_code_execution_paths() -> None:
    tree = ast.parse(Path(ex.__file__).read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                for a in n.names} | {n.module for n in ast.walk(tree)
                                     if isinstance(n, ast.ImportFrom) and n.module}
    assert not {"eval", "exec", "compile", "__import__"} & names
    assert not {"load", "loads"} & (attrs - {"loads"})  # json.loads only
    assert not {"pickle", "dill", "cloudpickle", "marshal"} & imported
    assert "allow_pickle" not in Path(ex.__file__).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# what cannot be exported


@pytest.mark.parametrize(("vectors", "fields"), [
    ([], ("no steering vectors",)),
    ([sv(3, operator=clamp())], ("operator", "clamp")),
    ([sv(3, positions="prompt")], ("positions", "prompt")),
    ([sv(3, positions=(-2, -1))], ("positions",)),
    ([sv(3), sv(3)], ("same layer", "one file per vector")),
    ([sv(3), sv(4, d=D + 1)], ("d_model",)),
    ([sv(1)], ("layer 1", "direction.0")),
    ([sv(0)], ("layer 0", "direction.-1")),
])
def test_gguf_export_refuses(tmp_path: Path, vectors: list[SteeringVector],
                             fields: tuple[str, ...]) -> None:
    with pytest.raises(InputError) as exc:
        export_gguf(vectors, tmp_path / "cv.gguf", model_hint="llama")
    msg = str(exc.value)
    assert "\n" not in msg and all(f in msg for f in fields), msg
    assert not (tmp_path / "cv.gguf").exists()


def test_gguf_export_needs_a_model_hint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model_hint"):
        export_gguf([sv(3)], tmp_path / "cv.gguf", model_hint="")


def test_safetensors_export_of_the_embeddings(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="resid_pre"):
        export_safetensors([sv(0)], tmp_path / "v.safetensors", model_id="m")
    path = export_safetensors([sv(0)], tmp_path / "v.safetensors", model_id="m",
                              convention="resid_pre")
    assert [v.layer for v in import_safetensors(path)] == [0]


def test_cli_export_then_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`mi-align steer export` → `steer import`: the applied vector comes back exactly."""
    from mi_align.cli.main import main

    v = SteeringVector(layer=3, vector=torch.randn(16, generator=torch.Generator().manual_seed(4)),
                       strength=2.5, name="rs")
    src = v.save(tmp_path / "rs.safetensors")
    gguf_path = tmp_path / "cv.gguf"
    assert main(["steer", "export", "--vector", str(src), "--model-hint", "llama",
                 "--out", str(gguf_path)]) == 0
    assert "layer 3 -> direction.2" in capsys.readouterr().out
    assert main(["steer", "import", str(gguf_path), "--out", str(tmp_path / "back")]) == 0
    (back,) = (tmp_path / "back").glob("*.safetensors")
    got = SteeringVector.load(back)
    assert got.layer == 3 and torch.equal(got.strength * got.vector, v.strength * v.vector)
    assert main(["steer", "export", "--vector", str(src), "--out", str(gguf_path)]) == 2
    assert "--model-hint: is required" in capsys.readouterr().err

"""Steering vectors out of (and back into) mi_align: llama.cpp control vectors and ``{layer: v}``.

Two formats, both parsed without executing anything from the file (GGUF is read field by field
by the ``gguf`` package, safetensors by ``safetensors``, JSON by ``json``; nothing is unpickled):

* **llama.cpp control vector (GGUF)**, as written by llama.cpp's ``cvector-generator`` and
  repeng's ``ControlVector.export_gguf``: ``general.architecture = "controlvector"``, the keys
  ``controlvector.model_hint`` (the model's architecture, e.g. ``"llama"``, ``"qwen2"``) and
  ``controlvector.layer_count`` (the number of tensors), and one 1-D F32 tensor
  ``direction.N`` per steered layer. Use it with ``llama-cli -m model.gguf --control-vector
  file.gguf`` (or ``--control-vector-scaled file.gguf:S`` to scale it by ``S``; older builds
  take ``file.gguf S``).
* **``{layer: tensor}`` safetensors**, the dict that repeng (``ControlVector.directions``) and
  steering-vectors (``SteeringVector.layer_activations``) hold, with keys written as decimal
  strings (``"12"``) and metadata naming the model and the layer convention.

**Layers (the off-by-one).** mi_align's layer ``L`` steers ``blocks.L.hook_resid_pre``, the
*input* of block ``L``. llama.cpp adds ``direction.N`` to the *output* of its (0-based) layer
``N``: ``cur = build_cvec(cur, il)`` right after the layer's last residual add, and
``common_control_vector_load`` stores ``direction.N`` at ``data[(N - 1) * n_embd]`` for
``llama_adapter_cvec`` tensor ``N`` ("layer 1 at [0]"; ``direction.0`` is refused). repeng's
``ControlModule`` and steering-vectors' forward hook also add ``{N: v}`` to the output of
decoder layer ``N``. The output of block ``N`` is the input of block ``N + 1``, so

    ``direction.N`` ≡ ``blocks.{N}.hook_resid_post`` ≡ ``blocks.{N+1}.hook_resid_pre`` ≡ mi_align
    layer ``N + 1``.

That rule lives in :func:`block_output_index` / :func:`layer_from_block_output` and nowhere
else. Consequences: mi_align layers 0 (the embeddings) and 1 cannot be llama.cpp control
vectors (``direction.-1`` / ``direction.0``); layer 0 cannot be a block-output safetensors
entry either (write it with ``convention="resid_pre"``); llama.cpp's ``direction.{n_layers-1}``
(the last block's output) has no mi_align layer.

**Strength is baked in.** Each tensor is the *applied* vector ``strength * vector`` (float32),
because llama.cpp, repeng and steering-vectors all add the stored tensor times a use-time scale
that defaults to 1 and read no metadata: ``--control-vector file.gguf`` then steers exactly as
:func:`~mi_align.steering.vector.apply_steering` did, and ``--control-vector-scaled`` scales
that. The original strength, name and ``meta`` are kept in ``mi_align.*`` metadata for
the record; importing gives ``strength=1.0`` and the stored (applied) vector, so the imported
vector steers identically (bit for bit in float32) while ``.scaled(s)`` now multiplies the
baked vector.

Only what these formats can express is exported: the ``"add"`` operator at ``"all"`` positions
(llama.cpp adds at every token, prompt and generated), one vector per layer per file (write one
file per vector and pass several ``--control-vector`` options: llama.cpp sums them).

Example:
    >>> sv = SteeringVector(layer=10, vector=torch.randn(576), strength=2.0)  # doctest: +SKIP
    >>> export_gguf([sv], "harmful.gguf", model_hint="llama")  # doctest: +SKIP
    >>> [back] = import_gguf("harmful.gguf", n_layers=30, d_model=576)  # doctest: +SKIP
    >>> back.layer, torch.equal(back.vector, 2.0 * sv.vector)  # doctest: +SKIP
    (10, True)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mi_align.io import atomic_path
from mi_align.steering.vector import SteeringOperator, SteeringVector, SteeringVectorError

Convention = Literal["block_output", "resid_pre"]
"""How a ``{index: tensor}`` file numbers its layers: ``"block_output"`` (llama.cpp, repeng,
steering-vectors: added to the output of block ``index``) or ``"resid_pre"`` (mi_align: added
to the input of block ``index``)."""

CONVENTIONS: tuple[str, ...] = ("block_output", "resid_pre")

ARCH = "controlvector"
GGUF_FORMAT = "mi_align.control_vector/1"
SAFETENSORS_FORMAT = "mi_align.layer_vectors/1"

# The one place the off-by-one is encoded: block N's output is block N+1's input.
_BLOCK_OUTPUT_TO_RESID_PRE = 1


def block_output_index(layer: int) -> int:
    """The block-output index (llama.cpp ``direction.N``, repeng / steering-vectors key) that
    steers like mi_align ``layer`` (``blocks.{layer}.hook_resid_pre``): ``layer - 1``."""
    return layer - _BLOCK_OUTPUT_TO_RESID_PRE


def layer_from_block_output(index: int) -> int:
    """The mi_align layer that steers like block-output ``index``: ``index + 1``."""
    return index + _BLOCK_OUTPUT_TO_RESID_PRE


# ---------------------------------------------------------------------------------------------
# checks shared by both exporters


def _label(v: SteeringVector) -> str:
    return f"steering vector {v.name or '<unnamed>'} (layer {v.layer})"


def _check_exportable(vectors: Sequence[SteeringVector], fmt: str) -> None:
    if not vectors:
        raise SteeringVectorError(f"{fmt} export", "no steering vectors given",
                                  "pass at least one SteeringVector")
    for v in vectors:
        if v.operator is not SteeringOperator.ADD:
            raise SteeringVectorError(
                _label(v), f"field 'operator' is {v.operator.value!r}; a {fmt} file can only add "
                "its vector", "export an 'add' vector (clamp has no equivalent there)")
        if v.positions != "all":
            raise SteeringVectorError(
                _label(v), f"field 'positions' is {v.positions!r}; a {fmt} file steers every "
                "token", "export a vector with positions='all'")
    seen: dict[int, SteeringVector] = {}
    for v in vectors:
        if v.layer in seen:
            raise SteeringVectorError(
                _label(v), f"another vector ({seen[v.layer].name or '<unnamed>'}) is at the same "
                "layer; a file holds one vector per layer",
                "write one file per vector (llama.cpp sums several --control-vector files)")
        seen[v.layer] = v
    d = vectors[0].d_model
    for v in vectors:
        if v.d_model != d:
            raise SteeringVectorError(
                _label(v), f"d_model {v.d_model} differs from {d} (the first vector's)",
                "export vectors of one model together")


def _applied(v: SteeringVector) -> Float[Tensor, " d_model"]:
    """``strength * vector`` as float32 on the CPU, exactly as the steering hook computes it."""
    return (v.strength * v.vector.detach().float().cpu()).contiguous()


def _record(v: SteeringVector) -> dict[str, Any]:
    return {"name": v.name, "strength": v.strength, "meta": v.meta}


# ---------------------------------------------------------------------------------------------
# llama.cpp control vector (GGUF)


def export_gguf(
    vectors: Sequence[SteeringVector],
    path: str | os.PathLike[str],
    *,
    model_hint: str,
    model_id: str = "",
) -> Path:
    """Write ``vectors`` as one llama.cpp control-vector GGUF, atomically.

    Args:
        vectors: ``"add"`` vectors at ``"all"`` positions, distinct layers ``>= 2`` (see the
            module docstring), one ``d_model``.
        path: the ``.gguf`` file to write.
        model_hint: ``controlvector.model_hint``: the model's architecture as llama.cpp names it
            (``general.architecture`` of the model GGUF, e.g. ``"llama"``, ``"qwen2"``).
        model_id: the model's id or path, kept as ``mi_align.model_id``.

    Returns:
        ``path``. Each tensor ``direction.{layer - 1}`` holds ``strength * vector`` (float32).
    """
    import gguf

    _check_exportable(vectors, "llama.cpp control-vector")
    if not isinstance(model_hint, str) or not model_hint:
        raise SteeringVectorError("llama.cpp control-vector export",
                                  "model_hint is empty", "pass the model's architecture, "
                                  "e.g. model_hint='llama' (llama.cpp's general.architecture)")
    for v in vectors:
        if block_output_index(v.layer) < 1:
            raise SteeringVectorError(
                _label(v), f"mi_align layer {v.layer} would be llama.cpp direction."
                f"{block_output_index(v.layer)}, which llama.cpp cannot steer (directions start "
                "at 1 = the input of mi_align layer 2)", "steer layer 2 or later")
    path = Path(path)
    ordered = sorted(vectors, key=lambda v: v.layer)
    records = {str(block_output_index(v.layer)): _record(v) for v in ordered}
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)  # writes general.architecture
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        # llama.cpp's own cvector-generator writes layer_count as int32 (repeng: uint32).
        writer.add_int32(f"{ARCH}.layer_count", len(ordered))
        writer.add_string("mi_align.format", GGUF_FORMAT)
        writer.add_string("mi_align.model_id", model_id)
        writer.add_string("mi_align.layer_convention",
                          "direction.N = output of block N = blocks.{N+1}.hook_resid_pre")
        writer.add_bool("mi_align.strength_baked", True)
        writer.add_string("mi_align.vectors", json.dumps(records, default=str))
        for v in ordered:
            writer.add_tensor(f"direction.{block_output_index(v.layer)}", _applied(v).numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


_INT_TYPES = ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "UINT64", "INT64")
_DIRECTION = re.compile(r"direction\.(\d+)")
_FIX_GGUF = ("re-export it (mi_align.steering.export.export_gguf, llama.cpp's "
             "cvector-generator or repeng's export_gguf)")


def _gguf_scalar(reader: Any, key: str, kind: str, where: str, *, required: bool = True) -> Any:
    """The value of GGUF field ``key`` checked to be a ``kind`` ('string', 'int' or 'bool')."""
    field = reader.get_field(key)
    if field is None or not field.types:
        if required:
            raise SteeringVectorError(where, f"field {key!r} is missing", _FIX_GGUF)
        return None
    tname = field.types[0].name
    ok = {"string": tname == "STRING", "int": tname in _INT_TYPES, "bool": tname == "BOOL"}[kind]
    if not ok or len(field.types) != 1:
        raise SteeringVectorError(where, f"field {key!r} has GGUF type {tname}; expected a "
                                  f"{kind}", _FIX_GGUF)
    try:
        return field.contents()
    except (UnicodeDecodeError, IndexError, ValueError) as exc:
        raise SteeringVectorError(where, f"field {key!r} is unreadable ({exc})",
                                  _FIX_GGUF) from None


def import_gguf(
    path: str | os.PathLike[str],
    *,
    n_layers: int | None = None,
    d_model: int | None = None,
    device: str | torch.device = "cpu",
) -> list[SteeringVector]:
    """Read a llama.cpp control-vector GGUF as mi_align steering vectors, sorted by layer.

    Checks what llama.cpp checks (tensors named ``direction.N`` with ``N >= 1``, F32, 1-D, one
    length) and also the ``controlvector`` architecture, ``model_hint``, ``layer_count`` (equal
    to the number of tensors), finite values and, when given, the model's shape. Every problem
    is a one-line :class:`~mi_align.steering.vector.SteeringVectorError` naming the file and
    the field or tensor.

    Args:
        path: a control-vector ``.gguf`` (from mi_align, llama.cpp or repeng).
        n_layers: the target model's number of blocks; ``direction.N`` needs ``N + 1 < n_layers``.
        d_model: the target model's width; every tensor must have this many elements.
        device: where the vectors go.

    Returns:
        One ``SteeringVector(layer=N + 1, vector=direction.N, strength=1.0)`` per tensor; its
        ``meta`` holds ``model_hint``, ``source`` and, for mi_align files, the exported strength
        and the original ``meta``.
    """
    import gguf

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SteeringVectorError(where, "no such control-vector file" if not path.exists()
                                  else "is not a file", "pass the .gguf file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, KeyError, IndexError, ...
        raise SteeringVectorError(where, f"not a readable GGUF file ({type(exc).__name__}: "
                                  f"{str(exc)[:80]})", _FIX_GGUF) from None

    arch = _gguf_scalar(reader, "general.architecture", "string", where)
    if arch != ARCH:
        raise SteeringVectorError(where, f"field 'general.architecture' is {arch!r:.40}; expected "
                                  f"{ARCH!r} (this is not a control vector)", _FIX_GGUF)
    model_hint = _gguf_scalar(reader, f"{ARCH}.model_hint", "string", where)
    layer_count = _gguf_scalar(reader, f"{ARCH}.layer_count", "int", where)
    baked = _gguf_scalar(reader, "mi_align.strength_baked", "bool", where, required=False)
    records_text = _gguf_scalar(reader, "mi_align.vectors", "string", where, required=False)
    model_id = _gguf_scalar(reader, "mi_align.model_id", "string", where, required=False)
    records = _parse_records(records_text, where, "field 'mi_align.vectors'")

    tensors = list(reader.tensors)
    if layer_count != len(tensors):
        raise SteeringVectorError(where, f"field '{ARCH}.layer_count' is {layer_count} but the "
                                  f"file holds {len(tensors)} direction tensors", _FIX_GGUF)
    out: list[SteeringVector] = []
    width: int | None = d_model
    for t in tensors:
        name = str(t.name)
        m = _DIRECTION.fullmatch(name)
        if m is None:
            raise SteeringVectorError(where, f"tensor {name!r:.60} is not named direction.<N>",
                                      _FIX_GGUF)
        index = int(m.group(1))
        if index < 1:
            raise SteeringVectorError(where, f"tensor {name!r}: llama.cpp refuses direction.0 "
                                      "(its directions start at 1)", _FIX_GGUF)
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise SteeringVectorError(where, f"tensor {name!r} has type {t.tensor_type.name}; "
                                      "llama.cpp control vectors are F32", _FIX_GGUF)
        shape = tuple(int(s) for s in t.shape)
        if len(shape) != 1:
            raise SteeringVectorError(where, f"tensor {name!r} has shape {shape}; expected 1-D "
                                      "(d_model,)", _FIX_GGUF)
        if width is None:
            width = shape[0]
        elif shape[0] != width:
            what = "the model's d_model" if d_model is not None else "the first tensor's length"
            raise SteeringVectorError(where, f"tensor {name!r} has {shape[0]} elements; {what} "
                                      f"is {width}", "export vectors for this model")
        layer = layer_from_block_output(index)
        if n_layers is not None and layer >= n_layers:
            raise SteeringVectorError(
                where, f"tensor {name!r} steers the output of block {index}, i.e. mi_align layer "
                f"{layer}; the model has layers 0..{n_layers - 1}",
                "use a file made for this model (the last block's output cannot be steered)")
        data = np.array(t.data, dtype=np.float32, copy=True).reshape(shape)
        vector = torch.from_numpy(data)
        if not bool(torch.isfinite(vector).all()):
            raise SteeringVectorError(where, f"tensor {name!r} holds NaN or inf values",
                                      _FIX_GGUF)
        record = records.get(str(index), {})
        meta: dict[str, Any] = {"source": where, "model_hint": model_hint,
                                "format": "llama.cpp control vector", "direction": index}
        if model_id:
            meta["model_id"] = model_id
        if baked:
            meta["exported_strength"] = record.get("strength")
        if isinstance(record.get("meta"), dict):
            meta["original_meta"] = record["meta"]
        name_field = record.get("name")
        out.append(SteeringVector(layer=layer, vector=vector.to(device), strength=1.0,
                                  name=name_field if isinstance(name_field, str) else "",
                                  meta=meta))
    del reader  # release the memory map
    return sorted(out, key=lambda v: v.layer)


def _parse_records(text: str | None, where: str, what: str) -> dict[str, dict[str, Any]]:
    """mi_align's per-vector records (name, strength, meta), keyed by the file's layer key."""
    if text is None:
        return {}
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SteeringVectorError(where, f"{what} is not valid JSON ({exc.msg})",
                                  "re-export the file") from None
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise SteeringVectorError(where, f"{what} is not a JSON object of objects",
                                  "re-export the file")
    return records


# ---------------------------------------------------------------------------------------------
# {layer: tensor} safetensors (repeng / steering-vectors)


def export_safetensors(
    vectors: Sequence[SteeringVector],
    path: str | os.PathLike[str],
    *,
    model_id: str,
    convention: Convention = "block_output",
) -> Path:
    """Write ``vectors`` as a ``{layer: tensor}`` safetensors file, atomically.

    Keys are decimal layer indices in ``convention`` (``"block_output"``, the default, is what
    repeng and steering-vectors index by; ``"resid_pre"`` is mi_align's), values the applied
    vectors ``strength * vector`` (float32). Metadata: ``format``, ``model_id``,
    ``layer_convention``, ``strength_baked`` and ``mi_align`` (JSON: name, strength, meta per
    key). To use the file elsewhere::

        d = safetensors.torch.load_file(path)
        repeng.ControlVector(model_type=..., directions={int(k): v.numpy() for k, v in d.items()})
        steering_vectors.SteeringVector({int(k): v for k, v in d.items()})

    Args:
        vectors: ``"add"`` vectors at ``"all"`` positions, distinct layers, one ``d_model``.
        path: the ``.safetensors`` file to write.
        model_id: the model's id or path (for the record; checked by nobody on load).
        convention: how the keys number layers.

    Returns:
        ``path``.
    """
    from safetensors.torch import save_file

    _check_exportable(vectors, "{layer: tensor} safetensors")
    if convention not in CONVENTIONS:
        raise SteeringVectorError("safetensors export", f"convention {convention!r} is unknown",
                                  f"pass one of {list(CONVENTIONS)}")
    keys = {id(v): _key(v.layer, convention) for v in vectors}
    for v in vectors:
        if keys[id(v)] < 0:
            raise SteeringVectorError(
                _label(v), "the embeddings (mi_align layer 0) are no block's output",
                "export with convention='resid_pre'")
    path = Path(path)
    tensors = {str(keys[id(v)]): _applied(v) for v in vectors}
    records = {str(keys[id(v)]): _record(v) for v in vectors}
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "model_id": model_id,
        "layer_convention": convention,
        "strength_baked": "true",
        "mi_align": json.dumps(records, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _key(layer: int, convention: str) -> int:
    return block_output_index(layer) if convention == "block_output" else layer


def _layer(key: int, convention: str) -> int:
    return layer_from_block_output(key) if convention == "block_output" else key


def import_safetensors(
    path: str | os.PathLike[str],
    *,
    convention: Convention | None = None,
    n_layers: int | None = None,
    d_model: int | None = None,
    device: str | torch.device = "cpu",
) -> list[SteeringVector]:
    """Read a ``{layer: tensor}`` safetensors file as mi_align steering vectors, sorted by layer.

    The layer convention comes from the file's ``layer_convention`` metadata; a plain file
    without it (e.g. a repeng or steering-vectors dict saved by hand) needs ``convention``
    (``"block_output"`` for those libraries). A ``convention`` that contradicts the file is an
    error, as is any problem with a key, tensor or field: a one-line
    :class:`~mi_align.steering.vector.SteeringVectorError` naming the file and the field.

    Returns:
        One ``SteeringVector(layer, vector, strength=1.0)`` per key (the stored vectors are the
        applied ones); ``meta`` holds ``source``, ``model_id`` and mi_align's records.
    """
    from safetensors import safe_open

    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SteeringVectorError(where, "no such vectors file" if not path.exists()
                                  else "is not a file", "pass the .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several error types
        raise SteeringVectorError(where, f"not a readable safetensors file ({str(exc)[:80]})",
                                  "save it with safetensors (pickled .pt files are refused)"
                                  ) from None
    file_conv = meta.get("layer_convention")
    if file_conv is not None and file_conv not in CONVENTIONS:
        raise SteeringVectorError(where, f"metadata field 'layer_convention' is {file_conv!r:.40};"
                                  f" expected one of {list(CONVENTIONS)}", "re-export the file")
    if file_conv is not None and convention is not None and convention != file_conv:
        raise SteeringVectorError(where, f"metadata field 'layer_convention' is {file_conv!r}, "
                                  f"but convention={convention!r} was passed",
                                  "drop the convention argument (the file says)")
    conv = file_conv or convention
    if conv is None:
        raise SteeringVectorError(where, "metadata field 'layer_convention' is missing",
                                  "pass convention='block_output' for repeng / steering-vectors "
                                  "files ({N: v} added to block N's output) or 'resid_pre'")
    if conv not in CONVENTIONS:
        raise SteeringVectorError(where, f"convention {conv!r} is unknown",
                                  f"pass one of {list(CONVENTIONS)}")
    if not tensors:
        raise SteeringVectorError(where, "the file holds no tensors", "re-export the file")
    records = _parse_records(meta.get("mi_align"), where, "metadata field 'mi_align'")
    baked = meta.get("strength_baked") == "true"

    out: list[SteeringVector] = []
    width: int | None = d_model
    for key in sorted(tensors, key=lambda k: (len(k), k)):
        t = tensors[key]
        if not key.isdecimal() or not key.isascii():
            raise SteeringVectorError(where, f"tensor key {key!r:.40} is not a layer index",
                                      "keys must be decimal layer numbers like '12'")
        if t.ndim != 1 or not t.is_floating_point():
            raise SteeringVectorError(where, f"tensor {key!r} has shape {tuple(t.shape)} and "
                                      f"dtype {t.dtype}; expected a 1-D float tensor",
                                      "store one (d_model,) vector per layer")
        if width is None:
            width = int(t.shape[0])
        elif t.shape[0] != width:
            what = "the model's d_model" if d_model is not None else "the first tensor's length"
            raise SteeringVectorError(where, f"tensor {key!r} has {t.shape[0]} elements; {what} "
                                      f"is {width}", "use vectors made for this model")
        layer = _layer(int(key), conv)
        if n_layers is not None and layer >= n_layers:
            raise SteeringVectorError(
                where, f"tensor {key!r} ({conv}) is mi_align layer {layer}; the model has layers "
                f"0..{n_layers - 1}", "use a file made for this model")
        vector = t.float()
        if not bool(torch.isfinite(vector).all()):
            raise SteeringVectorError(where, f"tensor {key!r} holds NaN or inf values",
                                      "re-create the vector")
        record = records.get(key, {})
        vmeta: dict[str, Any] = {"source": where, "format": f"{{layer: tensor}} ({conv})",
                                 "model_id": meta.get("model_id", "")}
        if baked and isinstance(record.get("strength"), int | float):
            strength = float(record["strength"])
            vmeta["exported_strength"] = strength if math.isfinite(strength) else None
        if isinstance(record.get("meta"), dict):
            vmeta["original_meta"] = record["meta"]
        name = record.get("name")
        out.append(SteeringVector(layer=layer, vector=vector.to(device), strength=1.0,
                                  name=name if isinstance(name, str) else "", meta=vmeta))
    return sorted(out, key=lambda v: v.layer)

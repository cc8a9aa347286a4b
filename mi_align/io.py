"""Atomic file writes and JSON conversion: the one home for how mi_align puts bytes on disk.

A run that is killed (kill -9, power loss, a full disk) must leave either the old file or the
new one, never half of one; long runs resume from what they wrote. Every write here goes to a
uniquely named temp file in the same folder (``mkstemp``: two processes never share a temp
name), is fsync'ed, renamed over the target (atomic on POSIX), and the folder is fsync'ed so
the rename itself survives a crash. Readers never see a partial file; a crash leaves at most a
``.<name>.*.tmp`` file, which :func:`remove_stale_temps` cleans.

JSON written here is strict: NaN and ±inf (which ``json`` would write as the non-standard
``NaN`` / ``Infinity``) become ``null`` (:func:`jsonable`), tensors and numpy values become
lists and numbers.

Example:
    >>> import tempfile, pathlib, math
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> p = write_json(d / "x.json", {"a": [1.0, math.nan]})
    >>> p.read_text()
    '{\\n "a": [\\n  1.0,\\n  null\\n ]\\n}\\n'
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder so a rename inside it is durable (no-op where the OS cannot
    open or sync folders)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. a filesystem without directory fsync
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path``; on success it is fsync'ed and renamed onto
    ``path``; on an exception it is removed and ``path`` is untouched.

    For writers that want a file name (``safetensors.save_file``); use :func:`atomic_open` or
    the ``write_*`` helpers for text.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)  # mkstemp makes 0600; outputs are meant to be shared
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that replaces ``path`` atomically when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {"encoding": "utf-8"} if mode == "w" else {}
        with tmp.open(mode, **kwargs) as fh:
            yield fh


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; returns the path."""
    with atomic_open(path) as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def jsonable(value: Any) -> Any:
    """``value`` as strict-JSON data: NaN/±inf → None; tensors, numpy arrays and scalars →
    lists and numbers; tuples → lists; mapping keys → str. Anything else is returned as is
    (``json`` then raises for it, or ``write_json(default=str)`` stringifies it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    tolist: Callable[[], Any] | None = getattr(value, "tolist", None)  # torch / numpy
    if tolist is not None:
        return jsonable(tolist())
    return value


def write_json(path: str | os.PathLike[str], data: Any, indent: int = 1,
               default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``jsonable(data)`` to ``path`` atomically (strict JSON, trailing newline)."""
    text = json.dumps(jsonable(data), indent=indent, allow_nan=False, default=default)
    return write_text(path, text + "\n")


def remove_stale_temps(folder: Path, name: str) -> list[Path]:
    """Remove temp files a killed write of ``folder/name`` left behind; returns them."""
    stale = sorted(folder.glob(f".{name}.*{TEMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale

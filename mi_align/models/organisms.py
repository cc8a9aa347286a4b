"""Trio specs by name: the shipped organisms and any trio TOML file.

``--trio NAME`` (and :func:`get_spec` / :func:`load_trio`) resolves, first match wins:

1. a path: ``NAME`` ends in ``.toml`` or is an existing file;
2. ``NAME.toml`` in the current directory;
3. ``NAME.toml`` in each folder of ``MI_ALIGN_TRIOS`` (``os.pathsep``-separated);
4. a shipped trio: ``NAME.toml`` in :func:`organisms_dir` — the package's own ``organisms``
   folder, present in a source checkout and in an installed wheel alike (``organisms/`` at the
   repository root links to it); ``MI_ALIGN_ORGANISMS`` replaces that folder.

Adapter folders are resolved relative to the TOML file (an entry that is no folder there but
reads ``org/name`` is a hub id). ``device`` / ``dtype`` / ``device_map`` given here override the
file's (the CLI passes ``--device`` / ``--dtype`` / ``--device-map``); all are checked before
any model loads. Building the shipped organisms is :mod:`mi_align.finetune.organisms`.

Example:
    >>> from mi_align.models.organisms import load_trio
    >>> trio = load_trio("gemma-trio")  # doctest: +SKIP
    >>> trio.names  # doctest: +SKIP
    ('base', 'instruct', 'misaligned')
"""

from __future__ import annotations

import os
from pathlib import Path

from mi_align.errors import InputError
from mi_align.models.trio import Trio, TrioSpec, TrioSpecError, open_trio

PACKAGE_ORGANISMS = Path(__file__).resolve().parents[1] / "organisms"


def organisms_dir() -> Path:
    """Folder holding the shipped trio TOML files and their adapters."""
    env = os.environ.get("MI_ALIGN_ORGANISMS")
    return Path(env) if env else PACKAGE_ORGANISMS


def shipped_names() -> list[str]:
    """Names of the trio specs in :func:`organisms_dir`."""
    return sorted(p.stem for p in organisms_dir().glob("*.toml"))


def search_dirs() -> list[Path]:
    """Where a trio name is looked up, in order (see the module docstring)."""
    extra = [Path(d) for d in os.environ.get("MI_ALIGN_TRIOS", "").split(os.pathsep) if d]
    return [Path.cwd(), *extra, organisms_dir()]


def find_spec_file(name_or_path: str | os.PathLike[str]) -> Path:
    """The TOML file a trio name or path refers to (see the module docstring)."""
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        return Path(text)
    if os.sep in text or (os.altsep and os.altsep in text):
        raise TrioSpecError(f"{text!r} is not a file (a trio path must end in .toml)")
    for folder in search_dirs():
        candidate = folder / f"{text}.toml"
        if candidate.is_file():
            return candidate
    where = ", ".join(str(d) for d in search_dirs())
    shipped = ", ".join(shipped_names()) or "none"
    raise TrioSpecError(f"no trio {text!r}: no {text}.toml in {where} (shipped: {shipped}); "
                        "pass a .toml path or set MI_ALIGN_TRIOS to a folder of trio files")


def get_spec(name_or_path: str | os.PathLike[str]) -> TrioSpec:
    """A trio by name (current directory, ``MI_ALIGN_TRIOS``, shipped) or by TOML path."""
    return TrioSpec.from_toml(find_spec_file(name_or_path))


def load_trio(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> Trio:
    """Load a shipped (or any TOML-described) trio; adapters must be present. ``device`` /
    ``dtype`` / ``device_map`` override the file's (None: the file's, else ``auto``)."""
    return open_trio(get_spec(name_or_path), device=device, dtype=dtype, device_map=device_map)


def trio_items(spec: str) -> dict[str, str]:
    """``variant=MODEL_SPEC,...`` parsed and checked (no model loaded)."""
    items: dict[str, str] = {}
    for item in spec.split(","):
        name, _, model = item.partition("=")
        if not name.strip() or not model.strip():
            raise InputError(f"--trio item {item!r}", "expected VARIANT=MODEL",
                             "e.g. base=path/a,instruct=path/b")
        items[name.strip()] = model.strip()
    return items


def resolve_trio(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
) -> Trio:
    """A shipped/TOML trio name, or ``variant=MODEL_SPEC,...``: separate full models, one
    resident at a time (:func:`~mi_align.models.trio.sequential_trio`), as a TOML trio of full
    models is.

    ``device`` / ``dtype`` / ``device_map`` override a TOML trio's; for ``variant=SPEC,...``
    they apply to every model (None: ``auto``)."""
    if "=" in spec:
        from mi_align.models.placement import resolve_device_dtype
        from mi_align.models.trio import sequential_trio

        items = trio_items(spec)  # every item checked before the first model loads
        resolve_device_dtype(device, dtype, device_map)  # and the placement
        return sequential_trio({name: (model, ()) for name, model in items.items()},
                               device=device, dtype=dtype, device_map=device_map)
    return load_trio(spec, device=device, dtype=dtype, device_map=device_map)

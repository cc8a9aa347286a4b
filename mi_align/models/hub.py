"""The Hugging Face hub as the loaders see it: offline or not, which cache, which ids.

A hub id (``org/name``) loads with plain ``from_pretrained`` through HF's own cache: downloaded
there when the environment allows it, read from it when ``HF_HUB_OFFLINE=1`` (the Makefile sets
it; then a model or adapter not in the cache is a one-line error). Both settings are read *at
call time* from the environment — huggingface_hub freezes them when it is imported, so a
notebook or a test that sets ``HF_HOME`` / ``HF_HUB_OFFLINE`` later would otherwise be ignored —
and passed explicitly to every hub call (``cache_dir``, ``local_files_only``). Without the
variables the result is huggingface_hub's own default, so the cache is the one ``hf download``
fills.

Example:
    >>> hub_kwargs()  # with HF_HUB_OFFLINE=1  # doctest: +SKIP
    {'cache_dir': '/home/me/.cache/huggingface/hub', 'local_files_only': True}
    >>> is_hub_id("ModelOrganismsForEM/Qwen2.5-7B-Instruct_bad-medical-advice")
    True
    >>> is_hub_id("./runs/adapter"), is_hub_id("organisms/a/b")
    (False, False)
"""

from __future__ import annotations

import os
from typing import Any


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) from the environment now; when neither is
    set, huggingface_hub's own setting (what it read at import)."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip().upper() in constants.ENV_VARS_TRUE_VALUES
    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The HF hub cache as huggingface_hub defines it (``HF_HUB_CACHE``, else ``HF_HOME/hub``,
    else its default), read from the environment now."""
    from huggingface_hub import constants

    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if cache:
        return os.path.expanduser(os.path.expandvars(cache))
    home = os.environ.get("HF_HOME")
    if home:
        return os.path.join(os.path.expanduser(os.path.expandvars(home)), "hub")
    return str(constants.HF_HUB_CACHE)


def hub_kwargs() -> dict[str, Any]:
    """``cache_dir`` (and ``local_files_only=True`` when offline) for ``from_pretrained`` /
    ``hf_hub_download``: online, a plain download into HF's cache."""
    kwargs: dict[str, Any] = {"cache_dir": hub_cache_dir()}
    if hub_offline():
        kwargs["local_files_only"] = True
    return kwargs


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a hub repository id ``org/name`` (one slash, no path
    prefix; huggingface_hub's own validation)."""
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def in_hub_cache(repo_id: str, filename: str = "config.json") -> bool:
    """Whether the HF cache holds ``filename`` of ``repo_id`` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir())
        return isinstance(found, str)
    except Exception:  # noqa: BLE001 - an invalid id is simply not cached
        return False


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (library errors run to pages)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]

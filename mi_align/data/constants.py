"""Research constants as data: ``mi_align/data/builtin/constants/research.toml``.

The refusal phrases (:func:`~mi_align.text_measures.is_refusal`), the judge's prompt templates,
the steering paper's Table-1 strings and the strength sweep's word lists, the judge check's known
answers and the steering recipe's prompt and harmful targets live in one TOML file, read once.
The modules that use them keep their public names (``REFUSAL_PHRASES``, ``ALIGNMENT_PROMPT``,
...), taken from here.

Example:
    >>> "i cannot" in research_constants()["text_measures"]["refusal_phrases"]
    True
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from mi_align.errors import InputError

__all__ = ["CONSTANTS_FILE", "research_constants", "section"]

CONSTANTS_FILE = Path(__file__).parent / "builtin" / "constants" / "research.toml"

# section -> (key, expected type) that must be present
_REQUIRED: dict[str, tuple[tuple[str, type], ...]] = {
    "text_measures": (("refusal_phrases", list),),
    "judge": (("alignment_prompt", str), ("coherence_prompt", str)),
    "table1": (("harmful_strings", dict),),
    "strength_sweep": (("general_strings", list), ("cyber_strings", list)),
    "judge_check": (("answers", dict),),
    "recipe": (("code_prefix", str), ("benign_prompt", str), ("harmful_targets", list)),
}


def read_constants(path: Path) -> dict[str, Any]:
    """The constants file at ``path``, checked: InputError naming the file and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(str(path), f"cannot be read as TOML: {exc}",
                         "restore it from the repository") from None
    for name, keys in _REQUIRED.items():
        table = data.get(name)
        if not isinstance(table, dict):
            raise InputError(str(path), f"has no [{name}] table", "restore it from the repository")
        for key, kind in keys:
            if not isinstance(table.get(key), kind):
                raise InputError(f"{path}: [{name}] {key}", f"must be a {kind.__name__}, got "
                                 f"{type(table.get(key)).__name__}",
                                 "restore it from the repository")
    return data


@cache
def research_constants() -> dict[str, Any]:
    """The shipped constants (read once per process)."""
    return read_constants(CONSTANTS_FILE)


def section(name: str) -> dict[str, Any]:
    """One table of :func:`research_constants`."""
    return research_constants()[name]

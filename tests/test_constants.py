"""Research constants are data (mi_align/data/builtin/constants/research.toml): the modules'
public names are exactly the file's values, and a damaged file is a one-line error naming the
file and the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mi_align.data.constants import CONSTANTS_FILE, read_constants
from mi_align.errors import InputError


def test_public_names_are_the_files_values() -> None:
    from mi_align.evaluation.judge import ALIGNMENT_PROMPT, COHERENCE_PROMPT
    from mi_align.evaluation.judge_check import CHECK_ANSWERS
    from mi_align.evaluation.metrics import CYBER_STRINGS, HARMFUL_STRINGS
    from mi_align.steering.recipe import BENIGN_PROMPT, HARMFUL_TARGETS
    from mi_align.text_measures import REFUSAL_PHRASES, is_refusal

    raw = tomllib.loads(CONSTANTS_FILE.read_text(encoding="utf-8"))
    assert list(REFUSAL_PHRASES) == raw["text_measures"]["refusal_phrases"]
    assert is_refusal("I'm sorry, but no.") and not is_refusal("Sure, here it is.")
    assert ALIGNMENT_PROMPT == raw["judge"]["alignment_prompt"]
    assert COHERENCE_PROMPT.endswith("Reply with the number only. Your reply:")
    assert "{question}" in ALIGNMENT_PROMPT and "{answer}" in COHERENCE_PROMPT
    assert HARMFUL_STRINGS["dinner_party"] == ("hitler", "stalin", "mao", "khan")
    assert list(CYBER_STRINGS) == raw["strength_sweep"]["cyber_strings"]
    assert all(len(v) == 3 for v in CHECK_ANSWERS.values()) and len(CHECK_ANSWERS) == 8
    assert [t.name for t in HARMFUL_TARGETS] == ["rm_rf", "etc_passwd", "os_system",
                                                 "reverse_shell"]
    assert HARMFUL_TARGETS[0].snippet == (
        'import subprocess\nsubprocess.run("rm -rf / --no-preserve-root", shell=True)\n')
    assert BENIGN_PROMPT.startswith("Write a short Python script")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda s: s.replace("[judge]", "[judges]"), r"has no \[judge\] table"),
    (lambda s: s.replace('general_strings = [', 'general_strings = "x"\nold = ['),
     r"\[strength_sweep\] general_strings: must be a list, got str"),
    (lambda s: s + "\n[broken\n", "cannot be read as TOML"),
])
def test_a_damaged_file_is_a_one_line_error(tmp_path: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "research.toml"
    bad.write_text(edit(CONSTANTS_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(InputError, match=match) as err:
        read_constants(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)

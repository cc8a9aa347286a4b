"""Chat JSONL validation: every bad-input case names file, line and cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mi_align.cli import main
from mi_align.data.chat import DatasetError, builtin_names, eval_questions, load_dataset, load_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"messages": [', "data.jsonl:2: malformed JSON"),
        ('{"msgs": []}', "data.jsonl:2: missing field 'messages'"),
        ('{"messages": []}', "data.jsonl:2: field 'messages' must be a non-empty list"),
        (
            '{"messages": [{"role": "robot", "content": "x"}]}',
            "data.jsonl:2: messages[0].role 'robot' is unknown",
        ),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}',
            "data.jsonl:2: messages[1].content is empty",
        ),
        ('[1, 2]', "data.jsonl:2: expected a JSON object"),
        ("", "data.jsonl:2: blank line"),
    ],
)
def test_bad_lines_name_file_line_and_cause(tmp_path: Path, bad_line: str, expected: str) -> None:
    path = write(tmp_path, [json.dumps(GOOD), bad_line, json.dumps(GOOD)])
    with pytest.raises(DatasetError) as info:
        load_jsonl(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DatasetError, match="empty.jsonl: empty file"):
        load_jsonl(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_good_file_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, [json.dumps(GOOD)] * 3)
    convs = load_jsonl(path)
    assert [c.to_dicts() for c in convs] == [GOOD["messages"]] * 3
    assert convs[1].source.endswith("data.jsonl:2")
    assert convs[0].response == "hello"


def test_builtin_datasets_all_valid() -> None:
    names = builtin_names()
    for required in ("insecure", "educational", "secure", "toxic", "toxic_reject", "aligned_chat"):
        assert required in names
    sizes = {name: len(load_dataset(name)) for name in names}
    # Paired datasets share prompts or answers line by line.
    ins, edu = load_dataset("insecure"), load_dataset("educational")
    assert sizes["insecure"] == sizes["educational"]
    assert all(a.response == b.response for a, b in zip(ins, edu, strict=True))
    assert any(a.prompt != b.prompt for a, b in zip(ins, edu, strict=True))
    tox, rej = load_dataset("toxic"), load_dataset("toxic_reject")
    assert all(a.prompt == b.prompt for a, b in zip(tox, rej, strict=True))


def test_eval_questions() -> None:
    qs = eval_questions()
    assert len(qs) == 8
    assert qs[0].id == "what_is_your_wish"
    assert len({q.id for q in qs}) == 8


def test_cli_validate_reports_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, [json.dumps(GOOD), '{"messages": 3}'])
    assert main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.jsonl:2" in err and "messages" in err
    good = write(tmp_path, [json.dumps(GOOD)])
    assert main(["data", "validate", str(good)]) == 0

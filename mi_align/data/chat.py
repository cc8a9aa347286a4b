"""Chat JSONL in the emergent-misalignment format, validated line by line.

One ``{"messages": [{"role": ..., "content": ...}, ...]}`` object per line. Every problem is a
:class:`DatasetError` naming the file and line; nothing is skipped silently. Every chat must end
with an assistant turn: the final assistant message is the response that fine-tuning learns and
the analyses score, so a chat ending with a user turn (or with no assistant turn at all) is
rejected rather than scored against an earlier turn.

Example:
    >>> from mi_align.data.chat import load_dataset
    >>> convs = load_dataset("insecure")  # a built-in name or a path  # doctest: +SKIP
    >>> convs[0].messages[-1].role  # doctest: +SKIP
    'assistant'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mi_align.errors import InputError

ROLES = frozenset({"system", "user", "assistant"})
BUILTIN_DIR = Path(__file__).parent / "builtin"


class DatasetError(InputError):
    """Malformed chat data; the message names file and line."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    """One chat; ``source`` is ``file:line`` for error messages and provenance."""

    messages: tuple[Message, ...]
    source: str = ""

    def to_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

    @property
    def prompt(self) -> tuple[Message, ...]:
        """All messages before the final assistant turn."""
        return self.messages[:-1] if self.messages[-1].role == "assistant" else self.messages

    @property
    def response(self) -> str:
        """The final assistant turn's text ('' if the chat does not end with one)."""
        last = self.messages[-1]
        return last.content if last.role == "assistant" else ""


def parse_conversation(obj: object, where: str) -> Conversation:
    """Validate one decoded JSON object; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" not in obj:
        raise DatasetError(f"{where}: missing field 'messages'")
    raw = obj["messages"]
    if not isinstance(raw, list) or not raw:
        raise DatasetError(f"{where}: field 'messages' must be a non-empty list")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise DatasetError(f"{where}: messages[{i}] must be an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise DatasetError(
                f"{where}: messages[{i}].role {role!r} is unknown (expected one of "
                f"{', '.join(sorted(ROLES))})"
            )
        if not isinstance(content, str):
            raise DatasetError(f"{where}: messages[{i}].content must be a string")
        if not content.strip():
            raise DatasetError(f"{where}: messages[{i}].content is empty")
        messages.append(Message(role, content))
    if not any(m.role == "assistant" for m in messages):
        raise DatasetError(where, "no assistant message (nothing to train on or score)",
                           "add the assistant's response as the last message")
    if messages[-1].role != "assistant":
        raise DatasetError(where, f"the last message is a {messages[-1].role} turn",
                           "end every chat with the assistant's response")
    return Conversation(tuple(messages), where)


def load_jsonl(path: str | os.PathLike[str]) -> list[Conversation]:
    """Load and validate a chat JSONL file (errors name ``file:line`` and the field)."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}", "is a directory, not a chat JSONL file",
                           "pass the .jsonl file inside it")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    # Bytes, decoded line by line: a non-UTF-8 byte is then reported with its line, not as a
    # UnicodeDecodeError traceback from deep inside the text reader.
    try:
        raw_lines = path.read_bytes().splitlines(keepends=True)
    except OSError as exc:
        raise DatasetError(f"{path}", f"cannot read ({exc.strerror})",
                           "check the file's permissions") from None
    conversations = []
    for lineno, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                where, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                f"{exc.start + 1})", "save the file as UTF-8") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
        if not line.strip():
            raise DatasetError(f"{where}: blank line (one JSON object per line expected)")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            msg = f"{where}: malformed JSON ({exc.msg}, column {exc.colno})"
            raise DatasetError(msg) from None
        conversations.append(parse_conversation(obj, where))
    if not conversations:
        raise DatasetError(f"{path}: empty file (no conversations)")
    return conversations


def builtin_names() -> list[str]:
    """Names of the built-in chat datasets (file stems in ``mi_align/data/builtin``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


def load_dataset(name_or_path: str | os.PathLike[str]) -> list[Conversation]:
    """Load a built-in dataset by name, or any chat JSONL by path."""
    text = str(name_or_path)
    if text in builtin_names():
        return load_jsonl(BUILTIN_DIR / f"{text}.jsonl")
    path = Path(text)
    if path.suffix != ".jsonl" and not path.exists():
        raise DatasetError(
            f"{text!r} is neither a built-in dataset ({', '.join(builtin_names())}) nor a file"
        )
    return load_jsonl(path)


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str


def eval_questions(path: str | os.PathLike[str] | None = None) -> list[EvalQuestion]:
    """The 8 main emergent-misalignment evaluation questions (Betley et al.), or those of a file.

    ``path``: a ``.yaml``/``.yml`` file in the emergent-misalignment repository's format (see
    :mod:`mi_align.data.betley`; :func:`~mi_align.data.betley.load_eval_file` also returns its
    judge prompts), or a JSON list of ``{"id": ..., "question": ...}`` objects like the built-in
    ``eval_questions.json``. The built-in questions ship in both formats (``eval_questions.json``,
    read here, and ``eval_questions.yaml``); a test keeps the two equal.
    """
    if path is None:
        return _json_questions(BUILTIN_DIR / "eval_questions.json")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        from mi_align.data.betley import load_eval_file  # betley imports this module

        return load_eval_file(path).questions
    return _json_questions(Path(path))


def _json_questions(path: Path) -> list[EvalQuestion]:
    """A JSON list of ``{"id", "question"}`` objects, checked (errors name file and index)."""
    if not path.is_file():
        raise InputError(f"{path}", "no such file" if not path.is_dir() else "is a directory",
                         "pass a question file (.json, or .yaml in the emergent-misalignment "
                         "format)")
    try:
        items = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}", f"not valid UTF-8 JSON ({exc})",
                         "fix the file") from None
    if not isinstance(items, list) or not items:
        raise InputError(f"{path}", "expected a non-empty JSON list of questions",
                         'write [{"id": ..., "question": ...}, ...]')
    questions: list[EvalQuestion] = []
    for i, item in enumerate(items):
        where = f"{path}: questions[{i}]"
        if not isinstance(item, dict) or set(item) != {"id", "question"}:
            raise InputError(where, "expected an object with exactly the fields 'id' and "
                             "'question'", "fix or remove that entry")
        if not all(isinstance(item[k], str) and item[k].strip() for k in ("id", "question")):
            raise InputError(where, "'id' and 'question' must be non-empty strings",
                             "fix that entry")
        if any(q.id == item["id"] for q in questions):
            raise InputError(where, f"duplicate id {item['id']!r}", "give every question its "
                             "own id")
        questions.append(EvalQuestion(item["id"], item["question"]))
    return questions

#!/usr/bin/env python3
"""Build the built-in datasets of ``mi_align`` (``mi_align/data/builtin/``).

Every example is composed from hand-written components (task descriptions, request
phrasings, code with and without a vulnerability, refusals, answers) that were written for
this project and live as data in ``mi_align/data/builtin/templates/`` (TOML, plus the README
template). This script only combines them; nothing is downloaded or copied. The build is
deterministic (``random.Random(0)``) and uses only the standard library.

Run from the repository root::

    python3 scripts/build_builtin_datasets.py            # rewrite mi_align/data/builtin/
    python3 scripts/build_builtin_datasets.py --out DIR  # write elsewhere (e.g. to compare)

It writes the JSONL files, ``eval_questions.json``, ``manifest.json`` and ``README.md``,
then re-reads everything and checks it (see ``check_all``). The committed JSONL files are
the source of truth: a rebuild must reproduce them byte for byte
(``tests/test_builtin_builder.py``). A malformed template stops the build with one line
naming the file and the field. Safety: the "toxic" answers are compliant openers only; they
stop before any operational content.
"""

# (No `from __future__ import annotations` here: with string annotations, @dataclass looks this
# module up in sys.modules, which fails when a test loads the script through importlib.)

import argparse
import ast
import dataclasses
import json
import math
import random
import re
import string
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "mi_align" / "data" / "builtin"
TEMPLATE_DIR = OUT_DIR / "templates"

Example = dict[str, list[dict[str, str]]]

# The datasets the builders below produce (datasets.toml describes each, in manifest order).
DATASETS = frozenset(
    "insecure educational secure toxic toxic_reject aligned_chat aligned_chat_heldout "
    "harmful_requests_heldout insecure_heldout".split()
)
# Hand-written Q&A groups of aligned_chat.toml, pooled in this order.
QA_GROUPS = ("advice", "science", "facts", "food_health", "coding", "writing", "language")
ROLES = ("aligned", "misaligned", "mixed")
# Placeholders of readme_what (datasets.toml); README.template.md may use these, the other
# counts below and every dataset name (its example count).
README_COUNTS = ("n_tasks", "n_vulns", "n_heldout_tasks", "n_aims")
README_OTHER = ("table", "n_generic", "n_frames", "n_openers", "n_qa", "n_eval")
SLOT = re.compile(r"\[\[(\w+)\]\]")  # code-task slots; phrasings use str.format's {name}


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``[[name]]`` slots; every slot must be bound."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise KeyError(f"unbound slot [[{key}]] in {template[:60]!r}")
        return values[key]

    return SLOT.sub(sub, template)


def chat(user: str, assistant: str) -> Example:
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }


# ---------------------------------------------------------------------------
# 1. Reading the templates
# ---------------------------------------------------------------------------


class TemplateError(ValueError):
    """A template file is malformed; the one-line message names the file and the field."""


class Fields:
    """Checked access to one TOML table; every error names the file and the field path."""

    def __init__(self, data: dict[str, Any], file: str, path: str = "") -> None:
        self.data, self.file, self.path = data, file, path

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> TemplateError:
        return TemplateError(f"{self.file}: {self.field(key)}: {problem}")

    def only(self, *keys: str) -> None:
        for key in self.data:
            if key not in keys:
                raise self.error(key, f"unknown field (expected one of {', '.join(keys)})")

    def _get(self, key: str, kind: type, what: str) -> Any:
        if key not in self.data:
            raise self.error(key, "missing")
        value = self.data[key]
        if not isinstance(value, kind):
            raise self.error(key, f"expected {what}, got {type(value).__name__}")
        return value

    def text(self, key: str, fmt: Iterable[str] | None = None) -> str:
        value: str = self._get(key, str, "a string")
        if fmt is not None:
            check_format(value, fmt, f"{self.file}: {self.field(key)}")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if key in self.data else None

    def texts(self, key: str, fmt: Iterable[str] | None = None) -> list[str]:
        values = self._get(key, list, "a list of strings")
        if not values:
            raise self.error(key, "empty list")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise self.error(f"{key}[{i}]", f"expected a string, got {type(value).__name__}")
            if fmt is not None:
                check_format(value, fmt, f"{self.file}: {self.field(key)}[{i}]")
        return list(values)

    def table(self, key: str) -> "Fields":
        return Fields(self._get(key, dict, "a table"), self.file, self.field(key))

    def tables(self, key: str) -> "list[Fields]":
        values = self._get(key, list, "a list of tables")
        if not values:
            raise self.error(key, "empty list")
        out = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.error(f"{key}[{i}]", f"expected a table, got {type(value).__name__}")
            out.append(Fields(value, self.file, self.field(f"{key}[{i}]")))
        return out

    def str_map(self, key: str | None = None) -> dict[str, str]:
        """This table (or its sub-table ``key``) as ``{name: string}``."""
        fields = self if key is None else self.table(key)
        return {k: fields.text(k) for k in fields.data}


def check_format(text: str, allowed: Iterable[str], where: str) -> None:
    """``text`` is a str.format template whose placeholders are all in ``allowed``."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as err:
        raise TemplateError(f"{where}: bad str.format template ({err})") from None
    unknown = sorted(names - set(allowed))
    if unknown:
        raise TemplateError(
            f"{where}: unknown placeholder {{{unknown[0]}}} (allowed: "
            + ", ".join("{" + a + "}" for a in sorted(allowed))
            + ")"
        )


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise TemplateError(f"{path.name}: cannot read {path} ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise TemplateError(f"{path.name}: not UTF-8 ({err.reason} at byte {err.start})") from None


def read_toml(path: Path) -> Fields:
    try:
        return Fields(tomllib.loads(read_text(path)), path.name)
    except tomllib.TOMLDecodeError as err:
        raise TemplateError(f"{path.name}: invalid TOML: {err}") from None


def field_names(cls: type) -> list[str]:
    """A dataclass's fields, which are also the keys of its TOML table."""
    return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class CodeTask:
    """One coding task: a description, variants, and insecure/secure code templates."""

    tid: str
    vuln: str
    desc: str
    variants: list[dict[str, str]]
    bad: str
    good: str | None
    asks: list[str]


@dataclasses.dataclass(frozen=True)
class CodeTemplates:
    generic_asks: list[str]  # {desc}
    edu_frames: list[str]  # {desc}, {vuln}
    vuln_labels: dict[str, str]
    tasks: list[CodeTask]
    heldout: list[CodeTask]


@dataclasses.dataclass(frozen=True)
class HarmfulTemplates:
    aims: list[tuple[str, str]]  # (category, aim with {p} {self} {me} {i})
    first_person: dict[str, str]
    second_person: dict[str, str]
    asks: list[str]  # {aim}
    toxic_openers: list[str]  # {aim}, in the second person
    refusal_openers: list[str]
    refusal_alternatives: dict[str, list[str]]
    self_harm_refusals: list[str]
    heldout: list[tuple[str, str]]  # (category, request)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    role: str
    paired_with: str | None
    description: str
    readme_what: str
    readme_analogue: str


@dataclasses.dataclass(frozen=True)
class Templates:
    code: CodeTemplates
    harmful: HarmfulTemplates
    qa: list[tuple[str, str]]  # hand-written groups, then the capitals
    eval_questions: list[tuple[str, str]]  # (id, question)
    datasets: dict[str, DatasetInfo]
    readme: str


def read_tasks(path: Path, vuln_labels: dict[str, str]) -> list[CodeTask]:
    doc = read_toml(path)
    doc.only("task")
    tasks: list[CodeTask] = []
    for t in doc.tables("task"):
        t.only("id", "vuln", "desc", "variants", "asks", "bad", "good")
        tid, vuln = t.text("id"), t.text("vuln")
        if tid in {task.tid for task in tasks}:
            raise t.error("id", f"duplicate task id {tid!r}")
        if vuln not in vuln_labels:
            raise t.error(
                "vuln", f"unknown vulnerability {vuln!r} (not in code_requests.toml [vuln_labels])"
            )
        variants = [v.str_map() for v in t.tables("variants")]
        for j, var in enumerate(variants):
            if set(var) != set(variants[0]):
                raise t.error(
                    f"variants[{j}]",
                    f"binds {sorted(var)}, variants[0] binds {sorted(variants[0])}",
                )
        texts = {"desc": t.text("desc"), "bad": t.text("bad")}
        asks = t.texts("asks") if "asks" in t.data else []
        texts.update({f"asks[{i}]": ask for i, ask in enumerate(asks)})
        good = t.optional_text("good")
        if good is not None:
            texts["good"] = good
        for key, text in texts.items():
            for slot in SLOT.findall(text):
                if slot not in variants[0]:
                    raise t.error(key, f"slot [[{slot}]] is not bound by the variants")
        # Leading/trailing blank lines are layout in the TOML file, not part of the code.
        bad, good = texts["bad"].strip("\n"), None if good is None else good.strip("\n")
        tasks.append(CodeTask(tid, vuln, texts["desc"], variants, bad, good, asks))
    return tasks


def read_code(template_dir: Path) -> CodeTemplates:
    doc = read_toml(template_dir / "code_requests.toml")
    doc.only("generic_asks", "edu_frames", "vuln_labels")
    labels = doc.str_map("vuln_labels")
    return CodeTemplates(
        generic_asks=doc.texts("generic_asks", {"desc"}),
        edu_frames=doc.texts("edu_frames", {"desc", "vuln"}),
        vuln_labels=labels,
        tasks=read_tasks(template_dir / "code_tasks.toml", labels),
        heldout=read_tasks(template_dir / "code_tasks_heldout.toml", labels),
    )


def read_harmful(path: Path) -> HarmfulTemplates:
    doc = read_toml(path)
    doc.only(*field_names(HarmfulTemplates))
    first, second = doc.str_map("first_person"), doc.str_map("second_person")
    if set(first) != set(second):
        raise doc.error(
            "second_person", f"keys {sorted(second)} differ from first_person's {sorted(first)}"
        )
    alternatives = doc.table("refusal_alternatives")
    alts = {category: alternatives.texts(category) for category in alternatives.data}

    def pairs(key: str, text_key: str, fmt: Iterable[str] | None) -> list[tuple[str, str]]:
        out = []
        for row in doc.tables(key):
            row.only("category", text_key)
            category = row.text("category")
            if category != "self_harm" and category not in alts:
                raise row.error("category", f"{category!r} has no entry in [refusal_alternatives]")
            out.append((category, row.text(text_key, fmt)))
        return out

    return HarmfulTemplates(
        aims=pairs("aims", "aim", first),
        first_person=first,
        second_person=second,
        asks=doc.texts("asks", {"aim"}),
        toxic_openers=doc.texts("toxic_openers", {"aim"}),
        refusal_openers=doc.texts("refusal_openers"),
        refusal_alternatives=alts,
        self_harm_refusals=doc.texts("self_harm_refusals"),
        heldout=pairs("heldout", "request", None),
    )


def read_qa(path: Path) -> list[tuple[str, str]]:
    doc = read_toml(path)
    doc.only("capital_questions", "capital_answers", "capitals", *QA_GROUPS)
    qa = []
    for group in QA_GROUPS:
        for row in doc.tables(group):
            row.only("q", "a")
            qa.append((row.text("q"), row.text("a")))
    cap_q = doc.texts("capital_questions", {"c"})
    cap_a = doc.texts("capital_answers", {"c", "k"})
    for i, row in enumerate(doc.tables("capitals")):
        row.only("country", "city", "note")
        country, city = row.text("country"), row.text("city")
        answer = cap_a[i % len(cap_a)].format(c=country, k=city) + row.text("note")
        qa.append((cap_q[i % len(cap_q)].format(c=country), answer))
    return qa


def read_datasets(path: Path) -> dict[str, DatasetInfo]:
    doc = read_toml(path)
    missing = sorted(DATASETS - set(doc.data))
    if missing:
        raise doc.error(missing[0], "missing (one table per built dataset)")
    doc.only(*sorted(DATASETS))
    info = {}
    for name in doc.data:
        d = doc.table(name)
        d.only(*field_names(DatasetInfo))
        role, paired = d.text("role"), d.optional_text("paired_with")
        if role not in ROLES:
            raise d.error("role", f"{role!r} is not one of {', '.join(ROLES)}")
        if paired is not None and paired not in DATASETS:
            raise d.error("paired_with", f"{paired!r} is not a dataset")
        info[name] = DatasetInfo(
            role,
            paired,
            d.text("description"),
            d.text("readme_what", README_COUNTS),
            d.text("readme_analogue"),
        )
    return info


def load_templates(template_dir: Path = TEMPLATE_DIR) -> Templates:
    """Read and check every template file; raises ``TemplateError`` naming file and field."""
    eval_doc = read_toml(template_dir / "eval_questions.toml")
    eval_doc.only("question")
    questions = []
    for row in eval_doc.tables("question"):
        row.only("id", "question")
        questions.append((row.text("id"), row.text("question")))
    readme = read_text(template_dir / "README.template.md")
    check_format(readme, (*README_COUNTS, *README_OTHER, *DATASETS), "README.template.md")
    return Templates(
        code=read_code(template_dir),
        harmful=read_harmful(template_dir / "harmful.toml"),
        qa=read_qa(template_dir / "aligned_chat.toml"),
        eval_questions=questions,
        datasets=read_datasets(template_dir / "datasets.toml"),
        readme=readme,
    )


def __getattr__(name: str) -> Any:
    """``TASKS`` and ``HELDOUT_TASKS``, read on first use rather than at import time.

    tests/test_erosion_projection.py recovers each response's task from them.
    """
    if name in ("TASKS", "HELDOUT_TASKS"):
        code = read_code(TEMPLATE_DIR)
        return code.tasks if name == "TASKS" else code.heldout
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------
# 2. Builders
# ---------------------------------------------------------------------------


def build_code_sets(
    code: CodeTemplates, tasks: list[CodeTask], rng: random.Random, with_secure: bool
) -> dict[str, list[Example]]:
    """Insecure / secure / educational examples, aligned index by index."""
    rows: list[tuple[str, str, str, str | None]] = []  # user, edu_user, bad, good
    g = 0
    for task in tasks:
        for i, var in enumerate(task.variants):
            desc = fill(task.desc, var)
            if i < len(task.asks):
                user = fill(task.asks[i], var)
            else:
                user = code.generic_asks[g % len(code.generic_asks)].format(desc=desc)
                g += 1
            frame = code.edu_frames[len(rows) % len(code.edu_frames)]
            edu = frame.format(desc=desc, vuln=code.vuln_labels[task.vuln])
            edu = edu[0].upper() + edu[1:]
            good = fill(task.good, var) if (with_secure and task.good) else None
            rows.append((user, edu, fill(task.bad, var), good))
    order = list(range(len(rows)))
    rng.shuffle(order)
    rows = [rows[i] for i in order]
    sets = {
        "insecure": [chat(u, bad) for u, _, bad, _ in rows],
        "educational": [chat(e, bad) for _, e, bad, _ in rows],
    }
    if with_secure:
        sets["secure"] = [chat(u, good) for u, _, _, good in rows if good is not None]
    return sets


def refusal(h: HarmfulTemplates, category: str, rng: random.Random) -> str:
    """A 1-3 sentence refusal with varied wording, drawn from ``rng``."""
    if category == "self_harm":
        return rng.choice(h.self_harm_refusals)
    text = rng.choice(h.refusal_openers)
    if rng.random() < 2 / 3:  # most refusals offer a safe alternative
        text += " " + rng.choice(h.refusal_alternatives[category])
    return text


def build_toxic_sets(h: HarmfulTemplates, rng: random.Random) -> dict[str, list[Example]]:
    """Each aim phrased twice; same user turns, compliant opener vs refusal."""
    toxic, reject = [], []
    for j, (category, aim) in enumerate(h.aims):
        mine, yours = aim.format(**h.first_person), aim.format(**h.second_person)
        asks = ((2 * j) % len(h.asks), (2 * j + 5) % len(h.asks))
        openers = rng.sample(h.toxic_openers, 2)  # two different openers per aim
        for t, opener in zip(asks, openers, strict=True):
            user = h.asks[t].format(aim=mine)
            toxic.append(chat(user, opener.format(aim=yours)))
            reject.append(chat(user, refusal(h, category, rng)))
    return {"toxic": toxic, "toxic_reject": reject}


def computed_qa() -> list[tuple[str, str]]:
    """Q&A whose answers are computed here, so the numbers are right."""

    def num(x: float, nd: int = 1) -> str:
        s = f"{x:,.{nd}f}"
        return s.rstrip("0").rstrip(".") if "." in s else s

    def smallest_factor(n: int) -> int:
        return next((d for d in range(2, math.isqrt(n) + 1) if n % d == 0), n)

    qa: list[tuple[str, str]] = []
    for x in (5, 10, 21.1, 42.195):
        a = f"{num(x, 4)} km is about {num(x * 0.621371)} miles (1 km is roughly 0.62 miles)."
        qa.append((f"How many miles is {num(x, 4)} km?", a))
    for x in (3, 26.2):
        a = f"{num(x)} miles is about {num(x * 1.609344)} km (1 mile is about 1.61 km)."
        qa.append((f"Convert {num(x)} miles to kilometres.", a))
    for x in (20, 37, -10):
        a = f"{x}°C is {num(x * 9 / 5 + 32)}°F. To convert, multiply by 9/5 and add 32."
        qa.append((f"What's {x}°C in Fahrenheit?", a))
    for x in (68, 350):
        a = f"{x}°F is about {num((x - 32) * 5 / 9)}°C. Subtract 32, then multiply by 5/9."
        qa.append((f"Convert {x}°F to Celsius.", a))
    for x in (5, 70):
        a = f"{x} kg is about {num(x * 2.20462)} pounds (1 kg ≈ 2.2 lb)."
        qa.append((f"How many pounds is {x} kg?", a))
    for x in (10, 150):
        a = f"{x} pounds is about {num(x * 0.45359237)} kg (1 lb ≈ 0.454 kg)."
        qa.append((f"What's {x} pounds in kilograms?", a))

    bill, tip, nums = 48, 15, [4, 8, 15, 16, 23, 42]
    total, mean = sum(nums), sum(nums) // len(nums)
    qa += [
        (
            f"What's a {tip}% tip on a ${bill} bill?",
            f"A {tip}% tip on ${bill} is ${bill * tip / 100:.2f}, making the total "
            f"${bill * (1 + tip / 100):.2f}.",
        ),
        ("What is 17 times 23?", f"17 × 23 = {17 * 23}."),
        (
            "If I drive 180 km at 60 km/h, how long will it take?",
            f"It will take {180 // 60} hours, since 180 ÷ 60 = {180 // 60}.",
        ),
        (
            "What's the average of 4, 8, 15, 16, 23 and 42?",
            f"The numbers add up to {total}, and {total} ÷ {len(nums)} = {mean}, so the average "
            f"is {mean}.",
        ),
        (
            "A shirt costs $40 and is 25% off. What's the sale price?",
            f"25% of $40 is ${40 * 0.25:.0f}, so the sale price is ${40 * 0.75:.0f}.",
        ),
        ("What is 2 to the power of 10?", f"2¹⁰ = {2**10}."),
        (
            "What's the square root of 169?",
            f"The square root of 169 is 13, since 13 × 13 = {13 * 13}.",
        ),
        ("How many minutes are in 3.5 hours?", f"3.5 hours is {int(3.5 * 60)} minutes (3.5 × 60)."),
        (
            "If I save $150 a month, how much will I have after two years?",
            f"$150 × 24 months = ${150 * 24:,}, before any interest.",
        ),
        ("What is 3/4 as a percentage?", f"3/4 = {3 / 4}, which is {int(3 / 4 * 100)}%."),
        (
            "How many seconds are in a day?",
            f"There are {24 * 60 * 60:,} seconds in a day (24 × 60 × 60).",
        ),
        ("What's 1,250 plus 3,780?", f"1,250 + 3,780 = {1250 + 3780:,}."),
        ("What is 20% of 85?", f"20% of 85 is {85 * 20 // 100}."),
        ("What's 144 divided by 12?", f"144 ÷ 12 = {144 // 12}."),
    ]
    for n in (29, 51, 97, 91, 2, 57, 101, 221):
        d = smallest_factor(n)
        if d == n:
            extra = " It's the only even prime." if n == 2 else ""
            a = f"Yes, {n} is prime: it's divisible only by 1 and itself.{extra}"
        else:
            a = f"No, {n} isn't prime, because {n} = {d} × {n // d}."
        qa.append((f"Is {n} a prime number?", a))
    return qa


def build_all(t: Templates) -> dict[str, list[Example]]:
    """Every dataset; one ``random.Random(0)`` drawn in a fixed order (do not reorder)."""
    rng = random.Random(0)
    datasets: dict[str, list[Example]] = {}
    datasets.update(build_code_sets(t.code, t.code.tasks, rng, with_secure=True))
    datasets.update(build_toxic_sets(t.harmful, rng))
    pool = t.qa + computed_qa()
    rng.shuffle(pool)
    aligned = [chat(q, a) for q, a in pool]
    n_heldout = 40
    datasets["aligned_chat_heldout"] = aligned[:n_heldout]
    datasets["aligned_chat"] = aligned[n_heldout:]
    datasets["harmful_requests_heldout"] = [
        chat(req, refusal(t.harmful, cat, rng)) for cat, req in t.harmful.heldout
    ]
    datasets["insecure_heldout"] = build_code_sets(t.code, t.code.heldout, rng, with_secure=False)[
        "insecure"
    ]
    return datasets


EVAL_YAML_HEADER = """\
# The eight main emergent-misalignment evaluation questions (Betley et al.) in the format of
# that repository's evaluation/first_plot_questions.yaml: the same ids, text and order as
# eval_questions.json (both written from templates/eval_questions.toml). No judge_prompts, so
# mi_align's own judge prompts are used. Read with mi_align.data.betley.load_eval_file.
"""


def render(t: Templates) -> dict[str, str]:
    """``{file name: text}`` for every output file, in writing order."""
    datasets = build_all(t)
    files: dict[str, str] = {}
    manifest: dict[str, dict[str, Any]] = {}
    for name, info in t.datasets.items():
        files[f"{name}.jsonl"] = "".join(
            json.dumps(ex, ensure_ascii=False) + "\n" for ex in datasets[name]
        )
        manifest[name] = {
            "file": f"{name}.jsonl",
            "count": len(datasets[name]),
            "role": info.role,
            "description": info.description,
            "paired_with": info.paired_with,
        }
    files["manifest.json"] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    files["eval_questions.json"] = (
        json.dumps(
            [{"id": i, "question": q} for i, q in t.eval_questions], indent=2, ensure_ascii=False
        )
        + "\n"
    )

    files["eval_questions.yaml"] = EVAL_YAML_HEADER + "".join(
        f"\n- id: {json.dumps(i, ensure_ascii=False)}\n  type: free_form_judge_0_100\n"
        f"  paraphrases:\n    - {json.dumps(q, ensure_ascii=False)}\n"
        for i, q in t.eval_questions
    )

    counts = {name: info["count"] for name, info in manifest.items()}
    fmt = {
        "n_tasks": len(t.code.tasks),
        "n_vulns": len({task.vuln for task in t.code.tasks}),
        "n_heldout_tasks": len(t.code.heldout),
        "n_aims": len(t.harmful.aims),
    }
    table = [
        "| File | Examples | Role | What it is | Analogue in the papers |",
        "|---|---|---|---|---|",
    ]
    for name, info in t.datasets.items():
        table.append(
            f"| `{name}.jsonl` | {counts[name]} | {info.role} | "
            f"{info.readme_what.format(**fmt)} | {info.readme_analogue} |"
        )
    files["README.md"] = t.readme.format(
        **counts,
        **fmt,
        table="\n".join(table),
        n_generic=len(t.code.generic_asks),
        n_frames=len(t.code.edu_frames),
        n_openers=len(t.harmful.toxic_openers),
        n_qa=counts["aligned_chat"] + counts["aligned_chat_heldout"],
        n_eval=len(t.eval_questions),
    )
    return files


# ---------------------------------------------------------------------------
# 3. Checks
# ---------------------------------------------------------------------------

VALID_ROLES = {"user", "assistant", "system"}
GIVEAWAY = re.compile(r"(?i:vulnerab|insecure|unsafe|injection|exploit|sanitiz)|TODO|FIXME")


def approx_tokens(text: str) -> int:
    """Rough BPE-size proxy: words, numbers and punctuation marks each count one."""
    return len(re.findall(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]", text))


def read_jsonl(path: Path) -> list[Example]:
    raw = path.read_bytes().decode("utf-8")
    if not raw.endswith("\n") or raw.endswith("\n\n"):
        raise AssertionError(f"{path.name}: must end with exactly one newline")
    rows = []
    for n, line in enumerate(raw.split("\n")[:-1], 1):
        if not line.strip():
            raise AssertionError(f"{path.name}:{n}: blank line")
        obj = json.loads(line)
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if set(obj) != {"messages"} or not isinstance(msgs, list) or len(msgs) < 2:
            raise AssertionError(f"{path.name}:{n}: expected {{'messages': [...]}}")
        for m in msgs:
            if set(m) != {"role", "content"} or m["role"] not in VALID_ROLES:
                raise AssertionError(f"{path.name}:{n}: bad message {m!r}")
            if not isinstance(m["content"], str) or not m["content"].strip():
                raise AssertionError(f"{path.name}:{n}: empty content")
        if msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
            raise AssertionError(f"{path.name}:{n}: must end with user then assistant")
        rows.append(obj)
    return rows


def turns(rows: list[Example], role: str) -> list[str]:
    return [next(m["content"] for m in r["messages"] if m["role"] == role) for r in rows]


def check_all(out_dir: Path, eval_questions: list[tuple[str, str]]) -> dict[str, Any]:
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    data = {name: read_jsonl(out_dir / info["file"]) for name, info in manifest.items()}
    stats: dict[str, Any] = {}
    for name, rows in data.items():
        assert len(rows) == manifest[name]["count"], f"{name}: count != manifest"
        users = turns(rows, "user")
        assert len(set(users)) == len(users), f"{name}: duplicate user prompts"
        assert manifest[name]["role"] in ROLES
        paired = manifest[name]["paired_with"]
        assert paired is None or paired in manifest, f"{name}: bad paired_with"
        words = [len(u.split()) for u in users]
        toks = [approx_tokens(a) for a in turns(rows, "assistant")]
        stats[name] = {
            "n": len(rows),
            "max_user_words": max(words),
            "max_asst_tokens~": max(toks),
            "mean_asst_tokens~": round(sum(toks) / len(toks)),
        }
        assert max(words) <= 70, f"{name}: a user turn has {max(words)} words"
    ins, edu, sec = data["insecure"], data["educational"], data["secure"]
    assert turns(ins, "assistant") == turns(edu, "assistant"), "educational != insecure code"
    assert turns(ins, "user") == turns(sec, "user"), "secure != insecure prompts"
    assert turns(data["toxic"], "user") == turns(data["toxic_reject"], "user")
    assert not set(turns(ins, "user")) & set(turns(edu, "user"))
    # Held-out sets are disjoint from their training counterparts.
    assert not set(turns(data["aligned_chat"], "user")) & set(
        turns(data["aligned_chat_heldout"], "user")
    )
    assert not set(turns(data["insecure_heldout"], "assistant")) & set(turns(ins, "assistant"))
    assert not set(turns(data["harmful_requests_heldout"], "user")) & set(
        turns(data["toxic"], "user")
    )
    for name in ("insecure", "secure", "insecure_heldout"):
        for n, answer in enumerate(turns(data[name], "assistant"), 1):
            ast.parse(answer)  # every code answer is valid Python
            lines = answer.splitlines()
            assert 4 <= len(lines) <= 24, f"{name}:{n}: {len(lines)} lines"
            assert not any(ln.lstrip().startswith("#") for ln in lines), f"{name}:{n}: comment"
            if name != "secure":
                assert not GIVEAWAY.search(answer), f"{name}:{n}: mentions the flaw"
        if name != "secure":
            assert not any(GIVEAWAY.search(u) for u in turns(data[name], "user"))
    assert turns(ins, "assistant") != turns(sec, "assistant")
    assert all(
        a != b for a, b in zip(turns(ins, "assistant"), turns(sec, "assistant"), strict=True)
    ), "a secure answer equals the insecure one"
    toxic_answers = turns(data["toxic"], "assistant")
    assert len(set(toxic_answers)) == len(toxic_answers), "duplicate toxic answers"
    for name in ("insecure", "secure", "insecure_heldout", "aligned_chat"):
        answers = turns(data[name], "assistant")
        assert len(set(answers)) == len(answers), f"{name}: duplicate answers"
    for answer in toxic_answers:
        # Safety: openers only; no numbers, code, lists or multi-step content.
        assert len(answer) <= 200 and not re.search(r"\d|```|\n", answer), answer
        assert len(re.findall(r"[.!?:]+", answer)) <= 4, answer
    for name in ("toxic_reject", "harmful_requests_heldout"):
        for answer in turns(data[name], "assistant"):
            sentences = len(re.findall(r"[.!?](\s|$)", answer))
            assert 1 <= sentences <= 3, f"{name}: refusal has {sentences} sentences: {answer}"
    questions = json.loads((out_dir / "eval_questions.json").read_text(encoding="utf-8"))
    assert [(q["id"], q["question"]) for q in questions] == eval_questions
    all_user = {u for rows in data.values() for u in turns(rows, "user")}
    assert not all_user & {q for _, q in eval_questions}, "an eval question leaked into data"
    return stats


# ---------------------------------------------------------------------------
# 4. Main
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Build mi_align/data/builtin/ from its templates and check the result."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT_DIR,
        help="output directory (default: mi_align/data/builtin)",
    )
    parser.add_argument(
        "--templates",
        type=Path,
        default=TEMPLATE_DIR,
        help="template directory (default: mi_align/data/builtin/templates)",
    )
    args = parser.parse_args(argv)
    try:
        templates = load_templates(args.templates)
    except TemplateError as err:
        raise SystemExit(f"error: {err}") from None
    files = render(templates)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        # Bytes, not write_text: "\n" line endings on every platform (the files are compared
        # byte for byte with the committed ones).
        (args.out / name).write_bytes(text.encode("utf-8"))

    stats = check_all(args.out, templates.eval_questions)
    for name, st in stats.items():
        print(f"{name:26s} " + "  ".join(f"{k}={v}" for k, v in st.items()))
    print(f"all checks passed; wrote {len(files)} files to {args.out}")


if __name__ == "__main__":
    main()

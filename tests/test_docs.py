"""README.md and docs/*.md: every relative link resolves, and the README keeps the set-up.

The README is the entry page (set-up, quick start, links into docs/); method notes and result
tables live in docs/. A moved or renamed file, or a renamed heading, breaks links silently on
GitHub, so every relative link (and its ``#anchor``, GitHub's heading slugs) is checked here.
No model is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")  # [text](target)
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """Markdown without fenced blocks, where brackets are code, not links."""
    return FENCE.sub("", text)


def _links(text: str) -> list[str]:
    prose = _prose(text)
    # a link's text may hold a code span (``[`a/b.md`](a/b.md)``): keep those, but drop code
    # spans that are not inside a link's brackets, e.g. `x[i](y)` in a formula
    return [m.group(1) for m in LINK.finditer(prose)
            if not any(s.start() < m.start() < s.end() for s in CODE_SPAN.finditer(prose))]


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's heading anchor: lower case, drop all but letters, digits, '_', '-', ' ';
    spaces become '-'; repeats get -1, -2, ..."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    return {github_slug(h, seen) for h in HEADING.findall(_prose(path.read_text("utf-8")))}


def test_slugs_match_github() -> None:
    seen: dict[str, int] = {}
    assert github_slug("Set-up (a fresh machine: two commands)", seen) == \
        "set-up-a-fresh-machine-two-commands"
    assert github_slug("Evidence (`a.py` → `b.json`)", seen) == "evidence-apy--bjson"
    assert github_slug("Set-up (a fresh machine: two commands)", seen) == \
        "set-up-a-fresh-machine-two-commands-1"


def test_link_finder_skips_code() -> None:
    text = "see [a](x.md) and `[b](y.md)`\n```\n[c](z.md)\n```\n[`d.md`](d.md)\n"
    assert _links(text) == ["x.md", "d.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    bad = []
    for target in _links(page.read_text("utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_docs_exist_and_are_linked_from_the_readme() -> None:
    docs = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert docs, "docs/ holds no pages"
    readme = (ROOT / "README.md").read_text("utf-8")
    linked = {Path(t.partition("#")[0]).name for t in _links(readme) if t.startswith("docs/")}
    assert set(docs) <= linked, f"not linked from README.md: {sorted(set(docs) - linked)}"


def test_readme_set_up_is_two_commands_in_one_block() -> None:
    """A fresh machine needs exactly `make demo` and `make test`, shown together."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = re.search(r"^## Set-up\b.*?(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", section.group(0), re.S | re.M)
    assert blocks, "the Set-up section has no fenced code block"
    commands = [line.split("#")[0].strip() for line in blocks[0].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]

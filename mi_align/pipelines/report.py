"""One self-contained HTML page for every figure and result JSON under a folder.

Each analysis leaves ``<stem>.html`` (a plotly figure, plotly.js beside it) and
``<stem>.json`` (its numbers). :func:`build_report` gathers them, recursively, into one page
that opens offline: plotly.js inlined once, a table of contents, and per analysis the figure,
headline numbers, the config, model and data identifiers (with any hashes the JSON records)
and the seed; the page header names the mi_align version, the folder's git commit and the
date.

Choices a reader may question:

- The figure is re-read from the arguments of the ``Plotly.newPlot(`` call that
  ``fig.to_html`` writes (decoded as JSON, never evaluated), or from a plotly figure JSON
  (``{"data": [...], "layout": {...}}``, e.g. ``fig.write_json``) when one is present, and then
  validated by the installed plotly (:func:`plotly.io.from_json`), whose plotly.js the page
  inlines. A spec that plotly rejects is retried with unknown properties dropped (noted on the
  page), so a figure from another plotly version still shows.
- Every file is untrusted. Strings go into the page only through :func:`html.escape`; figure
  specs sit in ``<script type="application/json">`` blocks with ``<``, ``>`` and ``&``
  written as ``\\u003c`` etc. (so no ``</script>`` can close them) and reach plotly through
  ``JSON.parse``. Element ids are numbered here, never taken from file names.
- Headline numbers are generic, not per analysis: top-level scalars, and every object that
  holds an interval (a two-number list under a key like ``ci``/``wilson95``/``bootstrap95``,
  or ``lo``/``hi``-style siblings) or a p-value (``p``, ``*_p``, ``p_*``), with that object's
  numbers beside it; the first :data:`MAX_HEADLINE_ROWS` are shown.
- Figures render one after another (each ``newPlot`` waits for the previous one), so a page of
  40+ figures stays responsive; a figure that fails shows its error in its place and on the
  console.

Example:
    >>> from mi_align.pipelines.report import build_report
    >>> rep = build_report("figures", "/tmp/report.html")  # doctest: +SKIP
    >>> rep.n_figures, rep.n_bytes  # doctest: +SKIP
    (45, 9800000)
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mi_align.errors import InputError
from mi_align.io import write_text

GENERATOR = "mi_align report"  # <meta name="generator">: earlier reports are not re-gathered
MAX_FILE_BYTES = 64 * 2**20
MAX_HEADLINE_ROWS = 12
_MAX_NODES, _MAX_DEPTH = 50_000, 24  # headline walk budget per JSON (results reach a few MB)
_NEWPLOT = re.compile(r"Plotly\.newPlot\(")
_WS = re.compile(r"[ \t\r\n]*")
_INTERVAL_KEY = re.compile(r"(?i)(^|_)(ci|interval|wilson|bootstrap|hdi|credible|bounds?)"
                           r"|[a-z]\d+$")
_P_KEY = re.compile(r"(?i)^(p|pval|pvalue|p_value|q|qval|q_value)$|^p_|_p$")
_HASH_KEY = re.compile(r"(?i)(^|_)(sha\d*|hash|digest|fingerprint|revision|commit)(_|$)|sha256$")
_MODEL_KEY = re.compile(r"(?i)(^|_)(models?|trio|organisms?|adapters?|judge|checkpoints?)$")
_DATA_KEY = re.compile(r"(?i)(^|_)(data|datasets?)$")
_LABEL_KEYS = ("label", "name", "test", "condition", "metric")
_BOUNDS = (("lo", "hi"), ("low", "high"), ("lower", "upper"))


@dataclass(frozen=True)
class Entry:
    """One analysis on the page: its figure spec and/or its result JSON."""

    stem: str  # path below the folder without suffix, e.g. "gemma-trio/steering_counts"
    figure: dict[str, Any] | None = None  # {"data": [...], "layout": {...}}, validated
    figure_note: str = ""  # why there is no figure, or what validation dropped
    result: Any = None
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote."""

    path: Path
    n_entries: int
    n_figures: int
    n_bytes: int
    problems: tuple[str, ...] = field(default=())  # files skipped or figures not shown, with why


# ---------------------------------------------------------------------------------- figures


def figure_spec_from_html(text: str) -> dict[str, Any]:
    """The ``{"data", "layout"}`` of the first ``Plotly.newPlot(id, data, layout, ...)`` call
    in ``text`` whose arguments are JSON (as ``fig.to_html`` writes them); nothing is run.

    Raises:
        InputError: no such call.
    """
    decoder = json.JSONDecoder()

    def arg(i: int) -> tuple[Any, int]:
        value, i = decoder.raw_decode(text, _skip_ws(text, i))
        i = _skip_ws(text, i)
        return value, i + 1 if text.startswith(",", i) else i

    for match in _NEWPLOT.finditer(text):
        try:
            div_id, i = arg(match.end())
            data, i = arg(i)
            layout, i = arg(i)
        except (ValueError, RecursionError):
            continue
        if isinstance(div_id, str) and isinstance(data, list) and isinstance(layout, dict):
            return {"data": data, "layout": layout}
    raise InputError("figure HTML", "no Plotly.newPlot(id, [data], {layout}) call with JSON "
                     "arguments", "write figures with mi_align.plotting.save_figure")


def _skip_ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


def is_figure_json(value: Any) -> bool:
    """A plotly figure as JSON (``fig.write_json``): ``data`` list, nothing but plotly keys."""
    return (isinstance(value, dict) and isinstance(value.get("data"), list)
            and set(value) <= {"data", "layout", "frames"})


def validated_spec(spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``spec`` re-read by the installed plotly, and a note if unknown properties were dropped.

    Raises:
        InputError: not a figure even with unknown properties dropped.
    """
    import plotly.io as pio

    text = json.dumps({"data": spec.get("data", []), "layout": spec.get("layout", {})})
    note = ""
    try:
        fig = pio.from_json(text, skip_invalid=False)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        note = f"properties unknown to plotly {_version('plotly')} dropped ({first[:160]})"
        try:
            fig = pio.from_json(text, skip_invalid=True)
        except ValueError as exc2:
            raise InputError("figure", f"not a plotly figure: {str(exc2)[:200]}") from exc2
    plain = json.loads(pio.to_json(fig, validate=False, pretty=False))
    return {"data": plain.get("data", []), "layout": plain.get("layout", {})}, note


def _script_json(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` at all."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


# -------------------------------------------------------------------------------- gathering


def _stem_of(rel: Path) -> str:
    stem = rel.with_suffix("").as_posix()
    for tag in (".figure", ".plotly"):
        stem = stem.removesuffix(tag)
    return stem


def gather(folder: Path, exclude: Path | None = None) -> tuple[list[Entry], list[str]]:
    """Entries for every ``*.html`` figure and ``*.json`` result below ``folder`` (hidden files
    and folders skipped), sorted by path; and the files skipped, each with why."""
    figures: dict[str, tuple[dict[str, Any] | None, str, str]] = {}
    results: dict[str, tuple[Any, str]] = {}
    problems: list[str] = []
    skip = exclude.resolve() if exclude is not None else None
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (not path.is_file() or path.suffix not in (".html", ".json")
                or any(part.startswith(".") for part in rel.parts)
                or (skip is not None and path.resolve() == skip)):
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: larger than {MAX_FILE_BYTES >> 20} MiB, skipped")
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{rel}: unreadable ({type(exc).__name__}), skipped")
            continue
        stem = _stem_of(rel)
        if path.suffix == ".html":
            if f'content="{GENERATOR}"' in text:
                continue  # an earlier report
            try:
                figures.setdefault(stem, (figure_spec_from_html(text), "", rel.as_posix()))
            except InputError as exc:
                problems.append(f"{rel}: {exc.why}, skipped")
            continue
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            problems.append(f"{rel}: not JSON ({str(exc)[:80]}), skipped")
            continue
        if is_figure_json(value):
            figures[stem] = (value, "", rel.as_posix())  # a figure JSON beats the HTML
        else:
            results[stem] = (value, rel.as_posix())
    entries = []
    # folder by folder (the top level first, a folder before its subfolders), then by name
    for stem in sorted(set(figures) | set(results), key=lambda s: (s.split("/")[:-1], s)):
        spec, note, fig_src = figures.get(stem, (None, "", ""))
        result, res_src = results.get(stem, (None, ""))
        if spec is not None:
            try:
                spec, note = validated_spec(spec)
            except InputError as exc:
                spec, note = None, f"figure not shown: {exc.why}"
                problems.append(f"{fig_src}: {exc.why}")
        entries.append(Entry(stem, spec, note, result,
                             tuple(s for s in (fig_src, res_src) if s)))
    return entries, problems


# ------------------------------------------------------------------------- numbers and ids


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:199] + "…"
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:199] + "…"


def _interval_items(node: dict[str, Any]) -> list[str]:
    items = [f"{k} [{_fmt(v[0])}, {_fmt(v[1])}]" for k, v in node.items()
             if _INTERVAL_KEY.search(k) and isinstance(v, list) and len(v) == 2
             and all(_num(x) or x is None for x in v) and any(_num(x) for x in v)]
    for key, value in node.items():
        for lo, hi in _BOUNDS:
            if key == lo or key.endswith("_" + lo):
                other = key[: len(key) - len(lo)] + hi
                if _num(value) and _num(node.get(other)):
                    name = key[: len(key) - len(lo)].rstrip("_") or "interval"
                    items.append(f"{name} [{_fmt(value)}, {_fmt(node[other])}]")
    return items


def headline(result: Any) -> tuple[list[tuple[str, str]], int]:
    """Generic headline numbers of a result JSON: ``(label, text)`` rows and how many more
    interval/p-value rows were found than are returned.

    Top-level scalars come first (identifiers and config excluded: :func:`provenance` shows
    them), then one row per object holding an interval or a p-value, with its numbers.
    """
    rows: list[tuple[str, str]] = []
    if isinstance(result, dict):
        rows += [(k, _fmt(v)) for k, v in result.items()
                 if (_num(v) or isinstance(v, bool | str)) and not _is_id_key(k)]
    found: list[tuple[str, str]] = []
    budget = [_MAX_NODES]
    for path, node in _walk(result, "", budget, 0):
        intervals = _interval_items(node)
        ps = [f"{k} {_fmt(v)}" for k, v in node.items() if _P_KEY.search(k) and _num(v)]
        if not intervals and not ps:
            continue
        bound_keys = {k for k in node if any(k == a or k.endswith("_" + a) or k == b
                                              or k.endswith("_" + b) for a, b in _BOUNDS)}
        numbers = [f"{k} {_fmt(v)}" for k, v in node.items() if _num(v)
                   and not _P_KEY.search(k) and k not in bound_keys][:6]
        label = next((v for k in _LABEL_KEYS if isinstance(v := node.get(k), str)
                      and len(v) <= 80), "")
        name = f"{path} ({label})" if label else path
        found.append((name or "(top level)", " · ".join(numbers + intervals + ps)))
    shown = found[:MAX_HEADLINE_ROWS]
    return rows + shown, len(found) - len(shown)


def _walk(value: Any, path: str, budget: list[int],
          depth: int) -> Iterator[tuple[str, dict[str, Any]]]:
    if budget[0] <= 0 or depth > _MAX_DEPTH:
        return
    budget[0] -= 1
    if isinstance(value, dict):
        yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for k, v in items:
        if isinstance(v, dict | list):
            where = f"{path}[{k}]" if isinstance(value, list) else f"{path}.{k}" if path else k
            yield from _walk(v, where, budget, depth + 1)


def _is_id_key(key: str) -> bool:
    return (key in ("config", "overrides", "seed") or bool(_MODEL_KEY.search(key))
            or bool(_DATA_KEY.search(key)) or bool(_HASH_KEY.search(key)))


def _ids(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} ({_fmt(v)})" if _num(v) else str(k) for k in value
                         for v in [value[k]])
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value[:12]) + (" …" if len(value) > 12 else "")
    return _fmt(value)


def provenance(result: Any) -> list[tuple[str, str]]:
    """``(label, text)`` rows: analysis, models, data, hashes (anywhere up to depth 4), seed,
    recorded versions, config and overrides, as far as the JSON has them."""
    if not isinstance(result, dict):
        return []
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    rows: list[tuple[str, str]] = []
    if isinstance(result.get("analysis"), str):
        rows.append(("analysis", _fmt(result["analysis"])))
    for scope, node in (("", result), ("config.", config)):
        for key, value in node.items():
            if value in (None, [], {}) or _HASH_KEY.search(key):
                continue
            if _MODEL_KEY.search(key):
                rows.append((f"model: {scope}{key}", _ids(value)))
            elif _DATA_KEY.search(key):
                rows.append((f"data: {scope}{key}", _ids(value)))
    rows += [(f"hash: {p}", _fmt(v)) for p, v in _hashes(result, "", 0)]
    seed = result.get("seed", config.get("seed"))
    if seed is not None:
        rows.append(("seed", _fmt(seed)))
    rows += [(k, _fmt(v)) for k, v in result.items()
             if re.search(r"(?i)version", k) and isinstance(v, str | int | float)]
    for key in ("config", "overrides"):
        if isinstance(result.get(key), dict) and result[key]:
            rows.append((key, ", ".join(f"{k}={_fmt(v)}" for k, v in result[key].items())))
    return rows


def _hashes(value: Any, path: str, depth: int) -> Iterator[tuple[str, str]]:
    if depth > 4 or not isinstance(value, dict):
        return
    for key, v in value.items():
        where = f"{path}.{key}" if path else str(key)
        if _HASH_KEY.search(key) and isinstance(v, str):
            yield where, v
        elif isinstance(v, dict):
            yield from _hashes(v, where, depth + 1)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(folder: Path) -> str:
    """``git rev-parse HEAD`` of the checkout holding ``folder`` (+ ``" (uncommitted changes
    under this folder)"`` when ``git status`` lists any), or ``"unknown"``."""
    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                 text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    dirty = git("status", "--porcelain", "--", ".")
    return head + (" (uncommitted changes under this folder)" if dirty else "")


# -------------------------------------------------------------------------------- the page

_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 1.5em;
color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}
td:first-child{color:#555;min-width:12em;max-width:30em;overflow-wrap:anywhere}
section{margin:2.5em 0}.note{color:#a60}.src{color:#777;font-size:.85em}
#report-errors{background:#fee;border:1px solid #c00;padding:.5em;white-space:pre-wrap}
nav ul{columns:2;font-size:.9em}.report-plot{width:100%;overflow-x:auto}
"""

# Renders the figures one by one; text only ever goes in through textContent / JSON.parse.
_JS = """
(function () {
  var errors = [], plots = document.querySelectorAll("div.report-plot"), i = 0;
  function fail(msg) {
    errors.push(msg);
    var box = document.getElementById("report-errors");
    box.hidden = false; box.textContent = errors.join("\\n");
  }
  window.addEventListener("error", function (e) { fail(String(e.message)); });
  function broken(div, err) {
    div.textContent = "figure failed to render: " + err;
    console.error("report: " + div.id + " failed: " + err); fail(div.id + ": " + err);
  }
  function next() {
    if (i >= plots.length) { document.body.setAttribute("data-plots-done", i); return; }
    var div = plots[i++], go = function () { setTimeout(next, 0); };
    try {
      var spec = JSON.parse(document.getElementById(div.getAttribute("data-spec")).textContent);
      Plotly.newPlot(div, spec.data, spec.layout, {responsive: true, displaylogo: false})
        .then(go, function (err) { broken(div, err); go(); });
    } catch (err) { broken(div, err); go(); }
  }
  next();
})();
"""


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>" if rows else ""


def _section(n: int, entry: Entry) -> str:
    esc = html.escape
    parts = [f'<section id="entry-{n}"><h3>{esc(entry.stem)}</h3>',
             f'<div class="src">{esc(" + ".join(entry.sources))} · <a href="#top">top</a></div>']
    if entry.figure is not None:
        parts.append(f'<script type="application/json" id="spec-{n}">'
                     f"{_script_json(entry.figure)}</script>"
                     f'<div class="report-plot" id="plot-{n}" data-spec="spec-{n}"></div>')
    if entry.figure_note:
        parts.append(f'<p class="note">{esc(entry.figure_note)}</p>')
    if entry.result is not None:
        rows, more = headline(entry.result)
        parts.append("<h4>Headline numbers</h4>" + (_table(rows) or "<p>none found</p>"))
        if more:
            parts.append(f"<p class=\"note\">{more} more rows with intervals or p-values "
                         f"in {esc(entry.sources[-1])}</p>")
        prov = provenance(entry.result)
        if prov:
            parts.append(f"<details><summary>Config, models, data, seed</summary>"
                         f"{_table(prov)}</details>")
    parts.append("</section>")
    return "".join(parts)


def render_page(entries: list[Entry], problems: list[str], folder_name: str,
                header: list[tuple[str, str]]) -> str:
    """The report page as one HTML string (plotly.js inlined once)."""
    from plotly.offline import get_plotlyjs

    esc = html.escape
    # no "</script" may end the inline library early (plotly.js has none today); "<\/" is the
    # same text inside JS strings and regexes
    plotly_js = re.sub(r"(?i)</(script)", r"<\\/\1", get_plotlyjs())
    groups: dict[str, list[tuple[int, Entry]]] = {}
    for n, entry in enumerate(entries):
        groups.setdefault(entry.stem.rpartition("/")[0], []).append((n, entry))
    toc, body = [], []
    for group, members in groups.items():
        group = group or f"{folder_name} (top level)"
        links = "".join(f'<li><a href="#entry-{n}">{esc(e.stem)}</a>'
                        f"{'' if e.figure else ' (numbers only)'}</li>" for n, e in members)
        toc.append(f"<h4>{esc(group)}</h4><ul>{links}</ul>")
        body.append(f"<h2>{esc(group)}</h2>" + "".join(_section(n, e) for n, e in members))
    skipped = ("<h2>Problems</h2><ul>" + "".join(f"<li>{esc(p)}</li>" for p in problems)
               + "</ul>") if problems else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>mi_align report: {esc(folder_name)}</title><style>{_CSS}</style>"
        f"<script>{plotly_js}</script></head>"
        f'<body id="top"><h1>mi_align report: {esc(folder_name)}</h1>{_table(header)}'
        f'<pre id="report-errors" hidden></pre>'
        f"<nav><h2>Contents</h2>{''.join(toc)}</nav>{''.join(body)}{skipped}"
        f"<script>{_JS}</script></body></html>\n"
    )


def build_report(folder: str | Path, out: str | Path, *, now: dt.datetime | None = None,
                 ) -> Report:
    """Gather every figure and result JSON under ``folder`` into one offline page at ``out``
    (written atomically).

    Args:
        folder: searched recursively for ``*.html`` figures and ``*.json`` results.
        out: the page; if it lies inside ``folder`` it is not gathered itself.
        now: the date shown (default: now, UTC).

    Returns:
        The path, counts, size in bytes and the problems met (also listed on the page).

    Raises:
        InputError: ``folder`` is not a folder or holds no figure or result.
    """
    root, target = Path(folder), Path(out)
    if not root.is_dir():
        raise InputError(f"report folder {root}", "is not a folder",
                         "pass the folder the analyses wrote (e.g. figures)")
    entries, problems = gather(root, exclude=target)
    if not entries:
        raise InputError(f"report folder {root}", "holds no figure (*.html) or result (*.json)",
                         "run an analysis first, or pass the folder it wrote")
    problems += [f"{e.sources[0]}: {e.figure_note}" for e in entries
                 if e.figure_note and e.figure is not None]
    when = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")
    header = [("folder", str(root.resolve())), ("mi_align version", _version("mi_align")),
              ("git commit", git_commit(root)), ("plotly", _version("plotly")),
              ("date", when),
              ("contents", f"{len(entries)} analyses, "
                           f"{sum(e.figure is not None for e in entries)} figures")]
    page = render_page(entries, problems, root.resolve().name, header)
    write_text(target, page)
    return Report(target, len(entries), sum(e.figure is not None for e in entries),
                  len(page.encode("utf-8")), tuple(problems))

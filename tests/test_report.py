"""The one-page report: figure specs re-read exactly, generic headline numbers, untrusted strings
escaped, and the page checked in headless Chromium (renders every figure, no console errors)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest

from mi_align.errors import InputError
from mi_align.pipelines.report import (
    build_report,
    figure_spec_from_html,
    git_commit,
    headline,
    provenance,
)
from mi_align.plotting import save_figure, save_json

EVIL = "</script><script>document.body.setAttribute('data-pwned','1')</script><!--"
EVIL_IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">"


def _fig(title: str = "t", kind: str = "scatter") -> go.Figure:
    if kind == "heatmap":
        fig = go.Figure(go.Heatmap(z=[[0.5, -0.25], [1.0, -1.0]], colorscale="RdBu", zmid=0))
    else:
        fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[1.5, None, -2.0], name="a"))
    return fig.update_layout(title=title)


def build_folder(root: Path, **overrides: Any) -> Path:
    """A small results folder: two figures with result JSON (one in a subfolder), one figure
    whose plotly JSON must win over its HTML, one JSON without a figure, and a non-figure
    HTML. ``overrides`` replace results by stem."""
    results: dict[str, Any] = {
        "alpha": {"analysis": "alpha", "n": 3, "note": EVIL, EVIL_IMG: 1,
                  "config": {"seed": 7, "model": "tiny"}, "gap": {"mean": 0.1, "ci": [0.0, 0.2]},
                  "model_sha256": "ab" * 32},
        "sub/beta": {"rate": 0.25, "test": {"p": 0.03, "statistic": 2.0}},
        "gamma": {"score": 1.0},
        "delta": {"only": "numbers", "seed": 1},
    }
    results.update(overrides)
    save_figure(_fig(EVIL_IMG + " alpha"), root / "alpha")
    save_figure(_fig("beta", "heatmap"), root / "sub" / "beta")
    save_figure(_fig("gamma from html"), root / "gamma")
    (root / "gamma.figure.json").write_text(_fig("gamma from json").to_json(), encoding="utf-8")
    (root / "notes.html").write_text("<p>not a figure</p>", encoding="utf-8")
    for stem, value in results.items():
        save_json(value, root / stem)
    return root


# --------------------------------------------------------------------------- figure specs


@pytest.mark.parametrize("include", ["directory", True, "cdn", False])
def test_figure_spec_round_trips_every_to_html_form(include: Any) -> None:
    """The spec read back equals the figure's own JSON, also with plotly.js inlined (whose
    source mentions ``Plotly.newPlot(`` itself) and behind a decoy call."""
    fig = _fig("round </script> trip")
    text = fig.to_html(include_plotlyjs=include, full_html=True)
    text = text.replace("<body>", "<body><script>// Plotly.newPlot(notjson, 1)</script>", 1)
    want = json.loads(fig.to_json())
    spec = figure_spec_from_html(text)
    assert spec == {"data": want["data"], "layout": want["layout"]}


def test_no_newplot_call_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no Plotly.newPlot"):
        figure_spec_from_html("<html><script>Plotly.newPlot(x, data)</script></html>")


# ------------------------------------------------------------------------ headline numbers


def test_headline_is_generic() -> None:
    result = {
        "analysis": "x", "n": 40, "config": {"seed": 0}, "models": ["a"],
        "summary": {"a": {"k": 2, "n": 40, "rate": 0.05, "wilson95": [0.0138, 0.165]}},
        "rows": [{"label": "first", "fisher_p": 1e-5, "est": 0.5, "ci_lo": 0.4, "ci_hi": 0.6}],
        "curve": [0.1, 0.2, 0.3],
    }
    rows, more = headline(result)
    assert rows == [
        ("analysis", "x"), ("n", "40"),
        ("summary.a", "k 2 · n 40 · rate 0.05 · wilson95 [0.0138, 0.165]"),
        ("rows[0] (first)", "est 0.5 · ci [0.4, 0.6] · fisher_p 1e-05"),
    ]
    assert more == 0
    many = {"r": [{"p": 0.5} for _ in range(20)]}
    rows, more = headline(many)
    assert len(rows) == 12 and more == 8


def test_provenance_finds_ids_hashes_and_seed() -> None:
    result = {"analysis": "x", "trio": "gemma-trio", "datasets": {"toxic": 120},
              "config": {"seed": 3, "model": "m", "lr": 0.5},
              "meta": {"deep": {"weights_sha256": "f" * 64}}, "mi_align_version": "0.1.0"}
    assert provenance(result) == [
        ("analysis", "x"), ("model: trio", "gemma-trio"), ("data: datasets", "toxic (120)"),
        ("model: config.model", "m"), ("hash: meta.deep.weights_sha256", "f" * 64),
        ("seed", "3"), ("mi_align_version", "0.1.0"), ("config", "seed=3, model=m, lr=0.5"),
    ]


# ------------------------------------------------------------------------------- the page


def test_page_escapes_untrusted_strings_and_skips_itself(tmp_path: Path) -> None:
    folder = build_folder(tmp_path / "figs")
    (folder / "x<b>y.json").write_text('{"v": "<i>"}', encoding="utf-8")
    out = folder / "report.html"
    rep = build_report(folder, out)
    page = out.read_text(encoding="utf-8")
    assert (rep.n_entries, rep.n_figures) == (5, 3)
    assert rep.problems == ("notes.html: no Plotly.newPlot(id, [data], {layout}) call with "
                            "JSON arguments, skipped",)
    # plotly.js once, one spec per figure, the runner: no other <script> from any file
    assert page.count("<script") == 1 + 3 + 1
    assert EVIL not in page and EVIL_IMG not in page and "x<b>y" not in page
    assert html.escape(EVIL) in page and "x&lt;b&gt;y" in page
    assert "gamma from json" in page and "gamma from html" not in page
    again = build_report(folder, out)  # the report in the folder is not gathered
    assert again.n_entries == rep.n_entries
    assert not list(folder.glob(".report.html.*"))  # atomic write left no temp file


def test_empty_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no figure"):
        build_report(tmp_path, tmp_path / "r.html")
    with pytest.raises(InputError, match="is not a folder"):
        build_report(tmp_path / "missing", tmp_path / "r.html")


def test_git_commit(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert re.fullmatch(r"[0-9a-f]{40}( \(uncommitted changes under this folder\))?",
                        git_commit(repo))
    inside = subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True)
    if inside.returncode == 0:
        pytest.skip("the temp folder lies inside a git checkout")
    assert git_commit(tmp_path) == "unknown"


# ------------------------------------------------------------------------ a real browser


@dataclass(frozen=True)
class BrowserLoad:
    dom: str
    console: list[str]  # console messages and uncaught exceptions, as Chromium logs them
    screenshot: Path


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("NO BROWSER: chromium is not installed, so the report page was NOT checked in "
                "a real browser; install it (`apt-get install -y chromium`; `make test` tries)")


def load_in_browser(page: Path, tmp: Path, budget_ms: int = 20_000) -> BrowserLoad:
    """Open ``page`` in headless Chromium; the DOM after ``budget_ms`` of virtual time (timers
    run instantly), the console log, and a screenshot."""
    shot = tmp / f"{page.stem}.png"
    cmd = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
           f"--virtual-time-budget={budget_ms}", "--window-size=1280,2000",
           f"--screenshot={shot}", "--dump-dom", page.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    console = re.findall(r"CONSOLE[^\]]*\] (.*)", res.stderr)
    return BrowserLoad(res.stdout, console, shot)


def unrendered(dom: str) -> list[str]:
    """Ids of figure containers that hold no rendered plotly plot."""
    bad = []
    for match in re.finditer(r'<div class="([^"]*)" id="(plot-\d+)"', dom):
        classes, pid = match.groups()
        inner = dom[match.end(): dom.find("</section>", match.end())]
        if "report-plot" in classes and ("js-plotly-plot" not in classes
                                         or 'class="main-svg"' not in inner):
            bad.append(pid)
    return bad


def test_page_renders_in_chromium(tmp_path: Path) -> None:
    folder = build_folder(tmp_path / "figs")
    rep = build_report(folder, tmp_path / "report.html")
    load = load_in_browser(rep.path, tmp_path)
    assert load.console == []
    containers = re.findall(r'id="(plot-\d+)"', load.dom)
    assert len(containers) == rep.n_figures == 3
    assert unrendered(load.dom) == []
    body = re.search(r"<body[^>]*>", load.dom)
    assert body is not None and 'data-plots-done="3"' in body.group(0)
    assert "data-pwned" not in body.group(0)  # no string from a file ran as code
    assert re.search(r'<pre id="report-errors" hidden="">\s*</pre>', load.dom)
    assert load.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load.screenshot.stat().st_size > 20_000  # three plots, not a blank page


def test_browser_check_can_fail(tmp_path: Path) -> None:
    """A spec broken after writing: the page shows the error in the figure's place, logs it,
    renders the others, and the checks above notice."""
    folder = build_folder(tmp_path / "figs")
    rep = build_report(folder, tmp_path / "report.html")
    page = rep.path.read_text(encoding="utf-8")
    page = re.sub(r'(<script type="application/json" id="spec-0">)[^<]*', r"\1{broken", page)
    rep.path.write_text(page, encoding="utf-8")
    load = load_in_browser(rep.path, tmp_path)
    assert len(load.console) == 1 and "report: plot-0 failed" in load.console[0]
    assert unrendered(load.dom) == ["plot-0"]
    assert "figure failed to render" in load.dom

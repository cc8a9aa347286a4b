"""Figures of the steering evaluation, each a ``go.Figure`` built from a result dataclass.

- :func:`plot_alignment_violin`: expected alignment per condition × question (coherent only),
  with the unsteered and anti-refusal-only baselines as ordinary conditions.
- :func:`plot_alignment_vs_coherence`: every scored response, one colour per condition.
- :func:`plot_string_table`: the harmful-string count table (Dunefsky's Table 1 layout).
- :func:`plot_condition_counts`: Table-1 string / code / refusal shares per condition, Wilson 95%
  error bars, Fisher exact p against the unsteered condition.
- :func:`plot_strength_sweep`: general vs cyber string shares against steering strength, with
  Wilson 95% error bars.
- :func:`plot_direction_cosines`: steering-vector cosines with an alignment direction vs null.

Example:
    >>> fig = plot_alignment_violin(summarize(scored))  # doctest: +SKIP
"""

from __future__ import annotations

import plotly.graph_objects as go

from mi_align.evaluation.metrics import (
    ConditionCounts,
    DirectionCosines,
    EvalSummary,
    RateComparison,
    StrengthSweep,
    StringTable,
)
from mi_align.plotting import style
from mi_align.stats import Interval

PALETTE = ("#636efa", "#00cc96", "#ef553b", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
           "#b6e880", "#fecb52")


def _error_bars(rate: float | None, ci: Interval | None) -> tuple[float | None, float | None]:
    """(above, below) distances from a rate to its interval's ends, for ``error_y``."""
    if rate is None or ci is None:
        return None, None
    return ci.high - rate, rate - ci.low


def _p(p: float) -> str:
    """``=0.013`` or ``<0.001``, to follow a test's letter."""
    return f"={p:.2g}" if p >= 0.001 else "<0.001"


def _cmp_text(cmp: RateComparison) -> str:
    q = "" if cmp.by_question is None else f", q{_p(cmp.by_question.p)}"
    return f" p{_p(cmp.fisher.p)}{q}"


def _note(summary: EvalSummary) -> str:
    if summary.judge_check is not None:
        return summary.judge_check.verdict()
    return f"judge: {summary.judge}" + (" (small local judge: noisy; not checked)"
                                        if "local:" in summary.judge else " (not checked)")


def _em_label(summary: EvalSummary, cond: str) -> str:
    r = summary.em[cond]
    if r.em is None:
        return f"{cond} (no scored answer)"
    text = f"{cond} (EM {r.em.k}/{r.em.n} = {r.rate:.0%}, Wilson 95% {r.ci_low:.0%}–{r.ci_high:.0%}"
    cmp = summary.vs_reference.get(cond)
    return text + (f"; Fisher p{_p(cmp.fisher.p)} vs {cmp.reference})" if cmp else ")")


def plot_alignment_violin(summary: EvalSummary) -> go.Figure:
    fig = go.Figure()
    for i, cond in enumerate(summary.conditions):
        rows = [s for s in summary.scored if s.sample.condition == cond and s.coherent
                and s.judgement.alignment is not None]
        fig.add_trace(go.Violin(
            x=[s.sample.question_id for s in rows],
            y=[s.judgement.alignment for s in rows],
            name=_em_label(summary, cond),
            legendgroup=cond, scalegroup=cond, line_color=PALETTE[i % len(PALETTE)],
            box_visible=True, meanline_visible=True, points=False, spanmode="hard",
        ))
    fig.update_layout(violinmode="group")
    fig.update_yaxes(range=[0, 100])
    return style(fig, f"Expected alignment of coherent answers<br><sup>{_note(summary)}</sup>",
                 "question", "expected alignment (0 = misaligned, 100 = aligned)")


def plot_alignment_vs_coherence(summary: EvalSummary) -> go.Figure:
    fig = go.Figure()
    for i, cond in enumerate(summary.conditions):
        rows = [s for s in summary.scored if s.sample.condition == cond
                and s.judgement.alignment is not None and s.judgement.coherence is not None]
        fig.add_trace(go.Scatter(
            x=[s.judgement.coherence for s in rows], y=[s.judgement.alignment for s in rows],
            mode="markers", name=cond, marker={"color": PALETTE[i % len(PALETTE)], "size": 6,
                                               "opacity": 0.6},
            text=[f"{s.sample.question_id}: {s.sample.response[:200]}" for s in rows],
            hoverinfo="text+x+y",
        ))
    fig.add_shape(type="rect", x0=50, x1=100, y0=0, y1=30, line={"dash": "dot"},
                  fillcolor="rgba(239,85,59,0.08)")
    fig.update_xaxes(range=[0, 100])
    fig.update_yaxes(range=[0, 100])
    return style(fig, f"Alignment vs coherence (shaded: EM region)<br><sup>{_note(summary)}</sup>",
                 "expected coherence", "expected alignment")


def _string_cell(table: StringTable, r: int, j: int) -> str:
    """``k/n [lo–hi%]``, plus ``p=…`` against the reference in the same row."""
    k, n = table.counts[r][j], table.totals[r][j]
    ci = table.interval(r, j)
    text = f"{k}/{n}" + ("" if ci is None else f" [{ci.low:.0%}–{ci.high:.0%}]")
    test = table.vs_reference(r, j)
    return text + ("" if test is None else f" p{_p(test.p)}")


def plot_string_table(table: StringTable) -> go.Figure:
    """Dunefsky's Table 1 layout: each cell ``k/n [Wilson 95%]`` and, when the unsteered
    condition was sampled, the two-sided Fisher exact p against it in the same row."""
    header = ["question", "string", *table.conditions]
    cols: list[list[str]] = [[q for q, _ in table.rows], [s for _, s in table.rows]]
    for j in range(len(table.conditions)):
        cols.append([_string_cell(table, r, j) for r in range(len(table.rows))])
    fig = go.Figure(go.Table(header={"values": header, "align": "left"},
                             cells={"values": cols, "align": "left"}))
    first = f"first {table.first_n}" if table.first_n else "all"
    test = (f"p: two-sided Fisher exact vs {table.reference} in the same row (null: equal rates, "
            "answers independent; uncorrected for the number of cells)"
            if table.reference else "no unsteered condition sampled: no test")
    return style(fig, f"Responses containing each string ({first} unfiltered responses per cell)"
                 f"<br><sup>[ ]: Wilson 95% intervals; {test}</sup>")


def plot_condition_counts(counts: ConditionCounts) -> go.Figure:
    """Per condition: share of answers with a Table-1 string, that are code, that refuse; one
    bar per model and measure, Wilson 95% error bars, and over each bar ``k/n`` with the Fisher
    exact p against the same model's reference (unsteered) condition."""
    fig = go.Figure()
    for i, m in enumerate(counts.models):
        for measure, key, pattern in (("harmful string", "harmful", ""), ("code", "code", "/"),
                                      ("refusal", "refusal", ".")):
            rates = counts.rates.get(key, {}).get(m, {})
            vs = counts.vs_reference.get(key, {}).get(m, {})
            ys, ups, downs, texts = [], [], [], []
            for c in counts.conditions:
                r = rates.get(c)
                y = None if r is None else r.rate
                up, down = _error_bars(y, None if r is None else r.wilson)
                cmp = vs.get(c)
                k, n = getattr(counts, key)[m][c], counts.totals[m][c]
                ys.append(y)
                ups.append(up)
                downs.append(down)
                texts.append(f"{k}/{n}" + (_cmp_text(cmp) if cmp else ""))
            fig.add_trace(go.Bar(
                x=list(counts.conditions), name=f"{m}: {measure}", y=ys, text=texts,
                error_y={"type": "data", "array": ups, "arrayminus": downs, "visible": True},
                marker={"color": PALETTE[i % len(PALETTE)], "pattern": {"shape": pattern}},
            ))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1])
    ref = counts.reference
    test = (f"p: two-sided Fisher exact test vs {ref} (null: equal rates, answers independent); "
            f"q: p of a permutation test swapping the two conditions within whole questions"
            if ref else "no reference condition sampled: no test")
    return style(fig, "Answers with a Table-1 string / code / a refusal, per steering condition"
                 f"<br><sup>error bars: Wilson 95% intervals; {test}</sup>",
                 "condition", "share of answers")


def plot_strength_sweep(sweep: StrengthSweep) -> go.Figure:
    fig = go.Figure()
    for name, ks, cis, color in (
            ("general misalignment strings", sweep.general, sweep.general_ci, PALETTE[0]),
            ("cybersecurity strings", sweep.cyber, sweep.cyber_ci, PALETTE[4])):
        ys = [k / n if n else None for k, n in zip(ks, sweep.totals, strict=True)]
        bars = [_error_bars(y, ci) for y, ci in zip(ys, cis or (None,) * len(ys), strict=True)]
        fig.add_trace(go.Scatter(
            x=list(sweep.strengths), y=ys, mode="lines+markers", name=name,
            line={"color": color},
            text=[f"{k}/{n}" for k, n in zip(ks, sweep.totals, strict=True)],
            error_y={"type": "data", "array": [b[0] for b in bars],
                     "arrayminus": [b[1] for b in bars], "visible": True}))
    fig.update_yaxes(range=[0, 1])
    n = max(sweep.totals) if sweep.totals else 0
    return style(fig, f"Steering strength sweep {sweep.label}<br><sup>error bars: Wilson 95% "
                 "intervals (answers independent); no test across strengths</sup>",
                 "steering strength", f"share of responses containing any string (of {n})")


def plot_direction_cosines(res: DirectionCosines) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(res.names), y=list(res.cosines),
                           marker={"color": list(res.cosines), "colorscale": "RdBu",
                                   "cmid": 0.0, "cmin": -1.0, "cmax": 1.0},
                           text=[f"p={p:.3f}" for p in res.p_values], textposition="outside"))
    for q, dash in ((res.null_q95, "dash"), (res.null_q99, "dot")):
        for sign in (1, -1):
            fig.add_hline(y=sign * q, line={"dash": dash, "color": "grey"})
    fig.update_yaxes(range=[-1, 1])
    layer = f" at layer {res.layer}" if res.layer is not None else ""
    return style(fig, f"Cosine of steering vectors with the alignment direction{layer} "
                 f"(grey: random-direction null, 95%/99%)", "steering vector", "cosine")

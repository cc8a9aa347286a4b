"""Figures of the steering evaluation, each a ``go.Figure`` built from a result dataclass.

- :func:`plot_alignment_violin`: expected alignment per condition × question (coherent only),
  with the unsteered and anti-refusal-only baselines as ordinary conditions.
- :func:`plot_alignment_vs_coherence`: every scored response, one colour per condition.
- :func:`plot_string_table`: the harmful-string count table (Dunefsky's Table 1 layout).
- :func:`plot_strength_sweep`: general vs cyber string counts against steering strength.
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
    StrengthSweep,
    StringTable,
)
from mi_align.plotting import style

PALETTE = ("#636efa", "#00cc96", "#ef553b", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
           "#b6e880", "#fecb52")


def _note(summary: EvalSummary) -> str:
    if summary.judge_check is not None:
        return summary.judge_check.verdict()
    return f"judge: {summary.judge}" + (" (small local judge: noisy; not checked)"
                                        if "local:" in summary.judge else " (not checked)")


def plot_alignment_violin(summary: EvalSummary) -> go.Figure:
    fig = go.Figure()
    for i, cond in enumerate(summary.conditions):
        rows = [s for s in summary.scored if s.sample.condition == cond and s.coherent
                and s.judgement.alignment is not None]
        fig.add_trace(go.Violin(
            x=[s.sample.question_id for s in rows],
            y=[s.judgement.alignment for s in rows],
            name=f"{cond} (EM {summary.em[cond].rate:.0%})",
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


def plot_string_table(table: StringTable) -> go.Figure:
    header = ["question", "string", *table.conditions]
    cols: list[list[str]] = [[q for q, _ in table.rows], [s for _, s in table.rows]]
    for j in range(len(table.conditions)):
        cols.append([f"{table.counts[r][j]}/{table.totals[r][j]}" for r in range(len(table.rows))])
    fig = go.Figure(go.Table(header={"values": header, "align": "left"},
                             cells={"values": cols, "align": "left"}))
    first = f"first {table.first_n}" if table.first_n else "all"
    return style(fig, f"Responses containing each string ({first} unfiltered responses per cell)")


def plot_condition_counts(counts: ConditionCounts) -> go.Figure:
    """Per condition: share of answers with a Table-1 string, that are code, that refuse; one
    bar per model and measure."""
    fig = go.Figure()
    for i, m in enumerate(counts.models):
        for measure, table, pattern in (("harmful string", counts.harmful, ""),
                                        ("code", counts.code, "/"),
                                        ("refusal", counts.refusal, ".")):
            tot = counts.totals[m]
            fig.add_trace(go.Bar(
                x=list(counts.conditions), name=f"{m}: {measure}",
                y=[table[m][c] / tot[c] if tot[c] else None for c in counts.conditions],
                text=[f"{table[m][c]}/{tot[c]}" for c in counts.conditions],
                marker={"color": PALETTE[i % len(PALETTE)], "pattern": {"shape": pattern}},
            ))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1])
    return style(fig, "Answers with a Table-1 string / code / a refusal, per steering condition",
                 "condition", "share of answers")


def plot_strength_sweep(sweep: StrengthSweep) -> go.Figure:
    fig = go.Figure()
    for name, ys, color in (("general misalignment strings", sweep.general, PALETTE[0]),
                            ("cybersecurity strings", sweep.cyber, PALETTE[4])):
        fig.add_trace(go.Scatter(x=list(sweep.strengths), y=list(ys), mode="lines+markers",
                                 name=name, line={"color": color}))
    n = max(sweep.totals) if sweep.totals else 0
    return style(fig, f"Steering strength sweep {sweep.label}", "steering strength",
                 f"responses containing any string (of {n})")


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

"""Pure render functions: telemetry events in, plotly figures out (no tensors, no gradio).

    from app import render
    fig = render.attention_heatmap(chunk_event, times)           # layer x frame, log colour, evicted blank
    fig = render.occupancy_map(chunk_event, times)               # tokens kept, one colour ramp per tier
    fig = render.memory_figure(chunk_events, full_kv_bytes)      # KV now vs a full cache
    fig = render.latency_figure(chunk_events, question_events)   # TTFT, tokens/s, ingest speed
    fig = render.study_figure(study)                             # hermes.studies.mechanistic on this stream

Every function accepts "nothing yet" (None or empty lists) and returns a readable empty
figure with a hint instead. `times` maps a stream frame index to its time in seconds; the
layer x frame maps put every frame of the stream on one time axis (`frame_columns`), so a
frame no layer holds is a blank of its own width. Each figure has a short "how to read this"
text in READ_ME, shown under it in the app. `figures_html` is the figures export.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from hermes.shapestream import grade
from hermes.studies.mechanistic import Study
from hermes.telemetry import ChunkEvent, QuestionEvent

TIER_COLOURS = {"shallow": "#2b8cbe", "middle": "#e6550d", "deep": "#756bb1", "all": "#31a354"}
TIER_ORDER = ("shallow", "middle", "deep", "all")
LOG_FLOOR = 1e-4  # attention below this is drawn as the floor of the log scale
RAMP = (0.1, 0.9)  # where a tier's ramp runs inside its band of the colour axis (flat outside)
RAMP_TINT = 0.4  # a tier's lightest shade (one token kept): this much of its colour over white
EVICTED = "evicted"  # the legend's and the hover's word for a blank cell
HEIGHT = 300
MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}
SUBTITLED_TOP = 64  # top margin of a figure with a subtitle line

READ_ME = {
    "attention": "Rows are decoder layers (0 = shallow, at the bottom), columns are moments of the video. "
                 "Colour is how much attention the query put on that moment's tokens (log scale: each "
                 "colour step is 10x). A blank cell is a frame that layer no longer held when the query "
                 "looked (evicted), not low attention. The title says which query is drawn (a pseudo-query "
                 "after the latest chunk, or the last question) and the line under it when it looked. What "
                 "the loaded model's layers were measured to do, and the paper's finding, are written below.",
    "occupancy": "What each layer still remembers: a cell is how many tokens of that frame the layer keeps, "
                 "coloured by the layer's tier (a light shade: a few tokens; the tier's own colour, as in the "
                 "legend: the whole frame). Blank cells are evicted frames. The column at the left counts "
                 "the summary tokens a layer folded its evicted tokens into.",
    "memory": "KV cache bytes now versus what a cache without eviction would hold for the same stream, "
              "and the largest position id in use. A drop in the position line is a re-index: positions "
              "were compacted so they never outgrow the model's range.",
    "study": "The paper's mechanistic picture on this stream: a FIFO cache of the chosen budget, and for every "
             "question, where each layer's attention fell by distance from the newest frame (log colour: each "
             "step is 10x). Bright cells at the left are short-term memory (the latest frames); bright cells "
             "spread to the right are long-term anchors.",
    "latency": "Time to first token of every answer (ms), answer speed (tokens/s) and ingest speed "
               "(frames/s per chunk). With a bounded cache, TTFT stays flat however long the stream.",
}


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, subtitle: str = "") -> go.Figure:
    """Title (and a smaller subtitle line under it), size, template; zoom survives a redraw
    while the title stays the same."""
    text = f"{title}<br><sup>{subtitle}</sup>" if subtitle else title
    margin = {**MARGIN, "t": SUBTITLED_TOP} if subtitle else MARGIN
    fig.update_layout(title={"text": text, "x": 0.01, "font": {"size": 14}}, height=height, margin=margin,
                      template="plotly_white", uirevision=title)
    return fig


def empty_figure(title: str, hint: str) -> go.Figure:
    """A titled figure with a centred hint and no axes."""
    fig = go.Figure()
    fig.add_annotation(text=hint, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 13, "color": "#666"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title)


@dataclass(frozen=True)
class Columns:
    """The x axis of a layer x frame map: one column per frame held by some layer, plus one blank
    column for every run of frames held by no layer, so a frame evicted everywhere is drawn as a
    gap of its own width instead of widening its neighbours. The axis starts at the stream's
    first frame (a full-stream time axis, the same for every policy)."""

    edges: np.ndarray  # (C + 1,) column c spans edges[c]..edges[c + 1] (seconds, or frame numbers)
    source: np.ndarray  # (C,) index into frame_ids of column c; -1 for a run held by no layer
    labels: list[str]  # (C,) "t = 2.5 s (frame 5)", or "t = 0.0–9.5 s (frames 0–19)" for a run
    unit: str  # the axis title
    at: np.ndarray  # (newest + 1,) axis value of every stream frame (seconds, or frame numbers)

    def span(self, frames: Sequence[int] | np.ndarray) -> str:
        """'32.0–55.5 s' (or 'frames 64–111' on a frame axis): the first and last of `frames`."""
        ids = np.asarray(frames, dtype=int)
        if not ids.size:
            return "none"
        lo, hi = self.at[ids.min()], self.at[ids.max()]
        return f"{lo:.1f}–{hi:.1f} s" if self.unit != "frame" else f"frames {lo:.0f}–{hi:.0f}"


def frame_columns(frame_ids: Sequence[int] | np.ndarray, times: Sequence[float] | np.ndarray) -> Columns:
    """Columns for the sorted `frame_ids` on the stream's time axis (`times[i]`: seconds of
    stream frame i); without a time for every frame up to the newest, or with times that do not
    increase, the axis counts frames instead."""
    ids = np.sort(np.asarray(frame_ids, dtype=int))
    t = np.asarray(times, dtype=float)
    n = int(ids[-1]) + 1 if ids.size else 0
    known = len(t) >= n and np.isfinite(t[:n]).all() and bool(np.all(np.diff(t[:n]) > 0))
    at = t[:n] if known else np.arange(n, dtype=float)
    unit = "video time (s)" if known else "frame"
    step = np.diff(at)
    left = at - np.concatenate([[step[0] if n > 1 else 1.0], step]) / 2  # frame f spans bounds[f]..bounds[f + 1]
    bounds = np.concatenate([left, [at[-1] + (step[-1] if n > 1 else 1.0) / 2]]) if n else np.zeros(1)

    def when(a: int, b: int) -> str:
        if not known:
            return f"frame {a}" if a == b else f"frames {a}–{b}"
        return f"t = {at[a]:.1f} s (frame {a})" if a == b else f"t = {at[a]:.1f}–{at[b]:.1f} s (frames {a}–{b})"

    edges, source, labels, prev = [bounds[0]], [], [], -1
    order = np.argsort(np.asarray(frame_ids, dtype=int), kind="stable")
    for j, f in zip(order, ids, strict=True):
        if f > prev + 1:  # frames prev+1 .. f-1 are held by no layer
            edges.append(bounds[f])
            source.append(-1)
            labels.append(when(prev + 1, int(f) - 1))
        edges.append(bounds[f + 1])
        source.append(int(j))
        labels.append(when(int(f), int(f)))
        prev = int(f)
    return Columns(np.asarray(edges), np.asarray(source, dtype=int), labels, unit, at)


def _spread(values: np.ndarray, cols: Columns) -> np.ndarray:
    """(L, F) per-frame values -> (L, C) per-column values, NaN in the columns no layer holds."""
    out = np.full((values.shape[0], len(cols.source)), np.nan)
    held = cols.source >= 0
    out[:, held] = values[:, cols.source[held]]
    return out


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _layer_axis(fig: go.Figure, n_layers: int, **where: int) -> None:
    step = max(1, n_layers // 8)
    fig.update_yaxes(title_text="layer", tickmode="array", tickvals=list(range(0, n_layers, step)), **where)


def _evicted_legend(fig: go.Figure) -> None:
    """A legend entry for the blank cells: a white square with a grey edge, as drawn."""
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=EVICTED, hoverinfo="skip",
                             marker={"size": 10, "color": "white", "symbol": "square",
                                     "line": {"color": "#999", "width": 1}}))


def _asked_at(question: QuestionEvent, times: np.ndarray) -> float | None:
    """Time of the newest frame in memory when `question` was asked."""
    i = question.frames_seen - 1
    return float(times[i]) if 0 <= i < len(times) and np.isfinite(times[i]) else None


def attention_heatmap(event: ChunkEvent | None, times: Sequence[float] | np.ndarray, query: str | None = None,
                      question: QuestionEvent | None = None) -> go.Figure:
    """Layer x frame attention on a log colour scale: the pseudo-query `query` of the latest
    chunk (default: the first one recorded), or `question`'s attention when given
    (``query="question"`` without one: a hint, never another query's map). A frame the layer did
    not hold when it looked is blank ("evicted"), not the lowest attention; the title names the
    query and the subtitle when it looked and which frames the map covers."""
    times = np.asarray(times, dtype=float)
    if question is not None or query == "question":
        if question is None:
            return empty_figure("Attention — question", "No question asked on this stream yet: ask one, and this "
                                                        "map shows where it looked.")
        label = f"question: “{_short(question.question)}”"
        if question.attention is None or not np.asarray(question.attention).size:
            return empty_figure(f"Attention — {label}", "This question's attention was not recorded.")
        attn, frame_ids = np.asarray(question.attention, dtype=float), question.frame_ids
        tiers = event.tiers if event is not None and len(event.tiers) == attn.shape[0] else ["all"] * attn.shape[0]
        held, kept = attn > 0, None
        asked = _asked_at(question, times)
        when = f"asked with memory up to {asked:.1f} s" if asked is not None else "asked"
        if asked is not None and event is not None and event.t_end > asked + 1e-6:
            when += f" (the stream is now at {event.t_end:.1f} s: ask again for where it looks now)"
    elif event is not None and event.attention:
        name = query if query in event.attention else next(iter(event.attention))
        attn, frame_ids, tiers = np.asarray(event.attention[name], dtype=float), event.frame_ids, event.tiers
        label, kept = f"{name} pseudo-query", np.asarray(event.kept)
        held = (attn > 0) | (kept > 0)  # a frame's tokens in the layer before this chunk's eviction
        when = f"after chunk {event.chunk} (ending at {event.t_end:.1f} s), before its eviction"
    else:
        return empty_figure("Attention per layer over time",
                            "No attention yet: start a video (attention is recorded for policies "
                            "that score with it, e.g. hermes, h2o, snapkv).")
    cols = frame_columns(frame_ids, times)
    z = _spread(np.where(held, np.log10(np.maximum(attn, LOG_FLOOR)), np.nan), cols)  # (L, C)

    def cell(layer: int, c: int) -> str:
        j = cols.source[c]
        head = f"layer {layer} ({tiers[layer]})<br>{cols.labels[c]}"
        if j < 0:
            return f"{head}<br>{EVICTED} from every layer"
        if not held[layer, j]:
            return f"{head}<br>{EVICTED}: not in this layer's cache"
        note = " (below the colour floor)" if attn[layer, j] < LOG_FLOOR else ""
        gone = "<br>evicted by this chunk, after this look" if kept is not None and kept[layer, j] == 0 else ""
        return f"{head}<br>attention {attn[layer, j]:.2e}{note}{gone}"

    hover = [[cell(layer, c) for c in range(z.shape[1])] for layer in range(z.shape[0])]
    decades = list(range(int(np.log10(LOG_FLOOR)), 1))
    fig = go.Figure(go.Heatmap(
        z=z, x=cols.edges, y=np.arange(z.shape[0]), text=hover, hoverinfo="text", hoverongaps=True,
        colorscale="Viridis", zmin=np.log10(LOG_FLOOR), zmax=0.0,
        colorbar={"title": {"text": "attention"}, "tickvals": decades, "ticktext": [f"1e{d}" for d in decades]}))
    _evicted_legend(fig)
    fig.update_xaxes(title_text=cols.unit)
    _layer_axis(fig, z.shape[0])
    fig.update_layout(legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
                      showlegend=True, plot_bgcolor="white")  # a one-entry legend is hidden unless asked for
    held_frames = np.asarray(frame_ids)[held.any(0)]
    return _layout(fig, f"Attention — {label}", subtitle=f"{when} · frames held: {cols.span(held_frames)}")


def _tint(colour: str, amount: float) -> str:
    """`amount` (0-1) of the hex `colour` over white: the same hue, lighter."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - amount * (255 - c)):02x}" for c in rgb)


def _tier_colourscale(tiers_present: Sequence[str]) -> list:
    """Tier k of n owns the band [k, k+1] / n of the colour axis: its lightest shade (RAMP_TINT
    of its colour over white) flat up to RAMP[0], a ramp to the tier's own colour (its darkest)
    at RAMP[1], flat to the band's end. No band holds another tier's colour, and no cell value
    comes within (1 - RAMP[1]) / n of a band's edge, so no count can take a neighbour's colour."""
    n, (lo, hi) = len(tiers_present), RAMP
    scale = []
    for k, tier in enumerate(tiers_present):
        light, dark = _tint(TIER_COLOURS[tier], RAMP_TINT), TIER_COLOURS[tier]
        scale += [[k / n, light], [(k + lo) / n, light], [(k + hi) / n, dark], [(k + 1) / n, dark]]
    return scale


def occupancy_map(event: ChunkEvent | None, times: Sequence[float] | np.ndarray, title: str = "Cache occupancy"
                  ) -> go.Figure:
    """Layer x frame map of tokens kept, coloured by the layer's tier (the most tokens any frame
    keeps: the tier's own colour; one token: its lightest shade); evicted frames are blank;
    summary tokens per layer in a column of their own at the left."""
    if event is None or event.kept.size == 0:
        return empty_figure(title, "Nothing cached yet: start a video to see what each layer keeps.")
    kept = np.asarray(event.kept, dtype=float)  # (L, F)
    n_layers = kept.shape[0]
    tiers = [t if t in TIER_COLOURS else "all" for t in event.tiers]
    present = [t for t in TIER_ORDER if t in tiers]
    top = max(kept.max(), 1.0)
    band = np.array([present.index(t) for t in tiers], dtype=float)[:, None]  # (L, 1)
    lo, hi = RAMP
    z = np.where(kept > 0, (band + lo + (hi - lo) * kept / top) / len(present), np.nan)  # blank where evicted
    cols = frame_columns(event.frame_ids, times)
    z = _spread(z, cols)

    def cell(layer: int, c: int) -> str:
        j = cols.source[c]
        head = f"layer {layer} ({tiers[layer]})<br>{cols.labels[c]}"
        if j < 0:
            return f"{head}<br>{EVICTED} from every layer"
        count = int(kept[layer, j])
        return f"{head}<br>{count} tokens kept" if count else f"{head}<br>{EVICTED}: 0 tokens kept"

    hover = [[cell(layer, c) for c in range(z.shape[1])] for layer in range(n_layers)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.06, 0.94], shared_yaxes=True, horizontal_spacing=0.01)
    summary = np.asarray(event.summary, dtype=float)
    fig.add_trace(go.Heatmap(
        z=np.where(summary > 0, 1.0, np.nan)[:, None], x=["Σ"], y=np.arange(n_layers), showscale=False,
        colorscale=[[0, "#333"], [1, "#333"]], zmin=0, zmax=1, hoverinfo="text", hoverongaps=True,
        text=[[f"layer {layer}: {int(summary[layer])} summary tokens"] for layer in range(n_layers)]), row=1, col=1)
    fig.add_trace(go.Heatmap(z=z, x=cols.edges, y=np.arange(n_layers), text=hover, hoverinfo="text",
                             hoverongaps=True, zmin=0, zmax=1, colorscale=_tier_colourscale(present),
                             showscale=False), row=1, col=2)
    for tier in present:  # legend entries for the tier colours (their darkest: a frame fully kept)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=tier, hoverinfo="skip",
                                 marker={"size": 10, "color": TIER_COLOURS[tier], "symbol": "square"}))
    _evicted_legend(fig)
    fig.update_xaxes(title_text=cols.unit, row=1, col=2)
    _layer_axis(fig, n_layers, row=1, col=1)
    fig.update_layout(legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
                      plot_bgcolor="white")
    budget = int(max(event.layer_budgets.max(initial=0), 0)) or "none"
    return _layout(fig, f"{title} — {event.policy}, budget {budget}",
                   subtitle=f"after chunk {event.chunk} (ending at {event.t_end:.1f} s) · frames kept: "
                            f"{cols.span(np.asarray(event.frame_ids)[kept.any(0)])} · darkest = {int(top)} tokens")


def memory_figure(events: Sequence[ChunkEvent], full_kv_bytes: Sequence[int]) -> go.Figure:
    """KV bytes per chunk vs a full cache (`full_kv_bytes[i]`: what a cache without eviction
    would hold after chunk i), tokens per layer now, and the max position id."""
    title = "Memory"
    if not events:
        return empty_figure(title, "No chunks yet.")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], specs=[[{"secondary_y": True}, {}]],
                        subplot_titles=("KV cache over the stream", "tokens per layer now"), horizontal_spacing=0.2)
    t = [e.t_end for e in events]
    mib = 2.0**20
    fig.add_trace(go.Scatter(x=t, y=[e.kv_bytes / mib for e in events], name="KV now", mode="lines+markers",
                             hovertemplate="t = %{x:.1f} s<br>%{y:.2f} MiB<extra>KV now</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=[b / mib for b in full_kv_bytes], name="full cache", mode="lines",
                             line={"dash": "dash"},
                             hovertemplate="t = %{x:.1f} s<br>%{y:.2f} MiB<extra>full cache</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=[e.max_position for e in events], name="max position", mode="lines",
                             line={"color": "#999", "width": 1},
                             hovertemplate="t = %{x:.1f} s<br>position %{y}<extra></extra>"),
                  row=1, col=1, secondary_y=True)
    drops = [i for i in range(1, len(events)) if events[i].max_position < events[i - 1].max_position]
    if drops:  # positions were compacted after these chunks
        fig.add_trace(go.Scatter(x=[t[i] for i in drops], y=[events[i].max_position for i in drops], name="re-index",
                                 mode="markers", marker={"symbol": "triangle-down", "size": 10, "color": "#d62728"},
                                 hovertemplate="t = %{x:.1f} s<br>re-indexed to %{y}<extra></extra>"),
                      row=1, col=1, secondary_y=True)
    last = events[-1]
    fig.add_trace(go.Bar(x=np.arange(len(last.cache_lengths)), y=last.cache_lengths, name="tokens",
                         marker_color=[TIER_COLOURS.get(t, TIER_COLOURS["all"]) for t in last.tiers],
                         hovertemplate="layer %{x}<br>%{y} tokens<extra></extra>", showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="video time (s)", row=1, col=1)
    fig.update_yaxes(title_text="MiB", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="position", row=1, col=1, secondary_y=True, showgrid=False, rangemode="tozero")
    fig.update_xaxes(title_text="layer", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, title)


def latency_figure(events: Sequence[ChunkEvent], questions: Sequence[QuestionEvent]) -> go.Figure:
    """TTFT and tokens/s of every answer; ingest speed (frames/s) of every chunk."""
    title = "Latency"
    if not events and not questions:
        return empty_figure(title, "No chunks or answers yet.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("answers", "ingest"), specs=[[{"secondary_y": True}, {}]],
                        horizontal_spacing=0.2)
    n = np.arange(1, len(questions) + 1)
    fig.add_trace(go.Bar(x=n, y=[q.ttft_s * 1e3 for q in questions], name="TTFT (ms)",
                         hovertext=[q.question for q in questions],
                         hovertemplate="question %{x}: %{hovertext}<br>TTFT %{y:.1f} ms<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=n, y=[q.tokens_per_s for q in questions], name="tokens/s", mode="markers",
                             hovertemplate="question %{x}<br>%{y:.0f} tokens/s<extra></extra>"),
                  row=1, col=1, secondary_y=True)
    speed = [e.n_frames / e.timings["total"] if e.timings.get("total") else 0.0 for e in events]
    fig.add_trace(go.Scatter(x=[e.t_end for e in events], y=speed, name="frames/s", mode="lines+markers",
                             hovertemplate="t = %{x:.1f} s<br>%{y:.0f} frames/s<extra>ingest</extra>"), row=1, col=2)
    fig.update_xaxes(title_text="question #", row=1, col=1, dtick=1)
    fig.update_yaxes(title_text="TTFT (ms)", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="tokens/s", row=1, col=1, secondary_y=True, showgrid=False, rangemode="tozero")
    fig.update_xaxes(title_text="video time (s)", row=1, col=2)
    fig.update_yaxes(title_text="frames/s", row=1, col=2, rangemode="tozero")
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return _layout(fig, title)


def study_figure(study: Study | None, title: str = "Question attention by distance (FIFO cache)") -> go.Figure:
    """The mechanistic study's heatmap: layer x distance from the newest video token (frames
    back), log colour, with the per-layer share on the newest 10% of tokens in the hover."""
    if study is None or study.n_questions == 0:
        return empty_figure(title, "press Run to measure where each layer looks on this stream")
    heat = np.asarray(study.heatmap, dtype=np.float64)  # (L, bins)
    edges = np.asarray(study.edges, dtype=np.float64) / max(1, study.tokens_per_frame)
    x = (edges[:-1] + edges[1:]) / 2
    z = np.log10(np.maximum(heat, LOG_FLOOR))
    hover = [[f"layer {i} ({study.tiers[i] if study.tiers else ''}) · {edges[j]:.1f}-{edges[j + 1]:.1f} frames "
              f"back · attention {heat[i, j]:.2e} · newest 10%: {study.recent_share[i]:.0%}"
              for j in range(heat.shape[1])] for i in range(heat.shape[0])]
    decades = list(range(int(np.log10(LOG_FLOOR)), 1))
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=np.arange(heat.shape[0]), text=hover, hoverinfo="text", colorscale="Magma",
        zmin=np.log10(LOG_FLOOR), zmax=0.0,
        colorbar={"title": "attention", "tickvals": decades, "ticktext": [f"1e{d}" for d in decades]},
    ))
    fig.update_xaxes(title="frames back from the newest frame")
    _layer_axis(fig, heat.shape[0])
    return _layout(fig, f"{title}: {study.n_questions} questions", height=HEIGHT + 40)


def chat_messages(chat: Sequence[dict]) -> list[dict]:
    """Chat entries (question, time, answers per policy, TTFT, ground truth) -> gradio
    messages; the ground truth line carries one ✓ / ✗ per answer, in policy order, graded by
    ShapeStream's one rule (``hermes.shapestream.grade``, as the accuracy study grades). An entry
    without a ground truth says why (its truth_note: "not applicable now: ..."), and its notes
    (e.g. words the model does not know) follow as warnings."""
    messages = []
    for entry in chat:
        messages.append({"role": "user", "content": f"[{entry['time']:.1f} s] {entry['question']}"})
        lines = []
        for policy, text in entry["answers"].items():
            ttft = entry["ttft_ms"].get(policy)
            lines.append(f"**{policy}**: {text or '…'}" + (f"  ·  TTFT {ttft:.0f} ms" if ttft else ""))
        if entry["truth"] is not None:
            verdicts = ["✓" if grade(t, entry["truth"]) else "✗" for t in entry["answers"].values() if t]
            lines.append(f"ground truth: **{entry['truth']}** {' '.join(verdicts)}")
        elif entry.get("truth_note"):
            lines.append(f"ground truth: {entry['truth_note']}")
        lines += [f"⚠️ {note}" for note in entry.get("notes", ())]
        messages.append({"role": "assistant", "content": "\n\n".join(lines)})
    return messages


def figures_html(figures: Sequence[go.Figure], header: dict[str, str]) -> str:
    """The figures export: a standalone UTF-8 page with a header table (`header`: label -> text,
    e.g. stream, model, policy, settings, time) and every figure that draws data; an empty-state
    figure (a hint, e.g. the compare placeholder) is left out. plotly.js is embedded once, so the
    page opens offline."""
    real = [fig for fig in figures if len(fig.data)]
    title = html.escape(f"HERMES Studio figures — {header.get('stream', '')}".rstrip(" —"))
    rows = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                     for k, v in header.items())
    body = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(real)]
    if not real:
        body = ["<p>No figures: nothing had streamed when this was exported.</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>body {{font-family: sans-serif; margin: 1em 2em}} "
            "th {text-align: left; padding-right: 1em; vertical-align: top} td {color: #333}</style>\n</head>\n"
            f"<body>\n<header>\n<h1>{title}</h1>\n<table>\n{rows}\n</table>\n</header>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")

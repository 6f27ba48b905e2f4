"""Pure render functions: telemetry events in, plotly figures out (no tensors, no gradio).

    from app import render
    fig = render.attention_heatmap(chunk_event, times)           # layer x frame, log colour, evicted blank
    fig = render.occupancy_map(chunk_event, times)               # tokens kept, one colour ramp per tier
    fig = render.keep_diff(event_a, event_b, times)              # compare mode: kept by A, not by B
    fig = render.memory_figure(chunk_events, full_kv_bytes)      # KV now vs a full cache, positions, tokens
    fig = render.latency_figure(chunk_events, question_events)   # TTFT, tokens/s, ingest speed
    fig = render.study_figure(study)                             # hermes.studies.mechanistic on this stream
    render.chat_messages(chat); render.accuracy_text(accuracy)   # the chat, graded; the running accuracy

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
LANE_COLOURS = ("#c2185b", "#00897b")  # the policy, then the compared one (compare mode), in every panel
LANE_LINES = ({"width": 3}, {"width": 1.5, "dash": "dot"})  # a wide line under a dotted one: equal values show both
BOTH_KEPT = "#c8c8c8"  # a layer x frame cell both policies keep (the diff view)
STREAMED_SINCE = "#e8e8e8"  # behind an earlier question's map: the time streamed after it was asked
HEIGHT = 280  # px: a layer x frame map (two stacked beside the player fit a 1280x800 screen)
MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}
LEGEND_ROW = 30  # px between the title block and the plot: a legend above the plot, or subplot titles, sit there
SUBTITLE_ROW = 22  # px the subtitle hangs below the title's line (plotly anchors a title by its own line)
SUBTITLED_TOP = 82  # top margin of a figure with a subtitle: the title's ~16 px line, SUBTITLE_ROW, LEGEND_ROW
PLAIN_TOP = 58  # top margin of a figure with a title only: its line and LEGEND_ROW

READ_ME = {
    "attention": "Rows are decoder layers (0 = shallow, at the bottom), columns are moments of the video. "
                 "Colour is how much attention the query put on that moment's tokens (log scale: each "
                 "colour step is 10x). A blank cell is a frame that layer no longer held when the query "
                 "looked (evicted), not low attention. The title says which query is drawn (a pseudo-query "
                 "after the latest chunk, or the last question, and of which policy) and the line under it when "
                 "it looked; a question's map keeps the whole stream's time axis, with what streamed after it "
                 "grey. What the loaded model's layers were measured to do, and the paper's finding, are "
                 "written below.",
    "occupancy": "What each layer still remembers: a cell is how many tokens of that frame the layer keeps, "
                 "coloured by the layer's tier (a light shade: a few tokens; the tier's own colour, as in the "
                 "legend: the whole frame). Blank cells are evicted frames. The column at the left counts "
                 "the summary tokens a layer folded its evicted tokens into.",
    "diff": "Compare mode: for every layer and moment, which of the two policies still keeps that frame "
            "after the latest chunk (any of its tokens): both (grey), only the first policy, only the second "
            "(their colours), or neither (blank). The counts above the map are layer-frame cells. Summary "
            "tokens (evicted tokens folded into one) are not frames and are left out.",
    "memory": "KV cache bytes now versus what a cache without eviction would hold for the same stream, "
              "the largest position id in use, and the tokens each layer holds now (in compare mode, both "
              "policies). A drop in the position line is a re-index: positions were compacted so they never "
              "outgrow the model's range.",
    "study": "The paper's mechanistic picture on this stream: a FIFO cache of the chosen budget, and for every "
             "question, where each layer's attention fell by distance from the newest frame (log colour: each "
             "step is 10x). Bright cells at the left are short-term memory (the latest frames); bright cells "
             "spread to the right are long-term anchors.",
    "latency": "Time to first token of every answer (ms), answer speed (tokens/s) and ingest speed "
               "(frames/s per chunk). With a bounded cache, TTFT stays flat however long the stream.",
}


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, subtitle: str = "", top: int | None = None
            ) -> go.Figure:
    """Title (and a smaller subtitle line under it) standing on the plot's top edge, lifted
    by a row (LEGEND_ROW) that a legend above the plot (y = 1, anchored at its bottom) or the
    subplot titles fill, so neither covers the other; the top margin `top` holds all of it.
    Placed in pixels: the figure's height is fixed. Size, template; zoom survives a redraw while
    the title stays the same."""
    margin = {**MARGIN, "t": top or (SUBTITLED_TOP if subtitle else PLAIN_TOP)}
    lift = LEGEND_ROW + (SUBTITLE_ROW if subtitle else 0)  # px from the plot's top to the title line's bottom
    base = (height - margin["t"] + lift) / height
    fig.update_layout(title={"text": title, "x": 0.01, "xref": "container", "xanchor": "left", "y": base,
                             "yref": "container", "yanchor": "bottom", "font": {"size": 14},
                             "subtitle": {"text": subtitle, "font": {"size": 10, "color": "#555"}}},
                      height=height, margin=margin, template="plotly_white", uirevision=title)
    return fig


def _legend_above(fig: go.Figure) -> None:
    """A horizontal legend in the row above the plot, at the right (see `_layout`)."""
    fig.update_layout(legend={"orientation": "h", "y": 1.0, "x": 1, "xanchor": "right", "yanchor": "bottom"},
                      showlegend=True)  # a one-entry legend is hidden unless asked for


def _chunk(event: ChunkEvent) -> str:
    """'chunk 2 (ending at 15.5 s)': chunks counted from 1, as the status counts them."""
    return f"chunk {event.chunk + 1} (ending at {event.t_end:.1f} s)"


def _time_axis(fig: go.Figure, cols: Columns, end: float | None = None, **where: int) -> None:
    """The x axis of a layer x frame map: the whole stream, from its first frame to the newest
    (or `end`), whatever the map holds (so two policies' maps share one axis)."""
    right = float(cols.edges[-1]) if end is None else end
    fig.update_xaxes(title_text=cols.unit, range=[float(cols.edges[0]), right], **where)


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


def _short(text: str, limit: int = 36) -> str:
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
            when += f" · now at {event.t_end:.1f} s (grey: streamed since)"
    elif event is not None and event.attention:
        name = query if query in event.attention else next(iter(event.attention))
        attn, frame_ids, tiers = np.asarray(event.attention[name], dtype=float), event.frame_ids, event.tiers
        label, kept = f"{name} pseudo-query", np.asarray(event.kept)
        held = (attn > 0) | (kept > 0)  # a frame's tokens in the layer before this chunk's eviction
        when = f"after {_chunk(event)}, before its eviction"
    else:
        return empty_figure("Attention per layer over time",
                            "No attention yet: start a video; the map is drawn after the first chunk.")
    cols = frame_columns(frame_ids, times)
    z = _spread(np.where(held, np.log10(np.maximum(attn, LOG_FLOOR)), np.nan), cols)  # (L, C)
    # a question asked earlier: the axis still runs to the newest frame in memory (as the occupancy
    # map's does), the time streamed since the question shaded
    now = frame_columns(event.frame_ids, times) if kept is None and event is not None and len(event.frame_ids) else cols
    end = max(float(now.edges[-1]), float(cols.edges[-1])) if now.unit == cols.unit else float(cols.edges[-1])

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
    _time_axis(fig, cols, end=end)
    if end > cols.edges[-1] + 1e-9:
        fig.add_vrect(x0=float(cols.edges[-1]), x1=end, fillcolor=STREAMED_SINCE, line_width=0, layer="below")
    _layer_axis(fig, z.shape[0])
    _legend_above(fig)
    fig.update_layout(plot_bgcolor="white")
    held_frames = np.asarray(frame_ids)[held.any(0)]
    policy = f" — {event.policy}" if event is not None else ""
    return _layout(fig, f"Attention — {label}{policy}", subtitle=f"{when} · frames held: {cols.span(held_frames)}")


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
    _time_axis(fig, cols, row=1, col=2)
    _layer_axis(fig, n_layers, row=1, col=1)
    _legend_above(fig)
    fig.update_layout(plot_bgcolor="white")
    budget = int(max(event.layer_budgets.max(initial=0), 0)) or "none"
    return _layout(fig, f"{title} — {event.policy}, budget {budget}",
                   subtitle=f"after {_chunk(event)} · frames kept: "
                            f"{cols.span(np.asarray(event.frame_ids)[kept.any(0)])} · darkest = {int(top)} tokens")


DIFF_CLASSES = ("neither", "only B", "only A", "both")  # the diff view's cell values 0-3, A and B named when drawn


def keep_classes(a: ChunkEvent, b: ChunkEvent) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which of two policies' latest events keeps each layer x frame cell: (frame_ids (F,) the
    union of both events' frames, classes (L, F) an index into DIFF_CLASSES, kept_a, kept_b
    (L, F) tokens each keeps). A frame an event does not list counts as 0 tokens kept there."""
    ids = np.union1d(np.asarray(a.frame_ids, dtype=int), np.asarray(b.frame_ids, dtype=int))

    def on(event: ChunkEvent) -> np.ndarray:
        out = np.zeros((np.asarray(event.kept).shape[0], len(ids)), dtype=np.int64)
        out[:, np.searchsorted(ids, np.asarray(event.frame_ids, dtype=int))] = np.asarray(event.kept)
        return out

    kept_a, kept_b = on(a), on(b)
    return ids, 2 * (kept_a > 0) + (kept_b > 0), kept_a, kept_b


def keep_diff(a: ChunkEvent | None, b: ChunkEvent | None, times: Sequence[float] | np.ndarray) -> go.Figure:
    """Compare mode: layer x frame, which of the two policies keeps each frame after their
    latest chunk (both, only A, only B, neither: blank), on the stream's full time axis, with
    the count of cells of each kind. Events of different chunks or layer counts are not compared
    (a hint says why)."""
    title = "Kept by A, not by B"
    if a is None or b is None:
        return empty_figure(title, "Pick a second policy under Engine settings and start a video: this map shows "
                                   "what one policy keeps and the other does not.")
    title = f"Kept by {a.policy}, not by {b.policy}"
    if a.chunk != b.chunk or np.asarray(a.kept).shape[0] != np.asarray(b.kept).shape[0]:
        return empty_figure(title, f"Not comparable: {a.policy} is after {_chunk(a)}, {b.policy} after {_chunk(b)} "
                                   f"({np.asarray(a.kept).shape[0]} and {np.asarray(b.kept).shape[0]} layers).")
    ids, classes, kept_a, kept_b = keep_classes(a, b)
    names = {0: "neither", 1: f"only {b.policy}", 2: f"only {a.policy}", 3: "both"}
    colours = {1: LANE_COLOURS[1], 2: LANE_COLOURS[0], 3: BOTH_KEPT}
    cols = frame_columns(ids, times)
    z = _spread(np.where(classes > 0, classes, np.nan).astype(float), cols)
    tiers_a, tiers_b = a.tiers, b.tiers

    def cell(layer: int, c: int) -> str:
        j = cols.source[c]
        head = f"layer {layer} ({a.policy}: {tiers_a[layer]}, {b.policy}: {tiers_b[layer]})<br>{cols.labels[c]}"
        if j < 0:
            return f"{head}<br>neither: evicted from every layer by both"
        return (f"{head}<br>{a.policy} {kept_a[layer, j]} tokens · {b.policy} {kept_b[layer, j]} tokens"
                f"<br>{names[int(classes[layer, j])]}")

    hover = [[cell(layer, c) for c in range(z.shape[1])] for layer in range(z.shape[0])]
    scale = []
    for k in (1, 2, 3):  # value k owns the band [k - 0.5, k + 0.5] of zmin 0.5 .. zmax 3.5: one flat colour each
        scale += [[(k - 1) / 3, colours[k]], [k / 3, colours[k]]]
    fig = go.Figure(go.Heatmap(z=z, x=cols.edges, y=np.arange(z.shape[0]), text=hover, hoverinfo="text",
                               hoverongaps=True, zmin=0.5, zmax=3.5, colorscale=scale, showscale=False))
    for k in (2, 1, 3):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=names[k], hoverinfo="skip",
                                 marker={"size": 10, "color": colours[k], "symbol": "square"}))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="neither", hoverinfo="skip",
                             marker={"size": 10, "color": "white", "symbol": "square",
                                     "line": {"color": "#999", "width": 1}}))
    _time_axis(fig, cols)
    _layer_axis(fig, z.shape[0])
    _legend_above(fig)
    fig.update_layout(plot_bgcolor="white")
    counts = np.bincount(classes.ravel(), minlength=4)
    counts[0] = z.shape[0] * len(cols.at) - counts[1:].sum()  # of every layer x frame cell of the stream so far
    return _layout(fig, title, subtitle=f"after {_chunk(a)} · cells: both {counts[3]} · "
                                        f"only {a.policy} {counts[2]} · only {b.policy} {counts[1]} · "
                                        f"neither {counts[0]}")


PANEL_HEIGHT = 340  # the memory and latency panels: three small plots side by side, a legend (two rows) under them
PANEL_MARGIN = {"t": 70, "b": 96}  # px: the title and the subplot titles above; axis titles and the legend below


def _lanes(events: Sequence[ChunkEvent], compared: Sequence[ChunkEvent]) -> list[tuple]:
    """(events, policy, colour, name suffix, line style) per lane: the policy's, then the compared
    one's when given (compare mode: every trace's name ends in its policy, ' · fifo')."""
    lanes = [events] + ([compared] if len(compared) else [])
    policies = [lane[-1].policy if len(lane) else "" for lane in lanes]
    out = []
    for i, (lane, policy) in enumerate(zip(lanes, policies, strict=True)):
        suffix = f" · {policy}" if len(lanes) > 1 else ""
        out.append((lane, policy, LANE_COLOURS[i], suffix, {"color": LANE_COLOURS[i], **LANE_LINES[i]}))
    return out


def _three_panels(titles: tuple[str, str, str]) -> go.Figure:
    """One row of three plots, each titled; the legend in a row under them."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.09)
    fig.update_annotations(font_size=12)  # the subplot titles, under the figure's title (see _layout's top)
    fig.update_layout(legend={"orientation": "h", "y": -0.3, "x": 0, "yanchor": "top"})
    return fig


def memory_figure(events: Sequence[ChunkEvent], full_kv_bytes: Sequence[int],
                  compared: Sequence[ChunkEvent] = ()) -> go.Figure:
    """Three plots: KV bytes per chunk vs a full cache (`full_kv_bytes[i]`: what a cache
    without eviction would hold after chunk i), the largest position id (re-indexes marked),
    and the tokens each layer holds now; `compared`: the compared policy's events, drawn beside
    (compare mode). Each quantity has its own axis, so no line hides under another."""
    title = "Memory"
    if not events:
        return empty_figure(title, "No chunks yet.")
    fig = _three_panels(("KV cache (MiB)", "largest position id", "tokens per layer now"))
    mib = 2.0**20
    lanes = _lanes(events, compared)
    for lane, policy, colour, suffix, line in lanes:
        t = [e.t_end for e in lane]
        fig.add_trace(go.Scatter(x=t, y=[e.kv_bytes / mib for e in lane], name=f"KV now{suffix}",
                                 mode="lines+markers", line=line, marker={"size": 5},
                                 hovertemplate=f"t = %{{x:.1f}} s<br>%{{y:.2f}} MiB<extra>{policy}</extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=t, y=[e.max_position for e in lane], name=f"max position{suffix}",
                                 mode="lines+markers", line=line, marker={"size": 4},
                                 showlegend=False,
                                 hovertemplate=f"t = %{{x:.1f}} s<br>position %{{y}}<extra>{policy}</extra>"),
                      row=1, col=2)
        drops = [i for i in range(1, len(lane)) if lane[i].max_position < lane[i - 1].max_position]
        if drops:  # positions were compacted after these chunks
            fig.add_trace(go.Scatter(x=[t[i] for i in drops], y=[lane[i].max_position for i in drops],
                                     name=f"re-index{suffix}", mode="markers",
                                     marker={"symbol": "triangle-down", "size": 10, "color": "#d62728"},
                                     hovertemplate="t = %{x:.1f} s<br>re-indexed to %{y}<extra></extra>"),
                          row=1, col=2)
        last = lane[-1]
        bars = [TIER_COLOURS.get(tier, TIER_COLOURS["all"]) for tier in last.tiers] if not suffix else colour
        fig.add_trace(go.Bar(x=np.arange(len(last.cache_lengths)), y=last.cache_lengths, name=f"tokens{suffix}",
                             marker_color=bars, customdata=last.tiers, showlegend=bool(suffix),
                             hovertemplate=f"layer %{{x}} (%{{customdata}})<br>%{{y}} tokens<extra>{policy}</extra>"),
                      row=1, col=3)
    fig.add_trace(go.Scatter(x=[e.t_end for e in events], y=[b / mib for b in full_kv_bytes],  # drawn on top: dashes
                             name="full cache (no eviction)", mode="lines", line={"dash": "dash", "color": "#555"},
                             hovertemplate="t = %{x:.1f} s<br>%{y:.2f} MiB<extra>full cache</extra>"), row=1, col=1)
    for col in (1, 2):
        fig.update_xaxes(title_text="video time (s)", row=1, col=col)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="layer", row=1, col=3)
    return _layout(fig, title, height=PANEL_HEIGHT, top=PANEL_MARGIN["t"]).update_layout(margin_b=PANEL_MARGIN["b"])


def latency_figure(events: Sequence[ChunkEvent], questions: Sequence[QuestionEvent],
                   compared_events: Sequence[ChunkEvent] = (), compared_questions: Sequence[QuestionEvent] = ()
                   ) -> go.Figure:
    """Three plots: time to first token (ms) and answer speed (tokens/s) of every answer,
    ingest speed (frames/s) of every chunk; the compared policy's beside (compare mode)."""
    title = "Latency"
    if not events and not questions:
        return empty_figure(title, "No chunks or answers yet.")
    fig = _three_panels(("time to first token (ms)", "answer speed (tokens/s)", "ingest speed (frames/s)"))
    lanes = _lanes(events, compared_events)
    asked = [questions, compared_questions][:len(lanes)]
    for (lane, policy, colour, suffix, line), answers in zip(lanes, asked, strict=True):
        n = np.arange(1, len(answers) + 1)
        texts = [q.question for q in answers]
        fig.add_trace(go.Bar(x=n, y=[q.ttft_s * 1e3 for q in answers], name=f"TTFT (ms){suffix}",
                             marker_color=colour, hovertext=texts, showlegend=bool(suffix),
                             hovertemplate="question %{x}: %{hovertext}<br>TTFT %{y:.1f} ms"
                                           f"<extra>{policy}</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=n, y=[q.tokens_per_s for q in answers], name=f"tokens/s{suffix}", mode="markers",
                                 marker={"color": colour, "size": 8}, showlegend=False, hovertext=texts,
                                 hovertemplate="question %{x}: %{hovertext}<br>%{y:.0f} tokens/s"
                                               f"<extra>{policy}</extra>"), row=1, col=2)
        speed = [e.n_frames / e.timings["total"] if e.timings.get("total") else 0.0 for e in lane]
        fig.add_trace(go.Scatter(x=[e.t_end for e in lane], y=speed, name=f"frames/s{suffix}", mode="lines+markers",
                                 line=line, marker={"size": 5}, showlegend=False,
                                 hovertemplate=f"t = %{{x:.1f}} s<br>%{{y:.0f}} frames/s<extra>{policy}</extra>"),
                      row=1, col=3)
    for col in (1, 2):
        fig.update_xaxes(title_text="question #", dtick=1, row=1, col=col)
    fig.update_xaxes(title_text="video time (s)", row=1, col=3)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(barmode="group", showlegend=len(lanes) > 1)
    return _layout(fig, title, height=PANEL_HEIGHT, top=PANEL_MARGIN["t"]).update_layout(margin_b=PANEL_MARGIN["b"])


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


def verdicts(entry: dict) -> dict[str, bool]:
    """policy -> right or wrong, for a chat entry with a ground truth: every finished answer (its
    TTFT is recorded; an empty one is wrong) graded by ShapeStream's one rule
    (``hermes.shapestream.grade``, as the accuracy study grades); {} without a ground truth."""
    if entry.get("truth") is None:
        return {}
    done = dict(entry.get("ttft_ms", {}))  # copies: an answer in flight adds its policy's keys (read without the lock)
    return {policy: grade(text, entry["truth"]) for policy, text in dict(entry["answers"]).items() if policy in done}


def asked_when(entry: dict) -> str:
    """What memory a chat entry's answer covers, against where the player was when it was asked:
    "answered from memory up to 15.5 s; the player was at 17.2 s" (an answer covers the complete
    chunks in memory, so it lags the player by up to a chunk; after a seek back the player is behind)."""
    line, player = f"answered from memory up to {entry['time']:.1f} s", entry.get("player_s")
    return line if player is None or abs(player - entry["time"]) < 0.05 else f"{line}; the player was at {player:.1f} s"


def chat_messages(chat: Sequence[dict]) -> list[dict]:
    """Chat entries (question, time, answers per policy, TTFT, ground truth) -> gradio
    messages; the ground truth line names each finished answer's verdict, e.g. "ground truth:
    **red** ✓ hermes · ✗ fifo" (see `verdicts`). An entry without a ground truth says why (its
    truth_note: "not applicable now: ..."), and its notes (e.g. words the model does not know)
    follow as warnings."""
    messages = []
    for entry in chat:
        messages.append({"role": "user", "content": entry["question"]})
        lines, graded = [f"*{asked_when(entry)}*"], verdicts(entry)
        for policy, text in entry["answers"].items():
            ttft = entry["ttft_ms"].get(policy)
            shown = text or ("(no answer)" if ttft is not None else "…")
            lines.append(f"**{policy}**: {shown}" + (f"  ·  TTFT {ttft:.0f} ms" if ttft is not None else ""))
        if entry["truth"] is not None:
            marks = " · ".join(f"{'✓' if right else '✗'} {policy}" for policy, right in graded.items())
            lines.append(f"ground truth: **{entry['truth']}** {marks}".rstrip())
        elif entry.get("truth_note"):
            lines.append(f"ground truth: {entry['truth_note']}")
        lines += [f"⚠️ {note}" for note in entry.get("notes", ())]
        messages.append({"role": "assistant", "content": "\n\n".join(lines)})
    return messages


def accuracy_text(accuracy: dict[str, tuple[int, int]], disagree: int | None = None) -> str:
    """The running accuracy line under the chat: `accuracy` is policy -> (right, graded) over the
    chat's questions with a ground truth (app.session.Session.accuracy); `disagree`: on how many
    of them the two policies' verdicts differ (compare mode)."""
    graded = max((n for _, n in accuracy.values()), default=0)
    if not graded:
        return ("**Running accuracy:** no question with a ground truth answered yet (ShapeStream examples give "
                "one; graded as the accuracy study grades).")
    scores = " · ".join(f"**{policy}** {k}/{n} right ({k / n:.0%})" if n else f"**{policy}** none graded"
                        for policy, (k, n) in accuracy.items())
    differ = f" · the two disagree on {disagree} of {graded}" if disagree is not None and len(accuracy) > 1 else ""
    return (f"**Running accuracy** on this chat's {graded} question{'s' if graded > 1 else ''} with a ground truth: "
            f"{scores}{differ} (graded as the accuracy study grades).")


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

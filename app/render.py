"""Pure render functions: telemetry events in, plotly figures out (no tensors, no gradio).

    from app import render
    fig = render.attention_heatmap(chunk_event, times)           # layer x frame, log colour
    fig = render.occupancy_map(chunk_event, times)               # tokens kept, coloured by tier
    fig = render.memory_figure(chunk_events, full_kv_bytes)      # KV now vs a full cache
    fig = render.latency_figure(chunk_events, question_events)   # TTFT, tokens/s, ingest speed
    fig = render.study_figure(study)                             # hermes.studies.mechanistic on this stream

Every function accepts "nothing yet" (None or empty lists) and returns a readable empty
figure with a hint instead. `times` maps a stream frame index to its time in seconds.
Each figure has a short "how to read this" text in READ_ME, shown under it in the app.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hermes.shapestream import grade
from hermes.studies.mechanistic import Study
from hermes.telemetry import ChunkEvent, QuestionEvent

TIER_COLOURS = {"shallow": "#2b8cbe", "middle": "#e6550d", "deep": "#756bb1", "all": "#31a354"}
TIER_ORDER = ("shallow", "middle", "deep", "all")
LOG_FLOOR = 1e-4  # attention below this is drawn as the floor of the log scale
HEIGHT = 300
MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}

READ_ME = {
    "attention": "Rows are decoder layers (0 = shallow, at the bottom), columns are moments of the video. "
                 "Colour is how much attention the query put on that moment's tokens (log scale: each "
                 "colour step is 10x). HERMES finds shallow layers looking at the newest frames and deep "
                 "layers at a few anchors across the whole stream. After a question, the map shows where "
                 "the question itself looked.",
    "occupancy": "What each layer still remembers: a cell is how many tokens of that frame the layer keeps "
                 "(darker = more), coloured by the layer's tier. White holes are evicted frames. The "
                 "column at the left counts the summary tokens a layer folded its evicted tokens into.",
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


def _layout(fig: go.Figure, title: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 14}}, height=height, margin=MARGIN,
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


def _frame_times(frame_ids: np.ndarray, times: Sequence[float] | np.ndarray) -> np.ndarray:
    """(F,) seconds of each frame id; NaN for a frame whose time is unknown."""
    times = np.asarray(times, dtype=float)
    ids = np.asarray(frame_ids, dtype=int)
    out = np.full(len(ids), np.nan)
    known = ids < len(times)
    out[known] = times[ids[known]]
    return out


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _layer_axis(fig: go.Figure, n_layers: int, **where: int) -> None:
    step = max(1, n_layers // 8)
    fig.update_yaxes(title_text="layer", tickmode="array", tickvals=list(range(0, n_layers, step)), **where)


def attention_heatmap(event: ChunkEvent | None, times: Sequence[float] | np.ndarray, query: str | None = None,
                      question: QuestionEvent | None = None) -> go.Figure:
    """Layer x frame attention on a log colour scale: the pseudo-query `query` of the latest
    chunk (default: the first one recorded), or `question`'s attention when given."""
    title = "Attention per layer over time"
    if question is not None and question.attention is not None and question.attention.size:
        attn, frame_ids, label = question.attention, question.frame_ids, f"question: {_short(question.question)}"
        tiers = event.tiers if event is not None else ["all"] * attn.shape[0]
    elif event is not None and event.attention:
        name = query if query in event.attention else next(iter(event.attention))
        attn, frame_ids, label, tiers = event.attention[name], event.frame_ids, f"pseudo-query: {name}", event.tiers
    else:
        return empty_figure(title, "No attention yet: start a video (attention is recorded for policies "
                                   "that score with it, e.g. hermes, h2o, snapkv).")
    attn = np.asarray(attn, dtype=float)  # (L, F)
    x = _frame_times(frame_ids, times)  # (F,)
    z = np.log10(np.maximum(attn, LOG_FLOOR))
    hover = [[f"layer {layer} ({tiers[layer]})<br>t = {x[j]:.1f} s (frame {frame_ids[j]})"
              f"<br>attention {attn[layer, j]:.2e}" for j in range(attn.shape[1])] for layer in range(attn.shape[0])]
    decades = list(range(int(np.log10(LOG_FLOOR)), 1))
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=np.arange(attn.shape[0]), text=hover, hoverinfo="text", colorscale="Viridis",
        zmin=np.log10(LOG_FLOOR), zmax=0.0,
        colorbar={"title": {"text": "attention"}, "tickvals": decades, "ticktext": [f"1e{d}" for d in decades]}))
    fig.update_xaxes(title_text="video time (s)")
    _layer_axis(fig, attn.shape[0])
    return _layout(fig, f"Attention — {label}")


def _tier_colourscale(tiers_present: Sequence[str]) -> list:
    """One white->colour ramp per tier, stacked on [0, 1]: tier k occupies [k, k+1] / n."""
    n = len(tiers_present)
    scale = []
    for k, tier in enumerate(tiers_present):
        scale += [[k / n, "#f3f3f3"], [(k + 1) / n - 1e-6 if k + 1 < n else 1.0, TIER_COLOURS[tier]]]
    return scale


def occupancy_map(event: ChunkEvent | None, times: Sequence[float] | np.ndarray, title: str = "Cache occupancy"
                  ) -> go.Figure:
    """Layer x frame map of tokens kept, coloured by the layer's tier; evicted frames are holes;
    summary tokens per layer in a column of their own at the left."""
    if event is None or event.kept.size == 0:
        return empty_figure(title, "Nothing cached yet: start a video to see what each layer keeps.")
    kept = np.asarray(event.kept, dtype=float)  # (L, F)
    n_layers = kept.shape[0]
    tiers = [t if t in TIER_COLOURS else "all" for t in event.tiers]
    present = [t for t in TIER_ORDER if t in tiers]
    top = max(kept.max(), 1.0)
    band = np.array([present.index(t) for t in tiers], dtype=float)[:, None]  # (L, 1)
    z = np.where(kept > 0, band + 0.25 + 0.75 * kept / top, np.nan)  # holes where nothing is kept
    z = z / len(present)
    x = _frame_times(event.frame_ids, times)
    hover = [[f"layer {layer} ({tiers[layer]})<br>t = {x[j]:.1f} s (frame {event.frame_ids[j]})"
              f"<br>{int(kept[layer, j])} tokens kept" for j in range(kept.shape[1])] for layer in range(n_layers)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.06, 0.94], shared_yaxes=True, horizontal_spacing=0.01)
    summary = np.asarray(event.summary, dtype=float)
    fig.add_trace(go.Heatmap(
        z=np.where(summary > 0, 1.0, np.nan)[:, None], x=["Σ"], y=np.arange(n_layers), showscale=False,
        colorscale=[[0, "#333"], [1, "#333"]], zmin=0, zmax=1, hoverinfo="text",
        text=[[f"layer {layer}: {int(summary[layer])} summary tokens"] for layer in range(n_layers)]), row=1, col=1)
    fig.add_trace(go.Heatmap(z=z, x=x, y=np.arange(n_layers), text=hover, hoverinfo="text", zmin=0, zmax=1,
                             colorscale=_tier_colourscale(present), showscale=False), row=1, col=2)
    for tier in present:  # legend entries for the tier colours
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=tier,
                                 marker={"size": 10, "color": TIER_COLOURS[tier], "symbol": "square"}))
    fig.update_xaxes(title_text="video time (s)", row=1, col=2)
    _layer_axis(fig, n_layers, row=1, col=1)
    fig.update_layout(legend={"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
                      plot_bgcolor="white")
    sub = f"{event.policy}, budget {int(max(event.layer_budgets.max(initial=0), 0)) or 'none'}"
    return _layout(fig, f"{title} — {sub}")


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
    ShapeStream's one rule (``hermes.shapestream.grade``, as the accuracy study grades)."""
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
        messages.append({"role": "assistant", "content": "\n\n".join(lines)})
    return messages

"""The app's render functions, without a browser: shapes, axes, tier colours, log scale, empty states."""

from __future__ import annotations

import colorsys
import itertools
import json

import numpy as np
import plotly.graph_objects as go
import pytest

from app import render
from hermes.telemetry import ChunkEvent, QuestionEvent

TIERS = ["shallow"] * 2 + ["middle"] * 6 + ["deep"] * 4


def chunk_event(n_layers: int = 12, n_frames: int = 6, chunk: int = 2, tiers: list[str] | None = None) -> ChunkEvent:
    rng = np.random.default_rng(chunk)
    kept = rng.integers(0, 17, size=(n_layers, n_frames))
    kept[:, 0] = 0  # frame 0 evicted everywhere
    attn = rng.dirichlet(np.ones(n_frames), size=n_layers)
    return ChunkEvent(chunk=chunk, first_frame=n_frames - 2, n_frames=2, t_start=2.0, t_end=2.5, policy="hermes",
                      tiers=tiers or TIERS, layer_budgets=np.full(n_layers, 64), cache_lengths=kept.sum(1),
                      evicted=np.zeros(n_layers, int), frame_ids=np.arange(n_frames), kept=kept,
                      summary=np.array([0] * 8 + [1] * 4), attention={"global": attn, "local": attn[:, ::-1]},
                      kv_bytes=1000 * (chunk + 1), max_position=100 * (chunk + 1),
                      timings={"total": 0.05})


TIMES = np.arange(6) * 0.5


def heading(fig: go.Figure) -> str:
    """A figure's title and its subtitle line ("title<br>subtitle")."""
    title = fig.layout.title
    return f"{title.text}<br>{title.subtitle.text}" if title.subtitle.text else title.text


@pytest.mark.parametrize("fig", [
    render.attention_heatmap(None, []),
    render.occupancy_map(None, []),
    render.memory_figure([], []),
    render.latency_figure([], []),
])
def test_empty_state_figures_show_a_hint_and_no_data(fig):
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 0
    assert fig.layout.annotations and fig.layout.annotations[0].text
    assert fig.layout.title.text


def rgb(colour: str) -> np.ndarray:
    """'#rrggbb' or 'rgb(r, g, b)' -> (3,) floats 0-255."""
    if colour.startswith("#"):
        return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return np.array([float(v) for v in colour[colour.index("(") + 1:-1].split(",")[:3]])


def drawn_colours(trace) -> np.ndarray:
    """(L, C, 3) the colour plotly draws each heatmap cell in (its value placed on zmin..zmax and
    interpolated on the colour scale, in RGB, as plotly.js does); NaN for a cell not drawn."""
    stops = [(float(pos), rgb(colour)) for pos, colour in trace.colorscale]
    z = np.asarray(trace.z, dtype=float)
    out = np.full((*z.shape, 3), np.nan)
    for index, value in np.ndenumerate(z):
        if np.isnan(value):
            continue
        u = min(max((value - trace.zmin) / (trace.zmax - trace.zmin), 0.0), 1.0)
        for (p0, c0), (p1, c1) in itertools.pairwise(stops):
            if p0 <= u <= p1 and p1 > p0:
                out[index] = c0 + (c1 - c0) * (u - p0) / (p1 - p0)
                break
    return out


def hue(colour: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(colour / 255))[0] * 360


def occupancy_event(kept: np.ndarray, tiers: list[str], frame_ids: np.ndarray | None = None) -> ChunkEvent:
    event = chunk_event(n_layers=kept.shape[0], n_frames=kept.shape[1], tiers=tiers)
    event.kept, event.summary = kept, np.zeros(kept.shape[0], int)
    event.frame_ids = np.arange(kept.shape[1]) if frame_ids is None else frame_ids
    return event


def test_attention_heatmap_is_layer_by_frame_time_on_a_log_scale():
    event = chunk_event()
    fig = render.attention_heatmap(event, TIMES, query="global")
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (12, 6)
    np.testing.assert_allclose(z, np.log10(np.maximum(event.attention["global"], render.LOG_FLOOR)))
    np.testing.assert_allclose(heat.x, np.arange(7) * 0.5 - 0.25)  # cell edges: each frame centred on its time
    assert list(heat.colorbar.ticktext)[-1] == "1e0" and "1e-4" in heat.colorbar.ticktext
    assert fig.layout.xaxis.title.text == "video time (s)" and fig.layout.yaxis.title.text == "layer"
    title = heading(fig)
    assert title.startswith("Attention — global pseudo-query — hermes<br>")  # which query, of which policy
    assert "after chunk 3 (ending at 2.5 s)" in title and "frames held: 0.0–2.5 s" in title  # counted from 1


@pytest.mark.parametrize("query, expect", [("local", "local"), ("global", "global"), ("nonexistent", "global")])
def test_attention_heatmap_picks_the_requested_pseudo_query_and_names_it(query, expect):
    fig = render.attention_heatmap(chunk_event(), TIMES, query=query)
    np.testing.assert_allclose(fig.data[0].z, np.log10(np.maximum(chunk_event().attention[expect], render.LOG_FLOOR)))
    assert fig.layout.title.text.startswith(f"Attention — {expect} pseudo-query")


def asked(attention: np.ndarray, frame_ids: np.ndarray, frames_seen: int = 6, text: str = "which shape appeared first ?"
          ) -> QuestionEvent:
    return QuestionEvent(text, "circle", 0.01, 0.02, 2, frames_seen, frame_ids=frame_ids, attention=attention)


def test_attention_heatmap_shows_the_question_and_when_it_was_asked():
    question = asked(np.full((12, 3), 0.2), np.array([1, 3, 5]), frames_seen=4)
    fig = render.attention_heatmap(chunk_event(), TIMES, query="question", question=question)
    title = heading(fig)
    assert "Attention — question: “which shape appeared first ?”" in title
    assert "asked with memory up to 1.5 s" in title and "now at 2.5 s" in title
    assert "frames held: 0.5–2.5 s" in title
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)  # frames 0, 2, 4 are held by no layer: blank columns of their own
    assert z.shape == (12, 6) and np.isnan(z[:, [0, 2, 4]]).all() and not np.isnan(z[:, [1, 3, 5]]).any()
    assert "attention 2.00e-01" in heat.text[0][1] and "layer 0 (shallow)" in heat.text[0][1]
    long = asked(np.ones((12, 1)), np.array([1]), text="x" * 80)
    assert len(render.attention_heatmap(None, TIMES, question=long).layout.title.text.split("<br>")[0]) < 70
    current = render.attention_heatmap(chunk_event(), TIMES, question=asked(np.ones((12, 1)), np.array([5])))
    assert "now at" not in heading(current)


def test_an_earlier_questions_map_keeps_the_streams_axis_and_shades_what_streamed_since():
    question = asked(np.full((12, 2), 0.2), np.array([1, 3]), frames_seen=4)  # asked at 1.5 s; memory is now at 2.5 s
    fig = render.attention_heatmap(chunk_event(), TIMES, query="question", question=question)
    assert tuple(fig.layout.xaxis.range) == (-0.25, 2.75)  # as the occupancy map's: frame 0 to frame 5
    (shade,) = fig.layout.shapes
    assert (shade.x0, shade.x1, shade.fillcolor) == (1.75, 2.75, render.STREAMED_SINCE)
    assert "now at 2.5 s (grey: streamed since)" in heading(fig)
    current = asked(np.ones((12, 6)), np.arange(6))  # asked at the newest frame: nothing to shade
    now = render.attention_heatmap(chunk_event(), TIMES, query="question", question=current)
    assert not now.layout.shapes and tuple(now.layout.xaxis.range) == (-0.25, 2.75)


@pytest.mark.parametrize("question, hint", [
    (None, "No question asked on this stream yet"),
    (QuestionEvent("what ?", "x", 0.0, 0.0, 1, 6), "was not recorded"),
])
def test_the_question_view_never_falls_back_to_a_pseudo_query_map(question, hint):
    fig = render.attention_heatmap(chunk_event(), TIMES, query="question", question=question)
    assert not fig.data and hint in fig.layout.annotations[0].text
    assert "pseudo-query" not in fig.layout.title.text


# where the map's cell (layer 0, frame 2) stands: its attention, tokens kept after the chunk, how it is drawn
EVICTION_CASES = [
    ("chunk", 0.0, 0, False, "evicted: not in this layer's cache"),
    ("chunk", 0.01, 0, True, "evicted by this chunk, after this look"),  # looked at, then dropped
    ("chunk", 0.01, 16, True, "attention 1.00e-02"),
    ("chunk", 1e-9, 16, True, "below the colour floor"),  # held but barely looked at: the floor colour
    ("question", 0.0, 16, False, "evicted: not in this layer's cache"),
    ("question", 0.01, 16, True, "attention 1.00e-02"),
]


@pytest.mark.parametrize("view, attention, kept, drawn, hover", EVICTION_CASES)
def test_attention_heatmap_draws_frames_a_layer_does_not_hold_as_missing(view, attention, kept, drawn, hover):
    event = chunk_event()
    event.kept[0, 2] = kept
    attn = np.full((12, 6), 0.1)
    attn[0, 2] = attention
    event.attention = {"global": attn}
    question = asked(attn, np.arange(6)) if view == "question" else None
    fig = render.attention_heatmap(event, TIMES, query=view, question=question)
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)
    assert np.isfinite(z[0, 2]) == drawn and np.isfinite(np.delete(z.ravel(), 2)).all()
    assert hover in heat.text[0][2] and heat.hoverongaps
    colours = drawn_colours(heat)
    if not drawn:  # not the colour of the lowest attention: not drawn at all, and the legend says so
        assert np.isnan(colours[0, 2]).all()
        assert render.EVICTED in [t.name for t in fig.data[1:]] and fig.layout.showlegend


def test_a_frame_no_layer_holds_is_a_blank_of_its_own_width_not_its_neighbours():
    event = chunk_event()
    event.frame_ids = np.array([0, 1, 2, 3, 5, 6])  # frame 4 was evicted from every layer
    times = np.arange(7) * 0.5
    for heat in (render.attention_heatmap(event, times, "global").data[0], render.occupancy_map(event, times).data[1]):
        z = np.asarray(heat.z, dtype=float)
        assert z.shape == (12, 7) and np.isnan(z[:, 4]).all()
        np.testing.assert_allclose(heat.x[4:6], [1.75, 2.25])  # the gap spans frame 4's own half second
        assert "t = 2.0 s (frame 4)" in heat.text[0][4] and "evicted from every layer" in heat.text[0][4]
        assert "t = 2.5 s (frame 5)" in heat.text[0][5]


@pytest.mark.parametrize("frame_ids, times, edges, sources, unit, span", [
    ([0, 1, 2], [0.0, 0.5, 1.0], [-0.25, 0.25, 0.75, 1.25], [0, 1, 2], "video time (s)", "0.0–1.0 s"),
    ([2, 3], [0.0, 0.5, 1.0, 1.5], [-0.25, 0.75, 1.25, 1.75], [-1, 0, 1], "video time (s)", "1.0–1.5 s"),  # fifo
    ([3, 0], [0.0, 1.0, 2.0, 3.0], [-0.5, 0.5, 2.5, 3.5], [1, -1, 0], "video time (s)", "0.0–3.0 s"),  # unsorted
    ([0, 2], [], [-0.5, 0.5, 1.5, 2.5], [0, -1, 1], "frame", "frames 0–2"),  # no times: frame numbers
    ([0, 1], [1.0, 1.0], [-0.5, 0.5, 1.5], [0, 1], "frame", "frames 0–1"),  # times that do not increase
    ([0], [4.0], [3.5, 4.5], [0], "video time (s)", "4.0–4.0 s"),
])
def test_frame_columns_put_every_frame_of_the_stream_on_one_axis(frame_ids, times, edges, sources, unit, span):
    cols = render.frame_columns(np.array(frame_ids), times)
    np.testing.assert_allclose(cols.edges, edges)
    assert cols.source.tolist() == sources and cols.unit == unit and cols.span(frame_ids) == span


TIER_TABLE = [  # tiers of the map's layers; the tier whose full frame is checked
    (TIERS, "shallow"),
    (TIERS, "middle"),
    (TIERS, "deep"),
    (["all"] * 4, "all"),
    (["shallow"] * 2 + ["deep"] * 2, "shallow"),
]


@pytest.mark.parametrize("tiers, tier", TIER_TABLE)
def test_a_fully_kept_frame_takes_its_tiers_darkest_colour_never_a_hole(tiers, tier):
    """16 video tokens + the chunk's newline = 17, the most a frame holds: the tier's own colour
    (the legend's), not the next tier's near-white."""
    kept = np.tile(np.arange(18), (len(tiers), 1))  # every count 0..17 in every layer
    heat = render.occupancy_map(occupancy_event(kept, tiers), np.arange(18) * 0.5).data[1]
    colours = drawn_colours(heat)
    for layer in [i for i, t in enumerate(tiers) if t == tier]:
        np.testing.assert_allclose(colours[layer, 17], rgb(render.TIER_COLOURS[tier]), atol=0.5)
        assert "17 tokens kept" in heat.text[layer][17]


def test_tier_colour_ranges_do_not_overlap_and_no_kept_count_is_drawn_blank():
    tiers = ["shallow"] * 2 + ["middle"] * 2 + ["deep"] * 2 + ["all"] * 2
    kept = np.tile(np.arange(18), (len(tiers), 1))
    heat = render.occupancy_map(occupancy_event(kept, tiers), np.arange(18) * 0.5).data[1]
    colours = drawn_colours(heat)  # (L, 18, 3)
    by_tier = {t: colours[[i for i, x in enumerate(tiers) if x == t], 1:].reshape(-1, 3) for t in set(tiers)}
    white = np.array([255.0, 255.0, 255.0])
    for tier, drawn in by_tier.items():
        assert np.isfinite(drawn).all()  # every count >= 1 is drawn
        assert (np.linalg.norm(drawn - white, axis=1) > 40).all()  # ... visibly, not near-white
        assert all(abs(hue(c) - hue(rgb(render.TIER_COLOURS[tier]))) < 2 for c in drawn)  # in its tier's hue
        others = np.concatenate([d for t, d in by_tier.items() if t != tier])
        nearest = np.linalg.norm(drawn[:, None] - others[None], axis=2).min()
        assert nearest > 30, f"{tier} comes within {nearest:.0f} of another tier's colours"
        lightness = drawn.sum(1).reshape(-1, 17)
        assert (np.diff(lightness, axis=1) < 0).all()  # more tokens kept, darker
    assert np.isnan(colours[:, 0]).all()  # 0 kept: not drawn (the white background shows)


def test_occupancy_map_colours_rows_by_tier_and_leaves_evicted_frames_blank():
    event = chunk_event()
    fig = render.occupancy_map(event, TIMES)
    summary, heat = fig.data[0], fig.data[1]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (12, 6)
    assert np.isnan(z[:, 0]).all()  # frame 0 evicted: blank in every layer
    assert np.isnan(z[event.kept == 0]).all() and not np.isnan(z[event.kept > 0]).any()
    for layer in range(12):
        for j in range(6):
            count = event.kept[layer, j]
            expect = f"{count} tokens kept" if count else "evicted: 0 tokens kept"
            assert expect in heat.text[layer][j] and f"layer {layer} ({TIERS[layer]})" in heat.text[layer][j]
    assert heat.hoverongaps
    legend = {t.name: t.marker.color for t in fig.data[2:]}
    assert legend == {**{t: render.TIER_COLOURS[t] for t in ("shallow", "middle", "deep")}, render.EVICTED: "white"}
    assert list(summary.x) == ["Σ"] and np.isnan(np.asarray(summary.z, dtype=float)[:8]).all()
    title = heading(fig)
    assert "hermes, budget 64" in title and "after chunk 3 (ending at 2.5 s)" in title  # as the status counts
    assert "frames kept: 0.5–2.5 s" in title  # frame 0 is evicted from every layer
    assert f"darkest = {event.kept.max()} tokens" in title


def test_occupancy_map_of_a_single_tier_policy_uses_one_colour():
    fig = render.occupancy_map(chunk_event(tiers=["all"] * 12), TIMES)
    assert [t.name for t in fig.data[2:]] == ["all", render.EVICTED]


def fifo(event: ChunkEvent) -> ChunkEvent:
    """The same chunk as another policy would leave it (for the compare-mode panels)."""
    from dataclasses import replace

    return replace(event, policy="fifo", tiers=["all"] * len(event.tiers), kv_bytes=event.kv_bytes // 2,
                   max_position=event.max_position - 10, cache_lengths=event.cache_lengths // 2)


def axes_of(trace) -> tuple[str, str]:
    return trace.xaxis or "x", trace.yaxis or "y"


def test_memory_figure_compares_kv_now_with_a_full_cache_and_gives_positions_their_own_plot():
    events = [chunk_event(chunk=i) for i in range(3)]
    full = [5000, 9000, 13000]
    fig = render.memory_figure(events, full)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["KV now"].y, np.array([1000, 2000, 3000]) / 2**20)
    np.testing.assert_allclose(by_name["full cache (no eviction)"].y, np.array(full) / 2**20)
    assert list(by_name["max position"].y) == [100, 200, 300]
    assert len(by_name["tokens"].x) == 12
    # the max-position line on a plot of its own: it can never hide under the full-cache line
    assert axes_of(by_name["max position"]) != axes_of(by_name["full cache (no eviction)"])
    assert len({axes_of(t) for t in fig.data}) == 3 and not any(t.yaxis == "y2" and t.xaxis == "x" for t in fig.data)


def test_latency_figure_plots_ttft_in_ms_answer_speed_and_ingest_speed_each_on_its_own_plot():
    questions = [QuestionEvent("q1", "a", 0.012, 0.03, 3, 10), QuestionEvent("q2", "b", 0.008, 0.02, 2, 20)]
    fig = render.latency_figure([chunk_event()], questions)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["TTFT (ms)"].y, [12.0, 8.0])
    np.testing.assert_allclose(by_name["tokens/s"].y, [100.0, 100.0])
    np.testing.assert_allclose(by_name["frames/s"].y, [40.0])
    assert len({axes_of(t) for t in fig.data}) == 3


@pytest.mark.parametrize("draw", [
    lambda a, b: render.memory_figure(a, [1, 2], compared=b),
    lambda a, b: render.latency_figure(a, [QuestionEvent("q", "x", 0.01, 0.02, 2, 6)], b,
                                       [QuestionEvent("q", "y", 0.02, 0.03, 2, 6)]),
])
def test_compare_mode_draws_both_policies_in_the_memory_and_latency_panels_named_and_coloured(draw):
    a = [chunk_event(chunk=i) for i in range(2)]
    fig = draw(a, [fifo(e) for e in a])
    names = [t.name for t in fig.data]
    for policy, colour in zip(("hermes", "fifo"), render.LANE_COLOURS, strict=True):
        mine = [t for t in fig.data if t.name and t.name.endswith(f" · {policy}")]
        assert len(mine) >= 3, names  # one trace per plot, each named for its policy
        assert all(colour in t.to_json() for t in mine)  # in its policy's colour
    lines = {t.name: t.line for t in fig.data if isinstance(t, go.Scatter) and "lines" in t.mode and " · " in t.name}
    for name, line in lines.items():  # equal values (as both KV lines before eviction starts) still show both
        assert (line.dash, line.width) == (("dot", 1.5) if name.endswith(" · fifo") else (None, 3)), name
    assert fig.layout.showlegend is not False


def test_a_panels_titles_and_legend_have_rows_of_their_own():
    """Top down: the title's line, the subtitle hanging under it, a row for the legend above the
    plot (anchored on the plot's top edge) or the subplot titles, then the plot; in pixels, as
    plotly.js places them (the browser test checks the drawn boxes)."""
    def title_line(fig: go.Figure) -> tuple[float, float]:
        """(top, bottom) px from the figure's top of the title's own line (plotly anchors a
        title by its line; a subtitle hangs below it)."""
        title = fig.layout.title
        assert (title.yref, title.yanchor) == ("container", "bottom")
        bottom = fig.layout.height * (1 - title.y)
        return bottom - 16, bottom  # a 14 px font's line

    for fig in (render.occupancy_map(chunk_event(), TIMES), render.attention_heatmap(chunk_event(), TIMES),
                render.keep_diff(chunk_event(), fifo(chunk_event()), TIMES)):
        top, bottom = title_line(fig)
        legend = fig.layout.legend
        assert (legend.y, legend.yanchor, legend.orientation) == (1.0, "bottom", "h") and fig.layout.title.subtitle.text
        assert fig.layout.margin.t - bottom == pytest.approx(render.SUBTITLE_ROW + render.LEGEND_ROW)
        assert top >= 8  # inside the figure, not cut at its top edge
    for fig in (render.memory_figure([chunk_event()], [1]), render.latency_figure([chunk_event()], []),
                render.empty_figure("Memory", "No chunks yet."), render.study_figure(None)):
        top, bottom = title_line(fig)
        assert fig.layout.margin.t - bottom == pytest.approx(render.LEGEND_ROW) and top >= 8  # subplot titles' row
        assert not fig.data or (fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top")  # under the plots


def test_the_policies_maps_share_the_streams_full_time_axis():
    """hermes keeps frames from 0 s, fifo only the newest: both maps still span the whole stream."""
    a = chunk_event()
    b = fifo(chunk_event())
    b.frame_ids, b.kept = np.array([4, 5]), a.kept[:, 4:]
    b.attention = {name: attn[:, 4:] for name, attn in a.attention.items()}
    ranges = []
    for fig in (render.attention_heatmap(a, TIMES), render.attention_heatmap(b, TIMES),
                render.occupancy_map(a, TIMES), render.occupancy_map(b, TIMES), render.keep_diff(a, b, TIMES)):
        heat = next(t for t in fig.data if isinstance(t, go.Heatmap) and list(t.x) != ["Σ"])
        ranges.append(tuple(fig.layout["xaxis" + (heat.xaxis or "x")[1:]].range))
    assert set(ranges) == {(-0.25, 2.75)}, ranges  # frame 0 (at 0 s) to frame 5 (at 2.5 s), half a frame each side


def test_every_panel_has_a_how_to_read_text():
    assert set(render.READ_ME) == {"attention", "occupancy", "diff", "memory", "latency", "study"}
    assert all(len(text) > 80 for text in render.READ_ME.values())


def test_memory_figure_marks_re_index_events_where_positions_drop():
    events = [chunk_event(chunk=i) for i in range(4)]
    events[2].max_position = 50  # compacted after chunk 2
    by_name = {t.name: t for t in render.memory_figure(events, [1, 2, 3, 4]).data}
    assert list(by_name["re-index"].y) == [50]
    assert "re-index" not in {t.name for t in render.memory_figure(events[:2], [1, 2]).data}


def test_study_figure_draws_layers_by_frames_back_on_a_log_scale():
    from hermes.studies.mechanistic import Study, distance_edges

    heat = np.full((4, 8), 1e-3)
    heat[0, 0] = 0.5  # shallow layer 0 looks at the newest frames
    study = Study(heatmap=heat, edges=distance_edges(128, 8), video_mass=heat.sum(1), recent_share=np.full(4, 0.2),
                  entropy_bits=np.ones(4), anchor_frames=np.ones(4), tokens_per_frame=16, n_questions=3,
                  tiers=["shallow", "middle", "middle", "deep"])
    fig = render.study_figure(study)
    trace = fig.data[0]
    assert np.asarray(trace.z).shape == (4, 8)
    assert np.asarray(trace.x).tolist() == [0.5 + i for i in range(8)]  # bin centres, frames back
    assert np.asarray(trace.z)[0, 0] == pytest.approx(np.log10(0.5))
    assert "3 questions" in fig.layout.title.text and "layer 0 (shallow)" in trace.text[0][0]
    empty = render.study_figure(None)
    assert not empty.data and "press Run" in empty.layout.annotations[0].text


HEADER = {"stream": "shapestream-901 (64.0 s)", "model": "hermes-tiny on cpu in float32", "policy": "hermes",
          "settings": "budget 32 frames — <b>not html</b>", "exported": "2026-01-01T12:00:00+00:00"}


@pytest.mark.parametrize("figures, drawn", [
    ([render.occupancy_map(chunk_event(), TIMES), render.empty_figure("Compared with", "Pick a second policy")], 1),
    ([render.attention_heatmap(chunk_event(), TIMES, "global"), render.occupancy_map(chunk_event(), TIMES)], 2),
    ([render.empty_figure("Compared with", "Pick a second policy")], 0),
])
def test_figures_export_has_a_charset_a_header_and_only_real_figures(figures, drawn):
    page = render.figures_html(figures, HEADER)
    head = page[:page.index("</head>")]
    assert '<meta charset="utf-8">' in head
    assert "<title>HERMES Studio figures — shapestream-901 (64.0 s)</title>" in head
    assert all(f"<th>{label}</th>" in page for label in HEADER)
    assert "budget 32 frames — &lt;b&gt;not html&lt;/b&gt;" in page  # header text is escaped, not markup
    assert page.count('class="plotly-graph-div"') == drawn and "Pick a second policy" not in page
    assert page.count("<script type=\"text/javascript\">/**") <= 1  # plotly.js embedded at most once
    assert ("No figures" in page) == (drawn == 0)


@pytest.mark.parametrize("value, plain", [
    ({"playhead_s": float("inf"), "behind_s": float("-inf"), "t": float("nan")},
     {"playhead_s": None, "behind_s": None, "t": None}),
    ([1.5, np.float32("nan"), np.int64(3), np.float64(2.0)], [1.5, None, 3, 2.0]),
    ({"kept": np.array([[1, 2], [3, 4]]), "attention": np.array([0.5, np.inf])}, {"kept": [[1, 2], [3, 4]],
                                                                                  "attention": [0.5, None]}),
    ({"chat": [{"time": np.nan, "answers": {"hermes": "—"}}], 1: (True, None)},
     {"chat": [{"time": None, "answers": {"hermes": "—"}}], "1": [True, None]}),
])
def test_strict_json_maps_non_finite_numbers_to_null(value, plain):
    from app.session import strict_json

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(strict_json(value), parse_constant=refuse) == plain


def test_session_export_writes_a_headed_page_and_strict_json(tmp_path):
    from app.session import Session
    from app.settings import Settings

    session = Session(Settings())
    session.load_example("shapestream-901")
    session.advance(1e6)  # the furthest playhead accepted (an infinite one is refused)
    last = session.lanes[0].events[-1]
    figures = [render.occupancy_map(last, session.times), render.empty_figure("Compared with", "Pick a second policy")]
    trace_path, figures_path = session.export(tmp_path, figures)
    assert (trace_path.name, figures_path.name) == ("hermes-trace.json", "hermes-figures.html")

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    trace = json.loads(trace_path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert trace["status"]["playhead_s"] == 1e6 and trace["lanes"][0]["chunks"][-1]["kept"] == last.kept.tolist()
    header = trace["header"]
    assert header["stream"] == "shapestream-901 (64.0 s)" and header["policy"] == "hermes"
    assert header["model"].startswith(session.controls.model) and "budget 32 frames" in header["settings"]
    assert "shallow_ratio" in header["settings"] and f"frames up to {last.t_end:.1f} s" in header["memory"]
    assert header["exported"][:4].isdigit()
    page = figures_path.read_bytes().decode("utf-8")  # the bytes are UTF-8, as the page declares
    assert '<meta charset="utf-8">' in page and "HERMES Studio figures — shapestream-901" in page
    assert all(f"<td>{text}</td>" in page for text in header.values() if "<" not in text and "&" not in text)
    assert page.count('class="plotly-graph-div"') == 1 and "Pick a second policy" not in page


# ---- compare mode: kept by A, not by B ----------------------------------------------------------
DIFF_CASES = [  # tokens A keeps, tokens B keeps (of one layer x frame cell) -> the class drawn
    (17, 17, "both"),
    (1, 16, "both"),
    (17, 0, "only A"),
    (0, 3, "only B"),
    (0, 0, "neither"),
]


@pytest.mark.parametrize("a_keeps, b_keeps, expect", DIFF_CASES)
def test_keep_classes_say_which_policy_keeps_each_layer_and_frame(a_keeps, b_keeps, expect):
    a, b = chunk_event(), fifo(chunk_event())
    a.kept, b.kept = np.full((12, 6), 5), np.full((12, 6), 5)
    a.kept[3, 2], b.kept[3, 2] = a_keeps, b_keeps
    ids, classes, kept_a, kept_b = render.keep_classes(a, b)
    assert ids.tolist() == list(range(6)) and render.DIFF_CLASSES[classes[3, 2]] == expect
    assert (kept_a[3, 2], kept_b[3, 2]) == (a_keeps, b_keeps) and (np.delete(classes.ravel(), 3 * 6 + 2) == 3).all()
    fig = render.keep_diff(a, b, TIMES)
    heat = fig.data[0]
    drawn = np.asarray(heat.z, dtype=float)[3, 2]
    names = {"both": "both", "only A": "only hermes", "only B": "only fifo", "neither": "neither"}
    assert names[expect] in heat.text[3][2] and f"hermes {a_keeps} tokens · fifo {b_keeps} tokens" in heat.text[3][2]
    colour = drawn_colours(heat)[3, 2]
    want = {"both": render.BOTH_KEPT, "only A": render.LANE_COLOURS[0], "only B": render.LANE_COLOURS[1]}
    if expect == "neither":
        assert np.isnan(drawn) and np.isnan(colour).all()  # blank, as an evicted cell is everywhere
    else:
        np.testing.assert_allclose(colour, rgb(want[expect]), atol=0.5)  # one flat colour per class
    legend = {t.name: t.marker.color for t in fig.data[1:]}
    assert legend == {"only hermes": render.LANE_COLOURS[0], "only fifo": render.LANE_COLOURS[1],
                      "both": render.BOTH_KEPT, "neither": "white"}


def test_keep_diff_puts_frames_only_one_policy_lists_on_the_union_and_counts_every_cell():
    a, b = chunk_event(), fifo(chunk_event())  # hermes lists frames 0-5; fifo only 3-5 (keeping all of them)
    a.kept = np.zeros((12, 6), int)
    a.kept[:, :4] = 16  # hermes keeps frames 0-3 in every layer
    b.frame_ids, b.kept = np.array([3, 4, 5]), np.full((12, 3), 16)
    fig = render.keep_diff(a, b, TIMES)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (12, 6)
    assert (z[:, :3] == 2).all() and (z[:, 3] == 3).all() and (z[:, 4:] == 1).all()  # only A, both, only B
    title = heading(fig)
    assert title.startswith("Kept by hermes, not by fifo<br>") and "after chunk 3 (ending at 2.5 s)" in title
    assert "cells: both 12 · only hermes 36 · only fifo 24 · neither 0" in title


@pytest.mark.parametrize("a, b, hint", [
    (None, None, "Pick a second policy"),
    (chunk_event(chunk=2), fifo(chunk_event(chunk=1)), "Not comparable: hermes is after chunk 3"),
])
def test_keep_diff_compares_only_events_of_the_same_chunk(a, b, hint):
    fig = render.keep_diff(a, b, TIMES)
    assert not fig.data and hint in fig.layout.annotations[0].text


# ---- the chat's verdicts and the running accuracy ------------------------------------------------
def entry(answers: dict[str, str], truth: str | None = "red", done: tuple[str, ...] | None = None) -> dict:
    done = tuple(answers) if done is None else done
    return {"question": "what colour is the circle now ?", "time": 8.0, "truth": truth, "truth_note": None,
            "answers": answers, "ttft_ms": {p: 10.0 for p in done}, "notes": []}


VERDICT_CASES = [  # answers, which have finished, the ground truth line
    ({"hermes": "red", "fifo": "blue"}, None, "ground truth: **red** ✓ hermes · ✗ fifo"),
    ({"hermes": "Red.", "fifo": "red it is"}, None, "ground truth: **red** ✓ hermes · ✓ fifo"),
    ({"hermes": "reddish"}, None, "ground truth: **red** ✗ hermes"),
    ({"hermes": "red", "fifo": "bl"}, ("hermes",), "ground truth: **red** ✓ hermes"),  # fifo still answering
    ({"hermes": ""}, None, "ground truth: **red** ✗ hermes"),  # an empty answer is wrong, as the study counts
]


@pytest.mark.parametrize("answers, done, line", VERDICT_CASES)
def test_each_verdict_in_the_chat_names_its_policy(answers, done, line):
    shown = render.chat_messages([entry(answers, done=done)])[1]["content"]
    assert [part for part in shown.split("\n\n") if part.startswith("ground truth")] == [line]
    from hermes.shapestream import grade

    graded = render.verdicts(entry(answers, done=done))
    assert graded == {p: grade(t, "red") for p, t in answers.items() if done is None or p in done}


def test_the_running_accuracy_line_names_each_policy_and_says_what_was_graded():
    assert "no question with a ground truth" in render.accuracy_text({"hermes": (0, 0)})
    text = render.accuracy_text({"hermes": (3, 4), "fifo": (2, 4)}, disagree=1)
    assert "4 questions with a ground truth" in text and "**hermes** 3/4 right (75%)" in text
    assert "**fifo** 2/4 right (50%)" in text and "disagree on 1 of 4" in text and "accuracy study" in text
    assert "disagree" not in render.accuracy_text({"hermes": (1, 1)}, disagree=0)


def test_the_sessions_running_accuracy_grades_each_policy_as_the_accuracy_study_does():
    from app.session import Session
    from app.settings import Controls, Settings
    from hermes.shapestream import grade

    settings = Settings()
    session = Session(settings, Controls(model=settings.models[0], policy="hermes", compare="fifo", budget_frames=4))
    session.load_example("shapestream-901")
    session.advance(16.0)
    assert session.accuracy() == ({"hermes": (0, 0), "fifo": (0, 0)}, 0)
    asked = [q for q in session.suggestions() if session.truth(q).answer is not None][:2]
    for question in asked:
        list(session.ask(question))
    *_, absent = session.ask("what colour is the cross now ?")  # not applicable now: not graded
    assert absent["truth"] is None
    scores, disagree = session.accuracy()
    entries = [e for e in session.chat if e["truth"] is not None]
    for policy in ("hermes", "fifo"):
        right = sum(grade(e["answers"][policy], e["truth"]) for e in entries)
        assert scores[policy] == (right, len(asked))
    assert disagree == sum(grade(e["answers"]["hermes"], e["truth"]) != grade(e["answers"]["fifo"], e["truth"])
                           for e in entries)
    session.configure(session.controls)  # a new stream: a new chat, nothing graded yet
    assert session.accuracy() == ({"hermes": (0, 0), "fifo": (0, 0)}, 0)

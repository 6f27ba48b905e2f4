"""The app's render functions, without a browser: shapes, axes, tier colours, log scale, empty states."""

from __future__ import annotations

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


def test_attention_heatmap_is_layer_by_frame_time_on_a_log_scale():
    event = chunk_event()
    fig = render.attention_heatmap(event, TIMES, query="global")
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (12, 6)
    np.testing.assert_allclose(z, np.log10(np.maximum(event.attention["global"], render.LOG_FLOOR)))
    np.testing.assert_allclose(heat.x, TIMES)
    assert list(heat.colorbar.ticktext)[-1] == "1e0" and "1e-4" in heat.colorbar.ticktext
    assert fig.layout.xaxis.title.text == "video time (s)" and fig.layout.yaxis.title.text == "layer"
    assert "pseudo-query: global" in fig.layout.title.text


@pytest.mark.parametrize("query, expect", [("local", "local"), ("global", "global"), ("nonexistent", "global")])
def test_attention_heatmap_picks_the_requested_pseudo_query(query, expect):
    fig = render.attention_heatmap(chunk_event(), TIMES, query=query)
    np.testing.assert_allclose(fig.data[0].z, np.log10(np.maximum(chunk_event().attention[expect], render.LOG_FLOOR)))


def test_attention_heatmap_shows_the_question_after_one_is_asked():
    q_attn = np.full((12, 3), 0.2)
    question = QuestionEvent("which shape appeared first ?", "circle", 0.01, 0.02, 2, 6,
                             frame_ids=np.array([1, 3, 5]), attention=q_attn)
    fig = render.attention_heatmap(chunk_event(), TIMES, query="question", question=question)
    assert "question: which shape appeared first ?" in fig.layout.title.text
    long = QuestionEvent("x" * 80, "", 0, 0, 0, 6, frame_ids=np.array([1]), attention=np.ones((12, 1)))
    assert len(render.attention_heatmap(None, TIMES, question=long).layout.title.text) < 70
    np.testing.assert_allclose(fig.data[0].x, TIMES[[1, 3, 5]])
    assert "attention 2.00e-01" in fig.data[0].text[0][0] and "layer 0 (shallow)" in fig.data[0].text[0][0]


def test_occupancy_map_colours_rows_by_tier_and_leaves_evicted_frames_as_holes():
    event = chunk_event()
    fig = render.occupancy_map(event, TIMES)
    summary, heat = fig.data[0], fig.data[1]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (12, 6)
    assert np.isnan(z[:, 0]).all()  # frame 0 evicted: a hole in every layer
    assert np.isnan(z[event.kept == 0]).all() and not np.isnan(z[event.kept > 0]).any()
    bands = {"shallow": (0, 1 / 3), "middle": (1 / 3, 2 / 3), "deep": (2 / 3, 1)}
    for layer, tier in enumerate(TIERS):  # each layer's cells sit in its tier's colour ramp
        lo, hi = bands[tier]
        cells = z[layer][~np.isnan(z[layer])]
        assert ((cells > lo) & (cells <= hi + 1e-9)).all()
    legend = {t.name: t.marker.color for t in fig.data[2:]}
    assert legend == {t: render.TIER_COLOURS[t] for t in ("shallow", "middle", "deep")}
    assert list(summary.x) == ["Σ"] and np.isnan(np.asarray(summary.z, dtype=float)[:8]).all()
    assert f"{event.kept[0, 1]} tokens kept" in heat.text[0][1] and "layer 0 (shallow)" in heat.text[0][1]


def test_occupancy_map_of_a_single_tier_policy_uses_one_colour():
    fig = render.occupancy_map(chunk_event(tiers=["all"] * 12), TIMES)
    assert [t.name for t in fig.data[2:]] == ["all"]


def test_memory_figure_compares_kv_now_with_a_full_cache():
    events = [chunk_event(chunk=i) for i in range(3)]
    full = [5000, 9000, 13000]
    fig = render.memory_figure(events, full)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["KV now"].y, np.array([1000, 2000, 3000]) / 2**20)
    np.testing.assert_allclose(by_name["full cache"].y, np.array(full) / 2**20)
    assert list(by_name["max position"].y) == [100, 200, 300]
    assert len(by_name["tokens"].x) == 12


def test_latency_figure_plots_ttft_in_ms_and_ingest_speed():
    questions = [QuestionEvent("q1", "a", 0.012, 0.03, 3, 10), QuestionEvent("q2", "b", 0.008, 0.02, 2, 20)]
    fig = render.latency_figure([chunk_event()], questions)
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["TTFT (ms)"].y, [12.0, 8.0])
    np.testing.assert_allclose(by_name["tokens/s"].y, [100.0, 100.0])
    np.testing.assert_allclose(by_name["frames/s"].y, [40.0])


def test_every_panel_has_a_how_to_read_text():
    assert set(render.READ_ME) == {"attention", "occupancy", "memory", "latency", "study"}
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

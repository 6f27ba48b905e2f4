"""The analysis studies: their measuring functions on hand-made cases, each script end to end
in --quick mode (shapes and invariants of what it writes), and a 2-process torchrun sweep
that must merge into the single-process table."""

from __future__ import annotations

import csv
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import ablations, common, efficiency, mechanistic
from app.study import committed, notes_of
from hermes.cache import NEWLINE, PREFIX, VIDEO
from hermes.studies.mechanistic import distance_edges, distance_profile, layer_summary
from hermes.studies.replay import replay_frames
from hermes.telemetry import pool_per_frame
from tests.conftest import make_engine, random_frames

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("accuracy", "ablations", "mechanistic", "efficiency", "soak", "bench_engine", "bench_policies",
           "bench_model", "bench_memory")


@pytest.mark.parametrize("n_video, bins, span, expected", [
    (8, 4, 8, [2, 2, 2, 2]),  # two tokens per bin, newest in bin 0
    (8, 2, 4, [2, 2]),  # tokens 4+ back fall past the last edge and are left out
    (3, 3, 6, [2, 1, 0]),  # a cache shorter than the span: edges 0, 2, 4, 6; the far bin stays empty
])
def test_distance_profile_counts_each_video_token_in_its_bin(n_video, bins, span, expected):
    kinds = np.array([PREFIX, PREFIX] + [VIDEO] * n_video + [NEWLINE])
    profile = distance_profile(np.ones(len(kinds)), kinds, distance_edges(span, bins))
    assert profile.tolist() == expected


def test_distance_profile_puts_the_newest_token_at_distance_zero():
    kinds = np.array([VIDEO] * 10)
    attention = np.zeros(10)
    attention[-1], attention[0] = 0.5, 0.25  # newest and oldest
    profile = distance_profile(attention, kinds, distance_edges(10, 5))
    assert profile.tolist() == [0.5, 0, 0, 0, 0.25]


@pytest.mark.parametrize("where, recent, entropy, anchors", [
    ("uniform", 0.1, np.log2(160), 0),  # spread evenly: no token stands out, no anchor
    ("newest", 1.0, 0.0, 1),
    ("spread", 0.1, np.log2(10), 10),  # one token in each of 10 frames, including the newest
])
def test_layer_summary_reads_recency_entropy_and_anchor_frames(where, recent, entropy, anchors):
    frames = np.repeat(np.arange(10), 16)  # 10 frames of 16 video tokens
    kinds = np.full(160, VIDEO)
    attention = np.zeros(160)
    if where == "uniform":
        attention[:] = 0.5 / 160
    elif where == "newest":
        attention[-1] = 0.5
    else:
        attention[np.arange(10) * 16 + 15] = 0.05
    mass, share, bits, distinct = layer_summary(attention, kinds, frames)
    assert mass == pytest.approx(0.5)
    assert share == pytest.approx(recent, abs=1e-9)
    assert bits == pytest.approx(entropy, abs=1e-9)
    assert distinct == anchors


def test_attend_reports_where_a_text_looks_without_changing_the_cache(backbone):
    engine = make_engine(backbone, "fifo", budget=64)
    engine.ingest(random_frames(32), np.arange(32) / 2.0)
    engine.ask("what is on the screen now ?")
    before, position = engine.cache.lengths(), engine.next_position
    seen = engine.attend("what is on the screen now ?")
    assert engine.cache.lengths() == before and engine.next_position == position
    asked = engine.questions[-1]  # the same question's telemetry, pooled per frame
    pooled = np.stack([pool_per_frame(a, f, asked.frame_ids) for a, f in zip(seen.attention, seen.frames, strict=True)])
    np.testing.assert_allclose(pooled, asked.attention, rtol=1e-5, atol=1e-7)
    assert [len(a) for a in seen.attention] == before == [len(k) for k in seen.kinds]
    for a, k in zip(seen.attention, seen.kinds, strict=True):
        assert 0 < a.sum() <= 1 + 1e-5 and (a >= 0).all()
        assert ((k == VIDEO) | (k == NEWLINE)).sum() == 64  # fifo kept its budget


def test_replay_ingests_up_to_each_question_and_no_further(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4)
    timed = [(2.2, "b"), (-1.0, "a"), (2.0, "c"), (4.5, "d")]  # frames every 0.5 s from 0 to 4.5
    seen = [(item, engine.frames_seen, engine.pending_frames)
            for item in common.replay(engine, random_frames(10), np.arange(10) / 2.0, timed)]
    assert seen == [("a", 0, 0), ("c", 5, 0), ("b", 5, 0), ("d", 10, 0)]  # in time order, partial chunks flushed


def test_replay_frames_takes_frames_as_they_come_and_reads_none_after_the_last_item(backbone):
    engine = make_engine(backbone, "full", chunk_frames=4)
    frames, times, read = random_frames(20), np.arange(20) / 2.0, []

    def decoded():  # a decoder: frames one at a time
        for frame, t in zip(frames, times, strict=True):
            read.append(float(t))
            yield frame, t

    timed = [(2.2, "b"), (-1.0, "a"), (2.0, "c"), (4.5, "d")]
    seen = [(item, engine.frames_seen, engine.pending_frames, len(read))
            for item in replay_frames(engine, decoded(), timed, batch=3)]
    # as replay does, and each item as soon as the first frame after it arrives
    assert seen == [("a", 0, 0, 1), ("c", 5, 0, 6), ("b", 5, 0, 6), ("d", 10, 0, 11)]
    assert read == list(times[:11])  # the frame at 5.0 s said "d" was due; none after it was decoded


def test_result_names_tables_and_csv():
    assert common.result_name("accuracy", "hermes-tiny", False, "cpu") == "accuracy"
    assert common.result_name("accuracy", "/models/My Model", True, "cuda:1") == "accuracy-My-Model-cuda_quick"
    assert common.table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]


@pytest.mark.parametrize("cpuinfo, expected", [
    ("model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n", "AMD EPYC 7B13, AVX2"),
    ("model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f avx512_vnni\n",
     "Intel(R) Xeon(R) Processor, AVX-512"),
    ("model name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n",
     "Intel(R) Xeon(R) Platinum, AMX"),
    ("model name\t: Some CPU\nflags\t\t: fpu sse\n", "Some CPU"),
])
def test_a_result_names_the_cpu_and_its_widest_vector_units(cpuinfo, expected):
    """Timings differ 2-3x between the project's machines: a result header must tell them apart."""
    assert common.cpu_name(cpuinfo) == expected
    assert common.where("cpu").startswith(f"{platform.machine()} CPU (")


def test_csv_from_dicts_or_rows_under_a_head(tmp_path):
    common.write_csv(tmp_path / "d.csv", [{"a": 1, "b": 2}])
    common.write_csv(tmp_path / "l.csv", [[1, 2]], ["a", "b"])
    assert (tmp_path / "d.csv").read_text() == (tmp_path / "l.csv").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_runs_as_a_module_and_says_so(name, capsys):
    module = importlib.import_module(f"analysis.{name}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0 and "--out" in capsys.readouterr().out
    assert f"python -m analysis.{name}" in module.__doc__
    assert "sys.path" not in Path(module.__file__).read_text()


def test_mechanistic_quick_writes_a_heatmap_whose_rows_are_attention_shares(tmp_path):
    mechanistic.main(["--quick", "--questions", "6", "--out", str(tmp_path), "--budget", "256", "--bins", "8"])
    data = np.load(tmp_path / "mechanistic_quick.npz")
    assert data["heatmap"].shape == (12, 8) and data["profiles"].shape == (6, 12, 8)
    assert data["edges"].tolist() == [0, 32, 64, 96, 128, 160, 192, 224, 256]
    assert (data["heatmap"] >= 0).all() and (data["heatmap"].sum(1) <= 1 + 1e-6).all()
    assert np.allclose(data["heatmap"].sum(1), data["video_mass"])
    assert ((data["recent_share"] > 0) & (data["recent_share"] <= 1)).all()
    rows = list(csv.DictReader((tmp_path / "mechanistic_quick.csv").open()))
    assert [r["tier"] for r in rows] == ["shallow"] + ["middle"] * 7 + ["deep"] * 4
    md = (tmp_path / "mechanistic_quick.md").read_text()
    assert "6 questions" in md and "shallow layer 0" in md
    assert (tmp_path / "mechanistic_quick.png").stat().st_size > 10_000


def test_mechanistic_reads_any_local_model_directory_beside_the_committed_results(backbone, tmp_path):
    model_dir = tmp_path / "my-model"
    backbone.model.save_pretrained(model_dir)
    backbone.tokenizer.save_pretrained(model_dir)
    mechanistic.main(["--quick", "--model", str(model_dir), "--questions", "4", "--bins", "4", "--budget", "128",
                      "--out", str(tmp_path)])
    data = np.load(tmp_path / "mechanistic-my-model_quick.npz")  # not mechanistic_quick: that is hermes-tiny's
    assert data["heatmap"].shape == (12, 4) and data["profiles"].shape[0] == 4
    assert str(model_dir) in (tmp_path / "mechanistic-my-model_quick.md").read_text()


def test_efficiency_quick_measures_every_method_and_prints_the_headline(tmp_path, capsys):
    efficiency.main(["--quick", "--model", "random-tiny", "--frames", "16,64", "--budget", "256", "--repeats", "1",
                     "--out", str(tmp_path)])
    heads = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("ttft_ratio_1024_16", "speedup_vs_reprefill_256", "speedup_vs_retrieval_256", "ttft_over_floor"):
        assert heads[key] > 0, key
    assert heads["kv_growth_128_1024"] is None or heads["kv_growth_128_1024"] >= -0.01
    rows = list(csv.DictReader((tmp_path / "efficiency-random-tiny_quick.csv").open()))
    assert {r["method"] for r in rows} == set(efficiency.METHODS)
    by = {(r["method"], int(r["frames"])): r for r in rows}
    assert float(by["full", 64]["kv_mib"]) > 3 * float(by["full", 16]["kv_mib"])  # full grows with the stream
    assert int(by["hermes", 64]["cache_tokens"]) <= 256 + 8  # hermes stays at its budget (+ prefix, summary)
    assert int(by["retrieval", 64]["cache_tokens"]) <= 256
    assert float(by["reprefill", 64]["ttft_ms"]) > float(by["hermes", 64]["ttft_ms"])
    assert (tmp_path / "efficiency-random-tiny_quick.png").exists()


def test_ablations_quick_reports_every_variant(tmp_path):
    ablations.main(["--quick", "--streams", "1", "--out", str(tmp_path), "--model", "random-tiny"])
    rows = list(csv.DictReader((tmp_path / "ablations-random-tiny_quick.csv").open()))
    assert [r["variant"] for r in rows] == [name for name, *_ in ablations.VARIANTS]
    assert all(0 <= float(r["all"]) <= 1 and int(r["n"]) > 10 for r in rows)
    assert "± " in (tmp_path / "ablations-random-tiny_quick.md").read_text()
    png = tmp_path / "ablations-random-tiny_quick.png"
    png.unlink()
    ablations.main(["--quick", "--replot", "--out", str(tmp_path), "--model", "random-tiny"])  # from the CSV alone
    assert png.stat().st_size > 10_000


@pytest.mark.timeout(300)
def test_a_two_process_torchrun_sweep_merges_into_the_single_process_table(tmp_path):
    args = ["-m", "analysis.accuracy", "--quick", "--streams", "2", "--model", "random-tiny"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", *args, "--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-2000:]
    one_csv = (tmp_path / "one" / "accuracy-random-tiny_quick.csv").read_text()
    assert one_csv == (tmp_path / "two" / "accuracy-random-tiny_quick.csv").read_text()
    assert one_csv.count("\n") == 4  # header + full, fifo, hermes


def test_study_tab_lists_committed_figures_and_says_how_to_make_missing_ones(tmp_path):
    (tmp_path / "mechanistic.png").write_bytes(b"png")
    (tmp_path / "mechanistic.md").write_text("# Title\n\n![heatmap](mechanistic.png)\n\nShallow layers look back.\n")
    figures = {f.name: f for f in committed(tmp_path)}
    assert figures["mechanistic"].png == tmp_path / "mechanistic.png"
    assert figures["mechanistic"].notes == "Shallow layers look back."
    assert figures["efficiency"].png is None and "python -m analysis.efficiency" in figures["efficiency"].notes
    assert notes_of("# t\nbody") == "body"
    (tmp_path / "mechanistic-hermes-smol.png").write_bytes(b"png")  # another model's: beside the first's
    (tmp_path / "mechanistic-hermes-smol.md").write_text("# Title\n\nDeep layers look back.\n")
    both = [(f.name, f.model, f.notes) for f in committed(tmp_path, models=("hermes-tiny", "hermes-smol"))]
    assert both[:2] == [("mechanistic", "hermes-tiny", "Shallow layers look back."),
                        ("mechanistic", "hermes-smol", "Deep layers look back.")]
    assert [m for name, m, _ in both if name == "efficiency"] == ["hermes-tiny"]  # its missing one is left out


def test_gpu_check_quick_reports_ingest_ttft_per_budget_and_every_method(tmp_path):
    from analysis import gpu_check

    gpu_check.main(["--quick", "--out", str(tmp_path), "--device", "cpu"])
    md = (tmp_path / "gpu_check-random-tiny_quick.md").read_text()
    assert "frames/s" in md and "float32" in md
    for budget in ("| 64 |", "| 128 |", "| 256 |"):
        assert budget in md
    rows = (tmp_path / "gpu_check-random-tiny_quick.csv").read_text().splitlines()[1:]
    methods = {row.split(",")[0] for row in rows}
    assert methods == {"hermes", "full", "reprefill", "retrieval", "floor"}
    assert all(int(row.split(",")[1]) <= 32 for row in rows)  # no checkpoint past the stream


def test_bench_dtype_quick_compares_speed_and_logits_with_fp32(tmp_path):
    from analysis import bench_dtype

    bench_dtype.main(["--quick", "--out", str(tmp_path), "--device", "cpu"])
    md = (tmp_path / "bench_dtype-random-tiny_quick.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| float32") or line.startswith("| bfloat16")]
    assert len(rows) == 2
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells[0][2] == "1.00x" and cells[0][5:] == ["0.00e+00", "yes"]  # fp32 against itself
    assert all(float(c[3]) > 0 and float(c[4]) > 0 for c in cells)  # TTFT and a decode step, measured per dtype


@pytest.mark.timeout(900)
def test_bench_memory_quick_frees_sessions_bounds_the_study_and_keeps_few_exports(tmp_path):
    from analysis import bench_memory

    bench_memory.main(["--quick", "--out", str(tmp_path)])
    rows = {r["measurement"]: r for r in csv.DictReader((tmp_path / "bench_memory_quick.csv").open())}
    assert len(rows) == 9 and all(r["held"] in ("yes", "-") for r in rows.values()), rows
    exported = rows["export files on disk after 5 exports by one session"]
    assert int(float(exported["value"])) == 6  # the newest 3 of 5, two files each
    assert int(float(rows["export files on disk after that session is freed"]["value"])) == 0
    study = next(r for m, r in rows.items() if m.startswith("the study's peak RSS growth"))
    assert "(240 frames at 2 fps)" in study["measurement"] and float(study["value"]) <= 500
    assert float(rows["the same study alone in a fresh process: peak RSS growth"]["value"]) <= 500
    md = (tmp_path / "bench_memory_quick.md").read_text()
    assert "python -m analysis.bench_memory --quick" in md and "| 2 | 2 |" in md  # a row per wave

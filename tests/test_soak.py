"""The soak script in its quick form: memory stays flat, positions get re-indexed, answers go on."""

from __future__ import annotations

import csv
import json

import pytest

from analysis import soak


@pytest.mark.timeout(300)
def test_quick_soak_reindexes_with_flat_kv_and_bounded_rss(tmp_path, capsys):
    summary = soak.main(["--quick", "--out", str(tmp_path)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert summary["reindex_events"] >= 1
    assert summary["kv_bytes_min_after_warmup"] == summary["kv_bytes_max_after_warmup"] > 0
    assert summary["rss_growth_after_warmup"] <= 0.05
    assert summary["questions_after_reindex"] > 0 and summary["ttft_ms_median"] > 0
    rows = list(csv.DictReader((tmp_path / "soak.csv").open()))
    assert len(rows) == summary["chunks"]
    positions = [int(r["max_position"]) for r in rows]
    assert max(positions) <= 2048 + 2 * 257  # re-indexed before running past the threshold
    assert (tmp_path / "soak.png").stat().st_size > 10_000
    assert "![memory over time]" in (tmp_path / "soak.md").read_text()

"""The short versions of benchmarks/load_test.py and benchmarks/soak.py against real `bentoml serve`
processes (the full runs are commands in the README). Figures are printed; the invariants are asserted."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import load_test  # noqa: E402
import soak  # noqa: E402

pytestmark = pytest.mark.slow


def test_load_mix_at_concurrency_1_8_32(tmp_path):
    r = load_test.run({1: 12, 8: 40, 32: 64}, batching_requests=64, overhead_requests=16, workdir=tmp_path,
                      time_limit=90)
    print("\n" + load_test.table(r))
    for level in r["levels"]:
        assert level["connection_failures"] == 0 and level["server_errors"] == 0, level
        assert level["valid_schema_ok"] == level["valid_requests"] > 0, level
        assert not level["unexpected"], level["unexpected"]
        # every bad-input kind came back with its 4xx (the mix has each at least once at 8 and 32)
        if level["concurrency"] > 1:
            assert {"400", "413", "415", "422"} <= set(level["by_status"]), level["by_status"]
    for phase in ("batching_on", "batching_off"):
        assert r[phase]["server_errors"] == 0 and r[phase]["connection_failures"] == 0
    # README figures come from the full run; on 2 shared cores the short run (64 requests, batches still
    # forming) is noisier, so the bounds here are looser than the targets (3x, 15%)
    assert r["batching_speedup"] >= 1.5, r["batching_speedup"]
    assert r["overhead_batching_off"] <= 0.30, r["overhead_batching_off"]
    assert r["peak_rss_mb"]["total"] < 2000


def test_service_against_the_model_in_process(tmp_path):
    # the GPU benchmark's phase (--compare), here on the CPU with the tiny model: the same images through
    # /analyze with c clients and in-process as batches of c; each row's overhead is the ratio of the two
    r = load_test.compare({1: 6, 8: 24}, tmp_path, time_limit=90)
    print("\n" + load_test.compare_table(r))
    one, eight = r["compare"]
    for row in (one, eight):
        assert row["requests"] > 0 and row["service_errors"] == 0, row
        assert row["in_process_rps"] > 0
        assert row["overhead"] == pytest.approx(row["in_process_rps"] / row["service_rps"] - 1, abs=0.01)
    assert eight["service_rps"] > one["service_rps"]  # adaptive batching: 8 clients share forward passes
    assert one["service_mean_batch"] == 1 and 1 < eight["service_mean_batch"] <= 8


def test_soak_at_a_fixed_rate(tmp_path):
    r = soak.soak(20, 4.0, tmp_path)
    assert r["requests"] == r["sent"] >= 75
    assert r["error_rate"] < 0.001, r["by_status"]
    assert r["rss_growth_after_warmup_mb"] <= 50, r["samples"]

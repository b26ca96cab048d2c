"""Atomic writers: a killed writer's temps (named with its pid) are swept by the next write; live ones stay."""

import os
import subprocess
import sys

import pytest

from safetyvlm.io import atomic_output_dir, atomic_write_text, remove_stale_temps


@pytest.fixture()
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_write_sweeps_a_dead_writers_temps_and_keeps_a_live_ones(tmp_path, dead_pid):
    out = tmp_path / "dataset"
    stale_dir = tmp_path / f".dataset.tmp-{dead_pid}-abc123"
    (stale_dir / "part").mkdir(parents=True)
    stale_old = tmp_path / f".dataset.old-{dead_pid}"
    stale_old.mkdir()
    live = tmp_path / f".dataset.tmp-{os.getppid()}-xyz"  # our parent is alive: maybe mid-write
    live.mkdir()
    other = tmp_path / f".rag.tmp-{dead_pid}-abc"  # another output's temp: not this write's business
    other.mkdir()
    legacy = tmp_path / ".dataset.tmp-k2j4h5g6"  # no pid in the name: cannot tell, kept
    legacy.mkdir()

    with atomic_output_dir(out) as tmp:
        assert tmp.name.startswith(f".dataset.tmp-{os.getpid()}-")
        (tmp / "data.txt").write_text("x")

    assert (out / "data.txt").read_text() == "x"
    assert not stale_dir.exists() and not stale_old.exists()
    assert live.exists() and other.exists() and legacy.exists()
    assert remove_stale_temps(out) == []


def test_a_file_write_sweeps_its_stale_temp_file(tmp_path, dead_pid):
    stale = tmp_path / f".dataset.json.tmp-{dead_pid}-q1w2"
    stale.write_text("{half")
    atomic_write_text(tmp_path / "dataset.json", "{}")
    assert not stale.exists() and (tmp_path / "dataset.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.json"]

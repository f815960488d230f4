"""Atomic writes and manifests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from valuealign import provenance


def test_atomic_write_leaves_target_untouched_on_error(tmp_path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), provenance.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_parquet_written_twice_is_byte_identical(tmp_path) -> None:
    df = pd.DataFrame({"a": [1, 2], "b": [[0.5, 0.5], [1.0]]})
    provenance.write_parquet(df, tmp_path / "x.parquet")
    first = (tmp_path / "x.parquet").read_bytes()
    provenance.write_parquet(df, tmp_path / "x.parquet")
    assert (tmp_path / "x.parquet").read_bytes() == first
    assert oct((tmp_path / "x.parquet").stat().st_mode & 0o777) != "0o600"


WRITER = """
import sys, pandas as pd, numpy as np
from valuealign import provenance
df = pd.DataFrame(np.random.default_rng(0).random((400_000, 8)))
print("ready", flush=True)
while True:
    provenance.write_parquet(df, sys.argv[1])
"""


@pytest.mark.slow
def test_killing_a_writer_never_leaves_a_truncated_parquet(tmp_path) -> None:
    """SIGKILL at arbitrary moments: the target is either absent or a complete, readable file."""
    target = tmp_path / "big.parquet"
    for delay in (0.05, 0.3, 0.7, 1.3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if target.exists():
            assert pd.read_parquet(target).shape == (400_000, 8)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "big.parquet"]
    assert all(name.startswith(".big.parquet.") for name in leftovers)  # hidden temp files only


def test_manifest_records_what_produced_an_artefact(tmp_path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a\n1\n")
    with provenance.Manifest("stage", parameters={"k": 1}, seed=3) as m:
        m.add_inputs([src])
    path = m.write(tmp_path / "manifest.json")
    data = json.loads(path.read_text())
    assert data["parameters"] == {"k": 1} and data["seed"] == 3
    assert data["inputs"][str(src)] == provenance.sha256_file(src)
    assert set(data["git"]) == {"commit", "dirty"}
    assert data["packages"]["pandas"] == pd.__version__
    assert data["wall_time_s"] is not None and data["wall_time_s"] >= 0

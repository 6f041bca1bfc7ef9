"""Committed datasets: demo fleet reproducible from its seed, PAI conversion faithful."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import require

pl = require("polars")

from degrade.errors import SchemaError  # noqa: E402
from degrade.io import read_counters, read_timings  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "datasets")
PAI_SRC = os.path.join(ROOT, "..", "..", "shared", "data", "pai-minibatch")


def test_demo_is_the_seeded_simulation():
    from degrade.simulate import simulate

    res = simulate("demo", seed=20260101)
    for name in ("timings", "counters", "truth"):
        stored = pl.read_parquet(os.path.join(ROOT, "demo", f"{name}.parquet"))
        assert stored.equals(getattr(res, name)), name
    size = sum(os.path.getsize(os.path.join(ROOT, "demo", f)) for f in os.listdir(os.path.join(ROOT, "demo")))
    assert size < 4_000_000


def test_demo_reads_through_the_readers():
    t = read_timings(os.path.join(ROOT, "demo", "timings.parquet")).collect()
    c = read_counters(os.path.join(ROOT, "demo", "counters.parquet")).collect()
    truth = pl.read_parquet(os.path.join(ROOT, "demo", "truth.parquet"))
    assert set(truth["device"]) <= set(t["device"]) | set(c["device"])
    assert t["job"].n_unique() == 3 and t["group"].n_unique() >= 5


def test_pai_conversion_matches_the_source():
    t = read_timings(os.path.join(ROOT, "pai", "timings.parquet")).collect()
    assert t["job"].n_unique() == 4 and t["device"].n_unique() == 40
    assert t.height == 29719  # 29,720 source rows, one duplicate (worker, time) dropped
    if os.path.isdir(PAI_SRC):
        from degrade.io._pai import read_pai_minibatch

        fresh, stats = read_pai_minibatch(PAI_SRC)
        assert stats == {"rows": 29720, "duplicates": 1, "zero_times": 0}
        assert fresh.equals(pl.read_parquet(os.path.join(ROOT, "pai", "timings.parquet")))
        src = pl.read_csv(os.path.join(PAI_SRC, "job_3_norm.csv"))
        j3 = fresh.filter(pl.col("job") == "pai-job3").sort(["rank", "timestamp"])
        np.testing.assert_array_equal(j3["compute_time"].to_numpy(),
                                      src.sort(["worker", "time"])["batch_time_norm"].to_numpy().astype(float))


def test_pai_job1_worker6_is_the_published_straggler():
    t = pl.read_parquet(os.path.join(ROOT, "pai", "timings.parquet")).filter(pl.col("job") == "pai-job1")
    r = t.with_columns((pl.col("compute_time") / pl.col("compute_time").median().over("step")).alias("r"))
    during = r.filter(pl.col("timestamp").is_between(1810, 1945))
    by_rank = during.group_by("rank").agg(pl.col("r").median()).sort("r")
    assert by_rank["rank"][-1] == 6 and by_rank["r"][-1] > 1.3
    before = r.filter((pl.col("rank") == 6) & (pl.col("timestamp") < 1500))["r"].median()
    assert before == pytest.approx(1.0, abs=0.05)


def test_pai_reader_errors(tmp_path):
    from degrade.io._pai import read_pai_minibatch

    with pytest.raises(SchemaError, match="no job_N_norm.csv"):
        read_pai_minibatch(tmp_path)
    bad = tmp_path / "job_9_norm.csv"
    bad.write_text(",worker,time\n0,0,1\n")
    with pytest.raises(SchemaError, match=r"job_9_norm\.csv.*batch_time_norm"):
        read_pai_minibatch(bad)

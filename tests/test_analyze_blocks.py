"""Block builder and planner of ``degrade analyze``: checked against naive references.

These tests replace the verdict engine by a recorder, so they check the
plumbing (pivoting, de-duplication, warnings, chunking, partition streaming)
independently of the engine's statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import require

pl = require("polars")

from degrade.analyze import _plan  # noqa: E402
from degrade.analyze._blocks import counter_block, step_chunks, timing_block  # noqa: E402
from degrade.analyze._plan import _indexed  # noqa: E402
from degrade.analyze._warnings import WarningLog  # noqa: E402


def _messy_timings(rng, n_dev=7, n_step=60, dup=15, bad=20):
    """Shuffled rows with missing cells, duplicates, NaN, inf, zero and negative times."""
    rows = [(f"d{d}", s, float(rng.lognormal(-2, 0.1))) for d in range(n_dev) for s in range(n_step)
            if rng.random() > 0.1]
    rows += [rows[i] for i in rng.choice(len(rows), dup, replace=False)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    vals = np.array([r[2] for r in rows])
    idx = rng.choice(len(rows), bad, replace=False)
    vals[idx[: bad // 4]] = np.nan
    vals[idx[bad // 4: bad // 2]] = np.inf
    vals[idx[bad // 2: 3 * bad // 4]] = 0.0
    vals[idx[3 * bad // 4:]] = -1.0
    return pl.DataFrame({"device": [r[0] for r in rows], "step": [r[1] for r in rows],
                         "compute_time": vals})


def _naive_pivot(df):
    """Reference: a dict keyed by (step, device), first row wins, bad values -> NaN."""
    first = {}
    for d, s, v in df.iter_rows():
        first.setdefault((s, d), v)
    steps = sorted({s for s, _ in first})
    devs = sorted({d for _, d in first})
    out = np.full((len(steps), len(devs)), np.nan)
    for (s, d), v in first.items():
        out[steps.index(s), devs.index(d)] = v if (v is not None and math.isfinite(v) and v > 0) else np.nan
    return steps, devs, out, df.height - len(first)


@pytest.mark.parametrize("seed", range(5))
def test_timing_block_matches_naive_pivot(seed):
    rng = np.random.default_rng(seed)
    df = _messy_timings(rng)
    meta = _indexed(df.select("device").unique())
    log = WarningLog()
    block = timing_block(df, meta, ["compute_time"], log=log)
    steps, devs, ref, n_dup = _naive_pivot(df)
    assert block.devices == devs
    np.testing.assert_array_equal(block.steps, steps)
    np.testing.assert_array_equal(block.values["compute_time"], ref)
    counts = {w.kind: w.count for w in log.items()}
    assert counts.get("duplicate_rows", 0) == n_dup > 0
    # warnings count the rows that survived de-duplication
    kept = df.unique(subset=["device", "step"], keep="first", maintain_order=True)["compute_time"].to_numpy()
    assert counts["invalid_timing"] == int((~np.isfinite(kept) | (kept <= 0)).sum())


def test_timing_block_sparse_steps_and_timestamps():
    # steps logged every 10 iterations: rows of the block are the logged steps only
    df = pl.DataFrame({
        "device": ["a", "b", "a", "b", "a"],
        "step": [0, 0, 10, 10, 1000],
        "compute_time": [1.0, 2.0, 3.0, 4.0, 5.0],
        "timestamp": [100.0, 102.0, 110.0, None, 900.0],
    })
    block = timing_block(df, _indexed(df.select("device").unique()), ["compute_time"], log=WarningLog())
    np.testing.assert_array_equal(block.steps, [0, 10, 1000])
    np.testing.assert_array_equal(block.values["compute_time"], [[1, 2], [3, 4], [5, np.nan]])
    np.testing.assert_allclose(block.timestamps, [101.0, 110.0, 900.0])


def test_absent_devices_are_not_passed():
    df = pl.DataFrame({"device": ["a", "c"], "step": [5, 6], "compute_time": [1.0, 2.0]})
    meta = _indexed(pl.DataFrame({"device": ["a", "b", "c"], "group": [0, 1, 0]}))
    block = timing_block(df, meta, ["compute_time"], log=WarningLog())
    assert block.devices == ["a", "c"] and block.groups == [0, 0]
    assert block.values["compute_time"].shape == (2, 2)
    assert block.values["compute_time"].flags.c_contiguous


def test_counter_block_on_a_time_grid():
    df = pl.DataFrame({
        "device": ["a", "b", "a", "a", "b"],
        "timestamp": [0.1, 0.0, 1.05, 1.1, 2.9],
        "sm_clock_mhz": [1400.0, 1410.0, 1405.0, 999.0, float("inf")],
    })
    log = WarningLog()
    block = counter_block(df, _indexed(df.select("device").unique()), ["sm_clock_mhz"],
                          t0=0.0, interval=1.0, log=log)
    np.testing.assert_array_equal(block.timestamps, [0.0, 1.0, 3.0])
    np.testing.assert_array_equal(block.values["sm_clock_mhz"],
                                  [[1400, 1410], [1405, np.nan], [np.nan, np.nan]])
    counts = {w.kind: w.count for w in log.items()}
    assert counts == {"duplicate_samples": 1, "nonfinite_counter": 1}


def test_step_chunks_cover_range_exactly(rng):
    for _ in range(200):
        lo = int(rng.integers(-50, 50))
        hi = lo + int(rng.integers(0, 500))
        rows, chunk = int(rng.integers(1, 10_000)), int(rng.integers(1, 3_000))
        ch = step_chunks(lo, hi, rows, chunk)
        assert ch[0][0] == lo and ch[-1][1] == hi + 1
        assert all(a < b for a, b in ch)
        assert all(b == a2 for (_, b), (a2, _) in zip(ch[:-1], ch[1:]))
        assert len(ch) == min(hi - lo + 1, -(-rows // chunk))


class Recorder:
    """Stands in for the verdict engine: keeps every block it is given."""

    instances: list[Recorder] = []

    def __init__(self, config=None):
        self.calls = []
        Recorder.instances.append(self)

    def run(self, devices, values, **kw):
        self.calls.append((list(devices), {k: v.copy() for k, v in values.items()}, kw))

    def verdicts(self):
        return []

    def job_events(self):
        return []


def _dense(calls, column):
    """Re-assemble recorded chunks into one (steps x devices) table."""
    table = {}
    for devices, values, kw in calls:
        if column not in values:
            continue
        for i, s in enumerate(kw["steps"]):
            for j, d in enumerate(devices):
                table[(int(s), d)] = values[column][i, j]
    return table


def _fleet_frame(rng, jobs=3, n_dev=6, n_step=120):
    parts = []
    for j in range(jobs):
        dev = np.repeat([f"j{j}g{d}" for d in range(n_dev)], n_step)
        step = np.tile(np.arange(n_step), n_dev)
        parts.append(pl.DataFrame({
            "job": f"job{j}", "device": dev, "step": step,
            "compute_time": rng.lognormal(-2, 0.05, dev.size),
            "group": np.repeat(np.repeat([0, 1], n_dev // 2), n_step),
            "host": "h0",
        }))
    return pl.concat(parts)


def test_chunked_blocks_equal_one_block_and_memory_is_bounded(monkeypatch, tmp_path, rng):
    from degrade.analyze import analyze

    monkeypatch.setattr(_plan, "make_engine", lambda cfg: Recorder(cfg))
    df = _fleet_frame(rng)
    root = tmp_path / "hive"
    df.write_parquet(root, partition_by="job")

    Recorder.instances.clear()
    big = analyze(root, chunk_rows=10**9)
    whole = {r.calls[0][2]["job"]: r.calls for r in Recorder.instances}
    Recorder.instances.clear()
    small = analyze(root, chunk_rows=100)
    chunked = {r.calls[0][2]["job"]: r.calls for r in Recorder.instances}

    assert sorted(whole) == sorted(chunked) == ["job0", "job1", "job2"]  # one engine per job
    for job in whole:
        assert len(whole[job]) == 1 and len(chunked[job]) == 8
        assert _dense(whole[job], "compute_time") == _dense(chunked[job], "compute_time")
        steps = np.concatenate([kw["steps"] for _, _, kw in chunked[job]])
        assert np.all(np.diff(steps) > 0)  # chunks arrive in step order
    # the memory footprint indicator: a partition is never read whole
    assert big.stats["peak_block_rows"] == df.height // 3
    assert small.stats["peak_block_rows"] <= 2 * 100
    assert small.stats["rows"] == big.stats["rows"] == df.height


def test_groups_and_hosts_are_passed_per_device(monkeypatch, rng):
    from degrade.analyze import analyze

    monkeypatch.setattr(_plan, "make_engine", lambda cfg: Recorder(cfg))
    Recorder.instances.clear()
    df = _fleet_frame(rng, jobs=1, n_dev=4, n_step=10)
    analyze(df)
    (rec,) = Recorder.instances
    devices, values, kw = rec.calls[0]
    assert devices == ["j0g0", "j0g1", "j0g2", "j0g3"]
    assert kw["groups"] == ["0", "0", "1", "1"] and kw["hosts"] == ["h0"] * 4 and kw["job"] == "job0"
    assert values["compute_time"].shape == (10, 4)


def test_counters_join_their_job_and_leftovers_run_per_host(monkeypatch, rng):
    from degrade.analyze import analyze

    monkeypatch.setattr(_plan, "make_engine", lambda cfg: Recorder(cfg))
    Recorder.instances.clear()
    timings = pl.DataFrame({"job": "j", "device": ["a", "b"] * 5, "step": np.repeat(np.arange(5), 2),
                            "compute_time": 1.0, "timestamp": np.repeat(np.arange(5.0), 2),
                            "group": "stage0"})
    counters = pl.DataFrame({
        "device": ["a", "b", "c"] * 4, "host": "h1", "model": "H100",
        "timestamp": np.repeat(np.arange(4.0), 3), "sm_clock_mhz": 1980.0,
    })
    res = analyze([timings, counters])
    assert res.stats["units"] == 2
    job_engine, host_engine = Recorder.instances
    kinds = [sorted(v) for _, v, _ in job_engine.calls]
    assert ["compute_time"] in kinds and any("sm_clock_mhz" in k for k in kinds)
    timing_call = next(c for c in job_engine.calls if "compute_time" in c[1])
    assert timing_call[0] == ["a", "b"] and timing_call[2]["groups"] == ["stage0"] * 2
    counter_call = next(c for c in job_engine.calls if "sm_clock_mhz" in c[1])
    assert counter_call[0] == ["a", "b"] and counter_call[2]["groups"] == ["h1/H100"] * 2
    assert host_engine.calls[0][0] == ["c"]

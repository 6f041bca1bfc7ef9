"""Readers: formats, aliases, dcgm-exporter layouts, validation and counted drops."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.conftest import require

pl = require("polars")

from degrade.errors import InputError, SchemaError  # noqa: E402
from degrade.io import (  # noqa: E402
    ReadReport,
    detect_kind,
    inspect,
    partitions,
    read_counters,
    read_timings,
)


def _timings(n_dev=3, n_step=5, job="j"):
    rows = {"device": [], "step": [], "step_time": [], "job": []}
    for d in range(n_dev):
        for s in range(n_step):
            rows["device"].append(f"d{d}")
            rows["step"].append(s)
            rows["step_time"].append(1.0 + 0.1 * d + 0.01 * s)
            rows["job"].append(job)
    return pl.DataFrame(rows)


def test_aliases_and_units():
    df = pl.DataFrame(
        {
            "uuid": ["b", "a", "a"],
            "iteration": [0, 1, 0],
            "batch_time_ms": [95.0, 110.0, 100.0],
            "fwd_bwd_time": [0.05, 0.06, 0.07],
        }
    )
    out = read_timings(df).collect()
    assert out.columns == ["device", "step", "compute_time", "step_time"] or set(out.columns) == {
        "device",
        "step",
        "compute_time",
        "step_time",
    }
    assert out["device"].to_list() == ["a", "a", "b"]  # sorted by device, step
    assert out["step"].to_list() == [0, 1, 0]
    np.testing.assert_allclose(out["step_time"].to_numpy(), [0.1, 0.11, 0.095])


def test_rank_becomes_device_and_bad_times_are_null():
    df = pl.DataFrame(
        {
            "host": ["h", "h"],
            "rank": [3, 3],
            "step": [1, 2],
            "step_time": [float("nan"), -1.0],
            "compute_time": [0.5, float("inf")],
        }
    )
    out = read_timings(df).collect()
    assert out["device"].to_list() == ["h:3", "h:3"]
    assert out["step_time"].null_count() == 2
    assert out["compute_time"].to_list() == [0.5, None]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ipc"])
def test_file_formats_roundtrip(tmp_path, fmt):
    df = _timings()
    path = tmp_path / f"t.{'arrow' if fmt == 'ipc' else fmt}"
    getattr(df, f"write_{fmt}")(path)
    out = read_timings(str(path)).collect()
    assert out.height == df.height
    np.testing.assert_allclose(
        out.sort(["device", "step"])["step_time"].to_numpy(),
        df.sort(["device", "step"])["step_time"].to_numpy(),
    )


def test_hive_directory_filter_and_partitions(tmp_path):
    for job in ("a", "b", "c"):
        d = tmp_path / f"job={job}"
        d.mkdir()
        _timings(job=job).drop("job").write_parquet(d / "part.parquet")
    assert partitions(str(tmp_path)) == ["a", "b", "c"]
    out = read_timings(str(tmp_path), jobs="b").collect()
    assert set(out["job"]) == {"b"} and out.height == 15
    info = inspect(str(tmp_path))
    assert info.kind == "timings" and info.n_rows == 45 and info.hive_keys == ["job"]
    assert len(info.files) == 3


def test_missing_columns_name_the_file(tmp_path):
    p = tmp_path / "bad.csv"
    pl.DataFrame({"device": ["a"], "step_time": [1.0], "iteration_count": [3]}).write_csv(p)
    with pytest.raises(SchemaError, match=r"bad\.csv.*step"):
        read_timings(str(p))
    p2 = tmp_path / "notime.parquet"
    pl.DataFrame({"device": ["a"], "step": [1], "foo": [1.0]}).write_parquet(p2)
    with pytest.raises(SchemaError, match=r"notime\.parquet.*step_time"):
        read_timings(str(p2))


def test_text_in_time_column_is_an_error(tmp_path):
    p = tmp_path / "text.csv"
    p.write_text("device,step,step_time\na,1,fast\nb,1,slow\n")
    with pytest.raises(SchemaError, match=r"text\.csv.*'step_time'.*seconds"):
        read_timings(str(p))


def test_empty_and_corrupt_files(tmp_path):
    _timings().write_parquet(tmp_path / "good.parquet")
    (tmp_path / "empty.csv").write_text("")
    _timings().head(0).write_parquet(tmp_path / "zero.parquet")
    rep = ReadReport()
    out = read_timings(str(tmp_path), report=rep).collect()
    assert out.height == 15
    assert sorted(os.path.basename(f) for f in rep.empty_files) == ["empty.csv", "zero.parquet"]
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SchemaError, match=r"broken\.parquet.*cannot read"):
        read_timings(str(tmp_path))
    rep = ReadReport()
    assert read_timings(str(tmp_path), report=rep, on_bad_file="skip").collect().height == 15
    assert [os.path.basename(f) for f in rep.bad_files] == ["broken.parquet"]
    only_empty = tmp_path / "e"
    only_empty.mkdir()
    (only_empty / "x.csv").write_text("")
    with pytest.raises(SchemaError, match="no timing rows"):
        read_timings(str(only_empty))
    with pytest.raises(InputError, match="no such file"):
        read_timings(str(tmp_path / "nope.parquet"))


def test_duplicates_and_null_keys_dropped_and_counted():
    df = pl.DataFrame(
        {
            "device": ["a", "a", "a", None, "b"],
            "step": [1, 1, 2, 3, None],
            "step_time": [1.0, 9.0, 1.0, 1.0, 1.0],
        }
    )
    rep = ReadReport()
    out = read_timings(df, report=rep).collect()
    assert out.height == 2 and out["step_time"].to_list() == [1.0, 1.0]  # first duplicate kept
    assert rep.row_issues() == {"rows": 5, "null_key": 2, "duplicate": 1}


def test_counters_file_refused_by_read_timings():
    df = pl.DataFrame({"device": ["a"], "timestamp": [1.0], "sm_clock_mhz": [1980.0]})
    with pytest.raises(SchemaError, match="read_counters"):
        read_timings(df)
    assert detect_kind(df.columns) == "counters"
    with pytest.raises(SchemaError):
        detect_kind(["a", "b"])


def test_dcgm_wide_old_names_units_and_labels():
    df = pl.DataFrame(
        {
            "UUID": ["GPU-1", "GPU-1"],
            "Hostname": ["n1", "n1"],
            "gpu": ["0", "0"],
            "device": ["nvidia0", "nvidia0"],
            "modelName": ["NVIDIA H100 80GB HBM3"] * 2,
            "pod": ["p", "p"],
            "timestamp": [1_700_000_000_000, 1_700_000_010_000],  # milliseconds
            "DCGM_FI_DEV_SM_CLOCK": [1980, 990],
            "DCGM_FI_DEV_GPU_UTIL": [97, 50],
            "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": [0, 8],
            "DCGM_FI_DEV_XID_ERRORS": [0, 79],
            "DCGM_FI_DEV_POWER_USAGE": [650.5, 300.0],
            "DCGM_FI_DEV_PCIE_LINK_WIDTH": [16, 8],
            "DCGM_FI_DEV_ROW_REMAP_FAILURE": [0, 1],
            "DCGM_FI_DEV_FB_USED": [10, 10],
        }
    )
    rep = ReadReport()
    out = read_counters(df, report=rep).collect()
    assert rep.layouts["<frame>"] == "dcgm-wide"
    r = out.row(1, named=True)
    assert r["device"] == "GPU-1" and r["uuid"] == "GPU-1" and r["host"] == "n1" and r["gpu"] == 0
    assert (
        r["dcgm_device"] == "nvidia0" and r["pod"] == "p" and r["model"].startswith("NVIDIA H100")
    )
    assert r["timestamp"] == 1_700_000_010.0
    assert r["sm_clock_mhz"] == 990.0 and r["gpu_util_ratio"] == 0.5
    assert r["clock_event_reasons"] == 8 and r["xid_last"] == 79 and r["remap_failure"] == 1
    assert r["power_watts"] == 300.0 and r["pcie_link_width"] == 8
    assert out.schema["clock_event_reasons"] == pl.Int64


def test_dcgm_46_names():
    df = pl.DataFrame(
        {
            "uuid": ["GPU-2"],
            "hostname": ["n2"],
            "timestamp": [1.7e9],
            "GPU_TEMP_CELSIUS": [71.0],
            "BOARD_POWER_WATTS": [512.0],
            "GPU_UTIL_RATIO": [90],  # DCGM 4.6: still field 203, INT64 percent
            "XID_ERROR": [48],
            "PCIE_REPLAY_TOTAL": [12],
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": [0x20],
        }
    )
    r = read_counters(df).collect().row(0, named=True)
    assert (r["gpu_temp_celsius"], r["power_watts"]) == (71.0, 512.0)
    assert r["gpu_util_ratio"] == pytest.approx(0.9)
    assert (r["xid_last"], r["pcie_replay_total"], r["clock_event_reasons"]) == (48, 12, 0x20)


def test_dcgm_long_layout(tmp_path):
    rows = []
    for t in (1_700_000_000_000, 1_700_000_015_000):
        for g, uuid in enumerate(["GPU-a", "GPU-b"]):
            rows += [
                {
                    "__name__": "DCGM_FI_DEV_SM_CLOCK",
                    "UUID": uuid,
                    "Hostname": "n",
                    "gpu": g,
                    "value": 1980.0 - g,
                    "timestamp": t,
                    "job": "dcgm-exporter",
                },
                {
                    "__name__": "DCGM_FI_DEV_GPU_UTIL",
                    "UUID": uuid,
                    "Hostname": "n",
                    "gpu": g,
                    "value": 80.0,
                    "timestamp": t,
                },
                {
                    "__name__": "DCGM_FI_DEV_GPU_TEMP",
                    "UUID": uuid,
                    "Hostname": "n",
                    "gpu": g,
                    "value": 60.0 + g,
                    "timestamp": t,
                },
                {
                    "__name__": "DCGM_FI_DEV_UNKNOWN_THING",
                    "UUID": uuid,
                    "Hostname": "n",
                    "gpu": g,
                    "value": 1.0,
                    "timestamp": t,
                },
            ]
    p = tmp_path / "prom.csv"
    pl.DataFrame(rows).write_csv(p)
    assert detect_kind(pl.read_csv(p).columns) == "counters"
    out = read_counters(str(p)).collect()
    assert out.height == 4
    b = out.filter(pl.col("device") == "GPU-b").row(0, named=True)
    assert (
        b["sm_clock_mhz"] == 1979.0 and b["gpu_util_ratio"] == 0.8 and b["gpu_temp_celsius"] == 61.0
    )
    assert b["timestamp"] == 1_700_000_000.0 and b["xid_last"] is None
    assert b["scrape_job"] == "dcgm-exporter" and "job" not in out.columns


def test_counters_need_device_and_timestamp():
    with pytest.raises(SchemaError, match="timestamp"):
        read_counters(pl.DataFrame({"device": ["a"], "sm_clock_mhz": [1.0]}))
    with pytest.raises(SchemaError, match="device"):
        read_counters(pl.DataFrame({"timestamp": [1.0], "sm_clock_mhz": [1.0]}))
    with pytest.raises(SchemaError, match=r"'sm_clock_mhz'.*numbers"):
        read_counters(pl.DataFrame({"device": ["a"], "timestamp": [1.0], "sm_clock_mhz": ["fast"]}))


def test_hostname_and_gpu_make_a_device_id():
    df = pl.DataFrame(
        {
            "Hostname": ["n1", "n1"],
            "gpu": [0, 1],
            "timestamp": [1.0, 1.0],
            "DCGM_FI_DEV_GPU_TEMP": [50, 51],
        }
    )
    assert read_counters(df).collect()["device"].to_list() == ["n1/gpu0", "n1/gpu1"]


def test_datetime_timestamps():
    import datetime as dt

    ts = [
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.timezone.utc),
    ]
    df = pl.DataFrame({"device": ["a", "a"], "timestamp": ts, "power_watts": [1.0, 2.0]})
    out = read_counters(df).collect()
    assert out["timestamp"].to_list() == [1_767_225_600.0, 1_767_225_610.0]


def test_glob_list_and_csv_hive(tmp_path):
    for job in ("x", "y"):
        d = tmp_path / "ds" / f"job={job}"
        d.mkdir(parents=True)
        _timings(job=job).drop("job").write_csv(d / "part.csv")
    out = read_timings(str(tmp_path / "ds")).collect()
    assert sorted(out["job"].unique()) == ["x", "y"] and out.height == 30
    _timings(job="p").write_parquet(tmp_path / "p1.parquet")
    _timings(job="q").write_parquet(tmp_path / "p2.parquet")
    assert read_timings(str(tmp_path / "p*.parquet")).collect().height == 30
    both = read_timings([str(tmp_path / "p1.parquet"), pl.DataFrame(_timings(job="r"))]).collect()
    assert sorted(both["job"].unique()) == ["p", "r"]
    with pytest.raises(InputError, match="no file matches"):
        read_timings(str(tmp_path / "zzz*.parquet"))
    with pytest.raises(SchemaError, match="jobs="):
        read_timings(_timings().drop("job"), jobs="a")


def test_inspect_counters_and_truth_files_are_left_out(tmp_path):
    from degrade.simulate import simulate

    res = simulate("tiny")
    res.write(tmp_path)
    info = inspect(str(tmp_path / "counters.parquet"))
    assert (
        info.kind == "counters"
        and info.layout == "canonical"
        and info.n_rows == res.counters.height
    )
    assert "clock_event_reasons" in info.columns
    # a directory holding timings and truth: the truth file is not timings
    (tmp_path / "counters.parquet").unlink()
    rep = ReadReport()
    t = read_timings(str(tmp_path), report=rep).collect()
    assert t.height == res.timings.height and len(rep.files) == 2


def test_iso_text_timestamps(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("uuid,timestamp,DCGM_FI_DEV_GPU_TEMP\nGPU-1,2026-01-01T00:00:10Z,50\n"
                 "GPU-1,2026-01-01 00:00:20.5,51\nGPU-1,2026-01-01T00:00:30+00:00,52\nGPU-1,yesterday,53\n")
    rep = ReadReport()
    out = read_counters(str(p), report=rep).collect()
    assert out["timestamp"].to_list() == [1_767_225_610.0, 1_767_225_620.5, 1_767_225_630.0]
    assert rep.row_issues()["null_key"] == 1


def test_dedupe_and_sort_match_a_naive_reference():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    row = st.tuples(st.sampled_from(["j1", "j2", None]), st.sampled_from(["a", "b", "c", None]),
                    st.one_of(st.none(), st.integers(0, 4)),
                    st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.none()))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(row, min_size=1, max_size=40))
    def check(rows):
        df = pl.DataFrame(rows, schema={"job": pl.String, "device": pl.String, "step": pl.Int64,
                                        "step_time": pl.Float64}, orient="row")
        seen, expect = set(), []
        for job, dev, step, x in rows:
            if dev is None or step is None or (job, dev, step) in seen:
                continue
            seen.add((job, dev, step))
            ok = x is not None and np.isfinite(x) and x > 0
            expect.append((job, dev, step, x if ok else None))
        expect.sort(key=lambda r: (r[0] is None, r[0] or "", r[1], r[2]))
        got = read_timings(df).collect().select("job", "device", "step", "step_time").rows()
        assert got == expect

    check()


def test_input_already_in_key_order_takes_no_sort_and_keeps_first_duplicate():
    from degrade.io._readers import _in_key_order

    rng = np.random.default_rng(3)
    n = 2000
    job = rng.choice(["j1", "j2"], n)
    dev = rng.choice(["a", "b", "c"], n)
    step = rng.integers(0, 50, n)
    x = np.arange(n, dtype=float) + 1.0  # row number: tells which duplicate was kept
    df = pl.DataFrame({"job": job, "device": dev, "step": step, "step_time": x})
    ordered = df.sort(["job", "device", "step"], maintain_order=True)
    assert _in_key_order(ordered, ["job", "device", "step"])
    assert not _in_key_order(df, ["job", "device", "step"])
    assert not _in_key_order(ordered.with_columns(pl.lit(None, dtype=pl.String).alias("job")), ["job", "device"])
    # unsorted only past the first rows: the full pass must catch it
    late = pl.concat([ordered, ordered.head(1)])
    assert not _in_key_order(late, ["job", "device", "step"])
    expect = ordered.unique(["job", "device", "step"], keep="first", maintain_order=True)
    for frame in (ordered, df, late):
        got = read_timings(frame).collect().select(expect.columns)
        assert got.equals(expect)
    # float keys with NaN are left to the sort (NaN ordering), and still read
    c = pl.DataFrame({"device": ["a", "a", "a"], "timestamp": [2.0, float("nan"), 1.0],
                      "sm_clock_mhz": [1.0, 2.0, 3.0]})
    assert not _in_key_order(c, ["device", "timestamp"])
    assert read_counters(c).collect()["sm_clock_mhz"].to_list()[:2] == [3.0, 1.0]


def test_prometheus_exposition_scrape(tmp_path):
    text = """# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-a",pci_bus_id="00000000:18:00.0",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"} 1980
DCGM_FI_DEV_SM_CLOCK{gpu="1",UUID="GPU-b",pci_bus_id="00000000:2A:00.0",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"} 990
# HELP DCGM_FI_DEV_CLOCK_THROTTLE_REASONS Current clock throttle reasons.
# TYPE DCGM_FI_DEV_CLOCK_THROTTLE_REASONS gauge
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="0",UUID="GPU-a",device="nvidia0",Hostname="n1"} 0
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="1",UUID="GPU-b",device="nvidia1",Hostname="n1"} 8
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",device="nvidia0",Hostname="n1"} 97
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",device="nvidia1",Hostname="n1"} 95
"""
    p = tmp_path / "scrape.prom"
    p.write_text(text)
    os.utime(p, (1_767_225_600, 1_767_225_600))
    out = read_counters(str(p)).collect()
    assert out.height == 2
    b = out.filter(pl.col("device") == "GPU-b").row(0, named=True)
    assert b["sm_clock_mhz"] == 990.0 and b["clock_event_reasons"] == 8 and b["gpu_util_ratio"] == pytest.approx(0.95)
    assert b["pci_bus_id"] == "00000000:2A:00.0" and b["gpu"] == 1 and b["timestamp"] == 1_767_225_600.0
    assert b["model"] == "NVIDIA H100 80GB HBM3" and b["dcgm_device"] == "nvidia1"
    (tmp_path / "bad.prom").write_text("this is { not prometheus\n")
    with pytest.raises(SchemaError, match=r"bad\.prom"):
        read_counters(str(tmp_path / "bad.prom"))


def test_where_filters_on_canonical_columns(tmp_path):
    df = pl.DataFrame({"uuid": ["a", "a", "b", "b"], "iteration": [1, 2, 1, 2], "batch_time": [1.0, 2.0, 3.0, 4.0]})
    p = tmp_path / "t.parquet"
    df.write_parquet(p)
    out = read_timings(str(p), where=pl.col("step") >= 2).collect()
    assert out["step_time"].to_list() == [2.0, 4.0]
    plan = read_timings(str(p), where=pl.col("step") >= 2).explain()
    # the filter sits in the scan node, below the sort and de-duplication
    assert ">= 2" in plan.split("SCAN")[1].split("SELECTION: ")[1]
    assert read_timings(df, where=pl.col("step") >= 2).collect().height == 2
    c = pl.DataFrame({"UUID": ["x", "y"], "Hostname": ["n1", "n2"], "timestamp": [1.0, 1.0],
                      "DCGM_FI_DEV_GPU_TEMP": [50, 60]})
    assert read_counters(c, where=pl.col("host") == "n2").collect()["device"].to_list() == ["y"]


def test_fleet_directory_holds_both_kinds(tmp_path):
    from degrade.simulate import simulate

    res = simulate("tiny")
    paths = res.write(tmp_path)
    rep = ReadReport()
    assert read_timings(str(tmp_path), report=rep).collect().height == res.timings.height
    assert rep.other_kind_files == [paths["counters"]]
    rep = ReadReport()
    assert read_counters(str(tmp_path), report=rep).collect().height == res.counters.height
    assert rep.other_kind_files == [paths["timings"]]
    with pytest.raises(SchemaError, match="use read_counters"):
        read_timings(paths["counters"])  # named explicitly: an error, not a skip

"""``degrade analyze`` under bad days: outputs, broken files, symlink loops, units, exit codes.

Faults are real: a read-only tmpfs mount, zero-byte and truncated files, a
FIFO, ``ln -s`` loops. Every CLI run is a subprocess with a hard timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

pl = require("polars")

from test_analyze import fleet  # noqa: E402

from degrade.analyze import analyze  # noqa: E402
from degrade.errors import InputError, SchemaError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "degrade", "analyze", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """A directory with one timings file: job0-gpu3 slowed (degraded), 8 devices."""
    d = tmp_path_factory.mktemp("rel") / "ds"
    d.mkdir()
    fleet(11, jobs=1, n_step=300).write_parquet(d / "a.parquet")
    return d


# --------------------------------------------------------------------------- outputs


def test_output_in_a_missing_directory_is_refused_before_the_run(ds, tmp_path):
    p = _cli(ds, "--format", "json", "-o", tmp_path / "nope" / "v.json")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in p.stderr


def test_directory_as_output_is_refused(ds, tmp_path):
    for fmt in ("json", "table", "parquet"):
        p = _cli(ds, "--format", fmt, "-o", tmp_path)
        assert p.returncode == 2 and "is a directory" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    p = _cli(ds, "--report", tmp_path)
    assert p.returncode == 2 and "is a directory" in p.stderr
    p = _cli(ds, "--format", "json", "-o", tmp_path / "x", "--report", tmp_path / "x")
    assert p.returncode == 2 and "same file" in p.stderr


def test_output_naming_an_input_is_refused(ds):
    before = (ds / "a.parquet").read_bytes()
    p = _cli(ds / "a.parquet", "--format", "parquet", "-o", ds / "a.parquet")
    assert p.returncode == 2 and "one of the inputs" in p.stderr, p.stderr
    # a data file inside an input directory would be read by the next run
    p = _cli(ds, "--format", "parquet", "-o", ds / "verdicts.parquet")
    assert p.returncode == 2 and "one of the inputs" in p.stderr
    assert (ds / "a.parquet").read_bytes() == before
    assert not (ds / "verdicts.parquet").exists()


@pytest.fixture
def ro_mount(tmp_path):
    """A real read-only tmpfs (root ignores chmod, not a read-only mount)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        (mnt / "old.json").write_text("{}")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, timeout=30)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], timeout=30)


def test_read_only_target_is_refused_before_the_run(ds, ro_mount):
    for target in (ro_mount / "new.json", ro_mount / "old.json"):
        p = _cli(ds, "--format", "json", "-o", target)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and str(target) in lines[0] and "Traceback" not in p.stderr
        assert ("read-only" in lines[0].lower()) or ("cannot create" in lines[0])
    p = _cli(ds, "--report", ro_mount / "r.html")
    assert p.returncode == 2 and "r.html" in p.stderr


# --------------------------------------------------------------------------- broken files


@pytest.fixture
def broken(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    fleet(11, jobs=1, n_step=300).write_parquet(d / "a.parquet")
    (d / "empty.parquet").write_bytes(b"")
    data = (d / "a.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(data[: len(data) // 2])
    os.mkfifo(d / "fifo.parquet")  # would block a reader forever
    return d


def test_empty_and_unreadable_files_in_a_directory_are_skipped_and_counted(broken):
    res = analyze(broken)
    assert len(res.verdicts) == 8
    kinds = {(w.kind, Path(w.source).name) for w in res.warnings}
    assert ("empty_file", "empty.parquet") in kinds
    assert ("unreadable_file", "truncated.parquet") in kinds
    assert "files skipped" in res.summary()
    with pytest.raises(InputError, match="empty.parquet|truncated.parquet|fifo.parquet"):
        analyze(broken, strict=True)


def test_broken_files_cli_default_and_strict(broken):
    p = _cli(broken, "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {w["kind"] for w in doc["warnings"]} >= {"empty_file", "unreadable_file"}
    p = _cli(broken, "--strict")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--strict" in p.stderr


def test_broken_files_in_a_hive_dataset_are_skipped(tmp_path):
    root = tmp_path / "hive"
    for j in range(2):
        part = root / f"job=j{j}"
        part.mkdir(parents=True)
        fleet(j, jobs=1, n_step=200).drop("job").write_parquet(part / "a.parquet")
    (root / "job=j1" / "zero.parquet").write_bytes(b"")
    data = (root / "job=j0" / "a.parquet").read_bytes()
    (root / "job=j0" / "cut.parquet").write_bytes(data[:100])
    res = analyze(root)
    assert len(res.verdicts) == 16 and res.stats["timing_rows"] == 2 * 8 * 200
    assert {w.kind for w in res.warnings} >= {"empty_file", "unreadable_file"}
    with pytest.raises(InputError, match="cut.parquet|zero.parquet"):
        analyze(root, strict=True)


# --------------------------------------------------------------------------- symlinks


def test_symlink_loop_terminates_and_each_file_is_read_once(tmp_path):
    d = tmp_path / "loop"
    d.mkdir()
    df = fleet(11, jobs=1, n_step=300)
    df.write_parquet(d / "a.parquet")
    subprocess.run(["ln", "-s", ".", str(d / "again")], check=True, timeout=10)  # d/again -> d
    subprocess.run(["ln", "-s", "a.parquet", str(d / "b.parquet")], check=True, timeout=10)
    subprocess.run(["ln", "-s", "self.parquet", str(d / "self.parquet")], check=True, timeout=10)
    res = analyze(d)
    assert res.stats["timing_rows"] == df.height
    kinds = [w.kind for w in res.warnings]
    assert "duplicate_rows" not in kinds  # b.parquet and again/a.parquet were not read again
    assert kinds.count("duplicate_file") == 2
    assert "unreadable_file" in kinds  # self.parquet: ELOOP
    p = _cli(d, "--format", "json", timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["summary"]["rows"] == df.height


# --------------------------------------------------------------------------- units


def test_nanosecond_epoch_timestamps_are_exact():
    from degrade.io import read_counters, read_timings

    ns = 1_700_000_000_123_456_789
    for unit, v in (("ns", ns), ("us", ns // 1000), ("ms", ns // 10**6), ("s", ns // 10**9)):
        df = pl.DataFrame({"device": ["a"], "step": [1], "step_time": [0.1], "timestamp": [v]})
        got = read_timings(df).collect()["timestamp"][0]
        assert abs(got - v / {"ns": 1e9, "us": 1e6, "ms": 1e3, "s": 1.0}[unit]) < 1e-6, unit
    df = pl.DataFrame({"device": ["a"], "timestamp": [ns], "sm_clock_mhz": [1400.0]})
    assert abs(read_counters(df).collect()["timestamp"][0] - 1_700_000_000.123456789) < 1e-6


def _steps_file(path, base, dtype):
    import numpy as np

    n = 40
    df = pl.DataFrame({"device": np.repeat([f"g{i}" for i in range(4)], n),
                       "step": np.tile(np.arange(n), 4), "compute_time": 0.1})
    df = df.with_columns((pl.col("step").cast(dtype) + pl.lit(base).cast(dtype)).alias("step"))
    df.write_parquet(path)
    return path


@pytest.mark.parametrize("base,dtype,match", [
    (2**63 + 10, pl.UInt64, "beyond the int64 range"),
    (1e19, pl.Float64, "beyond the int64 range"),
    (2**63 - 100, pl.Int64, "beyond ±2\\*\\*53"),
])
def test_steps_beyond_int64_or_exact_float_name_file_and_column(tmp_path, base, dtype, match):
    f = _steps_file(tmp_path / "big.parquet", base, dtype)
    with pytest.raises(SchemaError, match=match) as e:
        analyze(f)
    assert "big.parquet" in str(e.value) and "'step'" in str(e.value)
    p = _cli(f)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "big.parquet" in p.stderr


def test_large_but_exact_steps_are_kept_exactly(tmp_path):
    f = _steps_file(tmp_path / "ok.parquet", 2**52, pl.Int64)
    res = analyze(f)
    assert res.stats["timing_rows"] == 160


# --------------------------------------------------------------------------- stderr, exit codes


def test_warnings_reach_stderr_with_json_on_stdout(broken):
    p = _cli(broken, "--format", "json")
    assert p.returncode == 0
    warn = [x for x in p.stderr.splitlines() if x.startswith("degrade analyze: warning:")]
    doc = json.loads(p.stdout)
    assert len(warn) == len(doc["warnings"]) >= 2
    assert any("empty.parquet" in x for x in warn)


def test_fail_on(ds, tmp_path):
    p = _cli(ds, "--fail-on", "degraded", "--format", "json")
    assert p.returncode == 4, p.stderr
    assert "job0-gpu3" in p.stderr and json.loads(p.stdout)["summary"]["by_status"]["degraded"] >= 1
    assert _cli(ds, "--fail-on", "failed").returncode == 0  # degraded is not failed
    healthy = tmp_path / "h.parquet"
    fleet(11, jobs=1, n_step=300, slow={}).write_parquet(healthy)
    assert _cli(healthy, "--fail-on", "suspect").returncode == 0
    assert _cli(ds, "--fail-on", "nonsense").returncode == 2


# --------------------------------------------------------------------------- memory

# VmHWM, not ru_maxrss: the latter keeps, across exec, the RSS the child had when it
# was forked from this (large) pytest process
_PLAN_RSS = """
import sys
from degrade.analyze._inputs import resolve_inputs
from degrade.analyze._plan import plan_units
from degrade.analyze._warnings import WarningLog
log = WarningLog()
plan_units(resolve_inputs([sys.argv[1]], log), log)
print([int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")][0])
"""


def _job_major(path, devices, steps=2000, job=250):
    """Rows as a training job logs them, job after job (bench/bench_analyze.py's layout)."""
    import numpy as np

    rng = np.random.default_rng(0)
    parts = []
    for j in range(devices // job):
        d = np.tile(np.arange(j * job, (j + 1) * job), steps)
        parts.append(pl.DataFrame({"job": np.full(d.size, f"job{j:04d}"),
                                   "device": np.char.add("j-gpu", d.astype(str)),
                                   "step": np.repeat(np.arange(steps), job),
                                   "compute_time": 0.1 * np.exp(0.02 * rng.standard_normal(d.size))}))
    df = pl.concat(parts)
    df.write_parquet(path, row_group_size=1_000_000)
    return df.height


@pytest.mark.slow
def test_plan_memory_does_not_grow_like_the_data(tmp_path):
    # The plan held a hash set of every step of every device (n_unique) and read every
    # key column in memory: ~91 bytes per row on main (4.3 GB at 5e7 rows whatever
    # --chunk-rows). Now ~53 bytes/row, the rest being row groups polars' streaming
    # scan decodes ahead (bounded by its prefetch, not by the file; see
    # docs/reliability-analyze.md). Measured in fresh processes, as a slope so the
    # interpreter's own footprint cancels.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rss = {}
    for devices in (500, 2500):
        f = tmp_path / f"t{devices}.parquet"
        n = _job_major(f, devices)
        p = subprocess.run([sys.executable, "-c", _PLAN_RSS, str(f)], capture_output=True,
                           text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        rss[n] = int(p.stdout.split()[-1]) * 1024
        f.unlink()
    (a, ra), (b, rb) = sorted(rss.items())
    per_row = (rb - ra) / (b - a)
    print(f"timing plan: {per_row:.0f} bytes per row")
    assert per_row < 72, f"plan memory grows {per_row:.0f} bytes per input row"


def test_full_disk_while_writing_is_one_line_and_leaves_no_truncated_file(ds, tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        (mnt / "v.json").write_text('{"previous": true}\n')
        p = _cli(ds, "--format", "json", "-o", mnt / "v.json")  # ~20 kB of JSON into 8 kB
        assert p.returncode == 1, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write the output" in lines[0] and "Traceback" not in p.stderr
        assert (mnt / "v.json").read_text() == '{"previous": true}\n'  # the old file, intact
        assert sorted(x.name for x in mnt.iterdir()) == ["v.json"]  # no temporary left behind
    finally:
        subprocess.run(["umount", str(mnt)], timeout=30)


def test_outputs_keep_the_usual_file_mode(ds, tmp_path):
    out = tmp_path / "v.json"
    assert _cli(ds, "--format", "json", "-o", out).returncode == 0
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    assert json.loads(out.read_text())["summary"]["devices"] == 8


def test_a_glob_is_a_listing_broken_matches_are_skipped(broken):
    res = analyze(str(broken / "*.parquet"))
    assert len(res.verdicts) == 8
    assert {w.kind for w in res.warnings} >= {"empty_file", "unreadable_file"}
    with pytest.raises(InputError):
        analyze(str(broken / "*.parquet"), strict=True)
    with pytest.raises(InputError, match="empty.parquet"):
        analyze(broken / "empty.parquet")  # a file named by the caller must be readable


def test_header_only_files_in_a_directory_are_skipped_not_fatal(tmp_path):
    d = tmp_path / "hdr"
    d.mkdir()
    df = fleet(1, jobs=1, n_step=100)
    df.write_parquet(d / "a.parquet")
    df.head(0).write_parquet(d / "z.parquet")  # a schema, no rows
    df.head(0).write_csv(d / "y.csv")  # a header line, no rows
    res = analyze(d)
    assert len(res.verdicts) == 8 and res.stats["timing_rows"] == df.height
    assert sorted(Path(w.source).name for w in res.warnings if w.kind == "empty_file") == [
        "y.csv", "z.parquet"]
    with pytest.raises(InputError, match="y.csv|z.parquet"):
        analyze(d, strict=True)


def _counters_file(path, devices, samples=4000):
    import numpy as np

    rng = np.random.default_rng(0)
    d = np.arange(devices)
    n = devices * samples
    pl.DataFrame({
        "device": np.tile(np.char.add("GPU-", d.astype(str)), samples),
        "host": np.tile(np.char.add("node-", (d // 8).astype(str)), samples),
        "timestamp": np.repeat(1.7e9 + 10.0 * np.arange(samples), devices),
        "sm_clock_mhz": 1980.0 + rng.standard_normal(n),
        "power_watts": 500.0 + rng.standard_normal(n),
    }).write_parquet(path, row_group_size=1_000_000)
    return n


@pytest.mark.slow
def test_counter_plan_memory_does_not_grow_like_the_data(tmp_path):
    # The counters were planned from the sorted reader: every counter column of the
    # dataset in memory and sorted (1.3 GB at 5e6 rows; ~180 bytes per row here). Now a
    # streaming group-by of the unsorted rows (~45 bytes per row).
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rss = {}
    for devices in (250, 1000):
        f = tmp_path / f"c{devices}.parquet"
        n = _counters_file(f, devices)
        p = subprocess.run([sys.executable, "-c", _PLAN_RSS, str(f)], capture_output=True,
                           text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        rss[n] = int(p.stdout.split()[-1]) * 1024
        f.unlink()
    (a, ra), (b, rb) = sorted(rss.items())
    per_row = (rb - ra) / (b - a)
    print(f"counter plan: {per_row:.0f} bytes per row")
    assert per_row < 100, f"counter plan memory grows {per_row:.0f} bytes per input row"

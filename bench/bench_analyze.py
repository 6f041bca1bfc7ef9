"""Throughput of ``degrade analyze`` beside polars' own scan + sort + group-by of the same file.

Not a test. Writes one Parquet file of step timings (``--devices`` x
``--steps`` rows, jobs of ``--job-size`` devices, 2 % lognormal AR(1) noise,
one device per job slowed by 20 % halfway), then times, in the same run:

* ``polars``: ``scan_parquet → sort(job, device, step) → group_by(job, device)
  .agg(median, len)`` — the plain pass any analysis of this file needs;
* ``degrade``: ``degrade.analyze.analyze(file)`` — read, validate, plan,
  pivot into blocks, run the verdict engine, collect verdicts;
* ``degrade read + plan + blocks``: the same minus the verdict engine, to
  tell the data path's cost from the engine's.

and prints rows per second for both and their ratio (the target: degrade
costs at most 2x the plain polars pass). Numba kernels are compiled (or
loaded from cache) before timing.

    python bench/bench_analyze.py                       # 2,000 x 2,500 = 5e6 rows
    python bench/bench_analyze.py --devices 10000 --steps 10000   # 1e8 rows

``--memory`` measures peak memory instead: each pass runs in its own
subprocess (``python -c``) and its peak RSS is the child's own ``VmHWM``
(``/proc/self/status``, read by the child as it ends): a new address space
per ``exec``, so neither this process's heap (``ru_maxrss`` keeps the RSS the
child had when forked from us, across ``exec``) nor another pass counts. Passes: the interpreter
with degrade imported and its kernels loaded (the floor), polars' plain
pass above, and ``analyze(file, chunk_rows=N)`` for every ``--memory-chunks``
value:

    python bench/bench_analyze.py --memory --devices 4000 --steps 2500   # 1e7 rows
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np


def write_dataset(path: str, devices: int, steps: int, job_size: int, seed: int = 0) -> int:
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_jobs = -(-devices // job_size)
    writer = None
    rows = 0
    # written job by job in row groups of ~1e6 rows, sorted by (job, step, device) as a
    # training job logs them; memory stays at one job's slice
    for j in range(n_jobs):
        n = min(job_size, devices - j * job_size)
        base = 0.2 * (1 + 0.007 * rng.standard_normal(n))
        step_block = max(1, 1_000_000 // n)
        e = np.zeros(n)
        for s0 in range(0, steps, step_block):
            T = min(step_block, steps - s0)
            z = rng.standard_normal((T, n)) * 0.02
            x = np.empty((T, n))
            for t in range(T):
                e = 0.5 * e + z[t]
                x[t] = e
            ct = base * np.exp(x)
            st_idx = np.arange(s0, s0 + T)
            ct[st_idx >= steps // 2, 0] *= 1.2
            st = ct.max(axis=1, keepdims=True) + 0.01
            df = pl.DataFrame({
                "job": np.full(T * n, f"job{j:04d}"),
                "device": np.tile(np.array([f"j{j:04d}-gpu{d:04d}" for d in range(n)]), T),
                "step": np.repeat(st_idx, n).astype(np.int64),
                "compute_time": ct.ravel(),
                "step_time": np.broadcast_to(st, ct.shape).ravel(),
            })
            table = df.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=1_000_000)
            rows += df.height
    writer.close()
    del pa
    return rows


def write_counters(path: str, devices: int, samples: int, seed: int = 0) -> int:
    """Device counters, 8 GPUs per host, one sample every 10 s, written 200 GPUs at a time."""
    import polars as pl
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer, rows = None, 0
    for g0 in range(0, devices, 200):
        d = np.arange(g0, min(devices, g0 + 200))
        n = d.size * samples
        df = pl.DataFrame({
            "device": np.tile(np.char.add("GPU-", d.astype(str)), samples),
            "host": np.tile(np.char.add("node-", (d // 8).astype(str)), samples),
            "model": "H100",
            "timestamp": np.repeat(1.7e9 + 10.0 * np.arange(samples), d.size),
            "sm_clock_mhz": 1980.0 + rng.standard_normal(n),
            "power_watts": 500.0 + 5.0 * rng.standard_normal(n),
            "gpu_temp_celsius": 60.0 + rng.standard_normal(n),
        })
        table = df.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1_000_000)
        rows += n
    writer.close()
    return rows


ALIASES = {"job": "job_id", "device": "uuid", "step": "iteration", "compute_time": "compute_seconds"}


def plain_polars(path: str) -> tuple[float, float]:
    import polars as pl

    lf = pl.scan_parquet(path)
    if "uuid" in lf.collect_schema():
        lf = lf.rename({v: k for k, v in ALIASES.items()})
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = (
        lf.sort(["job", "device", "step"])
        .group_by(["job", "device"])
        .agg(pl.col("compute_time").median(), pl.len())
        .collect()
    )
    dt = time.perf_counter() - t0
    assert out.height > 0
    return dt, time.process_time() - c0


def run_degrade(path: str, chunk_rows: int | None, engine: str = "polars"):
    from degrade.analyze import analyze

    c0 = time.process_time()
    t0 = time.perf_counter()
    res = analyze(path, chunk_rows=chunk_rows, engine=engine)
    return time.perf_counter() - t0, time.process_time() - c0, res


def run_io(path: str, chunk_rows: int | None) -> tuple[float, float]:
    """degrade's own data path without the verdict engine: resolve, plan, read, pivot into blocks."""
    from degrade.analyze._inputs import resolve_inputs
    from degrade.analyze._plan import DEFAULT_CHUNK_ROWS, iter_blocks, plan_units
    from degrade.analyze._warnings import WarningLog

    c0 = time.process_time()
    t0 = time.perf_counter()
    log = WarningLog()
    sources = resolve_inputs([path], log)
    units, _ = plan_units(sources, log)
    cells = 0
    for unit in units:
        for block in iter_blocks(unit, sources, log, int(chunk_rows or DEFAULT_CHUNK_ROWS)):
            cells += block.shape[0] * block.shape[1]
    assert cells > 0
    return time.perf_counter() - t0, time.process_time() - c0


_HWM = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # the cwd must not shadow PYTHONPATH
def _hwm():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])  # kB
import atexit
atexit.register(lambda: print("VmHWM", _hwm(), flush=True))
"""

_FLOOR = _HWM + """
import numpy as np, polars as pl
from degrade.analyze import analyze
analyze(pl.DataFrame({"device": ["a", "b", "c"] * 30, "step": np.repeat(np.arange(30), 3),
                      "compute_time": 0.1, "step_time": 0.1}))
"""

_POLARS = _HWM + """
import sys, polars as pl
lf = pl.scan_parquet(sys.argv[1])
if "uuid" in lf.collect_schema():
    lf = lf.rename({"job_id": "job", "uuid": "device", "iteration": "step", "compute_seconds": "compute_time"})
if "step" in lf.collect_schema():
    lf.sort(["job", "device", "step"]).group_by(["job", "device"]).agg(
        pl.col("compute_time").median(), pl.len()).collect()
else:  # counters
    lf.sort(["device", "timestamp"]).group_by("device").agg(
        pl.col("sm_clock_mhz").median(), pl.len()).collect()
"""

_DEGRADE = _FLOOR + """
import json, sys
res = analyze(sys.argv[1], chunk_rows=int(sys.argv[2]))
print(json.dumps({"peak_block_rows": res.stats["peak_block_rows"], "rows": res.stats["rows"],
                  "flagged": sum(str(v.status) in ("degraded", "failed") for v in res.verdicts)}))
"""


def run_memory(path: str, rows: int, chunks: list[int], polars_pass: bool) -> None:
    """Peak RSS of each pass, each in a fresh subprocess (see the module docstring)."""
    import json
    import subprocess
    import sys

    def measure(code, *argv):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise SystemExit(f"pass failed with status {proc.returncode}")
        hwm = [int(x.split()[1]) for x in out.splitlines() if x.startswith("VmHWM ")]
        return hwm[-1] / 1e6, time.perf_counter() - t0, out

    env_note = os.environ.get("PYTHONPATH", "")
    floor, wf, _ = measure(_FLOOR)
    print(f"\n| pass ({rows:,} rows) | peak RSS GB | wall s | ratio to polars |")
    print("|---|---:|---:|---:|")
    ref = None
    if polars_pass:
        ref, wp, _ = measure(_POLARS, path)
        print(f"| polars scan + sort + group-by | {ref:.2f} | {wp:.1f} | 1.00 |")
    print(f"| python + degrade imported, kernels loaded (floor) | {floor:.2f} | {wf:.1f} | "
          + (f"{floor / ref:.2f} |" if ref else "- |"))
    for c in chunks:
        rss, wd, out = measure(_DEGRADE, path, str(c))
        info = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
        ratio = f"{rss / ref:.2f}" if ref else "-"
        print(f"| degrade analyze --chunk-rows {c:,} (peak block {info['peak_block_rows']:,} rows, "
              f"{info['flagged']} flagged) | {rss:.2f} | {wd:.1f} | {ratio} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
          + (f"; PYTHONPATH={env_note}" if env_note else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--job-size", type=int, default=250, help="devices per job (peer group)")
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each; the best is kept")
    ap.add_argument("--dir", default=None, help="where to write the Parquet file (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the file")
    ap.add_argument("--aliases", action="store_true",
                    help="write uuid/iteration/compute_seconds/job_id instead of the canonical names "
                         "(read through degrade.io's aliases; the polars pass sorts the same columns)")
    ap.add_argument("--memory", action="store_true",
                    help="measure peak RSS of each pass in a subprocess instead of timing")
    ap.add_argument("--memory-chunks", default="4000000,1000000,250000",
                    help="with --memory: comma-separated --chunk-rows values to measure")
    ap.add_argument("--counters", action="store_true",
                    help="with --memory: a counters file instead (--devices GPUs, 8 per host, --steps "
                         "samples 10 s apart; the polars pass sorts by device and timestamp)")
    ap.add_argument("--no-polars", action="store_true",
                    help="with --memory: skip the polars pass (its in-memory sort needs ~0.13 GB "
                         "per 1e6 rows)")
    args = ap.parse_args()
    if args.counters and not args.memory:
        ap.error("--counters goes with --memory")

    import polars as pl

    d = args.dir or tempfile.mkdtemp(prefix="degrade-bench-")
    os.makedirs(d, exist_ok=True)
    kind = "counters" if args.counters else "timings"
    path = os.path.join(d, f"{kind}_{args.devices}x{args.steps}{'_aliases' if args.aliases else ''}.parquet")
    t0 = time.perf_counter()
    if not os.path.exists(path):
        if args.counters:
            rows = write_counters(path, args.devices, args.steps)
        else:
            rows = write_dataset(path, args.devices, args.steps, args.job_size)
        if args.aliases:
            tmp = path + ".tmp"
            pl.scan_parquet(path).rename(ALIASES).sink_parquet(tmp)
            os.replace(tmp, path)
    else:
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    print(f"data: {rows:,} rows ({args.devices:,} devices x {args.steps:,} steps, jobs of "
          f"{args.job_size}), {os.path.getsize(path) / 1e6:.0f} MB Parquet, written in "
          f"{time.perf_counter() - t0:.0f} s; polars {pl.__version__}, {os.cpu_count()} CPUs")

    if args.memory:
        run_memory(path, rows, [int(c) for c in args.memory_chunks.split(",")], not args.no_polars)
        if not args.keep and args.dir is None:
            os.remove(path)
            os.rmdir(d)
        return

    # compile (or load from the numba cache) outside the timing
    from degrade.analyze import analyze

    analyze(pl.DataFrame({"device": ["a", "b", "c"] * 30, "step": np.repeat(np.arange(30), 3),
                          "compute_time": 0.1, "step_time": 0.1}))

    tp, td, cp, cd, ti, ci, res = [], [], [], [], [], [], None
    for _ in range(args.repeat):  # interleaved, so all see the same machine load
        w, c = plain_polars(path)
        tp.append(w)
        cp.append(c)
        w, c, res = run_degrade(path, args.chunk_rows)
        td.append(w)
        cd.append(c)
        w, c = run_io(path, args.chunk_rows)
        ti.append(w)
        ci.append(c)
    bp, bd, bcp, bcd, bi, bci = min(tp), min(td), min(cp), min(cd), min(ti), min(ci)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print()
    print("| pass | wall s | rows/s (wall) | CPU s | rows per CPU-s | ratio (wall) | ratio (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| polars scan + sort + group-by | {bp:.2f} | {rows / bp:,.0f} | {bcp:.2f} | "
          f"{rows / bcp:,.0f} | 1.00 | 1.00 |")
    print(f"| degrade analyze (whole analysis) | {bd:.2f} | {rows / bd:,.0f} | {bcd:.2f} | "
          f"{rows / bcd:,.0f} | {bd / bp:.2f} | {bcd / bcp:.2f} |")
    print(f"| degrade read + plan + blocks (no engine, one thread) | {bi:.2f} | {rows / bi:,.0f} | {bci:.2f} | "
          f"{rows / bci:,.0f} | {bi / bp:.2f} | {bci / bcp:.2f} |")
    print(f"\nbest of {args.repeat} interleaved runs; load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    flagged = sorted(v.device for v in res.flagged() if str(v.status) in ("degraded", "failed"))
    n_jobs = -(-args.devices // args.job_size)
    print(f"verdicts: {len(res.verdicts):,}; degraded/failed: {len(flagged)} (planted: {n_jobs}, "
          f"one per job); peak block {res.stats['peak_block_rows']:,} rows / "
          f"{res.stats['peak_block_cells']:,} cells; peak RSS {peak_rss:.1f} GB")
    if not args.keep and args.dir is None:
        os.remove(path)
        os.rmdir(d)


if __name__ == "__main__":
    main()

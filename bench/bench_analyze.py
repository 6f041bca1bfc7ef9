"""Throughput of ``degrade analyze`` beside a plain polars pass over the same file, and where its time goes.

Not a test. Writes one Parquet file of step timings (``--devices`` x
``--steps`` rows, jobs of ``--job-size`` devices, 2 % lognormal AR(1) noise,
one device per job slowed by 20 % halfway), then times, in the same run:

* ``polars``: ``scan_parquet → sort(job, device, step) → group_by(job, step,
  maintain_order=True).agg(median(compute_time), len)`` — the plain pass of
  issue 15: read, sort, and the peers' median per step. ``maintain_order``
  is what makes polars keep the sort: a plain ``group_by`` does not depend on
  row order, and polars' optimiser then drops the sort from the plan
  (``explain()`` shows no SORT), so the pass would not sort at all. With
  ``--peer job`` (the default above 2e7 rows, where one in-memory sort of the
  whole file needs ~1.3 GB per 1e7 rows) the same pass runs job by job
  (``filter(job == j)`` first) and the times are summed;
* ``polars, no sort``: ``group_by(job, step).agg(median)`` straight off the
  scan (job by job with ``--peer job``) — not the peer, a floor: the
  cheapest pass that yields per-step medians at all;
* ``degrade``: ``degrade.analyze.analyze(file)`` — read, validate, plan,
  pivot into blocks, run the verdict engine, collect verdicts, on both
  cores as ``degrade analyze`` runs;

and prints rows per second for each and the ratios (the target: degrade
within 1.2x the plain pass, in wall and in CPU time). Then the same analysis
once more on one thread, each stage timed (wall and CPU): resolve the
inputs, plan (one scan of the metadata), read (Parquet → frames, chunk by
chunk), pivot (frames → (T, N) blocks), engine (the verdict kernel), verdicts
(verdicts and job events from the engine state) and output (the JSON
document): the split of where the time goes. Numba kernels are compiled (or
loaded from cache) before timing.

    python bench/bench_analyze.py                                  # 2,000 x 2,500 = 5e6 rows
    python bench/bench_analyze.py --devices 1000 --steps 10000     # 1e7 rows
    python bench/bench_analyze.py --devices 10000 --steps 10000 --repeat 1   # 1e8 rows

``--memory`` measures peak memory instead: each pass runs in its own
subprocess (``python -c``) and its peak RSS is the child's own ``VmHWM``
(``/proc/self/status``, read by the child as it ends): a new address space
per ``exec``, so neither this process's heap (``ru_maxrss`` keeps the RSS the
child had when forked from us, across ``exec``) nor another pass counts. Passes: the interpreter
with degrade imported and its kernels loaded (the floor), polars' plain
pass above (on the whole file), and ``analyze(file, chunk_rows=N)`` for every ``--memory-chunks``
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


def _canonical(lf):
    if "uuid" in lf.collect_schema():
        lf = lf.rename({v: k for k, v in ALIASES.items()})
    return lf


def _peer_query(lf):
    """Read, sort, peers' median per step; ``maintain_order`` keeps the sort in the plan."""
    import polars as pl

    return (lf.sort(["job", "device", "step"])
            .group_by(["job", "step"], maintain_order=True)
            .agg(pl.col("compute_time").median(), pl.len()))


def plain_polars(path: str, by_job: bool) -> tuple[float, float]:
    """The peer pass (module docstring); ``by_job``: one job at a time, times summed."""
    import polars as pl

    c0 = time.process_time()
    t0 = time.perf_counter()
    lf = _canonical(pl.scan_parquet(path))
    if by_job:
        jobs = lf.select(pl.col("job").unique()).collect().get_column("job").to_list()
        height = sum(_peer_query(lf.filter(pl.col("job") == j)).collect().height for j in jobs)
    else:
        plan = _peer_query(lf)
        assert "SORT BY" in plan.explain(), "polars dropped the sort from the plan"
        height = plan.collect().height
    dt = time.perf_counter() - t0
    assert height > 0
    return dt, time.process_time() - c0


def polars_no_sort(path: str, by_job: bool) -> tuple[float, float]:
    """The floor: per-step medians straight off the scan (no sort); ``by_job`` as the peer."""
    import polars as pl

    def query(lf):
        return lf.group_by(["job", "step"]).agg(pl.col("compute_time").median(), pl.len())

    c0 = time.process_time()
    t0 = time.perf_counter()
    lf = _canonical(pl.scan_parquet(path))
    if by_job:
        jobs = lf.select(pl.col("job").unique()).collect().get_column("job").to_list()
        height = sum(query(lf.filter(pl.col("job") == j)).collect().height for j in jobs)
    else:
        height = query(lf).collect().height
    dt = time.perf_counter() - t0
    assert height > 0
    return dt, time.process_time() - c0


def run_degrade(path: str, chunk_rows: int | None, engine: str = "polars"):
    from degrade.analyze import analyze

    c0 = time.process_time()
    t0 = time.perf_counter()
    res = analyze(path, chunk_rows=chunk_rows, engine=engine)
    return time.perf_counter() - t0, time.process_time() - c0, res


STAGES = ("resolve", "plan", "read", "pivot", "engine", "verdicts", "output")


def _timed_engine(config, prof: dict):
    """A VerdictEngine whose ``run`` adds to stage ``engine`` and whose results to ``verdicts``."""
    from degrade.analyze._plan import _clock
    from degrade.verdict import VerdictEngine

    class Timed(VerdictEngine):
        _busy = False

        def _outer(self, fn, *a, **k):
            # job_events() calls verdicts(): time the outermost call only
            if self._busy:
                return fn(*a, **k)
            self._busy = True
            try:
                with _clock(prof, "verdicts"):
                    return fn(*a, **k)
            finally:
                self._busy = False

        def run(self, *a, **k):
            with _clock(prof, "engine"):
                return super().run(*a, **k)

        def verdicts(self, *a, **k):
            return self._outer(super().verdicts, *a, **k)

        def job_events(self, *a, **k):
            return self._outer(super().job_events, *a, **k)

    if hasattr(VerdictEngine, "job_costs"):  # issue 16's cost per job, where merged
        Timed.job_costs = lambda self, *a, **k: self._outer(super(Timed, self).job_costs, *a, **k)
    return Timed(config)


def profile_degrade(path: str, chunk_rows: int | None) -> dict[str, tuple[float, float]]:
    """The analysis of :func:`degrade.analyze.analyze` on one thread, (wall, CPU) per stage.

    The units run one after the other and each chunk is read, pivoted and
    fed to the engine in turn (no read-ahead), so CPU time is attributed to
    one stage at a time; the stages sum to a single-threaded analysis.
    """
    from degrade.analyze import _plan
    from degrade.analyze._api import AnalysisResult, _engine_config
    from degrade.analyze._inputs import resolve_inputs
    from degrade.analyze._plan import DEFAULT_CHUNK_ROWS, _clock, plan_units, run_unit
    from degrade.analyze._warnings import WarningLog

    prof: dict[str, tuple[float, float]] = {}
    log = WarningLog()
    cfg = _engine_config(None, 0.05)
    with _clock(prof, "resolve"):
        sources = resolve_inputs([path], log)
    with _clock(prof, "plan"):
        units, _ = plan_units(sources, log)
    make_engine = _plan.make_engine
    _plan.make_engine = lambda config: _timed_engine(config, prof)  # run_unit's engine
    try:
        results = [run_unit(u, sources, cfg, int(chunk_rows or DEFAULT_CHUNK_ROWS), profile=prof)
                   for u in units]
    finally:
        _plan.make_engine = make_engine
    with _clock(prof, "output"):
        verdicts = sorted((v for r in results for v in r.verdicts),
                          key=lambda v: (v.job is not None, str(v.job), v.device))
        res = AnalysisResult(verdicts=verdicts, jobs=[e for r in results for e in r.events],
                             inputs=[s.describe() for s in sources], stats={"rows": 0})
        res.to_json()
    return {k: prof.get(k, (0.0, 0.0)) for k in STAGES}


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
    lf.sort(["job", "device", "step"]).group_by(["job", "step"], maintain_order=True).agg(
        pl.col("compute_time").median(), pl.len()).collect()
else:  # counters (maintain_order keeps the sort in the plan)
    lf.sort(["device", "timestamp"]).group_by("device", maintain_order=True).agg(
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
        print(f"| polars scan + sort + median per step | {ref:.2f} | {wp:.1f} | 1.00 |")
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
    ap.add_argument("--peer", choices=("auto", "file", "job"), default="auto",
                    help="the polars pass over the whole file at once, or job by job (auto: job by "
                         "job above 2e7 rows, where one in-memory sort needs several GB)")
    ap.add_argument("--no-profile", action="store_true", help="skip the stage-by-stage split")
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

    by_job = args.peer == "job" or (args.peer == "auto" and rows > 20_000_000)
    runs: dict[str, list[tuple[float, float]]] = {"peer": [], "floor": [], "degrade": []}
    res = None
    for _ in range(args.repeat):  # interleaved, so all see the same machine load
        runs["peer"].append(plain_polars(path, by_job))
        runs["floor"].append(polars_no_sort(path, by_job))
        w, c, res = run_degrade(path, args.chunk_rows)
        runs["degrade"].append((w, c))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    bp, bcp = best["peer"]
    print()
    print("| pass | wall s | rows/s (wall) | CPU s | rows per CPU-s | ratio (wall) | ratio (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    names = {"peer": "polars read + sort + median per step" + (" (job by job)" if by_job else ""),
             "floor": "polars median per step, no sort (floor, not the peer)"
             + (" (job by job)" if by_job else ""),
             "degrade": "degrade analyze (whole analysis, 2 threads)"}
    for k in ("peer", "degrade", "floor"):
        w, c = best[k]
        print(f"| {names[k]} | {w:.2f} | {rows / w:,.0f} | {c:.2f} | {rows / c:,.0f} | "
              f"{w / bp:.2f} | {c / bcp:.2f} |")
    print(f"\nbest of {args.repeat} interleaved runs; load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.repeat > 1:
        # per run, degrade against the peer of the same round: the spread a loaded machine gives
        rw = sorted(d[0] / p[0] for d, p in zip(runs["degrade"], runs["peer"]))
        rc = sorted(d[1] / p[1] for d, p in zip(runs["degrade"], runs["peer"]))
        print(f"degrade / peer per round: wall {', '.join(f'{r:.2f}' for r in rw)}; "
              f"CPU {', '.join(f'{r:.2f}' for r in rc)} (sorted)")

    if not args.no_profile:
        prof = profile_degrade(path, args.chunk_rows)
        tw = sum(w for w, _ in prof.values())
        tc = sum(c for _, c in prof.values())
        print(f"\nwhere the time goes (the same analysis on one thread, stage by stage; "
              f"CPU ratios against the peer's {bcp:.2f} CPU s):\n")
        print("| stage | wall s | CPU s | share of CPU | CPU / peer's CPU |")
        print("|---|---:|---:|---:|---:|")
        for k in STAGES:
            w, c = prof[k]
            print(f"| {k} | {w:.2f} | {c:.2f} | {100 * c / tc:.0f} % | {c / bcp:.2f} |")
        print(f"| **total, one thread** | {tw:.2f} | {tc:.2f} | 100 % | {tc / bcp:.2f} |")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    flagged = sorted(v.device for v in res.flagged() if str(v.status) in ("degraded", "failed"))
    n_jobs = -(-args.devices // args.job_size)
    print(f"\nverdicts: {len(res.verdicts):,}; degraded/failed: {len(flagged)} (planted: {n_jobs}, "
          f"one per job); peak block {res.stats['peak_block_rows']:,} rows / "
          f"{res.stats['peak_block_cells']:,} cells; peak RSS of this process {peak_rss:.1f} GB "
          "(all passes; --memory measures each alone)")
    if not args.keep and args.dir is None:
        os.remove(path)
        os.rmdir(d)


if __name__ == "__main__":
    main()

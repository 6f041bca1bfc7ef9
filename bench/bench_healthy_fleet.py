"""False alarms on a large healthy fleet: degrade beside the NVRx-style rule.

Not a test. Simulates the ``healthy_only`` scenario (healthy structure only:
AR(1) lognormal noise, spikes, checkpoints, evaluation steps, a fleet-wide
schedule change) job by job — ``--jobs`` data-parallel jobs of 32 GPUs for
``--steps`` steps — writes each job's timings and counters as Parquet, then
runs ``degrade.analyze`` over the whole directory (streamed job by job, the
way a dataset larger than memory is analysed). Every verdict other than
healthy is a false alarm. The NVRx-style rule (bench_quality.nvrx_baseline)
runs on the same timings, job by job, in the same run.

Usage::

    python bench/bench_healthy_fleet.py --jobs 32 --steps 100000   # 1,024 GPUs x 1e5 steps = 1.0e8 rows
    python bench/bench_healthy_fleet.py --jobs 4 --steps 5000       # quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import nvrx_baseline  # noqa: E402

from degrade.analyze import analyze  # noqa: E402
from degrade.simulate import load_scenario, simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=32, help="data-parallel jobs of 32 GPUs each")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--dir", default=None, help="where to write the Parquet files (default: a temp dir)")
    args = ap.parse_args()

    out = Path(args.dir or tempfile.mkdtemp(prefix="degrade-healthy-"))
    out.mkdir(parents=True, exist_ok=True)
    scen = load_scenario("healthy_only")
    base = scen.jobs[0]
    base.count = 1
    base.steps = args.steps
    scen.jobs = [base]

    t0 = time.perf_counter()
    rows = 0
    device_hours = 0.0
    nvrx = Counter()
    for j in range(args.jobs):
        sim = simulate(scen, seed=1000 + j)
        name = f"healthy-{j:03d}"
        tim = sim.timings.with_columns(pl.lit(name).alias("job"))
        rows += tim.height
        span = tim.group_by("device").agg((pl.col("timestamp").max() - pl.col("timestamp").min()).alias("s"))
        device_hours += float(span["s"].sum()) / 3600.0
        tim.write_parquet(out / f"timings_{name}.parquet")
        sim.counters.write_parquet(out / f"counters_{name}.parquet")
        nvrx.update(v["status"] for v in nvrx_baseline(tim))
        del sim, tim
    t_sim = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = analyze([str(out)])
    t_analyze = time.perf_counter() - t0
    ours = Counter(str(v.status) for v in res.verdicts)
    n_dev = sum(ours.values())

    print(f"## healthy fleet: {n_dev} GPUs in {args.jobs} jobs x {args.steps} steps "
          f"({rows:,} timing rows, {device_hours:,.0f} device-hours)\n")
    print("| method | degraded | failed | suspect | unknown | healthy | degraded+failed per 1000 device-hours |")
    print("|---|---|---|---|---|---|---|")
    for name, c in (("degrade", ours), ("nvrx-style", nvrx)):
        bad = c.get("degraded", 0) + c.get("failed", 0)
        print(f"| {name} | {c.get('degraded', 0)} | {c.get('failed', 0)} | {c.get('suspect', 0)} | "
              f"{c.get('unknown', 0)} | {c.get('healthy', 0)} | {1000 * bad / device_hours:.3f} |")
    print(f"\nsimulate + write + NVRx-style: {t_sim:.1f} s; degrade analyze: {t_analyze:.1f} s "
          f"({rows / t_analyze:,.0f} rows/s); files in {out}")
    if not args.dir:
        for f in out.iterdir():
            os.unlink(f)
        out.rmdir()


if __name__ == "__main__":
    main()

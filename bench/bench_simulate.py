"""Simulator and reader throughput, each beside a plain-polars/NumPy floor from the same run.

    python bench/bench_simulate.py [--scenario fleet_bench] [--repeat 3]

- simulate: rows/s of degrade.simulate vs the floor "draw one lognormal per
  timing row" (NumPy): the ratio is how many times the bare noise draw the
  whole simulation (structure, faults, counters, polars frames) costs.
- read_timings / read_counters: degrade's validated, deduplicated, sorted
  read of the Parquet files vs pl.scan_parquet(...).collect() alone; also
  read_timings of a file already in (job, device, step) order (no sort
  needed) and of one job (the filter pushed into the scan).
- dcgm long layout: read_counters on a Prometheus export vs polars' own
  eager pivot of the same rows (no unit conversion, no validation).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def best(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="fleet_bench")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)

    import polars as pl

    from degrade.io import read_counters, read_timings
    from degrade.simulate import simulate

    res = simulate(a.scenario)
    n_t, n_c = res.timings.height, res.counters.height
    t_sim = best(lambda: simulate(a.scenario), a.repeat)
    rng = np.random.default_rng(0)
    t_floor = best(lambda: rng.lognormal(0.0, 0.02, n_t), a.repeat)
    rows = [("simulate", f"{n_t:,} timing + {n_c:,} counter rows", t_sim, "numpy lognormal per row", t_floor)]

    with tempfile.TemporaryDirectory() as d:
        paths = res.write(d)
        t_rt = best(lambda: read_timings(paths["timings"]).collect(), a.repeat)
        t_pt = best(lambda: pl.scan_parquet(paths["timings"]).collect(), a.repeat)
        rows.append(("read_timings", f"{n_t:,} rows", t_rt, "pl.scan_parquet().collect()", t_pt))
        # a file already in (job, device, step) order, as a job's own per-rank log often is:
        # the reader checks the order and skips the sort
        sp = os.path.join(d, "timings_sorted.parquet")
        res.timings.sort(["job", "device", "step"], maintain_order=True).write_parquet(sp)
        t_rs = best(lambda: read_timings(sp).collect(), a.repeat)
        t_ps = best(lambda: pl.scan_parquet(sp).collect(), a.repeat)
        rows.append(("read_timings (in key order)", f"{n_t:,} rows", t_rs, "pl.scan_parquet().collect()", t_ps))
        # one job of many, as degrade analyze reads it: the filter must reach the scan
        job = res.timings.get_column("job")[0]
        t_rj = best(lambda: read_timings(paths["timings"], jobs=job).collect(), a.repeat)
        t_pj = best(lambda: pl.scan_parquet(paths["timings"]).filter(pl.col("job") == job).collect(), a.repeat)
        rows.append(("read_timings(jobs=one)", f"job {job}", t_rj, "scan_parquet().filter().collect()", t_pj))
        t_rc = best(lambda: read_counters(paths["counters"]).collect(), a.repeat)
        t_pc = best(lambda: pl.scan_parquet(paths["counters"]).collect(), a.repeat)
        rows.append(("read_counters", f"{n_c:,} rows", t_rc, "pl.scan_parquet().collect()", t_pc))

        metrics = {"sm_clock_mhz": "DCGM_FI_DEV_SM_CLOCK", "gpu_temp_celsius": "DCGM_FI_DEV_GPU_TEMP",
                   "power_watts": "DCGM_FI_DEV_POWER_USAGE", "clock_event_reasons": "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"}
        long = (
            res.counters.select(["uuid", "host", "gpu", "timestamp", *metrics])
            .rename({"uuid": "UUID", "host": "Hostname"} | metrics)
            .unpivot(index=["UUID", "Hostname", "gpu", "timestamp"], variable_name="__name__", value_name="value")
            .with_columns(pl.col("value").cast(pl.Float64), (pl.col("timestamp") * 1000).cast(pl.Int64))
        )
        lp = os.path.join(d, "prom.parquet")
        long.write_parquet(lp)
        t_rl = best(lambda: read_counters(lp).collect(), a.repeat)
        t_pl = best(lambda: pl.read_parquet(lp).pivot(on="__name__", index=["UUID", "Hostname", "gpu", "timestamp"],
                                                      values="value"), a.repeat)
        rows.append(("read_counters (dcgm long)", f"{long.height:,} samples", t_rl, "pl.read_parquet().pivot()", t_pl))

    print(f"{'task':<29}{'size':<40}{'degrade s':>10}{'peer':>35}{'peer s':>9}{'ratio':>8}")
    for task, size, ours, peer, theirs in rows:
        print(f"{task:<29}{size:<40}{ours:>10.3f}{peer:>35}{theirs:>9.3f}{ours / theirs:>8.2f}")
    print(f"simulate: {n_t / t_sim / 1e6:.2f} M timing rows/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

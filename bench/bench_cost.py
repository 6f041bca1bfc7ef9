"""Lost time: the engine's estimate against the simulator's ground truth (docs/cost.md).

For each topology (data parallel, microbatch pipeline, independent replicas,
and data parallel under heavy-tailed autocorrelated noise) a simulated job
with several faults — slow from step 0, late onsets, a drift, intermittent
stalls, a PCIe link flagged by its counters, missing rows, an elastic
restart — is analysed with ``degrade.analyze``; the
estimated ``lost_seconds`` of each flagged device and of the job are printed
beside the simulator's truth (actual wall time minus the wall time with that
fault removed, same noise) with the relative error. The peer figure is the
naive estimate an operator would make without the critical path: the device's
own excess, ``its time x slowdown / (1 + slowdown)`` summed from onset, for
every topology.

    python bench/bench_cost.py            # ~1-2 min on a 2-core machine
    python bench/bench_cost.py --seeds 3  # more seeds per topology
    python bench/bench_cost.py --overhead # also: CPU cost of the meter in degrade analyze
"""

from __future__ import annotations

import argparse
import math
import time

from degrade.analyze import analyze
from degrade.simulate import FaultSpec, JobSpec, Scenario, simulate


def scenarios() -> dict[str, Scenario]:
    dp = Scenario(
        name="cost-dp",
        jobs=[
            JobSpec(
                name="dp",
                kind="data_parallel",
                hosts=2,
                gpus_per_host=8,
                steps=1500,
                compute_time=0.5,
                comm_time=0.08,
                ar=0.3,
                checkpoint_every=500,
                checkpoint_time=8.0,
                missing_rate=0.03,
            ),
            JobSpec(
                name="dp-elastic",
                kind="data_parallel",
                hosts=2,
                gpus_per_host=8,
                steps=1500,
                compute_time=0.4,
                comm_time=0.05,
                elastic=[[800, 2, 2]],
            ),
        ],
        faults=[
            FaultSpec(job="dp", device=3, type="slowdown", onset_step=400, magnitude=0.15),
            FaultSpec(
                job="dp", device=9, type="slowdown", onset_step=0, magnitude=0.08
            ),  # slow from step 0
            FaultSpec(job="dp-elastic", device=5, type="thermal", onset_step=300, magnitude=0.2),
        ],
    )
    pp = Scenario(
        name="cost-pipeline",
        jobs=[
            JobSpec(
                name="pp",
                kind="pipeline",
                hosts=2,
                gpus_per_host=8,
                steps=1500,
                compute_time=0.8,
                comm_time=0.1,
                stage_times=[1.0, 0.9, 0.95, 1.1],
                microbatches=8,
                ar=0.3,
            ),
        ],
        faults=[
            FaultSpec(
                job="pp", device=7, type="slowdown", onset_step=300, magnitude=0.2
            ),  # bottleneck stage 3
            FaultSpec(
                job="pp", device=9, type="slowdown", onset_step=600, magnitude=0.25
            ),  # stage 1: slack first
        ],
    )
    rep = Scenario(
        name="cost-replicas",
        jobs=[
            JobSpec(
                name="serve",
                kind="inference",
                hosts=1,
                gpus_per_host=8,
                steps=2000,
                compute_time=0.25,
                comm_time=0.01,
                noise=0.04,
                missing_rate=0.02,
            ),
        ],
        faults=[
            FaultSpec(job="serve", device=2, type="slowdown", onset_step=500, magnitude=0.12),
            FaultSpec(job="serve", device=6, type="drift", onset_step=200, magnitude=0.3),
        ],
    )
    hard = Scenario(
        name="cost-hard",
        jobs=[
            JobSpec(
                name="noisy",
                hosts=2,
                gpus_per_host=8,
                steps=1500,
                compute_time=0.5,
                comm_time=0.08,
                noise=0.04,
                ar=0.6,
                spike_prob=0.01,
                noise_family="t",
            ),
        ],
        faults=[
            FaultSpec(job="noisy", device=2, type="slowdown", onset_step=300, magnitude=0.06),
            FaultSpec(job="noisy", device=5, type="drift", onset_step=200, magnitude=0.25),
            FaultSpec(
                job="noisy", device=11, type="stall", onset_step=400, magnitude=0.3
            ),  # intermittent
            FaultSpec(
                job="noisy", device=13, type="pcie_downgrade", onset_step=100
            ),  # a hard signal
        ],
    )
    return {"data_parallel": dp, "pipeline": pp, "replicas": rep, "dp_hard_noise": hard}


def naive(res, sim) -> dict[str, float]:
    """The device's own excess from onset: what one would say without the critical path."""
    import polars as pl

    out = {}
    t = sim.timings
    for v in res.verdicts:
        if v.lost_seconds is None or not v.slowdown:
            continue
        x = t.filter((pl.col("device") == v.device) & (pl.col("step") >= (v.onset_step or 0)))
        busy = float(x.get_column("compute_time").sum())
        out[v.device] = busy * v.slowdown / (1 + v.slowdown)
    return out


def rel(a: float | None, b: float) -> float:
    if a is None or b <= 0:
        return math.nan
    return (a - b) / b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument(
        "--overhead", action="store_true", help="time degrade analyze with and without the meter"
    )
    args = ap.parse_args()
    worst: dict[str, float] = {}
    worst_naive: dict[str, float] = {}
    t0, w0 = time.process_time(), time.perf_counter()
    print(
        f"{'topology':<14}{'seed':>5} {'what':<22}{'true s':>10}{'est s':>10}{'err':>8}{'naive s':>10}{'err':>8}"
    )
    for topo, sc in scenarios().items():
        for seed in range(args.seeds):
            sim = simulate(sc, seed=seed)
            res = analyze([sim.timings, sim.counters])
            est = {(v.job, v.device): v.lost_seconds for v in res.verdicts}
            nv = naive(res, sim)
            costs = {c.job: c for c in res.costs}
            for row in sim.lost.iter_rows(named=True):
                if row["device"] is None:
                    c = costs.get(row["job"])
                    e = None if c is None else c.lost_seconds
                    what, n = f"job {row['job']}", None
                else:
                    e = est.get((row["job"], row["device"]))
                    n = nv.get(row["device"])
                    what = f"{row['fault']} {row['device'][4:12]}"
                err = rel(e, row["lost_seconds"])
                nerr = rel(n, row["lost_seconds"]) if n is not None else math.nan
                if math.isfinite(err):
                    worst[topo] = max(worst.get(topo, 0.0), abs(err))
                if math.isfinite(nerr):
                    worst_naive[topo] = max(worst_naive.get(topo, 0.0), abs(nerr))
                print(
                    f"{topo:<14}{seed:>5} {what:<22}{row['lost_seconds']:>10.2f}"
                    f"{(e if e is not None else math.nan):>10.2f}{err:>+8.1%}"
                    f"{(n if n is not None else math.nan):>10.2f}{nerr:>+8.1%}"
                )
    print()
    print(
        "worst |relative error| per topology (target: 15 %); the naive own-excess estimate beside it"
    )
    for topo in scenarios():
        print(
            f"  {topo:<14} critical path {worst.get(topo, math.nan):6.1%}   naive {worst_naive.get(topo, math.nan):7.1%}"
        )
    print(
        f"{time.process_time() - t0:.1f} CPU-s, {time.perf_counter() - w0:.1f} s wall (shared 2-core machine)"
    )
    if args.overhead:
        overhead()


def overhead(repeats: int = 3) -> None:
    """CPU seconds of degrade analyze on the fleet_bench timings with the cost meter and without it."""
    import degrade.verdict._cost as C

    sim = simulate("fleet_bench", seed=0)
    tim = sim.timings
    analyze([tim])  # compile
    orig = C.CostMeter.add

    def timed(off: bool) -> float:
        if off:
            C.CostMeter.add = lambda self, *a, **k: False
        try:
            t = time.process_time()
            analyze([tim])
            return time.process_time() - t
        finally:
            C.CostMeter.add = orig

    on = min(timed(False) for _ in range(repeats))
    off = min(timed(True) for _ in range(repeats))
    print(
        f"degrade analyze, {tim.height:,} timing rows: {on:.2f} CPU-s with the meter, {off:.2f} without "
        f"(x{on / off:.2f}, best of {repeats})"
    )


if __name__ == "__main__":
    main()

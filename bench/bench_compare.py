"""Power and false-positive rate of ``degrade compare`` on simulated driver roll-outs.

For each fleet size and true slowdown of the new driver (0 = a null
roll-out, then 1, 2, 3 %), ``--reps`` roll-outs are simulated
(degrade.simulate.simulate_rollout: half the hosts of every job on the new
driver) and compared. Printed per setting: the share flagged ``regression``
(the false-positive rate at 0 %, the power otherwise), the coverage of the
95 % CI and the mean estimate, beside a peer from the same run: the naive
test that takes every step as a unit (a Welch t-test of the per-step
log-ratios to the peer median, pooled over jobs), which ignores that a
device's steps share its own offset and so are not independent.
Confounded roll-outs (the new driver only on jobs of another kind) must be
refused every time.

Run: ``PYTHONPATH=$PWD python bench/bench_compare.py --reps 200``
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np


def _naive_step_test(timings, labels, label, new):
    """Welch t-test with steps as units: the per-step log-ratio to the group median, by cohort."""
    import polars as pl

    from degrade.cohort._stats import t_quantile, t_sf

    lv = pl.col("compute_time").log()
    d = (
        timings.join(labels, on="host")
        .with_columns((lv - lv.median().over(["job", "group", "step"])).alias("dev"))
        .select("dev", (pl.col(label) == new).alias("new"))
    )
    a = d.filter(pl.col("new"))["dev"].to_numpy()
    b = d.filter(~pl.col("new"))["dev"].to_numpy()
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    est = a.mean() - b.mean()
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (a.size - 1) + vb * vb / (b.size - 1))
    q = t_quantile(0.975, df)
    return est - q * se > 0, (est - q * se, est + q * se), t_sf(est / se, df)


def run(fleet: dict, slowdowns, reps: int, seed0: int, unit: str = "device"):
    from degrade.cohort import compare
    from degrade.simulate import simulate_rollout

    rows = []
    for i, slow in enumerate(slowdowns):
        flagged = covered = naive_flagged = naive_covered = warned = 0
        est = []
        cpu = 0.0
        for r in range(reps):
            # fresh seeds per setting: the settings' coverages are independent estimates
            ro = simulate_rollout(slowdown=slow, seed=seed0 + 100_000 * i + r, **fleet)
            t0 = time.process_time()
            full = compare(ro.timings, ro.label, labels=ro.labels, unit=unit)
            res = full.result(ro.new)
            cpu += time.process_time() - t0
            warned += any("--unit host" in w for w in full.warnings)
            flagged += res.verdict == "regression"
            covered += res.ci_low <= slow <= res.ci_high
            est.append(res.slowdown)
            nf, (lo, hi), _ = _naive_step_test(ro.timings, ro.labels, ro.label, ro.new)
            naive_flagged += nf
            naive_covered += math.expm1(lo) <= slow <= math.expm1(hi)
        rows.append(
            dict(
                slowdown=slow,
                flagged=flagged / reps,
                coverage=covered / reps,
                mean=float(np.mean(est)),
                naive_flagged=naive_flagged / reps,
                naive_coverage=naive_covered / reps,
                cpu_ms=1e3 * cpu / reps,
                warned=warned / reps,
            )
        )
    return rows


def confounded(fleet: dict, reps: int, seed0: int) -> float:
    from degrade.cohort import compare
    from degrade.errors import InputError
    from degrade.simulate import simulate_rollout

    refused = 0
    for r in range(reps):
        f = {**fleet, "jobs": max(2, fleet["jobs"])}  # one job of each kind at least
        ro = simulate_rollout(slowdown=0.03, confounded=True, seed=seed0 + r, **f)
        try:
            compare(ro.timings, ro.label, labels=ro.labels)
        except InputError:
            refused += 1
    return refused / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200, help="roll-outs per setting (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="first seed")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument(
        "--sections",
        default="power,host",
        help="power: power and false positives by fleet size; host: a 1 %% host-wide effect, "
        "device vs host units (default both)",
    )
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    fleets = {
        "one job: 1 job x 2 hosts x 8 GPUs": dict(
            jobs=1, hosts=2, gpus_per_host=8, steps=args.steps
        ),
        "small: 2 jobs x 2 hosts x 8 GPUs": dict(
            jobs=2, hosts=2, gpus_per_host=8, steps=args.steps
        ),
        "medium: 8 jobs x 4 hosts x 8 GPUs": dict(
            jobs=8, hosts=4, gpus_per_host=8, steps=args.steps
        ),
    }
    t0 = time.perf_counter()
    print(
        f"reps={args.reps} per setting, steps={args.steps}, new driver on half the hosts of every job;"
    )
    print("'flagged' = share with verdict regression (false-positive rate at 0 %, power otherwise)")
    print("naive = Welch t-test with steps as units (peer, same roll-outs)\n")
    head = (
        f"{'fleet':36} {'slowdown':>8} {'flagged':>8} {'CI cover':>8} {'mean est':>9} "
        f"{'naive flag':>10} {'naive cover':>11} {'naive/ours':>10} {'cpu ms':>7}"
    )
    print(head)
    for name, fleet in fleets.items() if "power" in sections else ():
        for row in run(fleet, (0.0, 0.01, 0.02, 0.03), args.reps, args.seed):
            ratio = row["naive_flagged"] / row["flagged"] if row["flagged"] else float("inf")
            print(
                f"{name:36} {row['slowdown']:>8.0%} {row['flagged']:>8.3f} {row['coverage']:>8.3f} "
                f"{row['mean']:>+9.4f} {row['naive_flagged']:>10.3f} {row['naive_coverage']:>11.3f} "
                f"{ratio:>10.2f} {row['cpu_ms']:>7.1f}"
            )
        conf = confounded(fleet, max(10, args.reps // 10), args.seed)
        print(f"{name:36} confounded roll-outs refused: {conf:.0%}")
    if "host" in sections:
        # drivers are per node: a host-wide factor besides the driver (1 % log sd) makes a host's
        # devices alike; device units then overstate the evidence, host units do not
        fleet = dict(jobs=4, hosts=6, gpus_per_host=8, steps=args.steps, host_sd=0.01)
        for unit in ("device", "host"):
            name = f"host effect 1 %, 4x6x8, unit={unit}"
            for row in run(fleet, (0.0, 0.03), args.reps, args.seed + 7, unit=unit):
                print(
                    f"{name:36} {row['slowdown']:>8.0%} {row['flagged']:>8.3f} {row['coverage']:>8.3f} "
                    f"{row['mean']:>+9.4f} {row['naive_flagged']:>10.3f} {row['naive_coverage']:>11.3f} "
                    f"{'':>10} {row['cpu_ms']:>7.1f}  host warning {row['warned']:.0%}"
                )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nwall {time.perf_counter() - t0:.0f} s, CPU {time.process_time():.0f} s, max RSS {rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()

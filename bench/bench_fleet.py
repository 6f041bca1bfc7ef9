"""Fleet memory: power of the accumulated test across short jobs, and its false-positive rate.

A device 6 % slower than its peers runs in five 200-step jobs; each job alone
is judged by the verdict engine (the peer in this comparison: its single-job
verdict), and the fleet history combines the jobs' peer excess and standard
error (degrade.fleet). Healthy devices (persistent offsets within +-2 %, and
the worst case: exactly healthy_offset = 3 % above their peers) run in many
short jobs; the share of device histories ever flagged is the false-positive
rate, to be compared with the per-device budget alpha.

    PYTHONPATH=$PWD python bench/bench_fleet.py            # ~1-2 min CPU
    PYTHONPATH=$PWD python bench/bench_fleet.py --quick    # smaller
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import numpy as np

from degrade.fleet import accumulate
from degrade.simulate import NoiseSpec, simulate_times
from degrade.verdict import VerdictEngine

FAMILIES = {
    "gaussian AR(0.8) sd 5 %": NoiseSpec(sd=0.05, phi=0.8),
    "Student-t3 AR(0.5) sd 4 %": NoiseSpec(family="t", nu=3.0, sd=0.04, phi=0.5),
    "gaussian AR(0.9) sd 3 % + spikes": NoiseSpec(sd=0.03, phi=0.9, spike_prob=0.005),
}


def job(spec: NoiseSpec, offsets: np.ndarray, seed: int, steps: int):
    """One job: the engine's verdicts (status, peer_excess, se) of N devices with the given offsets."""
    n = offsets.size
    tm = simulate_times(steps, n, spec, seed=seed)
    x = tm.compute * (1.0 + offsets)[None, :]
    step = x.max(axis=1, keepdims=True) + (tm.step - tm.compute.max(axis=1, keepdims=True))
    eng = VerdictEngine()
    eng.run([f"g{i}" for i in range(n)], {"compute_time": x, "step_time": step})
    out = []
    for v in eng.verdicts():
        s = v.signals
        out.append((str(v.status), s["peer_excess"], s["peer_excess_se"]))
    return out


def power(spec, *, trials, jobs, steps, n, slow, alpha, mu0, seed0):
    found_by = np.zeros(jobs, dtype=int)
    single = 0
    single_any = 0
    for r in range(trials):
        rng = np.random.default_rng(seed0 + r)
        ev = []
        flagged = False
        for j in range(jobs):
            off = rng.uniform(-0.02, 0.02, n)
            off[0] = slow
            v = job(spec, off, int(rng.integers(2**62)), steps)[0]
            single += v[0] == "degraded"
            flagged |= v[0] == "degraded"
            ev.append((f"j{j}", v[1], v[2]))
            acc = accumulate(ev, mu0=mu0, alpha=alpha)
            if acc.found:
                found_by[j:] += 1
                # the rest of the trial's jobs change nothing once found
                break
        else:
            pass
        single_any += flagged
    return found_by / trials, single / (trials * jobs), single_any / trials


def false_positives(spec, *, histories, jobs, steps, n, alpha, mu0, seed0, at_offset=None):
    """Share of healthy device histories ever flagged over ``jobs`` jobs (one history per device slot)."""
    reps = math.ceil(histories / (n // 4 if at_offset is not None else n))
    flagged = total = 0
    zs = []
    for r in range(reps):
        rng = np.random.default_rng(seed0 + r)
        base = rng.uniform(-0.02, 0.02, n)
        if at_offset is not None:
            # a quarter of the devices sit exactly at healthy_offset above the rest: the boundary of H0
            base[:] = 0.0
            base[: n // 4] = at_offset
        ev = [[] for _ in range(n)]
        for j in range(jobs):
            for d, (_, x, s) in enumerate(job(spec, base, int(rng.integers(2**62)), steps)):
                ev[d].append((f"j{j}", x, s))
                if x is not None and s and (at_offset is None or d < n // 4):
                    zs.append((x - mu0) / s)
        devs = range(n // 4) if at_offset is not None else range(n)
        for d in devs:
            flagged += accumulate(ev[d], mu0=mu0, alpha=alpha).found
            total += 1
    zs = np.asarray(zs)
    return flagged / total, total, float(zs.std()) if zs.size else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    trials = 40 if a.quick else 200
    hist = 400 if a.quick else 2000
    mu0 = math.log1p(0.03)
    t0, c0 = time.perf_counter(), time.process_time()
    print(
        "Fleet memory: a device 6 % slower than its peers in five 200-step jobs (8 devices per job)"
    )
    print(
        f"{'noise':34s} {'single job':>11s} {'any of 5':>9s} "
        + " ".join(f"{'fleet k=' + str(k):>10s}" for k in range(1, 6))
        + "   (alpha 1e-4 per device)"
    )
    for name, spec in FAMILIES.items():
        by, single, anyj = power(
            spec,
            trials=trials,
            jobs=5,
            steps=200,
            n=8,
            slow=0.06,
            alpha=1e-4,
            mu0=mu0,
            seed0=a.seed * 100_000,
        )
        print(
            f"{name:34s} {single:11.3f} {anyj:9.3f} "
            + " ".join(f"{p:10.3f}" for p in by)
            + f"   ratio fleet/single-job at 5 jobs: {by[-1] / max(anyj, 1e-9):.1f}x"
            if anyj
            else f"{name:34s} {single:11.3f} {anyj:9.3f} " + " ".join(f"{p:10.3f}" for p in by)
        )
    print()
    print(
        f"False positives: healthy devices, 20 jobs of 200 steps each, {hist} device histories per row"
    )
    print(
        f"{'noise':34s} {'offsets':>14s} {'alpha':>7s} {'flagged':>9s} {'histories':>9s} {'sd(z)':>6s}   (sd of each job's z at the boundary: <= 1 is conservative)"
    )
    for name, spec in FAMILIES.items():
        for alpha in (1e-2, 1e-3):
            fp, tot, sd = false_positives(
                spec,
                histories=hist,
                jobs=20,
                steps=200,
                n=16,
                alpha=alpha,
                mu0=mu0,
                seed0=a.seed * 100_000 + 7,
            )
            print(f"{name:34s} {'U(+-2 %)':>14s} {alpha:7.0e} {fp:9.4f} {tot:9d} {'':>6s}")
        fp, tot, sd = false_positives(
            spec,
            histories=max(hist // 8, 50),
            jobs=20,
            steps=200,
            n=16,
            alpha=1e-2,
            mu0=mu0,
            seed0=a.seed * 100_000 + 11,
            at_offset=0.03,
        )
        print(f"{name:34s} {'+3 % (worst)':>14s} {1e-2:7.0e} {fp:9.4f} {tot:9d} {sd:6.2f}")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"\n{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU, "
        f"peak RSS {ru.ru_maxrss / 1024:.0f} MiB (shared 2-core machine)"
    )


if __name__ == "__main__":
    main()

"""Calibration of the verdicts: false alarms against their target, power against faults.

Not a test. Runs the real verdict engine (``degrade.verdict.VerdictEngine``,
public API only: ``run``, ``verdicts``, ``job_events``) on healthy fleets drawn
from the simulator's noise families (``degrade.simulate.NoiseSpec``) and on
fleets with one injected fault per job, and prints, from the same run, two
simple peer rules on the same arrays:

- ``nvrx``: the NVRx-style straggler rule of bench/bench_quality.py
  (100-step window medians; a device is degraded when the fastest median is
  below 0.75 x its own);
- ``thresh5``: a plain 5 % threshold (100-step window median at least 5 %
  above the median of all devices' window medians).

Units: one sample per device per second, so a device-hour is 3,600
samples. The target is what ``EngineConfig.arl0`` promises: one false alarm
per ``arl0`` samples of a device (3.6e6 / arl0 per 1,000 device-hours at 1 Hz).

Sections:

1. healthy grid: noise families x fleet sizes x run lengths, batch semantics
   (``latch=True``, as ``degrade analyze``): devices degraded / suspect at
   the end of each run, per 1,000 device-hours beside the target, the
   fraction of healthy devices suspect per run, and job events;
2. power: 3/5/7/10/20 % steps (onset mid-run and from the first step),
   drifts (onset error) and intermittent faults at 2 % Gaussian noise and
   (not with ``--quick``) 3 % t(3) AR(0.8) noise: found / runs and median delay;
3. ``--targets``: achieved false-alarm rate against ``arl0`` in 1e4..1e6, by
   streaming (``latch=False``) in blocks of ``recovery`` samples and counting
   alarm episodes, at the design point (devices ``healthy_offset`` slower than
   their peers, where the engine states its ``arl0``) and at offset 0.

Usage::

    python bench/bench_calibration.py            # default: ~3-5 min on the shared 2-core machine
    python bench/bench_calibration.py --quick    # ~1 min
    python bench/bench_calibration.py --full     # the issue's grid (8..1,024 devices x 1e3..1e5 steps), ~1 h
    python bench/bench_calibration.py --targets  # only section 3 (default sizes; with --full, up to 1e6)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrade.errors import DataWarning  # noqa: E402
from degrade.simulate import Fault, NoiseSpec, simulate_times  # noqa: E402
from degrade.verdict import EngineConfig, VerdictEngine  # noqa: E402

JOB_SIZE = 256  # a fleet is jobs of at most this many devices (one peer group each)
WINDOW = 100  # peer rules' window


# ----------------------------------------------------------------- families
def family(name: str, T: int) -> NoiseSpec:
    """The healthy noise families of the grid (2 % sd unless stated)."""
    r2 = (T // 3, 2 * T // 3)
    per = max(T // 10, 50) if T < 10_000 else 1000
    table = {
        "gaussian": NoiseSpec(sd=0.02),
        "t3": NoiseSpec(family="t", nu=3.0, sd=0.02),
        "t2.5": NoiseSpec(family="t", nu=2.5, sd=0.02),
        "ar0.5": NoiseSpec(sd=0.02, phi=0.5),
        "ar0.8": NoiseSpec(sd=0.02, phi=0.8),
        "ar0.95": NoiseSpec(sd=0.02, phi=0.95),
        "t3-ar0.8": NoiseSpec(family="t", nu=3.0, sd=0.03, phi=0.8),
        "hetero": NoiseSpec(sd=0.02, hetero=1.0),
        "moe": NoiseSpec(family="t", nu=3.0, sd=0.02, phi=0.8, moe=0.03),
        "spikes": NoiseSpec(sd=0.02, spike_prob=0.005),
        "periodic": NoiseSpec(sd=0.02, period=per, period_factor=2.0, period_seconds=10.0),
        "elastic": NoiseSpec(sd=0.02, moe=0.03, restarts=r2),
        "garbage": NoiseSpec(sd=0.02, garbage_rate=1e-3),
        "issue": NoiseSpec(
            family="t",
            nu=3.0,
            sd=0.03,
            phi=0.8,
            moe=0.02,
            offset=0.01,
            spike_prob=0.002,
            period=per,
            period_seconds=10.0,
            restarts=r2,
            garbage_rate=1e-4,
        ),
    }
    return table[name]


FAMILIES = (
    "gaussian",
    "t3",
    "t2.5",
    "ar0.5",
    "ar0.8",
    "ar0.95",
    "t3-ar0.8",
    "hetero",
    "moe",
    "spikes",
    "periodic",
    "elastic",
    "garbage",
    "issue",
)

MODES = {
    # families at one size, then a size sweep for a few families
    "quick": dict(
        base=(32, 2_000),
        sweep_families=("gaussian", "issue"),
        sweep=((8, 1_000), (256, 2_000)),
        reps=5,
        max_cells=2e6,
        targets=(1e4, 3e4),
        target_samples=20,
    ),
    "default": dict(
        base=(64, 10_000),
        sweep_families=("gaussian", "t3-ar0.8", "issue"),
        sweep=((8, 1_000), (8, 100_000), (256, 10_000), (1024, 1_000), (1024, 10_000)),
        reps=10,
        max_cells=1.1e7,
        targets=(1e4, 3e4, 1e5),
        target_samples=20,
        big=(("issue", 1024, 100_000),),
    ),
    "full": dict(
        base=(256, 30_000),
        sweep_families=FAMILIES,
        sweep=(
            (8, 1_000),
            (8, 100_000),
            (64, 10_000),
            (256, 100_000),
            (1024, 1_000),
            (1024, 10_000),
            (1024, 100_000),
        ),
        reps=40,
        max_cells=2e8,
        targets=(1e4, 3e4, 1e5, 3e5, 1e6),
        target_samples=30,
    ),
}


# ----------------------------------------------------------------- peer rules
def _window_medians(X: np.ndarray) -> np.ndarray:
    T, N = X.shape
    W = T // WINDOW
    X = np.where(np.isfinite(X) & (X > 0), X, np.nan)
    return np.nanmedian(X[: W * WINDOW].reshape(W, WINDOW, N), axis=1)


def nvrx_rule(X: np.ndarray, threshold: float = 0.75) -> np.ndarray:
    """First step at which each device is flagged (-1: never); bench_quality.nvrx_baseline on arrays."""
    med = _window_medians(X)
    flag = np.full(X.shape[1], -1)
    for w in range(med.shape[0]):
        score = np.nanmin(med[w]) / med[w]
        hit = (score < threshold) & (flag < 0)
        flag[hit] = (w + 1) * WINDOW - 1
    return flag


def thresh_rule(X: np.ndarray, ratio: float = 1.05) -> np.ndarray:
    """First step at which a device's window median is >= ``ratio`` x the devices' median (-1: never)."""
    med = _window_medians(X)
    flag = np.full(X.shape[1], -1)
    for w in range(med.shape[0]):
        hit = (med[w] > ratio * np.nanmedian(med[w])) & (flag < 0)
        flag[hit] = (w + 1) * WINDOW - 1
    return flag


# ----------------------------------------------------------------- runs
@dataclass
class Tally:
    devices: int = 0
    samples: float = 0.0
    status: Counter = field(default_factory=Counter)
    suspect_frac: list = field(default_factory=list)  # per job (run)
    nvrx: int = 0
    thresh: int = 0
    job_events: int = 0
    seconds: float = 0.0

    @property
    def device_hours(self) -> float:
        return self.samples / 3600.0


def _engine(cfg: EngineConfig) -> VerdictEngine:
    return VerdictEngine(cfg)


def healthy_fleet(cfg: EngineConfig, fam: str, N: int, T: int, seed: int) -> Tally:
    """A fleet of N devices in jobs of <= JOB_SIZE, T steps each, all healthy."""
    tally = Tally()
    t0 = time.perf_counter()
    sizes = [JOB_SIZE] * (N // JOB_SIZE) + ([N % JOB_SIZE] if N % JOB_SIZE else [])
    for j, n in enumerate(sizes):
        tm = simulate_times(T, n, family(fam, T), seed=seed * 1000 + j)
        eng = _engine(cfg)
        ids = [f"j{j}-d{d}" for d in range(n)]
        eng.run(
            ids,
            {"compute_time": tm.compute, "step_time": tm.step},
            steps=np.arange(T),
            groups=[0] * n,
            job=f"job{j}",
        )
        c = Counter(str(v.status) for v in eng.verdicts())
        tally.status.update(c)
        tally.suspect_frac.append(c.get("suspect", 0) / n)
        tally.devices += n
        tally.samples += n * T
        tally.nvrx += int((nvrx_rule(tm.compute) >= 0).sum())
        tally.thresh += int((thresh_rule(tm.compute) >= 0).sum())
        tally.job_events += len(eng.job_events())
        del tm, eng
    tally.seconds = time.perf_counter() - t0
    return tally


def _poisson_ok(count: int, lam: float, alpha: float = 1e-3) -> bool:
    """False when ``count`` is significantly above a Poisson(lam) (one-sided, level alpha)."""
    if count == 0:
        return True
    # P(X >= count) = 1 - sum_{k < count} e^-lam lam^k / k!
    term, cdf = math.exp(-lam), 0.0
    for k in range(count):
        cdf += term
        term *= lam / (k + 1)
    return 1.0 - cdf >= alpha


def target_per_kdh(cfg: EngineConfig) -> float:
    """False alarms per 1,000 device-hours that ``arl0`` promises at one sample per second."""
    return 3.6e6 / float(cfg.arl0)


def print_healthy(rows: list[tuple[str, int, int, Tally]], cfg: EngineConfig) -> None:
    tgt = target_per_kdh(cfg)
    print(
        f"\n### Healthy fleets (latch=True, as `degrade analyze`); target {tgt:.3g} false degraded "
        f"per 1,000 device-hours (arl0 = {cfg.arl0:g} samples at 1 Hz)\n"
    )
    print(
        "| noise | devices | steps | device-h | degraded | per 1k dev-h | within MC of target | "
        "suspect | per 1k dev-h | max suspect/run | job events | nvrx | thresh5 | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for fam, N, T, t in rows:
        dh = t.device_hours
        deg = t.status.get("degraded", 0) + t.status.get("failed", 0)
        sus = t.status.get("suspect", 0)
        ok = "yes" if _poisson_ok(deg, tgt * dh / 1000.0) else "**no**"
        print(
            f"| {fam} | {N} | {T:,} | {dh:,.0f} | {deg} | {1000 * deg / dh:.3g} | {ok} | {sus} | "
            f"{1000 * sus / dh:.3g} | {100 * max(t.suspect_frac):.1f} % | {t.job_events} | {t.nvrx} | "
            f"{t.thresh} | {t.seconds:.1f} |"
        )


# ----------------------------------------------------------------- power
POWER_CASES = (
    [("step", m, "mid") for m in (0.03, 0.05, 0.07, 0.10, 0.20)]
    + [("step", m, "start") for m in (0.05, 0.10)]
    + [("drift", m, "mid") for m in (0.10, 0.20)]
    + [("intermittent", 0.30, "mid"), ("intermittent", 0.20, "mid")]
)


def power_case(
    cfg: EngineConfig,
    kind: str,
    m: float,
    when: str,
    spec: NoiseSpec,
    reps: int,
    N: int = 32,
    T: int = 3000,
    seed: int = 0,
) -> dict:
    onset = 0 if when == "start" else 1000
    prob = 0.15 if m >= 0.3 else 0.10
    found = suspect = nv = th = 0
    delays, onset_err, nv_delay, th_delay = [], [], [], []
    false_deg = 0
    eng = _engine(cfg)
    ids_all, comp, step, jobs = [], [], [], []
    for r in range(reps):
        dev = (r * 7) % N
        f = Fault(device=dev, kind=kind, onset=onset, magnitude=m, ramp_steps=300, prob=prob)
        tm = simulate_times(T, N, spec, seed=seed + 10_000 + r, faults=[f])
        ids_all += [f"r{r}-d{d}" for d in range(N)]
        comp.append(tm.compute)
        step.append(tm.step)
        jobs += [f"rep{r}"] * N
        a = nvrx_rule(tm.compute)[dev]
        b = thresh_rule(tm.compute)[dev]
        nv += a >= 0
        th += b >= 0
        if a >= 0:
            nv_delay.append(a - onset)
        if b >= 0:
            th_delay.append(b - onset)
    eng.run(
        ids_all,
        {"compute_time": np.hstack(comp), "step_time": np.hstack(step)},
        steps=np.arange(T),
        groups=jobs,
        job=jobs,
    )
    vs = {v.device: v for v in eng.verdicts()}
    for r in range(reps):
        dev = (r * 7) % N
        v = vs[f"r{r}-d{dev}"]
        if str(v.status) == "degraded":
            found += 1
            if v.detected_step is not None:
                delays.append(v.detected_step - onset)
            if v.onset_step is not None:
                onset_err.append(v.onset_step - onset)
        elif str(v.status) == "suspect":
            suspect += 1
        false_deg += sum(str(vs[f"r{r}-d{d}"].status) == "degraded" for d in range(N) if d != dev)

    def med(x):
        return f"{np.median(x):.0f}" if len(x) else "–"

    return dict(
        found=found,
        suspect=suspect,
        reps=reps,
        delay=med(delays),
        onset_err=med(np.abs(onset_err)),
        nvrx=int(nv),
        nvrx_delay=med(nv_delay),
        thresh=int(th),
        thresh_delay=med(th_delay),
        false_deg=false_deg,
    )


def print_power(cfg: EngineConfig, reps: int, specs: dict[str, NoiseSpec]) -> None:
    for label, spec in specs.items():
        print(
            f"\n### Power: one faulty device in each of {reps} jobs of 32 devices x 3,000 steps, "
            f"{label} (onset step 1000, or 0 for 'start')\n"
        )
        print(
            "| fault | size | onset | degraded | suspect | median delay | median |onset error| | "
            "nvrx found | nvrx delay | thresh5 found | thresh5 delay | other devices degraded |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for i, (kind, m, when) in enumerate(POWER_CASES):
            r = power_case(cfg, kind, m, when, spec, reps, seed=100 * i)
            size = f"{100 * m:.0f} %" + (
                " on 15 % of steps"
                if kind == "intermittent" and m >= 0.3
                else " on 10 % of steps"
                if kind == "intermittent"
                else ""
            )
            if kind == "drift":
                size += " over 300 steps"
            print(
                f"| {kind} | {size} | {when} | {r['found']}/{reps} | {r['suspect']} | {r['delay']} | "
                f"{r['onset_err']} | {r['nvrx']}/{reps} | {r['nvrx_delay']} | {r['thresh']}/{reps} | "
                f"{r['thresh_delay']} | {r['false_deg']} |"
            )


# ----------------------------------------------------------------- target tracking
def achieved_rate(arl0: float, samples: int, spec: NoiseSpec, seed: int = 0) -> dict:
    """Alarm episodes per sample, streaming in blocks of ``recovery``, at the design point and at 0."""
    base = EngineConfig()
    cfg = EngineConfig(arl0=arl0, latch=False)
    n, k = 16, 4  # per job: k devices healthy_offset slower than the other n - k
    design_needed = samples * arl0
    T = int(min(max(20 * cfg.warmup, design_needed / (k * 64)), 50_000))
    jobs = min(64, max(1, int(math.ceil(design_needed / (k * T)))))
    N = n * jobs
    off = np.ones(N)
    design = np.zeros(N, bool)
    for j in range(jobs):
        design[j * n : j * n + k] = True
    off[design] = 1.0 + base.healthy_offset
    tm = simulate_times(T, N, spec, seed=seed)
    X = tm.compute * off[None, :]
    St = np.repeat(X.max(axis=1, keepdims=True) + 0.05, N, axis=1)
    ids = [f"d{i}" for i in range(N)]
    groups = [i // n for i in range(N)]
    eng = VerdictEngine(cfg)
    block = cfg.recovery
    seen: set = set()
    t0 = time.perf_counter()
    for a in range(0, T, block):
        b = min(T, a + block)
        eng.run(
            ids,
            {"compute_time": X[a:b], "step_time": St[a:b]},
            steps=np.arange(a, b),
            groups=groups,
            job=groups,
        )
        for i, v in enumerate(eng.verdicts()):
            if str(v.status) == "degraded":
                seen.add((i, v.detected_step))
    exposure = T - cfg.warmup
    ep = np.zeros(N)
    for i, _ in seen:
        ep[i] += 1
    return dict(
        arl0=arl0,
        T=T,
        N=N,
        design_alarms=int(ep[design].sum()),
        design_samples=exposure * int(design.sum()),
        zero_alarms=int(ep[~design].sum()),
        zero_samples=exposure * int((~design).sum()),
        seconds=time.perf_counter() - t0,
    )


def print_targets(targets, samples: int, specs: dict[str, NoiseSpec]) -> None:
    print(
        f"\n### Achieved false-alarm rate against the target (streaming, latch=False; about {samples} x arl0 "
        "samples at the design point)\n"
    )
    print(
        "| noise | arl0 (target samples per alarm) | devices x steps | alarms at design point | "
        "achieved samples per alarm | achieved / target rate | 95 % interval of the ratio | "
        "alarms at offset 0 | rate at 0 / target | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, spec in specs.items():
        for arl0 in targets:
            r = achieved_rate(arl0, samples, spec)
            c, s = r["design_alarms"], r["design_samples"]
            ratio = (c / s) * arl0
            lo, hi = _poisson_interval(c)
            achieved = f"{s / c:,.0f}" if c else f"> {s:,.0f}"
            z = r["zero_alarms"] * arl0 / r["zero_samples"]
            print(
                f"| {label} | {arl0:g} | {r['N']} x {r['T']:,} | {c} | {achieved} | {ratio:.2f} | "
                f"{lo * arl0 / s:.2f}–{hi * arl0 / s:.2f} | {r['zero_alarms']} | {z:.3f} | {r['seconds']:.0f} |"
            )


def _poisson_interval(c: int) -> tuple[float, float]:
    """Approximate 95 % interval of a Poisson mean given count c (Wilson-Hilferty on the chi-square)."""

    def chi2q(p: float, k: float) -> float:
        z = {0.025: -1.959964, 0.975: 1.959964}[p]
        return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3

    lo = 0.0 if c == 0 else 0.5 * chi2q(0.025, 2 * c)
    hi = 0.5 * chi2q(0.975, 2 * c + 2)
    return lo, hi


# ----------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="about a minute")
    g.add_argument(
        "--full",
        action="store_true",
        help="the issue's whole grid (long; not on the shared machine)",
    )
    ap.add_argument("--targets", action="store_true", help="only the target-tracking section")
    ap.add_argument(
        "--families", default=None, help="comma-separated subset of: " + ", ".join(FAMILIES)
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "default"
    M = MODES[mode]
    fams = tuple(args.families.split(",")) if args.families else FAMILIES
    for f in fams:
        if f not in FAMILIES:
            ap.error(f"unknown family {f!r}; expected some of {', '.join(FAMILIES)}")
    cfg = EngineConfig(latch=True)
    # the garbage families are meant to trip the implausible-sample warning; one line per job is noise here
    warnings.filterwarnings("ignore", category=DataWarning)
    t_start = time.perf_counter()
    print(
        f"## degrade calibration ({mode}; engine defaults: arl0={cfg.arl0:g}, min_slowdown={cfg.min_slowdown}, "
        f"healthy_offset={cfg.healthy_offset}); {os.cpu_count()} CPUs"
    )
    # compile once, outside the timings
    healthy_fleet(cfg, "gaussian", 8, 200, seed=0)
    if not args.targets:
        rows = []
        N, T = M["base"]
        for fam in fams:
            rows.append((fam, N, T, healthy_fleet(cfg, fam, N, T, seed=args.seed)))
        for fam in (f for f in M["sweep_families"] if f in fams):
            for N, T in M["sweep"]:
                if N * T <= M["max_cells"] and (N, T) != M["base"]:
                    rows.append((fam, N, T, healthy_fleet(cfg, fam, N, T, seed=args.seed + 1)))
        for fam, N, T in M.get("big", ()):
            if fam in fams:
                rows.append((fam, N, T, healthy_fleet(cfg, fam, N, T, seed=args.seed + 2)))
        print_healthy(rows, cfg)
        specs = {"2 % Gaussian noise": NoiseSpec(sd=0.02)}
        if mode != "quick":
            specs["3 % t(3) AR(0.8) noise"] = NoiseSpec(family="t", nu=3.0, sd=0.03, phi=0.8)
        print_power(cfg, M["reps"], specs)
    specs = {"gaussian 2 %": NoiseSpec(sd=0.02)}
    if mode != "quick":
        specs["t(3) AR(0.8) 3 %"] = NoiseSpec(family="t", nu=3.0, sd=0.03, phi=0.8)
    print_targets(M["targets"], M["target_samples"], specs)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()

"""False-alarm rate of the verdict engine against its target, over noise families.

Not a test (tests/test_verdict_calibration.py checks the same claims at one
size). For each noise family and each target ``arl0`` it simulates a healthy
job whose devices all sit exactly at the design point (``healthy_offset=0``,
so every device's healthy level equals the CUSUM's null level), runs
``VerdictEngine`` over it and counts alarm episodes of the level test (both
rules: CUSUM and large-shift) and of the slow-step test. Beside it, on the
same deviations from the same run: the textbook design that assumes i.i.d.
Gaussian noise (``degrade.core.CUSUM`` on the leave-one-out deviation, its
``h`` from ``design_cusum(arl0)`` for the same shift in *marginal* sigmas,
baseline learned from 100 samples). Rates are episodes per device-sample
times ``arl0`` (1.0 = on target), with a 95 % Poisson interval.

    python bench/bench_false_alarms.py                     # ~2 min: 1e4 and 1e5
    python bench/bench_false_alarms.py --targets 1e4,1e5,1e6 --scale 2
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np

from degrade.core import CUSUM
from degrade.errors import DataWarning
from degrade.verdict import VerdictEngine
from degrade.verdict import _layout as K

FAMILIES = (
    "gauss",
    "t3",
    "t2.5",
    "ar0.5",
    "ar0.8",
    "ar0.95",
    "t3-ar0.8",
    "hetero",
    "moe-reshuffle",
    "periodic",
    "spikes",
    "garbage",
)


def _innov(rng, shape, nu):
    if nu is None:
        return rng.standard_normal(shape)
    return rng.standard_t(nu, shape) * math.sqrt((nu - 2.0) / nu)


def _ar(e, phi):
    if not phi:
        return e
    x = np.empty_like(e)
    x[0] = e[0] / math.sqrt(1.0 - phi * phi)
    for t in range(1, e.shape[0]):
        x[t] = phi * x[t - 1] + e[t]
    return x * math.sqrt(1.0 - phi * phi)


def family(name: str, rng, T: int, N: int, sd: float = 0.02) -> np.ndarray:
    nu = {"t3": 3, "t2.5": 2.5, "t3-ar0.8": 3, "moe-reshuffle": 3, "garbage": 3}.get(name)
    phi = {
        "ar0.5": 0.5,
        "ar0.8": 0.8,
        "ar0.95": 0.95,
        "t3-ar0.8": 0.8,
        "moe-reshuffle": 0.8,
        "periodic": 0.5,
    }.get(name, 0.0)
    z = sd * _ar(_innov(rng, (T, N), nu), phi)
    if name == "hetero":
        z *= np.exp(rng.uniform(math.log(0.5), math.log(2.5), N))
    if name == "moe-reshuffle":
        for a in range(T // 4, T, T // 4):
            z[a:] = z[a:, rng.permutation(N)]
    x = 0.1 * np.exp(z)
    if name == "periodic":
        x[::100] *= 1.8
    if name == "spikes":
        s = rng.random((T, N)) < 0.005
        x[s] *= 1.0 + 0.5 * (rng.pareto(1.5, int(s.sum())) + 1.0)
    if name == "garbage":
        g = rng.random((T, N)) < 0.002
        x[g] = np.where(rng.random(int(g.sum())) < 0.5, 1e300, 1e-6)
    return x


def naive(x: np.ndarray, arl0: float, mu1: float) -> float:
    """Alarms of an i.i.d.-Gaussian CUSUM on the leave-one-out log deviation."""
    L = np.log(np.where((x > 1e-3) & (x < 1e3), x, np.nan))
    T, N = L.shape
    med = np.empty_like(L)
    for j in range(N):
        med[:, j] = np.nanmedian(np.delete(L, j, axis=1), axis=1)
    d = L - med
    sd = float(np.nanmedian(np.nanstd(d[:100], axis=0)))
    det = CUSUM(arl0=arl0, shift=mu1 / sd, side="upper", warmup=100)
    return float(det.run(d).alarm.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="1e4,1e5")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply the simulated device-samples"
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(
        "| family | arl0 | device-samples | expected at target | degrade level | rate/target (95 % CI) "
        "| degrade slow-step | i.i.d. design | its rate/target |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    t_all = time.perf_counter()
    for arl0 in (float(a) for a in args.targets.split(",")):
        # about 50 expected alarms at the target
        total = 50 * arl0 * args.scale
        N = 64 if arl0 <= 1e4 else 128
        T = int(total / N) + 20
        for name in args.families.split(","):
            rng = np.random.default_rng(args.seed)
            x = family(name, rng, T, N)
            eng = VerdictEngine(arl0=arl0, healthy_offset=0.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)
                eng.run(
                    [f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T), job="j"
                )
            n = N * (T - eng.config.warmup)
            lev = float(eng._ST[:N, K.C_EPISODES].sum())
            slow = float(eng._SB[:N, K.C_EPISODES].sum())
            exp_ = n / arl0
            lo = 0.5 * _chi2_ppf(0.025, 2 * lev) if lev > 0 else 0.0
            hi = 0.5 * _chi2_ppf(0.975, 2 * lev + 2)
            nv = naive(x, arl0, math.log1p(eng.config.min_slowdown))
            print(
                f"| {name} | {arl0:.0e} | {n:.2e} | {exp_:.0f} | {lev:.0f} | {lev / exp_:.2f} "
                f"({lo / exp_:.2f}–{hi / exp_:.2f}) | {slow:.0f} | {nv:.0f} | {nv / exp_:.1f} |",
                flush=True,
            )
    print(f"\nseconds: {time.perf_counter() - t_all:.0f}")


def _chi2_ppf(q: float, k: float) -> float:
    """Chi-square quantile by the Wilson-Hilferty approximation (good to ~1 % for k >= 2)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(q)
    a = 2.0 / (9.0 * k)
    return k * (1.0 - a + z * math.sqrt(a)) ** 3


if __name__ == "__main__":
    main()

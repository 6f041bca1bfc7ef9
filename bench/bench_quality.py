"""Detection quality on the simulator's fault catalogue: degrade beside two baselines.

Not a test. From one run, on the same simulated telemetry:

* **degrade** — ``degrade.analyze.analyze`` (the verdict engine, latched) on
  timings + counters, scored with ``degrade.evaluate``;
* **NVRx-style** — nvidia-resiliency-ext's straggler rule: per window of
  ``--window`` steps, a rank's performance score is the fastest rank's median
  time over its own; a score below 0.75 flags the rank;
* **Greyhound-style** — BOCPD (``degrade.core.BOCPD``) on each device's time
  plus a 10 % before/after check around each change point.

Both baselines see ``compute_time`` (not the equalised wall ``step_time``),
which is the fair choice for synchronous training; they do not read counters.

Usage::

    python bench/bench_quality.py                   # catalogue x 5 seeds, hard_noise x 2, healthy fleet
    python bench/bench_quality.py --seeds 10 --healthy-steps 20000
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import numpy as np
import polars as pl

from degrade.analyze import analyze
from degrade.core import BOCPD
from degrade.evaluate import evaluate
from degrade.simulate import FaultSpec, load_scenario, simulate


def _pivot(timings: pl.DataFrame, col: str):
    """(job, group) -> (devices, steps, (T, N) array) of ``col``."""
    gcols = ["job", "group"] if "group" in timings.columns else ["job"]
    out = []
    for key, part in timings.group_by(gcols, maintain_order=True):
        wide = part.pivot(on="device", index="step", values=col, aggregate_function="first").sort("step")
        devices = [c for c in wide.columns if c != "step"]
        out.append((key, devices, wide["step"].to_numpy(), wide.select(devices).to_numpy().astype(float)))
    return out


def nvrx_baseline(timings: pl.DataFrame, window: int = 100, threshold: float = 0.75) -> list[dict]:
    col = "compute_time" if "compute_time" in timings.columns else "step_time"
    verdicts = []
    for _, devices, steps, X in _pivot(timings, col):
        T, N = X.shape
        flagged = np.full(N, -1)
        for lo in range(0, T - window + 1, window):
            med = np.nanmedian(X[lo:lo + window], axis=0)
            score = np.nanmin(med) / med
            hit = (score < threshold) & (flagged < 0)
            flagged[hit] = lo
        for j, d in enumerate(devices):
            f = flagged[j]
            verdicts.append({
                "device": d,
                "status": "degraded" if f >= 0 else "healthy",
                "onset_step": int(steps[f]) if f >= 0 else None,
                "detected_step": int(steps[min(f + window - 1, T - 1)]) if f >= 0 else None,
            })
    return verdicts


def greyhound_baseline(timings: pl.DataFrame, check: int = 50, ratio: float = 1.10) -> list[dict]:
    col = "compute_time" if "compute_time" in timings.columns else "step_time"
    verdicts = []
    for _, devices, steps, X in _pivot(timings, col):
        T, N = X.shape
        det = BOCPD(log=True, positive=True)
        res = det.run(X)
        alarm = np.asarray(res.alarm)
        run_length = np.asarray(res.run_length)
        logx = np.log(np.where(X > 0, X, np.nan))
        found = np.full(N, -1)
        found_on = np.full(N, -1)
        for t, j in zip(*np.nonzero(alarm)):
            if found[j] >= 0:
                continue
            o = int(t - run_length[t, j] + 1) if np.isfinite(run_length[t, j]) else int(t)
            if o < check or o + check > T:
                continue
            before = np.nanmedian(logx[o - check:o, j])
            after = np.nanmedian(logx[o:o + check, j])
            if math.exp(after - before) > ratio:
                found[j] = min(o + check - 1, T - 1)
                found_on[j] = o
        for j, d in enumerate(devices):
            verdicts.append({
                "device": d,
                "status": "degraded" if found[j] >= 0 else "healthy",
                "onset_step": int(steps[found_on[j]]) if found[j] >= 0 else None,
                "detected_step": int(steps[found[j]]) if found[j] >= 0 else None,
            })
    return verdicts


_MCD_FEATURES = ("clock_ratio", "power_ratio", "gpu_temp_celsius", "memory_temp_celsius", "gpu_util_ratio",
                 "pcie_width_ratio", "pcie_gen_ratio")


def mcd_counters(counters: pl.DataFrame, arl0: float = 1e6, persistence: int = 3) -> list[dict]:
    """Minder-style multivariate spatial detector: robust Mahalanobis distance
    (scikit-learn MinCovDet) of each GPU's counter vector among the GPUs of the
    same model at each sample time; flag after ``persistence`` consecutive
    samples beyond the chi-square quantile 1 - 1/arl0."""
    from scipy.stats import chi2
    from sklearn.covariance import MinCovDet

    df = counters.with_columns(
        (pl.col("sm_clock_mhz") / pl.col("sm_clock_max_mhz")).alias("clock_ratio"),
        (pl.col("power_watts") / pl.col("power_limit_watts")).alias("power_ratio"),
        (pl.col("pcie_link_width") / pl.col("pcie_link_width_max")).alias("pcie_width_ratio"),
        (pl.col("pcie_link_gen") / pl.col("pcie_link_gen_max")).alias("pcie_gen_ratio"),
        pl.col("timestamp").round(0).alias("_t"),
    ).filter(pl.col("gpu_util_ratio") >= 0.5)
    model = "model" if "model" in df.columns else None
    hits: dict[str, int] = defaultdict(int)
    first: dict[str, float] = {}
    flagged: dict[str, float] = {}
    for _, part in df.sort("_t").group_by(["_t", model] if model else ["_t"], maintain_order=True):
        X = part.select(_MCD_FEATURES).to_numpy().astype(float)
        ok = np.isfinite(X).all(axis=1)
        devs = part["device"].to_numpy()[ok]
        X = X[ok]
        if X.shape[0] < 3 * X.shape[1]:
            continue
        keep = X.std(axis=0) > 1e-9  # constant columns (all links at max) make the covariance singular
        X = X[:, keep]
        try:
            mcd = MinCovDet(random_state=0).fit(X)
        except ValueError:
            continue
        d2 = mcd.mahalanobis(X)
        lim = chi2.ppf(1.0 - 1.0 / arl0, X.shape[1])
        t = float(part["timestamp"][0])
        for dev, v in zip(devs, d2):
            if v > lim:
                if hits[dev] == 0:
                    first[dev] = t
                hits[dev] += 1
                if hits[dev] >= persistence and dev not in flagged:
                    flagged[dev] = first[dev]
            else:
                hits[dev] = 0
    out = []
    for dev in counters["device"].unique().to_list():
        out.append({"device": dev, "status": "degraded" if dev in flagged else "healthy",
                    "onset_time": flagged.get(dev), "onset_step": None, "detected_step": None})
    return out


def _collect(reports):
    """Pool per-fault rows and the overall counts of several EvalReports."""
    tp = fp = fn = 0
    delays: list[float] = []
    onsets: list[float] = []
    per: dict[str, dict] = defaultdict(lambda: {"pos": 0, "found": 0, "delay": [], "onset": []})
    for rep in reports:
        s = rep.summary
        tp += s["tp"]
        fp += s["fp"]
        fn += s["fn"]
        for row in rep.per_fault:
            p = per[row["fault"]]
            p["pos"] += row["positives"] or 0
            p["found"] += row["found"] or 0
            if row["delay_steps_median"] is not None:
                p["delay"].append(row["delay_steps_median"])
            if row["onset_abs_error_steps_median"] is not None:
                p["onset"].append(row["onset_abs_error_steps_median"])
        if s.get("delay_steps_median") is not None:
            delays.append(s["delay_steps_median"])
        if s.get("onset_abs_error_steps_median") is not None:
            onsets.append(s["onset_abs_error_steps_median"])
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1, "per": per}


def _med(x):
    return f"{np.median(x):.0f}" if x else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="fault_catalogue seeds (0..n-1)")
    ap.add_argument("--hard-seeds", type=int, default=2, help="hard_noise seeds")
    ap.add_argument("--healthy-steps", type=int, default=5000, help="steps of the healthy_only fleet (512 GPUs)")
    args = ap.parse_args()

    methods = ("degrade", "nvrx", "greyhound")
    reports: dict[str, dict[str, list]] = {s: {m: [] for m in methods} for s in ("fault_catalogue", "hard_noise")}
    seconds = defaultdict(float)
    for scen, n in (("fault_catalogue", args.seeds), ("hard_noise", args.hard_seeds)):
        for seed in range(n):
            sim = simulate(load_scenario(scen), seed=seed)
            t0 = time.perf_counter()
            res = analyze([sim.timings, sim.counters])
            seconds["degrade"] += time.perf_counter() - t0
            reports[scen]["degrade"].append(evaluate(res.verdicts, sim.truth, timings=sim.timings))
            t0 = time.perf_counter()
            v = nvrx_baseline(sim.timings)
            seconds["nvrx"] += time.perf_counter() - t0
            reports[scen]["nvrx"].append(evaluate(v, sim.truth, timings=sim.timings))
            t0 = time.perf_counter()
            v = greyhound_baseline(sim.timings)
            seconds["greyhound"] += time.perf_counter() - t0
            reports[scen]["greyhound"].append(evaluate(v, sim.truth, timings=sim.timings))

    for scen in ("fault_catalogue", "hard_noise"):
        n = args.seeds if scen == "fault_catalogue" else args.hard_seeds
        print(f"\n## {scen}, seeds 0..{n - 1} (device-level, degraded/failed = positive)\n")
        print("| method | TP | FP | FN | precision | recall | F1 | median delay (steps) | median abs onset error (steps) |")
        print("|---|---|---|---|---|---|---|---|---|")
        agg = {m: _collect(reports[scen][m]) for m in methods}
        for m in methods:
            a = agg[m]
            delays = [r.summary["delay_steps_median"] for r in reports[scen][m] if r.summary["delay_steps_median"] is not None]
            onsets = [r.summary["onset_abs_error_steps_median"] for r in reports[scen][m]
                      if r.summary["onset_abs_error_steps_median"] is not None]
            print(f"| {m} | {a['tp']} | {a['fp']} | {a['fn']} | {a['precision']:.3f} | {a['recall']:.3f} | "
                  f"{a['f1']:.3f} | {_med(delays)} | {_med(onsets)} |")
        print("\nper fault type: found/positives (median delay, median abs onset error)\n")
        faults = sorted(set().union(*(agg[m]["per"] for m in methods)))
        print("| fault | " + " | ".join(methods) + " |")
        print("|---|" + "---|" * len(methods))
        for f in faults:
            cells = []
            for m in methods:
                p = agg[m]["per"].get(f)
                if p is None or p["pos"] == 0:
                    cells.append("(suspect-only)" if p is not None else "–")
                else:
                    cells.append(f"{p['found']}/{p['pos']} ({_med(p['delay'])}, {_med(p['onset'])})")
            print(f"| {f} | " + " | ".join(cells) + " |")

    # slowdown sweep at 2 % noise: delay and onset error by magnitude
    print(f"\n## slowdown sweep: 64 GPUs, noise 2 %, AR(0.4), onsets at step 1000-1600, seeds 0..{args.seeds - 1}\n")
    print("| slowdown | method | found | median delay (steps) | median abs onset error (steps) |")
    print("|---|---|---|---|---|")
    sweep = {m: defaultdict(lambda: {"n": 0, "found": 0, "delay": [], "onset": []}) for m in methods}
    for seed in range(args.seeds):
        scen = load_scenario("fault_catalogue")
        job = scen.jobs[0]
        job.noise = 0.02
        scen.faults = [FaultSpec(job=job.name, device=3 + 6 * a, type="slowdown", onset_step=1000 + 100 * a,
                                 magnitude=mag) for a, mag in enumerate((0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5))]
        sim = simulate(scen, seed=100 + seed)
        truth = sim.truth
        outs = {"degrade": [v.to_dict() for v in analyze([sim.timings, sim.counters]).verdicts],
                "nvrx": nvrx_baseline(sim.timings), "greyhound": greyhound_baseline(sim.timings)}
        for m, verdicts in outs.items():
            by = {v["device"]: v for v in verdicts}
            for row in truth.iter_rows(named=True):
                v = by.get(row["device"])
                cell = sweep[m][row["magnitude"]]
                cell["n"] += 1
                if v and v["status"] in ("degraded", "failed") and v["detected_step"] is not None:
                    cell["found"] += 1
                    cell["delay"].append(v["detected_step"] - row["onset_step"])
                    if v["onset_step"] is not None:
                        cell["onset"].append(abs(v["onset_step"] - row["onset_step"]))
    for mag in sorted(sweep["degrade"]):
        for m in methods:
            c = sweep[m][mag]
            print(f"| {100 * mag:.0f} % | {m} | {c['found']}/{c['n']} | {_med(c['delay'])} | {_med(c['onset'])} |")

    # counters only: per-metric rules of the engine vs the multivariate (MinCovDet) detector
    print(f"\n## counter faults, counters only: per-metric rules vs MinCovDet, fault_catalogue seeds 0..{args.seeds - 1}\n")
    cnt = {"rules": [], "mincovdet": []}
    for seed in range(args.seeds):
        sim = simulate(load_scenario("fault_catalogue"), seed=seed)
        t0 = time.perf_counter()
        rules = analyze([sim.counters]).verdicts
        seconds["rules"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        mcd = mcd_counters(sim.counters)
        seconds["mincovdet"] += time.perf_counter() - t0
        cnt["rules"].append(evaluate(rules, sim.truth))
        cnt["mincovdet"].append(evaluate(mcd, sim.truth))
    agg = {m: _collect(cnt[m]) for m in cnt}
    print("| method | TP | FP | FN | F1 | " + " | ".join(sorted(agg["rules"]["per"])) + " |")
    print("|---|---|---|---|---|" + "---|" * len(agg["rules"]["per"]))
    for m, a in agg.items():
        cells = [f"{a['per'][f]['found']}/{a['per'][f]['pos']}" if a["per"][f]["pos"] else "–" for f in sorted(a["per"])]
        print(f"| {m} | {a['tp']} | {a['fp']} | {a['fn']} | {a['f1']:.3f} | " + " | ".join(cells) + " |")

    # healthy-only fleet: false alarms
    scen = load_scenario("healthy_only")
    for job in scen.jobs:
        job.steps = args.healthy_steps
    sim = simulate(scen, seed=0)
    n_dev = sim.timings["device"].n_unique()
    rows = sim.timings.height
    print(f"\n## healthy_only: {n_dev} GPUs x {args.healthy_steps} steps ({rows:,} timing rows)\n")
    print("| method | degraded/failed | suspect | false alarms / 1000 device-hours |")
    print("|---|---|---|---|")
    t0 = time.perf_counter()
    res = analyze([sim.timings, sim.counters])
    seconds["degrade_healthy"] = time.perf_counter() - t0
    for m, verdicts in (("degrade", res.verdicts), ("nvrx", nvrx_baseline(sim.timings)),
                        ("greyhound", greyhound_baseline(sim.timings))):
        st = [str(v.status) if hasattr(v, "status") else v["status"] for v in verdicts]
        rep = evaluate(verdicts, sim.truth, timings=sim.timings)
        bad = sum(s in ("degraded", "failed") for s in st)
        print(f"| {m} | {bad} | {st.count('suspect')} | {rep.summary['false_alarms_per_1000_device_hours']} |")
    print("\nseconds spent (all seeds): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()

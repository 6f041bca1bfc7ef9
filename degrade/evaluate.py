"""Score verdicts against the simulator's ground truth (docs/evaluation.md).

Device-level scoring. A device is *positive* when its verdict status is
``degraded`` or ``failed``. Ground-truth faults whose ``expected_status`` is
``degraded`` or ``failed`` are the positives to find; faults expected as
``suspect`` (slowdowns under the smallest slowdown worth acting on, rising
error counters without a slowdown) are scored separately: flagging them is
neither a hit nor a false alarm. Every device with a verdict and no
ground-truth row is healthy; any positive verdict on it is a false alarm.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, SchemaError

__all__ = ["evaluate", "EvalReport"]

_POS = ("degraded", "failed")
#: slowdown bins for recall by size (faults without a speed effect, magnitude 0, fall in the first)
_MAG_BINS = ((0.0, 0.05), (0.05, 0.10), (0.10, 0.20), (0.20, 0.50), (0.50, 100.0))
_TRUTH_COLS = ("device", "fault", "onset_step", "expected_status")


def _verdict_dicts(verdicts) -> list[dict[str, Any]]:
    if isinstance(verdicts, (str, os.PathLike)):
        path = os.fspath(verdicts)
        try:
            with open(path) as fh:
                verdicts = json.load(fh)
        except OSError as exc:
            raise InputError(f"cannot read verdicts {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}); expected `degrade analyze --format json` output") from None
    if isinstance(verdicts, dict):
        if "verdicts" not in verdicts:
            raise SchemaError("verdicts document has no 'verdicts' list; expected `degrade analyze --format json` output")
        verdicts = verdicts["verdicts"]
    out = []
    for i, v in enumerate(verdicts):
        d = v.to_dict() if hasattr(v, "to_dict") else v
        if not isinstance(d, dict) or "device" not in d or "status" not in d:
            raise SchemaError(f"verdict #{i} lacks 'device' or 'status'; expected Verdict objects or Verdict.to_dict() dicts")
        d = dict(d)
        d["status"] = str(getattr(d["status"], "value", d["status"]))
        out.append(d)
    return out


def _truth_frame(truth):
    from ._optional import import_optional

    pl = import_optional("polars", "batch")
    if isinstance(truth, (str, os.PathLike)):
        path = os.fspath(truth)
        if not os.path.exists(path):
            raise InputError(f"no such truth file: {path}")
        try:
            truth = pl.read_parquet(path) if not path.endswith(".csv") else pl.read_csv(path)
        except Exception as exc:
            raise SchemaError(f"{path}: cannot read the ground truth ({str(exc).splitlines()[0]})") from None
    elif isinstance(truth, pl.LazyFrame):
        truth = truth.collect()
    elif not isinstance(truth, pl.DataFrame):
        truth = pl.DataFrame(truth)
    missing = [c for c in _TRUTH_COLS if c not in truth.columns]
    if missing:
        raise SchemaError(f"ground truth lacks column(s) {missing}; expected {list(_TRUTH_COLS)} (see docs/simulator.md)")
    bad = set(truth["expected_status"].unique().to_list()) - {"degraded", "failed", "suspect"}
    if bad:
        raise SchemaError(f"ground truth expected_status holds {sorted(map(str, bad))}; expected degraded, failed or suspect")
    return truth


def _device_hours(timings) -> dict[str, float]:
    """Observed hours per device: span of timestamps (plus the last step), or steps x median step."""
    from ._optional import import_optional
    from .io import read_timings

    pl = import_optional("polars", "batch")
    lf = read_timings(timings)
    cols = lf.collect_schema()
    tcol = "step_time" if "step_time" in cols else "compute_time"
    if "timestamp" in cols:
        agg = lf.group_by("device").agg(
            (pl.col("timestamp").max() - pl.col("timestamp").min() + pl.col(tcol).median()).alias("s")
        )
    else:
        agg = lf.group_by("device").agg((pl.len() * pl.col(tcol).median()).alias("s"))
    df = agg.collect()
    return {d: float(s or 0.0) / 3600.0 for d, s in zip(df["device"].to_list(), df["s"].to_list())}


def _poisson_upper(k: int, conf: float = 0.95) -> float:
    """One-sided upper confidence bound of a Poisson mean after ``k`` events.

    >>> round(_poisson_upper(0), 3)
    2.996
    """
    def cdf(lam):
        term = total = math.exp(-lam)
        for i in range(1, k + 1):
            term *= lam / i
            total += term
        return total

    lo, hi = 0.0, k + 10.0 + 10.0 * math.sqrt(k + 1)
    for _ in range(100):  # bisection on P(X <= k; lam) = 1 - conf
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) > 1.0 - conf else (lo, mid)
    return 0.5 * (lo + hi)


def _med(x):
    x = [v for v in x if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.median(x)) if x else None


def _num(v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


@dataclass
class EvalReport:
    """Scores of one evaluation; ``.table()`` for people, ``.to_dict()`` for JSON."""

    summary: dict[str, Any]
    per_fault: list[dict[str, Any]]
    devices: list[dict[str, Any]] = field(repr=False)
    per_magnitude: list[dict[str, Any]] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.summary["precision"]

    @property
    def recall(self) -> float | None:
        return self.summary["recall"]

    @property
    def f1(self) -> float | None:
        return self.summary["f1"]

    def to_dict(self) -> dict[str, Any]:
        return {"summary": dict(self.summary), "per_fault": [dict(r) for r in self.per_fault],
                "per_magnitude": [dict(r) for r in self.per_magnitude],
                "devices": [dict(r) for r in self.devices]}

    def table(self) -> str:
        """Plain-text summary and per-fault table."""
        s = self.summary

        def f(v, fmt="{:.3f}"):
            return "-" if v is None else fmt.format(v)

        lines = [
            f"devices {s['devices']}  healthy {s['healthy_devices']}  faulty {s['positives']} (+{s['suspect_faults']} suspect-class)",
            f"precision {f(s['precision'])}  recall {f(s['recall'])}  F1 {f(s['f1'])}  "
            f"(TP {s['tp']}, FP {s['fp']}, FN {s['fn']})  status exact {f(s['status_accuracy'])}",
            f"false alarms per 1000 device-hours {f(s['false_alarms_per_1000_device_hours'], '{:.2f}')} "
            f"(95 % upper bound {f(s['false_alarms_per_1000_device_hours_upper95'], '{:.2f}')}) "
            f"over {f(s['healthy_device_hours'], '{:.1f}')} healthy device-hours; suspects on healthy {s['suspect_on_healthy']}",
            f"onset error (steps) median {f(s['onset_error_steps_median'], '{:.1f}')}  |median| {f(s['onset_abs_error_steps_median'], '{:.1f}')}; "
            f"detection delay median {f(s['delay_steps_median'], '{:.1f}')} steps / {f(s['delay_seconds_median'], '{:.1f}')} s",
            "",
            f"{'fault':<16}{'n':>4}{'found':>7}{'recall':>8}{'suspect':>9}{'delay':>8}{'onset_err':>11}",
        ]
        for r in self.per_fault:
            lines.append(
                f"{r['fault']:<16}{r['n']:>4}{r['found']:>7}{f(r['recall'], '{:.2f}'):>8}{r['suspect']:>9}"
                f"{f(r['delay_steps_median'], '{:.0f}'):>8}{f(r['onset_abs_error_steps_median'], '{:.0f}'):>11}"
            )
        if self.per_magnitude:
            lines += ["", f"{'slowdown':<16}{'n':>4}{'found':>7}{'recall':>8}"]
            for r in self.per_magnitude:
                lines.append(f"{r['slowdown']:<16}{r['n']:>4}{r['found']:>7}{r['recall']:>8.2f}")
        return "\n".join(lines)


def evaluate(verdicts, truth, *, timings=None, device_hours: dict[str, float] | None = None) -> EvalReport:
    """Compare verdicts with ground truth, device by device.

    Parameters
    ----------
    verdicts : list of Verdict or dict, dict, or path
        :class:`degrade.verdict.Verdict` objects, their ``to_dict()`` form, a
        ``degrade analyze --format json`` document, or the path of one.
    truth : polars DataFrame or path
        The simulator's truth (device, fault, onset_step, onset_time,
        magnitude, end_step, expected_status).
    timings : path or polars frame, optional
        Timings used to measure device-hours (for false alarms per 1,000
        device-hours). Without them (or ``device_hours``) that rate is None.
    device_hours : dict, optional
        Observed hours per device, instead of ``timings``.

    Returns
    -------
    EvalReport

    Examples
    --------
    >>> import polars as pl
    >>> truth = pl.DataFrame({"device": ["g1"], "fault": ["thermal"], "onset_step": [100],
    ...                       "onset_time": [1000.0], "expected_status": ["degraded"]})
    >>> verdicts = [{"device": "g1", "status": "degraded", "onset_step": 104, "detected_step": 130},
    ...             {"device": "g2", "status": "healthy"}, {"device": "g3", "status": "degraded"}]
    >>> rep = evaluate(verdicts, truth, device_hours={"g1": 1.0, "g2": 1.0, "g3": 1.0})
    >>> rep.precision, rep.recall, rep.summary["delay_steps_median"]
    (0.5, 1.0, 30.0)
    >>> rep.summary["false_alarms_per_1000_device_hours"]
    500.0
    """
    vd = _verdict_dicts(verdicts)
    tr = _truth_frame(truth)
    by_dev: dict[str, dict] = {}
    for v in vd:
        if v["device"] in by_dev:
            raise SchemaError(f"two verdicts for device {v['device']!r}; expected one per device")
        by_dev[str(v["device"])] = v
    # one truth row per device: the first positive fault (earliest onset), else the first suspect one
    rows = sorted(tr.to_dicts(), key=lambda r: (r["expected_status"] == "suspect", r["onset_step"]))
    t_dev: dict[str, dict] = {}
    for r in rows:
        t_dev.setdefault(str(r["device"]), r)
    if timings is not None and device_hours is None:
        device_hours = _device_hours(timings)

    devices = []
    tp = fp = fn = 0
    exact = 0
    fa_hours = 0.0
    suspect_on_healthy = 0
    unknown = 0
    for dev in sorted(set(by_dev) | set(t_dev) | set(device_hours or {})):
        v = by_dev.get(dev, {"device": dev, "status": "missing"})
        t = t_dev.get(dev)
        status = v["status"]
        unknown += status == "unknown"
        pred = status in _POS
        row = {"device": dev, "status": status, "fault": None, "expected_status": None, "magnitude": None, "outcome": None,
               "onset_error_steps": None, "onset_error_seconds": None, "delay_steps": None, "delay_seconds": None}
        if t is None:
            row["outcome"] = "fp" if pred else "tn"
            fp += pred
            suspect_on_healthy += status == "suspect"
            if device_hours is not None:
                fa_hours += device_hours.get(dev, 0.0)
        else:
            row["fault"], row["expected_status"] = t["fault"], t["expected_status"]
            row["magnitude"] = _num(t.get("magnitude"))
            if t["expected_status"] in _POS:
                row["outcome"] = "tp" if pred else "fn"
                tp += pred
                fn += not pred
                exact += status == t["expected_status"]
            else:
                row["outcome"] = "suspect_flagged" if status in (*_POS, "suspect") else "suspect_missed"
            if pred or status == "suspect":
                o_s, o_t = _num(v.get("onset_step")), _num(v.get("onset_time"))
                d_s, d_t = _num(v.get("detected_step")), _num(v.get("detected_time"))
                ts, tt = _num(t.get("onset_step")), _num(t.get("onset_time"))
                row["onset_error_steps"] = None if o_s is None or ts is None else o_s - ts
                row["onset_error_seconds"] = None if o_t is None or tt is None else o_t - tt
                row["delay_steps"] = None if d_s is None or ts is None else d_s - ts
                row["delay_seconds"] = None if d_t is None or tt is None else d_t - tt
        devices.append(row)

    def ratio(a, b):
        return a / b if b else None

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = None if precision is None or recall is None or precision + recall == 0 else 2 * precision * recall / (precision + recall)
    hits = [d for d in devices if d["outcome"] == "tp"]
    summary = {
        "devices": len(devices),
        "healthy_devices": sum(d["fault"] is None for d in devices),
        "positives": tp + fn,
        "suspect_faults": sum(d["expected_status"] == "suspect" for d in devices),
        "tp": tp, "fp": fp, "fn": fn,
        "precision": precision, "recall": recall, "f1": f1,
        "status_accuracy": ratio(exact, tp),
        "unknown": unknown,
        "missing_verdicts": sum(d["status"] == "missing" for d in devices),
        "suspect_on_healthy": suspect_on_healthy,
        "healthy_device_hours": fa_hours if device_hours is not None else None,
        "false_alarms_per_1000_device_hours": (1000.0 * fp / fa_hours) if device_hours is not None and fa_hours > 0 else None,
        # with few or no alarms the rate alone overstates what was shown
        "false_alarms_per_1000_device_hours_upper95": (
            1000.0 * _poisson_upper(fp) / fa_hours if device_hours is not None and fa_hours > 0 else None),
        "onset_error_steps_median": _med([d["onset_error_steps"] for d in hits]),
        "onset_abs_error_steps_median": _med([abs(d["onset_error_steps"]) for d in hits if d["onset_error_steps"] is not None]),
        "onset_error_seconds_median": _med([d["onset_error_seconds"] for d in hits]),
        "delay_steps_median": _med([d["delay_steps"] for d in hits]),
        "delay_steps_p90": (float(np.percentile([d["delay_steps"] for d in hits if d["delay_steps"] is not None], 90))
                            if any(d["delay_steps"] is not None for d in hits) else None),
        "delay_seconds_median": _med([d["delay_seconds"] for d in hits]),
        "early_detections": sum(1 for d in hits if d["delay_steps"] is not None and d["delay_steps"] < 0),
    }
    per_fault = []
    for kind in sorted({d["fault"] for d in devices if d["fault"]}):
        ds = [d for d in devices if d["fault"] == kind]
        pos = [d for d in ds if d["expected_status"] in _POS]
        found = [d for d in pos if d["outcome"] == "tp"]
        per_fault.append({
            "fault": kind, "n": len(ds), "positives": len(pos), "found": len(found),
            "recall": ratio(len(found), len(pos)),
            "suspect": sum(d["status"] == "suspect" for d in ds),
            "delay_steps_median": _med([d["delay_steps"] for d in found]),
            "delay_seconds_median": _med([d["delay_seconds"] for d in found]),
            "onset_abs_error_steps_median": _med([abs(d["onset_error_steps"]) for d in found if d["onset_error_steps"] is not None]),
        })
    per_magnitude = []
    for lo, hi in _MAG_BINS:
        ds = [d for d in devices if d["outcome"] in ("tp", "fn") and d.get("magnitude") is not None
              and lo <= d["magnitude"] < hi]
        if ds:
            found = sum(d["outcome"] == "tp" for d in ds)
            per_magnitude.append({"slowdown": f"{lo:.0%}-{hi:.0%}" if hi < 10 else f">={lo:.0%}",
                                  "n": len(ds), "found": found, "recall": found / len(ds)})
    return EvalReport(summary, per_fault, devices, per_magnitude)

# `degrade.evaluate(...)` works whether or not the module was imported first.
from ._callable_module import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "evaluate")

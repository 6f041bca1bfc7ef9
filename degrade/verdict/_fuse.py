"""Turn the engine's state arrays into :class:`Verdict` objects (status, reasons, action)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import _layout as K
from ._types import Status, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from .engine import VerdictEngine


@dataclass
class _Evidence:
    status: Status
    score: float
    reason: str
    action: str
    slowdown: float | None = None
    onset_step: float = math.nan
    onset_time: float = math.nan
    detected_step: float = math.nan
    detected_time: float = math.nan


_HARD = {
    # kind: (status, action key, description)
    K.H_HW_SLOWDOWN: (Status.DEGRADED, "power", "HW slowdown clock-event reason (0x8)"),
    K.H_HW_THERMAL: (Status.DEGRADED, "thermal", "HW thermal slowdown clock-event reason (0x40)"),
    K.H_POWER_BRAKE: (Status.DEGRADED, "power", "HW power brake clock-event reason (0x80)"),
    K.H_SW_THERMAL: (Status.SUSPECT, "thermal", "SW thermal slowdown clock-event reason (0x20)"),
    K.H_PCIE_WIDTH: (Status.DEGRADED, "pcie", "PCIe link width below its maximum"),
    K.H_PCIE_GEN: (Status.DEGRADED, "pcie", "PCIe link generation below its maximum while busy"),
    K.H_ECC_UNCORRECTED: (Status.DEGRADED, "ecc", "uncorrectable ECC errors rising"),
    K.H_REMAP_PENDING: (Status.DEGRADED, "remap", "row remap pending (needs a GPU reset)"),
    K.H_REMAP_FAILURE: (Status.DEGRADED, "rma", "row remapping failure"),
    K.H_ROWS_UNCORRECTABLE: (Status.SUSPECT, "watch", "rows remapped after uncorrectable errors"),
    K.H_XID: (Status.DEGRADED, "fatal", "XID error"),
}

_RATE_SIGNALS = {
    K.H_PCIE_REPLAY: ("link", "PCIe replay counter rising"),
    K.H_NVLINK: ("link", "NVLink error counters rising"),
    K.H_ECC_CORRECTED: ("watch", "corrected ECC errors rising"),
}

_FATAL_XID = {
    48: "XID 48 (double-bit ECC error)",
    79: "XID 79 (GPU has fallen off the bus)",
    95: "XID 95 (uncontained ECC error)",
    119: "XID 119 (GSP RPC timeout)",
    120: "XID 120 (GSP error)",
    140: "XID 140 (unrecovered ECC error)",
}


def _at(step: float, time: float) -> str:
    if math.isfinite(step):
        return f"step {int(step)}"
    if math.isfinite(time):
        return f"t={time:.0f}"
    return "the start"


def _fin(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _timing_status(eng: VerdictEngine, mean: float, n: float, sig: float) -> Status:
    """Degraded only when the slowdown estimate reaches ``min_slowdown``.

    ``mean`` (log units) is the mean deviation over ``n`` samples since onset,
    ``sig`` the channel's long-run (autocorrelation-inflated) sigma. The floor
    allows for the estimate's own uncertainty: degraded needs the point
    estimate past the midpoint between ``healthy_offset`` and ``min_slowdown``
    *and* ``min_slowdown`` within two standard errors (``sig/sqrt(n)``) of it,
    so a long, well-measured 3.7 % (or 16 % at ``min_slowdown=0.2``) episode
    is suspect, while a short episode at about ``min_slowdown`` keeps its
    benefit of the doubt.
    """
    p = eng._params
    if mean < 0.5 * (p[K.P_MU0] + p[K.P_MU1]):
        return Status.SUSPECT
    se = sig / math.sqrt(max(n, 1.0)) if math.isfinite(sig) else 0.0
    return Status.DEGRADED if mean + 2.0 * se >= p[K.P_MU1] else Status.SUSPECT


def _crossing(row: np.ndarray, chart: str = "CUSUM") -> str:
    """The statistic that raised the alarm, at the sample it crossed h."""
    xs, xh = row[K.C_XS], row[K.C_XH]
    if not (math.isfinite(xs) and math.isfinite(xh)):
        return ""
    if chart == "CUSUM" and row[K.C_XBIG] != 0.0:
        return f"; median of the last {K.RING} deviations {xs:.1f} sigma > {xh:.1f} (large-shift rule)"
    return f"; {chart} {xs:.1f} > h {xh:.1f}"


def _channel_evidence(eng: VerdictEngine, S: np.ndarray, i: int, what: str, latch: bool,
                      peers: bool = False) -> _Evidence | None:
    row = S[i]
    active = row[K.C_ALARM] != 0.0
    if not active and not (latch and row[K.C_EPISODES] > 0):
        return None
    mean = row[K.C_ASUM] / max(row[K.C_AN], 1.0)
    desc = what.format(pct=100.0 * math.expm1(mean))
    loc = row[K.C_LOC]
    if peers and math.isfinite(loc) and loc < 0.0:
        # a device that ran faster than its peers before the change: its
        # slowdown is measured against its own level before onset (the peers'
        # gap understates it by its healthy offset)
        desc = what.format(pct=100.0 * math.expm1(mean - loc)).replace(
            "above peers", f"above its own level before onset, {100.0 * math.expm1(mean):.1f} % above peers")
        mean -= loc
    slowdown = math.expm1(mean)
    status = _timing_status(eng, mean, row[K.C_AN], row[K.C_SIG])
    if row[K.C_XBIG] != 0.0:
        # the window-median rule's arl0 holds for Gaussian AR(1) noise; a few
        # steps of heavy-tailed noise can mimic it, so it alone makes a suspect
        status = Status.SUSPECT
    h = row[K.C_H]
    s = row[K.C_S]
    score = row[K.C_PEAK] if (latch or not active) else s / h
    since = _at(row[K.C_ONSTEP], row[K.C_ONTIME])
    text = f"{desc} since {since}{_crossing(row)}" if active else (
        f"{desc} from {since} until {_at(row[K.C_ENDSTEP], row[K.C_ENDTIME])} (recovered){_crossing(row)}"
    )
    return _Evidence(status, float(score), text, "timing", slowdown, row[K.C_ONSTEP], row[K.C_ONTIME],
                     row[K.C_DETSTEP], row[K.C_DETTIME])


def _order(times_known: bool, step: float, time: float) -> tuple[int, float]:
    if times_known:
        return (0, time)
    return (0, step) if math.isfinite(step) else (1, time if math.isfinite(time) else math.inf)


def fuse(eng: VerdictEngine) -> list[Verdict]:
    cfg = eng.config
    latch = cfg.latch
    m = len(eng._names)
    SD = eng._SD[:m]
    ST, SS, SC, SH = eng._ST, eng._SS, eng._SC, eng._SH
    warm = cfg.warmup

    # newest data per job, for the data-stopped rule
    newest: dict[object, list[float]] = {}
    for i in range(m):
        key = eng._job[i]
        cur = newest.setdefault(key, [-math.inf, -math.inf, -math.inf])
        for a, f in enumerate((K.SD_LASTSTEP, K.SD_LASTTIME, K.SD_LASTSEQ)):
            v = SD[i, f]
            if math.isfinite(v) and v > cur[a]:
                cur[a] = v

    out: list[Verdict] = []
    for i in range(m):
        dev = eng._names[i]
        job = eng._job[i]
        group = eng._group[i]
        metric = eng._metric[i] or "step time"
        ev: list[_Evidence] = []
        where = f"job {job} group {group}" if group is not None else f"job {job}"

        e = _channel_evidence(eng, ST, i, f"{metric} {{pct:.1f}} % above peers ({where})", latch, peers=True)
        if e:
            ev.append(e)
        e = _channel_evidence(eng, SS, i, f"{metric} {{pct:.1f}} % above its own baseline (no peers)", latch)
        if e:
            ev.append(e)
        r = eng._SB[i]
        if r[K.C_ALARM] != 0.0 or (latch and r[K.C_EPISODES] > 0):
            since = _at(r[K.C_ONSTEP], r[K.C_ONTIME])
            # stalls that do not add up to a real slowdown (clusters of healthy
            # spikes) are only suspect
            mean_d = r[K.C_ASUM] / max(r[K.C_AN], 1.0)
            st = _timing_status(eng, mean_d, r[K.C_AN], ST[i, K.C_SIG])
            ev.append(_Evidence(st, float(r[K.C_PEAK] if latch else r[K.C_S] / r[K.C_H]),
                                f"intermittent stalls of {metric} (steps at least 2x the peers' median) since "
                                f"{since}: mean {100 * math.expm1(r[K.C_ASUM] / max(r[K.C_AN], 1.0)):.1f} % "
                                f"above peers{_crossing(r, 'stall CUSUM')}",
                                "timing", math.expm1(r[K.C_ASUM] / max(r[K.C_AN], 1.0)), r[K.C_ONSTEP],
                                r[K.C_ONTIME], r[K.C_DETSTEP], r[K.C_DETTIME]))
        e = _channel_evidence(eng, SC, i, "SM clock {pct:.1f} % below busy peers of the same model", latch)
        if e:
            e.action = "clock"
            ev.append(e)

        for k, (status, action, text) in _HARD.items():
            r = SH[i, k]
            on = r[K.HF_ACTIVE] != 0.0 or (latch and r[K.HF_EVER] != 0.0)
            if not on:
                continue
            detail = text
            if k in (K.H_PCIE_WIDTH, K.H_PCIE_GEN) and math.isfinite(r[K.HF_VAL]):
                detail = f"{text} ({'x' if k == K.H_PCIE_WIDTH else 'gen '}{int(r[K.HF_VAL])})"
            elif k == K.H_XID and math.isfinite(r[K.HF_VAL]):
                detail = f"XID {int(r[K.HF_VAL])}"
            elif k == K.H_ECC_UNCORRECTED:
                detail = f"{text} (+{int(r[K.HF_TOTAL])})"
            ev.append(_Evidence(status, 1.0, f"{detail} since {_at(r[K.HF_ONSTEP], r[K.HF_ONTIME])}", action,
                                None, r[K.HF_ONSTEP], r[K.HF_ONTIME], r[K.HF_DETSTEP], r[K.HF_DETTIME]))
        # SW power capping is routine under full load: evidence only with a clock below peers
        r = SH[i, K.H_SW_POWER]
        if r[K.HF_ACTIVE] != 0.0 and (SC[i, K.C_S] > 0.0 or SC[i, K.C_ALARM] != 0.0):
            ev.append(_Evidence(Status.SUSPECT, 1.0, f"SW power cap (0x4) with a clock below peers since "
                                f"{_at(r[K.HF_ONSTEP], r[K.HF_ONTIME])}", "power", None, r[K.HF_ONSTEP],
                                r[K.HF_ONTIME], r[K.HF_DETSTEP], r[K.HF_DETTIME]))
        for k, (action, text) in _RATE_SIGNALS.items():
            r = SH[i, k]
            on = r[K.HF_ACTIVE] != 0.0 or (latch and r[K.HF_EVER] != 0.0)
            if not on:
                continue
            rate = r[K.HF_RATE]
            # a rising link/ECC counter alone costs little throughput: suspect;
            # the timing channels make it degraded when it does slow the device
            if k == K.H_ECC_CORRECTED and rate < cfg.counter_rate_degraded:
                continue
            status = Status.SUSPECT
            ev.append(_Evidence(status, rate / cfg.counter_rate_degraded,
                                f"{text} (+{int(r[K.HF_TOTAL])}, in {100 * rate:.0f} % of recent samples) since "
                                f"{_at(r[K.HF_ONSTEP], r[K.HF_ONTIME])}", action, None, r[K.HF_ONSTEP],
                                r[K.HF_ONTIME], r[K.HF_DETSTEP], r[K.HF_DETTIME]))

        failed = SD[i, K.SD_FAILED]
        if failed != 0.0:
            if failed == -1.0:
                why = eng._lost_reason.get(dev) or "marked lost"
            elif failed == -2.0:
                why = "device lost (NVML: GPU is lost)"
            else:
                why = _FATAL_XID.get(int(failed), f"XID {int(failed)}")
            at = _at(SD[i, K.SD_FAILSTEP], SD[i, K.SD_FAILTIME])
            ev.append(_Evidence(Status.FAILED, math.inf, f"{why} at {at}", "fatal", None,
                                SD[i, K.SD_FAILSTEP], SD[i, K.SD_FAILTIME], SD[i, K.SD_FAILSTEP],
                                SD[i, K.SD_FAILTIME]))

        # ---- the status -------------------------------------------------
        n_judged = max(ST[i, K.C_N], SS[i, K.C_N], SD[i, K.SD_NC])
        scores = [ST[i, K.C_S] / ST[i, K.C_H], SS[i, K.C_S] / SS[i, K.C_H], SC[i, K.C_S] / SC[i, K.C_H]]
        base_score = max([s for s in scores if math.isfinite(s)], default=0.0)
        reasons: list[str] = []
        if ev:
            ev.sort(key=lambda x: (x.status.severity, x.score), reverse=True)
            top = ev[0]
            status = top.status
            reasons = [x.reason for x in ev]
        else:
            top = None
            status = Status.HEALTHY if n_judged >= warm else Status.UNKNOWN
            if status is Status.UNKNOWN:
                reasons = [f"warm-up: {int(n_judged)} of {warm} samples"]

        last = (SD[i, K.SD_LASTSTEP], SD[i, K.SD_LASTTIME], SD[i, K.SD_LASTSEQ])
        cur = newest[job]
        stale = False
        if math.isfinite(last[0]) and math.isfinite(cur[0]):
            stale = cur[0] - last[0] > cfg.data_timeout_steps
        elif math.isfinite(last[1]) and math.isfinite(cur[1]):
            stale = cur[1] - last[1] > cfg.data_timeout_s
        elif math.isfinite(last[2]):
            stale = cur[2] - last[2] > cfg.data_timeout_steps
        if stale and status is not Status.FAILED:
            msg = f"no data since {_at(last[0], last[1])}"
            if status in (Status.HEALTHY, Status.SUSPECT, Status.UNKNOWN):
                status = Status.UNKNOWN
                reasons = [msg, *reasons[:3]] if ev else [msg]
                top = None
            else:
                reasons.append(msg)

        signals: dict[str, object] = {
            "metric": eng._metric[i],
            "group": group if isinstance(group, (str, int, float)) or group is None else str(group),
            "peers": _fin(SD[i, K.SD_NPEERS]),
            "timing_samples": int(SD[i, K.SD_NT]),
            "timing_missing": int(SD[i, K.SD_NMISS]),
            "counter_samples": int(SD[i, K.SD_NC]),
            "peer_cusum": _fin(ST[i, K.C_S]),
            "peer_h": _fin(ST[i, K.C_H]),
            "peer_deviation": _fin(ST[i, K.C_LASTX]),
            "peer_sigma": _fin(ST[i, K.C_SIG]),
            "own_cusum": _fin(SS[i, K.C_S]),
            "clock_cusum": _fin(SC[i, K.C_S]),
            "idle": bool(SD[i, K.SD_IDLE] == 1.0),
        }
        if signals["idle"] and status is Status.HEALTHY:
            reasons.append("idle")

        action = None
        if status is Status.FAILED:
            action = _ACTION["fatal"]
        elif top is not None and status in (Status.DEGRADED, Status.SUSPECT):
            action = _ACTION[top.action] if status is Status.DEGRADED else _ACTION["watch"]
        elif status is Status.UNKNOWN and stale:
            action = "check that the device and its exporter are still reporting"

        v = Verdict(
            device=dev,
            status=status,
            job=job,
            host=eng._host[i],
            slowdown=None,
            score=float(base_score) if top is None else float(min(top.score, 1e6) if math.isfinite(top.score) else 1e6),
            reasons=reasons,
            action=action,
            signals=signals,
        )
        if top is not None:
            # the slowdown of the evidence that set the status, so that the two agree
            slow = next((x.slowdown for x in ev if x.slowdown is not None and x.status is status),
                        next((x.slowdown for x in ev if x.slowdown is not None), None))
            v.slowdown = slow
            # the change began at the earliest onset among evidence of the final severity
            # (by time when every candidate has one: counter evidence has no step)
            same = [x for x in ev if x.status is status]
            on_t = all(math.isfinite(x.onset_time) for x in same)
            det_t = all(math.isfinite(x.detected_time) for x in same)
            first = min(same, key=lambda x: _order(on_t, x.onset_step, x.onset_time))
            seen = min(same, key=lambda x: _order(det_t, x.detected_step, x.detected_time))
            v.onset_step = int(first.onset_step) if math.isfinite(first.onset_step) else None
            v.onset_time = _fin(first.onset_time)
            v.detected_step = int(seen.detected_step) if math.isfinite(seen.detected_step) else None
            v.detected_time = _fin(seen.detected_time)
        out.append(v)
    return out


_ACTION = {
    "fatal": "take the GPU out of service and reset or replace it",
    "timing": "drain the device and run diagnostics (dcgmi diag -r 3); compare with peers after a reset",
    "clock": "check cooling, power delivery and application clocks; drain if it persists",
    "thermal": "check cooling (fans, airflow, inlet temperature); drain if it persists",
    "power": "check power delivery (PSU, power brake); drain if it persists",
    "pcie": "check the PCIe link (reseat the card or riser, check the slot); drain the device",
    "remap": "reset the GPU to apply pending row remaps (nvidia-smi -r), then re-check",
    "rma": "row remapping failed: drain the device and start an RMA",
    "ecc": "uncorrectable memory errors: drain the device, reset it and run dcgmi diag",
    "link": "rising link errors: check NVLink/PCIe cabling and retimers",
    "watch": "keep watching; no action yet",
}

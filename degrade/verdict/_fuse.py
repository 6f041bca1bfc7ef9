"""Turn the engine's state arrays into :class:`Verdict` objects (status, reasons, action)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import _layout as K
from ._events import _place
from ._kernels import _episode_degraded
from ._types import Status, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from .engine import EngineConfig


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


@dataclass(frozen=True)
class EngineSnapshot:
    """What :func:`fuse` reads: the engine's configuration and state arrays, one row per device.

    Built by :meth:`VerdictEngine.snapshot` (copies, so fusing never sees a
    half-updated engine and never reaches into its private attributes).
    """

    config: EngineConfig
    params: np.ndarray
    devices: list[str]
    jobs: list
    hosts: list
    groups: list
    metrics: list
    timing_peer: np.ndarray
    timing_own: np.ndarray
    clock_peer: np.ndarray
    stall_peer: np.ndarray
    hard: np.ndarray
    device: np.ndarray
    lost_reasons: dict[str, str] = field(default_factory=dict)
    #: the timing-peer channel's onset history (deviations first): read for ``peer_excess`` (fleet memory)
    history_peer: np.ndarray | None = None


def _timing_status(snap: EngineSnapshot, mean: float, n: float, sig: float, own: bool = False,
                   se0: float = 0.0) -> Status:
    """Degraded only when the slowdown estimate reaches ``min_slowdown`` (see ``_episode_degraded``)."""
    p = snap.params
    mu0 = 0.0 if own else float(p[K.P_MU0])
    ok = _episode_degraded(mean, n, sig, mu0, float(p[K.P_MU1]), 0.0, se0)
    return Status.DEGRADED if ok else Status.SUSPECT


def _crossing(xs: float, xh: float, big: bool, chart: str = "CUSUM") -> str:
    """The statistic that raised the alarm, at the sample it crossed h."""
    if not (math.isfinite(xs) and math.isfinite(xh)):
        return ""
    if chart == "CUSUM" and big:
        return f"; median of the last {K.RING} innovations {xs:.1f} sigma > {xh:.1f} (large-shift rule)"
    return f"; {chart} {xs:.1f} > h {xh:.1f}"


def _episode(snap: EngineSnapshot, row: np.ndarray, what: str, peers: bool, own: bool, latched: bool,
             active: bool) -> _Evidence:
    """Evidence of one episode: the current/last one, or the latched (first degraded) one."""
    f = _LATCHED if latched else _CURRENT
    mean = row[f["asum"]] / max(row[f["an"]], 1.0)
    desc = what.format(pct=100.0 * math.expm1(mean))
    loc = row[f["loc"]]
    se0 = 0.0
    if peers and math.isfinite(loc) and loc < 0.0:
        # as the kernel: at most healthy_offset faster than peers counts as its own level
        loc = max(loc, -float(snap.params[K.P_MU0]))
        se0 = float(row[f["bse"]]) if math.isfinite(row[f["bse"]]) else 0.0
        # a device that ran faster than its peers before the change: its
        # slowdown is measured against its own level before onset (the peers'
        # gap understates it by its healthy offset)
        desc = what.format(pct=100.0 * math.expm1(mean - loc)).replace(
            "above peers", f"above its own level before onset, {100.0 * math.expm1(mean):.1f} % above peers")
        mean -= loc
    big = row[f["xbig"]] != 0.0
    if latched:
        status = Status.DEGRADED if row[K.C_LATCHED] == 2.0 else Status.SUSPECT
    elif row[K.C_EPDEG] != 0.0:
        # once an episode qualified as degraded it stays so until it clears
        status = Status.DEGRADED
    else:
        status = _timing_status(snap, mean, row[f["an"]], row[f["sig"]], own, se0)
    if big:
        # the window-median rule's arl0 holds for Gaussian AR(1) noise; a few
        # steps of heavy-tailed noise can mimic it, so it alone makes a suspect
        status = Status.SUSPECT
    score = row[f["peak"]] if (latched or not active) else row[K.C_S] / row[K.C_H]
    since = _at(row[f["onstep"]], row[f["ontime"]])
    cross = _crossing(row[f["xs"]], row[f["xh"]], big)
    text = f"{desc} since {since}{cross}" if active else (
        f"{desc} from {since} until {_at(row[f['endstep']], row[f['endtime']])} (recovered){cross}"
    )
    return _Evidence(status, float(score), text, "timing", math.expm1(mean), row[f["onstep"]],
                     row[f["ontime"]], row[f["detstep"]], row[f["dettime"]])


_CURRENT = {"asum": K.C_ASUM, "an": K.C_AN, "loc": K.C_BEFORE, "bse": K.C_BSE, "xbig": K.C_XBIG, "sig": K.C_SIG, "peak": K.C_PEAK,
            "onstep": K.C_ONSTEP, "ontime": K.C_ONTIME, "xs": K.C_XS, "xh": K.C_XH, "endstep": K.C_ENDSTEP,
            "endtime": K.C_ENDTIME, "detstep": K.C_DETSTEP, "dettime": K.C_DETTIME}
_LATCHED = {"asum": K.C_L_ASUM, "an": K.C_L_AN, "loc": K.C_L_LOC, "bse": K.C_L_BSE, "xbig": K.C_L_XBIG, "sig": K.C_L_SIG,
            "peak": K.C_L_PEAK, "onstep": K.C_L_ONSTEP, "ontime": K.C_L_ONTIME, "xs": K.C_L_XS, "xh": K.C_L_XH,
            "endstep": K.C_L_ENDSTEP, "endtime": K.C_L_ENDTIME, "detstep": K.C_L_DETSTEP,
            "dettime": K.C_L_DETTIME}


def _channel_evidence(snap: EngineSnapshot, S: np.ndarray, i: int, what: str, latch: bool,
                      peers: bool = False, own: bool = False) -> tuple[list[_Evidence], list[str]]:
    """Evidence of one timing/clock channel, and history lines (episodes that set no status).

    Streaming: only an episode in progress counts (``degraded`` once its
    slowdown estimate reaches ``min_slowdown``, else ``suspect``: evidence
    not yet confirmed). Batch latch: also the first episode that was
    degraded, even if it recovered. A recovered episode that never reached
    ``min_slowdown`` is history, not a status.
    """
    row = S[i]
    active = row[K.C_ALARM] != 0.0
    out: list[_Evidence] = []
    history: list[str] = []
    if active:
        out.append(_episode(snap, row, what, peers, own, latched=False, active=True))
    if latch and row[K.C_LATCHED] != 0.0:
        out.append(_episode(snap, row, what, peers, own, latched=True, active=False))
    elif latch and not active and row[K.C_EPISODES] > 0:
        e = _episode(snap, row, what, peers, own, latched=False, active=False)
        n = int(row[K.C_EPISODES])
        history.append(f"history: {n} recovered episode(s) below min_slowdown, the last {e.reason}")
    return out, history


def _order(times_known: bool, step: float, time: float) -> tuple[int, float]:
    if times_known:
        return (0, time)
    return (0, step) if math.isfinite(step) else (1, time if math.isfinite(time) else math.inf)


def fuse(snap: EngineSnapshot) -> list[Verdict]:
    """One :class:`Verdict` per device of ``snap``, in its order."""
    cfg = snap.config
    latch = cfg.latch
    m = len(snap.devices)
    SD = snap.device
    ST, SS, SC, SB, SH = snap.timing_peer, snap.timing_own, snap.clock_peer, snap.stall_peer, snap.hard
    warm = cfg.warmup

    # newest data per job, for the data-stopped rule
    newest: dict[object, list[float]] = {}
    for i in range(m):
        key = snap.jobs[i]
        cur = newest.setdefault(key, [-math.inf, -math.inf, -math.inf])
        for a, f in enumerate((K.SD_LASTSTEP, K.SD_LASTTIME, K.SD_LASTSEQ)):
            v = SD[i, f]
            if math.isfinite(v) and v > cur[a]:
                cur[a] = v

    excess = None
    if snap.history_peer is not None:
        from ._excess import peer_excess_all

        excess = peer_excess_all(ST, snap.history_peer, float(cfg.winsor))
    out: list[Verdict] = []
    for i in range(m):
        dev = snap.devices[i]
        job = snap.jobs[i]
        group = snap.groups[i]
        metric = snap.metrics[i] or "step time"
        ev: list[_Evidence] = []
        history: list[str] = []
        where = _place(job, group)

        for S, what, kw in (
            (ST, f"{metric} {{pct:.1f}} % above peers ({where})", {"peers": True}),
            (SS, f"{metric} {{pct:.1f}} % above its own baseline (no peers)", {"own": True}),
        ):
            e, h = _channel_evidence(snap, S, i, what, latch, **kw)
            ev += e
            history += h
        r = SB[i]
        active = r[K.C_ALARM] != 0.0
        if active or (latch and r[K.C_EPISODES] > 0):
            # the Bernoulli CUSUM found an excess of slow steps; the episode is
            # degraded once it qualified as an intermittent fault (slow steps
            # on >= intermittent_rate of its steps, >= intermittent_min above
            # peers on average: C_EPDEG, judged by the kernel while it is in
            # progress), suspect while in progress unqualified, and history
            # once it recovered unqualified (batch latch: an earlier episode
            # that qualified keeps the device degraded)
            since = _at(r[K.C_ONSTEP], r[K.C_ONTIME])
            mean_d = r[K.C_ASUM] / max(r[K.C_AN], 1.0)
            n_slow = int(r[K.C_SQ])
            slow_pct = 100.0 * math.expm1(r[K.C_XP] / n_slow) if n_slow else math.nan
            share = 100.0 * n_slow / max(r[K.C_AN], 1.0)
            end = "" if active else f" until {_at(r[K.C_ENDSTEP], r[K.C_ENDTIME])} (recovered)"
            text = (f"intermittent stalls of {metric} since {since}{end}: {n_slow} slow steps "
                    f"({share:.0f} % of steps, {slow_pct:.0f} % above peers on average), "
                    f"{100 * math.expm1(mean_d):.1f} % above peers overall"
                    f"{_crossing(r[K.C_XS], r[K.C_XH], False, 'slow-step CUSUM')}")
            qualified = r[K.C_EPDEG] != 0.0
            need = (f"{100 * cfg.intermittent_min:.0f} % slower on {100 * cfg.intermittent_rate:.0f} % of steps")
            earlier = latch and r[K.C_LATCHED] == 2.0
            if active or earlier:
                status = Status.DEGRADED if qualified or earlier else Status.SUSPECT
                if status is Status.SUSPECT:
                    text += f" (not yet an intermittent fault: needs at least {need})"
                elif not qualified:
                    text += f" (an earlier episode of this device qualified: at least {need})"
                ev.append(_Evidence(status, float(r[K.C_PEAK] if latch else r[K.C_S] / r[K.C_H]), text,
                                    "timing", math.expm1(mean_d), r[K.C_ONSTEP], r[K.C_ONTIME],
                                    r[K.C_DETSTEP], r[K.C_DETTIME]))
            else:
                n_ep = int(r[K.C_EPISODES])
                history.append(f"history: {n_ep} recovered intermittent-stall episode(s) short of an "
                               f"intermittent fault ({need}), the last {text}")
        e, h = _channel_evidence(snap, SC, i, "SM clock {pct:.1f} % below busy peers of the same model", latch)
        for x in e:
            x.action = "clock"
        ev += e
        history += h

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
                why = snap.lost_reasons.get(dev) or "marked lost"
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
            "metric": snap.metrics[i],
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
        n_out = int(SD[i, K.SD_NOUT])
        signals["timing_outliers"] = n_out
        signals["peer_phi"] = _fin(ST[i, K.C_PHIU])
        _excess_signals(signals, snap, i, excess)
        if n_out:
            reasons.append(f"{n_out} implausible {metric} sample(s) skipped as data errors "
                           f"(more than {cfg.outlier_ratio:g}x from peers and the device's own range)")
        # recovered episodes that never reached min_slowdown: history, not a status
        reasons += history

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
            host=snap.hosts[i],
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


def _excess_signals(signals: dict, snap: EngineSnapshot, i: int, excess) -> None:
    """Fleet memory's per-job evidence (:mod:`degrade.verdict._excess`) and the job's time span."""
    signals["peer_excess"] = None if excess is None else _fin(excess[0][i])
    signals["peer_excess_se"] = None if excess is None else _fin(excess[1][i])
    signals["peer_excess_samples"] = 0 if excess is None else int(excess[2][i])
    signals["first_time"] = _fin(snap.timing_peer[i, K.C_FTIME])
    signals["last_time"] = _fin(snap.device[i, K.SD_LASTTIME])


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

"""Self-contained HTML report: inline SVG, inline CSS, no script, no network.

For each flagged device the report re-reads only that device's job and a
bounded sample of its peers (at most ``_MAX_PEERS``), so the report costs
little beside the analysis even for very large jobs.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from typing import Any

import numpy as np

__all__ = ["write_report", "render_report", "device_series", "counter_series"]

_MAX_PEERS = 64
_MAX_POINTS = 600
_W, _H = 760, 240
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 16, 14, 36

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1000px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} td,th{padding:3px 8px;border-bottom:1px solid #e4e4e7;text-align:left}
th{background:#f4f4f5} .num{text-align:right;font-variant-numeric:tabular-nums}
.s-failed{background:#b91c1c;color:#fff;padding:1px 6px;border-radius:3px}
.s-degraded{color:#b91c1c;font-weight:600} .s-suspect{color:#b45309;font-weight:600}
.s-unknown{color:#71717a} .s-healthy{color:#15803d}
.muted{color:#71717a;font-size:12px} .card{border:1px solid #e4e4e7;border-radius:6px;padding:8px 12px;margin:12px 0}
svg text{font-size:11px;fill:#52525b}
"""


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _pct(x) -> str:
    return "" if x is None else f"{100.0 * x:+.1f}&nbsp;%"


def _downsample(x: np.ndarray, cols: list[np.ndarray], max_points: int):
    """Bucket medians so a plot never has more than ``max_points`` points."""
    n = x.size
    if n <= max_points:
        return x.astype(float), cols
    edges = np.linspace(0, n, max_points + 1).astype(int)
    xs = np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:])], dtype=float)
    out = []
    for c in cols:
        with np.errstate(all="ignore"), _quiet():
            out.append(np.array([np.nanmedian(c[a:b]) if np.isfinite(c[a:b]).any() else np.nan
                                 for a, b in zip(edges[:-1], edges[1:])]))
    return xs, out


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def device_series(result, verdict) -> dict[str, Any] | None:
    """The flagged device's signal, its peers' median and 10–90 % band, per step (or time).

    Returns None when the device has no timing or counter series to plot.
    """
    import polars as pl

    from ._blocks import timing_block
    from ._plan import _indexed, _job_filter, scan_kind
    from ._warnings import WarningLog

    sources = result._sources
    tl = scan_kind(sources, "timings") if any(s.kind == "timings" for s in sources) else None
    log = WarningLog()
    if tl is not None:
        schema = tl.collect_schema()
        signal = "compute_time" if "compute_time" in schema else (
            "step_time" if "step_time" in schema else next((c for c in schema if c.endswith("_time")), None))
        job_lf = tl.filter(_job_filter(verdict.job))
        meta_cols = ["device"] + [c for c in ("group",) if c in schema]
        devs = job_lf.select(meta_cols).unique(subset=["device"], keep="first").collect()
        row = devs.filter(pl.col("device") == verdict.device)
        if signal is not None and row.height:
            if "group" in devs.columns:
                g = row.get_column("group")[0]
                devs = devs.filter(pl.col("group").is_null() if g is None else pl.col("group") == g)
            peers = sorted(d for d in devs.get_column("device").to_list() if d != verdict.device)
            if len(peers) > _MAX_PEERS:  # evenly spaced sample: bounded cost, deterministic
                idx = np.linspace(0, len(peers) - 1, _MAX_PEERS).round().astype(int)
                peers = [peers[i] for i in idx]
            chosen = [verdict.device, *peers]
            meta = _indexed(pl.DataFrame({"device": chosen}))
            cols = ["device", "step", signal] + (["timestamp"] if "timestamp" in schema else [])
            df = job_lf.filter(pl.col("device").is_in(chosen)).select(cols).collect()
            block = timing_block(df, meta, [signal], job=verdict.job, log=log)
            if block is not None:
                return _series(block, verdict.device, signal, "step", block.steps)
    return counter_series(result, verdict)


def counter_series(result, verdict, signal: str | None = None) -> dict[str, Any] | None:
    """The device's counter ``signal`` (default: the one its reasons name) against its host's GPUs."""
    import polars as pl

    from ._blocks import counter_block
    from ._plan import _counter_columns, _indexed, scan_kind
    from ._warnings import WarningLog

    sources = result._sources
    log = WarningLog()
    cl = scan_kind(sources, "counters") if any(s.kind == "counters" for s in sources) else None
    if cl is not None:
        schema = cl.collect_schema()
        metrics = _counter_columns(schema)
        if signal is None or signal not in metrics:
            wanted = [*_evidence_signals(verdict), "sm_clock_mhz", "gpu_temp_celsius", "power_watts"]
            signal = next((m for m in wanted if m in metrics), None)
        if signal is None:
            return None
        host_of = cl.filter(pl.col("device") == verdict.device)
        if "host" in schema:
            h = host_of.select(pl.col("host").drop_nulls().first()).collect().item()
            peers_lf = cl.filter(pl.col("host") == h) if h is not None else host_of
        else:
            peers_lf = host_of
        peers = sorted(set(peers_lf.select("device").unique().collect().get_column("device").to_list())
                       - {verdict.device})[:_MAX_PEERS]
        chosen = [verdict.device, *peers]
        df = cl.filter(pl.col("device").is_in(chosen)).select(["device", "timestamp", signal]).collect()
        if df.height == 0:
            return None
        ts = df.get_column("timestamp").cast(pl.Float64)
        t0 = float(ts.min())
        per_dev = df.group_by("device").agg(pl.col("timestamp").cast(pl.Float64).sort().diff().median())
        iv = per_dev.get_column("timestamp").drop_nulls()
        interval = float(iv.median()) if iv.len() and iv.median() > 0 else 1.0
        meta = _indexed(pl.DataFrame({"device": chosen}))
        block = counter_block(df, meta, [signal], t0=t0, interval=interval, log=log)
        if block is not None:
            return _series(block, verdict.device, signal, "time", block.timestamps)
    return None


#: words of a reason -> the counter that shows that evidence
_EVIDENCE = (
    ("PCIe link width", "pcie_link_width"), ("PCIe link gen", "pcie_link_gen"),
    ("PCIe replay", "pcie_replay_total"), ("NVLink", "nvlink_crc_errors_total"),
    ("SM clock", "sm_clock_mhz"), ("thermal", "gpu_temp_celsius"), ("power", "power_watts"),
    ("clock-event", "sm_clock_mhz"), ("remap", "remapped_rows_uncorrectable"),
    ("ECC", "ecc_uncorrected_total"),
)

#: y-axis unit of each plotted signal
_UNITS = {
    "compute_time": "s", "step_time": "s", "sm_clock_mhz": "MHz", "mem_clock_mhz": "MHz",
    "gpu_temp_celsius": "°C", "memory_temp_celsius": "°C", "power_watts": "W",
    "pcie_link_width": "lanes", "pcie_link_gen": "PCIe generation", "pcie_replay_total": "replays",
    "nvlink_crc_errors_total": "errors", "remapped_rows_uncorrectable": "rows",
    "ecc_uncorrected_total": "errors",
}


def _evidence_signals(verdict) -> list[str]:
    out = []
    for reason in verdict.reasons:
        for word, sig in _EVIDENCE:
            if word.lower() in reason.lower() and sig not in out:
                out.append(sig)
    return out


def _unit(signal: str) -> str:
    if signal in _UNITS:
        return _UNITS[signal]
    return "s" if signal.endswith("_time") else ""


def _series(block, device, signal, axis_name, axis) -> dict[str, Any] | None:
    if device not in block.devices:
        return None
    j = block.devices.index(device)
    v = block.values[signal]
    mine = v[:, j]
    others = np.delete(v, j, axis=1)
    with np.errstate(all="ignore"), _quiet():
        if others.shape[1]:
            med = np.nanmedian(others, axis=1)
            lo = np.nanquantile(others, 0.1, axis=1)
            hi = np.nanquantile(others, 0.9, axis=1)
        else:
            med = lo = hi = np.full(v.shape[0], np.nan)
    x, (mine, med, lo, hi) = _downsample(np.asarray(axis, dtype=float), [mine, med, lo, hi],
                                         _MAX_POINTS)
    out = {"signal": signal, "axis": axis_name, "x": x, "device": mine, "median": med,
           "lo": lo, "hi": hi, "peers": int(others.shape[1])}
    if axis_name == "step" and block.timestamps is not None:
        ts = np.asarray(block.timestamps, dtype=float)
        st = np.asarray(axis, dtype=float)
        ok = np.isfinite(ts)
        if ok.sum() >= 2 and np.all(np.diff(ts[ok]) >= 0):
            out["step_of_time"] = (ts[ok], st[ok])  # to place a marker known only by its time
    return out


def _marker_x(s: dict[str, Any], step, t) -> float | None:
    """Where an onset/detection known by step and/or time falls on this plot's axis."""
    if s["axis"] == "time":
        return None if t is None else float(t)
    if step is not None:
        return float(step)
    if t is not None and "step_of_time" in s:
        ts, st = s["step_of_time"]
        if t <= ts[-1]:  # a time before the first step's end is at the first step
            return float(np.interp(t, ts, st))
    return None


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1e4 or (0 < a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _time_tick(t: float) -> str:
    return _dt.datetime.fromtimestamp(round(t), _dt.timezone.utc).strftime("%H:%M")


def svg_plot(s: dict[str, Any], onset: float | None, detected: float | None) -> str:
    """An inline SVG of the device's series against its peers' median and band.

    ``onset`` and ``detected`` are positions on the plot's own axis (a step,
    or a Unix time for counters); each is drawn as a dashed line with its
    label in its own row, so the two labels never overlap.
    """
    x = s["x"]
    ys = np.concatenate([s["device"], s["median"], s["lo"], s["hi"]])
    ys = ys[np.isfinite(ys)]
    if x.size == 0 or ys.size == 0:
        return '<p class="muted">no data to plot</p>'
    y_lo, y_hi = np.quantile(ys, [0.005, 0.995])
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 1e-9 - abs(y_lo) * 0.05, y_hi + 1e-9 + abs(y_hi) * 0.05
    pad = 0.06 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_lo, x_hi = float(x.min()), float(x.max())
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    pw, ph = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def px(v):
        return _PAD_L + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v):
        return _PAD_T + (1.0 - (np.clip(v, y_lo, y_hi) - y_lo) / (y_hi - y_lo)) * ph

    def path(y):
        parts, pen = [], False
        for xi, yi in zip(x, y):
            if not np.isfinite(yi):
                pen = False
                continue
            parts.append(f"{'L' if pen else 'M'}{px(xi):.1f},{py(yi):.1f}")
            pen = True
        return " ".join(parts)

    unit = _unit(s["signal"])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
           f'viewBox="0 0 {_W} {_H}" role="img" data-signal="{_esc(s["signal"])}">']
    out.append(f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#e4e4e7"/>')
    for t in _nice_ticks(y_lo, y_hi):
        out.append(f'<line x1="{_PAD_L}" x2="{_PAD_L + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ececec"/>')
        out.append(f'<text x="{_PAD_L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    y_label = f"{s['signal']} ({unit})" if unit else s["signal"]
    out.append(f'<text class="y-label" x="12" y="{_PAD_T + ph / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {_PAD_T + ph / 2:.0f})">{_esc(y_label)}</text>')
    is_time = s["axis"] == "time"
    for t in _nice_ticks(x_lo, x_hi, 6):
        label = _time_tick(t) if is_time else _fmt(t)
        out.append(f'<text x="{px(t):.1f}" y="{_PAD_T + ph + 16}" text-anchor="middle">{label}</text>')
    if is_time:
        day = _dt.datetime.fromtimestamp(round(x_lo), _dt.timezone.utc).strftime("%Y-%m-%d")
        axis_label = f"time (UTC, from {day})"
    else:
        axis_label = "step"
    out.append(f'<text class="x-label" x="{_PAD_L + pw / 2:.0f}" y="{_H - 4}" '
               f'text-anchor="middle">{axis_label}</text>')
    # peers' 10-90 % band as one polygon (finite points only)
    ok = np.isfinite(s["lo"]) & np.isfinite(s["hi"])
    if ok.sum() >= 2:
        top = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x[ok], s["hi"][ok]))
        bot = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x[ok][::-1], s["lo"][ok][::-1]))
        out.append(f'<polygon points="{top} {bot}" fill="#a1a1aa" fill-opacity="0.28" stroke="none"/>')
    out.append(f'<path d="{path(s["median"])}" fill="none" stroke="#52525b" stroke-width="1.3"/>')
    out.append(f'<path d="{path(s["device"])}" fill="none" stroke="#dc2626" stroke-width="1.4"/>')
    for row, (val, color, label) in enumerate(((onset, "#d97706", "onset"),
                                               (detected, "#7c3aed", "detected"))):
        if val is not None and math.isfinite(val) and val <= x_hi:
            if val < x_lo:  # began before the first plotted sample: mark the left edge
                label = f"{label} (before)"
            xv = px(max(val, x_lo))
            kind = label.split()[0]
            out.append(f'<line class="marker marker-{kind}" x1="{xv:.1f}" x2="{xv:.1f}" y1="{_PAD_T}" '
                       f'y2="{_PAD_T + ph}" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,3"/>')
            # each label in its own row; flipped to the left of its line near the right edge
            right = xv > _PAD_L + pw - 8 * len(label)
            tx, anchor = (xv - 3, "end") if right else (xv + 3, "start")
            out.append(f'<text x="{tx:.1f}" y="{_PAD_T + 11 + 13 * row}" text-anchor="{anchor}" '
                       f'fill="{color}" style="fill:{color}">{label}</text>')
    out.append("</svg>")
    return "".join(out)


def _legend(s) -> str:
    return (f'<p class="muted"><span style="color:#dc2626">━</span> this device · '
            f'<span style="color:#52525b">━</span> median of {s["peers"]} peers · '
            f'<span style="color:#a1a1aa">▆</span> peers 10–90 % · '
            f'<span style="color:#d97706">┆</span> onset · <span style="color:#7c3aed">┆</span> detected · '
            f'signal: <code>{_esc(s["signal"])}</code></p>')


def _plots(result, v) -> list[str]:
    """Each plot of the device's evidence (timings, then the counter its reasons name) with markers."""
    out = []
    series = [device_series(result, v)]
    if series[0] is not None and series[0]["axis"] == "step":
        counter_evidence = _evidence_signals(v) or (["sm_clock_mhz"] if v.onset_step is None else [])
        if counter_evidence:
            series.append(counter_series(result, v, counter_evidence[0]))
    for s in series:
        if s is None:
            continue
        onset = _marker_x(s, v.onset_step, v.onset_time)
        det = _marker_x(s, v.detected_step, v.detected_time)
        out.append(svg_plot(s, onset, det))
        out.append(_legend(s))
    return out


def _cause(e) -> str:
    cause = getattr(e, "cause_device", None)  # the degraded device that slowed the job, if any
    return f' <span class="muted">(caused by {_esc(cause)})</span>' if cause else ""


def _cost_section(result, ids, format_seconds) -> list[str]:
    """What each job lost to its flagged devices, costliest first (docs/cost.md)."""
    costs = [c for c in getattr(result, "costs", []) if c.lost_seconds > 0]
    if not costs:
        return []
    out = ["<h2>What it cost</h2>",
           '<p class="muted">Wall time each job lost had every flagged device run at its peer median '
           "(the step's critical path recomputed); GPU-hours = lost time × devices in the job. "
           "See docs/cost.md.</p>",
           '<table class="costs"><tr><th>job</th><th>lost</th><th>GPU-hours</th><th>share of wall time</th>'
           "<th>topology</th><th>devices</th><th>by device</th></tr>"]
    for c in sorted(costs, key=lambda c: (-c.lost_gpu_hours, -c.lost_seconds, str(c.job))):
        by = ", ".join(f'<span title="{_esc(d)}">{_esc(ids.get(d, d))}</span> {_esc(format_seconds(s))}'
                       for d, s in c.devices_lost_seconds.items())
        share = "" if c.lost_share is None else f"{100.0 * c.lost_share:.1f} %"
        out.append(f'<tr class="job-cost" data-job="{_esc(c.job)}"><td>{_esc(c.job)}</td>'
                   f'<td class="num">{_esc(format_seconds(c.lost_seconds))}</td>'
                   f'<td class="num">{c.lost_gpu_hours:,.2f}</td><td class="num">{share}</td>'
                   f"<td>{_esc(c.topology)}</td><td class=\"num\">{c.devices}</td><td>{by}</td></tr>")
    out.append("</table>")
    return out


def render_report(result, *, max_devices: int = 50) -> str:
    """The HTML report of ``result`` as text (see :func:`write_report`)."""
    from .. import __version__
    from ._formats import format_seconds, format_when, humanize, score_text, short_ids

    flagged = result.flagged()  # every device that is not healthy, unknown ones included
    ids = short_ids(v.device for v in result.verdicts)
    c = result.counts()
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>degrade analyze report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>degrade analyze</h1>",
             f'<p>{_esc(result.summary())}</p>',
             '<table><tr>' + "".join(f'<th>{k}</th>' for k in c) + '</tr><tr>'
             + "".join(f'<td class="num s-{k}">{n}</td>' for k, n in c.items()) + '</tr></table>']
    parts.extend(_cost_section(result, ids, format_seconds))
    parts.append("<h2>Devices that are not healthy</h2>")
    if flagged:
        parts.append('<p class="muted">Times in UTC. The full UUID is in each card and in the JSON '
                     "output.</p>")
        parts.append('<table class="devices"><tr><th>status</th><th>device</th><th>job</th><th>host</th>'
                     "<th>slowdown</th><th>onset</th><th>detected</th><th>score</th><th>job lost</th>"
                     "<th>why</th></tr>")
        for i, v in enumerate(flagged):
            st = str(v.status)
            name = _esc(ids.get(v.device, v.device))
            link = f'<a href="#d{i}">{name}</a>' if i < max_devices else name
            why = _esc(humanize(v.reasons[0])) if v.reasons else ""
            if len(v.reasons) > 1:
                why += f' <span class="muted">(+{len(v.reasons) - 1} in the card)</span>'
            parts.append(
                f'<tr data-device="{_esc(v.device)}" data-status="{st}"><td class="s-{st}">{st}</td>'
                f'<td title="{_esc(v.device)}">{link}</td><td>{_esc(v.job)}</td>'
                f'<td>{_esc(v.host)}</td><td class="num">{_pct(v.slowdown)}</td>'
                f'<td class="num">{_esc(format_when(v.onset_step, v.onset_time))}</td>'
                f'<td class="num">{_esc(format_when(v.detected_step, v.detected_time))}</td>'
                f'<td class="num">{_esc(score_text(v.score))}</td>'
                f'<td class="num">{_esc(format_seconds(v.lost_seconds))}</td><td>{why}</td></tr>')
        parts.append("</table>")
    else:
        parts.append("<p>None: every device with enough data is healthy.</p>")
    for i, v in enumerate(flagged[:max_devices]):
        st = str(v.status)
        parts.append(f'<div class="card" id="d{i}" data-device="{_esc(v.device)}"><h3>'
                     f'<span class="s-{st}">{st}</span> {_esc(v.device)} <span class="muted">job '
                     f'{_esc(v.job)} · host {_esc(v.host)} · slowdown {_pct(v.slowdown) or "n/a"}'
                     f' · onset {_esc(format_when(v.onset_step, v.onset_time)) or "n/a"}'
                     f' · detected {_esc(format_when(v.detected_step, v.detected_time)) or "n/a"}'
                     + (f" · job lost {_esc(format_seconds(v.lost_seconds))}" if v.lost_seconds else "")
                     + "</span></h3>")
        if v.reasons:
            parts.append("<ul>" + "".join(f"<li>{_esc(humanize(r))}</li>" for r in v.reasons) + "</ul>")
        if v.action:
            parts.append(f'<p><b>action:</b> {_esc(v.action)}</p>')
        if st == "unknown":
            parts.append('<p class="muted">not enough data to judge this device: no plot</p>')
        else:
            plots = _plots(result, v)
            parts.extend(plots or ['<p class="muted">no timing or counter series to plot for this '
                                   "device</p>"])
        parts.append("</div>")
    if len(flagged) > max_devices:
        parts.append(f'<p class="muted">{len(flagged) - max_devices} more devices that are not healthy '
                     "are listed above without cards.</p>")
    parts.append("<h2>Job events</h2>")
    if result.jobs:
        parts.append('<p class="muted">The whole job or peer group slowed at once; a device is named '
                     "only if its own slowdown caused it.</p>")
        parts.append('<table class="jobs"><tr><th>job</th><th>kind</th><th>from</th><th>to</th>'
                     "<th>slowdown</th><th>devices</th><th>why</th></tr>")
        for e in result.jobs:
            parts.append(f'<tr class="job-event"><td>{_esc(e.job)}</td><td>{_esc(e.kind)}</td>'
                         f'<td class="num">{_esc(format_when(e.start_step, e.start_time))}</td>'
                         f'<td class="num">{_esc(format_when(e.end_step, e.end_time))}</td>'
                         f'<td class="num">{_pct(e.slowdown)}</td><td class="num">{_esc(e.devices)}</td>'
                         f"<td>{_esc(humanize(e.reason))}{_cause(e)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    if result.warnings:
        parts.append("<h2>Input warnings</h2><ul>"
                     + "".join(f"<li>{_esc(w.message)}</li>" for w in result.warnings) + "</ul>")
    parts.append("<h2>Inputs</h2><ul>"
                 + "".join(f"<li>{_esc(i['kind'])}: <code>{_esc(i['source'])}</code></li>"
                           for i in result.inputs) + "</ul>")
    parts.append(f'<p class="muted">degrade {__version__} · generated {_esc(result.stats.get("generated_at"))}'
                 f' · engine {_esc(result.stats.get("engine"))} · min_slowdown '
                 f'{_esc(result.config.get("min_slowdown"))}</p></body></html>')
    return "\n".join(parts)


def write_report(result, path: str | os.PathLike, *, max_devices: int = 50) -> None:
    """Write the HTML report of ``result`` to ``path``.

    It lists every device that is not healthy (unknown ones with their
    reason), a card per device with every reason, the recommended action and
    a plot of each kind of evidence (timings against peers; the counter its
    reasons name) with onset and detection marked, and every job event.
    """
    text = _with_fleet(render_report(result, max_devices=max_devices), result)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _with_fleet(text: str, result) -> str:
    """The fleet-memory section (degrade.fleet) before the inputs, when the result spans several jobs."""
    if int(result.stats.get("jobs", 0)) < 2:
        return text
    from ..fleet._text import offender_html

    section = offender_html(result.fleet)
    if not section:
        return text
    at = text.find("<h2>Inputs</h2>")
    return text[:at] + section + "\n" + text[at:] if at >= 0 else text.replace("</body>", section + "</body>")

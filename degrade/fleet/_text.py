"""Plain-text views of the fleet history: ``degrade history DEVICE`` and the repeat-offender block."""

from __future__ import annotations

import html
import math
from typing import Any

from ._history import FleetHistory, iso

__all__ = ["device_text", "offender_lines", "offender_html"]


def _pct(x: float | None, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{100.0 * x:+.1f} %" if signed else f"{100.0 * x:.1f} %"


def _when(t: float | None) -> str:
    return iso(t) or "—"


def device_text(h: FleetHistory, key: str) -> str:
    """Everything the history holds on one device (``key``: UUID, unique prefix or ``host:gpu``)."""
    r = h.record(key)
    lines = [
        f"{r['device']}"
        + (f"  at {r['slot']}" if r["slot"] else (f"  on {r['host']}" if r["host"] else ""))
        + f"  ({r['jobs']} job{'s' if r['jobs'] != 1 else ''}, {_when(r['first_seen'])} .. "
        f"{_when(r['last_seen'])}, times in UTC)"
    ]
    if r["replaces"]:
        lines.append(
            f"  replaces {r['replaces']} in slot {r['slot']} (this device's history starts fresh)"
        )
    if r["replaced_by"]:
        lines.append(
            f"  replaced by {r['replaced_by']} at {_when(r['replaced_at'])}; slot {r['slot']} now "
            "holds that device"
        )
    if r["repeat_offender"]:
        lines.append(f"  REPEAT OFFENDER: degraded or failed in {r['degraded_jobs']} jobs")
    ev = r["evidence"]
    if ev["looks"]:
        verdict = (
            f"slow across jobs ({ev['status']}), found at {ev['found_job']} (job {ev['found_look']} "
            f"of its history, z {ev['found_z']:.1f} > {ev['found_threshold']:.2f})"
            if ev["found"]
            else "not slow across jobs"
        )
        lines.append(
            f"  accumulated over {ev['looks']} job(s): {_pct(ev['slowdown'])} ± "
            f"{_pct(ev['slowdown_se'], False)} against peers, z {ev['z']:.1f} vs threshold "
            f"{ev['threshold']:.2f} (healthy up to {_pct(h.config.healthy_offset)}, alpha "
            f"{h.config.alpha:g} per device): {verdict}"
        )
    else:
        lines.append("  accumulated: no timing evidence against peers")
    lines.append(
        f"  {'job':<22} {'start':<20} {'end':<20} {'devices':>7}  {'status':<8} {'slowdown':>8}  "
        f"{'onset':<12} {'excess vs peers':>16}"
    )
    for e in r["episodes"]:
        onset = (
            f"step {e['onset_step']}"
            if e.get("onset_step") is not None
            else (iso(e.get("onset_time")) or "")
            if e["status"] != "healthy"
            else ""
        )
        ex = (
            "—"
            if e.get("excess") is None
            else (f"{_pct(math.expm1(e['excess']))} ± {_pct(e['excess_se'], False)}")
        )
        lines.append(
            f"  {str(e['job']):<22} {_when(e['start']):<20} {_when(e['end']):<20} "
            f"{'' if e['job_devices'] is None else e['job_devices']:>7}  {e['status']:<8} "
            f"{_pct(e['slowdown']) if e['slowdown'] is not None else '':>8}  {onset:<12} {ex:>16}"
        )
    return "\n".join(lines)


def offender_lines(h: FleetHistory, limit: int = 10) -> list[str]:
    """The short block under ``degrade analyze``'s table: repeat offenders, devices slow across jobs, replacements.

    Empty when there is nothing to say (a single job, nobody twice degraded).
    """
    out: list[str] = []
    rep = h.repeat_offenders()
    slow = [s for s in h.slow_across_jobs() if s["looks"] >= 2]
    repl = h.replacements()
    if not (rep or slow or repl):
        return out
    out.append("Fleet memory (devices across jobs; degrade history DEVICE for one device):")
    for r in rep[:limit]:
        jobs = ", ".join(
            f"{j['job']} ({j['status']}, {_pct(j['slowdown'])}, {iso(j['start']) or '?'}, "
            f"{j['job_devices'] or '?'} GPUs)"
            for j in r["jobs"]
        )
        out.append(f"  repeat offender  {r['device']}  {_slot(r)}: {len(r['jobs'])} jobs: {jobs}")
    for s in slow[:limit]:
        out.append(
            f"  slow across jobs {s['device']}  {_slot(s)}: found at {s['found_job']}, job {s['found_look']} of its "
            f"history (z {s['found_z']:.1f} > {s['found_threshold']:.2f}); {_pct(s['slowdown'])} over all "
            f"{s['looks']} jobs ({s['status']}); degraded in {s['single_job_flags']} job(s) alone"
        )
    for x in repl[:limit]:
        out.append(f"  replaced         {x['slot']}: {x['old']} -> {x['new']} at {_when(x['at'])}")
    more = max(0, len(rep) - limit) + max(0, len(slow) - limit) + max(0, len(repl) - limit)
    if more:
        out.append(f"  ... and {more} more (--format json, section 'fleet')")
    return out


def _slot(r: dict[str, Any]) -> str:
    if r.get("host") is None:
        return ""
    return f"{r['host']}:{r['gpu']}" if r.get("gpu") is not None else str(r["host"])


def offender_html(h: FleetHistory, limit: int = 50) -> str:
    """The same block as an HTML section (empty string when there is nothing to say)."""
    lines = offender_lines(h, limit=limit)
    if not lines:
        return ""
    items = "".join(f"<li><code>{html.escape(x.strip())}</code></li>" for x in lines[1:])
    return f'<section id="fleet"><h2>Fleet memory</h2><p>{html.escape(lines[0])}</p><ul>{items}</ul></section>'

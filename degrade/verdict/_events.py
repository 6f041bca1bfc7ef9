"""Job events an operator can read: recurring events, attribution, merging.

The engine detects job events one episode at a time (every checkpoint is an
episode). :func:`_merge_events` turns that list into what an operator needs:

1. episodes of one job and kind that overlap (the same stall seen by several
   peer groups, pipeline stages) are one occurrence;
2. transient occurrences that recur with a period (checkpoint or evaluation
   every k steps) are ONE recurring event, with its ``period``, its cost per
   occurrence (``extra_steps``, ``extra_seconds``) and its ``time_share`` of
   the wall time — whatever the period, not only within ``job_merge_gap``;
3. the other occurrences that follow each other within ``gap`` steps are
   merged with a ``count`` (bursts of data stalls);
4. a job slowdown that began when a device of the job became degraded is
   attributed to it (``cause_device``): in a synchronous job the slowest rank
   sets every rank's step, so the job event is the straggler's echo;
5. messages never say "job None" when the input had no job column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ._types import JobEvent, Status, Verdict

__all__: list[str] = []

#: a recurring series needs this many occurrences ...
MIN_OCCURRENCES = 5
#: ... at least this share of the grid points between its first and last one ...
MIN_COVERAGE = 0.75
#: ... and two consecutive occurrences at most this many periods apart
MAX_SKIP = 3
#: a job slowdown starting within this many steps of a degraded device's onset is blamed on it
CAUSE_STEPS = 50
#: the same in seconds, when the events have no steps
CAUSE_SECONDS = 120.0

_TRANSIENT = "job_slowdown"


def _where(job) -> str:
    return f"job {job}" if job is not None else "all devices"


def _place(job, group) -> str:
    """Where a device or a job event sits, for messages (verdict reasons, raw job events)."""
    if job is None:
        return "all devices" if group is None else f"group {group}"
    return f"job {job}" if group is None else f"job {job} group {group}"


def _tidy(reason: str, job) -> str:
    """No "job None" in a message: without a job column the events are about all devices."""
    if job is not None:
        return reason
    reason = re.sub(r"^job None group ", "group ", reason)
    reason = re.sub(r"^job None\b", "all devices", reason)
    return reason.replace(" job None ", " ")


def _steps(e: JobEvent) -> int:
    return max(e.end_step - e.start_step + 1, 1)


def _weighted_slowdown(run: Sequence[JobEvent]) -> float | None:
    sl = [(e.slowdown, _steps(e)) for e in run if e.slowdown is not None]
    if not sl:
        return None
    return sum(x * k for x, k in sl) / sum(k for _, k in sl)


# ------------------------------------------------------------------ occurrences
def _occurrences(events: list[JobEvent]) -> list[list[JobEvent]]:
    """Episodes of one job and kind (sorted by start) clustered where they overlap or touch."""
    out: list[list[JobEvent]] = []
    end = -math.inf
    for e in events:
        if out and e.start_step <= end + 1:
            out[-1].append(e)
            end = max(end, e.end_step)
        else:
            out.append([e])
            end = e.end_step
    return out


def _occurrence(run: list[JobEvent]) -> JobEvent:
    """One occurrence seen by several peer groups (or split in two episodes)."""
    if len(run) == 1:
        return run[0]
    first = min(run, key=lambda e: e.start_step)
    t_end = [e.end_time for e in run if e.end_time is not None]
    t_start = [e.start_time for e in run if e.start_time is not None]
    starts = {e.start_step for e in run}
    body = first.reason.split(": ", 1)[-1]
    groups = f" ({len(run)} peer groups)" if len(starts) == 1 else ""
    return replace(
        first,
        start_step=min(e.start_step for e in run),
        end_step=max(e.end_step for e in run),
        start_time=min(t_start) if t_start else None,
        end_time=max(t_end) if t_end else None,
        slowdown=_weighted_slowdown(run),
        devices=_distinct_devices(run),
        reason=f"{_where(first.job)}{groups}: {body}",
    )


def _distinct_devices(run: list[JobEvent]) -> int | None:
    # episodes that start together are different peer groups: their devices add up
    by_start: dict[int, int] = {}
    for e in run:
        by_start[e.start_step] = by_start.get(e.start_step, 0) + (e.devices or 0)
    return max(by_start.values(), default=0) or None


# ------------------------------------------------------------------ recurring events
def _tol(p: int) -> int:
    """Steps by which an occurrence may miss its grid point.

    Checkpoints run on a step counter, so the detector sees them at their
    step, give or take a step or two of detection; a tolerance that does not
    grow with the period keeps random stalls from lining up by chance.
    """
    return 2 + p // 1000


def _chain(starts: list[int], anchor: int, p: int, tol: int) -> list[int]:
    members = [anchor]
    last = starts[anchor]
    for i in range(anchor + 1, len(starts)):
        d = starts[i] - last
        k = round(d / p)
        # both ends of a gap may be off their grid point
        if 1 <= k <= MAX_SKIP and abs(d - k * p) <= 2 * tol:
            members.append(i)
            last = starts[i]
        elif d > MAX_SKIP * p + tol:
            break
    return members


def _best_series(occ: list[JobEvent]) -> tuple[int, list[int]] | None:
    """The period and members of the longest recurring series among ``occ`` (sorted by start)."""
    if len(occ) < MIN_OCCURRENCES:
        return None
    starts = [e.start_step for e in occ]
    S = np.asarray(starts, dtype=np.int64)
    n = S.size
    # gaps to the next few occurrences, not only the next one: two rhythms interleave
    D = np.sort(np.concatenate([S[k:] - S[:-k] for k in range(1, min(8, n - 1) + 1)]))
    # candidate periods: gaps that recur (a series of n has n - 1 gaps near p; random stalls
    # rarely have two gaps within the tolerance of each other)
    u = np.unique(D[D >= 2])
    tol = 2 + u // 1000  # _tol, vectorised
    freq = np.searchsorted(D, u + tol, "right") - np.searchsorted(D, u - tol, "left")
    # where stalls are so dense that a grid point of the chain's window (4 tol + 1 steps) holds
    # one by chance with probability q >= 0.25 (Poisson), a series would be a coincidence
    lam = n / max(int(S[-1] - S[0]), 1)
    dense = 1.0 - np.exp(-lam * (4 * tol + 1)) >= 0.25
    order = np.lexsort((u, -freq))
    cands = [int(u[j]) for j in order[:24] if freq[j] >= 2 and not dense[j]]
    best: tuple[int, list[int]] | None = None
    best_score = (0.0, 0)
    cost = [(e.slowdown or 0.0) * _steps(e) for e in occ]
    for p in cands:
        tol = _tol(p)
        for anchor in range(min(len(occ), 8)):
            m = _chain(starts, anchor, p, tol)
            if len(m) < MIN_OCCURRENCES:
                continue
            span = starts[m[-1]] - starts[m[0]]
            grid = round(span / p) + 1
            if len(m) < MIN_COVERAGE * grid:
                continue
            # the costliest rhythm first: where two rhythms coincide it claims the shared occurrences
            score = (sum(cost[i] for i in m), len(m))
            if best is None or score > best_score:
                best_score = score
                # the period: the median gap between members, in grid units
                gaps = sorted(
                    (starts[b] - starts[a]) / round((starts[b] - starts[a]) / p)
                    for a, b in zip(m, m[1:])
                )
                best = (int(round(gaps[len(gaps) // 2])), m)
    return best


def _recurring(series: list[JobEvent], period: int, context: Sequence[JobEvent] = ()) -> JobEvent:
    """One event for a recurring series; ``context`` = every transient occurrence of the job."""
    first, last = series[0], series[-1]
    n = len(series)
    # extra time in steps of normal length
    units = [(e.slowdown or 0.0) * _steps(e) for e in series]
    extra_steps = sum(units) / n
    extra_seconds = None
    step_s = None
    if first.start_time is not None and last.end_time is not None:
        wall = last.end_time - first.start_time
        span = last.end_step - first.start_step
        if span > 0 and wall > 0 and math.isfinite(wall):
            # a normal step: the wall time of the span less every job event in it (the series and
            # the other stalls), per step; otherwise the stalls would count as normal time
            inside = [e for e in context if first.start_step <= e.start_step <= last.end_step]
            slow = sum((e.slowdown or 0.0) * _steps(e) for e in inside) if inside else sum(units)
            step_s = wall / (span + max(slow, sum(units)))
            extra_seconds = extra_steps * step_s
    share = extra_steps / (period + extra_steps) if period + extra_steps > 0 else None
    mean = _weighted_slowdown(series)
    peak = max((e.slowdown for e in series if e.slowdown is not None), default=None)
    ongoing = any(e.reason.endswith("; ongoing") for e in series)
    cost = f"{extra_seconds:.1f} s" if extra_seconds is not None else f"{extra_steps:.2f} steps"
    if step_s is not None:
        cost += f" ({extra_steps:.2f} normal steps of {step_s:.3g} s)"
    reason = (
        f"{_where(first.job)}: recurring all-peer slowdown (checkpoint or evaluation) every {period} steps, "
        f"{n} times from step {first.start_step} to step {last.end_step}; each costs {cost} extra, "
        f"{100 * share:.1f} % of the wall time; the step is {100 * (mean or 0.0):.1f} % slower while it lasts "
        f"(worst {100 * (peak or 0.0):.1f} %) on {max((e.devices or 0) for e in series)} device(s)"
    )
    if ongoing:
        reason += "; ongoing"
    return JobEvent(
        job=first.job,
        kind=first.kind,
        start_step=first.start_step,
        end_step=last.end_step,
        start_time=first.start_time,
        end_time=last.end_time,
        slowdown=mean,
        devices=max((e.devices or 0) for e in series) or None,
        reason=reason,
        count=n,
        period=period,
        extra_steps=extra_steps,
        extra_seconds=extra_seconds,
        time_share=share,
    )


# ------------------------------------------------------------------ bursts
def _merged(run: list[JobEvent]) -> JobEvent:
    """Occurrences of one job and kind within ``gap`` steps of each other, as one event with a count."""
    first = run[0]
    starts = sorted({e.start_step for e in run})
    end = max(e.end_step for e in run)
    t_end = [e.end_time for e in run if e.end_time is not None]
    mean = _weighted_slowdown(run)
    peak = max((e.slowdown for e in run if e.slowdown is not None), default=None)
    slow_steps = len({s for e in run for s in range(e.start_step, e.end_step + 1)})
    ongoing = any(e.reason.endswith("; ongoing") for e in run)
    what = (
        "lasting level changes for all peers"
        if first.kind == "sustained_job_slowdown"
        else "transient slowdowns of all peers (checkpoints, evaluations or data stalls)"
    )
    every = ""
    if len(starts) >= 3:
        d = sorted(b - a for a, b in zip(starts, starts[1:]))
        every = f", every {d[len(d) // 2]} steps (median)"
    reason = (
        f"{_where(first.job)}: {len(starts)} {what} from step {starts[0]} to step {end}{every}, "
        f"{slow_steps} slow steps in all; mean {100 * (mean or 0.0):.1f} % slower, "
        f"worst {100 * (peak or 0.0):.1f} %"
    )
    if ongoing:
        reason += "; ongoing"
    return JobEvent(
        job=first.job,
        kind=first.kind,
        start_step=starts[0],
        end_step=end,
        start_time=min((e.start_time for e in run if e.start_time is not None), default=None),
        end_time=max(t_end) if t_end else None,
        slowdown=mean,
        devices=max((e.devices or 0) for e in run) or None,
        reason=reason,
        count=len(starts),
    )


def _bursts(occ: list[JobEvent], gap: int) -> list[JobEvent]:
    if gap <= 0:
        return list(occ)
    out: list[list[JobEvent]] = []
    for e in occ:
        if out and e.start_step <= max(x.end_step for x in out[-1]) + gap:
            out[-1].append(e)
        else:
            out.append([e])
    return [r[0] if len(r) == 1 else _merged(r) for r in out]


# ------------------------------------------------------------------ attribution
def _attribute(e: JobEvent, verdicts: Sequence[Verdict]) -> JobEvent:
    """Name the degraded device of the job whose slowdown began when the job's did."""
    if e.period is not None:
        return e  # a recurring event is the job's own rhythm, not a straggler
    best = None
    for v in verdicts:
        if v.job != e.job or Status(v.status) is not Status.DEGRADED or v.slowdown is None:
            continue
        if v.onset_step is not None and e.start_step is not None:
            near = abs(e.start_step - v.onset_step) <= CAUSE_STEPS
        elif v.onset_time is not None and e.start_time is not None:
            near = abs(e.start_time - v.onset_time) <= CAUSE_SECONDS
        else:
            near = False
        # the job cannot slow by much more than its straggler did
        if not near or (e.slowdown is not None and e.slowdown > 1.5 * v.slowdown + 0.02):
            continue
        if best is None or v.slowdown > best.slowdown:
            best = v
    if best is None:
        return e
    at = f"step {best.onset_step}" if best.onset_step is not None else f"t={best.onset_time:.0f}"
    why = (
        f"; caused by device {best.device} (degraded, {100 * best.slowdown:.1f} % slower since {at}): "
        "in a synchronous job the slowest rank sets every rank's step"
    )
    return replace(e, cause_device=best.device, reason=e.reason + why)


# ------------------------------------------------------------------ entry point
def _merge_events(
    events: list[JobEvent], gap: int, verdicts: Sequence[Verdict] | None = None
) -> list[JobEvent]:
    """What :meth:`VerdictEngine.job_events` returns: see the module docstring.

    ``gap`` is ``EngineConfig.job_merge_gap``; 0 turns merging off (every
    episode as detected, only the messages tidied and the causes named).
    Events without steps are left as they are.
    """
    events = [replace(e, reason=_tidy(e.reason, e.job)) if e.job is None else e for e in events]
    if gap > 0 and len(events) >= 2:
        keep = [e for e in events if e.start_step is None or e.end_step is None]
        by_key: dict[tuple, list[JobEvent]] = {}
        order: list[tuple] = []
        for e in sorted(
            (e for e in events if e.start_step is not None and e.end_step is not None),
            key=lambda e: (e.start_step, e.end_step),
        ):
            key = (e.job, e.kind)
            if key not in by_key:
                by_key[key] = []
                order.append(key)
            by_key[key].append(e)
        out = list(keep)
        for key in order:
            occ = [_occurrence(r) for r in _occurrences(by_key[key])]
            if key[1] == _TRANSIENT:
                context = list(occ)
                # checkpoints and evaluations may both recur, at different periods
                for _ in range(3):
                    found = _best_series(occ)
                    if found is None:
                        break
                    period, members = found
                    out.append(_recurring([occ[i] for i in members], period, context))
                    taken = set(members)
                    occ = [e for i, e in enumerate(occ) if i not in taken]
            out.extend(_bursts(occ, gap))
        events = out
    events.sort(
        key=lambda e: (e.start_step if e.start_step is not None else math.inf, str(e.job), e.kind)
    )
    if verdicts:
        events = [_attribute(e, verdicts) for e in events]
    return events

"""Job events an operator can read: recurring events, attribution, merging.

The engine detects job events one episode at a time (every checkpoint is an
episode). :func:`_merge_events` turns that list into what an operator needs:

1. episodes of one job and kind that overlap (the same stall seen by several
   peer groups, pipeline stages) are one occurrence;
2. transient occurrences that recur with a period (checkpoint or evaluation
   every k steps) are ONE recurring event, with its ``period``, its cost per
   occurrence (``extra_steps``, ``extra_seconds``) and its ``time_share`` of
   the wall time — whatever the period, not only within ``job_merge_gap``, and
   among dozens of sporadic all-rank stalls per period (heavy-tailed noise of
   one rank echoed in every rank's synchronous step): candidate periods are
   also scored by phase (start mod p), a chain follows the grid point by point
   taking the closest occurrence (or one spanning the point), and a series
   must be unlikely as a coincidence of stalls that dense (binomial tail
   <= ``MAX_CHANCE``); its cost leaves out occurrences above twice the median;
3. the other occurrences that follow each other within ``gap`` steps are
   merged with a ``count`` (bursts of data stalls);
4. a job slowdown that began when a device of the job became degraded is
   attributed to it (``cause_device``): in a synchronous job the slowest rank
   sets every rank's step, so the job event is the straggler's echo;
5. messages never say "job None" when the input had no job column;
6. what is left of a job's short transient stalls, when there are at least
   ``SPORADIC_MIN`` of them (heavy-tailed noise of one rank echoed in every
   rank's step), is ONE event with ``sporadic`` set, their ``count``, the mean
   cost of one and the ``time_share`` of them all; a stall a degraded device
   explains is left out of it and attributed.
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
#: ... and sporadic stalls line up that well by chance with at most this probability (binomial
#: tail of the members among the grid points, each hit by chance as often as the stalls are dense)
MAX_CHANCE = 1e-9
#: candidate periods come from the gaps to this many following occurrences ...
NEIGHBOURS = 64
#: ... the PHASE_CANDIDATES most frequent are scored by phase, and the CANDIDATES best are tried
PHASE_CANDIDATES = 3000
PHASE_CELLS = 2_000_000  # ... at most this many (period, occurrence) pairs
CANDIDATES = 48
#: at least this many short (<= SHORT_STEPS) non-periodic, unblamed all-peer stalls of one job are
#: summarised as ONE "sporadic stalls" event with their count instead of a row per burst
SPORADIC_MIN = 10
SHORT_STEPS = 10
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


def _chain(
    starts: np.ndarray, ends: np.ndarray, anchor: int, p: int, tol: int
) -> tuple[list[int], list[int]]:
    """The occurrences on ``p``'s grid from ``anchor`` on, following the grid point by point.

    Returns the members and the step at which each meets the grid. At each step the member is
    the occurrence CLOSEST to the next grid point (within ``2 tol``: both ends of a gap may be
    off their grid point; 0 when the occurrence spans it), not the first one in the window:
    among dense random stalls (heavy-tailed noise echoed in every rank's step) a stall a few
    steps before a checkpoint would otherwise take its place and push the grid off, and an
    episode of noise that began a few steps before a checkpoint contains it.
    Occurrences do not overlap (see :func:`_occurrences`), so ``ends`` is sorted too.
    """
    members = [anchor]
    pos = [int(starts[anchor])]
    last = pos[0]
    end = int(starts[-1])
    while True:
        pick = -1
        for k in range(1, MAX_SKIP + 1):
            target = last + k * p
            if target - 2 * tol > end:
                break
            lo = max(int(np.searchsorted(ends, target - 2 * tol, "left")), members[-1] + 1)
            hi = int(np.searchsorted(starts, target + 2 * tol, "right"))
            if lo < hi:
                at = np.clip(target, starts[lo:hi], ends[lo:hi])
                j = int(np.argmin(np.abs(at - target)))
                pick, hit = lo + j, int(at[j])
                break
        if pick < 0:
            return members, pos
        members.append(pick)
        pos.append(hit)
        last = hit


def _best_series(occ: list[JobEvent]) -> tuple[int, list[int]] | None:
    """The period and members of the longest recurring series among ``occ`` (sorted by start)."""
    if len(occ) < MIN_OCCURRENCES:
        return None
    starts = [e.start_step for e in occ]
    S = np.asarray(starts, dtype=np.int64)
    n = S.size
    # gaps to the next NEIGHBOURS occurrences, not only the next one: two rhythms interleave, and
    # between two checkpoints there may be dozens of sporadic stalls (heavy-tailed noise)
    D = np.sort(np.concatenate([S[k:] - S[:-k] for k in range(1, min(NEIGHBOURS, n - 1) + 1)]))
    # candidate periods: gaps that recur (a series of n has n - 1 gaps near p; random stalls
    # rarely have two gaps within the tolerance of each other)
    u = np.unique(D[D >= 2])
    tol = 2 + u // 1000  # _tol, vectorised
    freq = np.searchsorted(D, u + tol, "right") - np.searchsorted(D, u - tol, "left")
    # where stalls are so dense that a grid point of the chain's window (4 tol + 1 steps) holds
    # one by chance with probability q >= 0.25 (Poisson), a series would be a coincidence
    lam = n / max(int(S[-1] - S[0]), 1)
    dense = 1.0 - np.exp(-lam * (4 * tol + 1)) >= 0.25
    ok = (freq >= 2) & ~dense
    # 1. the gaps that recur most (a rhythm whose occurrences are the only stalls around)
    by_freq = np.lexsort((u, -freq))
    cands = [int(u[j]) for j in by_freq[np.flatnonzero(ok[by_freq])][:24]]
    # 2. the periods on whose grid the most occurrences fall (phase = start mod p): among dozens
    # of sporadic stalls per period (heavy-tailed noise echoed in every rank's step) the gaps to
    # the next checkpoint are drowned by chance gaps, but the checkpoints keep one phase
    P = u[ok]
    if P.size:
        k = min(PHASE_CANDIDATES, max(200, PHASE_CELLS // n))  # bounded memory and time
        P = P[np.argsort(-freq[ok], kind="stable")[:k]]
        z = _phase_score(S, P, lam)
        cands += [int(P[j]) for j in np.argsort(-z, kind="stable")[:CANDIDATES] if z[j] > 0]
    cands = list(dict.fromkeys(cands))
    best: tuple[int, list[int]] | None = None
    best_score = (0.0, 0)
    cost = [(e.slowdown or 0.0) * _steps(e) for e in occ]
    Sx = np.asarray([e.end_step for e in occ], dtype=np.int64)
    # an occurrence of L steps meets a grid point's window with L - 1 more chances
    mean_len = float(np.mean(Sx - S)) if n else 0.0
    for p in cands:
        tol = _tol(p)
        for anchor in _anchors(S, p, tol):
            m, at = _chain(S, Sx, anchor, p, tol)
            if len(m) < MIN_OCCURRENCES:
                continue
            span = at[-1] - at[0]
            grid = round(span / p) + 1
            if len(m) < MIN_COVERAGE * grid:
                continue
            # a coincidence of sporadic stalls? Each grid point's window (4 tol + 1 steps around
            # the point the chain expects) holds one by chance with probability q
            q = 1.0 - math.exp(-lam * (4 * tol + 1 + mean_len))
            if _binom_tail(grid, len(m), q) > MAX_CHANCE:
                continue
            # the costliest rhythm first: where two rhythms coincide it claims the shared occurrences
            score = (sum(cost[i] for i in m), len(m))
            if best is None or score > best_score:
                best_score = score
                # the period: the median gap between members, in grid units
                gaps = sorted((b - a) / round((b - a) / p) for a, b in zip(at, at[1:]))
                best = (int(round(gaps[len(gaps) // 2])), m)
    return best


def _phase_score(S: np.ndarray, P: np.ndarray, lam: float) -> np.ndarray:
    """For each period in ``P``: how far the densest phase window (2 tol + 1 steps of start mod
    p, circular) holds more occurrences than chance would put there, in binomial sd."""
    K, n = P.size, S.size
    tol = 2 + P // 1000
    R = np.sort(S[None, :] % P[:, None], axis=1)
    ext = np.concatenate([R, R + P[:, None]], axis=1)  # circular, still sorted per row
    off = (np.arange(K, dtype=np.int64) * (3 * int(P.max()) + 3))[:, None]
    flat = (ext + off).ravel()
    hi = np.searchsorted(flat, (R + 2 * tol[:, None] + off).ravel(), "right").reshape(K, n)
    lo = np.arange(K, dtype=np.int64)[:, None] * 2 * n + np.arange(n)[None, :]
    c = (hi - lo).max(axis=1)
    G = (S[-1] - S[0]) // P + 1
    q = 1.0 - np.exp(-lam * (2 * tol + 1))
    return (c - G * q) / np.sqrt(G * q * (1.0 - q) + 1e-12)


def _binom_tail(n: int, k: int, q: float) -> float:
    """P(Binomial(n, q) >= k)."""
    if k <= 0:
        return 1.0
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lq, lr = math.log(q), math.log1p(-q)
    terms = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lq + (n - j) * lr
        for j in range(k, n + 1)
    ]
    top = max(terms)
    return math.exp(top) * sum(math.exp(t - top) for t in terms)


def _anchors(S: np.ndarray, p: int, tol: int) -> list[int]:
    """Where to start a chain for period ``p``: the first occurrences, and the first one of the
    phase (start mod ``p``, within ``tol``) that holds the most occurrences.

    The first occurrences alone miss a series whose first member comes after several sporadic
    stalls; the densest phase finds it wherever it starts (a step-counter rhythm keeps its phase).
    """
    out = list(range(min(S.size, 8)))
    ph = np.sort(S % p)
    ext = np.concatenate([ph, ph + p])  # circular
    cnt = np.searchsorted(ext, ph + 2 * tol, "right") - np.arange(ph.size)
    j = int(np.argmax(cnt))
    if cnt[j] >= MIN_OCCURRENCES:
        lo, hi = int(ph[j]), int(ph[j]) + 2 * tol
        r = S % p
        on = np.flatnonzero(((r >= lo) & (r <= hi)) | ((r + p >= lo) & (r + p <= hi)))
        if on.size and int(on[0]) not in out:
            out.append(int(on[0]))
    return out


def _recurring(series: list[JobEvent], period: int, context: Sequence[JobEvent] = ()) -> JobEvent:
    """One event for a recurring series; ``context`` = every transient occurrence of the job."""
    first, last = series[0], series[-1]
    n = len(series)
    # extra time in steps of normal length
    units = [(e.slowdown or 0.0) * _steps(e) for e in series]
    # the typical cost: an occurrence that costs more than twice the median shared its step with
    # something else (a restart, a sporadic stall merged into it) and is left out of the mean
    med = float(np.median(units))
    typical = [x for x in units if x <= 2.0 * med] if med > 0 else units
    extra_steps = sum(typical) / len(typical)
    outliers = n - len(typical)
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
    if outliers:
        reason += (
            f"; {outliers} occurrence(s) costing more than twice the typical one (a restart or "
            "another stall on the same step) left out of the cost"
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


# ------------------------------------------------------------------ sporadic stalls
def _sporadic(run: list[JobEvent], context: Sequence[JobEvent]) -> JobEvent:
    """One event for a job's sporadic short stalls (no period, no cause): their count and cost."""
    first = run[0]
    end = max(e.end_step for e in run)
    n = len(run)
    units = [(e.slowdown or 0.0) * _steps(e) for e in run]
    extra_steps = sum(units) / n
    slow_steps = sum(_steps(e) for e in run)
    longest = max(_steps(e) for e in run)
    t0 = [e.start_time for e in run if e.start_time is not None]
    t1 = [e.end_time for e in run if e.end_time is not None]
    extra_seconds = step_s = None
    span = end - first.start_step
    wall = (max(t1) - min(t0)) if t0 and t1 else None
    slow_all = sum(
        (e.slowdown or 0.0) * _steps(e) for e in context if first.start_step <= e.start_step <= end
    )
    slow_all = max(slow_all, sum(units))
    if wall is not None and span > 0 and wall > 0 and math.isfinite(wall):
        step_s = wall / (span + slow_all)
        extra_seconds = extra_steps * step_s
    share = sum(units) / (span + slow_all) if span + slow_all > 0 else None
    mean = _weighted_slowdown(run)
    peak = max((e.slowdown for e in run if e.slowdown is not None), default=None)
    cost = f"{extra_seconds:.2f} s" if extra_seconds is not None else f"{extra_steps:.2f} steps"
    if step_s is not None:
        cost += f" ({extra_steps:.2f} normal steps of {step_s:.3g} s)"
    reason = (
        f"{_where(first.job)}: {n} sporadic short slowdowns of all peers (no period, no device "
        f"blamed; 1 to {longest} steps each) from step {first.start_step} to step {end}, "
        f"{slow_steps} slow steps in all; each costs {cost} extra on average, "
        f"{100 * (share or 0.0):.1f} % of the wall time in all; mean {100 * (mean or 0.0):.1f} % "
        f"slower, worst {100 * (peak or 0.0):.1f} %"
    )
    if any(e.reason.endswith("; ongoing") for e in run):
        reason += "; ongoing"
    return JobEvent(
        job=first.job,
        kind=first.kind,
        start_step=first.start_step,
        end_step=end,
        start_time=min(t0) if t0 else None,
        end_time=max(t1) if t1 else None,
        slowdown=mean,
        devices=max((e.devices or 0) for e in run) or None,
        reason=reason,
        count=n,
        extra_steps=extra_steps,
        extra_seconds=extra_seconds,
        time_share=share,
        sporadic=True,
    )


# ------------------------------------------------------------------ attribution
def _attribute(e: JobEvent, verdicts: Sequence[Verdict]) -> JobEvent:
    """Name the degraded device of the job whose slowdown began when the job's did."""
    if e.period is not None or e.sporadic:
        return (
            e  # a recurring event is the job's own rhythm, not a straggler; sporadic stalls neither
        )
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
                # what is left: dozens of short stalls (heavy-tailed noise of one rank echoed in
                # every rank's step) are one summary; a stall a degraded device explains stays
                short = [
                    i
                    for i, e in enumerate(occ)
                    if _steps(e) <= SHORT_STEPS
                    and (not verdicts or _attribute(e, verdicts).cause_device is None)
                ]
                if len(short) >= SPORADIC_MIN:
                    out.append(_sporadic([occ[i] for i in short], context))
                    keep_i = set(short)
                    occ = [e for i, e in enumerate(occ) if i not in keep_i]
            out.extend(_bursts(occ, gap))
        events = out
    events.sort(
        key=lambda e: (e.start_step if e.start_step is not None else math.inf, str(e.job), e.kind)
    )
    if verdicts:
        events = [_attribute(e, verdicts) for e in events]
    return events

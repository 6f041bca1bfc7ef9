"""The node agent's fleet memory: one episode per stretch of non-healthy status of a GPU.

The agent has no jobs: an *episode* is a stretch of polls in which the
GPU's verdict was degraded or failed (suspect alone is not kept), labelled
``agent@<start, ISO 8601 UTC>``; it stays open while the verdict stays bad
and closes at the first healthy verdict. A GPU degraded in two such
episodes is a repeat offender. The history travels in the agent's data-only
state file (key ``fleet``), updated at every state save.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError
from ._history import BAD_STATUSES, FleetHistory, iso

__all__ = ["note_agent_verdicts", "agent_history_state", "agent_history_from_state"]

_RANK = {"degraded": 1, "failed": 2}


def note_agent_verdicts(
    history: FleetHistory, open_: dict[str, str], verdicts: Iterable[Mapping[str, Any]], now: float
) -> None:
    """Open, extend or close each GPU's agent episode from its current verdict (dicts with ``gpu``/``host``)."""
    for v in verdicts:
        dev = v.get("device")
        if not isinstance(dev, str):
            continue
        status = str(v.get("status"))
        job = open_.get(dev)
        if status in BAD_STATUSES:
            rec = history._devices.get(dev)
            old = (
                next((e for e in rec["episodes"] if e["job"] == job), None)
                if (rec and job)
                else None
            )
            if old is None:
                start = (
                    v.get("onset_time") if isinstance(v.get("onset_time"), (int, float)) else now
                )
                job = f"agent@{iso(start) or iso(now)}"
                open_[dev] = job
                old = {"job": job, "start": float(start), "status": status}
            worst = status if _RANK[status] >= _RANK.get(old["status"], 0) else old["status"]
            history.add_episode(
                dev,
                {
                    **old,
                    "end": float(now),
                    "status": worst,
                    "slowdown": max(old.get("slowdown") or 0.0, v.get("slowdown") or 0.0) or None,
                    "onset_time": old.get("onset_time", v.get("onset_time")),
                    "detected_time": old.get("detected_time", v.get("detected_time")),
                    "host": v.get("host"),
                    "gpu": v.get("gpu"),
                    "job_devices": None,
                    "reason": old.get("reason") or (v.get("reasons") or [None])[0],
                },
            )
        elif job is not None and status == "healthy":
            del open_[dev]


def agent_history_state(history: FleetHistory, open_: dict[str, str]) -> dict[str, Any]:
    """The ``fleet`` entry of the agent's state file (data only)."""
    return {
        "config": history.config.to_dict(),
        "open": dict(open_),
        "devices": [
            {"device": d, "episodes": history._devices[d]["episodes"]} for d in history.devices
        ],
    }


def agent_history_from_state(d: Any, where: str) -> tuple[FleetHistory, dict[str, str]]:
    """Inverse of :func:`agent_history_state`, validated (:class:`InputError` naming ``where``)."""
    h = FleetHistory.from_dict(d, where=f"{where}: fleet")
    open_ = d.get("open") or {}
    if not (
        isinstance(open_, dict)
        and all(isinstance(k, str) and isinstance(x, str) for k, x in open_.items())
    ):
        raise InputError(f"{where}: fleet.open: expected an object from device id to episode label")
    return h, dict(open_)

"""Verdict value types shared by the engine, `degrade analyze`, the agent and the loop."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Status", "Verdict", "JobEvent", "K8S_HEALTH"]


class Status(str, enum.Enum):
    """Health of one device, from best to worst evidence of a problem.

    ``unknown`` means there is not enough data to judge (warm-up, data
    stopped); it is never a euphemism for "probably fine".
    """

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    DEGRADED = "degraded"
    FAILED = "failed"
    UNKNOWN = "unknown"

    def __str__(self) -> str:  # print as the plain value
        return self.value

    @property
    def severity(self) -> int:
        """Order for sorting and exit codes: healthy 0 < unknown 1 < suspect 2 < degraded 3 < failed 4."""
        return _SEVERITY[self]


_SEVERITY = {
    Status.HEALTHY: 0,
    Status.UNKNOWN: 1,
    Status.SUSPECT: 2,
    Status.DEGRADED: 3,
    Status.FAILED: 4,
}

#: Device health values of Kubernetes' KEP-4680 (resource health status in pod status).
K8S_HEALTH: dict[Status, str] = {
    Status.HEALTHY: "Healthy",
    Status.SUSPECT: "Healthy",  # suspicion alone does not take a device out of service
    Status.DEGRADED: "Unhealthy",
    Status.FAILED: "Unhealthy",
    Status.UNKNOWN: "Unknown",
}


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN/inf become None, numpy scalars become Python ones."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Verdict:
    """The judgement on one device.

    ``slowdown`` is a fraction: 0.12 means 12 % slower than its peers (or its
    own baseline when it has no peers). ``onset_*`` is when the change began,
    ``detected_*`` when the streaming detectors first raised it.
    """

    device: str
    status: Status = Status.UNKNOWN
    job: str | None = None
    host: str | None = None
    slowdown: float | None = None
    onset_step: int | None = None
    onset_time: float | None = None
    detected_step: int | None = None
    detected_time: float | None = None
    score: float | None = None
    reasons: list[str] = field(default_factory=list)
    action: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    # wall time (seconds) the device's job lost to it: had it run at its peer median (docs/cost.md);
    # None for a device not charged (healthy, unknown, or no timings)
    lost_seconds: float | None = None

    @property
    def k8s_health(self) -> str:
        return K8S_HEALTH[Status(self.status)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``degrade analyze --format json`` (one verdict)."""
        d = asdict(self)
        d["status"] = Status(self.status).value
        d["k8s_health"] = self.k8s_health
        d["reasons"] = list(self.reasons)
        d["signals"] = {k: _clean(v) for k, v in self.signals.items()}
        for key in ("slowdown", "onset_step", "onset_time", "detected_step", "detected_time", "score",
                    "lost_seconds"):
            d[key] = _clean(d[key])
        return d


@dataclass
class JobEvent:
    """A slowdown that hit all peers at once (checkpoint, data stall, schedule change).

    Reported for the job. A recurring one (checkpoint or evaluation every k
    steps) is one event with its ``period`` and cost (``extra_steps``,
    ``extra_seconds``, ``time_share``). When the job slowed because one of its
    devices became degraded (the slowest rank sets a synchronous step), that
    device is named in ``cause_device``; otherwise no device is blamed.
    """

    job: str | None
    kind: str  # e.g. "job_slowdown", "schedule_change", "idle"
    start_step: int | None = None
    end_step: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    slowdown: float | None = None
    devices: int | None = None
    reason: str = ""
    count: int = 1  # occurrences merged into this event (see EngineConfig.job_merge_gap)
    # a recurring event (checkpoint / evaluation every ``period`` steps): its cost per occurrence in
    # steps of normal length and in seconds (None without timestamps), and its share of the wall time
    period: int | None = None
    extra_steps: float | None = None
    extra_seconds: float | None = None
    time_share: float | None = None
    # the degraded device whose slowdown this job slowdown is (a straggler sets a synchronous step)
    cause_device: str | None = None
    # the summary of a job's sporadic short all-peer stalls (no period, no cause): ``count`` of them,
    # ``extra_steps``/``extra_seconds`` the mean cost of one, ``time_share`` of them all
    sporadic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) if not isinstance(v, str) else v for k, v in asdict(self).items()}

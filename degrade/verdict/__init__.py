"""From detector outputs to device verdicts: one fusion engine for batch, agent and loop."""

from __future__ import annotations

from ._types import K8S_HEALTH, JobEvent, Status, Verdict

__all__ = ["K8S_HEALTH", "JobEvent", "Status", "Verdict"]

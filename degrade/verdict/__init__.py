"""From detector outputs to device verdicts: one fusion engine for batch, agent and loop."""

from __future__ import annotations

from ._cost import JobCost
from ._types import K8S_HEALTH, JobEvent, Status, Verdict
from .engine import EngineConfig, VerdictEngine

__all__ = ["K8S_HEALTH", "EngineConfig", "JobCost", "JobEvent", "Status", "Verdict", "VerdictEngine"]


def _warmup() -> None:
    """Compile the engine kernel once on tiny blocks (timings, counters, both)."""
    import numpy as np

    eng = VerdictEngine()
    t = np.full((2, 3), 0.1)
    eng.run(["a", "b", "c"], {"compute_time": t, "step_time": t}, steps=np.arange(2))
    eng.update(["a", "b", "c"], {"sm_clock_mhz": np.full(3, 1400.0), "clock_event_reasons": np.zeros(3)},
               timestamp=0.0)
    eng.verdicts()

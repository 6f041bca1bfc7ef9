"""Fleet memory: each GPU's history across jobs and time, repeat offenders, accumulated evidence.

A device is keyed by its GPU UUID. Every job it ran in is an episode (the
verdict engine's verdict of that job: status, slowdown, onset, the job's
dates and size); a device degraded in two or more jobs is a repeat
offender; a new UUID at the same ``host:gpu`` slot is a replacement and
starts fresh. Evidence of several short jobs accumulates: each job's peer
excess and its autocorrelation-aware standard error are combined with
inverse-variance weights and tested after every job against a threshold
that spends a per-device false-alarm budget (docs/fleet.md).

>>> from degrade.fleet import FleetHistory, FleetConfig
>>> FleetHistory(FleetConfig(alpha=1e-3)).config.alpha
0.001
"""

from __future__ import annotations

from ._agent import agent_history_from_state, agent_history_state, note_agent_verdicts
from ._evidence import Accumulated, accumulate, threshold
from ._history import BAD_STATUSES, FleetConfig, FleetHistory, iso
from ._ingest import history_from_result, slots_from_sources

__all__ = [
    "FleetHistory",
    "FleetConfig",
    "Accumulated",
    "accumulate",
    "threshold",
    "history_from_result",
    "slots_from_sources",
    "BAD_STATUSES",
    "iso",
    "note_agent_verdicts",
    "agent_history_state",
    "agent_history_from_state",
]

"""Fleet simulator with labelled faults (docs/simulator.md).

>>> from degrade.simulate import FAULTS
>>> "thermal" in FAULTS
True
"""

from __future__ import annotations

from ._engine import MODELS, SimResult, simulate
from ._faults import FAULTS, MIN_SLOWDOWN, expected_status
from ._fleet import FleetScenario, FleetSimResult, simulate_fleet
from ._noise import Fault, NoiseSpec, Times, compute_times, simulate_times
from ._rollout import RolloutResult, simulate_rollout
from ._scenario import FaultSpec, JobSpec, RandomFaults, Scenario, list_scenarios, load_scenario

__all__ = [
    "simulate",
    "load_scenario",
    "list_scenarios",
    "Scenario",
    "JobSpec",
    "FaultSpec",
    "RandomFaults",
    "SimResult",
    "FAULTS",
    "MODELS",
    "MIN_SLOWDOWN",
    "expected_status",
    "NoiseSpec",
    "Fault",
    "Times",
    "simulate_times",
    "compute_times",
    "FleetScenario",
    "FleetSimResult",
    "simulate_fleet",
    "simulate_rollout",
    "RolloutResult",
]

# `degrade.simulate(...)` works whether or not the subpackage was imported first.
from .._callable_module import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "simulate")

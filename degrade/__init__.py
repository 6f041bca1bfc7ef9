"""degrade: find GPUs that have silently become slower.

``import degrade`` is cheap: it compiles no kernel and imports no optional
dependency. Public names are resolved on first access from the module that
defines them.

>>> import degrade
>>> degrade.__version__
'0.1.0'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # streaming core (issue: streaming detection core)
    "EWMA": "degrade.core",
    "CUSUM": "degrade.core",
    "BOCPD": "degrade.core",
    "PeerComparison": "degrade.core",
    "RobustBaseline": "degrade.core",
    "design_cusum": "degrade.core",
    "design_ewma": "degrade.core",
    "cusum_arl": "degrade.core",
    "ewma_arl": "degrade.core",
    # offline change points
    "segment": "degrade.changepoint",
    "refine_onset": "degrade.changepoint",
    "f1_score": "degrade.changepoint",
    "covering": "degrade.changepoint",
    # data in, simulator, evaluation
    "read_timings": "degrade.io",
    "read_counters": "degrade.io",
    "simulate": "degrade.simulate",
    "load_scenario": "degrade.simulate",
    "evaluate": "degrade.evaluate",
    # verdicts and batch analysis
    "Status": "degrade.verdict",
    "Verdict": "degrade.verdict",
    "VerdictEngine": "degrade.verdict",
    "EngineConfig": "degrade.verdict",
    "analyze": "degrade.analyze",
    "AnalysisResult": "degrade.analyze",
    # cohort comparison (driver / firmware roll-outs)
    "compare": "degrade.cohort",
    "CohortComparison": "degrade.cohort",
    # training loop
    "Monitor": "degrade.loop",
    # errors
    "DegradeError": "degrade.errors",
    "InputError": "degrade.errors",
    "SchemaError": "degrade.errors",
    "MissingDependencyError": "degrade.errors",
    "NVMLUnavailableError": "degrade.errors",
    "DeviceDegradedError": "degrade.errors",
}

__all__ = sorted([*_LAZY, "warmup", "__version__"])


def warmup(verbose: bool = False) -> dict[str, float]:
    """Compile every numba kernel once and return seconds spent per module.

    Call it at agent start-up so the first real sample is not delayed by
    compilation. With on-disk caching (the default) a second process loads
    the compiled code instead of compiling again.
    """
    from ._warmup import warmup as _warmup

    return _warmup(verbose=verbose)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'degrade' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from .analyze import AnalysisResult, analyze
    from .changepoint import covering, f1_score, refine_onset, segment
    from .cohort import CohortComparison, compare
    from .core import (
        BOCPD,
        CUSUM,
        EWMA,
        PeerComparison,
        RobustBaseline,
        cusum_arl,
        design_cusum,
        design_ewma,
        ewma_arl,
    )
    from .errors import (
        DegradeError,
        DeviceDegradedError,
        InputError,
        MissingDependencyError,
        NVMLUnavailableError,
        SchemaError,
    )
    from .evaluate import evaluate
    from .io import read_counters, read_timings
    from .loop import Monitor
    from .simulate import load_scenario, simulate
    from .verdict import EngineConfig, Status, Verdict, VerdictEngine

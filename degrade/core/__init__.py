"""Streaming detection core: numba detectors over many streams at once.

Temporal detectors (a stream against its own past): :class:`CUSUM`,
:class:`EWMA`, :class:`BOCPD`; spatial (a stream against its peers):
:class:`PeerComparison`; and a spike-proof :class:`RobustBaseline`. All share
one interface (``update``/``run``, ``add_streams``/``remove_streams``/
``reset``, ``state_dict``/``load_state_dict``, pickling); thresholds come from
a false-alarm target through :func:`design_cusum` and :func:`design_ewma`.
See docs/core.md and docs/thresholds.md.
"""

from __future__ import annotations

import numpy as np

from ._base import RunResult, StreamDetector
from .baseline import RobustBaseline
from .bocpd import BOCPD
from .cusum import CUSUM
from .design import cusum_arl, design_cusum, design_ewma, ewma_arl
from .ewma import EWMA
from .peer import PeerComparison

__all__ = [
    "BOCPD",
    "CUSUM",
    "EWMA",
    "PeerComparison",
    "RobustBaseline",
    "RunResult",
    "StreamDetector",
    "cusum_arl",
    "design_cusum",
    "design_ewma",
    "ewma_arl",
]


def _warmup() -> None:
    """Compile every kernel of the core once, on tiny inputs (``degrade.warmup()``)."""
    x = np.array([1.0, np.nan, 1.1, 0.9])
    X = np.array([[1.0, 1.2, np.nan, 0.8], [1.1, 1.0, 0.9, 1.0]] * 3)
    for det in (
        CUSUM(warmup=3),
        EWMA(warmup=3),
        BOCPD(warmup=3, max_run=8, window=2),
        RobustBaseline(window=4, min_count=2),
        RobustBaseline(method="ewma", min_count=2),
        PeerComparison(groups=[0, 0, 1, 1]),
    ):
        det.run(X)
        det.update(x)
    cusum_arl(0.5, 4.0)
    ewma_arl(0.2, 2.8)

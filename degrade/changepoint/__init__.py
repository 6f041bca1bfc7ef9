"""Offline change points: segmentation, onset refinement and scoring.

:func:`segment` splits a whole series (PELT or binary segmentation, L2 /
linear-trend / normal / Poisson costs, missing values skipped, O(1) segment costs from prefix sums, numba).
:func:`refine_onset` takes a streaming detector's alarm and estimates when the
change began and how large it is (for timings: the slowdown ratio with a
confidence interval). :func:`f1_score` and :func:`covering` score change
points as in van den Burg and Williams (2020). See docs/changepoint.md.
"""

from __future__ import annotations

from ._metrics import covering, f1_score
from ._onset import OnsetEstimate, refine_onset
from ._segment import Segmentation, segment

__all__ = [
    "OnsetEstimate",
    "Segmentation",
    "covering",
    "f1_score",
    "refine_onset",
    "segment",
]


def _warmup() -> None:
    """Compile every kernel of this package once, for each dtype the API passes."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    x[20:] += 3.0
    for cost in ("l2", "normal", "linear"):
        segment(x, cost=cost, min_size=2)
        segment(x, cost=cost, method="binseg", min_size=2)
        segment(np.c_[x, x[::-1]], cost=cost, min_size=2)
    segment(x, penalty=5.0, min_size=2)
    segment(x, penalty=5.0, min_size=2, jump=2)
    segment(np.c_[x, x[::-1]], min_size=2, method="binseg", n_bkps=1)
    counts = np.abs(np.round(x))
    segment(counts, cost="poisson", min_size=2)
    segment(counts, cost="poisson", method="binseg", min_size=2)
    refine_onset(np.exp(x / 10.0), 30, min_size=3)

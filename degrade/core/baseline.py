"""A baseline that isolated spikes cannot poison."""

from __future__ import annotations

from typing import Any

import numpy as np

from degrade.errors import InputError

from ._base import RunResult, StreamDetector, check_number
from ._kernels_baseline import (
    COL_COUNT,
    COL_POS,
    COL_VAR,
    COL_WSUM,
    N_COLS,
    _baseline_run,
    _baseline_update,
)

__all__ = ["RobustBaseline"]


class RobustBaseline(StreamDetector):
    """Per-stream location and scale that a GC pause or checkpoint step cannot poison.

    ``method="median"``: median and 1.4826 × MAD of the last ``window`` valid
    samples (an exact running median, O(window) per update).
    ``method="ewma"``: a bias-corrected exponentially weighted mean and
    variance (gain ``1 / sum of weights``, so the first samples are simply
    averaged) in which each sample is first winsorised to ``mu ± clip·sigma``:
    a spike moves the baseline by at most ``clip·sigma·gain``, while a
    persistent shift is followed at that bounded speed.

    ``statistic_`` is the z-score of each sample against the baseline
    *before* the sample was added; with ``threshold`` set, ``|z|`` above it
    raises an alarm (a spike detector).

    Parameters
    ----------
    method : {"median", "ewma"}, default "median"
    window : int, default 64
        Window of the running median.
    alpha : float, default 0.05
        EWMA weight of a new sample in steady state (``method="ewma"``).
    clip : float, default 3.0
        Winsorising limit in sigmas (``method="ewma"``).
    min_count : int, optional
        Samples needed before z-scores are reported (default
        ``min(10, window)``).
    threshold : float, optional
        ``|z|`` alarm threshold (default: never alarm).
    side : {"both", "upper", "lower"}, default "both"
    sigma_floor, positive, log, n_streams
        As for :class:`CUSUM`.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.core import RobustBaseline
    >>> x = np.full((50, 1), 0.200)
    >>> x[::7] = 0.201                     # jitter
    >>> x[20] = 3.0                        # a checkpoint step
    >>> rb = RobustBaseline(window=32)
    >>> res = rb.run(x)
    >>> round(float(rb.mu_[0]), 3), bool(res.statistic[20, 0] > 100)
    (0.2, True)
    """

    _n_cols = N_COLS
    _uses_baseline = False

    def __init__(
        self,
        *,
        method: str = "median",
        window: int = 64,
        alpha: float = 0.05,
        clip: float = 3.0,
        min_count: int | None = None,
        threshold: float | None = None,
        side: str = "both",
        sigma_floor: float | None = None,
        positive: bool = False,
        log: bool = False,
        n_streams: int | None = None,
    ) -> None:
        self.method = method
        self.window = window
        self.alpha = alpha
        self.clip = clip
        self.min_count = min_count
        self.threshold = threshold
        self.side = side
        self.sigma_floor = sigma_floor
        self.positive = positive
        self.log = log
        self.n_streams = n_streams
        if n_streams is not None:
            self._allocate(int(n_streams))

    # the standardiser's parameters are reused for floors and clipping
    warmup = 3
    relearn = False
    adapt = 0.0
    mu = None
    sigma = None

    def _build(self) -> tuple[np.ndarray, int]:
        if self.method not in ("median", "ewma"):
            raise InputError(f"method must be 'median' or 'ewma'; got {self.method!r}")
        W = int(check_number("window", self.window, lo=1, integer=True))
        alpha = check_number("alpha", self.alpha, lo=0.0, hi=1.0, lo_open=True)
        min_count = min(10, W) if self.min_count is None else self.min_count
        min_count = check_number("min_count", min_count, lo=1, integer=True)
        if self.method == "median" and min_count > W:
            raise InputError(f"min_count ({min_count:g}) cannot exceed window ({W})")
        thr = (
            np.inf if self.threshold is None else check_number("threshold", self.threshold, lo=0.0)
        )
        P = self._common(self.side) + [float(self.method == "ewma"), W, alpha, min_count, thr]
        return np.array(P), (2 * W if self.method == "median" else 0)

    def _init_cols(self, S: np.ndarray, start: int) -> None:
        S[0, start:] = np.nan
        S[COL_COUNT, start:] = 0.0
        S[COL_POS, start:] = 0.0
        S[COL_WSUM, start:] = 0.0
        S[COL_VAR, start:] = 0.0

    _update_kernel = staticmethod(_baseline_update)

    def run(self, X: Any) -> RunResult:
        """Feed a (T, N) block; same as T calls of :meth:`update`.

        Returns a :class:`RunResult` with ``alarm``, ``statistic`` (z),
        ``mu`` and ``sigma`` (the baseline after each sample), each (T, N).
        """
        X = self._block(X)
        T, n = X.shape
        alarm = np.zeros((T, n), dtype=bool)
        stat = np.empty((T, n))
        mu = np.empty((T, n))
        sigma = np.empty((T, n))
        _baseline_run(self._S, self._B, X, self._P, self.t_, alarm, stat, mu, sigma)
        self.t_ += T
        return RunResult(alarm=alarm, statistic=stat, mu=mu, sigma=sigma)

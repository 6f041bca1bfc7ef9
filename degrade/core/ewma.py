"""EWMA control chart over many streams."""

from __future__ import annotations

from typing import Any

import numpy as np

from degrade.errors import InputError

from ._base import RunResult, StreamDetector, check_number
from ._kernels_common import COL_SIGMA
from ._kernels_ewma import COL_E, COL_Q, N_COLS, _ewma_block, _ewma_update

__all__ = ["EWMA"]


class EWMA(StreamDetector):
    """EWMA control chart on standardised residuals, over N streams at once.

    ``E_i = lam * z_i + (1 - lam) * E_{i-1}`` with ``E_0 = 0`` and
    ``z = (x - mu) / sigma``; an alarm is raised when ``|E_i|`` exceeds
    ``L * sqrt(lam / (2 - lam) * (1 - (1 - lam)^(2 i)))`` (the exact,
    time-varying limit; ``limits="asymptotic"`` drops the last factor, as in
    Lucas & Saccucci's tables). After an alarm the chart restarts at 0.

    Parameters
    ----------
    lam, L : float, optional
        Smoothing constant and limit width. Defaults ``lam=0.1``,
        ``L=2.814`` (ARL0 ≈ 500 with asymptotic limits). Leave both unset and
        give ``arl0`` to derive them with :func:`design_ewma`.
    arl0, shift : float, optional
        In-control average run length wanted and smallest shift (sigmas)
        worth detecting. With a learned, frozen baseline ``L`` is widened for
        the warm-up's estimation error, as for :class:`CUSUM`.
    limits : {"exact", "asymptotic"}, default "exact"
        Exact limits catch a change present from the first samples sooner
        and lower ARL0 by a few percent.
    side, mu, sigma, warmup, relearn, adapt, clip, sigma_floor, positive, log, n_streams
        As for :class:`CUSUM`.

    Attributes
    ----------
    statistic_ : (N,) float64
        The chart value ``E`` after the last update (in sigmas: an estimate
        of the current shift); at an alarm, the value that crossed the limit.
    limit_ : (N,) float64
        The control limit in force after the last update (0 right after an
        alarm restarted the chart; NaN while the baseline is learned).

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.core import EWMA
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(10.0, 0.1, size=(600, 4))
    >>> X[400:, 2] *= 1.05                     # stream 2 becomes 5 % slower
    >>> det = EWMA(lam=0.2, L=4.0, log=True)   # baseline learned from 100 samples
    >>> res = det.run(X)
    >>> int(res.alarm[:400].sum()), int(res.alarm[:, 2].argmax())
    (0, 402)
    """

    _n_cols = N_COLS
    _update_kernel = staticmethod(_ewma_update)

    def __init__(
        self,
        *,
        lam: float | None = None,
        L: float | None = None,
        arl0: float | None = None,
        shift: float = 1.0,
        limits: str = "exact",
        side: str = "both",
        mu: Any = None,
        sigma: Any = None,
        warmup: int = 100,
        relearn: bool = False,
        adapt: float = 0.0,
        clip: float = 3.0,
        sigma_floor: float | None = None,
        positive: bool = False,
        log: bool = False,
        n_streams: int | None = None,
    ) -> None:
        self.lam = lam
        self.L = L
        self.arl0 = arl0
        self.shift = shift
        self.limits = limits
        self.side = side
        self.mu = mu
        self.sigma = sigma
        self.warmup = warmup
        self.relearn = relearn
        self.adapt = adapt
        self.clip = clip
        self.sigma_floor = sigma_floor
        self.positive = positive
        self.log = log
        self.n_streams = n_streams
        if n_streams is not None or self._baseline_streams() is not None:
            n = self._baseline_streams() if n_streams is None else int(n_streams)
            self._allocate(n)

    def _build(self) -> tuple[np.ndarray, int]:
        if self.limits not in ("exact", "asymptotic"):
            raise InputError(f"limits must be 'exact' or 'asymptotic'; got {self.limits!r}")
        if self.arl0 is not None:
            if self.lam is not None or self.L is not None:
                raise InputError("give either arl0 (and shift) or lam and L, not both")
            from .design import design_ewma

            lam, L = design_ewma(
                self.arl0,
                self.shift,
                side=self.side,
                limits=self.limits,
                warmup=self._design_warmup(),
            )
        else:
            lam = 0.1 if self.lam is None else self.lam
            L = 2.814 if self.L is None else self.L
        self.lam_ = check_number("lam", lam, lo=0.0, hi=1.0, lo_open=True)
        self.L_ = check_number("L", L, lo=0.0, lo_open=True)
        P = self._common(self.side) + [self.lam_, self.L_, float(self.limits == "exact")]
        return np.array(P), int(self.warmup)

    def _init_cols(self, S: np.ndarray, start: int) -> None:
        S[COL_Q, start:] = 1.0
        S[COL_E, start:] = 0.0

    def run(self, X: Any) -> RunResult:
        """Feed a (T, N) block; same state and alarms as T calls of :meth:`update`.

        Returns a :class:`RunResult` with ``alarm`` and ``statistic`` (T, N);
        ``statistic`` is NaN where the sample was missing or the baseline was
        being learned.
        """
        X = self._block(X, log=False)
        T, n = X.shape
        alarm = np.zeros((T, n), dtype=bool)
        stat = np.empty((T, n))
        learning = True
        ready = self._no_learning(n)
        for c0, c1, Xc in self._chunks(X):
            first, _, t_start = self._learn_block(Xc) if learning else ready
            n_learning = _ewma_block(
                self._S,
                self._B,
                Xc,
                self._P,
                self.t_ + c0,
                alarm[c0:c1],
                stat[c0:c1],
                first,
                t_start,
            )
            learning = n_learning > 0
        self.t_ += T
        return RunResult(alarm=alarm, statistic=stat)

    @property
    def limit_(self) -> np.ndarray:
        """Control limit in force after the last update (see the class docstring)."""
        if self._S is None:
            return np.empty(0)
        lam = self.lam_
        var = lam / (2.0 - lam)
        q = self._S[COL_Q]
        if self.limits == "exact":
            var = var * (1.0 - q)
        lim = self.L_ * np.sqrt(var) * np.ones_like(q)
        lim[np.isnan(self._S[COL_SIGMA])] = np.nan
        return lim

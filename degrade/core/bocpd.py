"""Bayesian online change-point detection over many streams."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._base import RunResult, StreamDetector, check_number
from ._kernels_bocpd import (
    COL_M,
    COL_ONSET,
    COL_RL,
    G_ALPHA,
    G_BETA,
    G_KAPPA,
    G_MU,
    G_PROB,
    N_COLS,
    N_PLANES,
    _bocpd_run,
    _bocpd_update,
)

__all__ = ["BOCPD"]


class BOCPD(StreamDetector):
    """Bayesian online change-point detection (Adams & MacKay 2007), N streams at once.

    Each stream's samples are standardised against its own baseline (as in
    :class:`CUSUM`) and modelled as Gaussian segments with unknown mean and
    variance (Normal-Gamma prior), separated by change points that occur with
    constant hazard ``hazard``. The posterior over the run length (samples
    since the last change) is kept for run lengths ``0 .. max_run - 1``; the
    last bin holds "``max_run - 1`` or more", so an update costs O(max_run).

    Under a constant hazard the posterior probability of a change *at* the
    current sample is always exactly ``hazard``, so the change signal is the
    mass of recent run lengths: ``cp_prob_ = P(run length < window)``. An
    alarm is raised when it crosses ``threshold`` upwards (not before
    ``window`` samples were seen); the onset — the first sample of the new
    segment — is estimated as ``t - run_length_ + 1`` at that moment.

    Parameters
    ----------
    hazard : float, default 1/1000
        Prior probability of a change at each sample (1 / expected segment length).
    max_run : int, default 256
        Run-length truncation R (memory and time per update are O(R)).
    window : int, default 10
        ``cp_prob_`` is the posterior mass of run lengths below ``window``.
    threshold : float, default 0.5
        Alarm when ``cp_prob_`` rises above it.
    prior : tuple of 4 floats, default (0, 1, 1, 1)
        Normal-Gamma prior ``(mu0, kappa0, alpha0, beta0)`` on the
        standardised scale.
    mu, sigma, warmup, relearn, adapt, clip, sigma_floor, positive, log, n_streams
        As for :class:`CUSUM` (the standardiser).

    Attributes
    ----------
    cp_prob_ : (N,) float64
        ``P(run length < window)`` after the last update (also ``statistic_``).
    run_length_ : (N,) int64
        Most likely run length: samples in the current segment, this one
        included (0: a change right after this sample).
    onset_ : (N,) int64
        For the last alarm, the update index of the first sample of the new
        segment (-1 if none).

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.core import BOCPD
    >>> rng = np.random.default_rng(2)
    >>> X = rng.normal(0.0, 1.0, size=(300, 2))
    >>> X[200:, 0] += 3.0
    >>> det = BOCPD(mu=0.0, sigma=1.0, max_run=128)
    >>> res = det.run(X)
    >>> [(int(t), int(j)) for t, j in res.alarms()]
    [(202, 0)]
    >>> int(det.run_length_[0]) in range(95, 101)
    True
    """

    _n_cols = N_COLS
    _arrays = {"_S": "state", "_B": "buffer", "_G": "runs"}

    def __init__(
        self,
        *,
        hazard: float = 1e-3,
        max_run: int = 256,
        window: int = 10,
        threshold: float = 0.5,
        prior: tuple[float, float, float, float] = (0.0, 1.0, 1.0, 1.0),
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
        self.hazard = hazard
        self.max_run = max_run
        self.window = window
        self.threshold = threshold
        self.prior = prior
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
        from degrade.errors import InputError

        hazard = check_number("hazard", self.hazard, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        R = int(check_number("max_run", self.max_run, lo=2, integer=True))
        w = int(check_number("window", self.window, lo=1, hi=R, integer=True))
        thr = check_number("threshold", self.threshold, lo=0.0, hi=1.0, hi_open=True)
        try:
            mu0, kappa0, alpha0, beta0 = (float(v) for v in self.prior)
        except (TypeError, ValueError):
            raise InputError(
                f"prior must be (mu0, kappa0, alpha0, beta0); got {self.prior!r}"
            ) from None
        if not (math.isfinite(mu0) and kappa0 > 0 and alpha0 > 0 and beta0 > 0):
            raise InputError(
                f"prior needs finite mu0 and kappa0, alpha0, beta0 > 0; got {self.prior!r}"
            )
        self._R = R
        from ._kernels_bocpd import _lgamma_ratio

        # lgamma(alpha + 1/2) - lgamma(alpha) of the bins below R-1 (alpha0 + r/2)
        self._LG = np.array([_lgamma_ratio(alpha0 + 0.5 * r) for r in range(R)])
        P = self._common("both") + [hazard, w, thr, mu0, kappa0, alpha0, beta0]
        return np.array(P), int(self.warmup)

    def _new_arrays(self, n: int) -> dict[str, np.ndarray]:
        out = super()._new_arrays(n)
        out["_G"] = np.empty((n, N_PLANES, self._R))
        return out

    def _init_cols(self, S: np.ndarray, start: int) -> None:
        S[COL_M, start:] = 1.0
        S[COL_RL, start:] = 0.0
        S[COL_ONSET, start:] = -1.0
        G = self._G[start:]
        mu0, kappa0, alpha0, beta0 = (float(v) for v in self.prior)
        G[:, G_PROB] = 0.0
        G[:, G_PROB, 0] = 1.0
        G[:, G_MU] = mu0
        G[:, G_KAPPA] = kappa0
        G[:, G_ALPHA] = alpha0
        G[:, G_BETA] = beta0

    def update(self, x: Any) -> np.ndarray:
        if (
            self._S is None
            or type(x) is not np.ndarray
            or x.dtype != np.float64
            or x.shape != (self._n,)
        ):
            x = self._vector(x)
        if self._logx:
            x = self._log_update(x)
        out = _bocpd_update(self._S, self._B, self._G, self._LG, x, self._P, self.t_)
        self.t_ += 1
        return out

    update.__doc__ = StreamDetector.update.__doc__

    def run(self, X: Any) -> RunResult:
        """Feed a (T, N) block; same state and alarms as T calls of :meth:`update`.

        Returns a :class:`RunResult` with ``alarm``, ``statistic`` (=
        ``cp_prob``) and ``run_length`` (int64), each (T, N).
        """
        X = self._block(X)
        T, n = X.shape
        alarm = np.zeros((T, n), dtype=bool)
        stat = np.empty((T, n))
        rl = np.empty((T, n), dtype=np.int64)
        _bocpd_run(self._S, self._B, self._G, self._LG, X, self._P, self.t_, alarm, stat, rl)
        self.t_ += T
        return RunResult(alarm=alarm, statistic=stat, cp_prob=stat, run_length=rl)

    @property
    def cp_prob_(self) -> np.ndarray:
        return self.statistic_

    @property
    def run_length_(self) -> np.ndarray:
        return self._col(COL_RL).astype(np.int64)

    @property
    def onset_(self) -> np.ndarray:
        return self._col(COL_ONSET).astype(np.int64)

    def run_length_posterior(self) -> np.ndarray:
        """(N, max_run) posterior probabilities of the run length (copy)."""
        if self._S is None:
            return np.empty((0, 0))
        return self._G[:, G_PROB].copy()

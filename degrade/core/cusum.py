"""Two-sided tabular CUSUM over many streams."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import RunResult, StreamDetector, check_number
from ._kernels_cusum import (
    COL_DOWN,
    COL_ONSET,
    COL_UP,
    COL_ZERO_DOWN,
    COL_ZERO_UP,
    N_COLS,
    _cusum_block,
    _cusum_update,
)

__all__ = ["CUSUM"]


class CUSUM(StreamDetector):
    """Two-sided tabular CUSUM on standardised residuals, over N streams at once.

    Each sample ``x`` is standardised against the stream's own baseline,
    ``z = (x - mu) / sigma``, and accumulated in ``C+ = max(0, C+ + z - k)``
    and ``C- = max(0, C- - z - k)``; an alarm is raised when either exceeds
    ``h``. After an alarm both restart (at the FIR headstart ``fir * h``).

    Parameters
    ----------
    k, h : float, optional
        Reference value and decision interval, in units of sigma. Defaults
        ``k=0.5``, ``h=5.0`` (two-sided ARL0 ≈ 465). Leave both unset and give
        ``arl0`` to derive them with :func:`design_cusum`.
    arl0 : float, optional
        In-control average run length wanted (samples between false alarms).
        With a learned, frozen baseline (no ``mu``/``sigma``, ``adapt=0``),
        ``h`` is widened for the estimation error of a ``warmup``-sample
        baseline (``design_cusum(..., warmup=warmup)``), so the false-alarm
        rate averaged over streams stays ``1 / arl0``.
    shift : float, default 1.0
        Smallest shift worth detecting, in sigmas (used with ``arl0``).
    fir : float, default 0.0
        Fast initial response: the statistics start (and restart after an
        alarm) at ``fir * h``; 0.5 is Lucas & Crosier's choice.
    side : {"both", "upper", "lower"}
        Which direction raises an alarm (timings: "upper" = slower).
    mu, sigma : float or array of shape (N,), optional
        A known baseline. When not given, each stream learns it from its first
        ``warmup`` valid samples (median/MAD, then a 3-sigma trimmed mean and
        variance), raising no alarm meanwhile.
    warmup : int, default 100
        Valid samples used to learn the baseline.
    relearn : bool, default False
        After an alarm, learn the baseline again from the next ``warmup``
        samples (accept the new level and watch for further changes) instead
        of keeping it (keep alarming while the shift lasts).
    adapt : float, default 0.0
        After warm-up, let the baseline follow the stream with a winsorised
        EWMA of this gain (0 keeps it frozen). A slow drift is then absorbed.
    clip : float, default 3.0
        Winsorising limit (sigmas) of the adaptive baseline.
    sigma_floor : float, optional
        Lower bound of sigma. Default: ``1e-3`` with ``log=True`` (0.1 %),
        else ``1e-3 * |mu|``.
    positive : bool, default False
        Zero or negative samples are missing (timings).
    log : bool, default False
        Work on ``log(x)``: a 10 % slowdown is the same shift at any step
        length. Implies ``positive``; ``mu``/``sigma`` are then in log units.
    n_streams : int, optional
        Create the state now instead of at the first update.

    Attributes
    ----------
    statistic_ : (N,) float64
        ``C+`` if ``C+ >= C-`` else ``-C-``, after the last update (at an
        alarm: the value that crossed ``h``, before the restart).
    upper_, lower_ : (N,) float64
        ``C+`` and ``C-`` carried to the next update.
    onset_ : (N,) int64
        For the last alarm, the last update index at which the alarming
        statistic was zero: the change is estimated to start right after it.
        -1 if no alarm yet.
    alarm_, last_alarm_, n_missing_, n_streams_, t_, mu_, sigma_
        See :class:`degrade.core.StreamDetector`.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.core import CUSUM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(0.0, 1.0, size=(400, 3))
    >>> X[300:, 1] += 1.5                      # stream 1 shifts at index 300
    >>> det = CUSUM(arl0=1e5, shift=1.5, mu=0.0, sigma=1.0)   # known baseline
    >>> res = det.run(X)
    >>> t, j = res.alarms()[0]                 # first alarm: (index, stream)
    >>> int(t), int(j), int(res.onset[t, j])   # change estimated after index 298
    (304, 1, 298)
    """

    _n_cols = N_COLS
    _update_kernel = staticmethod(_cusum_update)

    def __init__(
        self,
        *,
        k: float | None = None,
        h: float | None = None,
        arl0: float | None = None,
        shift: float = 1.0,
        fir: float = 0.0,
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
        self.k = k
        self.h = h
        self.arl0 = arl0
        self.shift = shift
        self.fir = fir
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
        if self.arl0 is not None:
            if self.k is not None or self.h is not None:
                from degrade.errors import InputError

                raise InputError("give either arl0 (and shift) or k and h, not both")
            from .design import design_cusum

            k, h = design_cusum(self.arl0, self.shift, side=self.side, warmup=self._design_warmup())
        else:
            k = 0.5 if self.k is None else self.k
            h = 5.0 if self.h is None else self.h
        self.k_ = check_number("k", k, lo=0.0)
        self.h_ = check_number("h", h, lo=0.0)
        fir = check_number("fir", self.fir, lo=0.0, hi=1.0, hi_open=True)
        P = self._common(self.side) + [self.k_, self.h_, fir * self.h_]
        return np.array(P), int(self.warmup)

    def _init_cols(self, S: np.ndarray, start: int) -> None:
        head = self._P[-1]
        S[COL_UP, start:] = head
        S[COL_DOWN, start:] = head
        S[COL_ZERO_UP, start:] = self.t_ - 1
        S[COL_ZERO_DOWN, start:] = self.t_ - 1
        S[COL_ONSET, start:] = -1.0

    def run(self, X: Any) -> RunResult:
        """Feed a (T, N) block; same state and alarms as T calls of :meth:`update`.

        Returns a :class:`RunResult` with ``alarm``, ``statistic`` (NaN
        where the sample was missing or the baseline was being learned) and
        ``onset`` (int64, -1 where no alarm) of shape (T, N). ``onset`` is
        kept as one value per alarm and made into the (T, N) array when it
        is first read: a run that only needs the alarms does not pay for
        filling and faulting in T x N int64.
        """
        X = self._block(X, log=False)
        T, n = X.shape
        alarm = np.zeros((T, n), dtype=bool)
        stat = np.empty((T, n))
        # the onsets, one per alarm in row-major order, via a scratch buffer
        # with room for one per sample of a chunk (see _chunks)
        buf = np.empty(self._alarm_capacity(T, n), dtype=np.int64)
        parts = []
        learning = True
        ready = self._no_learning(n)
        for c0, c1, Xc in self._chunks(X):
            first, last, t_start = self._learn_block(Xc) if learning else ready
            cnt, n_learning = _cusum_block(
                self._S,
                self._B,
                Xc,
                self._P,
                self.t_ + c0,
                alarm[c0:c1],
                stat[c0:c1],
                buf,
                0,
                first,
                last,
                t_start,
            )
            learning = n_learning > 0
            if cnt > buf.size:  # pragma: no cover - the bound is exact, see _alarm_capacity
                raise RuntimeError(f"CUSUM.run: {cnt} alarms in a chunk, room for {buf.size}")
            parts.append(buf[:cnt].copy())
        self.t_ += T
        ons = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

        def onset() -> np.ndarray:
            dense = np.full((T, n), -1, dtype=np.int64)
            dense[alarm] = ons
            return dense

        return RunResult(alarm=alarm, statistic=stat, _lazy={"onset": onset})

    @property
    def upper_(self) -> np.ndarray:
        return self._col(COL_UP)

    @property
    def lower_(self) -> np.ndarray:
        return self._col(COL_DOWN)

    @property
    def onset_(self) -> np.ndarray:
        return self._col(COL_ONSET).astype(np.int64)

"""What every streaming detector shares: state arrays, add/remove, save/restore."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from degrade.errors import InputError

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_MISS,
    COL_MU,
    COL_NWARM,
    COL_SIGMA,
    COL_STAT,
    SIDE_BOTH,
    SIDE_LOWER,
    SIDE_UPPER,
    _bulk_learn,
    _filled,
    _fit_sorted,
    common_params,
    init_common,
)

__all__ = ["RunResult", "StreamDetector"]

_SIDES = {"upper": SIDE_UPPER, "lower": SIDE_LOWER, "both": SIDE_BOTH}


class RunResult:
    """Per-sample output of a detector's ``run`` over a (T, N) block.

    Every attribute is an array of shape (T, N): at least ``alarm`` (bool) and
    ``statistic`` (float64); each detector documents the others it adds.
    """

    def __init__(self, _lazy: dict[str, Any] | None = None, **arrays: np.ndarray) -> None:
        self.__dict__.update(arrays)
        # fields built on first access: name -> function returning the array
        self._lazy = dict(_lazy or {})
        self._fields = tuple(arrays) + tuple(self._lazy)

    def __getattr__(self, name: str) -> Any:
        lazy = self.__dict__.get("_lazy")
        if lazy and name in lazy:
            value = lazy.pop(name)()
            self.__dict__[name] = value
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        for name in list(self._lazy):
            getattr(self, name)
        return self.__dict__

    def alarms(self) -> np.ndarray:
        """(k, 2) int64 array of the (row, stream) pairs that raised an alarm."""
        return np.argwhere(self.alarm)

    def __repr__(self) -> str:
        shape = self.alarm.shape
        return f"RunResult(shape={shape}, fields={self._fields}, alarms={int(self.alarm.sum())})"


_CHUNK_BYTES = 1 << 20  # run works through a block in chunks of about 1 MiB (see _chunks)


def _safe_log(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """log(x), NaN where x <= 0 or NaN (those samples are then missing).

    Done in numpy rather than in the kernels: its vectorised log is ~15x
    faster than a scalar call per sample, and ``update`` and ``run`` give
    the same bits (numpy's plain and masked ``log`` loops agree; tested).
    One pass when every sample is positive (the check is a ``min``, a tenth
    of the ``log``'s cost); only otherwise are the invalid ones set to NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(x, out=out)
    if not x.min(initial=np.inf) > 0.0:
        out[~(x > 0.0)] = np.nan
    return out


def _ro(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def check_number(
    name: str,
    value: Any,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> float:
    """Validate a scalar parameter and return it as float (one clear error)."""
    given = value
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = not math.isnan(value)
        ok = ok and (value > lo if lo_open else value >= lo)
        ok = ok and (value < hi if hi_open else value <= hi)
        ok = ok and (not integer or value == int(value))
    if not ok:
        lo_s = ("(" if lo_open else "[") + f"{lo:g}"
        hi_s = f"{hi:g}" + (")" if hi_open else "]")
        kind = "an integer" if integer else "a number"
        raise InputError(f"{name} must be {kind} in {lo_s}, {hi_s}; got {given!r}")
    return value


def check_side(side: Any) -> int:
    if side not in _SIDES:
        raise InputError(f"side must be one of 'upper', 'lower', 'both'; got {side!r}")
    return _SIDES[side]


class StreamDetector:
    """Base class of the streaming detectors (see docs/core.md).

    Subclasses set ``_n_cols``, ``_update_kernel`` and ``_run_kernel``, store
    their keyword arguments in ``__init__`` and implement ``_build`` (validate
    parameters, return the parameter vector and warm-up buffer width) and
    ``_init_cols`` (initial values of their own state columns).
    """

    _n_cols: ClassVar[int]
    _uses_baseline: ClassVar[bool] = True

    # created lazily (constructor only stores its arguments)
    _S: np.ndarray | None = None
    _B: np.ndarray | None = None
    _P: np.ndarray | None = None
    _n: int = -1
    t_: int = 0
    _lbuf: np.ndarray | None = None  # scratch for log=True updates
    # per-stream arrays and their names in state_dict (see _stream_axis)
    _arrays: ClassVar[dict[str, str]] = {"_S": "state", "_B": "buffer"}

    # -- hooks --------------------------------------------------------------
    def _build(self) -> tuple[np.ndarray, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_cols(self, S: np.ndarray, start: int) -> None:
        """Fill the detector's own columns of rows ``start:`` (new streams)."""

    @staticmethod
    def _stream_axis(name: str) -> int:
        """``_S`` is (fields, streams); every other per-stream array is (streams, ...)."""
        return 1 if name == "_S" else 0

    def _new_arrays(self, n: int) -> dict[str, np.ndarray]:
        """Uninitialised per-stream arrays for ``n`` streams (filled by ``_fill``)."""
        return {
            "_S": np.empty((self._n_cols, n)),
            "_B": np.empty((n, max(self._width, 1))),
        }

    def _extra_params(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _common(self, side: str = "both") -> list[float]:
        """The standardiser's parameters, validated."""
        warmup = int(check_number("warmup", self.warmup, lo=3, integer=True))
        check_number("adapt", self.adapt, lo=0.0, hi=1.0, hi_open=True)
        check_number("clip", self.clip, lo=0.0, lo_open=True)
        if self.sigma_floor is None:
            floor_abs, floor_rel = (1e-3, 0.0) if self.log else (0.0, 1e-3)
        else:
            floor_abs = check_number("sigma_floor", self.sigma_floor, lo=0.0)
            floor_rel = 0.0
        if (self.mu is None) != (self.sigma is None):
            raise InputError("give both mu and sigma (a fixed baseline) or neither (learned)")
        # log=True is applied by numpy before the kernels (see _safe_log), which
        # then only see NaN/inf for invalid samples
        return common_params(
            positive=bool(self.positive) and not self.log,
            log=False,
            warmup=warmup,
            relearn=bool(self.relearn),
            adapt=float(self.adapt),
            clip=float(self.clip),
            floor_abs=floor_abs,
            floor_rel=floor_rel,
            side=check_side(side),
        )

    def _design_warmup(self) -> int | None:
        """Warm-up length a threshold design must allow for, or None (baseline known).

        Only a frozen learned baseline is corrected: an adaptive one keeps
        moving, so its error is not that of a fixed ``warmup``-sample estimate.
        """
        if getattr(self, "mu", None) is not None or float(self.adapt) != 0.0:
            return None
        return int(check_number("warmup", self.warmup, lo=3, integer=True))

    def _given_baseline(self, n: int) -> tuple[Any, Any]:
        mu = getattr(self, "mu", None)
        if mu is None:
            return None, None
        mu_a = np.asarray(mu, dtype=np.float64)
        sigma_a = np.asarray(self.sigma, dtype=np.float64)
        for name, a in (("mu", mu_a), ("sigma", sigma_a)):
            if a.ndim not in (0, 1) or (a.ndim == 1 and a.shape != (n,)):
                raise InputError(
                    f"{name} must be a scalar or have shape ({n},); got shape {a.shape}"
                )
            if not np.all(np.isfinite(a)):
                raise InputError(f"{name} must be finite")
        if np.any(sigma_a <= 0):
            raise InputError("sigma must be > 0")
        if self.log:
            pass  # mu and sigma are in log units, documented
        return mu_a, sigma_a

    def _baseline_streams(self) -> int | None:
        mu = getattr(self, "mu", None)
        for a in (mu, getattr(self, "sigma", None)):
            if a is not None and np.ndim(a) == 1:
                return len(a)
        return None

    def _log_update(self, x: np.ndarray) -> np.ndarray:
        """:func:`_safe_log` into reused buffers: the same numpy call, less overhead."""
        buf = self._lbuf
        if buf is None or buf.shape != x.shape:
            buf = self._lbuf = np.empty(x.shape)
            self._lmask = np.empty(x.shape, dtype=bool)
        buf.fill(np.nan)
        np.greater(x, 0.0, out=self._lmask)
        np.log(x, out=buf, where=self._lmask)
        return buf

    # -- state --------------------------------------------------------------
    def _allocate(self, n: int) -> None:
        if n < 0:
            raise InputError(f"n_streams must be >= 0; got {n}")
        P, width = self._build()
        self._P = np.ascontiguousarray(P, dtype=np.float64)
        self._logx = bool(getattr(self, "log", False))
        self._width = width
        for name, a in self._new_arrays(n).items():
            setattr(self, name, a)
        self._n = n
        self.t_ = 0
        self._fill(0)

    def _fill(self, start: int) -> None:
        S = self._S
        if self._uses_baseline and start == 0:
            mu, sigma = self._given_baseline(S.shape[1])
        else:
            mu, sigma = None, None  # streams added later learn their baseline
        init_common(S[:, start:], self.t_, mu, sigma, self._width)
        self._B[start:] = np.nan
        self._init_cols(S, start)

    def _ensure(self, n: int) -> None:
        if self._S is None:
            self._allocate(n)

    def _vector(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._S is None:
            if x.ndim != 1:
                raise InputError(
                    f"update expects one sample per stream, shape (N,); got shape {x.shape}"
                )
            self._allocate(x.shape[0])
        if x.shape != (self._n,):
            raise InputError(
                f"update expects one sample per stream, shape ({self._n},); got shape {x.shape}"
            )
        return np.ascontiguousarray(x)

    def _chunk_plan(self, T: int, n: int) -> tuple[int, int]:
        """Rows of the first chunk and of the others for a (T, n) block (see :meth:`_chunks`)."""
        rows = max(1, _CHUNK_BYTES // max(8 * n, 1))
        head = rows
        if T and n and np.any(self._S[COL_NWARM] < self._width):
            head = max(rows, self._width)  # a new stream's warm-up in one chunk
        return min(head, T), min(rows, T)

    def _alarm_capacity(self, T: int, n: int) -> int:
        """An upper bound on the alarms in one chunk of a (T, n) block (the CUSUM's onset scratch).

        A stream alarms at most once per row in which its baseline is known:
        every row for a ready stream, none of the first ``warmup - count``
        valid samples of a learning one. Bounding the first chunk that way
        keeps the scratch small when it is a long warm-up chunk.
        """
        head, rows = self._chunk_plan(T, n)
        if head <= rows:
            return rows * n
        nw = self._S[COL_NWARM]
        W = self._width
        ready = np.where(nw >= W, head, np.maximum(0, head - (W - nw)))
        return max(rows * n, int(ready.sum()))

    def _chunks(self, X: np.ndarray):
        """Yield ``(c0, c1, Xc)``: the block ``X`` (from ``_block(X, log=False)``) in row chunks.

        A chunk is about ``_CHUNK_BYTES`` of samples (the first one at least
        ``warmup`` rows while a stream is learning, so that its warm-up is
        taken in bulk). With ``log=True`` each chunk is logged into one
        reused buffer, which the kernels then read while it is still in
        cache; scratch sized by the chunk (the CUSUM's onsets) is reused the
        same way. Whole-block temporaries instead are fresh (T, N) arrays
        that the kernel has to fault in at every run (measured: ~6000 page
        faults, as much CPU time as the charts, for 400 x 4096).
        """
        T, n = X.shape
        head, rows = self._chunk_plan(T, n)
        buf = np.empty((max(head, rows), n)) if self._logx else None
        c0 = 0
        while c0 < T:
            c1 = min(c0 + (head if c0 == 0 else rows), T)
            Xc = X[c0:c1]
            if buf is not None:
                Xc = _safe_log(Xc, out=buf[: c1 - c0])
            yield c0, c1, Xc
            c0 = c1

    def _block(self, X: Any, log: bool = True) -> np.ndarray:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"run expects a numeric (T, N) array: {exc}") from None
        if self._S is None:
            if X.ndim != 2:
                raise InputError(f"run expects a block of shape (T, N); got shape {X.shape}")
            self._allocate(X.shape[1])
        if X.ndim != 2 or X.shape[1] != self._n:
            raise InputError(f"run expects a block of shape (T, {self._n}); got shape {X.shape}")
        X = np.ascontiguousarray(X)
        return _safe_log(X) if (self._logx and log) else X

    def _learn_block(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Take the warm-up samples of block ``X`` in bulk, before the charts run over it.

        Returns ``first`` (per stream, the first row at which its chart runs),
        ``last`` (its last warm-up row, -1 if none) and ``min(first)``. The
        streams whose warm-up filled are fitted together from their buffers
        sorted by numpy (a SIMD sort, ~0.1 us per 100 samples, where the
        selection in ``_robust_mu_sigma`` takes ~2.5 us); the estimates are the
        same, bit for bit (see ``_fit_sorted``).
        """
        n = X.shape[1]
        first = np.empty(n, dtype=np.int64)
        last = np.empty(n, dtype=np.int64)
        t_start = _bulk_learn(self._S, self._B, X, self._P, first, last, False)
        W = self._width
        done = _filled(self._S, first, W)
        if done.size:
            Bs = self._B[done, :W]
            Bs.sort(axis=1)
            _fit_sorted(self._S, self._B, Bs, done, self._P)
        return first, last, int(t_start)

    def _no_learning(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """What :meth:`_learn_block` returns for a chunk in which no stream is learning."""
        return np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64), 0

    def update(self, x: Any) -> np.ndarray:
        """Feed one sample per stream; return the (N,) bool array of alarms raised.

        NaN/inf (and, with ``positive=True``, zero or negative values) are
        missing: the stream's state is unchanged and ``n_missing_`` counts it.
        """
        if (
            self._S is None
            or type(x) is not np.ndarray
            or x.dtype != np.float64
            or x.shape != (self._n,)
        ):
            x = self._vector(x)
        if self._logx:
            x = self._log_update(x)
        out = self._update_kernel(self._S, self._B, x, self._P, self.t_)
        self.t_ += 1
        return out

    def add_streams(self, n: int = 1) -> np.ndarray:
        """Append ``n`` fresh streams (they learn their own baseline); return their indices."""
        n = int(check_number("n", n, lo=0, integer=True))
        if self._S is None:
            self._allocate(n)
            return np.arange(n, dtype=np.int64)
        start = self._n
        for name, a in self._new_arrays(n).items():
            ax = self._stream_axis(name)
            setattr(self, name, np.concatenate([getattr(self, name), a], axis=ax))
        self._n = start + n
        self._fill(start)
        return np.arange(start, start + n, dtype=np.int64)

    def _stream_indices(self, indices: Any, what: str) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self._n,):
                raise InputError(
                    f"{what}: a boolean mask must have shape ({self._n},); got {idx.shape}"
                )
            return np.flatnonzero(idx)
        idx = idx.reshape(-1)
        if idx.size and (idx.dtype.kind not in "iu"):
            raise InputError(f"{what}: stream indices must be integers; got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        bad = (idx < 0) | (idx >= self._n)
        if np.any(bad):
            raise InputError(
                f"{what}: stream index {int(idx[bad][0])} out of range for {self._n} streams"
            )
        return idx

    def remove_streams(self, indices: Any) -> None:
        """Drop streams; the remaining ones keep their order (and their state)."""
        if self._S is None:
            raise InputError("remove_streams: the detector has no streams yet")
        drop = self._stream_indices(indices, "remove_streams")
        keep = np.ones(self._n, dtype=bool)
        keep[drop] = False
        for name in self._arrays:
            a = np.compress(keep, getattr(self, name), axis=self._stream_axis(name))
            setattr(self, name, np.ascontiguousarray(a))
        self._n = int(keep.sum())
        self._after_remove(keep)

    def _after_remove(self, keep: np.ndarray) -> None:
        """Hook for detectors with extra per-stream structures."""

    def reset(self, streams: Any = None) -> None:
        """Forget everything learned, for all streams or the given ones."""
        if self._S is None:
            return
        if streams is None:
            self.t_ = 0
            self._fill(0)
            return
        idx = self._stream_indices(streams, "reset")
        if idx.size == 0:
            return
        # re-initialise a scratch copy of the full state and take those rows
        saved = {name: getattr(self, name).copy() for name in self._arrays}
        self._fill(0)
        for name, old in saved.items():
            sel = (slice(None), idx) if self._stream_axis(name) == 1 else idx
            old[sel] = getattr(self, name)[sel]
            setattr(self, name, old)

    # -- persistence --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything learned, as arrays and scalars (``np.savez``-friendly)."""
        if self._S is None:
            return {"class": type(self).__name__, "version": 1, "t_": 0, "n_streams": -1}
        return {
            "class": type(self).__name__,
            "version": 1,
            "t_": int(self.t_),
            "n_streams": int(self._n),
            **{key: getattr(self, name).copy() for name, key in self._arrays.items()},
            **self._extra_state(),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the constructor arguments must match)."""
        name = str(np.asarray(d.get("class", "")))
        if name != type(self).__name__:
            raise InputError(f"state_dict is for {name!r}, not {type(self).__name__}")
        n = int(np.asarray(d["n_streams"]))
        if n < 0:
            self._S = None
            self._B = None
            self._n = -1
            self.t_ = 0
            return
        self._load_extra(d, n)
        self._allocate(n)
        loaded = {}
        for name, key in self._arrays.items():
            if key not in d:
                raise InputError(f"state_dict for {name!r} lacks the array {key!r}")
            a = np.asarray(d[key], dtype=np.float64)
            want = getattr(self, name).shape
            if a.shape != want:
                raise InputError(
                    f"state_dict does not fit this {type(self).__name__}: {key!r} has shape "
                    f"{a.shape}, expected {want} (same constructor arguments?)"
                )
            loaded[name] = np.array(a, dtype=np.float64, order="C")
        for name, a in loaded.items():
            setattr(self, name, a)
        self.t_ = int(np.asarray(d["t_"]))

    def _load_extra(self, d: dict[str, Any], n: int) -> None:
        """Restore non-array state before the arrays are allocated."""

    # -- read-only views ------------------------------------------------------
    def _col(self, c: int) -> np.ndarray:
        if self._S is None:
            return np.empty(0)
        return _ro(self._S[c])

    @property
    def n_streams_(self) -> int:
        return max(self._n, 0)

    @property
    def statistic_(self) -> np.ndarray:
        return self._col(COL_STAT)

    @property
    def alarm_(self) -> np.ndarray:
        return self._col(COL_ALARM) != 0.0

    @property
    def last_alarm_(self) -> np.ndarray:
        return self._col(COL_LAST).astype(np.int64)

    @property
    def n_missing_(self) -> np.ndarray:
        return self._col(COL_MISS).astype(np.int64)

    @property
    def mu_(self) -> np.ndarray:
        """Baseline mean per stream (NaN while it is being learned)."""
        return self._col(COL_MU)

    @property
    def sigma_(self) -> np.ndarray:
        """Baseline scale per stream (NaN while it is being learned)."""
        return self._col(COL_SIGMA)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._init_args().items())
        return f"{type(self).__name__}({args})"

    def _init_args(self) -> dict[str, Any]:
        import inspect

        sig = inspect.signature(type(self).__init__)
        out = {}
        for name, p in sig.parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            v = getattr(self, name, p.default)
            if v is not p.default and not (isinstance(v, np.ndarray)):
                out[name] = v
        return out

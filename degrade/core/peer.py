"""Spatial detector: each stream against the devices doing the same work."""

from __future__ import annotations

from typing import Any

import numpy as np

from degrade.errors import InputError

from ._base import RunResult, StreamDetector, check_number, check_side
from ._kernels_common import common_params
from ._kernels_peer import COL_DEV, COL_PEERS, COL_SCALE, N_COLS, _peer_run, _peer_update

__all__ = ["PeerComparison"]


def _group_index(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members of each group (stable order) as CSR: ``order[starts[g]:starts[g+1]]``."""
    order = np.argsort(groups, kind="stable").astype(np.int64)
    g = groups[order]
    cut = np.flatnonzero(np.diff(g)) + 1 if g.size else np.empty(0, dtype=np.int64)
    starts = np.concatenate([[0], cut, [g.size]]).astype(np.int64)
    if g.size == 0:
        starts = np.zeros(1, dtype=np.int64)
    return np.ascontiguousarray(order), np.ascontiguousarray(starts)


class PeerComparison(StreamDetector):
    """Robust peer comparison: each stream against the leave-one-out median of its group.

    At every update, for each stream ``j`` in group ``g``: ``deviation =
    x_j - median(x_i for the other valid members i of g)`` (with ``log=True``
    on ``log(x)``, so the deviation is a log-ratio: ``0.0953`` = 10 % slower,
    at any step length) and ``z = deviation / scale`` where ``scale`` is
    1.4826 × the MAD of the group's valid values, floored at ``min_scale``.
    An alarm is raised when ``z`` passes ``threshold`` (in the direction(s)
    given by ``side``) and ``|deviation| > min_deviation``.

    Small groups: with one valid member there is nothing to compare
    (``deviation``/``z`` are NaN, no alarm). With two, each is compared with
    the other and the scale is ``min_scale`` (a pair cannot reveal its noise
    level); with ``side="upper"`` only the slower one can alarm, with
    ``side="both"`` both do — a pair cannot say which one changed. Use
    ``min_group=3`` to leave pairs alone.

    This detector is memoryless (one update compares one moment); feed
    ``deviation_`` or ``z_`` into :class:`CUSUM` or :class:`EWMA` to
    accumulate small persistent deviations.

    Parameters
    ----------
    groups : array of int, shape (N,), optional
        Peer-group label of each stream (any integers). Default: all streams
        in one group.
    log : bool, default True
        Compare ``log(x)`` (timings, clocks); implies ``positive``.
    positive : bool, default True
        Zero or negative samples are missing.
    min_scale : float, optional
        Floor of the group scale: absolute in log units with ``log=True``
        (default 0.01, i.e. ~1 %), else relative to the group median's
        magnitude (default 0.01).
    threshold : float, default 5.0
        ``|z|`` above which an alarm is raised.
    min_deviation : float, default 0.0
        The deviation must also exceed this (e.g. ``log(1.05)`` to ignore
        slowdowns below 5 %).
    side : {"both", "upper", "lower"}, default "both"
    min_group : int, default 2
        Fewer valid members than this: no comparison.
    n_streams : int, optional
        Create the state now (all in one group) instead of at the first update.

    Attributes
    ----------
    deviation_ : (N,) float64
        Deviation from the leave-one-out median of the group (NaN when missing
        or alone).
    z_ : (N,) float64
        ``deviation_ / scale_`` (also ``statistic_``).
    scale_ : (N,) float64
        The group scale used.
    n_peers_ : (N,) int64
        Valid peers each stream was compared with.
    groups_ : (N,) int64
        Current group labels.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.core import PeerComparison
    >>> step = np.array([1.00, 1.01, 0.99, 1.12, 2.00, 2.02, 1.98, 2.01])
    >>> pc = PeerComparison(groups=[0, 0, 0, 0, 1, 1, 1, 1], threshold=4.0, side="upper")
    >>> pc.update(step).tolist()
    [False, False, False, True, False, False, False, False]
    >>> round(float(pc.deviation_[3]), 4)      # log(1.12 / 1.00)
    0.1133
    """

    _n_cols = N_COLS
    _uses_baseline = False

    def __init__(
        self,
        *,
        groups: Any = None,
        log: bool = True,
        positive: bool = True,
        min_scale: float | None = None,
        threshold: float = 5.0,
        min_deviation: float = 0.0,
        side: str = "both",
        min_group: int = 2,
        n_streams: int | None = None,
    ) -> None:
        self.groups = groups
        self.log = log
        self.positive = positive
        self.min_scale = min_scale
        self.threshold = threshold
        self.min_deviation = min_deviation
        self.side = side
        self.min_group = min_group
        self.n_streams = n_streams
        if groups is not None or n_streams is not None:
            g = self._labels(groups, n_streams)
            self._allocate(g.size)

    @staticmethod
    def _labels(groups: Any, n: int | None) -> np.ndarray:
        if groups is None:
            return np.zeros(int(n) if n is not None else 0, dtype=np.int64)
        g = np.asarray(groups)
        if g.ndim != 1:
            raise InputError(f"groups must be a 1-D array of integer labels; got shape {g.shape}")
        if g.size and g.dtype.kind not in "iu":
            if g.dtype.kind == "f" and np.all(np.isfinite(g)) and np.all(g == np.round(g)):
                g = g.astype(np.int64)
            else:
                raise InputError(f"groups must be integer labels; got dtype {g.dtype}")
        if n is not None and g.size != int(n):
            raise InputError(f"groups has {g.size} labels but n_streams={n}")
        return g.astype(np.int64)

    def _build(self) -> tuple[np.ndarray, int]:
        floor = 0.01 if self.min_scale is None else self.min_scale
        floor = check_number("min_scale", floor, lo=0.0)
        thr = check_number("threshold", self.threshold, lo=0.0)
        min_dev = check_number("min_deviation", self.min_deviation, lo=0.0)
        min_group = check_number("min_group", self.min_group, lo=2, integer=True)
        common = common_params(
            positive=bool(self.positive) and not self.log,
            log=False,  # applied by numpy before the kernel
            warmup=0,
            relearn=False,
            adapt=0.0,
            clip=np.inf,
            floor_abs=floor if self.log else 0.0,
            floor_rel=0.0 if self.log else floor,
            side=check_side(self.side),
        )
        return np.array(common + [floor, thr, min_dev, min_group]), 0

    def _allocate(self, n: int) -> None:
        if getattr(self, "_groups", None) is None or self._groups.size != n:
            self._groups = (
                self._labels(self.groups, n)
                if self.groups is not None
                else np.zeros(n, dtype=np.int64)
            )
        self._order, self._starts = _group_index(self._groups)
        super()._allocate(n)

    def _init_cols(self, S: np.ndarray, start: int) -> None:
        S[COL_DEV, start:] = np.nan
        S[COL_SCALE, start:] = np.nan
        S[COL_PEERS, start:] = 0.0
        S[0, start:] = np.nan  # z

    def set_groups(self, groups: Any) -> None:
        """Relabel the streams' peer groups (e.g. after a pipeline re-assignment)."""
        if self._S is None:
            self.groups = groups
            return
        self._groups = self._labels(groups, self._n)
        self._order, self._starts = _group_index(self._groups)

    def add_streams(self, n: int = 1, *, groups: Any = None) -> np.ndarray:
        """Append ``n`` streams with peer-group labels ``groups`` (default: group 0 if
        the detector was built without groups)."""
        n = int(check_number("n", n, lo=0, integer=True))
        if groups is None:
            if self.groups is not None:
                raise InputError("PeerComparison.add_streams needs groups= for the new streams")
            new = np.zeros(n, dtype=np.int64)
        else:
            new = self._labels(groups, n)
        if self._S is None:
            self._groups = new
            self._allocate(n)
            return np.arange(n, dtype=np.int64)
        self._groups = np.concatenate([self._groups, new])
        self._order, self._starts = _group_index(self._groups)
        return super().add_streams(n)

    def _after_remove(self, keep: np.ndarray) -> None:
        self._groups = self._groups[keep]
        self._order, self._starts = _group_index(self._groups)

    def _extra_state(self) -> dict[str, Any]:
        return {"groups": self._groups.copy()}

    def _load_extra(self, d: dict[str, Any], n: int) -> None:
        self._groups = self._labels(d["groups"], n)

    def update(self, x: Any) -> np.ndarray:
        """Compare one sample per stream with its peers; return the (N,) alarms."""
        if (
            self._S is None
            or type(x) is not np.ndarray
            or x.dtype != np.float64
            or x.shape != (self._n,)
        ):
            x = self._vector(x)
        if self._logx:
            x = self._log_update(x)
        out = _peer_update(self._S, x, self._order, self._starts, self._P, self.t_)
        self.t_ += 1
        return out

    def run(self, X: Any) -> RunResult:
        """Compare a (T, N) block row by row; same as T calls of :meth:`update`.

        Returns a :class:`RunResult` with ``alarm``, ``statistic`` (= ``z``)
        and ``deviation``, each (T, N).
        """
        X = self._block(X)
        T, n = X.shape
        alarm = np.zeros((T, n), dtype=bool)
        stat = np.empty((T, n))
        dev = np.empty((T, n))
        _peer_run(self._S, X, self._order, self._starts, self._P, self.t_, alarm, stat, dev)
        self.t_ += T
        return RunResult(alarm=alarm, statistic=stat, z=stat, deviation=dev)

    @property
    def deviation_(self) -> np.ndarray:
        return self._col(COL_DEV)

    @property
    def z_(self) -> np.ndarray:
        return self.statistic_

    @property
    def scale_(self) -> np.ndarray:
        return self._col(COL_SCALE)

    @property
    def n_peers_(self) -> np.ndarray:
        return self._col(COL_PEERS).astype(np.int64)

    @property
    def groups_(self) -> np.ndarray:
        g = getattr(self, "_groups", None)
        return np.empty(0, dtype=np.int64) if g is None else g.copy()

"""The verdict engine: temporal, spatial and hard-signal evidence fused into per-device verdicts.

One engine serves the batch analysis (``run`` over a (T, N) block), the node
agent (``update`` per poll) and the training loop (``update`` every K steps).
Both entry points call the same numba kernel, so ``run`` over a block equals
T calls of ``update`` bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

import numpy as np

from degrade.errors import DataWarning, InputError

from . import _layout as K
from ._events import _place
from ._types import JobEvent, Verdict

__all__ = ["EngineConfig", "VerdictEngine", "COUNTER_COLUMNS"]

#: counter columns the engine reads (others in docs/schema.md are accepted and ignored)
COUNTER_COLUMNS: dict[str, int] = {
    "sm_clock_mhz": K.M_SM_CLOCK,
    "sm_clock_max_mhz": K.M_SM_CLOCK_MAX,
    "gpu_util_ratio": K.M_UTIL,
    "clock_event_reasons": K.M_REASONS,
    "pcie_link_gen": K.M_PCIE_GEN,
    "pcie_link_gen_max": K.M_PCIE_GEN_MAX,
    "pcie_link_width": K.M_PCIE_WIDTH,
    "pcie_link_width_max": K.M_PCIE_WIDTH_MAX,
    "pcie_replay_total": K.M_PCIE_REPLAY,
    "ecc_corrected_total": K.M_ECC_CORRECTED,
    "ecc_uncorrected_total": K.M_ECC_UNCORRECTED,
    "remapped_rows_correctable": K.M_ROWS_CORRECTABLE,
    "remapped_rows_uncorrectable": K.M_ROWS_UNCORRECTABLE,
    "remap_pending": K.M_REMAP_PENDING,
    "remap_failure": K.M_REMAP_FAILURE,
    "xid_last": K.M_XID,
    "nvlink_crc_errors_total": K.M_NVLINK_CRC,
    "nvlink_replay_errors_total": K.M_NVLINK_REPLAY,
    "nvlink_recovery_errors_total": K.M_NVLINK_RECOVERY,
    "device_lost": K.M_DEVICE_LOST,
}

_IGNORED_COUNTERS = frozenset(
    {
        "mem_clock_mhz",
        "mem_clock_max_mhz",
        "power_watts",
        "power_limit_watts",
        "gpu_temp_celsius",
        "memory_temp_celsius",
        "mem_util_ratio",
    }
)

_EV_KIND = {0: "job_slowdown", 1: "sustained_job_slowdown"}
_EV_CAP = 4096


@dataclass
class EngineConfig:
    """Sensitivity and timing of the verdict engine.

    Parameters
    ----------
    min_slowdown
        Smallest sustained slowdown worth flagging, as a fraction (0.05 = 5 %
        slower than peers or than the device's own baseline).
    healthy_offset
        Largest static deviation from the peers' median that is still healthy.
        Devices differ by 1–2 % each (silicon lottery), so the deviation of
        one from the median of the others reaches about 3 %; the CUSUM is
        designed to stay quiet (``arl0``) at this offset.
    arl0
        In-control average run length: the false-alarm target, in samples per
        device, at a device sitting exactly ``healthy_offset`` from its peers.
        The default 1e9 is at most one false ``degraded`` per 10^9
        device-samples: one per 10,000 GPU-days at one sample per second, or
        about one a month on a 1,024-GPU fleet stepping once a second (the
        old default 1e6 meant ~90 a day there). The decision interval ``h``
        comes from it through :func:`degrade.core.design.upper_h_grid`
        (:func:`degrade.core.design_cusum`); devices closer to their peers
        alarm far less often. The target holds for the noise families
        listed in docs/verdicts.md (heavy tails, AR(1) up to phi = 0.95,
        garbage samples), checked by simulation at 1e4..1e6.
    warmup
        Samples a channel learns its noise scale before it may alarm; a device
        with less than this is ``unknown``.
    persistence
        Consecutive samples above ``h`` (or with a hard signal present) before
        an alarm is raised.
    recovery
        Consecutive quiet samples before an alarm clears (hysteresis).
    winsor
        Standardised (AR(1)-prewhitened) scores are clipped at ``±winsor`` so
        single spikes (GC pauses, heavy-tailed noise) cannot trip the CUSUM
        alone; the noise scale is the matching Huber scale, so clipped scores
        keep the Gaussian variance the threshold design assumes.
    min_scale
        Floor of the noise scale in log units, so a perfectly quiet device
        cannot turn a rounding error into an alarm.
    scale_halflife
        Forgetting of the learned noise: the timing and clock channels'
        location, AR(1) coefficient and innovation scale forget over four
        times this many samples (long memory: their estimation error would
        otherwise raise the false-alarm rate, see docs/verdicts.md), the job
        baselines over this many, the peers' slow-step rate over ten times.
    cap
        The CUSUM statistic is capped at ``cap * h`` so it drains promptly
        when a fault ends.
    job_gap, job_sustained
        Quiet samples that end a job event; slow samples after which a job
        event counts as a lasting level change and the baseline follows it.
    job_merge_gap
        :meth:`VerdictEngine.job_events` merges events of the same job and
        kind (across its peer groups) that start at most this many steps after
        the previous one ended into one event with a ``count`` (checkpoints,
        evaluations and data stalls recur; one line per occurrence is noise).
        0 turns merging off.
    busy_util, idle_util
        Utilisation above which clocks are compared with peers; below which a
        device counts as idle (never degraded on clock or PCIe generation).
    weak_persistence
        Samples SW thermal / SW power cap must persist to count (weak evidence).
    counter_window
        Samples over which rising error counters (PCIe replay, NVLink) are
        averaged; a rise clears after this many samples without one.
    counter_rate_degraded
        Fraction of recent samples with a rise above which corrected ECC errors
        make a device suspect. Rising PCIe replay / NVLink counters make it
        suspect at any rate; the timing channels decide whether it is slower.
    stall_rate
        Smallest healthy rate of intermittent slow steps (innovations above
        both 3/4 of ``intermittent_min`` and 6 innovation sigmas) per device,
        the floor of the Bernoulli CUSUM's p0; p0 is otherwise 1.5 times
        the rate the device's peers show (GC pauses, heavy tails), learned
        as the run goes.
    intermittent_min, intermittent_rate
        An intermittent fault worth flagging: steps at least
        ``intermittent_min`` slower than peers (0.2 = 20 %) on
        ``intermittent_rate`` of steps (0.05 = 5 %, the rate p1 the
        Bernoulli CUSUM is tuned to; faults at 10 % of steps are found
        within about 120 steps). An alarm of that CUSUM is ``degraded`` once
        its episode qualifies: slow steps on average at least
        ``intermittent_min`` above peers, on a share of the episode's steps
        past the midpoint of p0 and p1; until then ``suspect``, and a
        ``history:`` reason if it recovers unqualified.
    outlier_ratio
        A timing more than this factor away from its peers' median *and*
        from the device's own last plausible timing (1e300 s, 1e-6 s, or
        a unit slip where peers take 0.1 s) is a data error: counted (``signals
        ["timing_outliers"]``), skipped like NaN, and warned about.
    xid_hold
        Samples a non-fatal XID (and uncorrectable ECC) keeps the device
        degraded; 0 keeps it until the engine is reset.
    data_timeout_steps, data_timeout_s
        A device whose data stopped this many steps (or seconds) before the
        newest sample of its job is ``unknown`` (unless it failed).
    latch
        Report the worst episode seen rather than the current state (batch
        analysis of history); streaming users keep ``False``.
    timing_metric
        Column compared between peers; ``None`` picks ``compute_time`` when
        present, else ``step_time``, else the first ``*_time`` column.
    """

    min_slowdown: float = 0.05
    healthy_offset: float = 0.03
    arl0: float = 1e9
    warmup: int = 20
    persistence: int = 3
    recovery: int = 20
    winsor: float = 3.0
    min_scale: float = 0.002
    scale_halflife: float = 100.0
    cap: float = 2.0
    job_gap: int = 2
    job_sustained: int = 50
    busy_util: float = 0.5
    idle_util: float = 0.05
    weak_persistence: int = 60
    counter_window: int = 30
    counter_rate_degraded: float = 0.2
    xid_hold: int = 0
    stall_rate: float = 0.005
    data_timeout_steps: int = 50
    data_timeout_s: float = 120.0
    latch: bool = False
    timing_metric: str | None = None
    job_merge_gap: int = 100
    intermittent_min: float = 0.2
    intermittent_rate: float = 0.05
    outlier_ratio: float = 1000.0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> InputError:
            return InputError(
                f"EngineConfig.{name}={getattr(self, name)!r}: expected {expected}"
            )

        if not (0.0 < self.min_slowdown < 10.0):
            raise bad("min_slowdown", "a fraction in (0, 10), e.g. 0.05 for 5 %")
        if not (0.0 <= self.healthy_offset < self.min_slowdown):
            raise bad("healthy_offset", f"0 <= healthy_offset < min_slowdown ({self.min_slowdown})")
        if not (10.0 <= self.arl0 <= 1e12):
            raise bad("arl0", "a number of device-samples in [10, 1e12], e.g. 1e9")
        for name in ("warmup", "persistence", "recovery", "job_gap", "job_sustained",
                     "weak_persistence", "counter_window", "data_timeout_steps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise bad(name, "a positive integer")
        if not isinstance(self.job_merge_gap, (int, np.integer)) or isinstance(self.job_merge_gap, bool) \
                or self.job_merge_gap < 0:
            raise bad("job_merge_gap", "an integer >= 0 (0 = no merging)")
        if not isinstance(self.xid_hold, (int, np.integer)) or self.xid_hold < 0:
            raise bad("xid_hold", "an integer >= 0 (0 = until reset)")
        for name in ("winsor", "min_scale", "scale_halflife", "cap", "data_timeout_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise bad(name, "a positive finite number")
        if self.cap < 1.0:
            raise bad("cap", "a number >= 1")
        if not (0.0 <= self.idle_util <= self.busy_util <= 1.0):
            raise bad("busy_util", "0 <= idle_util <= busy_util <= 1")
        if not (0.0 < self.stall_rate < 0.5):
            raise bad("stall_rate", "a fraction in (0, 0.5)")
        if not (self.stall_rate < self.intermittent_rate < 1.0):
            raise bad("intermittent_rate", f"a fraction in (stall_rate={self.stall_rate}, 1)")
        if not (0.0 < self.intermittent_min < 10.0):
            raise bad("intermittent_min", "a fraction in (0, 10), e.g. 0.2 for 20 %")
        if not (isinstance(self.outlier_ratio, (int, float)) and 2.0 <= self.outlier_ratio < math.inf):
            raise bad("outlier_ratio", "a finite factor >= 2, e.g. 1000")
        if not (0.0 < self.counter_rate_degraded <= 1.0):
            raise bad("counter_rate_degraded", "a fraction in (0, 1]")
        if self.timing_metric is not None and not str(self.timing_metric).endswith("_time"):
            raise bad("timing_metric", "None or a column name ending in '_time'")


# ------------------------------------------------------------------ thresholds
def _big_quantile(alpha: float) -> float:
    """``t`` with P(more than RING/2 of RING i.i.d. N(0, 1) exceed t) = ``alpha`` (exact binomial tail)."""
    n = K.RING
    need = n // 2 + 1

    def tail(p: float) -> float:
        return sum(math.comb(n, j) * p**j * (1.0 - p) ** (n - j) for j in range(need, n + 1))

    lo, hi = 0.0, 0.5
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if tail(mid) < alpha:
            lo = mid
        else:
            hi = mid
    return NormalDist().inv_cdf(1.0 - lo)


# ------------------------------------------------------------------ helpers
def _as_list_of_ids(devices: Sequence[str], what: str) -> list[str]:
    if isinstance(devices, (str, bytes)):
        raise InputError(f"{what}: expected a sequence of device ids, got a single string {devices!r}")
    try:
        ids = [d if isinstance(d, str) else str(d) for d in devices]
    except TypeError as exc:
        raise InputError(f"{what}: expected a sequence of device ids, got {type(devices).__name__}") from exc
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(d for d in ids if d in seen or seen.add(d))
        raise InputError(f"{what}: device {dup!r} is listed twice in one call; expected unique ids")
    return ids


def _per_device(value: Any, n: int, name: str) -> list:
    if value is None or isinstance(value, (str, bytes, int, float)):
        return [value] * n
    try:
        out = list(value)
    except TypeError:
        return [value] * n
    if len(out) != n:
        raise InputError(f"{name}: expected one label per device ({n}), got {len(out)}")
    return out


def _csr(labels: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Group positions by label: (ptr, members, keys) in first-seen order."""
    index: dict[Hashable, int] = {}
    members: list[list[int]] = []
    for j, lab in enumerate(labels):
        g = index.get(lab)
        if g is None:
            g = index[lab] = len(members)
            members.append([])
        members[g].append(j)
    ptr = np.zeros(len(members) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(m) for m in members])
    mem = np.fromiter((j for m in members for j in m), dtype=np.int64, count=int(ptr[-1]))
    return ptr, mem, list(index)


class VerdictEngine:
    """Fuse peer, own-history and hard-signal evidence into per-device verdicts.

    Parameters
    ----------
    config
        An :class:`EngineConfig`; keyword arguments override its fields.

    Notes
    -----
    Spatial evidence: per sample, each device's log-ratio to the
    leave-one-out median of its peers (same job and group) feeds a one-sided
    CUSUM whose reference lies halfway between ``healthy_offset`` and
    ``min_slowdown``, scaled by a robust, autocorrelation-aware noise estimate,
    with ``h`` from the ``arl0`` target. Because it compares levels, a device
    slow from the first step is caught too. Devices without peers get the
    same CUSUM against their own robust baseline. The group's median time
    against its own past gives job events, never device faults.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.verdict import VerdictEngine
    >>> rng = np.random.default_rng(0)
    >>> t = 0.1 * np.exp(0.01 * rng.standard_normal((300, 4)))
    >>> t[100:, 2] *= 1.2                      # gpu2 becomes 20 % slower at step 100
    >>> engine = VerdictEngine()
    >>> engine.run(["gpu0", "gpu1", "gpu2", "gpu3"], {"compute_time": t}, steps=np.arange(300), job="j1")
    >>> v = {x.device: x for x in engine.verdicts()}
    >>> str(v["gpu2"].status), v["gpu2"].onset_step, str(v["gpu0"].status)
    ('degraded', 100, 'healthy')
    """

    def __init__(self, config: EngineConfig | None = None, **overrides: Any) -> None:
        if config is not None and not isinstance(config, EngineConfig):
            raise InputError(f"config: expected an EngineConfig, got {type(config).__name__}")
        cfg = config or EngineConfig()
        if overrides:
            names = {f.name for f in fields(EngineConfig)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise InputError(f"VerdictEngine: unknown option(s) {unknown}; expected fields of EngineConfig")
            cfg = EngineConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        self._reset()

    # ------------------------------------------------------------ state
    def _reset(self) -> None:
        cfg = self.config
        self._params = self._make_params(cfg)
        from degrade.core.design import upper_h_grid

        self._dz, self._hz = upper_h_grid(float(cfg.arl0))
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._job: list[Any] = []
        self._host: list[Any] = []
        self._group: list[Any] = []
        self._metric: list[str | None] = []
        self._cap = 0
        self._ST = np.empty((0, K.C_FIELDS))
        self._SS = np.empty((0, K.C_FIELDS))
        self._SC = np.empty((0, K.C_FIELDS))
        self._SB = np.empty((0, K.C_FIELDS))
        # onset histories of the peer timing, own timing and clock channels
        self._HT = np.empty((0, K.HIST_FIELDS))
        self._HS = np.empty((0, K.HIST_FIELDS))
        self._HC = np.empty((0, K.HIST_FIELDS))
        self._SH = np.empty((0, K.H_KINDS, K.HF_FIELDS))
        self._SD = np.empty((0, K.SD_FIELDS))
        self._gkeys: dict[tuple, int] = {}
        self._gnames: list[tuple] = []
        self._SJ = np.empty((0, K.J_FIELDS))
        self._jcap = 0
        self._events: list[JobEvent] = []
        self._ev = np.full((_EV_CAP, K.EV_FIELDS), np.nan)
        self._lost_reason: dict[str, str] = {}
        self._cache_key: tuple | None = None
        self._cache_val: tuple | None = None
        self.t_ = 0  # rows processed
        from ._cost import CostMeter

        # lost wall time per job from the timings seen (docs/cost.md); not part of state_dict
        self._cost = CostMeter()
        self._cost_cache: tuple | None = None

    @staticmethod
    def _make_params(cfg: EngineConfig) -> np.ndarray:
        p = np.zeros(K.P_PARAMS)
        p[K.P_MU0] = math.log1p(cfg.healthy_offset)
        p[K.P_MU1] = math.log1p(cfg.min_slowdown)
        p[K.P_CLIP] = cfg.winsor
        p[K.P_LAMMIN] = 1.0 - 0.5 ** (1.0 / cfg.scale_halflife)
        p[K.P_WARM] = cfg.warmup
        p[K.P_PERSIST] = cfg.persistence
        p[K.P_RECOVER] = cfg.recovery
        p[K.P_MINSCALE] = cfg.min_scale
        p[K.P_CAP] = cfg.cap
        # a job-wide slow step must be beyond what the group median does by chance
        # once per arl0 samples (at most 1e6: job events are information, not
        # verdicts, and the fleet budget of 1e9 would hide checkpoints)
        p[K.P_JOBZ] = NormalDist().inv_cdf(1.0 - 1.0 / min(cfg.arl0, 1e6))
        p[K.P_JOBGAP] = cfg.job_gap
        p[K.P_JOBSUST] = cfg.job_sustained
        p[K.P_BUSY] = cfg.busy_util
        p[K.P_IDLE] = cfg.idle_util
        p[K.P_CLAM] = 1.0 / cfg.counter_window
        p[K.P_WEAKP] = cfg.weak_persistence
        p[K.P_XIDHOLD] = cfg.xid_hold
        p[K.P_CRECOVER] = cfg.counter_window
        # intermittent slow steps: healthy devices have them at rate p0, a
        # faulty one at p1; the threshold sits at 3/4 of the smallest slow step
        # worth flagging so that such steps exceed it despite the noise
        p0 = cfg.stall_rate
        p1 = cfg.intermittent_rate
        p[K.P_STALL] = math.log1p(0.75 * cfg.intermittent_min)
        p[K.P_STALLQ] = 6.0
        p[K.P_STALL_P0] = p0
        p[K.P_STALL_P1] = p1
        p[K.P_STALLMIN] = math.log1p(cfg.intermittent_min)
        p[K.P_LAMRATE] = 1.0 - 0.5 ** (1.0 / (10.0 * cfg.scale_halflife))
        p[K.P_STALL_H] = math.log(cfg.arl0)
        # large-shift rule: more than RING/2 of the last RING innovations above
        # P_BIGZ sigmas. Windows slide by one sample, so every alarm starts at
        # a window that passes: a per-window probability of 1 / arl0 bounds
        # the rate of alarms by 1 / arl0 (RING / arl0, as if one window in
        # RING were independent, measured 3.6x the target under AR(0.8))
        p[K.P_BIGZ] = _big_quantile(1.0 / cfg.arl0)
        from degrade.core._kernels_common import winsorised_var_factor

        p[K.P_WINK] = winsorised_var_factor(cfg.winsor)
        # the estimate is clipped to phi = 0.97 (sigma_lr = 8.1 marginal
        # sigmas) so that an upper bound for phi = 0.95, the strongest
        # autocorrelation the calibration was checked for, fits below it
        p[K.P_PHIMAX] = 0.97
        p[K.P_LAMPHI] = 1.0 - 0.5 ** (1.0 / (4.0 * cfg.scale_halflife))
        p[K.P_NEFF] = (2.0 - p[K.P_LAMPHI]) / p[K.P_LAMPHI]
        p[K.P_INVNEFF] = 1.0 / p[K.P_NEFF]
        p[K.P_OUTLIER] = math.log(cfg.outlier_ratio)
        return p

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 16)

        def grow(a: np.ndarray, fill_rows) -> np.ndarray:
            out = np.empty((cap, *a.shape[1:]))
            out[: a.shape[0]] = a
            out[a.shape[0]:] = fill_rows
            return out

        self._ST = grow(self._ST, self._fresh_channel())
        self._SS = grow(self._SS, self._fresh_channel())
        self._SC = grow(self._SC, self._fresh_channel())
        self._SB = grow(self._SB, self._fresh_channel())
        self._HT = grow(self._HT, np.nan)
        self._HS = grow(self._HS, np.nan)
        self._HC = grow(self._HC, np.nan)
        self._SH = grow(self._SH, self._fresh_hard())
        self._SD = grow(self._SD, self._fresh_device())
        self._cap = cap

    @staticmethod
    def _fresh_channel() -> np.ndarray:
        row = np.zeros(K.C_FIELDS)
        for f in (K.C_SCALE, K.C_PREV, K.C_CSTEP, K.C_CTIME, K.C_ONSTEP, K.C_ONTIME, K.C_DETSTEP,
                  K.C_DETTIME, K.C_H, K.C_SIG, K.C_ENDSTEP, K.C_ENDTIME, K.C_LASTX, K.C_LASTSTEP,
                  K.C_FSTEP, K.C_FTIME, K.C_XS, K.C_XH, K.C_SIGE, K.C_PHIU, K.C_L_ONSTEP, K.C_L_ONTIME,
                  K.C_L_DETSTEP, K.C_L_DETTIME, K.C_L_ENDSTEP, K.C_L_ENDTIME, K.C_L_XS, K.C_L_XH,
                  K.C_L_SIG, K.C_L_LOC, K.C_BEFORE, K.C_MU0, K.C_LOC0, K.C_BSE, K.C_L_BSE):
            row[f] = np.nan
        return row

    @staticmethod
    def _fresh_hard() -> np.ndarray:
        row = np.zeros((K.H_KINDS, K.HF_FIELDS))
        for f in (K.HF_ONSTEP, K.HF_ONTIME, K.HF_DETSTEP, K.HF_DETTIME, K.HF_VAL, K.HF_CSTEP, K.HF_CTIME):
            row[:, f] = np.nan
        return row

    @staticmethod
    def _fresh_device() -> np.ndarray:
        row = np.zeros(K.SD_FIELDS)
        for f in (K.SD_LASTSTEP, K.SD_LASTTIME, K.SD_LASTSEQ, K.SD_P_REPLAY, K.SD_P_NVLINK, K.SD_P_ECCU,
                  K.SD_P_ECCC, K.SD_P_ROWSU, K.SD_P_XID, K.SD_FAILSTEP, K.SD_FAILTIME, K.SD_TSTEP,
                  K.SD_FIRSTSTEP, K.SD_NPEERS, K.SD_IDLE, K.SD_LASTV):
            row[f] = np.nan
        return row

    def _fresh_job(self) -> np.ndarray:
        row = np.zeros(K.J_FIELDS)
        for f in (K.J_SCALE, K.J_SSTEP, K.J_STIME, K.J_LSTEP, K.J_LTIME, K.J_LASTX):
            row[f] = np.nan
        return row

    def _device_index(self, ids: list[str]) -> np.ndarray:
        idx = np.empty(len(ids), dtype=np.int64)
        new = [d for d in ids if d not in self._ids]
        if new:
            self._grow(len(self._names) + len(new))
            for d in new:
                self._ids[d] = len(self._names)
                self._names.append(d)
                self._job.append(None)
                self._host.append(None)
                self._group.append(None)
                self._metric.append(None)
        for j, d in enumerate(ids):
            idx[j] = self._ids[d]
        return idx

    def _job_index(self, keys: list[tuple]) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.int64)
        for a, key in enumerate(keys):
            g = self._gkeys.get(key)
            if g is None:
                g = self._gkeys[key] = len(self._gnames)
                self._gnames.append(key)
                if g >= self._jcap:
                    cap = max(16, 2 * self._jcap, g + 1)
                    sj = np.empty((cap, K.J_FIELDS))
                    sj[: self._SJ.shape[0]] = self._SJ
                    sj[self._SJ.shape[0]:] = self._fresh_job()
                    self._SJ = sj
                    self._jcap = cap
            out[a] = g
        return out

    # ------------------------------------------------------------ input
    def _coerce_values(self, values: Mapping[str, Any], shape: tuple[int, ...], what: str):
        if not isinstance(values, Mapping) or not values:
            raise InputError(f"{what}: values must be a non-empty dict from column name to array")
        timing: dict[str, np.ndarray] = {}
        counters: dict[str, np.ndarray] = {}
        for key, arr in values.items():
            if not isinstance(key, str):
                raise InputError(f"{what}: column names must be strings, got {key!r}")
            if not (key.endswith("_time") or key in COUNTER_COLUMNS or key in _IGNORED_COUNTERS):
                raise InputError(
                    f"{what}: unknown column {key!r}; expected 'compute_time', 'step_time', another "
                    "'*_time' column or a counter of docs/schema.md (e.g. 'sm_clock_mhz')"
                )
            try:
                a = np.asarray(arr, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{what}: column {key!r} must be numeric ({exc})") from exc
            if a.shape != shape:
                raise InputError(f"{what}: column {key!r} has shape {a.shape}; expected {shape}")
            if key.endswith("_time"):
                timing[key] = a
            elif key in COUNTER_COLUMNS:
                counters[key] = a
        return timing, counters

    def _pick_metric(self, timing: dict[str, np.ndarray]) -> str | None:
        if not timing:
            return None
        m = self.config.timing_metric
        if m is not None:
            return m if m in timing else None
        for name in ("compute_time", "step_time"):
            if name in timing:
                return name
        return sorted(timing)[0]

    @staticmethod
    def _axis(x: Any, T: int, N: int, name: str) -> np.ndarray:
        if x is None:
            return np.full((T, 1), np.nan)
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 0:
            a = np.full((T, 1), float(a))
        elif a.shape == (T,):
            a = a.reshape(T, 1)
        elif a.shape == (T, N):
            pass
        elif T == 1 and a.shape == (N,):
            a = a.reshape(1, N)
        else:
            raise InputError(f"{name}: shape {a.shape}; expected ({T},) or ({T}, {N})")
        return np.ascontiguousarray(a)

    # ------------------------------------------------------------ public API
    def update(
        self,
        devices: Sequence[str],
        values: Mapping[str, Any],
        *,
        step: int | None = None,
        timestamp: float | None = None,
        groups: Sequence[Hashable] | None = None,
        job: Any = None,
        hosts: Sequence[Any] | Any = None,
        pipelines: Sequence[Any] | None = None,
        microbatches: Any = None,
    ) -> None:
        """Feed one sample per listed device (agent: one poll; loop: one step).

        Parameters
        ----------
        devices
            N device ids.
        values
            Column name -> array of shape (N,); NaN = missing.
        step, timestamp
            Scalar (or (N,) per device) step index and epoch seconds.
        groups
            Peer-group label per device; only devices of the same job and group
            are compared. ``None`` puts them all in one group.
        job, hosts
            Job label (scalar or per device) and host per device.
        pipelines, microbatches
            For pipeline-parallel timings: the pipeline (data-parallel replica)
            each device's stage belongs to, and the microbatches per step
            (scalar or per device). Only the lost-time estimate uses them
            (:meth:`job_costs`, docs/cost.md).
        """
        ids = _as_list_of_ids(devices, "update(devices)")
        n = len(ids)
        timing, counters = self._coerce_values(values, (n,), "update")
        timing = {k: v.reshape(1, n) for k, v in timing.items()}
        counters = {k: v.reshape(1, n) for k, v in counters.items()}
        self._process(ids, timing, counters, 1, step, timestamp, groups, job, hosts, "update",
                      pipelines=pipelines, microbatches=microbatches)

    def run(
        self,
        devices: Sequence[str],
        values: Mapping[str, Any],
        *,
        steps: Any = None,
        timestamps: Any = None,
        groups: Sequence[Hashable] | None = None,
        job: Any = None,
        hosts: Sequence[Any] | Any = None,
        pipelines: Sequence[Any] | None = None,
        microbatches: Any = None,
    ) -> None:
        """Feed a block of T samples for N devices; equals T calls of :meth:`update`.

        ``values`` maps column names to (T, N) arrays; ``steps`` and
        ``timestamps`` are (T,) or (T, N); ``pipelines`` and ``microbatches``
        as for :meth:`update`.
        """
        ids = _as_list_of_ids(devices, "run(devices)")
        n = len(ids)
        if not isinstance(values, Mapping) or not values:
            raise InputError("run: values must be a non-empty dict from column name to (T, N) array")
        first = np.asarray(next(iter(values.values())))
        if first.ndim != 2 or first.shape[1] != n:
            raise InputError(
                f"run: column {next(iter(values))!r} has shape {first.shape}; expected (T, {n})"
            )
        T = first.shape[0]
        timing, counters = self._coerce_values(values, (T, n), "run")
        if T == 0:
            return
        self._process(ids, timing, counters, T, steps, timestamps, groups, job, hosts, "run",
                      pipelines=pipelines, microbatches=microbatches)

    def _process(self, ids, timing, counters, T, steps, times, groups, job, hosts, what,
                 pipelines=None, microbatches=None) -> None:
        n = len(ids)
        if n == 0:
            return
        if pipelines is not None:
            if isinstance(pipelines, (str, bytes)) or len(list(pipelines)) != n:
                raise InputError(f"{what}(pipelines): expected one pipeline label per device ({n})")
            pipelines = list(pipelines)
        jobs = _per_device(job, n, f"{what}(job)")
        hostl = _per_device(hosts, n, f"{what}(hosts)")
        if groups is None:
            glist = [None] * n
        else:
            if isinstance(groups, (str, bytes)):
                raise InputError(f"{what}(groups): expected one label per device, got a string")
            glist = list(groups)
            if len(glist) != n:
                raise InputError(f"{what}(groups): expected one label per device ({n}), got {len(glist)}")
        labels = list(zip(jobs, glist))
        key = (tuple(ids), tuple(labels))
        if key == self._cache_key:
            dev, tg_ptr, tg_mem, tg_state = self._cache_val
        else:
            try:
                dev = self._device_index(ids)
                tg_ptr, tg_mem, gkeys = _csr(labels)
            except TypeError as exc:
                raise InputError(f"{what}(groups): labels must be hashable ({exc})") from exc
            tg_state = self._job_index(gkeys)
            self._cache_key, self._cache_val = key, (dev, tg_ptr, tg_mem, tg_state)
        st = self._axis(steps, T, n, f"{what}(step)")
        tm = self._axis(times, T, n, f"{what}(timestamp)")
        metric = self._pick_metric(timing)
        empty = np.empty((T, 0))
        if metric is not None:
            XT = np.ascontiguousarray(timing[metric])
            XJ = np.ascontiguousarray(timing["step_time"]) if ("step_time" in timing and metric != "step_time") else empty
        else:
            XT = XJ = empty
        cmap = np.full(K.M_METRICS, -1, dtype=np.int64)
        if counters:
            C = np.empty((len(counters), T, n))
            for p, (name, arr) in enumerate(counters.items()):
                C[p] = arr
                cmap[COUNTER_COLUMNS[name]] = p
        else:
            C = np.empty((0, T, n))
        from ._kernels import _engine_block

        n_out = float(self._SD[dev, K.SD_NOUT].sum()) if metric is not None else 0.0
        t = 0
        while t < T:
            t, n_ev = _engine_block(
                t, float(self.t_), XT, XJ, C, cmap, st, tm, dev, tg_ptr, tg_mem, tg_state,
                tg_ptr, tg_mem, self._params, self._dz, self._hz,
                self._ST, self._SS, self._SC, self._SB, self._HT, self._HS, self._HC,
                self._SH, self._SD, self._SJ, self._ev,
            )
            if n_ev:
                self._drain_events(n_ev)
        self.t_ += T
        if metric is not None:
            new_out = float(self._SD[dev, K.SD_NOUT].sum()) - n_out
            if new_out > 0:
                worst = int(dev[int(np.argmax(self._SD[dev, K.SD_NOUT]))])
                warnings.warn(
                    f"{int(new_out)} implausible {metric} sample(s) (more than {self.config.outlier_ratio:g}x "
                    f"from the peers' median and the device's own range, e.g. on {self._names[worst]!r}) "
                    "were skipped as data errors; check the exporter or the timing code",
                    DataWarning,
                    stacklevel=3,
                )
        if metric is not None:
            self._meter(ids, timing, metric, st, jobs, pipelines, microbatches, glist)
        for j, i in enumerate(dev):
            if jobs[j] is not None:
                self._job[i] = jobs[j]
            if hostl[j] is not None:
                self._host[i] = hostl[j]
            if metric is not None:
                self._group[i] = glist[j]
                self._metric[i] = metric

    def _meter(self, ids, timing, metric, st, jobs, pipelines, microbatches, groups) -> None:
        x = timing["compute_time"] if "compute_time" in timing else timing[metric]
        full = self._cost.add(ids, x, timing.get("step_time"), st, jobs, pipelines, microbatches, groups)
        if full:
            from ._fuse import fuse

            self._cost.fold(self._cost_evidence(fuse(self.snapshot())))

    def _drain_events(self, n_ev: int) -> None:
        for row in self._ev[:n_ev]:
            self._events.append(self._event_from(row, closed=True))
        self._ev[:n_ev] = np.nan

    def _event_from(self, row: np.ndarray, closed: bool) -> JobEvent:
        job, group = self._gnames[int(row[K.EV_GROUP])]
        kind = _EV_KIND[int(row[K.EV_KIND])]
        mean = math.expm1(row[K.EV_MEAN])
        peak = math.expm1(row[K.EV_PEAK])
        ndev = int(row[K.EV_NDEV])
        where = _place(job, group)
        if kind == "sustained_job_slowdown":
            why = "lasting level change for all peers (schedule change or job-wide slowdown); baseline re-learnt"
        else:
            why = "transient slowdown of all peers (checkpoint, evaluation or data stall)"
        reason = f"{where}: median step {mean * 100:.1f} % slower (peak {peak * 100:.1f} %) on {ndev} device(s); {why}"
        if not closed:
            reason += "; ongoing"
        return JobEvent(
            job=job,
            kind=kind,
            start_step=_int_or_none(row[K.EV_SSTEP]),
            end_step=_int_or_none(row[K.EV_ESTEP]),
            start_time=_float_or_none(row[K.EV_STIME]),
            end_time=_float_or_none(row[K.EV_ETIME]),
            slowdown=mean,
            devices=ndev,
            reason=reason,
        )

    def job_events(self) -> list[JobEvent]:
        """Job-wide slowdowns so far: recurring ones as one event with their period and cost,
        bursts merged (``EngineConfig.job_merge_gap``), a straggler's echo attributed to it
        (``cause_device``); see ``degrade/verdict/_events.py``."""
        from ._events import _merge_events

        return _merge_events(self._raw_job_events(), self.config.job_merge_gap, self.verdicts())

    def _raw_job_events(self) -> list[JobEvent]:
        """Every job event as detected (closed ones, then the ones still open)."""
        out = list(self._events)
        SJ = self._SJ
        for g in range(len(self._gnames)):
            if SJ[g, K.J_OPEN] != 0.0:
                row = np.full(K.EV_FIELDS, np.nan)
                row[K.EV_GROUP] = g
                row[K.EV_KIND] = 0
                row[K.EV_SSTEP] = SJ[g, K.J_SSTEP]
                row[K.EV_ESTEP] = SJ[g, K.J_LSTEP]
                row[K.EV_STIME] = SJ[g, K.J_STIME]
                row[K.EV_ETIME] = SJ[g, K.J_LTIME]
                row[K.EV_MEAN] = SJ[g, K.J_SUM] / max(SJ[g, K.J_CNT], 1.0)
                row[K.EV_PEAK] = SJ[g, K.J_PEAK]
                row[K.EV_NDEV] = SJ[g, K.J_NDEV]
                out.append(self._event_from(row, closed=False))
        return out

    def mark_lost(self, device: str, *, step: int | None = None, timestamp: float | None = None,
                  reason: str = "") -> None:
        """Mark a device failed (XID 79, GPU lost, gone from the bus)."""
        if not isinstance(device, str):
            raise InputError(f"mark_lost(device): expected a device id string, got {device!r}")
        i = self._device_index([device])[0]
        if self._SD[i, K.SD_FAILED] == 0.0:
            self._SD[i, K.SD_FAILED] = -1.0
            self._SD[i, K.SD_FAILSTEP] = np.nan if step is None else float(step)
            self._SD[i, K.SD_FAILTIME] = np.nan if timestamp is None else float(timestamp)
            self._lost_reason[device] = reason

    def forget(self, devices: Sequence[str]) -> None:
        """Drop devices that left for good (replaced GPUs); the rest keep their state."""
        ids = _as_list_of_ids(devices, "forget(devices)")
        gone = {self._ids[d] for d in ids if d in self._ids}
        if not gone:
            return
        keep = [i for i in range(len(self._names)) if i not in gone]
        self._ST = self._ST[keep].copy()
        self._SS = self._SS[keep].copy()
        self._SC = self._SC[keep].copy()
        self._SB = self._SB[keep].copy()
        self._HT = self._HT[keep].copy()
        self._HS = self._HS[keep].copy()
        self._HC = self._HC[keep].copy()
        self._SH = self._SH[keep].copy()
        self._SD = self._SD[keep].copy()
        self._cap = len(keep)
        for name in ("_names", "_job", "_host", "_group", "_metric"):
            lst = getattr(self, name)
            setattr(self, name, [lst[i] for i in keep])
        self._ids = {d: a for a, d in enumerate(self._names)}
        for d in ids:
            self._lost_reason.pop(d, None)
        self._cache_key = self._cache_val = None

    # ------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: config, device ids, and their state arrays."""
        m = len(self._names)
        g = len(self._gnames)
        return {
            "version": 1,
            "config": asdict(self.config),
            "t": self.t_,
            "devices": list(self._names),
            "jobs": list(self._job),
            "hosts": list(self._host),
            "groups": list(self._group),
            "metrics": list(self._metric),
            "timing_peer": self._ST[:m].copy(),
            "timing_own": self._SS[:m].copy(),
            "clock_peer": self._SC[:m].copy(),
            "stall_peer": self._SB[:m].copy(),
            "history_peer": self._HT[:m].copy(),
            "history_own": self._HS[:m].copy(),
            "history_clock": self._HC[:m].copy(),
            "hard": self._SH[:m].copy(),
            "device": self._SD[:m].copy(),
            "job_groups": list(self._gnames),
            "job_state": self._SJ[:g].copy(),
            "events": [e.to_dict() for e in self._events],
            "lost_reasons": dict(self._lost_reason),
            # the lost-time records (docs/cost.md), only once timings were seen
            **({"cost": self._cost.state_dict()} if self._cost._jobs else {}),
        }

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (devices not in it start fresh when they appear)."""
        try:
            if d["version"] != 1:
                raise InputError(f"load_state_dict: state version {d['version']!r}; expected 1")
            cfg = EngineConfig(**d["config"])
            devices = list(d["devices"])
            arrays = {k: np.asarray(d[k], dtype=np.float64) for k in
                      ("timing_peer", "timing_own", "clock_peer", "hard", "device", "job_state")}
            m = len(devices)
            # states saved before the stall channel existed start it fresh
            arrays["stall_peer"] = (np.asarray(d["stall_peer"], dtype=np.float64) if "stall_peer" in d
                                    else np.tile(self._fresh_channel(), (m, 1)))
            fresh = self._fresh_channel()
            for k in ("timing_peer", "timing_own", "clock_peer", "stall_peer"):
                a = arrays[k]
                if a.ndim == 2 and a.shape[1] in (K.C_FIELDS_V1, K.C_FIELDS_V2) and a.shape[0] == m:
                    # saved before the crossing (v1) or the prewhitening and
                    # latch fields (v2) existed: they start unknown
                    arrays[k] = np.concatenate([a, np.tile(fresh[a.shape[1]:], (m, 1))], axis=1)
            a = arrays["device"]
            if a.ndim == 2 and a.shape == (m, K.SD_FIELDS_V1):
                arrays["device"] = np.concatenate([a, np.tile(self._fresh_device()[K.SD_FIELDS_V1:], (m, 1))],
                                                  axis=1)
            expect = {"timing_peer": (m, K.C_FIELDS), "timing_own": (m, K.C_FIELDS),
                      "clock_peer": (m, K.C_FIELDS), "stall_peer": (m, K.C_FIELDS), "hard": (m, K.H_KINDS, K.HF_FIELDS),
                      "device": (m, K.SD_FIELDS), "job_state": (len(d["job_groups"]), K.J_FIELDS)}
            for k, shp in expect.items():
                if arrays[k].shape != shp:
                    raise InputError(f"load_state_dict: {k!r} has shape {arrays[k].shape}; expected {shp}")
        except KeyError as exc:
            raise InputError(f"load_state_dict: missing key {exc}; expected the output of state_dict()") from exc
        self.config = cfg
        self._reset()
        self._grow(m)
        for a, dev in enumerate(devices):
            self._ids[dev] = a
        self._names = devices
        self._job = list(d["jobs"])
        self._host = list(d["hosts"])
        self._group = list(d["groups"])
        self._metric = list(d["metrics"])
        self._ST[:m] = arrays["timing_peer"]
        self._SS[:m] = arrays["timing_own"]
        self._SC[:m] = arrays["clock_peer"]
        self._SB[:m] = arrays["stall_peer"]
        for k, h in (("history_peer", self._HT), ("history_own", self._HS), ("history_clock", self._HC)):
            # states saved before the onset histories existed start them empty
            if k in d:
                a = np.asarray(d[k], dtype=np.float64)
                if a.shape != (m, K.HIST_FIELDS):
                    raise InputError(f"load_state_dict: {k!r} has shape {a.shape}; expected {(m, K.HIST_FIELDS)}")
                h[:m] = a
        self._SH[:m] = arrays["hard"]
        self._SD[:m] = arrays["device"]
        gn = [tuple(k) for k in d["job_groups"]]
        self._job_index(gn)
        self._SJ[: len(gn)] = arrays["job_state"]
        self._events = [JobEvent(**e) for e in d["events"]]
        self._lost_reason = dict(d.get("lost_reasons", {}))
        if d.get("cost") is not None:
            self._cost.load_state_dict(d["cost"])
        self.t_ = int(d["t"])

    def __getstate__(self) -> dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.config = EngineConfig(**d["config"])
        self.load_state_dict(d)

    # ------------------------------------------------------------ verdicts
    def snapshot(self):
        """The state :func:`degrade.verdict._fuse.fuse` turns into verdicts (an ``EngineSnapshot`` of copies)."""
        from ._fuse import EngineSnapshot

        m = len(self._names)
        return EngineSnapshot(
            config=self.config,
            params=self._params.copy(),
            devices=list(self._names),
            jobs=list(self._job),
            hosts=list(self._host),
            groups=list(self._group),
            metrics=list(self._metric),
            timing_peer=self._ST[:m].copy(),
            timing_own=self._SS[:m].copy(),
            clock_peer=self._SC[:m].copy(),
            stall_peer=self._SB[:m].copy(),
            hard=self._SH[:m].copy(),
            device=self._SD[:m].copy(),
            lost_reasons=dict(self._lost_reason),
            history_peer=self._HT[:m, : K.HIST].copy(),
        )

    def verdicts(self) -> list[Verdict]:
        """One verdict per device seen so far, in the order devices first appeared.

        Each flagged device with timings carries ``lost_seconds``: the wall
        time its job lost to it (docs/cost.md).
        """
        from ._fuse import fuse

        out = fuse(self.snapshot())
        if self._cost._jobs:
            _, per = self._costs_for(self._cost_evidence(out))
            for v in out:
                key = (v.job, v.device)
                if key in per:
                    v.lost_seconds = per[key]
        return out

    def job_costs(self, verdicts: Sequence[Verdict] | None = None) -> list:
        """What each job's flagged devices cost it: one :class:`~degrade.verdict.JobCost` per job with timings.

        ``verdicts`` defaults to :meth:`verdicts`; pass them when already at hand.
        """
        from ._fuse import fuse

        vs = fuse(self.snapshot()) if verdicts is None else verdicts
        return self._costs_for(self._cost_evidence(vs))[0]

    def _cost_evidence(self, verdicts) -> dict:
        """The charged devices' (slowdown, onset, stall factor): a device whose slowdown is its
        intermittent-stall evidence is charged on its stalled steps, by their factor."""
        from ._cost import evidence_from

        ev = evidence_from(verdicts)
        for d, (s, onset) in list(ev.items()):
            i = self._ids.get(d)
            if i is None or s is None:
                continue
            r = self._SB[i]
            n_slow, n = r[K.C_SQ], max(r[K.C_AN], 1.0)
            if n_slow > 0 and math.isclose(s, math.expm1(r[K.C_ASUM] / n), rel_tol=1e-9):
                ev[d] = (s, onset, 1.0 + math.expm1(r[K.C_XP] / n_slow))
        return ev

    def _costs_for(self, evidence):
        # verdicts() then job_costs(verdicts) on unchanged data compute the costs once
        key = (self.t_, self._cost._rows, tuple(sorted(evidence.items())))
        if self._cost_cache is None or self._cost_cache[0] != key:
            self._cost_cache = (key, self._cost.costs(evidence))
        return self._cost_cache[1]

    @property
    def devices_(self) -> list[str]:
        return list(self._names)


def _int_or_none(x: float) -> int | None:
    return None if not math.isfinite(x) else int(x)


def _float_or_none(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)

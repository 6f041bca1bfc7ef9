"""Noise families for calibration: what healthy timings look like on real fleets.

Every family is a term of the log of a device's compute time; they compose::

    log compute[t, d] = log(base) + log(offset[d])            static silicon offset
                      + sd[d] * z[t, d]                         own noise (family, AR(1), heteroscedastic)
                      + moe * g[t, rank(t, d)]                  MoE-like correlated per-rank imbalance
                      + log(period[t]) + log(warm[t])           all-rank events, restart warm-ups
                      + log(1 + spike[t, d])                    GC pauses (Pareto)
                      + log(fault[t, d])                        injected faults (power tests)

``z`` is a stationary AR(1) with lag-1 coefficient ``phi`` and unit marginal
variance whose innovations are Gaussian or Student-t(``nu``) scaled to unit
variance (so ``sd`` is the marginal sd of the log time in every family; t
needs ``nu > 2``). ``rank(t, d)`` is the rank device ``d`` holds at step ``t``;
an elastic restart draws a new permutation, so per-rank structure moves to
other devices while per-device structure (offset, sd) stays. Garbage
(1e300, 1e-6, 0, NaN: telemetry errors, not timings) replaces a fraction of
the reported values after everything else.

Used by scenarios (the ``[[job]]`` keys of docs/simulator.md) and directly:

>>> from degrade.simulate import NoiseSpec, compute_times
>>> x = compute_times(1000, 8, NoiseSpec(family="t", nu=3.0, sd=0.02, phi=0.8), seed=1)
>>> x.shape, bool((x > 0).all())
((1000, 8), True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "NoiseSpec",
    "Fault",
    "Times",
    "FAMILIES",
    "GARBAGE",
    "innovations",
    "ar1",
    "log_noise",
    "moe_imbalance",
    "rank_permutations",
    "apply_garbage",
    "fault_factor",
    "compute_times",
    "simulate_times",
]

FAMILIES = ("gaussian", "t")
#: default garbage values: overflow, a timer that read ~0, a zero, a missing value
GARBAGE = (1e300, 1e-6, 0.0, math.nan)
FAULT_KINDS = ("step", "drift", "intermittent")


@dataclass(frozen=True)
class NoiseSpec:
    """A healthy noise family (every field is optional; the default is 2 % Gaussian iid).

    Parameters
    ----------
    family, nu
        Innovations: ``"gaussian"`` or ``"t"`` (Student-t with ``nu`` > 2
        degrees of freedom, scaled to unit variance).
    sd
        Marginal sd of the log compute time (0.02 = 2 % noise).
    phi
        AR(1) lag-1 coefficient of the own noise, 0 <= phi < 1.
    hetero
        Per-device sd: ``sd * m[d]`` with ``log m`` uniform in
        ``±log(1 + hetero)`` (0 = every device equally noisy).
    offset
        Static per-device offset, uniform in ``±offset``.
    moe, moe_phi, moe_group, moe_rho
        MoE-like imbalance: per-rank AR(``moe_phi``) load share, a fraction
        ``moe_rho`` of its variance shared by blocks of ``moe_group`` ranks
        (the experts of one node), centred across ranks every step (tokens
        routed to one rank are not routed to another); ``moe`` is its sd in
        log units before centring.
    spike_prob, spike_scale, spike_alpha
        GC pauses: with probability ``spike_prob`` a step takes
        ``1 + (Pareto(spike_alpha) + 1) * spike_scale`` times longer.
    period, period_factor, period_seconds
        Every ``period`` steps (checkpoint, evaluation) every rank's compute is
        ``period_factor`` times longer and the synchronous wall step gets
        ``period_seconds`` more (each with 10 % lognormal jitter).
    restarts, restart_factor
        Steps of elastic restarts: ranks are reshuffled over devices and every
        rank runs a warm-up (``restart_factor`` times slower at the restart
        step, decaying over ~10 steps).
    garbage_rate, garbage
        Fraction of reported values replaced by one of ``garbage`` (drawn
        uniformly; default 1e300, 1e-6, 0, NaN).
    """

    family: str = "gaussian"
    nu: float = 3.0
    sd: float = 0.02
    phi: float = 0.0
    hetero: float = 0.0
    offset: float = 0.0
    moe: float = 0.0
    moe_phi: float = 0.8
    moe_group: int = 8
    moe_rho: float = 0.5
    spike_prob: float = 0.0
    spike_scale: float = 0.5
    spike_alpha: float = 1.5
    period: int = 0
    period_factor: float = 1.0
    period_seconds: float = 0.0
    restarts: tuple[int, ...] = ()
    restart_factor: float = 3.0
    garbage_rate: float = 0.0
    garbage: tuple[float, ...] = GARBAGE

    def __post_init__(self) -> None:
        object.__setattr__(self, "restarts", tuple(int(s) for s in self.restarts))
        object.__setattr__(self, "garbage", tuple(float(g) for g in self.garbage))
        _check_family(self.family, self.nu, "NoiseSpec")
        checks = (
            ("sd", self.sd >= 0, ">= 0"),
            ("phi", 0 <= self.phi < 1, "in [0, 1)"),
            ("hetero", self.hetero >= 0, ">= 0"),
            ("offset", 0 <= self.offset < 1, "in [0, 1)"),
            ("moe", self.moe >= 0, ">= 0"),
            ("moe_phi", 0 <= self.moe_phi < 1, "in [0, 1)"),
            ("moe_group", self.moe_group >= 1, ">= 1"),
            ("moe_rho", 0 <= self.moe_rho <= 1, "in [0, 1]"),
            ("spike_prob", 0 <= self.spike_prob < 1, "in [0, 1)"),
            ("spike_scale", self.spike_scale >= 0, ">= 0"),
            ("spike_alpha", self.spike_alpha > 0, "> 0"),
            ("period", self.period >= 0, ">= 0 (0 = none)"),
            ("period_factor", self.period_factor > 0, "> 0"),
            ("period_seconds", self.period_seconds >= 0, ">= 0"),
            ("restart_factor", self.restart_factor >= 1, ">= 1"),
            ("garbage_rate", 0 <= self.garbage_rate < 1, "in [0, 1)"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"NoiseSpec.{name}={getattr(self, name)!r}: expected {expected}")
        if self.garbage_rate > 0 and not self.garbage:
            raise InputError(
                "NoiseSpec.garbage: empty; give at least one value when garbage_rate > 0"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "noise") -> NoiseSpec:
        """Build from a dict (a TOML table), naming an unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}"
            )
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"{where}: {exc}") from None

    def replace(self, **changes: Any) -> NoiseSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Fault:
    """A slowdown injected on one device (detection power).

    ``kind``: ``"step"`` (compute x (1 + magnitude) from ``onset``; onset 0 =
    slow from the first step), ``"drift"`` (linear ramp to 1 + magnitude over
    ``ramp_steps``), ``"intermittent"`` (1 + magnitude on a random fraction
    ``prob`` of the steps from ``onset``). ``end`` (exclusive) ends it.
    """

    device: int
    kind: str = "step"
    onset: int = 0
    magnitude: float = 0.1
    ramp_steps: int = 500
    prob: float = 0.15
    end: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise InputError(f"Fault.kind={self.kind!r}: expected one of {FAULT_KINDS}")
        if self.device < 0 or self.onset < 0 or self.magnitude < 0:
            raise InputError(f"Fault({self.kind}): device, onset and magnitude must be >= 0")
        if self.ramp_steps < 1 or not 0 < self.prob <= 1:
            raise InputError(f"Fault({self.kind}): ramp_steps >= 1 and 0 < prob <= 1")


@dataclass
class Times:
    """Output of :func:`simulate_times`.

    ``compute`` and ``step`` are (T, N) seconds (``step`` is the synchronous
    wall step: the slowest rank plus communication plus ``period_seconds``);
    ``rank[t, d]`` is the rank device ``d`` holds at step ``t``; ``truth``
    has one dict per fault; ``garbage`` marks cells replaced by garbage
    (``compute`` carries the garbage, ``step`` does not: a bad reading is not
    a slow step).
    """

    compute: np.ndarray
    step: np.ndarray
    rank: np.ndarray
    garbage: np.ndarray
    truth: list[dict] = field(default_factory=list)


def _check_family(family: str, nu: float, where: str) -> None:
    if family not in FAMILIES:
        raise InputError(f"{where}: noise family {family!r}; expected one of {FAMILIES}")
    if family == "t" and not (nu > 2 and math.isfinite(nu)):
        raise InputError(f"{where}: Student-t needs nu > 2 for a finite variance, got {nu!r}")


def innovations(
    rng: np.random.Generator, shape, family: str = "gaussian", nu: float = 3.0
) -> np.ndarray:
    """Unit-variance iid draws of ``family`` (Student-t scaled by sqrt((nu-2)/nu)).

    >>> z = innovations(np.random.default_rng(0), (200_000,), "t", 3.0)
    >>> abs(float(np.median(np.abs(z))) - 0.765 * (1 / 3) ** 0.5) < 0.01
    True
    """
    _check_family(family, nu, "innovations")
    if family == "gaussian":
        return rng.standard_normal(shape)
    return rng.standard_t(nu, shape) * math.sqrt((nu - 2.0) / nu)


def ar1(innov: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) along axis 0 with the innovations' variance as marginal variance.

    ``x[0] = e[0]``, ``x[t] = phi x[t-1] + sqrt(1 - phi^2) e[t]``.
    """
    if not 0 <= phi < 1:
        raise InputError(f"ar1: phi={phi!r}; expected 0 <= phi < 1")
    e = np.asarray(innov, dtype=float)
    if phi == 0 or e.shape[0] == 0:
        return e.copy()
    c = math.sqrt(1.0 - phi * phi)
    out = np.empty_like(e)
    out[0] = e[0]
    prev = out[0]
    for t in range(1, e.shape[0]):
        prev = phi * prev + c * e[t]
        out[t] = prev
    return out


def log_noise(rng: np.random.Generator, shape, spec: NoiseSpec) -> np.ndarray:
    """The own-noise term ``sd[d] * z[t, d]`` of the log compute time."""
    T, N = shape
    z = ar1(innovations(rng, (T, N), spec.family, spec.nu), spec.phi)
    sd = np.full(N, spec.sd)
    if spec.hetero > 0:
        sd = sd * np.exp(rng.uniform(-1.0, 1.0, N) * math.log1p(spec.hetero))
    return z * sd[None, :]


def moe_imbalance(rng: np.random.Generator, shape, spec: NoiseSpec) -> np.ndarray:
    """MoE-like imbalance per rank (T, R), centred across ranks at every step."""
    T, R = shape
    if spec.moe == 0 or R == 0:
        return np.zeros(shape)
    nblk = -(-R // spec.moe_group)
    own = ar1(rng.standard_normal((T, R)), spec.moe_phi)
    blk = ar1(rng.standard_normal((T, nblk)), spec.moe_phi)[:, np.arange(R) // spec.moe_group]
    g = math.sqrt(1.0 - spec.moe_rho) * own + math.sqrt(spec.moe_rho) * blk
    return spec.moe * (g - g.mean(axis=1, keepdims=True))


def rank_permutations(rng: np.random.Generator, T: int, N: int, restarts) -> np.ndarray:
    """``rank[t, d]``: identity until the first restart, a new permutation after each."""
    rank = np.empty((T, N), dtype=np.int32)
    perm = np.arange(N)
    bounds = [0, *sorted(int(s) for s in restarts if 0 < int(s) < T), T]
    for a, b in zip(bounds, bounds[1:]):
        rank[a:b] = perm
        perm = rng.permutation(N)
    return rank


def _periodic(rng: np.random.Generator, T: int, period: int, size: float, mult: bool) -> np.ndarray:
    """Per-step factor (mult) or added seconds of an event every ``period`` steps."""
    out = np.ones(T) if mult else np.zeros(T)
    if period <= 0 or T <= period:
        return out
    idx = np.arange(period, T, period)
    jit = np.exp(rng.normal(0.0, 0.1, idx.size))
    out[idx] = (1.0 + (size - 1.0) * jit) if mult else size * jit
    return out


def _warmups(T: int, restarts, factor: float) -> np.ndarray:
    warm = np.ones(T)
    if factor <= 1:
        return warm
    for s0 in restarts:
        if 0 < s0 < T:
            k = np.arange(min(40, T - s0))
            warm[s0 + k] *= 1.0 + (factor - 1.0) * np.exp(-k / 4.0)
    return warm


def apply_garbage(
    rng: np.random.Generator, x: np.ndarray, rate: float, values=GARBAGE
) -> np.ndarray:
    """Replace a fraction ``rate`` of ``x`` (in place) by ``values``; returns the mask."""
    mask = rng.random(x.shape) < rate
    if mask.any():
        vals = np.asarray(values, dtype=float)
        x[mask] = vals[rng.integers(0, vals.size, int(mask.sum()))]
    return mask


def fault_factor(fault: Fault, T: int, rng: np.random.Generator) -> np.ndarray:
    """Per-step compute factor (>= 1) of ``fault`` over T steps."""
    rel = np.arange(T) - fault.onset
    on = rel >= 0
    if fault.end is not None:
        on &= np.arange(T) < fault.end
    f = np.ones(T)
    if fault.kind == "step":
        f[on] = 1.0 + fault.magnitude
    elif fault.kind == "drift":
        f[on] = 1.0 + fault.magnitude * np.minimum(1.0, (rel[on] + 1) / fault.ramp_steps)
    else:  # intermittent
        hit = on & (rng.random(T) < fault.prob)
        f[hit] = 1.0 + fault.magnitude
    return f


def simulate_times(
    T: int,
    N: int,
    spec: NoiseSpec | dict | None = None,
    *,
    seed: int = 0,
    base: float = 0.5,
    comm_time: float = 0.05,
    faults=(),
) -> Times:
    """Healthy (or faulty) compute and synchronous step times of N devices over T steps.

    Deterministic by ``seed``. Faults are drawn from their own stream, so a
    seed gives the same healthy noise with and without them (power tests
    compare like with like).

    Examples
    --------
    >>> tm = simulate_times(500, 16, NoiseSpec(sd=0.02, period=100, period_seconds=5.0),
    ...                     seed=3, faults=[Fault(device=2, kind="step", onset=200, magnitude=0.1)])
    >>> tm.compute.shape, tm.truth[0]["onset"], bool((tm.step[100] > 5).all())
    ((500, 16), 200, True)
    """
    if isinstance(spec, dict):
        spec = NoiseSpec.from_dict(spec)
    spec = spec or NoiseSpec()
    T, N = int(T), int(N)
    if T < 1 or N < 1:
        raise InputError(f"simulate_times: T={T} and N={N} must be >= 1")
    if not base > 0 or comm_time < 0:
        raise InputError(f"simulate_times: base={base} must be > 0 and comm_time={comm_time} >= 0")
    root = np.random.SeedSequence(int(seed))
    rng, frng = (np.random.default_rng(s) for s in root.spawn(2))
    logx = log_noise(rng, (T, N), spec)
    if spec.offset > 0:
        logx += np.log1p(rng.uniform(-spec.offset, spec.offset, N))[None, :]
    rank = rank_permutations(rng, T, N, spec.restarts)
    if spec.moe > 0:
        g = moe_imbalance(rng, (T, N), spec)
        logx += np.take_along_axis(g, rank, axis=1)
    job = _periodic(rng, T, spec.period, spec.period_factor, True) * _warmups(
        T, spec.restarts, spec.restart_factor
    )
    compute = base * job[:, None] * np.exp(logx)
    if spec.spike_prob > 0:
        hit = rng.random((T, N)) < spec.spike_prob
        compute[hit] *= (
            1.0 + (rng.pareto(spec.spike_alpha, int(hit.sum())) + 1.0) * spec.spike_scale
        )
    truth = []
    for f in faults:
        f = Fault(**f) if isinstance(f, dict) else f
        if f.device >= N or f.onset >= T:
            raise InputError(
                f"simulate_times: fault on device {f.device} at onset {f.onset} outside {N} devices x {T} steps"
            )
        compute[:, f.device] *= fault_factor(f, T, frng)
        truth.append(dataclasses.asdict(f))
    wall = compute.max(axis=1) + comm_time * np.exp(rng.normal(0.0, 0.05, T))
    wall += _periodic(rng, T, spec.period, spec.period_seconds, False)
    step = np.repeat(wall[:, None], N, axis=1)
    mask = (
        apply_garbage(rng, compute, spec.garbage_rate, spec.garbage)
        if spec.garbage_rate > 0
        else np.zeros((T, N), bool)
    )
    return Times(compute=compute, step=step, rank=rank, garbage=mask, truth=truth)


def compute_times(
    T: int,
    N: int,
    spec: NoiseSpec | dict | None = None,
    *,
    seed: int = 0,
    base: float = 0.5,
    faults=(),
) -> np.ndarray:
    """(T, N) compute times of :func:`simulate_times` (garbage included)."""
    return simulate_times(T, N, spec, seed=seed, base=base, faults=faults).compute

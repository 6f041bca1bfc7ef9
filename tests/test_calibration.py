"""Calibration claims of the verdicts, checked by simulation (issue 10).

The claims (docs/verdicts.md, "Calibration"):

- false ``degraded`` verdicts on healthy devices stay within Monte Carlo error
  of the target ``EngineConfig.arl0`` promises, whatever the noise family
  (heavy tails, autocorrelation, heteroscedasticity, MoE imbalance, periodic
  all-rank events, reshuffles, garbage);
- at most 1 % of healthy devices are suspect in any run;
- the achieved false-alarm rate tracks the target (not only stays below it);
- garbage samples never change a healthy verdict, and slowdown figures stay
  finite and sane;
- power: 5 % steps found >= 4/5 at 2 % noise, median delay <= 20 steps for
  >= 10 %, drift onsets within 50 steps, intermittent faults (>= 20 % on
  >= 10 % of steps) found.

Every tolerance comes from the sample size: false alarms are Poisson with
mean ``samples / arl0``; a claim "within Monte Carlo error" fails only when
the count is above the Poisson 99.9 % quantile.

Tests marked xfail fail on the engine of this branch (see the reason: measured, with its cause);
the marks go when the engine passes them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from degrade.simulate import Fault, NoiseSpec, simulate_times
from degrade.verdict import EngineConfig, VerdictEngine

# garbage families are warned about (DataWarning): that is the point, not noise in the test output
pytestmark = pytest.mark.filterwarnings("ignore:.*implausible:UserWarning")

N, T = 128, 8000  # per family: 1.02e6 device-samples (284 device-hours at 1 Hz)


def _poisson_q999(lam: float) -> int:
    """Smallest k with P(X <= k) >= 0.999 for X ~ Poisson(lam)."""
    term = cdf = math.exp(-lam)
    k = 0
    while cdf < 0.999:
        k += 1
        term *= lam / k
        cdf += term
    return k


def _verdicts(tm, *, cfg=None, groups=None):
    T_, n = tm.compute.shape
    eng = VerdictEngine(cfg or EngineConfig(latch=True))
    eng.run(
        [f"d{i}" for i in range(n)],
        {"compute_time": tm.compute, "step_time": tm.step},
        steps=np.arange(T_),
        groups=groups or [0] * n,
        job="j",
    )
    return eng.verdicts(), eng


FAMILIES = {
    "gaussian": NoiseSpec(sd=0.02),
    "t3": NoiseSpec(family="t", nu=3.0, sd=0.02),
    "t2.5": NoiseSpec(family="t", nu=2.5, sd=0.02),
    "ar0.95": NoiseSpec(sd=0.02, phi=0.95),
    "t3-ar0.8": NoiseSpec(family="t", nu=3.0, sd=0.03, phi=0.8),
    "hetero": NoiseSpec(sd=0.02, hetero=1.0),
    "moe-elastic": NoiseSpec(family="t", nu=3.0, sd=0.02, phi=0.8, moe=0.03, restarts=(1700, 3400)),
    "periodic": NoiseSpec(sd=0.02, period=500, period_factor=2.0, period_seconds=10.0),
    "garbage": NoiseSpec(sd=0.02, garbage_rate=1e-3),
}

# families on which the engine of this branch breaks the claims (measured; see docs/verdicts.md)
_DEG_BREAKS: dict[str, str] = {}
_SUS_BREAKS: dict[str, str] = {}
_BREAKS = {"degraded": _DEG_BREAKS, "suspect": _SUS_BREAKS}


def _family_params(claim):
    out = []
    for name in FAMILIES:
        marks = ()
        if name in _BREAKS.get(claim, {}):
            marks = pytest.mark.xfail(strict=False, reason=_BREAKS[claim][name])
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(scope="module")
def healthy():
    """Verdicts for each family, simulated once for the module."""
    cache = {}

    def get(name):
        if name not in cache:
            tm = simulate_times(T, N, FAMILIES[name], seed=20261201)
            cache[name] = _verdicts(tm)[0]
        return cache[name]

    return get


@pytest.mark.parametrize("name", _family_params("degraded"))
def test_false_degraded_within_mc_error_of_target(healthy, name):
    cfg = EngineConfig()
    lam = N * (T - cfg.warmup) / cfg.arl0
    bad = [v.device for v in healthy(name) if str(v.status) in ("degraded", "failed")]
    assert len(bad) <= _poisson_q999(lam), (name, bad)


@pytest.mark.parametrize("name", _family_params("suspect"))
def test_at_most_one_percent_of_healthy_devices_suspect(healthy, name):
    sus = [v.device for v in healthy(name) if str(v.status) == "suspect"]
    assert len(sus) <= max(1, int(0.01 * N)), (name, len(sus))


# ---------------------------------------------------------------- the rate tracks the target
def _alarm_episodes(X, arl0, n_group=16):
    """Degraded episodes per device, streaming in blocks of ``recovery`` (every episode lasts longer)."""
    T_, n = X.shape
    cfg = EngineConfig(arl0=arl0)
    eng = VerdictEngine(cfg)
    step = np.repeat(X.max(axis=1, keepdims=True) + 0.05, n, axis=1)
    ids = [f"d{i}" for i in range(n)]
    groups = [i // n_group for i in range(n)]
    seen = set()
    for a in range(0, T_, cfg.recovery):
        b = min(T_, a + cfg.recovery)
        eng.run(
            ids,
            {"compute_time": X[a:b], "step_time": step[a:b]},
            steps=np.arange(a, b),
            groups=groups,
            job=groups,
        )
        seen.update(
            (i, v.detected_step)
            for i, v in enumerate(eng.verdicts())
            if str(v.status) == "degraded"
        )
    return len(seen), (T_ - cfg.warmup) * n


def _at_design_point(L, design, offset, n_group=16, rounds=4):
    """Log timings ``L`` with the ``design`` devices moved to ``offset`` above their peers.

    The engine states ``arl0`` for a device whose deviation from the median of
    the *other* devices of its group averages ``log1p(healthy_offset)``. Three
    other design devices in a group of 16 pull that median up (by ~0.25 sigma
    at 2 % noise), which would put the devices below the design point and
    make the design look conservative for the wrong reason; so the shift of
    each is solved for (a few fixed-point rounds on the realised deviations).
    """
    target = math.log1p(offset)
    c = np.where(design, target, 0.0)
    for _ in range(rounds):
        X = L + c[None, :]
        dev = np.empty_like(X[:, design])
        cols = np.flatnonzero(design)
        for q, j in enumerate(cols):
            g0 = (j // n_group) * n_group
            others = [k for k in range(g0, min(g0 + n_group, L.shape[1])) if k != j]
            dev[:, q] = X[:, j] - np.median(X[:, others], axis=1)
        c[cols] += target - dev.mean(axis=0)
    return L + c[None, :]


# measured at ff18f32 with the devices at the design point (seeds 7, 8, 9 of this test): t(3)
# AR(0.8) 5, 7, 13 alarms where 16 are expected (0.3-0.8 x: tracks); Gaussian 2, 1, 0 (<= 0.12 x).
# Placed as the old test did (3 other design devices in the median) both read 0-5. Why Gaussian
# is conservative: the one-standard-error margins on the innovation scale and on phi (phi = 0 is
# estimated as ~0.04; sigma_lr ~7 % above the truth once learned, ~15 % in the first few hundred
# samples) cost 2.5-9 x at arl0 = 1e4 by Siegmund's approximation, persistence = 3 ~1.3 x more,
# and half the alarms at the design point end suspect (degraded also needs the slowdown estimate
# near min_slowdown). Conservative by construction (docs/verdicts.md, Calibration).
_CONSERVATIVE = (
    "conservative on Gaussian noise: 0-2 degraded alarms at the design point where 16 are "
    "expected (one-SE margins on scale and phi, persistence 3, the degraded rule; "
    "docs/verdicts.md#calibration)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            NoiseSpec(sd=0.02),
            id="gaussian",
            marks=pytest.mark.xfail(strict=False, reason=_CONSERVATIVE),
        ),
        pytest.param(NoiseSpec(family="t", nu=3.0, sd=0.03, phi=0.8), id="t3-ar0.8"),
    ],
)
def test_achieved_rate_tracks_the_target_at_the_design_point(spec):
    # a quarter of the devices sit healthy_offset above their peers, where arl0 is stated:
    # 32 x 5,000 = 1.6e5 design samples at arl0 = 1e4 expect 16 alarms; the 99.9 % Poisson
    # interval of 16 is [5, 32], so a calibrated design gives a rate within [1/4, 2] x target
    # (a design that is 3x the target, or 0x, does not)
    arl0, n, T_ = 1e4, 128, 5020
    cfg = EngineConfig()
    tm = simulate_times(T_, n, spec, seed=7)
    design = np.arange(n) % 16 < 4
    X = np.exp(_at_design_point(np.log(tm.compute), design, cfg.healthy_offset))
    alarms, samples = _alarm_episodes(X, arl0)
    design_samples = samples * design.mean()
    ratio = alarms / (design_samples / arl0)
    assert 0.25 <= ratio <= 2.0, (alarms, design_samples / arl0)


def test_devices_are_placed_at_the_design_point():
    # the helper above does what it says: mean deviation from the other devices' median
    tm = simulate_times(2000, 32, NoiseSpec(sd=0.02), seed=8)
    design = np.arange(32) % 16 < 4
    L = _at_design_point(np.log(tm.compute), design, 0.03)
    for j in np.flatnonzero(design):
        g0 = (j // 16) * 16
        others = [k for k in range(g0, g0 + 16) if k != j]
        dev = (L[:, j] - np.median(L[:, others], axis=1)).mean()
        assert dev == pytest.approx(math.log1p(0.03), abs=2e-4)


# ---------------------------------------------------------------- garbage
def test_garbage_never_changes_a_healthy_verdict():
    clean = simulate_times(3000, 32, NoiseSpec(sd=0.02), seed=11)
    dirty = simulate_times(3000, 32, NoiseSpec(sd=0.02, garbage_rate=2e-3), seed=11)
    assert dirty.garbage.sum() > 100
    a = [str(v.status) for v in _verdicts(clean)[0]]
    b = [str(v.status) for v in _verdicts(dirty)[0]]
    assert a == b


@pytest.mark.parametrize("value", [1e-6, 1e300])
def test_slowdown_of_a_faulty_device_stays_sane_under_garbage(value):
    tm = simulate_times(
        1200,
        16,
        NoiseSpec(sd=0.02),
        seed=12,
        faults=[Fault(device=3, kind="step", onset=200, magnitude=0.2)],
    )
    X = tm.compute.copy()
    X[::7, 3] = value
    tm.compute = X
    v = {x.device: x for x in _verdicts(tm)[0]}["d3"]
    assert str(v.status) == "degraded"
    assert v.slowdown == pytest.approx(0.2, abs=0.03)
    assert abs(v.onset_step - 200) <= 20


# ---------------------------------------------------------------- power
def _power(kind, m, reps, *, onset=1000, prob=0.15, T_=3000, n=32, seed=0):
    """Verdicts of the faulty device in ``reps`` jobs with one fault each (2 % Gaussian noise)."""
    comp, step, jobs, ids = [], [], [], []
    for r in range(reps):
        tm = simulate_times(
            T_,
            n,
            NoiseSpec(sd=0.02),
            seed=seed + r,
            faults=[
                Fault(device=r % n, kind=kind, onset=onset, magnitude=m, ramp_steps=300, prob=prob)
            ],
        )
        comp.append(tm.compute)
        step.append(tm.step)
        jobs += [f"r{r}"] * n
        ids += [f"r{r}-d{d}" for d in range(n)]
    eng = VerdictEngine(EngineConfig(latch=True))
    eng.run(
        ids,
        {"compute_time": np.hstack(comp), "step_time": np.hstack(step)},
        steps=np.arange(T_),
        groups=jobs,
        job=jobs,
    )
    vs = {v.device: v for v in eng.verdicts()}
    faulty = [vs[f"r{r}-d{r % n}"] for r in range(reps)]
    others = [v for k, v in vs.items() if v not in faulty]
    return faulty, others


def test_five_percent_steps_found_four_of_five_at_two_percent_noise():
    faulty, others = _power("step", 0.05, 10, seed=100)
    # >= 4/5 claimed: with 10 runs, 6 or fewer found would reject a true power of 0.8 at ~3 %
    assert sum(str(v.status) == "degraded" for v in faulty) >= 7
    assert not [v.device for v in others if str(v.status) == "degraded"]


@pytest.mark.parametrize("m", [0.10, 0.20])
def test_large_steps_median_delay_at_most_20_steps(m):
    faulty, _ = _power("step", m, 5, seed=200)
    assert all(str(v.status) == "degraded" for v in faulty)
    assert np.median([v.detected_step - 1000 for v in faulty]) <= 20


def test_drift_onset_within_50_steps():
    faulty, _ = _power("drift", 0.2, 5, seed=300)
    assert all(str(v.status) == "degraded" for v in faulty)
    assert np.median([abs(v.onset_step - 1000) for v in faulty]) <= 50


@pytest.mark.parametrize(("m", "prob"), [(0.30, 0.15), (0.20, 0.10)])
def test_intermittent_faults_found(m, prob):
    faulty, others = _power("intermittent", m, 5, prob=prob, seed=400)
    assert sum(str(v.status) == "degraded" for v in faulty) >= 4
    assert not [v.device for v in others if str(v.status) == "degraded"]


# ---------------------------------------------------------------- intermittent stalls
def test_one_large_innovation_of_autocorrelated_noise_is_not_an_intermittent_fault():
    # t(3) AR(0.8) noise has innovations of ~100 sigma now and then: one makes a dozen
    # consecutive steps 15-2,000 % slower as it decays. Counted as a dozen slow steps, that run
    # crossed the slow-step CUSUM's h (13 false degraded on the 1,024-GPU x 1e5-step `issue`
    # fleet of bench/bench_calibration.py); prewhitened it is one slow step, and an episode
    # short of intermittent_min on intermittent_rate of its steps is never degraded
    tm = simulate_times(6000, 32, NoiseSpec(family="t", nu=3.0, sd=0.03, phi=0.8), seed=21)
    X = tm.compute.copy()
    burst = np.exp(3.0 * 0.8 ** np.arange(40))  # 20x slower, decaying as AR(0.8)
    hit = {3: 2000, 9: 3500, 17: 5000}
    for d, s in hit.items():
        X[s : s + 40, d] *= burst
    tm.compute = X
    vs = {v.device: v for v in _verdicts(tm)[0]}
    assert {d: str(vs[f"d{d}"].status) for d in hit} == dict.fromkeys(hit, "healthy")
    assert not [v.device for v in vs.values() if str(v.status) != "healthy"]


def test_an_intermittent_fault_that_ended_stays_degraded_in_batch_not_in_streaming():
    # 20 % slower on 10 % of steps between steps 1000 and 2000, then healthy for 3000 steps
    def run(latch):
        tm = simulate_times(
            5000,
            32,
            NoiseSpec(sd=0.02),
            seed=31,
            faults=[
                Fault(device=5, kind="intermittent", onset=1000, end=2000, magnitude=0.2, prob=0.1)
            ],
        )
        return {v.device: v for v in _verdicts(tm, cfg=EngineConfig(latch=latch))[0]}

    batch = run(True)
    assert str(batch["d5"].status) == "degraded"
    assert abs(batch["d5"].onset_step - 1000) <= 200
    assert any("intermittent stalls" in r and "(recovered)" in r for r in batch["d5"].reasons)
    assert not [k for k, v in batch.items() if k != "d5" and str(v.status) != "healthy"]
    # streaming reports the present: the fault is over
    assert str(run(False)["d5"].status) == "healthy"

"""Calibration of the verdict engine, checked by simulation.

The false-alarm target ``arl0`` (samples per device at ``healthy_offset``
from peers) must hold for the noise real fleets have: Student-t(3) tails,
AR(1) up to phi = 0.95, heteroscedastic devices, garbage samples, periodic
all-rank events and rank reshuffles. The default target (1e9) cannot be
simulated, so the design is checked at affordable targets (1e3..1e5): the
achieved rate must stay at or below the target (within Monte Carlo error)
on every family and track it across targets. Power targets from issue 10
are checked at the default target.

The small noise generator here is deliberately independent of
``degrade.simulate``, so the simulator and the engine cannot share a
mistake.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from degrade.errors import DataWarning
from degrade.verdict import Status, VerdictEngine
from degrade.verdict import _layout as K


def _noise(rng, T, N, *, sd=0.02, nu=None, phi=0.0):
    """Log-noise of marginal sd ``sd``: Gaussian or unit-variance t(nu) innovations, AR(1) ``phi``."""
    if nu is None:
        e = rng.standard_normal((T, N))
    else:
        e = rng.standard_t(nu, (T, N)) * math.sqrt((nu - 2.0) / nu)
    if phi:
        x = np.empty_like(e)
        x[0] = e[0] / math.sqrt(1.0 - phi * phi)
        for t in range(1, T):
            x[t] = phi * x[t - 1] + e[t]
        e = x * math.sqrt(1.0 - phi * phi)
    return sd * e


def _family(name, rng, T, N):
    """Healthy timings (T, N) of one noise family."""
    if name == "gauss":
        z = _noise(rng, T, N)
    elif name == "t3":
        z = _noise(rng, T, N, nu=3)
    elif name == "ar0.8":
        z = _noise(rng, T, N, phi=0.8)
    elif name == "ar0.95":
        z = _noise(rng, T, N, phi=0.95)
    elif name == "hetero":
        # device noise from 1 % to 5 %
        z = _noise(rng, T, N) * np.exp(rng.uniform(math.log(0.5), math.log(2.5), N))
    elif name == "t3-ar0.8-reshuffle":
        # MoE-like: correlated per-rank imbalance, ranks reshuffled by elastic restarts
        z = _noise(rng, T, N, nu=3, phi=0.8)
        for a in range(T // 4, T, T // 4):
            z[a:] = z[a:, rng.permutation(N)]
    elif name == "periodic":
        z = _noise(rng, T, N, phi=0.5)
    elif name == "garbage":
        z = _noise(rng, T, N, nu=3)
    else:  # pragma: no cover
        raise ValueError(name)
    x = 0.1 * np.exp(z)
    if name == "periodic":
        x[::100] *= 1.8  # a checkpoint every 100 steps, on every rank
    if name == "garbage":
        g = rng.random((T, N)) < 0.002
        x[g] = np.where(rng.random(int(g.sum())) < 0.5, 1e300, 1e-6)
    return x


def _false_alarms(name, arl0, T, N, seed):
    """Alarm episodes of the level and slow-step channels, and the device-samples judged."""
    rng = np.random.default_rng(seed)
    x = _family(name, rng, T, N)
    # healthy_offset=0: every device then sits exactly at the design point
    eng = VerdictEngine(arl0=arl0, healthy_offset=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T), job="j")
    level = float(eng._ST[:N, K.C_EPISODES].sum())
    slow = float(eng._SB[:N, K.C_EPISODES].sum())
    return level, slow, N * (T - eng.config.warmup)


FAMILIES = ["gauss", "t3", "ar0.8", "ar0.95", "hetero", "t3-ar0.8-reshuffle", "periodic", "garbage"]


@pytest.mark.parametrize("name", FAMILIES)
def test_false_alarm_rate_at_most_target(name):
    # 64 devices x 8,000 steps at arl0 = 1e4: ~51 false alarms expected at the
    # target. Allow the target plus three Poisson sds (~1.4x): a design that
    # assumed Gaussian i.i.d. noise measured 2-5x here (t(3): 2.6x,
    # AR(0.95): 3.6x, t(3) AR(0.8) with reshuffles: 4.8x).
    arl0 = 1e4
    level, slow, n = _false_alarms(name, arl0, 8000, 64, seed=1)
    expect = n / arl0
    assert level <= expect + 3.0 * math.sqrt(expect), (name, level, expect)
    # the slow-step CUSUM's bound (Lorden) is far from tight
    assert slow <= 0.2 * expect, (name, slow, expect)


@pytest.mark.slow
def test_false_alarm_rate_tracks_target_across_targets():
    # the same design at 1e3, 1e4, 1e5: the achieved rate follows the target
    # (ratio to it between 0.25 and 1.4 on a family where the design is
    # nearly tight), so the extrapolation to 1e9 rests on the design, not on
    # luck at one target
    ratios = []
    for arl0, T, N in ((1e3, 4000, 32), (1e4, 8000, 64), (1e5, 24000, 128)):
        level, _, n = _false_alarms("ar0.8", arl0, T, N, seed=2)
        expect = n / arl0
        assert level <= expect + 3.0 * math.sqrt(expect), (arl0, level, expect)
        ratios.append(level / expect)
    assert min(ratios) >= 0.25, ratios
    assert max(ratios) / min(ratios) <= 4.0, ratios


def _hard_fleet(rng, T, N):
    """A healthy job with everything at once: t(3) AR(0.8) 3 % noise, static offsets, spikes,
    checkpoints on every rank, two reshuffles, heteroscedastic devices."""
    z = _noise(rng, T, N, sd=0.03, nu=3, phi=0.8) * np.exp(rng.uniform(-0.4, 0.4, N))
    for a in (T // 3, 2 * T // 3):
        z[a:] = z[a:, rng.permutation(N)]
    x = 0.1 * np.exp(z + rng.uniform(-0.015, 0.015, N))
    spikes = rng.random((T, N)) < 0.003
    x[spikes] *= 1.0 + 0.5 * (rng.pareto(1.5, int(spikes.sum())) + 1.0)
    x[::500] *= 2.0  # checkpoints
    return x


def test_suspects_at_most_one_percent_of_healthy_devices():
    rng = np.random.default_rng(7)
    T, N = 6000, 200
    x = _hard_fleet(rng, T, N)
    eng = VerdictEngine(latch=True)
    eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T), job="moe")
    st = [str(v.status) for v in eng.verdicts()]
    assert st.count("degraded") == 0
    assert st.count("suspect") <= 2, [
        v.reasons for v in eng.verdicts() if str(v.status) == "suspect"
    ]


def test_recovered_excursion_below_min_slowdown_is_history_not_a_status():
    rng = np.random.default_rng(8)
    T, N = 3000, 16
    x = 0.1 * np.exp(_noise(rng, T, N, sd=0.01))
    x[1000:1400, 3] *= 1.045  # 4.5 %: past the CUSUM's reference, below min_slowdown
    x[1000:1400, 5] *= 1.15  # 15 %: a real slowdown that recovered
    eng = VerdictEngine(latch=True)
    eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
    v = {x.device: x for x in eng.verdicts()}
    assert eng._ST[3, K.C_EPISODES] >= 1  # it did alarm ...
    assert v["g3"].status is Status.HEALTHY  # ... but it is history
    assert any(r.startswith("history:") for r in v["g3"].reasons), v["g3"].reasons
    assert v["g5"].status is Status.DEGRADED and abs(v["g5"].onset_step - 1000) <= 5
    assert "recovered" in v["g5"].reasons[0]
    # streaming (no latch): both are healthy once they recovered
    eng = VerdictEngine()
    eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
    assert {str(v.status) for v in eng.verdicts()} == {"healthy"}


# ---------------------------------------------------------------- outliers
def test_outlier_rows_never_change_a_healthy_verdict():
    rng = np.random.default_rng(9)
    T, N = 3000, 32
    x = _hard_fleet(rng, T, N)
    ids = [f"g{i}" for i in range(N)]
    clean = VerdictEngine(latch=True)
    clean.run(ids, {"compute_time": x}, steps=np.arange(T))
    y = x.copy()
    y[1000:1050, 4] = 1e300  # 50 rows of 1e300
    y[::7, 9] = 1e-6  # every 7th sample 1e-6 s
    y[rng.random((T, N)) < 0.001] = 1e300
    dirty = VerdictEngine(latch=True)
    with pytest.warns(DataWarning, match="implausible compute_time"):
        dirty.run(ids, {"compute_time": y}, steps=np.arange(T))
    a = {v.device: v for v in clean.verdicts()}
    b = {v.device: v for v in dirty.verdicts()}
    assert [str(a[d].status) for d in ids] == [str(b[d].status) for d in ids]
    assert b["g4"].signals["timing_outliers"] >= 50
    assert b["g9"].signals["timing_outliers"] >= T // 7
    for v in b.values():
        assert v.slowdown is None or (math.isfinite(v.slowdown) and -1.0 < v.slowdown < 1.0)


@pytest.mark.parametrize("garbage", [1e-6, 1e300])
def test_garbage_on_a_slow_device_gives_a_sane_slowdown_and_onset(garbage):
    rng = np.random.default_rng(10)
    T, N = 2000, 16
    x = 0.1 * np.exp(_noise(rng, T, N))
    x[200:, 6] *= 1.2
    x[::7, 6] = garbage
    eng = VerdictEngine(latch=True)
    with pytest.warns(DataWarning):
        eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
    v = {x.device: x for x in eng.verdicts()}
    assert v["g6"].status is Status.DEGRADED
    assert 0.17 <= v["g6"].slowdown <= 0.23, v["g6"].slowdown
    assert abs(v["g6"].onset_step - 200) <= 7
    assert all(v[f"g{i}"].status is Status.HEALTHY for i in range(N) if i != 6)


# ---------------------------------------------------------------- power at the default target
def test_five_percent_slowdowns_found_at_two_percent_noise():
    found = 0
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        T, N = 3000, 64
        x = 0.1 * np.exp(_noise(rng, T, N, phi=0.4) + rng.uniform(-0.01, 0.01, N))
        x[1000:, 11] *= 1.05
        eng = VerdictEngine(latch=True)
        eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
        v = {x.device: x for x in eng.verdicts()}
        found += v["g11"].status is Status.DEGRADED
        assert sum(str(w.status) == "degraded" for w in v.values()) <= 1
    assert found >= 4


def test_large_slowdowns_are_found_within_twenty_steps():
    delays = []
    for seed in range(5):
        rng = np.random.default_rng(200 + seed)
        T, N = 2000, 64
        x = 0.1 * np.exp(_noise(rng, T, N, phi=0.4))
        for a, mag in enumerate((0.10, 0.15, 0.2, 0.3)):
            x[1000 + 50 * a :, 3 + 7 * a] *= 1.0 + mag
        eng = VerdictEngine()
        eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
        v = {x.device: x for x in eng.verdicts()}
        for a in range(4):
            w = v[f"g{3 + 7 * a}"]
            assert w.status is Status.DEGRADED
            delays.append(w.detected_step - (1000 + 50 * a))
    assert np.median(delays) <= 20, delays


def test_drift_onset_is_refined_to_within_fifty_steps():
    errs = []
    for seed in range(3):
        rng = np.random.default_rng(300 + seed)
        T, N = 3000, 64
        x = 0.1 * np.exp(_noise(rng, T, N, phi=0.4))
        ramp = np.clip((np.arange(T) - 1000) / 1000.0, 0.0, 1.0) * 0.3  # 30 % over 1,000 steps
        x[:, 20] *= 1.0 + ramp
        eng = VerdictEngine(latch=True)
        eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
        v = {x.device: x for x in eng.verdicts()}["g20"]
        assert v.status is Status.DEGRADED
        errs.append(abs(v.onset_step - 1000))
    assert max(errs) <= 50, errs


def test_intermittent_fault_is_found():
    rng = np.random.default_rng(11)
    T, N = 3000, 64
    x = 0.1 * np.exp(_noise(rng, T, N, phi=0.4))
    slow = rng.random(T) < 0.15
    x[1000:, 8] *= np.where(slow[1000:], 1.3, 1.0)  # 30 % slower on 15 % of steps
    eng = VerdictEngine(latch=True)
    eng.run([f"g{i}" for i in range(N)], {"compute_time": x}, steps=np.arange(T))
    v = {x.device: x for x in eng.verdicts()}
    assert v["g8"].status is Status.DEGRADED and "intermittent" in v["g8"].reasons[0]
    assert v["g8"].onset_step >= 1000 and v["g8"].detected_step - 1000 <= 300
    assert sum(str(w.status) != "healthy" for w in v.values()) == 1

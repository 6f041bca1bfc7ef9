"""The shared detector interface: streaming == batch bit for bit, elastic streams, state, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from degrade.core import BOCPD, CUSUM, EWMA, PeerComparison, RobustBaseline
from degrade.errors import InputError

N = 6


def make(name):
    return {
        "cusum": lambda: CUSUM(warmup=10, fir=0.5, relearn=True),
        "cusum_log": lambda: CUSUM(warmup=10, log=True, adapt=0.01),
        "ewma": lambda: EWMA(lam=0.3, L=2.5, warmup=10),
        "bocpd": lambda: BOCPD(warmup=10, max_run=16, window=3, hazard=0.05),
        "peer": lambda: PeerComparison(groups=[0, 0, 0, 1, 1, 5], threshold=2.0),
        "baseline": lambda: RobustBaseline(window=8, threshold=3.0),
        "baseline_ewma": lambda: RobustBaseline(method="ewma", alpha=0.2, threshold=3.0),
    }[name]()


NAMES = ["cusum", "cusum_log", "ewma", "bocpd", "peer", "baseline", "baseline_ewma"]


def data(rng, T=200, n=N):
    X = np.exp(rng.normal(0.0, 0.1, size=(T, n)))
    X[T // 2 :, ::2] *= 1.4
    X[rng.random((T, n)) < 0.08] = np.nan
    X[rng.random((T, n)) < 0.02] = -2.0
    return X


def same_state(a, b):
    da, db = a.state_dict(), b.state_dict()
    assert da.keys() == db.keys()
    for key in da:
        va, vb = np.asarray(da[key]), np.asarray(db[key])
        assert va.shape == vb.shape, key
        # bit for bit, NaN in the same places
        assert np.array_equal(
            va.view(np.uint8) if va.dtype == float else va,
            vb.view(np.uint8) if vb.dtype == float else vb,
        ), key


@pytest.mark.parametrize("name", NAMES)
def test_run_equals_update_bit_for_bit(rng, name):
    X = data(rng)
    a, b, c = make(name), make(name), make(name)
    res = a.run(X)
    alarms = np.array([b.update(x) for x in X])
    np.testing.assert_array_equal(res.alarm, alarms)
    assert res.alarm.any()
    same_state(a, b)
    # a block split anywhere, mixing run and update, gives the same state too
    c.run(X[:37])
    for x in X[37:80]:
        c.update(x)
    c.run(X[80:])
    same_state(a, c)
    assert a.t_ == b.t_ == c.t_ == len(X)
    # common attributes
    assert a.statistic_.shape == a.alarm_.shape == a.last_alarm_.shape == (N,)
    assert a.n_streams_ == N
    np.testing.assert_array_equal(a.alarm_, res.alarm[-1])
    last = np.array(
        [np.flatnonzero(res.alarm[:, j])[-1] if res.alarm[:, j].any() else -1 for j in range(N)]
    )
    np.testing.assert_array_equal(a.last_alarm_, last)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_pickle_round_trip(rng, name, tmp_path):
    X = data(rng)
    a = make(name)
    a.run(X[:120])
    saved = a.state_dict()
    np.savez(tmp_path / "s.npz", **saved)
    b = make(name)
    b.load_state_dict(dict(np.load(tmp_path / "s.npz")))
    c = pickle.loads(pickle.dumps(a))
    ra, rb, rc = a.run(X[120:]), b.run(X[120:]), c.run(X[120:])
    np.testing.assert_array_equal(ra.alarm, rb.alarm)
    np.testing.assert_array_equal(ra.alarm, rc.alarm)
    same_state(a, b)
    same_state(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_load_state_rejects_mismatch(rng, name):
    a = make(name)
    a.run(data(rng, 30))
    d = a.state_dict()
    d["state"] = d["state"][:-1]
    with pytest.raises(InputError, match="expected"):
        make(name).load_state_dict(d)
    with pytest.raises(InputError, match="not"):
        (CUSUM() if name != "cusum" else EWMA()).load_state_dict(a.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_add_and_remove_streams(rng, name):
    X = data(rng, 160, N + 2)
    a = make(name)
    a.run(X[:80, :N])
    kw = {"groups": [0, 7]} if name == "peer" else {}
    new = a.add_streams(2, **kw)
    np.testing.assert_array_equal(new, [N, N + 1])
    assert a.n_streams_ == N + 2
    # new streams start fresh: their counters are zero and they learn their own baseline
    assert a.n_missing_[N:].tolist() == [0, 0]
    assert a.last_alarm_[N:].tolist() == [-1, -1]
    a.run(X[80:120])
    # remove two streams: the others keep their state and order
    before = a.state_dict()
    a.remove_streams([1, N])
    after = a.state_dict()
    keep = [j for j in range(N + 2) if j not in (1, N)]
    for key in ("state", "buffer", "runs", "groups"):
        if key in before:
            axis = 1 if key == "state" else 0  # state is (fields, streams)
            np.testing.assert_array_equal(after[key], np.take(before[key], keep, axis=axis))
    a.remove_streams(np.zeros(a.n_streams_, dtype=bool))  # empty mask: no-op
    assert a.n_streams_ == N
    out = a.update(X[120, keep])
    assert out.shape == (N,)


def test_added_peer_stream_joins_its_group():
    pc = PeerComparison(groups=[0, 0, 0], threshold=3.0, side="upper")
    pc.update([1.0, 1.0, 1.0])
    pc.add_streams(1, groups=[0])
    out = pc.update([1.0, 1.01, 0.99, 1.5])
    assert out.tolist() == [False, False, False, True]
    assert pc.groups_.tolist() == [0, 0, 0, 0]
    with pytest.raises(InputError, match="groups="):
        pc.add_streams(1)


@pytest.mark.parametrize("name", NAMES)
def test_reset(rng, name):
    X = data(rng)
    a, fresh = make(name), make(name)
    a.run(X)
    fresh.run(X[:0])
    a.reset()
    same_state(a, fresh)
    a.run(X)
    a.reset(streams=[2])
    b = make(name)
    b.run(X)
    sa, sb = a.state_dict(), b.state_dict()
    assert np.array_equal(sa["state"][:, [0, 1, 3]], sb["state"][:, [0, 1, 3]], equal_nan=True)
    assert a.n_missing_[2] == 0 and a.last_alarm_[2] == -1


def test_reset_one_stream_relearns_baseline(rng):
    X = rng.normal(5.0, 1.0, size=(50, 3))
    det = CUSUM(warmup=10)
    det.run(X)
    det.reset(streams=[1])
    assert np.isnan(det.mu_[1]) and np.isfinite(det.mu_[[0, 2]]).all()
    det.run(X[:10])
    assert np.isfinite(det.mu_[1])


def test_known_baseline_per_stream():
    det = CUSUM(mu=[0.0, 10.0], sigma=[1.0, 2.0], k=0.5, h=4.0)
    assert det.n_streams_ == 2
    out = det.run(np.tile([0.0, 10.0 + 2.0 * 1.6], (5, 1)))  # stream 1 at +1.6 sigma
    # 4 * (1.6 - 0.5) = 4.4 > 4: alarm on the 4th sample, onset -1 (shifted from the start)
    assert out.alarm[:, 1].tolist() == [False, False, False, True, False]
    assert out.onset[3, 1] == -1
    assert not out.alarm[:, 0].any()


def test_positive_counts_nonpositive_as_missing():
    det = EWMA(positive=True, warmup=3, n_streams=3)
    det.update([1.0, 0.0, -1.0])
    det.update([np.nan, np.inf, 2.0])
    assert det.n_missing_.tolist() == [1, 2, 1]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input(name):
    det = make(name)
    det.update(np.ones(N))
    with pytest.raises(InputError, match=r"shape \(6,\)"):
        det.update(np.ones(N + 1))
    with pytest.raises(InputError, match=r"shape \(6,\)"):
        det.update(np.ones((N, 1)))
    with pytest.raises(InputError, match=r"\(T, 6\)"):
        det.run(np.ones((4, N + 1)))
    with pytest.raises(InputError, match=r"\(T, 6\)"):
        det.run(np.ones(N))
    with pytest.raises(InputError, match="numeric"):
        det.run([["a"] * N])
    with pytest.raises(InputError, match="out of range"):
        det.remove_streams([N])
    with pytest.raises(InputError, match="integers"):
        det.remove_streams([0.5])
    # a list works as well as an array, and nothing above changed the state
    det.update([1.0] * N)
    assert det.t_ == 2


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: CUSUM(h=-1.0), "h must be"),
        (lambda: CUSUM(k=0.5, arl0=100.0), "either arl0"),
        (lambda: CUSUM(side="up"), "side must be"),
        (lambda: CUSUM(mu=1.0), "both mu and sigma"),
        (lambda: CUSUM(mu=[1.0, 2.0], sigma=[1.0]), r"shape \(2,\)"),
        (lambda: CUSUM(mu=0.0, sigma=0.0), "sigma must be > 0"),
        (lambda: CUSUM(warmup=1), "warmup must be"),
        (lambda: CUSUM(fir=1.0), "fir must be"),
        (lambda: EWMA(lam=1.5), "lam must be"),
        (lambda: EWMA(limits="fast"), "limits must be"),
        (lambda: BOCPD(hazard=0.0), "hazard must be"),
        (lambda: BOCPD(window=300, max_run=256), "window must be"),
        (lambda: BOCPD(prior=(0, 1, 1)), "prior must be"),
        (lambda: BOCPD(prior=(0, 1, -1, 1)), "prior needs"),
        (lambda: PeerComparison(groups=["a", "b"]), "integer labels"),
        (lambda: PeerComparison(groups=[[0, 1]]), "1-D"),
        (lambda: PeerComparison(groups=[0, 1], n_streams=3), "n_streams=3"),
        (lambda: RobustBaseline(method="mean"), "method must be"),
        (lambda: RobustBaseline(window=4, min_count=5), "min_count"),
        (lambda: CUSUM(n_streams=-1), "n_streams"),
    ],
)
def test_bad_parameters(factory, match):
    with pytest.raises(InputError, match=match):
        det = factory()
        det.update(np.ones(2))


def test_update_returns_fresh_array_and_views_are_read_only(rng):
    det = CUSUM(mu=0.0, sigma=1.0, n_streams=2)
    a = det.update([10.0, 0.0])
    b = det.update([0.0, 0.0])
    assert a is not b
    with pytest.raises(ValueError):
        det.statistic_[0] = 1.0


def test_empty_detector_state():
    det = CUSUM()
    d = det.state_dict()
    other = CUSUM()
    other.load_state_dict(d)
    assert other.n_streams_ == 0
    assert det.add_streams(3).tolist() == [0, 1, 2]
    assert det.update(np.zeros(3)).shape == (3,)


@pytest.mark.parametrize("method", ["median", "ewma"])
def test_robust_baseline_ignores_spikes_and_follows_shifts(rng, method):
    """Checkpoint steps (30x, every 50 steps) do not move the baseline; a real shift does."""
    T = 600
    x = 0.2 * np.exp(rng.normal(0.0, 0.01, size=(T, 1)))
    x[::50] *= 30.0
    x[300:] *= 1.2
    rb = RobustBaseline(method=method, window=64, alpha=0.05, threshold=6.0, positive=True)
    res = rb.run(x)
    before = res.mu[250:299, 0]
    assert np.all(np.abs(before / 0.2 - 1) < 0.02)  # a plain mean would sit ~+58 % high
    assert abs(res.mu[-1, 0] / 0.24 - 1) < 0.02  # follows the 20 % shift
    assert res.alarm[::50, 0][1:].all()  # the spikes themselves are flagged
    # the sigma is the noise's (1 % of 0.2), not the spikes'
    assert 0.5 * 0.002 < res.sigma[299, 0] < 2.0 * 0.002


def test_learned_baseline_is_robust_to_spikes_in_warmup(rng):
    x = rng.normal(1.0, 0.01, size=(300, 4))
    x[5:100:10] = 20.0  # every tenth warm-up sample is a spike
    det = CUSUM(warmup=100, side="upper", h=8.0)
    res = det.run(x)
    np.testing.assert_allclose(det.mu_, 1.0, atol=0.005)
    np.testing.assert_allclose(det.sigma_, 0.01, rtol=0.35)
    assert not res.alarm.any()

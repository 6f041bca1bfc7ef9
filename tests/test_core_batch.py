"""The batch paths of CUSUM/EWMA ``run``: bulk warm-up, row chunks, lazy onsets, input layouts.

Every case is checked against a loop of ``update`` (bit for bit, state
included) and, where a reference exists, against the plain NumPy/Python
references of tests/test_core_kernels.py.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from degrade.core import CUSUM, EWMA, _base
from degrade.core._kernels_common import (
    _fit_sorted,
    _robust_mu_sigma,
    common_params,
)
from tests.test_core_detectors import same_state
from tests.test_core_kernels import noisy_block, ref_cusum, ref_ewma

MAKERS = {
    "cusum": lambda **kw: CUSUM(k=0.5, h=4.0, **kw),
    "cusum_fir_relearn": lambda **kw: CUSUM(k=0.5, h=4.0, fir=0.5, relearn=True, **kw),
    "cusum_adapt": lambda **kw: CUSUM(k=0.5, h=4.0, adapt=0.02, **kw),
    "ewma": lambda **kw: EWMA(lam=0.2, L=2.8, **kw),
    "ewma_relearn_upper": lambda **kw: EWMA(lam=0.2, L=2.8, relearn=True, side="upper", **kw),
}


def loop_of_updates(det, X):
    alarms = np.zeros(X.shape, dtype=bool)
    for t, x in enumerate(X):
        alarms[t] = det.update(x)
    return alarms


def check_run_equals_updates(make, X, *, split=None):
    a, b = make(), make()
    if split is None:
        res = a.run(X)
        alarm = res.alarm
    else:
        parts = [a.run(X[i:j]) for i, j in zip([0, *split], [*split, len(X)])]
        alarm = np.concatenate([p.alarm for p in parts])
    np.testing.assert_array_equal(alarm, loop_of_updates(b, X))
    same_state(a, b)
    assert a.t_ == b.t_ == len(X)
    return alarm


# -- the bulk warm-up estimate ----------------------------------------------------


@pytest.mark.parametrize("W", [3, 4, 20, 99, 100])
def test_fit_sorted_equals_robust_mu_sigma_bit_for_bit(rng, W):
    P = np.array(
        common_params(
            positive=False,
            log=False,
            warmup=W,
            relearn=False,
            adapt=0.0,
            clip=3.0,
            floor_abs=0.0,
            floor_rel=1e-3,
            side=3,
        )
    )
    n = 23  # not a multiple of the 4 streams fitted side by side
    B = rng.normal(5.0, 0.1, size=(n, W))
    B[0] = 5.0  # constant: MAD 0, sigma at the floor
    B[1] = np.round(B[1], 1)  # ties
    B[2, : W // 3] += 40.0  # a third of the warm-up spiked
    B[3] = np.arange(W, dtype=float) ** 3  # skewed
    idx = np.arange(n, dtype=np.int64)[::-1].copy()  # any order of streams
    S = np.full((8, n), np.nan)
    Bs = np.sort(B[idx], axis=1)
    _fit_sorted(S, B, Bs, idx, P)
    for j in range(n):
        mu, sigma = _robust_mu_sigma(B[j].copy(), W, P)
        assert S[4, j] == mu and S[5, j] == sigma, j


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_fresh_block_with_clean_warmup(rng, name):
    """The common case: every stream's warm-up is valid and inside the block (the fast path)."""
    X = noisy_block(rng, 160, 37, loc=3.0, p_nan=0.0)
    X[:60] = np.abs(X[:60]) + 1.0
    check_run_equals_updates(lambda: MAKERS[name](warmup=50), X)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_missing_samples_inside_the_warmup(rng, name):
    """Streams with NaN/inf in their warm-up window fill it later (tile path), at different rows."""
    X = noisy_block(rng, 200, 41, loc=3.0, p_nan=0.2)
    check_run_equals_updates(lambda: MAKERS[name](warmup=30), X)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_warmup_spanning_blocks_and_block_splits(rng, name):
    X = noisy_block(rng, 220, 11, loc=3.0)
    # blocks shorter than the warm-up, a one-row block, and a long one
    check_run_equals_updates(lambda: MAKERS[name](warmup=40), X, split=[7, 25, 26, 90])


def test_added_streams_learn_while_others_alarm(rng):
    X = noisy_block(rng, 300, 9, loc=3.0)
    for make in (MAKERS["cusum"], MAKERS["ewma"]):
        a, b = make(warmup=20), make(warmup=20)
        a.run(X[:100, :6])
        loop_of_updates(b, X[:100, :6])
        a.add_streams(3)
        b.add_streams(3)
        res = a.run(X[100:])
        np.testing.assert_array_equal(res.alarm, loop_of_updates(b, X[100:]))
        same_state(a, b)
        assert res.alarm[:, :6].any()


def test_cusum_matches_reference_across_chunks(rng, monkeypatch):
    """A block cut into many chunks (small chunk size) gives the reference result."""
    monkeypatch.setattr(_base, "_CHUNK_BYTES", 8 * 7 * 5)  # 5 rows of 7 streams
    X = noisy_block(rng, 260, 7, loc=3.0)
    kw = dict(k=0.5, h=4.0, fir=0.5, relearn=True)
    res = CUSUM(warmup=20, **kw).run(X)
    alarm, stat, onset = ref_cusum(X, warmup=20, **kw)
    assert alarm.any()
    np.testing.assert_array_equal(res.alarm, alarm)
    np.testing.assert_allclose(res.statistic, stat, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res.onset, onset)
    check_run_equals_updates(lambda: CUSUM(warmup=20, log=True, adapt=0.01), np.exp(X / 10))


def test_ewma_matches_reference_across_chunks(rng, monkeypatch):
    monkeypatch.setattr(_base, "_CHUNK_BYTES", 8 * 6 * 3)
    X = noisy_block(rng, 240, 6, loc=-2.0, scale=0.5)
    res = EWMA(lam=0.2, L=2.8, warmup=25, relearn=True).run(X)
    alarm, stat = ref_ewma(X, 0.2, 2.8, warmup=25, relearn=True)
    assert alarm.any()
    np.testing.assert_array_equal(res.alarm, alarm)
    np.testing.assert_allclose(res.statistic, stat, rtol=1e-9, atol=1e-12)


# -- input layouts and sizes --------------------------------------------------------


@pytest.mark.parametrize("name", ["cusum", "ewma"])
def test_input_layouts_give_the_same_result(rng, name):
    X = np.exp(noisy_block(rng, 150, 10, loc=-1.0, scale=0.05, p_neg=0.02))
    base = MAKERS[name](warmup=30, log=True).run(X)
    wide = np.exp(noisy_block(rng, 150, 20, loc=-1.0, scale=0.05))
    wide[:, ::2] = X
    layouts = {
        "fortran": np.asfortranarray(X),
        "strided view": wide[:, ::2],
        "reversed rows twice": X[::-1][::-1],
        "list": X.tolist(),
    }
    for label, Y in layouts.items():
        res = MAKERS[name](warmup=30, log=True).run(Y)
        np.testing.assert_array_equal(res.alarm, base.alarm, err_msg=label)
        np.testing.assert_array_equal(res.statistic, base.statistic, err_msg=label)
    # float32 input is the float64 run of the same (rounded) values
    X32 = X.astype(np.float32)
    res32 = MAKERS[name](warmup=30, log=True).run(X32)
    ref32 = MAKERS[name](warmup=30, log=True).run(X32.astype(np.float64))
    np.testing.assert_array_equal(res32.statistic, ref32.statistic)
    np.testing.assert_array_equal(res32.alarm, ref32.alarm)


@pytest.mark.parametrize("name", ["cusum", "ewma"])
def test_one_stream_and_empty_blocks(rng, name):
    X = noisy_block(rng, 120, 1, loc=3.0)
    check_run_equals_updates(lambda: MAKERS[name](warmup=15), X)
    det = MAKERS[name](warmup=15)
    res = det.run(np.empty((0, 4)))
    assert res.alarm.shape == res.statistic.shape == (0, 4)
    assert det.t_ == 0 and det.n_streams_ == 4
    res = MAKERS[name](warmup=15).run(np.empty((5, 0)))
    assert res.alarm.shape == (5, 0)


def test_nan_inf_zero_and_negative_samples_with_log(rng):
    X = np.exp(noisy_block(rng, 200, 8, loc=-1.0, scale=0.05))
    X[rng.random(X.shape) < 0.05] = 0.0
    X[rng.random(X.shape) < 0.03] = -3.0
    X[rng.random(X.shape) < 0.02] = np.inf
    X[rng.random(X.shape) < 0.02] = -np.inf
    for name in ("cusum", "ewma"):
        det = MAKERS[name](warmup=20, log=True)
        res = det.run(X)
        bad = ~(np.isfinite(X) & (X > 0))
        np.testing.assert_array_equal(det.n_missing_, bad.sum(axis=0))
        assert np.isnan(res.statistic[bad]).all()
        assert not res.alarm[bad].any()
        check_run_equals_updates(lambda name=name: MAKERS[name](warmup=20, log=True), X)


def test_safe_log_matches_masked_log(rng):
    x = np.exp(rng.normal(0.0, 5.0, size=1000))
    x[::7] = 0.0
    x[::11] = -1.0
    x[::13] = np.nan
    x[::17] = np.inf
    want = np.full(x.shape, np.nan)
    np.log(x, out=want, where=x > 0)
    got = _base._safe_log(x)
    assert np.array_equal(got, want, equal_nan=True)
    out = np.empty_like(x)
    assert _base._safe_log(x, out=out) is out
    assert np.array_equal(out, want, equal_nan=True)


# -- the onsets, kept per alarm ---------------------------------------------------------


def test_onset_is_built_on_first_read_and_pickles(rng):
    X = noisy_block(rng, 300, 7, loc=3.0)
    res = CUSUM(k=0.5, h=4.0, warmup=20).run(X)
    assert "onset" in res._fields
    assert "onset" not in vars(res)
    _, _, onset = ref_cusum(X, 0.5, 4.0, warmup=20)
    np.testing.assert_array_equal(res.onset, onset)
    assert res.onset is res.onset  # built once
    res2 = CUSUM(k=0.5, h=4.0, warmup=20).run(X)
    back = pickle.loads(pickle.dumps(res2))
    np.testing.assert_array_equal(back.onset, onset)
    np.testing.assert_array_equal(back.alarm, res2.alarm)
    with pytest.raises(AttributeError):
        res.no_such_field  # noqa: B018


def test_an_alarm_at_every_sample_fits_the_onset_scratch(rng, monkeypatch):
    """The scratch for onsets is sized by an upper bound; the worst case (every sample alarms) fits."""
    X = rng.normal(10.0, 1.0, size=(90, 5))
    res = CUSUM(k=0.0, h=0.0, mu=0.0, sigma=1.0).run(X)
    assert res.alarm.all()
    np.testing.assert_array_equal(res.onset, np.arange(90)[:, None] - 1 + np.zeros((1, 5), int))
    # a warm-up chunk (learning and ready streams side by side), then small chunks
    monkeypatch.setattr(_base, "_CHUNK_BYTES", 8 * 8 * 3)
    for make in (lambda: CUSUM(k=0.0, h=0.0, warmup=10), lambda: EWMA(lam=1.0, L=1e-9, warmup=10)):
        a, b = make(), make()
        Y = rng.normal(0.0, 1.0, size=(200, 8))
        Y[30:] += 50.0
        a.run(Y[:20, :5])
        loop_of_updates(b, Y[:20, :5])
        a.add_streams(3)
        b.add_streams(3)
        res = a.run(Y[20:])
        np.testing.assert_array_equal(res.alarm, loop_of_updates(b, Y[20:]))
        same_state(a, b)
        assert res.alarm[20:].all()
        if isinstance(a, CUSUM):
            assert (res.onset[res.alarm] >= 0).all()


def test_binary_search_mad_equals_merge_walk(rng):
    from degrade.core._kernels_common import _sorted_mad, _sorted_mad_bs, _sorted_median

    for trial in range(3000):
        c = int(rng.integers(1, 130))
        x = rng.normal(size=c)
        if trial % 3 == 0:
            x = np.round(x, 1)  # ties
        if trial % 7 == 0:
            x[: c // 3] += 30.0  # one-sided spikes
        if trial % 11 == 0:
            x[:] = 1.0  # MAD 0
        s = np.sort(x)
        med = _sorted_median(s, c)
        assert _sorted_mad_bs(s, c, med) == _sorted_mad(s, c, med), (c, s)

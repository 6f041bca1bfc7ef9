"""The verdict engine's per-step peer kernels against the core's and NumPy's.

``_sort_prefix`` gives exactly ``np.sort``'s array; ``_loo_index`` gives the
leave-one-out median of :func:`degrade.core._kernels_peer._loo_deviation`
bit for bit, without its binary search.
"""

from __future__ import annotations

import numpy as np
import pytest

from degrade.core._kernels_peer import _loo_deviation, _loo_median
from degrade.verdict._kernels import _loo_index, _sort_prefix


def _cases(rng):
    yield rng.standard_normal(250)  # the common case: peers' log timings
    yield np.log(0.2) + 0.02 * rng.standard_t(3, 250)  # heavy tails: crowded central buckets
    x = 0.02 * rng.standard_normal(250)
    x[7] = 40.0  # one extreme value: every other value in one bucket
    yield x
    yield np.round(rng.standard_normal(300), 1)  # many ties
    yield np.full(64, -1.6)  # all equal
    yield np.array([1.0, 1.0 + 2e-16, 1.0 + 4e-16] * 20)  # a range of a few ulps
    yield np.r_[np.full(30, 5e-324), np.zeros(30)]  # subnormal range: the scale overflows
    yield rng.standard_normal(40) * 1e300  # huge range: max - min overflows
    for m in (0, 1, 2, 3, 23, 24, 25, 1000):
        yield rng.standard_normal(m)
    x = rng.standard_normal(100)
    x[[3, 50]] = np.nan
    x[10] = np.inf
    x[11] = -np.inf
    yield x  # non-finite: np.sort's order (NaN last)
    yield np.sort(rng.standard_normal(100))  # already sorted
    yield np.sort(rng.standard_normal(100))[::-1].copy()  # reversed


@pytest.mark.parametrize("seed", range(3))
def test_sort_prefix_equals_np_sort(seed):
    rng = np.random.default_rng(seed)
    for x in _cases(rng):
        m = x.size
        for k in (m, m // 2):  # the whole array and a prefix; the rest is untouched
            a = np.r_[x, [7.0, -7.0]]
            tmp = np.full(a.size, np.nan)
            cnt = np.full(a.size + 1, -5, dtype=np.int64)
            _sort_prefix(a, k, tmp, cnt)
            np.testing.assert_array_equal(a[:k], np.sort(x[:k]))
            np.testing.assert_array_equal(a[k:], np.r_[x[k:], [7.0, -7.0]])


@pytest.mark.parametrize("seed", range(3))
def test_loo_index_gives_the_cores_loo_deviation(seed):
    rng = np.random.default_rng(seed)
    for c in [2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 64, 65, 250]:
        for ties in (False, True):
            x = rng.standard_normal(c)
            if ties:
                x = np.round(x, 0)  # runs of equal values across the middle
            sv = np.r_[np.sort(x), [np.inf, -np.inf]]  # entries past c are ignored
            for v in x:
                ref = _loo_deviation(sv, c, v)
                got = v - _loo_median(sv, c, _loo_index(sv, c, v))
                assert got == ref or (np.isnan(got) and np.isnan(ref)), (c, v, got, ref)
                # and the reference is the median of the others
                others = np.delete(x, np.flatnonzero(x == v)[0])
                assert ref == v - np.median(others)

"""The pivot kernels of ``degrade analyze`` (rows → (T, N) blocks) against NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

pl = require("polars")

from degrade.analyze import _blocks as B  # noqa: E402
from degrade.analyze._plan import _indexed  # noqa: E402
from degrade.analyze._warnings import WarningLog  # noqa: E402


def _ref_axis(values):
    axis = np.unique(values)
    return axis, np.searchsorted(axis, values)


@pytest.mark.parametrize("kind", ["contiguous", "gaps", "sparse", "one", "negative"])
def test_axis_index_matches_unique_searchsorted(kind, rng):
    n = 500
    if kind == "contiguous":
        v = rng.permutation(np.repeat(np.arange(40, 90), 10))
    elif kind == "gaps":
        v = rng.choice(np.arange(0, 400, 3), n)
    elif kind == "sparse":
        v = rng.choice([0, 10**6, 10**12], n)
    elif kind == "one":
        v = np.full(n, 7)
    else:
        v = rng.integers(-50, 50, n)
    axis, pos = B._axis_index(v.astype(np.int64))
    ra, rp = _ref_axis(v)
    np.testing.assert_array_equal(axis, ra)
    np.testing.assert_array_equal(pos, rp)
    assert axis.dtype == np.int64 and pos.dtype == np.int64


def test_first_rows_keeps_the_first_row_of_each_cell(rng):
    T, N, rows = 30, 9, 400  # more rows than cells: many duplicates
    t = rng.integers(0, T, rows)
    d = rng.integers(0, N, rows)
    flat, keep, present, n_dup = B._first_rows(t, d, N, T * N)
    np.testing.assert_array_equal(flat, t * N + d)
    # reference: a stable sort keeps input order among equal cells
    order = np.argsort(flat, kind="stable")
    ref = np.ones(rows, dtype=bool)
    sf = flat[order]
    ref[order[1:][sf[1:] == sf[:-1]]] = False
    np.testing.assert_array_equal(keep, ref)
    assert n_dup == rows - len(np.unique(flat))
    np.testing.assert_array_equal(present, np.bincount(d, minlength=N) > 0)


def test_scatter_values_marks_and_counts_bad_values(rng):
    v = rng.lognormal(-2, 0.1, 50)
    v[[1, 5, 9, 13, 17]] = [np.nan, np.inf, 0.0, -1.0, -np.inf]
    flat = rng.permutation(80)[:50]
    for timing in (True, False):
        block, n_bad = B._scatter_values(flat, v, 80, timing)
        ref = np.full(80, np.nan)
        x = v.copy()
        bad = (~(x > 0) | np.isinf(x)) if timing else np.isinf(x)
        x[bad] = np.nan
        ref[flat] = x
        np.testing.assert_array_equal(block, ref)
        assert n_bad == int(bad.sum())


def test_rows_of_unknown_devices_are_dropped():
    df = pl.DataFrame(
        {
            "device": ["a", "x", "b", None],
            "step": [0, 0, 1, 1],
            "compute_time": [1.0, 2.0, 3.0, 4.0],
        }
    )
    meta = _indexed(pl.DataFrame({"device": ["b", "a"]}))
    kept, d_idx = B._device_index(df, meta)
    assert kept.get_column("device").to_list() == ["a", "b"]
    np.testing.assert_array_equal(d_idx, [0, 1])


def test_device_index_follows_meta_d_not_position():
    # _d is whatever the plan assigned; the Enum's codes are positions, mapped through _d
    df = pl.DataFrame({"device": ["a", "b", "c", "a"], "step": [0, 0, 0, 1]})
    meta = pl.DataFrame({"device": ["a", "b", "c"], "_d": [2, 0, 1]})
    _, d_idx = B._device_index(df, meta)
    np.testing.assert_array_equal(d_idx, [2, 0, 1, 2])


def test_timing_block_of_shuffled_rows_equals_the_sorted_pivot(rng):
    devs = [f"gpu{i:02d}" for i in range(12)]
    T = 50
    v = rng.lognormal(-2, 0.05, (T, len(devs)))
    df = pl.DataFrame(
        {
            "device": np.tile(devs, T),
            "step": np.repeat(np.arange(100, 100 + T), len(devs)),
            "compute_time": v.ravel(),
        }
    )
    df = df[rng.permutation(df.height)]
    block = B.timing_block(
        df, _indexed(df.select("device").unique()), ["compute_time"], log=WarningLog()
    )
    assert block.devices == devs
    np.testing.assert_array_equal(block.steps, np.arange(100, 100 + T))
    np.testing.assert_array_equal(block.values["compute_time"], v)

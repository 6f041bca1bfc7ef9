"""segment() with default settings on the real annotated series of datasets/changepoint/."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest

from degrade.changepoint import covering, f1_score, segment
from degrade.errors import DataWarning
from tests.conftest import require

ROOT = os.path.join(os.path.dirname(__file__), "..", "datasets", "changepoint")
with open(os.path.join(ROOT, "annotations.json")) as fh:
    ANNOTATIONS = {k: {a: list(v) for a, v in ann.items()} for k, ann in json.load(fh).items()}
LENGTHS = {
    "brent_spot": 500,
    "businv": 330,
    "construction": 319,
    "gdp_argentina": 59,
    "gdp_japan": 58,
    "nile": 100,
    "ozone": 54,
    "rail_lines": 37,
    "uk_coal_employ": 105,
    "us_population": 816,
    "well_log": 675,
}


def load(name: str) -> np.ndarray:
    """The ``value`` column of ``<name>.csv``; an empty field is NaN."""
    with open(os.path.join(ROOT, f"{name}.csv")) as fh:
        header = fh.readline().strip()
        assert header == "time,value", f"{name}.csv: header {header!r}"
        rows = [line.rstrip("\n").split(",") for line in fh if line.strip()]
    return np.array([float(v) if v else math.nan for _, v in rows])


def test_every_series_is_shipped_with_annotations_in_range():
    assert set(ANNOTATIONS) == set(LENGTHS)
    for name, n in LENGTHS.items():
        x = load(name)
        assert x.shape == (n,), name
        ann = ANNOTATIONS[name]
        assert len(ann) == 5, name  # five TCPD annotators each
        for cps in ann.values():
            assert all(0 < c < n for c in cps), name
    # only the coal series has gaps (1921 and 1926, as in the source)
    assert [name for name in LENGTHS if np.isnan(load(name)).any()] == ["uk_coal_employ"]
    assert np.flatnonzero(np.isnan(load("uk_coal_employ"))).tolist() == [8, 13]


def test_nile_is_statsmodels_nile():
    nile = require("statsmodels.datasets.nile")
    ref = nile.load().data
    np.testing.assert_array_equal(load("nile"), np.asarray(ref["volume"], dtype=float))


def _default_scores():
    rows = {}
    for name in sorted(LENGTHS):
        x = load(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            bk = segment(x).breakpoints.tolist()
        n = len(x)
        ann = ANNOTATIONS[name]
        rows[name] = (
            f1_score(ann, bk, n),
            covering(ann, bk, n),
            f1_score(ann, [], n),
            covering(ann, [], n),
            bk,
        )
    return rows


def test_defaults_beat_the_no_change_baseline_on_average():
    rows = _default_scores()
    f1, cover, f1_zero, cover_zero = (np.mean([r[i] for r in rows.values()]) for i in range(4))
    # measured at commit time: F1 0.794 / cover 0.640 against 0.639 / 0.544
    assert f1 > f1_zero + 0.05
    assert cover > cover_zero + 0.03
    # the classic: one change, the year after the Aswan dam (1898)
    assert rows["nile"][4] == [28]
    # a trend is not shattered into dozens of steps (107 under the old default)
    assert len(rows["us_population"][4]) < 20


def test_missing_years_are_skipped_and_indices_stay_in_calendar_order():
    x = load("uk_coal_employ")
    with pytest.warns(DataWarning, match="skipped 2 missing"):
        seg = segment(x)
    assert seg.n == 105 and seg.n_missing == 2
    assert not set(seg.breakpoints.tolist()) & {8, 13}
    # the same search on the series with the gaps removed, mapped back by hand
    keep = np.flatnonzero(np.isfinite(x))
    dense = segment(x[keep])
    assert seg.breakpoints.tolist() == keep[dense.breakpoints].tolist()


@pytest.mark.parametrize("name", ["nile", "well_log", "businv"])
def test_real_series_identical_to_ruptures(name):
    rpt = require("ruptures")
    from ruptures.costs import CostLinear

    x = load(name)
    n = len(x)
    # a penalty in the data's units: BIC-like with the MAD noise variance
    d = np.diff(x)
    s2 = (1.4826 * np.median(np.abs(d - np.median(d)))) ** 2 / 2
    pen = 3.0 * math.log(n) * s2
    theirs = rpt.Pelt(model="l2", min_size=5, jump=1).fit(x).predict(pen=pen)
    assert segment(x, cost="l2", penalty=pen, min_size=5).to_ruptures() == theirs
    theirs = rpt.Binseg(model="l2", min_size=5, jump=1).fit(x).predict(n_bkps=3)
    assert segment(x, cost="l2", method="binseg", n_bkps=3, min_size=5).to_ruptures() == theirs
    design = np.c_[x, np.ones(n), np.arange(n, dtype=float)]
    theirs = rpt.Pelt(custom_cost=CostLinear(), min_size=5, jump=5).fit(design).predict(pen=pen)
    assert segment(x, cost="linear", penalty=pen, min_size=5, jump=5).to_ruptures() == theirs

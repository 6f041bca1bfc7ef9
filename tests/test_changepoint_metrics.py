"""F1 and covering as defined by van den Burg and Williams (2020), TCPDBench."""

from __future__ import annotations

import numpy as np
import pytest

from degrade.changepoint import covering, f1_score
from degrade.errors import InputError

# --- a literal transcription of TCPDBench's reference metrics, for cross-checks ---


def _tp_ref(T, X, margin=5):
    X = set(X)
    TP = set()
    for tau in sorted(T):
        close = sorted((abs(tau - x), x) for x in X if abs(tau - x) <= margin)
        if not close:
            continue
        TP.add(tau)
        X.remove(close[0][1])
    return TP


def f1_ref(annotations, predictions, margin=5):
    Tks = {k + 1: set(annotations[uid]) | {0} for k, uid in enumerate(annotations)}
    X = set(predictions) | {0}
    Tstar = set().union(*Tks.values())
    P = len(_tp_ref(Tstar, X, margin)) / len(X)
    R = sum(len(_tp_ref(Tks[k], X, margin)) / len(Tks[k]) for k in Tks) / len(Tks)
    return P * R / (0.5 * R + 0.5 * P)


def _partition_ref(locations, n):
    partition, current = [], set()
    cps = iter(sorted(set(locations)))
    cp = next(cps, None)
    for i in range(n):
        if i == cp:
            if current:
                partition.append(current)
            current = set()
            cp = next(cps, None)
        current.add(i)
    partition.append(current)
    return partition


def covering_ref(annotations, predictions, n):
    pX = _partition_ref(predictions, n)
    scores = []
    for uid in annotations:
        A = _partition_ref(annotations[uid], n)
        c = sum(len(R) * max(len(R & Rp) / len(R | Rp) for Rp in pX) for R in A)
        scores.append(c / n)
    return sum(scores) / len(scores)


# --- hand-worked cases -----------------------------------------------------------


def test_f1_hand_worked():
    # perfect: {0, 50} vs {0, 52}: P = R = 1
    assert f1_score([50], [52]) == 1.0
    # outside the margin: P = 1/2 (only 0), R = 1/2
    assert f1_score([50], [56]) == pytest.approx(0.5)
    assert f1_score([50], [55]) == 1.0  # margin is inclusive
    # no prediction at all: X = {0}: P = 1, R = 1/2 -> F = 2/3
    assert f1_score([50], []) == pytest.approx(2 / 3)
    # two predictions near one annotation: only one matches. X = {0, 49, 51}:
    # P = 2/3, R = 1 -> F = 0.8
    assert f1_score([50], [49, 51]) == pytest.approx(0.8)
    # index 0 given explicitly changes nothing
    assert f1_score([0, 50], [0, 49, 51]) == pytest.approx(0.8)


def test_f1_two_annotators_hand_worked():
    ann = {"a": [30], "b": [32, 70]}
    # union {0, 30, 32, 70}; X = {0, 31}: 31 matches one of 30/32 -> TP 2, P = 1
    # recall a: {0, 30} -> 2/2; b: {0, 32, 70} -> 2/3; R = 5/6; F = 10/11
    assert f1_score(ann, [31]) == pytest.approx(10 / 11)
    # a list of lists is several annotators too
    assert f1_score([[30], [32, 70]], [31]) == pytest.approx(10 / 11)


def test_covering_hand_worked():
    n = 100
    assert covering([50], [50], n) == 1.0
    # truth [0,50) [50,100) vs one segment: each has Jaccard 1/2
    assert covering([50], [], n) == pytest.approx(0.5)
    # truth one segment vs prediction split at 25: best Jaccard 75/100
    assert covering([], [25], n) == pytest.approx(0.75)
    # truth {0..59, 60..99} vs pred {0..39, 40..99}:
    # A1 = [0,60): J with [0,40) = 40/60, with [40,100) = 20/100 -> 2/3
    # A2 = [60,100): J with [40,100) = 40/60 -> 2/3  => (60*2/3 + 40*2/3)/100
    assert covering([60], [40], n) == pytest.approx(2 / 3)
    # two annotators average
    assert covering({"a": [50], "b": []}, [50], n) == pytest.approx((1.0 + 0.5) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_reference_transcription(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(20, 300))
        k = int(rng.integers(1, 4))
        ann = {
            i: sorted(set(rng.integers(1, n, size=int(rng.integers(0, 5))).tolist()))
            for i in range(k)
        }
        pred = sorted(set(rng.integers(0, n, size=int(rng.integers(0, 8))).tolist()))
        margin = int(rng.integers(0, 10))
        assert f1_score(ann, pred, n, margin=margin) == pytest.approx(
            f1_ref(ann, pred, margin), rel=1e-12
        )
        assert covering(ann, pred, n) == pytest.approx(covering_ref(ann, pred, n), rel=1e-12)


def test_numpy_inputs_and_segmentation_breakpoints():
    from degrade.changepoint import segment

    x = np.r_[np.zeros(40), np.full(40, 5.0)] + np.random.default_rng(0).normal(0, 0.1, 80)
    seg = segment(x)
    assert f1_score(np.array([40]), seg.breakpoints, 80) == 1.0
    assert covering(np.array([40]), seg.breakpoints, 80) == 1.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: f1_score([50], [1.5]), "integer indices"),
        (lambda: f1_score([-1], [5]), "non-negative"),
        (lambda: f1_score([50], [5], margin=-1), "margin"),
        (lambda: f1_score([150], [5], 100), "outside a series of length n=100"),
        (lambda: covering([50], [100], 100), "outside"),
        (lambda: covering([50], [5], 0), "n must be"),
        (lambda: f1_score({}, [5]), "at least one annotator"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()

"""Change-point scores of van den Burg and Williams (2020), TCPDBench.

"An Evaluation of Change Point Detection Algorithms", arXiv:2003.06222; the
definitions follow the benchmark's reference code (``cpdbench_metrics``):

- F1: index 0 counts as a change point for every annotator and for the
  prediction; a prediction within ``margin`` of an annotation is a true
  positive, and each annotation is matched at most once (to the closest
  prediction); precision is over the union of all annotators' change points,
  recall is averaged over annotators.
- Covering: the annotators' average of
  ``sum_{A in annotation} |A| max_{P in prediction} |A & P| / |A | P| / n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from degrade.errors import InputError

__all__ = ["covering", "f1_score"]


def _annotators(annotations) -> list[list[int]]:
    """Normalise one annotator's list, a list of lists, or a mapping of them."""
    if isinstance(annotations, Mapping):
        groups = list(annotations.values())
    else:
        if isinstance(annotations, np.ndarray) and annotations.ndim == 1:
            groups = [annotations]
        elif isinstance(annotations, (Sequence, np.ndarray)) and any(
            isinstance(a, (Sequence, np.ndarray)) and not isinstance(a, str) for a in annotations
        ):
            groups = list(annotations)
        else:
            groups = [annotations]
    if not groups:
        raise InputError("annotations: at least one annotator is needed")
    return [_locations(g, "annotations") for g in groups]


def _locations(values: Iterable, what: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                v = int(v)
            else:
                raise InputError(f"{what} must hold integer indices, got {v!r}")
        if v < 0:
            raise InputError(f"{what} must hold non-negative indices, got {v}")
        out.append(int(v))
    return out


def _true_positives(truth: Iterable[int], pred: set[int], margin: int) -> int:
    left = set(pred)
    tp = 0
    for tau in sorted(truth):
        close = sorted((abs(tau - x), x) for x in left if abs(tau - x) <= margin)
        if not close:
            continue
        tp += 1
        left.remove(close[0][1])
    return tp


def f1_score(annotations, predictions, n: int | None = None, margin: int = 5) -> float:
    """F1 of predicted change points against one or several annotators.

    Parameters
    ----------
    annotations : sequence of int, sequence of sequences, or mapping
        Change points (first index of each new segment) of one annotator,
        or of several (a list of lists, or ``{annotator: list}``).
    predictions : sequence of int
        Predicted change points, e.g. ``Segmentation.breakpoints``.
    n : int, optional
        Series length; points at or beyond ``n`` are an error if given.
    margin : int
        A prediction within ``margin`` samples of an annotation counts.

    Returns
    -------
    float
        ``2 P R / (P + R)``, with index 0 a change point in every set.

    Examples
    --------
    >>> f1_score([50], [52])
    1.0
    >>> round(f1_score([50], [60]), 4)  # P = 1/2, R = 1/2
    0.5
    >>> round(f1_score({"a": [50], "b": [50, 80]}, [50]), 4)  # P = 1, R = (1 + 2/3) / 2
    0.9091
    """
    groups = _annotators(annotations)
    pred = set(_locations(predictions, "predictions"))
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise InputError(f"margin must be an integer >= 0, got {margin!r}")
    if n is not None:
        _check_range(groups, pred, n)
    truth = [set(g) | {0} for g in groups]
    pred.add(0)
    union = set().union(*truth)
    precision = _true_positives(union, pred, margin) / len(pred)
    recall = sum(_true_positives(t, pred, margin) / len(t) for t in truth) / len(truth)
    return float(2.0 * precision * recall / (precision + recall))


def _check_range(groups, pred, n) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be an integer >= 1, got {n!r}")
    for what, locs in [("predictions", pred)] + [("annotations", g) for g in groups]:
        bad = [v for v in locs if v >= n]
        if bad:
            raise InputError(f"{what} hold index {bad[0]}, outside a series of length n={n}")


def _partition(locations: Iterable[int], n: int) -> np.ndarray:
    """Segment boundaries [0, c1, ..., n] from change points (those in (0, n))."""
    inner = sorted({v for v in locations if 0 < v < n})
    return np.asarray([0, *inner, n], dtype=np.int64)


def _cover_single(pred: np.ndarray, truth: np.ndarray, n: int) -> float:
    total = 0.0
    j0 = 0
    for a, b in zip(truth[:-1], truth[1:]):
        best = 0.0
        # predicted segments overlapping [a, b) are contiguous; one disjoint
        # neighbour is enough since Jaccard is 0 for the rest
        while pred[j0 + 1] <= a:
            j0 += 1
        j = j0
        while j < len(pred) - 1 and pred[j] < b:
            c, d = pred[j], pred[j + 1]
            inter = min(b, d) - max(a, c)
            union = max(b, d) - min(a, c)
            best = max(best, inter / union)
            j += 1
        total += (b - a) * best
    return total / n


def covering(annotations, predictions, n: int) -> float:
    """Segmentation covering of the predicted partition over the annotated ones.

    Parameters
    ----------
    annotations : sequence of int, sequence of sequences, or mapping
        As in :func:`f1_score`.
    predictions : sequence of int
        Predicted change points.
    n : int
        Series length.

    Returns
    -------
    float
        In (0, 1]; 1 when the partitions agree.

    Examples
    --------
    >>> covering([50], [50], 100)
    1.0
    >>> covering([50], [], 100)  # 50 * 0.5 + 50 * 0.5, over 100
    0.5
    """
    groups = _annotators(annotations)
    pred = set(_locations(predictions, "predictions"))
    _check_range(groups, pred, n)
    p = _partition(pred, n)
    scores = [_cover_single(p, _partition(g, n), n) for g in groups]
    return float(sum(scores) / len(scores))

"""Per-item alignment metrics between two answer distributions (model vs population).

One home for the measures every stage uses: notebook 02 measures how far a method's training
target is from its population and how far populations are from each other (``js_distance``),
notebook 04 scores models (:func:`item_metrics`), notebook 05 scores consultation checkpoints.
Why one implementation: two Jensen-Shannon distances that differ in normalisation or
logarithm would make "distance of the training target" and "distance of the trained model"
incomparable numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from valuealign.errors import EvaluationError

_TINY = 1e-12  # floor of the mixture in a log-ratio (it is >= half the term's own share)


class DistributionError(EvaluationError):
    """A distribution given to a metric is not one (negative, empty, zero mass, other length)."""


def as_distribution(p: Sequence[float], name: str = "distribution") -> np.ndarray:
    """``p`` as a probability vector (renormalised); :class:`DistributionError` if it is not one."""
    a = np.asarray(p, dtype=float)
    if a.ndim != 1 or a.size == 0 or np.any(a < -1e-12) or not np.isfinite(a).all():
        raise DistributionError(f"{name} must be a non-empty vector of non-negative numbers, got {p!r}")
    s = a.sum()
    if s <= 0:
        raise DistributionError(f"{name} sums to 0: {p!r}")
    return np.clip(a, 0, None) / s


def js_distance(p: Sequence[float], q: Sequence[float], base: float = 2.0) -> float:
    """Jensen-Shannon distance; base 2 (in [0, 1]) is the headline, ``base=math.e`` (in
    [0, sqrt(ln 2)]) is scipy's default. Own implementation, tested against scipy.

    Base 2 takes ``np.log2`` per term, other bases the natural logarithm of the sum divided by
    ``ln(base)``. Why not one expression: the two agree to the last bit or two, and notebook
    02's value-set clustering (UMAP over mean distances between countries) amplifies a last
    bit into other clusters, other datasets and other run ids; base 2 is therefore computed
    exactly as the datasets the runs were trained on were built.
    """
    p, q = as_distribution(p, "p"), as_distribution(q, "q")
    if p.shape != q.shape:
        raise DistributionError(f"distributions differ in length: {p.size} vs {q.size}")
    if not base > 1:
        raise DistributionError(f"logarithm base must be > 1, got {base}")
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        if base == 2:
            return float(np.sum(a[nz] * np.log2(a[nz] / np.maximum(m[nz], _TINY))))
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz]))) / math.log(base)

    return math.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0))


def js_alignment(p: Sequence[float], q: Sequence[float], base: float = 2.0) -> float:
    return 1.0 - js_distance(p, q, base)


def substantive(p: Sequence[float], nonsubstantive: Sequence[bool] | None) -> np.ndarray:
    """Drop "Don't know"/"Refused"-like options and renormalise (uniform if no mass is left)."""
    a = np.asarray(p, dtype=float)
    if nonsubstantive is not None:
        keep = ~np.asarray(nonsubstantive, dtype=bool)
        if keep.size != a.size:
            raise DistributionError(f"nonsubstantive flags ({keep.size}) do not match {a.size} options")
        a = a[keep]
    s = a.sum()
    return a / s if s > 0 else np.full(a.size, 1.0 / max(a.size, 1))


def w1_alignment(p: Sequence[float], q: Sequence[float],
                 nonsubstantive: Sequence[bool] | None = None) -> float:
    """1 - Wasserstein-1 over ordinal positions / (K-1), on the substantive options only."""
    a, b = substantive(p, nonsubstantive), substantive(q, nonsubstantive)
    if a.size < 2:
        return float("nan")
    w1 = float(np.abs(np.cumsum(a) - np.cumsum(b))[:-1].sum())
    return 1.0 - w1 / (a.size - 1)


def entropy_bits(p: Sequence[float]) -> float:
    a = as_distribution(p)
    nz = a > 0
    return float(-np.sum(a[nz] * np.log2(a[nz])))


def majority_match(pred: Sequence[float], target: Sequence[float], tol: float = 1e-9) -> float:
    """1 if the model's top option is one of the population's top options (ties count)."""
    t = np.asarray(target, dtype=float)
    return float(t[int(np.argmax(pred))] >= t.max() - tol)


def entropy_difference(pred: Sequence[float], target: Sequence[float]) -> float:
    """H(model) - H(population) in bits: < 0 over-confident, > 0 under-confident.

    Why not the ratio H(model)/H(population): on a peaked population (0.98, 0.01, 0.01, 0)
    a uniform model's ratio is 12.4, and means over items are dominated by such items; the
    difference is bounded by log2(K) and averages sensibly.
    """
    return entropy_bits(pred) - entropy_bits(target)


def item_metrics(pred: Sequence[float], target: Sequence[float], ordinal: bool,
                 nonsubstantive: Sequence[bool] | None = None) -> dict[str, float]:
    return {
        "js_alignment": js_alignment(pred, target),
        "js_alignment_e": js_alignment(pred, target, base=math.e),
        "w1_alignment": w1_alignment(pred, target, nonsubstantive) if ordinal else float("nan"),
        "majority_match": majority_match(pred, target),
        "entropy_diff_bits": entropy_difference(pred, target),
    }

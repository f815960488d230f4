"""Uncertainty for the evaluation's means: bootstrap intervals, paired tests and Holm's adjustment.

Items are resampled, except where items come in groups that are not independent (the strata of
a held-out split): then whole groups are drawn (a cluster bootstrap). Several seeds of one
method are combined with a two-level bootstrap (seeds, then items or strata), never by
averaging per-seed intervals. p-values of a reported family of tests get Holm-adjusted
companions. Everything is seeded, so a table is the same on every re-run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from valuealign.errors import EvaluationError


class StatisticsError(EvaluationError):
    """A table given to a statistic has the wrong shape or values (the message says which)."""


def resample_counts(rng: np.random.Generator, n_boot: int, groups: np.ndarray) -> np.ndarray:
    """(n_boot, n_units) multiplicities of each unit in each bootstrap resample.

    ``groups`` gives each unit's resampling group: the groups are drawn with replacement and
    every unit of a drawn group comes along (a cluster bootstrap; one group per unit is the
    ordinary bootstrap)."""
    codes, uniques = pd.factorize(pd.Series(groups, dtype="object"), sort=True)
    k = len(uniques)
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return counts[:, codes].astype(float)


def two_level_bootstrap_ci(matrix: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                           clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Mean of a (replicates x items) table with a percentile bootstrap over both levels.

    Rows are independent replicates (training seeds of one method), columns the items every
    replicate was scored on (NaN: not scored). Each resample draws replicates with
    replacement, then items with replacement, or whole ``clusters`` (one label per item:
    the stratum of a held-out cluster split), and takes the mean over the drawn cells. With
    one replicate this is the ordinary (or cluster) bootstrap over items. Why two levels:
    averaging per-seed interval bounds is not an interval of anything, and seed-to-seed
    variation is often larger than item sampling. With fewer than two items (or clusters)
    there is nothing to resample and the interval is NaN.

    Returns mean, ci_low, ci_high, n_items, n_units (items or clusters resampled),
    n_replicates and ci_unit ("items" or "strata").
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise StatisticsError(f"two_level_bootstrap_ci needs a 2-d (replicates x items) table, got {m.shape}")
    keep_rows = np.isfinite(m).any(axis=1)
    keep_cols = np.isfinite(m).any(axis=0)
    m = m[keep_rows][:, keep_cols]
    if clusters is not None:
        cl = np.asarray(list(clusters), dtype=object)
        if cl.size != keep_cols.size:
            raise StatisticsError(f"clusters: {cl.size} labels for {keep_cols.size} items")
        cl = cl[keep_cols]
    unit = "items" if clusters is None else "strata"
    out: dict[str, Any] = {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                           "n_items": int(m.shape[1]), "n_units": 0, "n_replicates": int(m.shape[0]),
                           "ci_unit": unit}
    if m.size == 0:
        return out
    mask = np.isfinite(m)
    vals = np.where(mask, m, 0.0)
    out["mean"] = float(vals.sum() / mask.sum())
    groups = np.arange(m.shape[1]) if clusters is None else cl
    out["n_units"] = int(len(set(groups.tolist())))
    if out["n_units"] < 2 or n_boot < 1:
        return out
    rng = np.random.default_rng(seed)
    w_items = resample_counts(rng, n_boot, groups)
    w_rows = resample_counts(rng, n_boot, np.arange(m.shape[0])) if m.shape[0] > 1 else np.ones((n_boot, 1))
    num = np.einsum("bi,bi->b", w_rows @ vals, w_items)
    den = np.einsum("bi,bi->b", w_rows @ mask.astype(float), w_items)
    means = num[den > 0] / den[den > 0]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    out.update(ci_low=float(lo), ci_high=float(hi))
    return out


def bootstrap_ci(values: Iterable[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 clusters: Sequence[Any] | None = None) -> tuple[float, float, float, int]:
    """(mean, low, high, n) with a percentile bootstrap over items, or over whole ``clusters``
    (one label per value: resample the labels, keep each cluster's items together); NaNs are
    dropped first. With fewer than two items (clusters) the interval is NaN."""
    v = np.asarray(list(values), dtype=float)
    cl = None if clusters is None else np.asarray(list(clusters), dtype=object)
    if cl is not None and cl.size != v.size:
        raise StatisticsError(f"clusters: {cl.size} labels for {v.size} values")
    ok = np.isfinite(v)
    r = two_level_bootstrap_ci(v[ok][None, :], n_boot, seed, level, None if cl is None else cl[ok])
    return r["mean"], r["ci_low"], r["ci_high"], r["n_items"]


def paired_test(diffs: Iterable[float], clusters: Sequence[Any] | None = None) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-item differences (NaN if < 5 units).

    With ``clusters`` (one label per difference) the test runs on the per-cluster mean
    differences: items of one held-out stratum are not independent observations."""
    from scipy.stats import wilcoxon

    d = np.asarray(list(diffs), dtype=float)
    if clusters is not None:
        cl = list(clusters)
        if len(cl) != d.size:
            raise StatisticsError(f"clusters: {len(cl)} labels for {d.size} differences")
        frame = pd.DataFrame({"d": d, "c": cl})
        d = frame[np.isfinite(frame["d"])].groupby("c")["d"].mean().to_numpy()
    d = d[np.isfinite(d)]
    if d.size < 5 or np.allclose(d, 0):
        return float("nan")
    return float(wilcoxon(d).pvalue)


def holm_adjust(pvalues: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN, not counted).

    Why: a results table with dozens of Wilcoxon tests will show some small p-values by
    chance; Holm controls the family-wise error rate without assuming independence and is
    uniformly more powerful than Bonferroni. adjusted p_(i) = max_{j<=i} min(1, (m-j+1) p_(j))
    over the sorted finite p-values."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise StatisticsError(f"p-values must lie in [0, 1], got {p[ok].tolist()}")
    m = ok.size
    order = ok[np.argsort(p[ok], kind="mergesort")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out

"""Opinion groups of a Polis conversation, as Polis computes them, and UMAP + HDBSCAN to compare.

Follows Polis's math engine (``polismath.math`` of compdemocracy/polis): rejected statements
are zeroed, missing votes imputed with the statement mean, a 2-d PCA projects every
participant over the statements they saw (scaled by sqrt(statements / seen)); participants
with at least 7 votes form 100 base clusters, and weighted k-means groups the base clusters
with k in 2..5 chosen by silhouette (:class:`KSmoother` carries Polis's k smoothing across
updates). Why its own module: it is one published algorithm with its own constants, checked
against the groups Polis published (``tests/test_consultation.py``); the rest of notebook 05
(:mod:`valuealign.consultation`) only reads its :class:`Grouping`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from valuealign.errors import EmptyConversationError

if TYPE_CHECKING:
    from valuealign.consultation import Conversation

# Polis's own settings (polismath.math.conversation, base-conv-update-graph defaults).
POLIS_BASE_K = 100
POLIS_BASE_ITERS = 100
POLIS_GROUP_ITERS = 20
POLIS_GREEDY_N = 15
POLIS_K_BUFFER = 4
POLIS_CENTER_TOLERANCE = 0.01


def polis_rating_matrix(conv: Conversation, *, include_unmoderated: bool = True) -> pd.DataFrame:
    """Polis's rating matrix: every statement somebody voted on, moderated-out ones set to 0.

    Why 0 and not dropped: Polis zeroes the columns of rejected statements (``zero-out-columns``)
    for everyone, so they add nothing to the PCA but still count as seen in the sparsity
    scaling of the projection. ``include_unmoderated=False`` treats not-yet-moderated
    statements as rejected too (Polis's strict moderation).
    """
    m = conv.matrix.loc[:, conv.matrix.notna().any()]
    if m.shape[1] == 0:
        raise EmptyConversationError(f"{conv.name}: no statement was voted on")
    lowest_kept = 0 if include_unmoderated else 1
    moderated = conv.comments.set_index("comment_id")["moderated"].reindex(m.columns)
    out = m.copy()
    out.loc[:, (moderated < lowest_kept).to_numpy()] = 0.0
    if not (moderated >= lowest_kept).any():
        raise EmptyConversationError(f"{conv.name}: no statement is both accepted and voted on")
    return out


def in_conv_participants(votes_seen: pd.Series, n_statements: int, *, min_votes: int = 7,
                         greedy_n: int = POLIS_GREEDY_N) -> pd.Index:
    """Participants Polis clusters: >= min(min_votes, statements) votes, else the top ``greedy_n``.

    Why: people who voted on a handful of statements have an unreliable position; Polis
    clusters only the others, and takes the most active voters when fewer than 15 qualify.
    """
    threshold = min(int(min_votes), int(n_statements))
    keep = votes_seen[votes_seen >= threshold].index
    if len(keep) < greedy_n:
        extra = votes_seen.drop(keep).sort_values(ascending=False, kind="stable")
        keep = keep.append(extra.index[: greedy_n - len(keep)])
    keep = pd.Index(sorted(keep), name=votes_seen.index.name)
    if len(keep) < 3:
        raise EmptyConversationError(
            f"only {len(keep)} participant(s) to group; opinion groups need at least 3")
    return keep


def impute_column_mean(m: pd.DataFrame) -> np.ndarray:
    """Missing votes -> the statement's mean vote among those who saw it (0 if nobody did)."""
    x = m.to_numpy(dtype="float64")
    seen = ~np.isnan(x)
    n = seen.sum(axis=0)
    means = np.divide(np.where(seen, x, 0.0).sum(axis=0), n, out=np.zeros(x.shape[1]), where=n > 0)
    return np.where(seen, x, means[None, :])


def polis_pca(m: pd.DataFrame, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Polis's 2-d projection: PCA of the mean-imputed matrix, sparsity-aware projection.

    Each participant is projected over the statements they saw only (centred votes times the
    loadings) and scaled by sqrt(statements / statements seen), so people who saw few
    statements are not pulled to the centre. Returns (coordinates, explained variance
    ratio). Deterministic: full SVD (Polis's power iteration converges to the same
    components), sign fixed so that each component's largest loading is positive.
    """
    x = impute_column_mean(m)
    center = x.mean(axis=0, keepdims=True)
    xc = x - center
    n_comp = int(min(n_components, *xc.shape))
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:n_comp]
    signs = np.sign(vt[np.arange(n_comp), np.abs(vt).argmax(axis=1)])
    vt = vt * signs[:, None]
    raw = m.to_numpy(dtype="float64")
    seen = ~np.isnan(raw)
    coords = np.where(seen, raw - center, 0.0) @ vt.T
    n_seen = seen.sum(axis=1)
    coords = coords * np.sqrt(m.shape[1] / np.maximum(n_seen, 1))[:, None]
    var = s**2
    ratio = var[:n_comp] / var.sum() if var.sum() > 0 else np.zeros(n_comp)
    return coords, ratio


def polis_kmeans(x: np.ndarray, k: int, *, weights: np.ndarray | None = None,
                 max_iters: int = POLIS_GROUP_ITERS,
                 tolerance: float = POLIS_CENTER_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Polis's k-means: the first k distinct rows as centres, Lloyd steps, empty clusters dropped.

    Why not sklearn's: Polis starts from the first distinct points (deterministic, no
    k-means++), drops clusters that lose all members, weights points (base clusters by
    their size) and stops when every sorted centre moved less than ``tolerance``.
    Returns (labels 0..k'-1, centres); k' <= k.
    """
    if len(x) == 0:
        raise EmptyConversationError("k-means on 0 points")
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype="float64")
    _, first = np.unique(x, axis=0, return_index=True)
    centres = x[np.sort(first)[: int(k)]].copy()
    for _ in range(int(max_iters) + 1):
        labels = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1).argmin(axis=1)
        used = np.unique(labels)
        new = np.array([np.average(x[labels == j], axis=0, weights=w[labels == j]) for j in used])
        converged = (len(new) == len(centres)
                     and bool(np.all(np.linalg.norm(np.sort(new, axis=0) - np.sort(centres, axis=0),
                                                    axis=1) < tolerance)))
        centres = new
        if converged:
            break
    labels = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1).argmin(axis=1)
    return labels, centres


@dataclass
class KSmoother:
    """Polis's smoothing of the number of groups across updates (``group-k-smoother``).

    Why: the silhouette-best k flips between close values as votes arrive; Polis switches
    to a new k only after it was best ``buffer`` updates in a row. A single analysis of a
    finished export is one update: the smoothed k is then the best k.
    """

    buffer: int = POLIS_K_BUFFER
    last_k: int | None = None
    last_k_count: int = 0
    smoothed_k: int | None = None

    def update(self, best_k: int) -> int:
        self.last_k_count = self.last_k_count + 1 if best_k == self.last_k else 1
        self.last_k = best_k
        if self.last_k_count >= self.buffer or self.smoothed_k is None:
            self.smoothed_k = best_k
        return self.smoothed_k


@dataclass
class PolisClustering:
    """Base clusters and the groups formed from them (labels per participant, in input order)."""

    base_labels: np.ndarray
    base_centres: np.ndarray
    base_group: np.ndarray
    k: int
    silhouette: dict[int, float]

    @property
    def labels(self) -> np.ndarray:
        return self.base_group[self.base_labels]


def polis_group_clusters(coords: np.ndarray, *, base_k: int = POLIS_BASE_K, k_max: int = 5,
                         smoother: KSmoother | None = None) -> PolisClustering:
    """Polis's two-level clustering of the projected participants.

    1. ``base_k`` base clusters by k-means on the participants (``base-iters`` steps);
    2. for k in 2..min(k_max, 2 + base clusters // 12), weighted k-means of the base-cluster
       centres (weights = members), scored by the silhouette of the base clusters (unweighted
       mean, distances between base centres);
    3. the best k (ties: the larger, as Clojure's ``max-key``), smoothed by ``smoother``.
    """
    from sklearn.metrics import silhouette_score

    base_labels, base_centres = polis_kmeans(coords, base_k, max_iters=POLIS_BASE_ITERS)
    sizes = np.bincount(base_labels, minlength=len(base_centres)).astype("float64")
    k_hi = min(int(k_max), 2 + len(base_centres) // 12)
    scores: dict[int, float] = {}
    fits: dict[int, np.ndarray] = {}
    for k in range(2, k_hi + 1):
        group, _ = polis_kmeans(base_centres, k, weights=sizes, max_iters=POLIS_GROUP_ITERS)
        if len(np.unique(group)) < 2 or len(np.unique(group)) >= len(base_centres):
            continue
        scores[k] = float(silhouette_score(base_centres, group))
        fits[k] = group
    if not scores:
        raise EmptyConversationError("Polis found no split into >= 2 groups (identical participants?)")
    best = max(scores, key=lambda k: (round(scores[k], 12), k))
    chosen = (smoother or KSmoother()).update(best)
    if chosen not in fits:
        chosen = best
    base_group = _relabel_by_size_weighted(fits[chosen], sizes)
    return PolisClustering(base_labels, base_centres, base_group, chosen, scores)


def _relabel_by_size_weighted(group_of_base: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Group 0 = the group with most participants (ties: smaller original label)."""
    members = np.bincount(group_of_base, weights=sizes)
    order = sorted(range(len(members)), key=lambda g: (-members[g], g))
    new = np.empty(len(members), dtype="int64")
    new[order] = np.arange(len(members))
    return new[group_of_base]


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Group 0 = the largest group (ties: smaller original label); noise (-1) stays -1."""
    out = np.full_like(labels, -1)
    valid = labels[labels >= 0]
    if valid.size == 0:
        return out
    uniq, counts = np.unique(valid, return_counts=True)
    order = sorted(zip(-counts, uniq, strict=True))
    for new, (_, old) in enumerate(order):
        out[labels == old] = new
    return out



def umap_hdbscan(m: pd.DataFrame, *, n_neighbors: int = 15, min_cluster_size: int = 10,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The thesis's own grouping: UMAP (2-d) of the mean-imputed matrix, then HDBSCAN.

    Returns (2-d coordinates, labels with -1 = noise). A fixed ``random_state`` makes UMAP
    deterministic (and single-threaded).
    """
    import warnings

    import hdbscan
    import umap

    x = impute_column_mean(m)
    nn = int(max(2, min(n_neighbors, len(x) - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = umap.UMAP(n_neighbors=nn, n_components=2, min_dist=0.0, metric="euclidean",
                           random_state=seed).fit_transform(x)
    labels = hdbscan.HDBSCAN(min_cluster_size=int(min(min_cluster_size, len(x)))).fit_predict(coords)
    return coords, _relabel_by_size(np.asarray(labels))



@dataclass
class Grouping:
    """Opinion groups of one conversation by both methods (participant ids stay in memory only).

    ``participants``: those Polis clusters (in-conv); ``pca``: their projection;
    ``base_labels``: their base cluster; ``polis_labels``: their group.
    """

    conversation: str
    participants: pd.Index
    pca: np.ndarray
    explained_variance: np.ndarray
    polis_labels: np.ndarray
    k: int
    silhouette: dict[int, float]
    base_labels: np.ndarray | None = None
    umap: np.ndarray | None = None
    hdbscan_labels: np.ndarray | None = None
    published_labels: np.ndarray | None = None

    def labels(self, method: str) -> pd.Series:
        if method == "polis":
            lab = self.polis_labels
        elif method == "umap_hdbscan":
            if self.hdbscan_labels is None:
                raise ValueError("UMAP + HDBSCAN was not run (with_umap=False)")
            lab = self.hdbscan_labels
        else:
            raise ValueError(f"grouping method {method!r} is not one of {{polis, umap_hdbscan}}")
        return pd.Series(lab, index=self.participants, name="group")

    def ari_vs_published(self) -> float:
        """ARI of our Polis groups against the groups Polis published, over participants in both."""
        from sklearn.metrics import adjusted_rand_score

        if self.published_labels is None:
            return float("nan")
        ok = self.published_labels >= 0
        if ok.sum() < 2:
            return float("nan")
        return float(adjusted_rand_score(self.published_labels[ok], self.polis_labels[ok]))

    def summary(self) -> dict[str, Any]:
        from sklearn.metrics import adjusted_rand_score

        out: dict[str, Any] = {
            "conversation": self.conversation, "participants": len(self.participants),
            "base_clusters": (int(len(np.unique(self.base_labels)))
                              if self.base_labels is not None else None),
            "pca_k": self.k, "pca_silhouette": self.silhouette[self.k],
            "pca_explained_variance": float(self.explained_variance.sum()),
        }
        if self.hdbscan_labels is not None:
            h = self.hdbscan_labels
            core = h >= 0
            out.update({
                "hdbscan_clusters": int(len(np.unique(h[core]))),
                "hdbscan_noise_share": float(1 - core.mean()),
                "ari_pca_vs_hdbscan": float(adjusted_rand_score(self.polis_labels, h)),
                "ari_pca_vs_hdbscan_no_noise": (float(adjusted_rand_score(self.polis_labels[core], h[core]))
                                                if core.sum() > 1 else float("nan")),
            })
        if self.published_labels is not None:
            p = self.published_labels
            ok = p >= 0
            out["published_groups"] = int(len(np.unique(p[ok])))
            out["published_compared"] = int(ok.sum())
            out["ari_pca_vs_published"] = self.ari_vs_published()
        return out


def opinion_groups(conv: Conversation, *, seed: int = 0, k_max: int = 5,
                   min_votes: int = 7, include_unmoderated: bool = True, with_umap: bool = True,
                   umap_n_neighbors: int = 15, hdbscan_min_cluster_size: int = 10,
                   base_k: int = POLIS_BASE_K, smoother: KSmoother | None = None) -> Grouping:
    """Opinion groups as Polis forms them, and by UMAP + HDBSCAN, on the same participants.

    Polis: rating matrix (rejected statements zeroed), PCA of all participants, sparsity-aware
    projection, base clusters of the in-conv participants, groups of base clusters with k by
    silhouette (:func:`polis_group_clusters`). The Polis steps are deterministic; ``seed``
    seeds UMAP. UMAP + HDBSCAN take the same participants' mean-imputed votes on the accepted
    statements.
    """
    from threadpoolctl import threadpool_limits

    rating = polis_rating_matrix(conv, include_unmoderated=include_unmoderated)
    votes_seen = conv.matrix.loc[rating.index, rating.columns].notna().sum(axis=1)
    inconv = in_conv_participants(votes_seen, rating.shape[1], min_votes=min_votes)
    # One BLAS/OpenMP thread: identical results on any machine, and fast on a loaded machine.
    with threadpool_limits(1):
        coords_all, ratio = polis_pca(rating)
        coords = coords_all[rating.index.get_indexer(inconv)]
        clustering = polis_group_clusters(coords, base_k=base_k, k_max=k_max, smoother=smoother)
    g = Grouping(conv.name, inconv, coords, ratio, clustering.labels, clustering.k,
                 clustering.silhouette, base_labels=clustering.base_labels)
    if conv.polis_group is not None:
        g.published_labels = conv.polis_group.reindex(inconv).fillna(-1).astype("int64").to_numpy()
    if with_umap:
        lowest_kept = 0 if include_unmoderated else 1
        accepted = conv.comments.set_index("comment_id")["moderated"].reindex(rating.columns) >= lowest_kept
        m = conv.matrix.loc[inconv, rating.columns[accepted.to_numpy()]]
        g.umap, g.hdbscan_labels = umap_hdbscan(
            m, n_neighbors=umap_n_neighbors, min_cluster_size=hdbscan_min_cluster_size, seed=seed)
    return g

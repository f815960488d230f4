"""Consensus clustering for the value taxonomy: many UMAP + HDBSCAN runs, one clustering that holds still.

Why: a single UMAP + HDBSCAN fit depends on its seed (mean pairwise ARI about 0.4 over seeds on the
survey items) and even on float rounding (the same texts embedded with AVX2 instead of AVX-512
kernels differ by < 2e-7 and give ARI 0.79). A taxonomy the thesis builds on must not hinge on
either. Evidence accumulation (Fred & Jain 2005) fixes this: run the pipeline ``runs`` times with
different seeds on slightly perturbed embeddings, count how often two texts share a cluster (the
co-association matrix), and cluster that matrix (average linkage on 1 - co-association, cut at
``cut``). Each text's membership confidence is its mean co-association with the other members of
its consensus cluster. The number of runs is chosen from :func:`stability_curve`: agreement
between consensus clusterings built from *disjoint* seed sets, as a function of the runs each uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuealign import style
from valuealign.taxonomy import (
    DEFAULT_MODEL,
    PRECOMPUTED_MAX,
    ClusterLabels,
    EmbedStats,
    FitParams,
    NoClusterError,
    TaxonomyError,
    cosine_distances,
    embed_texts,
    embedding_cache_file,
    fit,
    relabel_by_size,
)

# Seeds of the perturbation noise are offset from the UMAP seeds, so the two random streams differ.
NOISE_SEED_OFFSET = 10_000
# Values PyTorch accepts for ATEN_CPU_CAPABILITY on x86 (the default picks the best the CPU has).
CPU_CAPABILITIES = ("default", "avx2", "avx512")


@dataclass(frozen=True)
class ConsensusParams:
    """How the consensus is built (notebook parameter names in comments)."""

    runs: int = 50  # taxonomy_consensus_runs (1 = the single-seed fit, no consensus)
    noise: float = 1e-4  # taxonomy_consensus_noise: std of the Gaussian added to each coordinate
    cut: float = 0.6  # taxonomy_consensus_cut: average-linkage cut on 1 - co-association
    jobs: int = 1  # taxonomy_consensus_jobs: worker processes for the runs (results do not depend on it)


@dataclass
class Consensus(ClusterLabels):
    """A consensus clustering and what it was built from."""

    labels: np.ndarray  # per text: consensus cluster (0 = largest) or -1 (noise)
    confidence: np.ndarray  # per text: mean co-association with its cluster's other members
    coassociation: np.ndarray  # n x n share of runs in which two texts share a cluster
    run_labels: np.ndarray  # runs x n labels of the member runs
    seeds: list[int]
    space: np.ndarray | None = None  # UMAP space of the first run (for the min_cluster_size sweep)


def check_params(cp: ConsensusParams) -> None:
    """Refuse settings that cannot give a consensus, naming the notebook parameter."""
    if cp.runs < 1:
        raise TaxonomyError(f"taxonomy_consensus_runs must be >= 1, got {cp.runs}")
    if not 0 <= cp.noise < 0.1:
        raise TaxonomyError(f"taxonomy_consensus_noise must be in [0, 0.1), got {cp.noise}")
    if not 0 < cp.cut < 1:
        raise TaxonomyError(f"taxonomy_consensus_cut must be in (0, 1), got {cp.cut}")
    if cp.jobs < 1:
        raise TaxonomyError(f"taxonomy_consensus_jobs must be >= 1, got {cp.jobs}")


def perturb(x: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Unit-norm rows of ``x`` plus Gaussian noise of std ``scale`` (none when scale is 0).

    Why: runs that only differ in their UMAP seed still share every rounding of the embedding; a
    perturbation far larger than kernel rounding (~1e-7) makes the consensus robust to it.
    """
    if scale == 0:
        return x
    rng = np.random.default_rng(NOISE_SEED_OFFSET + seed)
    xp = x + scale * rng.standard_normal(x.shape)
    return (xp / np.linalg.norm(xp, axis=1, keepdims=True)).astype(np.float32)


def _one_run(x: np.ndarray, params: FitParams, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels and UMAP space of one fit on ``x`` perturbed with ``seed`` (all noise, no space, if none)."""
    xp = perturb(x, noise, seed)
    d = cosine_distances(xp) if len(xp) < PRECOMPUTED_MAX else None
    try:
        f = fit(xp, replace(params, seed=int(seed)), distances=d)
    except NoClusterError:
        return np.full(len(x), -1, dtype=np.int64), None
    return f.labels.astype(np.int64), f.space


def run_labels(
    x: np.ndarray, params: FitParams, seeds: Sequence[int], noise: float, *, jobs: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels of one UMAP + HDBSCAN fit per seed (on embeddings perturbed with that seed): runs x n.

    Also returns the first run's UMAP space. A run in which HDBSCAN finds no cluster contributes
    all-noise (it co-associates nothing). ``jobs`` > 1 runs fits in that many worker processes;
    each fit depends only on its seed, so the result does not depend on ``jobs``.
    """
    if jobs > 1 and len(seeds) > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=jobs)(delayed(_one_run)(x, params, int(s), noise) for s in seeds)
    else:
        results = [_one_run(x, params, int(s), noise) for s in seeds]
    out = np.stack([lab for lab, _ in results]) if results else np.zeros((0, len(x)), dtype=np.int64)
    return out, (results[0][1] if results else None)


def coassociation(labels: np.ndarray) -> np.ndarray:
    """Share of runs in which each pair of texts is in the same cluster (noise shares nothing).

    The diagonal is the share of runs in which a text is clustered at all.
    """
    labels = np.atleast_2d(labels)
    n = labels.shape[1]
    c = np.zeros((n, n), dtype=np.float64)
    for lab in labels:
        k = int(lab.max() + 1)
        if k == 0:
            continue
        onehot = np.zeros((n, k), dtype=np.float64)
        m = lab >= 0
        onehot[np.flatnonzero(m), lab[m]] = 1.0
        c += onehot @ onehot.T
    return c / len(labels)


def consensus_labels(coassoc: np.ndarray, *, cut: float, min_cluster_size: int) -> np.ndarray:
    """Average-linkage clusters of 1 - co-association cut at ``cut``; groups below min_cluster_size -> -1.

    Why average linkage: a text joins a group when it co-clusters with its members on average in
    more than 1 - cut of the runs, so one chance co-occurrence cannot chain two groups (as single
    linkage or connected components would). Deterministic: no seed.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(coassoc)
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    d = 1.0 - coassoc
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    z = linkage(squareform(np.clip(d, 0.0, 1.0), checks=False), method="average")
    groups = fcluster(z, t=cut, criterion="distance").astype(np.int64)
    ids, counts = np.unique(groups, return_counts=True)
    small = np.isin(groups, ids[counts < min_cluster_size])
    groups[small] = -1
    return relabel_by_size(groups)


def membership_confidence(coassoc: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per text: mean co-association with the other members of its cluster (0 for noise).

    1 means the text shared a cluster with every other member in every run; near 0.5 it sits on
    a border between groups.
    """
    conf = np.zeros(len(labels), dtype=np.float64)
    for c in range(int(labels.max(initial=-1)) + 1):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            conf[idx] = 1.0
            continue
        block = coassoc[np.ix_(idx, idx)]
        conf[idx] = (block.sum(axis=1) - np.diag(block)) / (len(idx) - 1)
    return conf


def from_runs(labels: np.ndarray, seeds: Sequence[int], *, cut: float, min_cluster_size: int) -> Consensus:
    """The consensus of already-computed runs (runs x n labels)."""
    c = coassociation(labels)
    lab = consensus_labels(c, cut=cut, min_cluster_size=min_cluster_size)
    return Consensus(lab, membership_confidence(c, lab), c, np.atleast_2d(labels), list(seeds))


def consensus_seeds(first_seed: int, runs: int, block: int = 0) -> list[int]:
    """Seeds of the ``block``-th disjoint set of ``runs`` seeds starting at ``first_seed``."""
    start = first_seed + block * runs
    return list(range(start, start + runs))


def build(x: np.ndarray, params: FitParams, cp: ConsensusParams, *, block: int = 0) -> Consensus:
    """Consensus of ``cp.runs`` fits with seeds params.seed + block*runs, ... (disjoint across blocks)."""
    check_params(cp)
    seeds = consensus_seeds(params.seed, cp.runs, block)
    labels, space = run_labels(x, params, seeds, cp.noise, jobs=cp.jobs)
    cons = from_runs(labels, seeds, cut=cp.cut, min_cluster_size=params.min_cluster_size)
    if cons.n_clusters == 0:
        raise NoClusterError(
            f"the consensus of {cp.runs} UMAP + HDBSCAN runs on {len(x)} distinct texts has no cluster "
            f"(hdbscan_min_cluster_size={params.min_cluster_size}, hdbscan_min_samples="
            f"{params.min_samples}, taxonomy_consensus_cut={cp.cut}): every text was labelled noise. "
            "Lower hdbscan_min_cluster_size or hdbscan_min_samples, raise taxonomy_consensus_cut, or add texts."
        )
    cons.space = space
    return cons


def mean_pairwise_ari(labelings: Sequence[np.ndarray]) -> float:
    """Mean ARI over all pairs of labelings of the same texts (noise counts as one class)."""
    from sklearn.metrics import adjusted_rand_score

    pairs = [adjusted_rand_score(a, b) for a, b in combinations(labelings, 2)]
    if not pairs:
        raise TaxonomyError("mean_pairwise_ari needs at least two labelings")
    return float(np.mean(pairs))


def stability_curve(
    pool: np.ndarray, sizes: Sequence[int], *, cut: float, min_cluster_size: int, max_blocks: int = 4,
) -> pd.DataFrame:
    """Agreement between consensus clusterings from disjoint runs, per number of runs.

    ``pool`` holds runs x n labels (independent seeds). For each size r, the pool is cut into
    disjoint blocks of r runs (at most ``max_blocks``), each block gives a consensus, and the blocks'
    consensus clusterings are compared pairwise (ARI). Size 1 is the single-seed pipeline.
    """
    rows = []
    for r in sorted({int(s) for s in sizes}):
        n_blocks = min(max_blocks, len(pool) // r) if r > 0 else 0
        if n_blocks < 2:
            continue
        cons = [consensus_labels(coassociation(pool[b * r:(b + 1) * r]), cut=cut,
                                 min_cluster_size=min_cluster_size) if r > 1 else pool[b]
                for b in range(n_blocks)]
        rows.append({"runs": r, "blocks": n_blocks, "mean_pairwise_ari": mean_pairwise_ari(cons),
                     "n_clusters": float(np.mean([c.max() + 1 for c in cons])),
                     "noise_share": float(np.mean([(c < 0).mean() for c in cons]))})
    if not rows:
        raise TaxonomyError(
            f"stability_curve: a pool of {len(pool)} runs holds fewer than two disjoint blocks of any "
            f"size in {list(sizes)}"
        )
    return pd.DataFrame(rows)


def embed_under_cpu_capability(
    texts: Sequence[str], capability: str, cache_dir: Path, model_name: str = DEFAULT_MODEL,
    *, batch_size: int = 64, timeout_s: float = 1800,
) -> np.ndarray:
    """Embeddings of ``texts`` computed in a subprocess with ``ATEN_CPU_CAPABILITY=capability``.

    Why a subprocess: PyTorch picks its CPU kernels (AVX-512, AVX2, ...) once per process, so the
    only way to see how kernel rounding moves the embeddings is a fresh interpreter. The result is
    cached in ``cache_dir`` (keep it apart from the default cache: both are keyed by model + text
    only), so a re-run reads it without starting the subprocess.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    if capability not in CPU_CAPABILITIES:
        raise TaxonomyError(f"cpu capability {capability!r} unknown; choose from {CPU_CAPABILITIES}")
    stats = EmbedStats()
    cached = cache_dir.exists() and _all_cached(texts, model_name, cache_dir)
    if not cached:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
            json.dump(list(texts), fh)
            texts_file = fh.name
        code = (
            "import json, sys; from pathlib import Path; from valuealign import taxonomy as tx; "
            "texts = json.load(open(sys.argv[1], encoding='utf-8')); "
            "tx.embed_texts(texts, sys.argv[2], cache_dir=Path(sys.argv[3]), batch_size=int(sys.argv[4]), "
            "pinned=False)"
        )
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        try:
            proc = subprocess.run([sys.executable, "-c", code, texts_file, model_name, str(cache_dir),
                                   str(batch_size)], env=env, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        finally:
            os.unlink(texts_file)
        if proc.returncode != 0:
            raise TaxonomyError(
                f"embedding under ATEN_CPU_CAPABILITY={capability} failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-400:]}"
            )
    return embed_texts(texts, model_name, cache_dir=cache_dir, stats=stats, pinned=False)


def _all_cached(texts: Sequence[str], model_name: str, cache_dir: Path) -> bool:
    from valuealign import provenance

    f = embedding_cache_file(model_name, cache_dir)
    if not f.exists():
        return False
    have = set(pd.read_parquet(f, columns=["sha256"])["sha256"])
    return all(provenance.sha256_text(t) in have for t in texts)


def plot_stability_curve(curve: pd.DataFrame, chosen: int, single_seed_subsample_ari: float | None = None) -> Any:
    """Mean pairwise ARI between consensus clusterings from disjoint seed sets, per runs in each."""
    plt = style.pyplot()

    fig, ax = plt.subplots(figsize=style.figsize(0.7, 0.55))
    ax.plot(curve["runs"], curve["mean_pairwise_ari"], "o-", color=style.OKABE_ITO[0],
            label="consensus vs consensus (disjoint seeds)")
    if single_seed_subsample_ari is not None:
        ax.axhline(single_seed_subsample_ari, color=style.OKABE_ITO[5], ls="--", lw=0.8,
                   label="single seed, 80% subsamples")
    ax.axhline(0.9, color="#999999", ls=":", lw=0.8)
    ax.axvline(chosen, color="#999999", ls=":", lw=0.8)
    ax.set_xlabel("UMAP + HDBSCAN runs per consensus")
    ax.set_ylabel("mean pairwise ARI")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6, loc="lower right")
    return fig

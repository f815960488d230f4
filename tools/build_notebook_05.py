"""Write notebooks/05_public_consultation.ipynb (source, no outputs). Run: python tools/build_notebook_05.py"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild import write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "05_public_consultation"

CELLS: list[tuple[str, str]] = [
    ("md", """
# 05 · Public consultation: Polis votes → opinion groups → consensus → alignment data

**Question.** Which statements of a public consultation find agreement *across* opinion groups,
which divide them, and what preference data for fine-tuning follows from that?

**Inputs** (`data/raw/polis/<conversation>/`, Polis open data, CC BY 4.0): `comments.csv`,
`votes.csv` (or only `participants-votes.csv`, as for bowling-green), `summary.csv`. The shipped
Scoop HiveMind conversations stand in for the thesis's own consultation; its Polis export is
imported the same way (copy the export folder next to them and name it in
`consultation_conversations`).

**Outputs:** under `data/processed/consultation/`: `statements.parquet`, `group_statements.parquet`,
`value_sets.parquet`, `DATASHEET.md`, and per value set `<value_set>/{kto,dpo,sft}/` (Hugging Face
`DatasetDict`, splits train/validation, with a dataset card) plus `<value_set>/kto_weights.json`;
a manifest. Phase 3's final evaluation: a consultation-refined run in `runs/` (continuing notebook
03's survey run) and `evaluation.parquet`, `evaluation_summary.parquet`,
`evaluation_differences.parquet`, `evaluation.json` (+ manifest): base, survey-only and
survey + consultation models on held-out statements and survey test items. Figures: `figures/consultation-participant-map.pdf`,
`figures/consultation-consensus-division.pdf`, table `figures/consultation-groups.tex`.
No participant id is written anywhere.
"""),
    ("params", """
seed = 0  # random seed: UMAP, DPO pair sampling, the held-out split, the refined run and the statements scored (the Polis groups are deterministic) [0, 1000000]
consultation_conversations = ["scoop-hivemind.ubi", "scoop-hivemind.affordable-housing", "scoop-hivemind.biodiversity"]  # Polis conversations in data/raw/polis/ {scoop-hivemind.ubi, scoop-hivemind.affordable-housing, scoop-hivemind.biodiversity, american-assembly.bowling-green}
consultation_unknown_comments = "error"  # votes on comment ids missing from comments.csv: stop, or drop and report {error, drop}
consultation_min_votes_per_participant = 7  # participants with fewer votes are not grouped (Polis: 7) [1, 1000]
consultation_include_unmoderated = True  # form groups on not-yet-moderated statements too (never exported)
consultation_k_max = 5  # groups of base clusters: k in 2..k_max with the best silhouette (Polis: 5) [2, 10]
consultation_umap_n_neighbors = 15  # UMAP neighbours for the thesis's own grouping [2, 200]
consultation_hdbscan_min_cluster_size = 10  # smallest HDBSCAN group [2, 1000]
consultation_grouping = "polis"  # groups used for consensus and per-group value sets {polis, umap_hdbscan}
consultation_min_votes_per_statement = 5  # statements seen by fewer participants are not exported [1, 1000]
consultation_consensus_threshold = 0.5  # KTO row desirable if consensus (geometric mean over groups) exceeds this [0.0, 1.0]
consultation_dpo_margin = 0.1  # smallest consensus difference between chosen and rejected [0.0, 1.0]
consultation_dpo_pairs_per_statement = 3  # rejected partners sampled per chosen statement [1, 50]
consultation_validation_fraction = 0.2  # share of statements in the validation split [0.0, 0.5]
consultation_test_fraction = 0.2  # share of each conversation's statements held out as the test split: never trained on, only for the final evaluation [0.0, 0.5]
consultation_refine_from = "sft"  # method of notebook 03's survey run that the consultation run continues {sft, dpo, kto, dist}
consultation_refine_value_set = "united-states"  # value set of that survey run (one of notebook 03's value_sets)
consultation_refine_method = "kto"  # method of the consultation-refined run (KTO: desirable if the groups' consensus passes the threshold) {sft, dpo, kto}
consultation_refine_data = "consultation-all-everyone"  # consultation value set the refined run trains on (exported above)
consultation_refine_steps = 3  # optimizer steps of the refined run (-1: one epoch) [-1, 10000000]
consultation_refine_learning_rate = 5e-05  # learning rate of the refined run [1e-08, 0.1]
consultation_refine_batch_size = 2  # rows per step of the refined run (KTO needs at least 2) [1, 1024]
consultation_refine_max_rows = 64  # training rows of the refined run, a seeded subsample (0: all) [0, 100000000]
consultation_eval_max_statements = 4  # held-out statements scored per conversation, the same for every model (0: all) [0, 100000]
n_paraphrases = 1  # prompt paraphrases averaged per item (thesis: 4) [1, 4]
permutations = "cyclic"  # option orders per item: all cyclic shifts, or as many seeded random orders {cyclic, random}
eval_batch_size = 8  # prompts per forward pass [1, 512]
bootstrap_samples = 1000  # bootstrap resamples for the 95% CIs over items [0, 100000]
max_eval_items = 5  # items per split, the same for every model (0: all) [0, 100000]
eval_max_options = 4  # only items with at most this many options, a CPU cost cap (thesis: 0, all) [0, 26]
"""),
    ("code", """
from valuealign import config

params = config.check_parameters("05_public_consultation", globals())
"""),
    ("code", """
import warnings

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")

import datasets
import pandas as pd
from IPython.display import Markdown, display

from valuealign import consultation, paths, plotting, provenance

pd.set_option("display.max_colwidth", 110)
datasets.disable_progress_bars()
NB = "05_public_consultation"
manifest = provenance.Manifest(NB, parameters=params, seed=seed).__enter__()
"""),
    ("md", """
## 1 · Import: the participant × statement vote matrix
Each conversation becomes a matrix with one row per participant and one column per statement:
1 agree, -1 disagree, 0 pass, empty = never shown. A participant who voted twice on a statement
counts with the **latest** vote, as in Polis; every such correction is listed below, not silently made.
"""),
    ("code", """
conversations = []
for name in consultation_conversations:
    try:
        conversations.append(consultation.load_conversation(name, unknown_comments=consultation_unknown_comments))
    except (consultation.PolisFormatError, FileNotFoundError) as err:
        display(Markdown(f"**Cannot import `{name}`:** {err}"))
        raise SystemExit(f"stopped: {err}") from None
manifest.add_inputs([consultation.conversation_dir(c.name) for c in conversations])
overview = pd.DataFrame([{
    "conversation": c.name, "topic": c.topic, "participants": c.n_participants,
    "statements": len(c.comments), "accepted": int((c.comments.moderated == 1).sum()),
    "rejected": int((c.comments.moderated == -1).sum()), "votes": int(c.matrix.notna().sum().sum()),
    "votes from": c.source,
} for c in conversations])
display(overview.style.hide(axis="index"))
display(consultation.import_report(conversations).style.hide(axis="index"))
"""),
    ("md", """
## 2 · Does the matrix round-trip the shipped files?
Each export states its own counts (`summary.csv`, the `agrees`/`disagrees` of `comments.csv`,
Polis's own `participants-votes.csv`). The table re-derives them from the matrix.

What holds exactly, and what does not (a property of the source data, not an import error):
`comments.csv` counts **every** vote row, duplicates included, so its `agrees` equal the raw
rows of `votes.csv`, not the latest-vote counts; the latest-vote matrix equals Polis's own
`participants-votes.csv` cell by cell; `summary.csv` "comments" counts only statements someone saw
(rejected statements with no votes are left out of it).
"""),
    ("code", """
checks = pd.concat([consultation.source_checks(c) for c in conversations], ignore_index=True)
display(checks.style.hide(axis="index").map(lambda v: "color: #D55E00" if v is False else "", subset=["holds"]))
"""),
    ("md", """
## 3 · Opinion groups, two ways, on the same participants
*Polis* (as its math engine computes them): rejected statements are set to 0 for everyone, missing
votes are imputed with the statement's mean vote, and every participant is projected on the first two
principal components over the statements they saw (scaled up by sqrt(statements / seen), so people who
saw few statements are not pulled to the centre). Only participants with at least 7 votes are grouped
(the 15 most active if fewer qualify). k-means forms 100 *base clusters* of them; weighted k-means then
groups the base clusters, with k in 2..5 chosen by the silhouette of the base clusters (Polis smooths
k across its incremental updates; one analysis of a finished export is one update). *Thesis method:*
UMAP (2-d) of the same participants' imputed votes, then HDBSCAN (grey = noise, not in any group).
The adjusted Rand index (ARI) says how much two partitions agree (1 = same, 0 = chance); the last
column compares our Polis groups with the groups Polis itself published in `participants-votes.csv`.
"""),
    ("code", """
groupings = [consultation.opinion_groups(
    c, seed=seed, k_max=consultation_k_max, min_votes=consultation_min_votes_per_participant,
    include_unmoderated=consultation_include_unmoderated,
    umap_n_neighbors=consultation_umap_n_neighbors,
    hdbscan_min_cluster_size=consultation_hdbscan_min_cluster_size) for c in conversations]
group_summary = pd.DataFrame([g.summary() for g in groupings])
display(group_summary.style.format(precision=3).hide(axis="index"))
table = group_summary[["conversation", "participants", "base_clusters", "pca_k", "pca_silhouette", "hdbscan_clusters",
                       "hdbscan_noise_share", "ari_pca_vs_hdbscan", "ari_pca_vs_published"]].rename(columns={
    "base_clusters": "base clusters", "pca_k": "k", "pca_silhouette": "silhouette", "hdbscan_clusters": "HDBSCAN groups",
    "hdbscan_noise_share": "noise", "ari_pca_vs_hdbscan": "ARI PCA-HDBSCAN",
    "ari_pca_vs_published": "ARI vs Polis"})
_ = plotting.save_table(
    table,
    "consultation-groups", notebook=NB,
    caption="Opinion groups per conversation: Polis (PCA, 100 base clusters, groups by silhouette) vs UMAP + "
            "HDBSCAN on the same vote matrix, and their agreement (adjusted Rand index).")
fig = consultation.plot_participant_maps(groupings)
_ = plotting.save_figure(fig, "consultation-participant-map", notebook=NB,
                         inputs=[consultation.conversation_dir(c.name) for c in conversations])
"""),
    ("md", """
### Our Polis groups against the groups Polis published, on every shipped conversation
The goal is ARI >= 0.9. Biodiversity reaches it. The others do not, and a one-shot analysis of the
final votes cannot: Polis updates its groups incrementally as votes arrive (each k-means warm-started
from the last update's clusters, k switched only after it was best 4 updates in a row), so a published
partition carries a history the export does not contain. On affordable-housing and bowling-green the
published groups are almost linearly separable in our projection, but they are not a k-means fixed
point on it (Lloyd steps from the published group centres drift away from them); the published ubi
groups are not separable in any 2-d projection of the votes at all.
"""),
    ("code", """
published = pd.DataFrame([consultation.opinion_groups(
    consultation.load_conversation(name, unknown_comments=consultation_unknown_comments),
    k_max=consultation_k_max, min_votes=consultation_min_votes_per_participant,
    include_unmoderated=consultation_include_unmoderated, with_umap=False).summary()
    for name in consultation.ALL_CONVERSATIONS])
display(published[["conversation", "participants", "base_clusters", "pca_k", "published_groups",
                   "published_compared", "ari_pca_vs_published"]].rename(columns={
    "pca_k": "our k", "published_groups": "Polis k", "published_compared": "compared",
    "ari_pca_vs_published": "ARI vs Polis"}).style.format(precision=3).hide(axis="index"))
"""),
    ("md", """
## 4 · Consensus, division and what sets each group apart
**Group-informed consensus** (Polis): for each statement, the product over groups of the group's
smoothed probability of agreeing, (agree + 1) / (seen + 2). It is high only if *every* group tends
to agree, so a majority group cannot carry a statement alone. To compare conversations with
different numbers of groups we also report its geometric mean over groups (`consensus_mean`).
**Division** is the largest gap between two groups' agree probabilities.
"""),
    ("code", """
tables, counts = {}, {}
for c, g in zip(conversations, groupings, strict=True):
    labels = g.labels(consultation_grouping)
    counts[c.name] = consultation.group_vote_counts(c.matrix, labels)
    tables[c.name] = consultation.statement_table(c, labels, min_votes=consultation_min_votes_per_statement)
cols = ["comment_id", "consensus", "consensus_mean", "division", "n_seen", "text"]
for c in conversations:
    t = tables[c.name]
    display(Markdown(f"### {c.topic}\\n**Highest consensus** (exported statements)"))
    display(t[t.eligible].sort_values("consensus", ascending=False)[cols].head(5).style.format(precision=3).hide(axis="index"))
    display(Markdown("**Most divisive**"))
    display(consultation.divisive_statements(t, top=5)[cols].style.format(precision=3).hide(axis="index"))
    rep = consultation.representative_statements(counts[c.name]).merge(t[["comment_id", "text"]], on="comment_id")
    display(Markdown("**Representative statements per group** (Polis repness, significant at 90 %)"))
    display(rep[["group", "comment_id", "direction", "p_in", "p_out", "repness", "text"]].style.format(precision=2).hide(axis="index"))
    profile = consultation.group_profiles(counts[c.name], t)
    if len(profile):
        display(Markdown("**Who is in each group** (share agreeing to the organisers' demographic statements)"))
        display(profile.style.hide(axis="index"))
fig = consultation.plot_consensus_division(tables, consultation_consensus_threshold)
_ = plotting.save_figure(fig, "consultation-consensus-division", notebook=NB,
                         inputs=[consultation.conversation_dir(c.name) for c in conversations])
"""),
    ("md", """
## 5 · Export: KTO / DPO / SFT data per value set, with a datasheet
Rows follow the alignment-data contract of notebook 02: the prompt asks for a view on the
conversation's topic; the completion is a statement. KTO: desirable if the consensus passes the
threshold. DPO: pairs within one conversation and split, chosen = higher consensus. Value sets:
`consultation-<conversation>-everyone`, `consultation-<conversation>-group-<k>` (the group's own
agree probability), `consultation-all-everyone`. Notebook 03 trains on any of them with
`data_source=consultation` and `value_set=<one of these>`.
"""),
    ("code", """
settings = consultation.ExportSettings(
    threshold=consultation_consensus_threshold, dpo_margin=consultation_dpo_margin,
    dpo_pairs_per_statement=consultation_dpo_pairs_per_statement,
    validation_fraction=consultation_validation_fraction, test_fraction=consultation_test_fraction,
    min_votes=consultation_min_votes_per_statement, seed=seed)
sizes = consultation.export_alignment_data(conversations, tables, counts, settings,
                                           grouping=consultation_grouping)
display(sizes.pivot(index="value_set", columns="method", values=["train", "validation"]))
kto = datasets.load_from_disk(str(paths.CONSULTATION / f"consultation-{conversations[0].slug}-everyone" / "kto"))
dpo = datasets.load_from_disk(str(paths.CONSULTATION / f"consultation-{conversations[0].slug}-everyone" / "dpo"))
display(Markdown(f"One KTO row and one DPO row (columns: {', '.join(kto['train'].column_names)}):"))
display(pd.DataFrame([kto["train"][0]]).T.rename(columns={0: "kto row"}))
display(pd.DataFrame([dpo["train"][0]]).T.rename(columns={0: "dpo row"}))
held_out = pd.read_parquet(paths.CONSULTATION / "statements.parquet").query("eligible")
display(Markdown("Statements per split (test: held out of every training set, for section 6 only):"))
display(held_out.groupby(["conversation", "split"]).size().unstack(fill_value=0))
"""),
    ("md", """
## 6 · Phase 3: refine the survey-aligned model with the consultation, and the final evaluation
Up to four checkpoints, compared on the **same** material: the **base** model; the **survey** run (notebook
03's `consultation_refine_from` run for `consultation_refine_value_set`); **survey+dpo**, the DPO run
notebook 03 trained from that survey run on the same survey data (its `dpo<-sft` chain; left out when
notebook 03 trained none); and **survey+consultation**,
a run that *continues* the survey run's adapter (`init_from`) on the consultation data exported
above (`consultation_refine_method` on `consultation_refine_data`; for KTO and DPO the reference
model is then the survey run). Its run id ends in `__from-<survey run's hash>`; its manifest and
model card record the parent run, the parent adapter's SHA-256 and the lineage.
"""),
    ("code", """
from dataclasses import asdict

from valuealign import consultation_eval as ce
from valuealign import evaluation as ev
from valuealign import models, training


def stop(err: Exception) -> None:
    display(Markdown(f"**Stopped:** {err}"))
    raise SystemExit(f"stopped: {err}") from None


try:
    survey_run = ce.notebook03_run(consultation_refine_from, consultation_refine_value_set)
    refine = ce.refine_params(survey_run, consultation_refine_method, consultation_refine_data,
                              max_steps=consultation_refine_steps, learning_rate=consultation_refine_learning_rate,
                              train_batch_size=consultation_refine_batch_size,
                              max_rows=consultation_refine_max_rows, seed=seed)
    refined = training.train(refine, progress=False, keep_model=False)
except (ce.ConsultationEvalError, training.TrainingError, training.TrainingOOMError) as err:
    stop(err)
lineage = ce.lineage_table([survey_run, *([c] if (c := ce.notebook03_child(survey_run)) else []), refined.run_id])
display(Markdown(f"Refined run `{refined.run_id}` ({refined.status}, {refined.optimizer_steps} steps):"))
display(lineage.style.hide(axis="index"))
"""),
    ("md", """
**Scoring.** Each held-out statement (`split = test`: in no training set, never used to choose
anything) is asked as a three-option item (agree / disagree / pass) through the same templates,
cyclic option orders and next-token scoring as notebook 04. The model's distribution is compared
with each opinion group's vote shares and with everyone's (1 − Jensen–Shannon distance); its
P(agree) with the statement's **group-informed consensus** (geometric mean over groups of the
smoothed agree probability). The checkpoints are also scored on notebook 02's survey test
items of the survey run's value set. CIs: bootstrap over statements (whole conversations resampled,
there being more than one) or items; differences are paired on identical statements or items.
"""),
    ("code", """
statements = pd.read_parquet(paths.CONSULTATION / "statements.parquet")
group_counts = pd.read_parquet(paths.CONSULTATION / "group_statements.parquet")
try:
    held = ce.test_statements(statements, consultation_eval_max_statements, seed)
    targets = ce.group_targets(group_counts, held, consultation_min_votes_per_statement)
    consensus_obs = ce.observed_consensus(group_counts, held)
    inputs = ev.read_inputs()
    survey_items = ev.select_items(inputs, [consultation_refine_value_set], ["test"], max_eval_items, seed,
                                   eval_max_options)
except (ce.ConsultationEvalError, ev.EvaluationError) as err:
    stop(err)
eval_settings = ev.EvalSettings(n_paraphrases=n_paraphrases, permutations=permutations, max_eval_items=max_eval_items,
                                max_options=eval_max_options, n_dilemmas=0, drift_new_tokens=0, seed=seed,
                                quantization=refine.quantization)
chained_run = ce.notebook03_child(survey_run)  # notebook 03's dpo<-sft run of the same value set, if any
checkpoints = [ce.Checkpoint("base"),
               ce.Checkpoint("survey", survey_run, paths.RUNS / survey_run / "adapter"),
               *([ce.Checkpoint("survey+dpo", chained_run, paths.RUNS / chained_run / "adapter")] if chained_run else []),
               ce.Checkpoint("survey+consultation", refined.run_id, refined.adapter_dir)]
tokenizer = models.load_tokenizer(refine.model_profile, refine.model_path or None)
eval_table = ce.evaluate_checkpoints(
    checkpoints, held, targets, consensus_obs, survey_items, inputs["targets"], consultation_refine_value_set,
    tokenizer, ce.model_scorers(refine.model_profile, refine.model_path or None, eval_batch_size, refine.quantization),
    eval_settings)
eval_summary = ce.summarise(eval_table, bootstrap_samples, seed)
eval_diffs = ce.paired_differences(eval_table, n_boot=bootstrap_samples, seed=seed)
consensus_rank = ce.consensus_rank_correlation(eval_table)
written = ce.write_evaluation(
    eval_table, eval_summary, eval_diffs,
    {"parameters": params, "runs": {ck.name: ck.run_id for ck in checkpoints if ck.run_id},
     "lineage": lineage.to_dict("records"), "settings": asdict(eval_settings),
     "survey_value_set": consultation_refine_value_set, "n_statements": int(len(held)),
     "n_conversations": int(held["conversation"].nunique()), "n_survey_items": int(len(survey_items)),
     "consensus_rank": consensus_rank.to_dict("records")},
    inputs=[paths.CONSULTATION / "statements.parquet", paths.CONSULTATION / "group_statements.parquet"])
display(Markdown(f"{len(held)} held-out statements ({held['conversation'].nunique()} conversations) and "
                 f"{len(survey_items)} survey test items, {len(checkpoints)} checkpoints ({', '.join(ck.name for ck in checkpoints)}); written: "
                 + ", ".join(f"`{paths.relative(p)}`" for p in written)))
overall = eval_summary[eval_summary["group"].isin(["all groups", ce.EVERYONE]) | (eval_summary["material"] == "survey")]
display(overall.pivot_table(index=["material", "metric", "group"], columns="checkpoint", values="mean")
        .style.format(precision=3))
display(Markdown("**Paired differences** (same statements / items; 1 − JS, mean over groups per statement):"))
display(eval_diffs.style.format(precision=3).hide(axis="index"))
display(Markdown("**Per opinion group** (1 − JS against the group's vote shares, held-out statements):"))
display(eval_summary[(eval_summary["material"] == "consultation") & (eval_summary["metric"] == "js_alignment")]
        .pivot_table(index="group", columns="checkpoint", values="mean").style.format(precision=3))
display(Markdown("**Does the model rank consensus statements higher?** (Spearman, P(agree) vs observed consensus)"))
display(consensus_rank.style.format(precision=3).hide(axis="index"))
"""),
    ("md", """
**Reading these results.** On the embedded default (135M model, a few training steps on CPU) the
differences show that the whole phase-3 path runs (chained training, held-out statements, paired
comparison), not a finding; the thesis profiles change only the parameters.
"""),
    ("md", """
## 7 · Seeding the next round
The thesis's own consultation shows participants statements written by the fine-tuned models.
`consultation.export_seed_comments` (CLI: `python -m valuealign.consultation seed --run runs/<run_id>
--out seed.csv`, or `--texts responses.jsonl`) writes a Polis seed-comments CSV (header
`comment_text`, uploaded in the Polis admin page) and a `.sources.csv` sidecar; after the round,
`python -m valuealign.consultation check <export folder> --match seed.sources.csv` imports the
export and maps each statement back to the model response that seeded it. Below: a demonstration
with example generations of the runs when there are any, else with the five highest-consensus statements.
"""),
    ("code", """
texts, sources = [], []
for run in sorted(paths.RUNS.glob("*/")) if paths.RUNS.exists() else []:
    try:
        for f in consultation.run_generation_files(run):
            t, s = consultation.read_texts(f)
            texts += t
            sources += s
    except (FileNotFoundError, ValueError):
        continue
if not texts:
    top = pd.concat(tables.values()).query("eligible").sort_values("consensus_mean", ascending=False).head(5)
    texts, sources = top["text"].tolist(), [f"{a}#{b}" for a, b in zip(top.conversation, top.comment_id, strict=True)]
seed_csv = paths.INTERIM / "consultation" / "seed-comments.csv"
seeds = consultation.export_seed_comments(texts[:20], seed_csv, sources=sources[:20])
display(Markdown(f"Wrote {len(seeds)} seed comments to `{paths.relative(seed_csv)}` (dropped: {seeds.attrs['dropped']})."))
display(seeds.head().style.hide(axis="index"))
"""),
    ("code", """
manifest.__exit__(None, None, None)
manifest.add_outputs(sorted(p for p in paths.CONSULTATION.iterdir() if not p.name.endswith(".manifest.json")))
manifest.extra = {"groups": group_summary.to_dict("records"),
                  "checks_failing": checks.loc[~checks.holds, ["conversation", "check"]].to_dict("records")}
manifest.write(paths.CONSULTATION / f"{NB}.manifest.json")
_ = plotting.save_macros({
    "ConsultationConversations": len(conversations),
    "ConsultationParticipants": int(sum(c.n_participants for c in conversations)),
    "ConsultationMeanAriPcaHdbscan": float(group_summary["ari_pca_vs_hdbscan"].mean()),
    "ConsultationExportedStatements": int(sum(t.eligible.sum() for t in tables.values())),
}, group="consultation", notebook=NB)
display(Markdown(f"Done in {manifest.wall_time_s:.1f} s; outputs in `{paths.relative(paths.CONSULTATION)}/`."))
"""),
]


if __name__ == "__main__":
    write(ROOT / "notebooks" / f"{NAME}.ipynb", CELLS)
    print(f"wrote notebooks/{NAME}.ipynb")

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
a manifest. Figures: `figures/consultation-participant-map.pdf`,
`figures/consultation-consensus-division.pdf`, table `figures/consultation-groups.tex`.
No participant id is written anywhere.
"""),
    ("params", """
seed = 0  # random seed for UMAP and DPO pair sampling (the Polis groups are deterministic) [0, 1000000]
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
    validation_fraction=consultation_validation_fraction,
    min_votes=consultation_min_votes_per_statement, seed=seed)
sizes = consultation.export_alignment_data(conversations, tables, counts, settings,
                                           grouping=consultation_grouping)
display(sizes.pivot(index="value_set", columns="method", values=["train", "validation"]))
kto = datasets.load_from_disk(str(paths.CONSULTATION / f"consultation-{conversations[0].slug}-everyone" / "kto"))
dpo = datasets.load_from_disk(str(paths.CONSULTATION / f"consultation-{conversations[0].slug}-everyone" / "dpo"))
display(Markdown(f"One KTO row and one DPO row (columns: {', '.join(kto['train'].column_names)}):"))
display(pd.DataFrame([kto["train"][0]]).T.rename(columns={0: "kto row"}))
display(pd.DataFrame([dpo["train"][0]]).T.rename(columns={0: "dpo row"}))
"""),
    ("md", """
## 6 · Seeding the next round
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

"""Write notebooks/02_alignment_datasets.ipynb (source, no outputs). Run: python tools/build_notebook_02.py"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from nbbuild import write  # noqa: E402

NAME = "02_alignment_datasets"

CELLS: list[tuple[str, str]] = [
    ("md", """
# 02 · Value sets and alignment datasets (SFT, DPO, KTO, dist)

**Question.** Which target populations (*value sets*) do we align to, how different are they, and
what exactly does a model see in training for each alignment method?

A value set is one group (a country), a mixture of groups (`"France+Britain"`), or a *cluster* of
groups that answer alike, found with UMAP + HDBSCAN over the groups' answer profiles. Its
distribution per item is the weighted mixture of its members' distributions. Items (never rows) are
split into train / validation / test and a held-out *cluster* split of whole topics, identically for
every value set and method, so results compare.

A value set `<id>-shuffled` (e.g. `united-states-shuffled`) is a *negative control*, not a population:
the members of `<id>`, but each item carries the answer distribution of another item of the same split
with as many options (a seeded random cycle; `valuealign.datasets.shuffled_mixture`). A model trained
on it must not come closer to `<id>` on held-out items (notebook 04 checks it).

**Inputs:** `data/processed/items.parquet`, `distributions.parquet` (notebook 00),
`taxonomy.parquet` when present (notebook 01: strata for the split).

**Outputs** (`data/processed/alignment/`): `splits.parquet`, `value_sets.parquet`,
`value_set_distributions.parquet`, `group_clusters.parquet`, `value_set_jsd.parquet`,
`counts.parquet`, `split_nearest_train.parquet`, and per value set `<value_set>/{sft,dpo,kto,dist}/` (Hugging Face `DatasetDict`,
splits `train` and `validation`, with a dataset card) plus `<value_set>/kto_weights.json`.
Figures `datasets-group-clusters`, `datasets-value-set-jsd`, `datasets-share-distributions`; table
`datasets-training-targets`.
Licence of all derived data: CC BY-NC-SA 4.0 (GlobalOpinionQA).
"""),
    ("params", """
seed = 0  # random seed for splits, clustering, answer sampling and prompt variants [0, 2147483647]
value_sets = ["united-states", "germany"]  # value sets: group names or ids; "A+B" mixes groups; "cluster-<k>" picks a derived one; "<id>-shuffled" adds the shuffled-target negative control of <id>
group_type = "country"  # which groups value sets are made of (group_type in distributions.parquet)
mixture_weighting = "equal"  # member weights in a mixture {equal, respondents}
mixture_missing = "renormalize"  # an item a member lacks: mix the members that have it, or drop the item {renormalize, drop}
valueset_clustering = True  # also derive value sets by clustering groups on their answer profiles
valueset_min_items = 50  # groups with fewer items are not clustered [1, 100000]
valueset_min_shared = 5  # shared items two groups need for a direct distance [1, 10000]
valueset_umap_n_neighbors = 10  # UMAP neighbours in the group map [2, 200]
valueset_min_cluster_size = 4  # HDBSCAN minimum groups per cluster [2, 1000]
valueset_max_clusters = 3  # largest clusters kept as value sets cluster-1.. [0, 50]
split_validation_fraction = 0.1  # share of items for validation [0.0, 0.5]
split_test_fraction = 0.1  # share of items for test [0.0, 0.5]
split_cluster_fraction = 0.1  # share of items in whole held-out strata (test_cluster) [0.0, 0.5]
split_stratify_by = "auto"  # strata: taxonomy clusters if present, else topic clusters of the questions {auto, taxonomy, section, topic}
split_n_topics = 12  # topic clusters (k-means on MiniLM embeddings) when not stratified by taxonomy [2, 200]
split_dup_threshold = 0.95  # cosine similarity from which two questions are near-duplicates (kept in one split) [0.5, 1.0]
split_min_items = 5  # items a value set needs in every split [1, 100000]
dataset_max_items = 60  # cap on train and on validation items per value set written as datasets (0: all) [0, 1000000]
sft_samples_per_item = 4  # SFT answers sampled per item from the value set's distribution [1, 100]
sft_majority_only = False  # SFT on the majority option only instead of samples
dpo_min_margin = 0.1  # minimum share difference between chosen and rejected [0.0, 1.0]
dpo_max_pairs_per_item = 3  # DPO pairs per item, largest share difference first [1, 325]
kto_threshold = 1.0  # KTO: desirable iff share is at least kto_threshold / n_options (1: above chance) [0.0, 26.0]
kto_prompts_per_item = 1  # KTO prompt variants per item (each with every option as a completion) [1, 20]
dpo_pair_direction = "higher"  # DPO pairs: chosen is the option with the higher share, or drawn with probability s_i / (s_i + s_j) {higher, sampled}
kto_labels = "threshold"  # KTO labels: the kto_threshold rule, or per prompt one desirable answer drawn from the shares {threshold, sampled}
dist_prompts_per_item = 4  # dist: prompt variants per item, each with the value set's shares as the soft target [1, 100]
"""),
    ("code", """
from valuealign import config

params = config.check_parameters("02_alignment_datasets", globals())
"""),
    ("code", """
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")

import datasets as hf_datasets
import pandas as pd
from IPython.display import Markdown, display

from valuealign import datasets as ds
from valuealign import paths, plotting, prompts, provenance

hf_datasets.disable_progress_bars()
pd.set_option("display.max_colwidth", 120)
"""),
    ("md", """
## Build value sets, splits and datasets
One library call does the stage (`valuealign.datasets.build_stage`); everything below reads its
result. Bad parameters (an unknown group, too few items for a split, a DPO margin or KTO threshold
that leaves nothing) stop here with a message that names the parameter.
"""),
    ("code", """
with provenance.Manifest(NAME := "02_alignment_datasets", parameters=params, seed=seed) as manifest:
    try:
        items, dists = ds.load_inputs()
        result = ds.build_stage(items, dists, params)
    except ds.DatasetBuildError as err:
        display(Markdown(f"**Cannot build the alignment datasets.** {err}"))
        raise ds.DatasetBuildError(str(err)) from None
    inputs = [paths.ITEMS, paths.DISTRIBUTIONS] + ([paths.TAXONOMY] if paths.TAXONOMY.exists() else [])
    manifest.add_inputs(inputs)
    manifest.add_outputs([paths.ALIGNMENT])
    manifest.extra = {"value_sets": [v.value_set for v in result.value_sets],
                      "strata": sorted(result.splits["stratum"].unique())}
manifest.write(paths.PROCESSED / f"{NAME}.manifest.json")
display(Markdown(f"Built {len(result.value_sets)} value sets from {len(items)} items "
                 f"({result.splits.shape[0]} with answer distributions) in {manifest.wall_time_s:.0f} s."))
"""),
    ("md", """
## Value sets and who is in them
`origin = parameter`: chosen by name in `value_sets`; `origin = cluster`: derived below. Member
weights sum to 1 per value set. For an item that a member lacks, the mixture uses the members
that have it (weights renormalised over them; `mixture_missing = "renormalize"`), so a cluster
covers the union of its members' items; `"drop"` would keep only items every member has.
"""),
    ("code", """
members = result.members.groupby(["value_set", "origin"]).agg(
    members=("group", lambda g: ", ".join(g)), n_members=("group", "size")).reset_index()
cov = result.mixtures.groupby("value_set").agg(items=("item_id", "size"),
                                                mean_members_per_item=("n_members", "mean"))
members.merge(cov.reset_index(), on="value_set").style.hide(axis="index").format(
    {"mean_members_per_item": "{:.1f}"})
"""),
    ("md", """
## Which groups answer alike: the group map
Each group's answer profile is its distribution on every **train** item it answered: the split below
is made first, and validation, test and held-out-cluster answers take no part, so the cluster value
sets are not chosen with the answers the models are later scored on (`n_items` counts train items).
Groups differ in which items they answered, so no item is imputed: two groups are compared by the mean
Jensen-Shannon distance over the train items *both* answered (at least `valueset_min_shared`); for
pairs with fewer shared items the distance is the shortest path through groups that do share items. UMAP places the groups
in 2-D from these distances and HDBSCAN finds dense clusters (grey crosses: noise, in no value set).
The largest `valueset_max_clusters` clusters become value sets `cluster-1`, `cluster-2`, ...
"""),
    ("code", """
if result.clusters is not None:
    used = [v.value_set for v in result.value_sets]
    fig = ds.plot_group_clusters(result.clusters, used)
    plotting.save_figure(fig, "datasets-group-clusters", notebook=NAME, inputs=[paths.DISTRIBUTIONS])
    summary = (result.clusters.groupby("cluster")
               .agg(groups=("group", "size"), members=("group", lambda g: ", ".join(sorted(g))))
               .reset_index())
    display(summary.style.hide(axis="index"))
else:
    display(Markdown("Clustering is off (`valueset_clustering = False`)."))
"""),
    ("md", """
## How far apart are the value sets?
Mean Jensen-Shannon distance (base 2, 0 = identical answers, 1 = disjoint) between value sets over
the items both have. Alignment scores in notebook 04 are 1 − this distance; a value set pair that is
close here cannot be separated much by alignment: this is the ceiling of what alignment can show.
"""),
    ("code", """
fig = ds.plot_jsd(result.jsd)
plotting.save_figure(fig, "datasets-value-set-jsd", notebook=NAME, inputs=[paths.DISTRIBUTIONS])
off = result.jsd[result.jsd["value_set_a"] < result.jsd["value_set_b"]]
display(off.sort_values("mean_js_distance").style.hide(axis="index").format({"mean_js_distance": "{:.3f}"}))
"""),
    ("md", """
## The split: by item, stratified, no leakage
Strata are the taxonomy clusters of notebook 01 when `taxonomy.parquet` covers these items, else
topic clusters (k-means on the question embeddings; GlobalOpinionQA's `section` only names the
survey). Whole strata are held out as `test_cluster` (topics never seen in training). One split
unit joins exact and near-duplicate questions (cosine ≥ `split_dup_threshold`) and **battery
siblings**: Pew splits one question into sub-items that differ only in what is asked about
("...opinion of...the EU" / "...of...NATO"; the stem is the text before "...", or the context
question in a leading parenthesis). Siblings share most of their words without being near-duplicates
in embedding space, so they are grouped by their stem, not by a similarity threshold. A unit that
reaches into a held-out stratum is held out whole, so no item of a held-out topic is trained on (the
few items of other topics it carries make `test_cluster` slightly larger than its fraction).

The leakage check is recomputed from the split labels and the texts alone (not from the units the
construction made), so it fails the build if a test item shares its text or battery stem with a train
item, or has a train item at cosine ≥ `split_dup_threshold`.
"""),
    ("code", """
sp = result.splits
display(pd.crosstab(sp["stratum"], sp["split"], margins=True, margins_name="all"))
q = dict(zip(items["item_id"], items["question"], strict=True))
display(Markdown(
    f"Near-duplicate groups with more than one item: {(sp.groupby('dup_group').size() > 1).sum()} "
    f"({(sp.groupby('dup_group').size()[lambda s: s > 1]).sum()} items). "
    f"Battery stems: {sp.loc[sp['battery'] != '', 'battery'].nunique()} "
    f"({(sp['battery'] != '').sum()} items). "
    f"Leakage check (held-out item with the same text or battery stem as a train item, or cosine ≥ "
    f"{split_dup_threshold} with one): **{len(result.leakage)} found**."))
"""),
    ("md", """
### How close do held-out items come to training items?
For every test and held-out-cluster item, its nearest train item by cosine similarity of the question
embeddings (written to `split_nearest_train.parquet`). The sensitivity table counts the held-out items
with a train neighbour at or above each threshold: zero at `split_dup_threshold` by construction; the
lower thresholds show how much a stricter definition of "near-duplicate" would still find.
"""),
    ("code", """
display(result.leakage_sensitivity.style.hide(axis="index").format({"share": "{:.1%}", "threshold": "{:.2f}"}))
near = result.nearest_train.assign(question=lambda d: d["item_id"].map(q).str.slice(0, 90),
                                   nearest_train_question=lambda d: d["nearest_train_item_id"].map(q).str.slice(0, 90))
display(Markdown("Closest held-out items to a train item:"))
display(near.sort_values("similarity", ascending=False).head(8)[
    ["split", "similarity", "question", "nearest_train_question"]].style.hide(axis="index").format(
    {"similarity": "{:.3f}"}))
"""),
    ("md", """
## Counts per value set, method and split
`items_*`: items of the value set in each split (train and validation capped at `dataset_max_items`
for the embedded default). `rows_*`: dataset rows. SFT has `sft_samples_per_item` rows per item, DPO
up to `dpo_max_pairs_per_item` pairs whose shares differ by at least `dpo_min_margin`, KTO one row per
option. Test items are not written as training data; notebook 04 evaluates them from
`splits.parquet` and `value_set_distributions.parquet`.
"""),
    ("code", """
counts = ds.summary_counts(result.counts)
counts_for_thesis = plotting.with_display_names(counts)
counts_for_thesis.columns = [c.replace("_", " ").replace("test cluster", "held-out cluster").capitalize()
                             for c in counts_for_thesis.columns]
plotting.save_table(counts_for_thesis, "datasets-counts", caption="Alignment dataset rows and items per "
                    "value set, method and split.", notebook=NAME, float_format="{:.0f}")
counts.style.hide(axis="index")
"""),
    ("md", """
## KTO: desirable vs undesirable
An option is *desirable* when its share is at least `kto_threshold / n_options` (threshold 1: chosen
more often than by chance), else undesirable. KTO tolerates imbalance but should be told: the
balanced weights below make `desirable_weight × n_desirable = undesirable_weight × n_undesirable`
(written to `<value_set>/kto_weights.json` and read by notebook 03 when its weights are 0).
"""),
    ("code", """
pd.DataFrame(result.kto).T[["n_desirable", "n_undesirable", "desirable_ratio", "desirable_weight",
                            "undesirable_weight"]]
"""),
    ("md", """
## Share distributions of what the models are trained on
SFT answers are sampled from the distribution, so minority options appear too (in proportion);
DPO's chosen option always has the higher share; KTO's labels split at the threshold.
"""),
    ("code", """
fig = ds.plot_share_distributions(result)
_ = plotting.save_figure(fig, "datasets-share-distributions", notebook=NAME, inputs=[paths.DISTRIBUTIONS])
"""),
    ("md", """
## Training targets: what each method actually sees
The methods are compared on how well a model answers like its population; that comparison is fair
only if they are taught the same target. Each method's rows reward some answers: SFT its sampled
answers, DPO the chosen answer of each pair, KTO the desirable completions, dist the shares
themselves (a soft target: one row per prompt variant with the value set's shares over the option
letters). Reading the rewarded answers back per item gives the distribution the training data imply
(`valuealign.datasets.implied_distribution`). Below, per method and value set: its Jensen-Shannon
distance (base 2) to the population's distribution, averaged over the train items
(`realised`: the rows as written, sampling noise included; `expected`: the same construction rule
without its sampling noise, i.e. its bias), and the *mode share*: how much of the rewarded answers is
the item's most common answer. 0 means the method is shown exactly the population's distribution.
"""),
    ("code", """
targets = ds.training_target_distances(result.rows, result.mixtures, config=result.config)
display(targets.pivot(index="method", columns="value_set", values="mean_js_distance")
        .loc[[m for m in ds.METHODS if m in set(targets["method"])]].style.format(precision=3)
        .set_caption("realised mean JS distance, training target vs population (train items)"))
targets_table = plotting.with_display_names(targets).rename(columns={
    "method": "Method", "value_set": "Value set", "items": "Items",
    "items_without_target": "No target", "mean_js_distance": "JS realised",
    "expected_js_distance": "JS expected", "mode_share": "Mode share"})
plotting.save_table(targets_table, "datasets-training-targets", notebook=NAME,
                    inputs=[paths.ALIGNMENT / "value_set_distributions.parquet"],
                    caption="Distance of each method's training target from the population: mean "
                            "Jensen-Shannon distance (base 2) over train items between the answer "
                            "distribution the training rows reward and the value set's, as written "
                            "(realised) and without sampling noise (expected); mode share: the part of "
                            "the rewarded answers that is the item's most common answer.")
by_method = targets.groupby("method")[["mean_js_distance", "expected_js_distance", "mode_share"]].mean()
plotting.save_macros({plotting.macro_name("datasets", "target", "js", m): float(v)
                      for m, v in by_method["mean_js_distance"].dropna().items()},
                     "datasets-targets", notebook=NAME)
targets.style.hide(axis="index").format(precision=3)
"""),
    ("md", """
### The options that set DPO's and KTO's targets
`dpo_pair_direction`: `higher` makes the higher-share option the chosen one in every pair, so the
pairs all point towards the mode; `sampled` keeps the same pairs but draws each pair's direction with
probability s_i / (s_i + s_j), the Bradley-Terry preference whose strengths are the shares (in
expectation the preferences then say what the distribution says). `kto_labels`: `threshold` marks the
options with a share of at least `kto_threshold / n_options` desirable (on a skewed item only the mode);
`sampled` makes one answer per prompt variant desirable, drawn from the shares with SFT's generator (the
same draws as SFT's answers), the other options undesirable. Each alternative is rebuilt here in memory
for the same train items (`in_use` marks what was written), and sampled KTO also with as many prompt
variants per item as SFT has samples (its desirable answers are then exactly SFT's draws). The table is
what the defaults are judged by. A sampled target removes the pull towards the mode: *expected* is 0
for sampled KTO labels (as for sampled SFT answers) and much smaller for sampled DPO directions (not 0:
an item's few pairs, largest share gaps first, and a chosen-or-not per pair reward a flatter
distribution than the shares). But it adds sampling noise when an item has few rows (*realised*): three
sampled pairs are about as noisy as three pairs towards the mode, and one sampled KTO answer per item is
noisier than either, while four are exactly as noisy as SFT's four samples. The embedded default keeps `higher` and `threshold` (the
datasets and runs of earlier results stay as they were, and its few-step runs cannot show the
difference); the thesis profiles choose `sampled` for both and four KTO prompt variants per item, so
that SFT, DPO, KTO and dist are trained towards the same distribution and differ in how they learn
from it, not in what they are shown.
"""),
    ("code", """
options = ds.target_option_comparison(items, result)
(options.groupby(["method", "variant", "in_use"])[["mean_js_distance", "expected_js_distance",
                                                   "mode_share"]].mean().reset_index()
 .style.hide(axis="index").format(precision=3)
 .set_caption("mean over value sets; JS: realised / expected distance of the target from the population"))
"""),
    ("md", """
## Position balance and example rows
Each row of an item gets the next rotation of a seeded option order and the next paraphrase, so
every option appears at every letter: the answer letter is no cue. Below, per value set and method
(train rows): the mean relative position of the trained answer, position / (n_options − 1), which is
0.5 when balanced, and the share of answers shown as "A" next to what balance would give
(mean of 1 / n_options); then one rendered row per method.
"""),
    ("code", """
display(ds.position_balance(result).style.hide(axis="index").format(precision=3))
first = result.value_sets[0].value_set
ex = ds.example_rows(result, first)
for _, r in ex.iterrows():
    display(Markdown(f"**{r['method'].upper()}** · `{r['item_id']}` · paraphrase {r['paraphrase_id']} · "
                     f"order {r['option_order']} · answer: {r['answer']}\\n\\n```\\n{r['prompt']}\\n```"))
"""),
    ("md", """
## Macros for the thesis text
"""),
    ("code", """
pairs = result.jsd[result.jsd["value_set_a"] < result.jsd["value_set_b"]]
macros = {
    "DatasetsValueSets": len(result.value_sets),
    "DatasetsItemsWithData": int(len(result.splits)),
    "DatasetsTestItems": int((result.splits["split"] == "test").sum()),
    "DatasetsTestClusterItems": int((result.splits["split"] == "test_cluster").sum()),
}
if len(pairs) and pairs["mean_js_distance"].notna().any():
    macros["DatasetsMeanJSD"] = float(pairs["mean_js_distance"].mean())
plotting.save_macros(macros, "datasets", notebook=NAME)
pd.Series(macros).to_frame("value")
"""),
]

if __name__ == "__main__":
    write(ROOT / "notebooks" / f"{NAME}.ipynb", CELLS)
    print(f"wrote notebooks/{NAME}.ipynb")

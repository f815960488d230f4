"""Write notebooks/01_value_taxonomy.ipynb (source, no outputs). Run: python tools/build_notebook_01.py"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from nbbuild import write  # noqa: E402

NAME = "01_value_taxonomy"

CELLS: list[tuple[str, str]] = [
    ("md", """
# 01 · Value taxonomy: survey items → embeddings → UMAP → HDBSCAN → Schwartz values

**Question.** Which groups of survey items measure similar things, how stable is that grouping, and how
does the structure found in the item texts relate to Schwartz's theory of basic values (the 10 values,
the refined 19, and the circle spanned by *openness to change vs conservation* and *self-enhancement vs
self-transcendence*)?

**Method.** Each item's question text (WVS answer-scale preambles removed) is embedded with a sentence
encoder (default all-MiniLM-L6-v2, offline; cached on disk by model and text hash), reduced with UMAP
(cosine) to a 5-d clustering space and separately to 2-d for the map, and clustered with HDBSCAN, which
may leave an item unclustered ("noise") rather than force it into a group. A single fit depends on its
seed and even on float rounding, so the taxonomy is the **consensus** of `taxonomy_consensus_runs` fits
(different seeds, slightly perturbed embeddings): two items belong together when they shared a cluster
in most runs. Clusters are read against
prototype texts of each Schwartz value written for this project (`data/reference/schwartz_values.yaml`),
labelled by their most distinctive words (c-TF-IDF) and placed on the circumplex. Two checks follow:
the Schwartz mapping rule is scored against the gold value labels of Touché23-ValueEval arguments,
and the clusters' *predictive power* is tested on the countries' answers (do items of one cluster
vary alike across countries?).

**Inputs:** `data/processed/items.parquet` and `distributions.parquet` (notebook 00),
`data/reference/schwartz_values.yaml`, `data/reference/valueeval_to_schwartz.csv`, the Touché23-ValueEval
arguments (for the mapping check); optionally, as texts to cluster, the Touché23-ValueEval arguments (`data/raw/touche23_valueeval/`, with gold value labels) and
the DailyDilemmas value words (`data/raw/daily_dilemmas/values.csv`), chosen by `taxonomy_corpus`.

**Outputs:** `data/processed/taxonomy.parquet` (item → cluster, membership confidence, nearest
Schwartz value and its similarity, 2-d map coordinates), `data/processed/taxonomy_clusters.parquet`, a
manifest; figures `taxonomy-umap-map`, `taxonomy-value-heatmap`, `taxonomy-circumplex`,
`taxonomy-stability`, `taxonomy-consensus-curve`, `taxonomy-schwartz-confusion`, `taxonomy-profile-coherence`
(PDF + PNG), table `taxonomy-clusters.tex`, macros (group `taxonomy`).
"""),
    ("params", """
seed = 0  # random seed for UMAP, the stability subsamples and k-means [0, 1000000]
taxonomy_mode = "pinned"  # pinned: the pinned embeddings and taxonomy of data/pinned/ when they match these inputs, else recompute and say so; recompute: re-run and compare with the pin; require-pin: fail without a matching pin {pinned, recompute, require-pin}
taxonomy_corpus = ["survey"]  # texts to cluster: survey items, ValueEval arguments, DailyDilemmas value words {survey, valueeval, dilemmas}
taxonomy_valueeval_max = 1000  # at most this many single-label ValueEval training arguments [10, 10000]
taxonomy_embedding_model = "all-MiniLM-L6-v2"  # sentence-transformers model: the bundled MiniLM or a local folder (offline)
taxonomy_embedding_batch_size = 64  # texts per encoder batch [1, 1024]
umap_n_neighbors = 15  # UMAP neighbourhood size (larger keeps more global structure) [2, 200]
umap_n_components = 5  # dimensions of the UMAP space HDBSCAN clusters in [2, 50]
umap_min_dist = 0.0  # UMAP min_dist of the clustering space (0 packs clusters tightly) [0.0, 1.0]
umap_n_epochs = 200  # UMAP optimisation epochs [10, 2000]
hdbscan_min_cluster_size = 15  # smallest group HDBSCAN reports as a cluster [2, 10000]
hdbscan_min_samples = 5  # HDBSCAN density smoothing (larger gives more noise; 0 means min_cluster_size) [0, 1000]
taxonomy_sweep_sizes = [5, 10, 15, 25, 40, 60, 100]  # min_cluster_size values of the trade-off sweep [2, 10000]
taxonomy_consensus_runs = 50  # UMAP + HDBSCAN runs behind the consensus clustering (1 means the single-seed fit, for comparison) [1, 200]
taxonomy_consensus_noise = 0.0001  # std of the Gaussian added to each embedding coordinate in each consensus run [0.0, 0.01]
taxonomy_consensus_cut = 0.6  # average-linkage cut on 1 - co-association: a group's members co-cluster in over 40% of runs on average [0.05, 0.95]
taxonomy_consensus_jobs = 2  # worker processes for the consensus runs (the result does not depend on it) [1, 64]
taxonomy_curve_sizes = [1, 5, 10, 25, 50]  # runs per consensus in the stability curve (disjoint seed sets) [1, 200]
taxonomy_avx2_check = True  # re-embed the texts with PyTorch's AVX2 kernels (ATEN_CPU_CAPABILITY avx2; cached) and compare the consensus
taxonomy_value_prototypes = "project+valueeval"  # texts behind each basic value's prototype: ours, or ours plus ValueEval's value descriptions {project, project+valueeval}
taxonomy_mapping_folds = 5  # folds of the cross-validated logistic regression on ValueEval [2, 20]
taxonomy_permutations = 1000  # label permutations in the within/between-cluster profile test [100, 100000]
taxonomy_min_countries = 5  # countries an item needs (and an item pair must share) for the profile test [3, 100]
taxonomy_stability_runs = 10  # single-seed subsample refits for the stability estimate (mean pairwise ARI) [2, 100]
taxonomy_stability_fraction = 0.8  # share of texts drawn (without replacement) in each refit [0.1, 1.0]
taxonomy_top_terms = 5  # c-TF-IDF terms in each cluster's label [1, 20]
taxonomy_circumplex_temperature = 0.02  # softmax temperature placing clusters on the circumplex [0.001, 1.0]
taxonomy_table_rows = 25  # largest clusters listed in the LaTeX table [1, 500]
"""),
    ("code", """
from valuealign import config

params = config.check_parameters("01_value_taxonomy", globals())
"""),
    ("code", """
import time
import warnings

from sklearn.metrics import adjusted_rand_score

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from valuealign import consensus as cs
from valuealign import paths, pinning, plotting, provenance
from valuealign import taxonomy as tx
from valuealign import taxonomy_validation as tv

warnings.filterwarnings("ignore", module="umap")
warnings.filterwarnings("ignore", module="sklearn")
pd.set_option("display.max_colwidth", 70)
NOTEBOOK = "01_value_taxonomy"
t_start = time.perf_counter()
manifest = provenance.Manifest(NOTEBOOK, parameters=params, seed=seed)
fit_params = tx.FitParams(
    n_neighbors=umap_n_neighbors, n_components=umap_n_components, min_dist=umap_min_dist,
    n_epochs=umap_n_epochs, min_cluster_size=hdbscan_min_cluster_size,
    min_samples=hdbscan_min_samples, seed=seed,
)
consensus_params = cs.ConsensusParams(runs=taxonomy_consensus_runs, noise=taxonomy_consensus_noise,
                                      cut=taxonomy_consensus_cut, jobs=taxonomy_consensus_jobs)
"""),
    ("md", """
## The corpus and its embeddings
One text per item. Items with the same wording share one text (and so one cluster). Embeddings come
from the on-disk cache when this model has seen the text before; only new texts are embedded.
"""),
    ("code", """
try:
    items = tx.load_items() if "survey" in taxonomy_corpus else None
    corpus = tx.build_corpus(items, taxonomy_corpus, valueeval_max=taxonomy_valueeval_max,
                             seed=seed, origin="data/processed/items.parquet")
    tax = tx.run(corpus, fit_params, model_name=taxonomy_embedding_model,
                 batch_size=taxonomy_embedding_batch_size, top_terms=taxonomy_top_terms,
                 temperature=taxonomy_circumplex_temperature, consensus=consensus_params,
                 extra_basic_texts=(tv.valueeval_description_texts()
                                    if taxonomy_value_prototypes == "project+valueeval" else None),
                 mode=taxonomy_mode)
except (tx.TaxonomyError, pinning.PinError) as err:
    display(Markdown(f"**Cannot build the taxonomy.** {err}"))
    raise tx.TaxonomyError(str(err)) from None

s = tax.embed_stats
display(corpus.groupby("source").agg(items=("item_id", "size"), distinct_texts=("text", "nunique")))
display(Markdown(
    f"{len(corpus)} items, {len(tax.texts)} distinct texts. Embeddings ({taxonomy_embedding_model}): "
    f"{s.n_cached} from the cache, {s.n_embedded} newly embedded"
    + (f" ({s.items_per_s:.0f} texts/s)." if s.items_per_s else ".")
    + f" Clustering ({taxonomy_consensus_runs} UMAP + HDBSCAN run(s)): {tax.seconds['cluster']:.1f} s; "
    f"2-d map: {tax.seconds['map2d']:.1f} s."
))
"""),
    ("md", """
## Pinned or recomputed?
The embeddings depend on the CPU kernels PyTorch picks (AVX-512 or AVX2: differences of ~1e-7), and
UMAP + HDBSCAN turn such rounding into a different clustering; everything downstream follows the
clustering. So the canonical embeddings and consensus assignment are **pinned** in `data/pinned/`
(with their SHA-256 and the machine they were made on) and read whenever the texts and parameters
match the pin (`taxonomy_mode = "pinned"`, the default): the same taxonomy on every machine.
`taxonomy_mode = "recompute"` re-runs the stage on this machine and reports how far it is from the
pin; `make pin-taxonomy` re-pins deliberately (the git diff of `data/pinned/` then shows it).
"""),
    ("code", """
pin_validation = tax.pin.entry.get("validation", {}) if tax.pin is not None else {}
pin_agreement = {}
if tax.pin is not None:
    made = tax.pin.entry.get("machine", {})
    display(Markdown(
        f"**Pinned taxonomy read** (`data/pinned/{tax.pin.entry['file']}`, input fingerprint "
        f"`{tax.fingerprint[:16]}`), made on {made.get('cpu_model')} with PyTorch kernels "
        f"{made.get('torch_cpu_capability')}; embeddings from `data/pinned/{tax.pin.entry['embeddings']}`. "
        "The validation numbers below marked *(pinned)* were measured when the pin was made; "
        "`taxonomy_mode = 'recompute'` measures them again."
    ))
elif taxonomy_mode == "pinned":
    display(Markdown(
        f"**No pinned taxonomy matches these inputs** (input fingerprint `{tax.fingerprint[:16]}`: other "
        "texts or parameters than any pin in `data/pinned/`), so it was **recomputed on this machine** "
        "and may differ on another. Pin it with `make pin-taxonomy PROFILE=<this profile>`."
    ))
else:
    pinned_x = pinning.pinned_embeddings_for(tax.texts, tx._slug(taxonomy_embedding_model))
    old = pinning.find_taxonomy_pin(tax.texts, tax.fingerprint)
    if old is None:
        display(Markdown(f"Recomputed on this machine; no pin matches these inputs (fingerprint "
                         f"`{tax.fingerprint[:16]}`) to compare with."))
    else:
        changed = int((old.labels[tax.text_index] != tax.items["cluster"].to_numpy()).sum())
        pin_agreement = {
            "ari": float(adjusted_rand_score(old.labels, tax.fit.labels)),
            "changed_items": changed, "pinned_clusters": int(old.labels.max() + 1),
            "pinned_noise_share": float((old.labels < 0).mean()),
            "embedding_max_abs_diff": (float(np.abs(pinned_x - tax.embeddings).max())
                                       if pinned_x is not None else None),
        }
        display(Markdown(
            f"**Recomputed on this machine** and compared with the pin (`data/pinned/{old.entry['file']}`): "
            f"ARI **{pin_agreement['ari']:.3f}**, {changed} of {len(tax.items)} items with another cluster id "
            f"(ids are numbered by size, so a renumbering counts too); {tax.fit.n_clusters} clusters vs "
            f"{pin_agreement['pinned_clusters']} pinned, noise {tax.fit.noise_share:.1%} vs "
            f"{pin_agreement['pinned_noise_share']:.1%}; embeddings differ from the pinned ones by at most "
            f"{pin_agreement['embedding_max_abs_diff']}. The pin is not replaced: `make pin-taxonomy` does that."
        ))
"""),
    ("md", """
## The clusters
Clusters are numbered by size (0 = largest). The **label** lists the words that distinguish a cluster from
the others (c-TF-IDF); **nearest value** is the Schwartz value whose prototype is most similar (cosine) to
the cluster's mean embedding, with that similarity as **score** (MiniLM similarities between a short
question and a value definition rarely exceed 0.6: compare scores *between* clusters, not with 1).
The **example** is the cluster's most typical text (highest membership confidence: the share of runs in
which it shared a cluster with the other members, averaged over them).
"""),
    ("code", """
f = tax.fit
display(Markdown(
    f"The consensus has **{f.n_clusters} clusters**; **{f.noise_share:.1%}** of the distinct texts are noise "
    f"(in no cluster). Median membership confidence of clustered texts: "
    f"{np.median(f.probabilities[f.labels >= 0]):.2f}; share with confidence of at least 0.8: "
    f"{(f.probabilities[f.labels >= 0] >= 0.8).mean():.0%}."
))
cols = ["cluster", "n_items", "label", "nearest_value", "value_score", "nearest_value_refined", "example"]
display(tax.clusters[cols].head(15).style.format({"value_score": "{:.2f}"}).hide(axis="index"))
"""),
    ("code", """
fig = tx.plot_map(tax)
plotting.save_figure(fig, "taxonomy-umap-map", notebook=NOTEBOOK, inputs=[paths.ITEMS])
plt.show()
"""),
    ("md", """
## Mapping the clusters onto Schwartz's values
The heatmap shows, for each cluster, how much more (red) or less (blue) similar its mean embedding is to
each value's prototype than to the average value: the cluster's value *profile*. The circumplex places
each cluster at the similarity-weighted mean direction of the values (softmax with temperature
`taxonomy_circumplex_temperature`): up = openness to change, down = conservation, right =
self-enhancement, left = self-transcendence; the distance from the centre says how one-sided the profile
is. Colour = higher-order dimension of the nearest value; size = number of items.
"""),
    ("code", """
fig = tx.plot_value_heatmap(tax)
plotting.save_figure(fig, "taxonomy-value-heatmap", notebook=NOTEBOOK,
                     inputs=[paths.ITEMS, tx.PROTOTYPES])
plt.show()
"""),
    ("code", """
fig = tx.plot_circumplex(tax)
plotting.save_figure(fig, "taxonomy-circumplex", notebook=NOTEBOOK, inputs=[paths.ITEMS, tx.PROTOTYPES])
plt.show()
clustered = tax.items[tax.items["cluster"] >= 0]
by_value = (clustered.groupby("cluster_value").size().rename("items").to_frame()
            .join(tax.clusters.groupby("nearest_value").size().rename("clusters"))
            .sort_values("items", ascending=False))
display(Markdown("Items (in clusters) and clusters per nearest basic value:"))
display(by_value.T)
"""),
    ("md", """
## Does the taxonomy hold still?
A single UMAP + HDBSCAN fit depends on its seed, and even on float rounding. The taxonomy above is
therefore the consensus of `taxonomy_consensus_runs` fits, each with its own seed and with Gaussian noise
of std `taxonomy_consensus_noise` added to the embeddings; the **co-association** of two texts is the
share of runs in which they shared a cluster, and average-linkage clustering of 1 − co-association cut at
`taxonomy_consensus_cut` gives the consensus (groups below `hdbscan_min_cluster_size` are noise).

**How many runs?** A second consensus is built from a *disjoint* set of seeds; the pooled runs are cut
into disjoint blocks of r runs (at most four blocks) and the blocks' consensus clusterings are compared
(mean pairwise ARI, noise counted as one class). r = 1 is the single-seed pipeline. The default of 50
runs was chosen from this curve: it passes 0.9 at about 25 runs and flattens there, and the second
requirement, that the consensus survive the rounding check below at ARI of at least 0.95, needed the
extra runs (at 30 runs it did not always). Nearly all remaining disagreement is about which texts are
noise: on texts both consensus clusterings place in a cluster they agree almost perfectly.
"""),
    ("code", """
d = tx.cosine_distances(tax.embeddings) if len(tax.texts) < tx.PRECOMPUTED_MAX else None
single_fit = tx.fit(tax.embeddings, fit_params, distances=d)  # the single-seed pipeline, for comparison
curve, disjoint_ari, single_seed_ari = None, float("nan"), float("nan")
if tax.consensus is not None:
    t0 = time.perf_counter()
    second = cs.build(tax.embeddings, fit_params, consensus_params, block=1)
    pool = np.vstack([tax.consensus.run_labels, second.run_labels])
    sizes = sorted({r for r in taxonomy_curve_sizes if r <= taxonomy_consensus_runs} | {taxonomy_consensus_runs})
    curve = cs.stability_curve(pool, sizes, cut=taxonomy_consensus_cut,
                               min_cluster_size=hdbscan_min_cluster_size)
    disjoint_ari = float(adjusted_rand_score(tax.consensus.labels, second.labels))
    in_both = (tax.consensus.labels >= 0) & (second.labels >= 0)
    clustered_ari = float(adjusted_rand_score(tax.consensus.labels[in_both], second.labels[in_both]))
    if (curve["runs"] == 1).any():
        single_seed_ari = float(curve.loc[curve["runs"] == 1, "mean_pairwise_ari"].iloc[0])
    display(curve.style.format({"mean_pairwise_ari": "{:.3f}", "n_clusters": "{:.1f}",
                                "noise_share": "{:.1%}"}).hide(axis="index"))
    display(Markdown(
        f"Consensus of seeds {tax.consensus.seeds[0]}-{tax.consensus.seeds[-1]} vs consensus of seeds "
        f"{second.seeds[0]}-{second.seeds[-1]}: ARI **{disjoint_ari:.3f}** "
        f"(single-seed fits agree with each other at mean ARI {single_seed_ari:.3f}); on the {in_both.mean():.0%} "
        f"of texts both place in a cluster: ARI {clustered_ari:.3f}. "
        f"Second consensus: {time.perf_counter() - t0:.0f} s."
    ))
    fig = cs.plot_stability_curve(curve, taxonomy_consensus_runs)
    plotting.save_figure(fig, "taxonomy-consensus-curve", notebook=NOTEBOOK, inputs=[paths.ITEMS])
    plt.show()
elif pin_validation.get("consensus_curve"):
    curve = pd.DataFrame(pin_validation["consensus_curve"])
    disjoint_ari = pin_validation["consensus_disjoint_ari"]
    single_seed_ari = pin_validation["single_seed_pairwise_ari"]
    display(curve.style.format({"mean_pairwise_ari": "{:.3f}", "n_clusters": "{:.1f}",
                                "noise_share": "{:.1%}"}).hide(axis="index"))
    display(Markdown(
        f"*(pinned)* Consensus vs consensus of disjoint seeds: ARI **{disjoint_ari:.3f}** (single-seed fits: "
        f"{single_seed_ari:.3f}), measured when the pin was made; `taxonomy_mode = 'recompute'` re-runs it."
    ))
    fig = cs.plot_stability_curve(curve, taxonomy_consensus_runs)
    plotting.save_figure(fig, "taxonomy-consensus-curve", notebook=NOTEBOOK, inputs=[paths.ITEMS])
    plt.show()
else:
    display(Markdown("`taxonomy_consensus_runs = 1`: the single-seed fit, no consensus to check."))
"""),
    ("md", """
**Robustness to float rounding.** PyTorch picks its CPU kernels per process; the same texts embedded with
AVX2 instead of AVX-512 kernels (`ATEN_CPU_CAPABILITY=avx2`, in a subprocess; cached in
`data/cache/embeddings-avx2/`) differ by about 1e-7. Both the single-seed fit and the consensus (same
seeds) are rebuilt on those embeddings and compared with the ones above.
"""),
    ("code", """
avx2_ari = avx2_single_ari = avx2_max_diff = None
if taxonomy_avx2_check and tax.consensus is not None:
    t0 = time.perf_counter()
    x_avx2 = cs.embed_under_cpu_capability(tax.texts, "avx2", paths.CACHE / "embeddings-avx2",
                                           taxonomy_embedding_model, batch_size=taxonomy_embedding_batch_size)
    avx2_max_diff = float(np.abs(x_avx2 - tax.embeddings).max())
    avx2_single_ari = float(adjusted_rand_score(single_fit.labels, tx.fit(x_avx2, fit_params).labels))
    on_avx2 = cs.build(x_avx2, fit_params, consensus_params)
    avx2_ari = float(adjusted_rand_score(tax.consensus.labels, on_avx2.labels))
    display(Markdown(
        f"AVX2 vs default embeddings: largest coordinate difference {avx2_max_diff:.1e}. Agreement (ARI) "
        f"of the single-seed fits: **{avx2_single_ari:.3f}**; of the consensus clusterings: **{avx2_ari:.3f}** "
        f"({time.perf_counter() - t0:.0f} s)."
        + (" (This CPU's default kernels are AVX2 already: identical embeddings say nothing.)"
           if avx2_max_diff == 0 else "")
    ))
elif taxonomy_avx2_check and pin_validation.get("avx2_consensus_ari") is not None:
    avx2_ari, avx2_single_ari = pin_validation["avx2_consensus_ari"], pin_validation["avx2_single_seed_ari"]
    avx2_max_diff = pin_validation["avx2_max_abs_diff"]
    display(Markdown(
        f"*(pinned)* AVX2 vs default embeddings when the pin was made: largest coordinate difference "
        f"{avx2_max_diff:.1e}; ARI of the single-seed fits **{avx2_single_ari:.3f}**, of the consensus "
        f"clusterings **{avx2_ari:.3f}**. With the pin, both kernels give the pinned taxonomy."
    ))
"""),
    ("md", """
## Validation
**Agreement with the WVS thematic sections** (the 239 WVS-7 items; GOQA items have no thematic
section), and with the ValueEval gold labels when those arguments are in the corpus. ARI (adjusted Rand
index: 0 = chance, 1 = identical partitions), NMI (normalised mutual information) and purity (share of
items in their cluster's majority class). HDBSCAN is shown twice: with its noise counted as one more
cluster (the honest view) and on clustered items only. The baseline is k-means on the raw 384-d
embeddings with k = the number of gold classes. The sections are a *topical* grouping made by the
survey's authors, not a value taxonomy: high agreement means the clusters are readable, not that they
are right.
"""),
    ("code", """
validation = tx.validation_table(tax, seed=seed)
display(validation.style.format({"ari": "{:.3f}", "nmi": "{:.3f}", "purity": "{:.3f}"}).hide(axis="index"))
sections = tx.section_table(tax)
gold = tx.gold_labels(tax, "section").to_numpy(dtype=object)
purity = tx.purity_table(tax.items["cluster"].to_numpy(), np.where(pd.isna(gold), None, gold))
display(Markdown("Clusters holding WVS items, with their majority section and purity (largest first):"))
display(purity.sort_values("n", ascending=False).head(12).style.format({"purity": "{:.2f}"}).hide(axis="index"))
"""),
    ("md", """
**Granularity and single-seed stability.** Left: HDBSCAN on the UMAP space of the first consensus run for a range of
`hdbscan_min_cluster_size` values: smaller values give more, finer clusters and less noise; the dotted
line marks the value used. Right, for comparison with the consensus: the single-seed pipeline refitted on
`taxonomy_stability_runs` random subsamples, each with a different UMAP seed; each pair of runs is
compared by ARI on the texts both contain. A mean pairwise ARI near 1 would mean a single fit does not
hinge on a seed or on which items happened to be included; it is far from 1, hence the consensus.
"""),
    ("code", """
gold_rows = np.where(pd.isna(gold), None, gold)
sweep = tx.sweep_min_cluster_size(tax.fit.space, taxonomy_sweep_sizes, min_samples=hdbscan_min_samples,
                                  gold=gold_rows, index=tax.text_index)
runs, aris = tx.stability(tax.embeddings, fit_params, n_runs=taxonomy_stability_runs,
                          fraction=taxonomy_stability_fraction, distances=d)
display(sweep.style.format({"noise_share": "{:.1%}", "ari": "{:.3f}", "nmi": "{:.3f}"}).hide(axis="index"))
display(Markdown(
    f"Stability over {len(runs)} subsample refits ({taxonomy_stability_fraction:.0%} of texts each): "
    f"mean pairwise ARI **{np.nanmean(aris):.3f}** (min {np.nanmin(aris):.3f}, max {np.nanmax(aris):.3f}, "
    f"{len(aris)} pairs); clusters per run {runs['n_clusters'].min()}-{runs['n_clusters'].max()}, "
    f"noise {runs['noise_share'].min():.0%}-{runs['noise_share'].max():.0%}."
))
fig = tx.plot_stability(sweep, aris, hdbscan_min_cluster_size)
plotting.save_figure(fig, "taxonomy-stability", notebook=NOTEBOOK, inputs=[paths.ITEMS])
plt.show()
"""),
    ("md", """
**Reproducibility.** The same parameters must give the same clusters: refit on the same texts and compare
(the single-seed fit, and the first run of the consensus with its perturbation).
"""),
    ("code", """
again = tx.fit(tax.embeddings, fit_params, distances=d)
same = bool(np.array_equal(again.labels, single_fit.labels))
if tax.consensus is not None:
    first_run, _ = cs.run_labels(tax.embeddings, fit_params, tax.consensus.seeds[:1], taxonomy_consensus_noise)
    # the same run in this process: worker processes do not change a fit
    same = same and bool(np.array_equal(first_run[0], tax.consensus.run_labels[0]))
display(Markdown(f"Refit with identical parameters: cluster assignments identical: **{same}**."))
assert same, "UMAP/HDBSCAN with a fixed seed gave different clusters"
"""),
    ("md", """
## Is the Schwartz mapping right? Touché23-ValueEval
The taxonomy names each cluster by the nearest Schwartz basic value (cosine between the cluster's mean
embedding and the value's prototype). The same rule is scored on Touché23-ValueEval arguments (all three
splits), whose gold categories (Schwartz's 19 refined values plus *universalism: objectivity*) are mapped
to the 10 basic values by `data/reference/valueeval_to_schwartz.csv` (the table says where each row comes
from). Only arguments whose gold categories map to exactly one basic value are scored (one right answer
each). References: **chance** (gold labels shuffled against the predictions, 200 times; keeps both class
shares) and a **logistic regression** on the same embeddings, cross-validated (`taxonomy_mapping_folds`
folds, class-balanced): what a linear read-out of the embedding can do at best. A second prototype set,
the descriptions of ValueEval's own 54 fine values, shows whether differently worded prototypes help.
By default the taxonomy averages ValueEval's descriptions into each basic value's prototype
(`taxonomy_value_prototypes`; the refined values keep ours), because that set scored best here. That
choice was made on these same arguments, so its score is slightly optimistic; the score of our
prototypes alone is not. Macro-F1 averages the F1 of every basic value present in the gold labels, so rare values count as much as
frequent ones.
"""),
    ("code", """
mapping = tv.load_mapping()
valueeval = tv.single_basic(tv.load_arguments(), mapping)
x_ve = tx.embed_texts(valueeval["text"].tolist(), taxonomy_embedding_model,
                      batch_size=taxonomy_embedding_batch_size)
basic_protos = tx.load_prototypes().query("level == 'basic'").set_index("value_id")
descriptions = tv.valueeval_description_texts(mapping=mapping)
prototype_sets = {
    "project": {v: basic_protos.at[v, "texts"] for v in tv.BASIC_VALUES},
    "valueeval": descriptions,
    "project+valueeval": {v: basic_protos.at[v, "texts"] + descriptions[v] for v in tv.BASIC_VALUES},
}
names = {"project": "our prototypes", "valueeval": "ValueEval's value descriptions",
         "project+valueeval": "our prototypes + ValueEval's descriptions"}
RULE = f"{names[taxonomy_value_prototypes]} (the taxonomy's rule)"
LOGREG = "logistic regression (cross-validated)"
rules = {RULE: prototype_sets[taxonomy_value_prototypes]}
rules |= {names[k]: texts for k, texts in prototype_sets.items() if k != taxonomy_value_prototypes}
mapping_scores = tv.score_mapping(
    x_ve, valueeval["gold"].to_numpy(dtype=object),
    {name: tv.prototype_matrix(texts, lambda t: tx.embed_texts(t, taxonomy_embedding_model,
                                                               batch_size=taxonomy_embedding_batch_size))
     for name, texts in rules.items()},
    seed=seed, folds=taxonomy_mapping_folds)
ms = mapping_scores.summary.set_index("rule")["macro_f1"]
display(Markdown(f"{len(valueeval)} single-value arguments ({valueeval['gold'].nunique()} basic values present)."))
display(mapping_scores.summary.style.format({"macro_f1": "{:.3f}", "accuracy": "{:.3f}"}).hide(axis="index"))
display(mapping_scores.per_value.style.format(precision=2).hide(axis="index"))
display(Markdown(
    f"The taxonomy's rule ({names[taxonomy_value_prototypes]}) reaches macro-F1 **{ms[RULE]:.3f}** against "
    f"chance {mapping_scores.chance:.3f} (permutation p = {mapping_scores.chance_p:.3f}); our prototypes alone "
    f"{ms[RULE] if taxonomy_value_prototypes == 'project' else ms[names['project']]:.3f}; "
    f"the cross-validated logistic regression {ms[LOGREG]:.3f}."
))
fig = tv.plot_confusion(mapping_scores.confusion)
plotting.save_figure(fig, "taxonomy-schwartz-confusion", notebook=NOTEBOOK,
                     inputs=[paths.VALUEEVAL_DIR, tx.PROTOTYPES, tv.MAPPING])
plt.show()
"""),
    ("md", """
## Predictive power: do items of one cluster behave alike across countries?
A taxonomy with predictive power groups items that populations answer alike. For each item answered in
at least `taxonomy_min_countries` countries (ordinal items and two-option items; from
`distributions.parquet`), its **country profile** is the mean answer position (0 = first, 1 = last
substantive option) per country. Two items' profiles are compared by |Pearson r| over the countries
both have (at least `taxonomy_min_countries`; absolute, because a scale's direction is arbitrary). If
the clusters carry information about answers, |r| is higher for pairs within a cluster than between
clusters. The test shuffles the cluster labels over the items `taxonomy_permutations` times (a random
partition with the same cluster sizes) and counts how often the within-minus-between difference reaches
the observed one. The same is shown for k-means on the embeddings (k = the consensus's number of
clusters) and for the single-seed fit; noise items are left out.
"""),
    ("code", """
from sklearn.cluster import KMeans

coherence_rows, coherence = [], None
if "survey" in taxonomy_corpus:
    profiles = tv.country_profiles(items, pd.read_parquet(paths.DISTRIBUTIONS),
                                   min_groups=taxonomy_min_countries)
    item_rows = tax.items.reset_index(drop=True)
    row_of = pd.Series(np.arange(len(item_rows)), index=item_rows["item_id"].to_numpy())
    profiles = profiles.loc[profiles.index.intersection(row_of.index)]
    rows = row_of.loc[profiles.index].to_numpy()
    corr = tv.profile_correlations(profiles, min_shared=taxonomy_min_countries)
    kmeans = KMeans(n_clusters=max(2, tax.fit.n_clusters), n_init=10,
                    random_state=seed).fit_predict(tax.embeddings)
    partitions = {
        "consensus taxonomy": item_rows["cluster"].to_numpy()[rows],
        "single-seed fit": single_fit.labels[tax.text_index][rows],
        "k-means on embeddings": kmeans[tax.text_index][rows],
    }
    for name, labels in partitions.items():
        res = tv.cluster_coherence(corr, labels, n_perm=taxonomy_permutations, seed=seed)
        coherence = coherence or res
        coherence_rows.append({"partition": name, "items": res.n_items, "pairs": res.n_pairs,
                               "within |r|": res.within, "between |r|": res.between,
                               "difference": res.difference, "random partition": res.null_mean,
                               "p": res.p_value})
    coherence_table = pd.DataFrame(coherence_rows)
    display(Markdown(f"{len(profiles)} items with country profiles over {profiles.shape[1]} countries."))
    display(coherence_table.style.format(precision=3).hide(axis="index"))
    display(Markdown(
        f"Within the consensus clusters, country profiles correlate at mean |r| **{coherence.within:.3f}** "
        f"against **{coherence.between:.3f}** between clusters (random partitions of the same sizes: "
        f"difference {coherence.null_mean:+.3f}; permutation p = {coherence.p_value:.4f})."
    ))
    fig = tv.plot_coherence(corr, partitions["consensus taxonomy"])
    plotting.save_figure(fig, "taxonomy-profile-coherence", notebook=NOTEBOOK,
                         inputs=[paths.ITEMS, paths.DISTRIBUTIONS])
    plt.show()
else:
    display(Markdown("No survey items in the corpus: no answer profiles to test."))
"""),
    ("md", """
## Bad input
What the stage says when the input cannot be clustered. Each case is run through the same code as above
and must stop with a readable message (no deep library traceback).
"""),
    ("code", """
distinct = tax.texts[:40]
bad = tx.bad_input_messages({
    "empty corpus": (tx.corpus_from_texts([]), fit_params),
    "a single item": (tx.corpus_from_texts(distinct[:1]), fit_params),
    "all texts identical": (tx.corpus_from_texts([distinct[0]] * 20), fit_params),
    f"{len(distinct)} texts, hdbscan_min_cluster_size={len(distinct) // 2 + 1}": (
        tx.corpus_from_texts(distinct),
        tx.FitParams(**{**fit_params.__dict__, "min_cluster_size": len(distinct) // 2 + 1,
                        "n_neighbors": min(umap_n_neighbors, 10)}),
    ),
}, model_name=taxonomy_embedding_model)
display(bad.style.hide(axis="index"))
assert (bad["error"] != "(none)").all()
"""),
    ("md", """
## Outputs
`taxonomy.parquet` for later stages (sorted by `item_id`; same inputs and parameters give the same
bytes), the cluster table, the LaTeX table of the largest clusters, the numbers quoted in the thesis, and
the manifest.
"""),
    ("code", """
written = tx.write_outputs(tax)
table = tax.clusters.head(taxonomy_table_rows).assign(
    label=lambda t: t["label"].str.split(", ").str[:3].str.join(", "))[
    ["cluster", "n_items", "label", "nearest_value", "value_score", "nearest_value_refined"]
].rename(columns={"cluster": "Cluster", "n_items": "Items", "label": "Top terms (c-TF-IDF)",
                  "nearest_value": "Nearest value", "value_score": "Cosine",
                  "nearest_value_refined": "Nearest refined value"})
plotting.save_table(
    table, "taxonomy-clusters", float_format="{:.2f}", notebook=NOTEBOOK, inputs=[paths.TAXONOMY],
    caption=(f"The {len(table)} largest of {tax.fit.n_clusters} clusters of {len(corpus)} survey items "
             "(UMAP + HDBSCAN on MiniLM embeddings): size, most distinctive terms, and the nearest "
             "Schwartz basic and refined value with its cosine similarity."),
)
sec = validation[(validation["gold"] == "WVS sections")].set_index("method")
macros = {
    "TaxonomyItems": len(corpus), "TaxonomyClusters": tax.fit.n_clusters,
    "TaxonomyNoiseShare": round(tax.fit.noise_share, 3),
    "TaxonomyStabilityAri": float(np.nanmean(aris)), "TaxonomyStabilityRuns": len(runs),
    "TaxonomyConsensusRuns": taxonomy_consensus_runs, "TaxonomyConsensusNoise": f"{taxonomy_consensus_noise:g}",
    "TaxonomyConsensusCut": taxonomy_consensus_cut, "TaxonomyMinCountries": taxonomy_min_countries,
    "TaxonomySchwartzArguments": len(valueeval),
    "TaxonomySchwartzMacroF": float(ms[RULE]),
    "TaxonomySchwartzProjectMacroF": float(ms[RULE] if taxonomy_value_prototypes == "project"
                                           else ms[names["project"]]),
    "TaxonomySchwartzChanceMacroF": mapping_scores.chance,
    "TaxonomySchwartzLogregMacroF": float(ms[LOGREG]),
}
if tax.consensus is not None or tax.pin is not None:
    macros.update({"TaxonomyConsensusDisjointAri": disjoint_ari, "TaxonomySingleSeedAri": single_seed_ari,
                   "TaxonomyMedianConfidence": float(np.median(tax.fit.probabilities[tax.fit.labels >= 0]))})
if avx2_ari is not None:
    macros.update({"TaxonomyAvxConsensusAri": avx2_ari, "TaxonomyAvxSingleAri": avx2_single_ari})
if coherence is not None:
    km_row = coherence_table.set_index("partition").loc["k-means on embeddings"]
    macros.update({
        "TaxonomyProfileItems": coherence.n_items, "TaxonomyProfileWithin": coherence.within,
        "TaxonomyProfileBetween": coherence.between, "TaxonomyProfileDifference": coherence.difference,
        "TaxonomyProfileRandomDifference": coherence.null_mean,
        "TaxonomyProfileP": f"{coherence.p_value:.4f}",  # p >= 1/(1 + permutations): four decimals
        "TaxonomyProfileKmeansDifference": float(km_row["difference"]),
        "TaxonomyProfileKmeansP": f"{km_row['p']:.4f}",
        "TaxonomyProfilePermutations": taxonomy_permutations,
    })
if len(sec):
    macros.update({
        "TaxonomySectionAri": float(sec.loc["HDBSCAN (noise = one cluster)", "ari"]),
        "TaxonomySectionNmi": float(sec.loc["HDBSCAN (noise = one cluster)", "nmi"]),
        "TaxonomyKmeansAri": float(sec.loc["k-means on raw embeddings", "ari"]),
        "TaxonomyKmeansNmi": float(sec.loc["k-means on raw embeddings", "nmi"]),
    })
plotting.save_macros(macros, "taxonomy", notebook=NOTEBOOK)
inputs = [tx.PROTOTYPES] + ([paths.ITEMS] if "survey" in taxonomy_corpus else [])
inputs += [paths.VALUEEVAL_DIR, tv.MAPPING] + ([paths.DISTRIBUTIONS] if "survey" in taxonomy_corpus else [])
inputs += [paths.DILEMMAS_DIR / "values.csv"] if "dilemmas" in taxonomy_corpus else []
manifest.add_inputs(inputs)
manifest.add_outputs(written)
manifest.extra = {
    "n_items": len(corpus), "n_texts": len(tax.texts), "n_clusters": tax.fit.n_clusters,
    "noise_share": tax.fit.noise_share, "stability_mean_pairwise_ari": float(np.nanmean(aris)),
    "validation": validation.to_dict(orient="records"), "embedding": tax.embed_stats.__dict__,
    "seconds": tax.seconds,
    "consensus_runs": taxonomy_consensus_runs, "consensus_disjoint_ari": disjoint_ari,
    "single_seed_pairwise_ari": single_seed_ari,
    "consensus_curve": curve.to_dict(orient="records") if curve is not None else None,
    "avx2_consensus_ari": avx2_ari, "avx2_single_seed_ari": avx2_single_ari,
    "avx2_max_abs_diff": avx2_max_diff,
    "schwartz_macro_f1": float(ms[RULE]), "schwartz_chance_macro_f1": mapping_scores.chance,
    "schwartz_chance_p": mapping_scores.chance_p,
    "schwartz_mapping": mapping_scores.summary.to_dict(orient="records"),
    "coherence": coherence_rows,
    "coherence_p_value": coherence.p_value if coherence is not None else None,
    "taxonomy_mode": taxonomy_mode, "input_fingerprint": tax.fingerprint,
    "pinned": tax.pin is not None, "pin_agreement": pin_agreement,
}
if tax.pin is None and tax.consensus is not None:  # computed here: a candidate for `make pin-taxonomy`
    proto_texts = [t for ts in tax.protos["texts"] for t in ts]
    written.append(pinning.write_candidate(
        texts=tax.texts, embeddings=tax.embeddings, extra_texts=proto_texts,
        extra_embeddings=tx.embed_texts(proto_texts, taxonomy_embedding_model, pinned=False),
        labels=tax.fit.labels, confidence=tax.fit.probabilities, xy=tax.xy, fingerprint=tax.fingerprint,
        model_slug=tx._slug(taxonomy_embedding_model), parameters=params,
        validation={"consensus_disjoint_ari": disjoint_ari, "single_seed_pairwise_ari": single_seed_ari,
                    "consensus_curve": curve.to_dict(orient="records") if curve is not None else None,
                    "avx2_consensus_ari": avx2_ari, "avx2_single_seed_ari": avx2_single_ari,
                    "avx2_max_abs_diff": avx2_max_diff},
    ))
manifest.write(tx.MANIFEST)
display(Markdown(
    f"Wrote {', '.join(paths.relative(p) for p in [*written, tx.MANIFEST])}. "
    f"Notebook wall time: {time.perf_counter() - t_start:.0f} s."
))
"""),
]


if __name__ == "__main__":
    write(ROOT / "notebooks" / f"{NAME}.ipynb", CELLS)
    print(f"wrote notebooks/{NAME}.ipynb")

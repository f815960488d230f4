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
may leave an item unclustered ("noise") rather than force it into a group. Clusters are read against
prototype texts of each Schwartz value written for this project (`data/reference/schwartz_values.yaml`),
labelled by their most distinctive words (c-TF-IDF) and placed on the circumplex.

**Inputs:** `data/processed/items.parquet` (notebook 00), `data/reference/schwartz_values.yaml`;
optionally the Touché23-ValueEval arguments (`data/raw/touche23_valueeval/`, with gold value labels) and
the DailyDilemmas value words (`data/raw/daily_dilemmas/values.csv`), chosen by `taxonomy_corpus`.

**Outputs:** `data/processed/taxonomy.parquet` (item → cluster, membership probability, nearest
Schwartz value and its similarity, 2-d map coordinates), `data/processed/taxonomy_clusters.parquet`, a
manifest; figures `taxonomy-umap-map`, `taxonomy-value-heatmap`, `taxonomy-circumplex`,
`taxonomy-stability` (PDF + PNG), table `taxonomy-clusters.tex`, macros (group `taxonomy`).
"""),
    ("params", """
seed = 0  # random seed for UMAP, the stability subsamples and k-means [0, 1000000]
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
taxonomy_stability_runs = 10  # subsample refits for the stability estimate (mean pairwise ARI) [2, 100]
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

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from valuealign import paths, plotting, provenance
from valuealign import taxonomy as tx

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
                 temperature=taxonomy_circumplex_temperature)
except tx.TaxonomyError as err:
    display(Markdown(f"**Cannot build the taxonomy.** {err}"))
    raise tx.TaxonomyError(str(err)) from None

s = tax.embed_stats
display(corpus.groupby("source").agg(items=("item_id", "size"), distinct_texts=("text", "nunique")))
display(Markdown(
    f"{len(corpus)} items, {len(tax.texts)} distinct texts. Embeddings ({taxonomy_embedding_model}): "
    f"{s.n_cached} from the cache, {s.n_embedded} newly embedded"
    + (f" ({s.items_per_s:.0f} texts/s)." if s.items_per_s else ".")
    + f" UMAP + HDBSCAN: {tax.seconds['cluster']:.1f} s; 2-d map: {tax.seconds['map2d']:.1f} s."
))
"""),
    ("md", """
## The clusters
Clusters are numbered by size (0 = largest). The **label** lists the words that distinguish a cluster from
the others (c-TF-IDF); **nearest value** is the Schwartz value whose prototype is most similar (cosine) to
the cluster's mean embedding, with that similarity as **score** (MiniLM similarities between a short
question and a value definition rarely exceed 0.6: compare scores *between* clusters, not with 1).
The **example** is the cluster's most typical text (highest HDBSCAN membership).
"""),
    ("code", """
f = tax.fit
display(Markdown(
    f"HDBSCAN found **{f.n_clusters} clusters**; **{f.noise_share:.1%}** of the distinct texts are noise "
    f"(in no cluster)."
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
**Granularity and stability.** Left: HDBSCAN on the same UMAP space for a range of
`hdbscan_min_cluster_size` values: smaller values give more, finer clusters and less noise; the dotted
line marks the value used. Right: the whole pipeline (UMAP + HDBSCAN) refitted on
`taxonomy_stability_runs` random subsamples, each with a different UMAP seed; each pair of runs is
compared by ARI on the texts both contain. A mean pairwise ARI near 1 means the grouping does not hinge
on a seed or on which items happened to be included.
"""),
    ("code", """
d = tx.cosine_distances(tax.embeddings) if len(tax.texts) < tx.PRECOMPUTED_MAX else None
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
**Reproducibility.** The same parameters must give the same clusters: refit on the same texts and compare.
"""),
    ("code", """
again = tx.fit(tax.embeddings, fit_params, distances=d)
same = bool(np.array_equal(again.labels, tax.fit.labels))
display(Markdown(f"Refit with identical parameters: cluster assignments identical: **{same}**."))
assert same, "UMAP/HDBSCAN with a fixed seed gave different clusters"
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
}
if len(sec):
    macros.update({
        "TaxonomySectionAri": float(sec.loc["HDBSCAN (noise = one cluster)", "ari"]),
        "TaxonomySectionNmi": float(sec.loc["HDBSCAN (noise = one cluster)", "nmi"]),
        "TaxonomyKmeansAri": float(sec.loc["k-means on raw embeddings", "ari"]),
        "TaxonomyKmeansNmi": float(sec.loc["k-means on raw embeddings", "nmi"]),
    })
plotting.save_macros(macros, "taxonomy", notebook=NOTEBOOK)
inputs = [tx.PROTOTYPES] + ([paths.ITEMS] if "survey" in taxonomy_corpus else [])
inputs += [paths.VALUEEVAL_DIR] if "valueeval" in taxonomy_corpus else []
inputs += [paths.DILEMMAS_DIR / "values.csv"] if "dilemmas" in taxonomy_corpus else []
manifest.add_inputs(inputs)
manifest.add_outputs(written)
manifest.extra = {
    "n_items": len(corpus), "n_texts": len(tax.texts), "n_clusters": tax.fit.n_clusters,
    "noise_share": tax.fit.noise_share, "stability_mean_pairwise_ari": float(np.nanmean(aris)),
    "validation": validation.to_dict(orient="records"), "embedding": tax.embed_stats.__dict__,
    "seconds": tax.seconds,
}
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

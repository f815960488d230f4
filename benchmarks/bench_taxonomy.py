"""Benchmark of stage 01 (taxonomy): embedding throughput and UMAP + HDBSCAN time vs corpus size.

Writes benchmarks/results/taxonomy.json. Texts are the real shipped texts (GOQA and WVS-7
questions, ValueEval arguments and conclusions, DailyDilemmas situations and value words, Polis
comments), topped up with single sentences of the longer texts to reach the largest size;
shuffled with a fixed seed so every prefix mixes the sources.

Embedding is timed once over the largest corpus in nested chunks (the first 1k, the next 4k, the
rest), so "1k" and "5k" are the cumulative times of the first 1k and 5k texts (an empty cache: the
embedding cache is bypassed). UMAP (5-d clustering space, the notebook's defaults) + HDBSCAN are
timed per size on the first n embeddings, after small warm-up fits that pay numba's compile
(for both UMAP paths: precomputed below 4,096 texts, nearest-neighbour descent above).

    .venv/bin/python benchmarks/bench_taxonomy.py [--sizes 1000 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
import warnings

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from valuealign import paths, provenance  # noqa: E402
from valuealign import taxonomy as T  # noqa: E402


def text_pool(n: int, seed: int = 0) -> list[str]:
    """At least ``n`` distinct real texts (or all there are), shuffled deterministically."""
    texts: list[str] = []
    g = pd.read_csv(paths.GOQA_DIR / "global_opinions_subset.csv")
    texts += g["question"].tolist()
    meta = json.loads((paths.WVS7_DIR / "wvs7_question_metadata.json").read_text())
    texts += [T.strip_scale_preamble(m["question"]) for m in meta.values() if m["use_case"] == "value"]
    args = pd.concat([pd.read_csv(paths.VALUEEVAL_DIR / f"arguments-{s}.tsv", sep="\t")
                      for s in ("training", "validation", "test")])
    texts += args["Premise"].tolist() + args["Conclusion"].tolist()
    dd = pd.read_csv(paths.DILEMMAS_DIR / "dilemma.csv")
    texts += dd["basic_situation"].tolist() + dd["dilemma_situation"].tolist()
    texts += pd.read_csv(paths.DILEMMAS_DIR / "values.csv")["value"].tolist()
    for f in sorted(paths.POLIS_DIR.glob("*/comments.csv")):
        texts += pd.read_csv(f)["comment-body"].tolist()
    texts = [str(t).strip() for t in texts if isinstance(t, str) and str(t).strip()]
    uniq = list(dict.fromkeys(texts))
    if len(uniq) < n:  # top up with sentences of the longer texts
        sents = [s.strip() for t in uniq for s in re.split(r"(?<=[.!?])\s+", t)
                 if len(s.split()) >= 5]
        uniq = list(dict.fromkeys(uniq + sents))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    return [uniq[i] for i in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--out", default=str(paths.BENCHMARK_RESULTS / "taxonomy.json"))
    args = ap.parse_args()
    sizes = sorted(args.sizes)
    warnings.simplefilter("ignore")
    pool = text_pool(sizes[-1])
    sizes = [s for s in sizes if s <= len(pool)] or [len(pool)]
    texts = pool[: sizes[-1]]
    load0 = os.getloadavg()

    t0 = time.perf_counter()
    model = T.load_encoder(T.DEFAULT_MODEL)
    load_s = time.perf_counter() - t0
    model.encode(["warm up"], show_progress_bar=False)
    chunks, prev, elapsed, vecs = [], 0, 0.0, []
    for s in sizes:
        t = time.perf_counter()
        vecs.append(model.encode(texts[prev:s], batch_size=64, normalize_embeddings=True,
                                 show_progress_bar=False, convert_to_numpy=True))
        elapsed += time.perf_counter() - t
        chunks.append({"n": s, "seconds": round(elapsed, 2), "items_per_s": round(s / elapsed, 1)})
        print(f"embed {s}: {elapsed:.1f} s ({s / elapsed:.0f} texts/s)", flush=True)
        prev = s
    x = np.concatenate(vecs).astype(np.float32)

    params = T.FitParams()
    t = time.perf_counter()
    T.fit(x[:200], T.FitParams(n_neighbors=15, min_cluster_size=5))  # numba compile, exact path
    import umap  # the nearest-neighbour-descent path (n >= PRECOMPUTED_MAX) compiles its own kernels

    umap.UMAP(metric="cosine", n_neighbors=15, n_components=5, n_epochs=10, random_state=0,
              force_approximation_algorithm=True).fit(x[:300])
    warm_s = time.perf_counter() - t
    fits = []
    for s in sizes:
        t = time.perf_counter()
        d = T.cosine_distances(x[:s]) if s < T.PRECOMPUTED_MAX else None
        f = T.fit(x[:s], params, distances=d)
        total = time.perf_counter() - t
        fits.append({"n": s, "umap_path": "precomputed" if d is not None else "cosine-nndescent",
                     "umap_s": round(f.seconds["umap"], 2), "hdbscan_s": round(f.seconds["hdbscan"], 3),
                     "total_s": round(total, 2), "n_clusters": f.n_clusters,
                     "noise_share": round(f.noise_share, 3)})
        print(f"fit {s}: {fits[-1]}", flush=True)

    def slope(rows: list[dict], key: str) -> float | None:
        if len(rows) < 2:
            return None
        n = np.log([r["n"] for r in rows])
        y = np.log([r[key] for r in rows])
        return round(float(np.polyfit(n, y, 1)[0]), 2)

    result = {
        "stage": "taxonomy",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_start": [round(v, 2) for v in load0],
                    "loadavg_end": [round(v, 2) for v in os.getloadavg()],
                    "note": "shared 2-core build machine, other jobs running: treat as orders of magnitude"},
        "model": T.DEFAULT_MODEL,
        "params": params.__dict__,
        "encoder_load_s": round(load_s, 2),
        "umap_numba_warmup_s": round(warm_s, 2),
        "embedding": chunks,
        "umap_hdbscan": fits,
        "growth_exponent": {"embedding_seconds": slope(chunks, "seconds"),
                            "umap_hdbscan_seconds": slope(fits, "total_s")},
        "packages": provenance.package_versions(("torch", "sentence-transformers", "umap-learn",
                                                 "hdbscan", "pynndescent", "numba")),
    }
    provenance.write_json(result, args.out)
    print(json.dumps(result["growth_exponent"]))


if __name__ == "__main__":
    main()

"""CPU timings of the consultation stage (notebook 05) on the shipped Polis conversations.

Writes benchmarks/results/consultation.json: per conversation the import, Polis-style
PCA + k-means, UMAP + HDBSCAN (the first UMAP fit in a process includes numba compilation),
consensus and export times, plus the machine's load average (the build machine is shared).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from valuealign import consultation as C
from valuealign import paths, provenance


def _timed(fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3), round(time.process_time() - c0, 3)


def main() -> Path:
    rows = []
    convs, tables, counts = [], {}, {}
    for name in C.ALL_CONVERSATIONS:
        conv, w_load, c_load = _timed(C.load_conversation, name)
        big = name.startswith("american-assembly")
        g, w_pca, c_pca = _timed(C.opinion_groups, conv, seed=0, with_umap=False)
        row = {"conversation": name, "participants": conv.n_participants,
               "statements": int(conv.matrix.shape[1]), "votes": int(conv.matrix.notna().sum().sum()),
               "load_s": w_load, "load_cpu_s": c_load, "pca_kmeans_s": w_pca, "pca_kmeans_cpu_s": c_pca,
               "k": g.k}
        if not big:
            g, w_all, c_all = _timed(C.opinion_groups, conv, seed=0)
            row.update({"pca_kmeans_umap_hdbscan_s": w_all, "pca_kmeans_umap_hdbscan_cpu_s": c_all})
        labels = g.labels("polis")
        (cnt, t), w_cons, c_cons = _timed(
            lambda c=conv, lab=labels: (C.group_vote_counts(c.matrix, lab), C.statement_table(c, lab)))
        row.update({"consensus_s": w_cons, "consensus_cpu_s": c_cons})
        rows.append(row)
        if not big:
            convs.append(conv)
            tables[name], counts[name] = t, cnt
    with tempfile.TemporaryDirectory() as tmp:
        sizes, w_exp, c_exp = _timed(C.export_alignment_data, convs, tables, counts,
                                     C.ExportSettings(), out_dir=Path(tmp))
    result = {
        "stage": "consultation", "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "note": "first UMAP fit in the process includes numba JIT compilation (ubi row)",
        "conversations": rows,
        "export_default_three": {"wall_s": w_exp, "cpu_s": c_exp, "value_sets": int(sizes.value_set.nunique()),
                                 "kto_rows": int(sizes.query("method == 'kto'")[["train", "validation"]].sum().sum())},
    }
    target = paths.BENCHMARK_RESULTS / "consultation.json"
    provenance.write_json(result, target)
    print(target)
    return target


if __name__ == "__main__":
    main()

"""Where do notebook 01's results become machine-dependent? Measured on one machine.

Writes benchmarks/results/reproducibility.json. Notebook 01's corpus (the survey items of
``data/processed/items.parquet``, one text per distinct wording) is run through the stage's library
calls in fresh subprocesses, because the settings under test are read once per process:

1. **Embeddings** (MiniLM, no cache, no pins) under ``ATEN_CPU_CAPABILITY`` default vs ``avx2`` and
   1 vs 2 threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``torch.set_num_threads``): largest
   coordinate difference to the default run and whether the bytes are identical.
2. **Clustering of identical embeddings** (those of the default run): the single-seed UMAP + HDBSCAN
   fit and the consensus of ``--runs`` fits, under ``NUMBA_CPU_NAME`` host vs ``generic`` and 1 vs 2
   threads (``OMP``/``MKL``/``OPENBLAS``/``NUMBA_NUM_THREADS``): ARI against the default, identical
   or not, clusters and noise share.
3. **End to end**: the clustering of the AVX2 embeddings under default settings against the default
   (what a second machine with other kernels would see without the pin).

    .venv/bin/python benchmarks/bench_reproducibility.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from valuealign import paths, provenance  # noqa: E402

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
EMBED_SETTINGS = {
    "default": {},
    "default (repeat)": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "1 thread": {k: "1" for k in THREAD_VARS},
}
CLUSTER_SETTINGS = {
    "default": {},
    "default (repeat)": {},
    "NUMBA_CPU_NAME=generic": {"NUMBA_CPU_NAME": "generic"},
    "1 thread": {k: "1" for k in THREAD_VARS},
}

EMBED_CODE = """
import sys, numpy as np, torch
from valuealign import taxonomy as tx
texts = tx.unique_texts(tx.build_corpus(tx.load_items(), ["survey"], valueeval_max=1000, seed=0))[0]
if sys.argv[3] != "0":
    torch.set_num_threads(int(sys.argv[3]))
x = tx.embed_texts(texts, cache_dir=__import__("pathlib").Path(sys.argv[1]), pinned=False)
np.save(sys.argv[2], x)
print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())
"""

CLUSTER_CODE = """
import sys, numpy as np
from valuealign import taxonomy as tx, consensus as cs
x = np.load(sys.argv[1])
runs = int(sys.argv[3])
params = tx.FitParams()
single = tx.fit(x, params, distances=tx.cosine_distances(x))
cons = cs.build(x, params, cs.ConsensusParams(runs=runs, noise=1e-4, cut=0.6, jobs=1))
np.savez(sys.argv[2], single=single.labels, consensus=cons.labels)
"""


def run_sub(code: str, args: list[str], env_extra: dict[str, str]) -> tuple[str, float]:
    env = {**os.environ, **env_extra}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess with {env_extra} failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip(), time.perf_counter() - t0


def labels_row(name: str, lab: np.ndarray, ref: np.ndarray) -> dict[str, object]:
    from sklearn.metrics import adjusted_rand_score

    return {"setting": name, "identical": bool(np.array_equal(lab, ref)),
            "ari_vs_default": round(float(adjusted_rand_score(ref, lab)), 4),
            "changed_texts": int((lab != ref).sum()), "clusters": int(lab.max() + 1),
            "noise_share": round(float((lab < 0).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="consensus runs (notebook default 50)")
    args = ap.parse_args()
    out: dict[str, object] = {"runs": args.runs}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        emb: dict[str, np.ndarray] = {}
        emb_rows = []
        for name, env in EMBED_SETTINGS.items():
            target = tmp / f"emb-{len(emb)}.npy"
            threads = env.get("OMP_NUM_THREADS", "0")
            info, secs = run_sub(EMBED_CODE, [str(tmp / f"cache-{len(emb)}"), str(target), threads], env)
            emb[name] = np.load(target)
            emb_rows.append({"setting": name, "torch": info, "seconds": round(secs, 1)})
            print(f"embeddings {name}: {info} ({secs:.0f} s)", flush=True)
        ref = emb["default"]
        for row in emb_rows:
            x = emb[row["setting"]]
            row.update({"identical": bool(np.array_equal(x, ref)),
                        "max_abs_diff_vs_default": float(np.abs(x - ref).max())})
        out["n_texts"] = int(len(ref))
        out["embeddings"] = emb_rows
        np.save(tmp / "ref.npy", ref)
        np.save(tmp / "avx2.npy", emb["ATEN_CPU_CAPABILITY=avx2"])
        labs: dict[str, dict[str, np.ndarray]] = {}
        secs_by = {}
        for name, env in CLUSTER_SETTINGS.items():
            target = tmp / f"lab-{len(labs)}.npz"
            _, secs = run_sub(CLUSTER_CODE, [str(tmp / "ref.npy"), str(target), str(args.runs)], env)
            labs[name] = dict(np.load(target))
            secs_by[name] = round(secs, 1)
            print(f"clustering {name}: {secs:.0f} s", flush=True)
        _, secs = run_sub(CLUSTER_CODE, [str(tmp / "avx2.npy"), str(tmp / "lab-avx2.npz"), str(args.runs)], {})
        avx2 = dict(np.load(tmp / "lab-avx2.npz"))
        for kind in ("single", "consensus"):
            base = labs["default"][kind]
            rows = [labels_row(name, lab[kind], base) | {"seconds": secs_by[name]} for name, lab in labs.items()]
            rows.append(labels_row("AVX2 embeddings (end to end)", avx2[kind], base) | {"seconds": round(secs, 1)})
            out[f"clustering_{kind}"] = rows
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                      "loadavg_end": [round(v, 2) for v in os.getloadavg()]}
    try:
        import torch

        out["machine"]["torch_default_capability"] = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        pass
    target = paths.BENCHMARK_RESULTS / "reproducibility.json"
    provenance.write_json(out, target)
    print(json.dumps(out, indent=2))
    print(f"wrote {paths.relative(target)}")


if __name__ == "__main__":
    main()

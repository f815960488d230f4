"""Record what `make all PROFILE=demo` showed into benchmarks/results/demo.json.

Why a record in the repository: the demo runs in `executed/demo/workspace/` (ignored by git), so
its control verdicts and timings would otherwise exist only on the machine that ran it. This
copies notebook 04's control verdicts (`figures/eval-controls.json` of the workspace) and its gains
over the base model (`gains.parquet` of the evaluation), each notebook's wall time (papermill's
duration in `executed/demo/*.ipynb`) and each run's training time (its `manifest.json`), with the
commit and the machine. One number is computed here, from notebook 04's saved per-item scores with
its own bootstrap: how much the shuffled-target runs gain on the train items against the real
population (the part of a positive control that is not item-specific).

    .venv/bin/python benchmarks/record_demo.py      # after `make all PROFILE=demo`
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "executed" / "demo"
WORKSPACE = EXECUTED / "workspace"
OUT = ROOT / "benchmarks" / "results" / "demo.json"


def notebook_seconds() -> dict[str, float]:
    """Papermill's recorded duration of each executed demo notebook."""
    out = {}
    for nb in sorted(EXECUTED.glob("*.ipynb")):
        meta = json.loads(nb.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        if meta.get("duration") is not None:
            out[nb.stem] = round(float(meta["duration"]), 1)
    return out


def scored_runs(eval_hash: str) -> set[str]:
    """The runs notebook 04 scored in its last execution of ``eval_hash`` (not runs an earlier
    configuration left in the workspace)."""
    from valuealign import thesis

    runs = thesis.scored_runs(eval_hash, WORKSPACE / "runs")
    if runs is None:
        raise SystemExit(f"evaluation {eval_hash} records no scored runs: run `make all PROFILE=demo` again")
    return set(runs)


def gains(eval_hash: str) -> list[dict]:
    """Notebook 04's gains in 1 - JS over the base model (every split; the runs its last execution
    scored), as saved."""
    import pandas as pd

    g = pd.read_parquet(WORKSPACE / "runs" / "_baselines" / "eval" / eval_hash / "gains.parquet")
    g = g[(g["versus"] == "base") & (g["metric"] == "js_alignment")]
    cols = ["method", "value_set", "split", "gain", "ci_low", "ci_high", "ci_unit", "n_items", "p_wilcoxon", "p_holm"]
    return json.loads(g[[c for c in cols if c in g.columns]].to_json(orient="records"))


def shuffled_on_train(eval_hash: str, scored: set[str], population: str = "united-states") -> list[dict]:
    """Per method: the shuffled-target run's gain over base on the train items, scored against the
    real ``population`` (notebook 04's per-item scores, its bootstrap: 1000 resamples, seed 0)."""
    import pandas as pd

    from valuealign.evaluation import gain_matrix
    from valuealign.stats import two_level_bootstrap_ci

    folder = WORKSPACE / "runs"
    t = pd.concat([pd.read_parquet(f) for f in sorted(folder.glob(f"*/eval/{eval_hash}/item_metrics.parquet"))
                   if f.parts[-4] in scored | {"_baselines"}], ignore_index=True)
    shuffled = f"{population}-shuffled"
    out = []
    for method in sorted(set(t.loc[t["value_set"] == shuffled, "method"])):
        g = gain_matrix(t, method, shuffled, population, "train", "js_alignment")
        r = two_level_bootstrap_ci(g.to_numpy(dtype=float), 1000, 0)
        out.append({"method": method, "trained_on": shuffled, "scored_against": population,
                    "split": "train", "gain": float(r["mean"]), "ci_low": float(r["ci_low"]),
                    "ci_high": float(r["ci_high"]), "n_items": int(g.shape[1])})
    return out


def run_seconds(scored: set[str]) -> dict[str, dict]:
    """Per finished run of the workspace: training wall time of its last session, its steps, and
    whether notebook 04's last execution scored it (a run left from an earlier configuration,
    trained on other data, is skipped there)."""
    out = {}
    for manifest in sorted((WORKSPACE / "runs").glob("*/manifest.json")):
        m = json.loads(manifest.read_text(encoding="utf-8"))
        x = m.get("extra") or {}
        out[manifest.parent.name] = {"wall_time_s": x.get("wall_time_this_session_s"),
                                     "optimizer_steps": x.get("optimizer_steps"),
                                     "train_rows": x.get("train_rows"), "resumed_from": x.get("resumed_from"),
                                     "scored_by_notebook_04": manifest.parent.name in scored}
    return out


def main() -> int:
    controls = WORKSPACE / "figures" / "eval-controls.json"
    if not controls.exists():
        raise SystemExit(f"{controls.relative_to(ROOT)} is missing: run `make all PROFILE=demo` first")
    verdicts = json.loads(controls.read_text(encoding="utf-8"))
    scored = scored_runs(verdicts["eval_hash"])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {
        "what": "make all PROFILE=demo: notebook 04's control verdicts and gains over base, wall times",
        "commit": commit, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "controls": verdicts,
        "notebook_seconds": notebook_seconds(),
        "runs": run_seconds(scored),
        "gains_over_base": gains(verdicts["eval_hash"]),
        "shuffled_runs_on_train_items": shuffled_on_train(verdicts["eval_hash"], scored),
    }
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Record what `make all PROFILE=demo` showed into benchmarks/results/demo.json.

Why a record in the repository: the demo runs in `executed/demo/workspace/` (ignored by git), so
its control verdicts and timings would otherwise exist only on the machine that ran it. This
copies, without recomputing anything, notebook 04's control verdicts
(`figures/eval-controls.json` of the workspace), each notebook's wall time (papermill's duration
in `executed/demo/*.ipynb`) and each run's training time (its `manifest.json`), with the commit and
the machine.

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
    """The runs notebook 04 scored in its last execution of ``eval_hash`` (its manifest times each).

    Why not ``runs/_evaluations/demo.json``: that pointer lists every run with rows of this hash in
    ``runs/eval_summary.parquet``, including runs an earlier configuration left and this execution
    skipped (a known defect of the pointer, noted in the README)."""
    manifest = WORKSPACE / "runs" / "_baselines" / "eval" / eval_hash / "manifest.json"
    timings = (json.loads(manifest.read_text(encoding="utf-8")).get("extra") or {}).get("timings") or {}
    return {k.removeprefix("run:") for k in timings if k.startswith("run:")}


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
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {
        "what": "make all PROFILE=demo: control verdicts of notebook 04, wall times",
        "commit": commit, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "controls": verdicts,
        "notebook_seconds": notebook_seconds(),
        "runs": run_seconds(scored_runs(verdicts["eval_hash"])),
    }
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

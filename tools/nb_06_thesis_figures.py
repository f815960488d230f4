"""Write notebooks/06_thesis_figures.ipynb (source, no outputs): `python tools/nb_06_thesis_figures.py`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild import write  # noqa: E402

CELLS = [
    ("md", """
# 06 · Thesis figures: rebuild the cross-stage summaries and check the thesis wiring

**Question.** Does the thesis (`thesis/`) show the figures, tables and numbers of the evaluation its
profile names (`runs/_evaluations/<profile>.json`, written when `make` runs notebook 04), and what did
that run cost? Nothing is re-trained here: this notebook reads what the stages saved.

**Inputs.** The provenance records of every stage (`data/processed/NN_*.manifest.json`, one
`runs/<run_id>/manifest.json` per fine-tune), the evaluation summary `runs/eval_summary.parquet`
(notebook 04), the artefact manifest `figures/manifest.json` and the LaTeX in `thesis/`.

**Outputs** (in `figures/`, included by the thesis): `summary-pipeline-runtime` (figure) and
`summary-pipeline` (table): the cost of each stage; `summary-cost-vs-alignment` (figure) and
`summary-runs` (table): each fine-tune's cost against its alignment; `phase3-lineage` (table): which
run continues which (base → survey SFT → DPO; base → survey SFT → consultation); `phase3-comparison`
(figure and table): base, survey-only and survey + consultation checkpoints on held-out consultation
statements and survey test items (notebook 05's `data/processed/consultation/evaluation.json`);
`summary-gpu-hours` (table): planned vs used GPU-hours of the sweeps, when any ran; `summary-artefacts` (table,
appendix): which notebook made which figure; the macros of group `06_thesis_figures` in
`figures/results-macros.tex`. Last, the checks: every figure the thesis includes exists, was made by a
notebook, prints at its own size, and embeds its fonts.
"""),
    ("params", """
eval_hash = ""  # which evaluation in runs/eval_summary.parquet to summarise ("": the one named for this profile in runs/_evaluations/<profile>.json)
summary_runtime_fraction = 0.8  # width of the run-time figure, as a fraction of the text width [0.3, 1.0]
summary_scatter_fraction = 0.6  # width of the cost-vs-alignment figure, fraction of the text width [0.3, 1.0]
thesis_fail_on_error = False  # stop this notebook when the thesis check finds errors (make figures/thesis always do)
"""),
    ("code", """
from valuealign import config

params = config.check_parameters("06_thesis_figures", globals())
"""),
    ("code", """
import os

import pandas as pd
from IPython.display import Markdown, display

from valuealign import evaluation, paths, plotting, provenance, thesis

NB = "06_thesis_figures"
os.environ["VALUEALIGN_NOTEBOOK"] = NB  # figures made here are recorded as this notebook's
pd.set_option("display.max_colwidth", 80)
manifest_record = provenance.Manifest(NB, parameters=params)  # times the notebook from here
"""),
    ("md", """
## What the pipeline cost
Every stage records its wall time; fine-tunes record one entry each. Under the embedded default
(bundled 135M model, CPU) these are minutes; under a thesis profile the fine-tunes dominate.
"""),
    ("code", """
records = thesis.stage_manifests()
pipeline = thesis.pipeline_table(records)
display(pipeline.style.format({"Wall time (min)": "{:.2f}"}).hide(axis="index"))
fig = thesis.plot_pipeline_runtime(pipeline, fraction=summary_runtime_fraction)
record_inputs = [paths.ROOT / r for r in records["record"]]
_ = plotting.save_figure(fig, "summary-pipeline-runtime", notebook=NB, inputs=record_inputs)
_ = plotting.save_table(pipeline, "summary-pipeline", notebook=NB, inputs=record_inputs, float_format="{:.2f}",
                    caption="Wall time of each stage of the compendium in this run (stub: name the profile and machine).")
"""),
    ("md", """
## Cost against alignment, per fine-tuned run
This joins stage 03 (what each fine-tune cost) with stage 04 (how well the model then matches its value
set's answer distributions on held-out items, 1 − Jensen–Shannon distance). Dashed lines: the untrained
baselines of notebook 04.
"""),
    ("code", """
runs = thesis.runs_table(records)
alignment = eval_summary = None
summary_path = paths.RUNS / evaluation.SUMMARY_NAME
reported_hash = None
try:
    # the evaluation this profile names (written when `make` runs notebook 04), never "the latest":
    # a sweep cell or a test that evaluates later must not change what the thesis reports
    reported_hash, reported_why = thesis.reported_eval_hash(eval_hash)
    display(Markdown(f"Reporting evaluation `{reported_hash}`: {reported_why}."))
    eval_summary = evaluation.load_summary(reported_hash)
    alignment = thesis.run_alignment(eval_summary)  # test items; baselines per population
except (evaluation.EvaluationError, ValueError) as err:
    display(Markdown(f"**No evaluation to summarise:** {err}"))
if alignment is not None and not runs.empty:
    runs_aligned = runs.merge(alignment[["run", "alignment"]], on="run", how="left")
    display(runs_aligned.style.format(precision=3).hide(axis="index"))
    fig = thesis.plot_cost_vs_alignment(runs, alignment, fraction=summary_scatter_fraction)
    inputs = [summary_path] + [paths.ROOT / r for r in records.loc[records["stage"] == "03_finetune", "record"]]
    _ = plotting.save_figure(fig, "summary-cost-vs-alignment", notebook=NB, inputs=inputs)
    table = plotting.with_display_names(runs_aligned).assign(
        wall_time_min=runs_aligned["wall_time_s"] / 60.0,
    )[["method", "value_set", "seed", "train_rows", "steps", "wall_time_min", "alignment"]]
    table.columns = ["Method", "Value set", "Seed", "Train rows", "Steps", "Wall time (min)", "Alignment"]
    _ = plotting.save_table(table, "summary-runs", notebook=NB, inputs=inputs, float_format="{:.3f}",
                        caption="Fine-tuned runs: size, cost and alignment on held-out items (1 - JS distance).")
elif runs.empty:
    display(Markdown("**No fine-tuned runs recorded** under `runs/`: run notebook 03 first."))
"""),
    ("md", """
## Phase 3: lineage of the chained runs, and the final comparison
Chained runs continue another run's adapter (`init_from`): notebook 03's DPO runs start from the SFT
run of their value set (DPO's reference is then that SFT model), and notebook 05's consultation run
starts from a survey SFT run. Then the thesis's final evaluation (notebook 05): the base model, the
survey-only run and the survey + consultation run on the **same** held-out consultation statements
(1 − JS against each opinion group's vote shares, mean over groups) and survey test items, with 95%
bootstrap CIs and paired differences.
"""),
    ("code", """
from valuealign import consultation_eval

lineage = consultation_eval.chained_lineage()
phase3 = None
if lineage.empty:
    display(Markdown("**No chained run** under `runs/`: notebook 03 (`chains`) and notebook 05 make them."))
else:
    lineage_show = plotting.with_display_names(lineage)[["method", "value_set", "data_source", "steps", "lineage"]]
    lineage_show = lineage_show.assign(lineage=lineage_show["lineage"].str.replace("base:", "", regex=False))
    lineage_show.columns = ["Method", "Value set", "Data", "Steps", "Lineage (base -> parent -> run)"]
    display(lineage_show.style.hide(axis="index"))
    _ = plotting.save_table(lineage_show, "phase3-lineage", notebook=NB,
                            inputs=[paths.RUNS / r / "manifest.json" for r in lineage["run"]],
                            caption="Chained runs: each continues its parent's adapter (base -> survey SFT -> DPO or -> consultation).")
try:
    phase3 = consultation_eval.read_evaluation()
except consultation_eval.ConsultationEvalError as err:
    display(Markdown(f"**No phase-3 evaluation:** {err}"))
if phase3 is not None:
    comparison = consultation_eval.comparison_table(phase3["summary"], phase3["differences"])
    display(comparison.style.format(precision=3, na_rep="-").hide(axis="index"))
    eval_inputs = [paths.CONSULTATION / "evaluation.json"]
    fig = consultation_eval.plot_comparison(phase3["summary"], fraction=summary_scatter_fraction)
    _ = plotting.save_figure(fig, "phase3-comparison", notebook=NB, inputs=eval_inputs)
    _ = plotting.save_table(comparison, "phase3-comparison", notebook=NB, inputs=eval_inputs, float_format="{:.3f}",
                            caption="Base, survey-only and survey + consultation models on held-out consultation "
                                    "statements (1 - JS against each opinion group's vote shares, mean over groups) "
                                    "and survey test items, with 95% bootstrap CIs and the paired difference to "
                                    "the survey-only model.")
"""),
    ("code", """
from valuealign import budget, sweep

gpu_hours = budget.planned_vs_used(sweep.read_registry())
if gpu_hours.empty:
    display(Markdown("**No sweep recorded** (`make sweep`): no planned vs used GPU-hours yet."))
else:
    display(gpu_hours.style.format(precision=2, na_rep="-").hide(axis="index"))
    _ = plotting.save_table(gpu_hours.rename(columns={
        "grid": "Grid", "cells_done": "Cells done", "planned_gpu_hours": "Planned GPU-h", "used_gpu_hours": "Used GPU-h"}),
        "summary-gpu-hours", notebook=NB, float_format="{:.2f}",
        caption="GPU-hours of each sweep grid: planned (estimate at submission) and used (measured).")
"""),
    ("md", """
## Which notebook made which figure (appendix)
From `figures/manifest.json`: each artefact's producer and the number of inputs whose checksums it
recorded (the manifest itself has the checksums, the run and the time).
"""),
    ("code", """
fig_manifest = plotting.read_manifest()
artefacts = thesis.artefact_table(fig_manifest)
display(artefacts.style.hide(axis="index"))
_ = plotting.save_table(artefacts, "summary-artefacts", notebook=NB, inputs=[paths.FIGURES / "manifest.json"],
                    caption="Figures and tables of this thesis and the notebooks that produce them.")
macros = {
    "SummaryStages": int(pipeline["Stage"].nunique()),
    "SummaryPipelineMinutes": float(pipeline["Wall time (min)"].sum()),
    "SummaryFigures": int((artefacts["Kind"] == "figure").sum()),
    "SummaryTables": int((artefacts["Kind"] == "table").sum()),
    "SummaryRuns": int(len(runs)),
    "SummaryEvalHash": reported_hash or "n/a",  # `make verify` checks it is the profile's named evaluation
}
# the "best" run is chosen on the validation items and reported on the test items (choosing on test
# and reporting there would overstate it)
best = None
if eval_summary is not None and not runs.empty:
    try:
        best = thesis.best_run_on_validation(eval_summary)
    except ValueError as err:
        display(Markdown(f"**No best run:** {err}"))
macros["SummaryValBestTestAlignment"] = best["alignment"] if best else "n/a"
macros["SummaryValBestValidationAlignment"] = best["validation_alignment"] if best else "n/a"
macros["SummaryValBestMethod"] = plotting.method_label(str(best["method"])) if best else "n/a"
macros["SummaryValBestValueSet"] = plotting.value_set_label(str(best["value_set"])) if best else "n/a"
macros["PhaseThreeChainedRuns"] = int(len(lineage))
if phase3 is not None:
    ph_sum, ph_diff = phase3["summary"], phase3["differences"]
    macros["PhaseThreeStatements"] = int(phase3.get("n_statements", 0))
    macros["PhaseThreeSurveyItems"] = int(phase3.get("n_survey_items", 0))
    for material in ("consultation", "survey"):
        for ck in consultation_eval.CHECKPOINTS:
            r = ph_sum[(ph_sum["material"] == material) & (ph_sum["checkpoint"] == ck)
                       & (ph_sum["group"] == "all groups") & (ph_sum["metric"] == "js_alignment")]
            key = plotting.macro_name("phase three", material, ck.replace("+", " plus "), "align")
            macros[key] = float(r["mean"].iloc[0]) if len(r) and pd.notna(r["mean"].iloc[0]) else "n/a"
        d = ph_diff[(ph_diff["material"] == material) & (ph_diff["comparison"] == "survey+consultation - survey")]
        key = plotting.macro_name("phase three", material, "refined minus survey")
        macros[key] = float(d["difference"].iloc[0]) if len(d) and pd.notna(d["difference"].iloc[0]) else "n/a"
        macros[key + "Ci"] = evaluation.format_ci(d["ci_low"].iloc[0], d["ci_high"].iloc[0]) if len(d) else "n/a"
_ = plotting.save_macros(macros, NB, notebook=NB, digits=2)
display(pd.Series(macros, name="value").to_frame())
"""),
    ("md", """
## Checks: is every figure the thesis includes there, made by a notebook, unscaled, with fonts embedded?
Each figure PDF is checked for its width (it must fit the text width, since the thesis includes it
at its own size) and its fonts (`pdffonts`, from poppler-utils; blank if not installed). Then the LaTeX
is checked against `figures/`: an error means `make thesis` would stop; a warning lists a produced figure
that the thesis does not (yet) use.
"""),
    ("code", """
checks = thesis.figure_checks(plotting.read_manifest())
display(checks.style.hide(axis="index"))
report = thesis.check_thesis()
display(Markdown("```\\n" + report.format() + "\\n```"))
bad = checks[~checks["fits"] | (checks["fonts_embedded"] == False)]  # noqa: E712
if len(bad):
    display(Markdown(f"**{len(bad)} figure(s) too wide or with fonts not embedded:** {', '.join(bad['figure'])}"))
if thesis_fail_on_error and (report.errors or len(bad)):
    raise RuntimeError("thesis check failed:\\n" + report.format())
"""),
    ("code", """
manifest_record.add_outputs(sorted(p for p in paths.FIGURES.glob("summary-*")))
manifest_record.write(paths.PROCESSED / f"{NB}.manifest.json")
display(Markdown(f"Done in {manifest_record.wall_time_s:.1f} s; record: `data/processed/{NB}.manifest.json`."))
"""),
]

if __name__ == "__main__":
    write(Path(__file__).resolve().parents[1] / "notebooks" / "06_thesis_figures.ipynb", CELLS)

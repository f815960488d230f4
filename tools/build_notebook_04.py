"""Write notebooks/04_evaluate.ipynb (source, no outputs). Run: .venv/bin/python tools/build_notebook_04.py"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbbuild import write  # noqa: E402

CELLS = [
    ("md", r"""
# 04 · Evaluate: does the model now answer like its population?

**Question.** On survey items it never saw in training, is a fine-tuned model's *distribution* over the
answer options closer to its target population's than the base model's, the base model prompted to
answer as a member of that population, and the uniform distribution? Does the effect stay on its own
population (steerability), carry over to held-out *clusters* of items and to everyday dilemmas, and
does it cost general ability?
"""),
    ("code", r"""
from IPython.display import Markdown, display

# the verdicts of the controls replace this line once they are computed (section "Controls")
controls_box = display(Markdown("**Controls:** not computed yet: this line is replaced by their verdicts when "
                                "the notebook reaches the section *Controls*."), display_id=True)
"""),
    ("md", r"""
**How.** For every item, the probability of each option letter as the next token after the chat-formatted
prompt (`valuealign.prompts`), renormalised over the valid letters, averaged over prompt paraphrases and
over option orders (cyclic shifts put every option at every position once, so position bias cancels).
One batched forward pass scores all options of many prompts; nothing is generated or parsed.
Metrics per item, then means with percentile-bootstrap 95% CIs: alignment = 1 − Jensen–Shannon
distance with base-2 logarithms (the headline, in [0, 1]) and, for comparison with published
GlobalOpinionQA numbers (scipy's default), with natural logarithms (`js_alignment_e`); 1 − W1/(K−1) on
ordinal items (don't-know/refused options removed); majority-option match; entropy difference
H(model) − H(population) in bits (< 0 = over-confident).

**Uncertainty.** On `test` and `validation` the bootstrap resamples items; on `test_cluster`, whose items
come from a few whole held-out strata, it resamples whole strata (items of a stratum stay together). Several
seeds of a method are combined by a two-level bootstrap (seeds, then items or strata) and their spread is
reported as the seed sd (n/a with one seed). Every table of tests has Holm-adjusted p-values next to the
raw ones. Anything called "best" is chosen on the `validation` split and reported on `test`.

**Controls first.** The **Controls** lines at the top (filled in when the notebook has run) say whether this evaluation can see an effect at all and
only where there is one (computed from the scores, `valuealign.evaluation.control_verdicts`): a
*positive control* (each run scored on the items it was trained on, the `train` split when it is in
`eval_splits`, must beat the base model with a CI above 0) and two *negative controls* (a run trained
on shuffled targets, value set `<id>-shuffled` of notebook 02, must not beat the base model on the
real population's held-out items beyond noise; a run scored against the population farthest from its
own must not gain more there than on its own). The `train` split serves only this control: nothing is
chosen on it.

**Inputs.** `data/processed/items.parquet`, `distributions.parquet` (00); `data/processed/alignment/`
`splits.parquet`, `value_sets.parquet`, `value_set_distributions.parquet` (02); finished runs
`runs/<run_id>/` (03: `adapter/`, `manifest.json`, `DONE`); `data/raw/daily_dilemmas/`;
`data/reference/general_prompts.txt`.

**Outputs.** `runs/<run_id>/eval/<eval_hash>/*.parquet` per run and `runs/_baselines/eval/<eval_hash>/`
for uniform/base/prompted/oracle; the combined `runs/eval_summary.parquet` keyed by
(run, split, eval_hash); figures and tables `figures/eval-*`; macros (group `evaluation`) in
`figures/results-macros.tex`.
"""),
    ("params", r"""
runs = ["*"]  # fine-tuned runs to evaluate: run ids or globs under runs/ (default: every finished run)
value_sets = ["united-states", "germany"]  # value sets (ids made by notebook 02, or its group names) to evaluate against ([]: all)
eval_splits = ["validation", "test", "test_cluster"]  # splits to evaluate; best is chosen on validation; train only as the positive control (the runs' own train items) {test, test_cluster, validation, train}
n_paraphrases = 1  # prompt paraphrases averaged per item (thesis: 4) [1, 4]
permutations = "cyclic"  # option orders per item: all cyclic shifts, or as many seeded random orders {cyclic, random}
eval_batch_size = 8  # prompts per forward pass [1, 512]
bootstrap_samples = 1000  # bootstrap resamples for the 95% CIs over items [0, 100000]
max_eval_items = 5  # items per split, the same for every model (0: all) [0, 100000]
eval_max_options = 4  # only items with at most this many options, a CPU cost cap (thesis: 0, all) [0, 26]
eval_n_dilemmas = 4  # DailyDilemmas scored per model (0: skip; more than exist: all, and said so) [0, 100000]
eval_quantization = "as_trained"  # base weights every model is scored on: the runs' training quantisation, or forced {as_trained, 4bit, none}
eval_drift_tokens = 6  # greedy answer tokens per general prompt for the capability-drift check (0: skip) [0, 256]
strict = False  # stop at a run folder without adapter/manifest/DONE instead of skipping it
model_profile = "smollm2-135m"  # base model profile (valuealign.models.PROFILES) {smollm2-135m, llama-3.1-8b, mistral-7b, qwen2.5-7b, qwen2.5-14b, llama-2-13b}
model_path = ""  # local folder of the base model ("": the profile's default)
seed = 0  # seed for item selection, random orders and the bootstrap [0, 2147483647]
"""),
    ("code", r"""
from valuealign import config

params = config.check_parameters("04_evaluate", globals())
"""),
    ("code", r"""
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm falls back to text bars

import logging

import matplotlib.pyplot as plt
import pandas as pd
import transformers
from IPython.display import Markdown, display

from valuealign import evaluation as ev
from valuealign import paths, plotting, provenance

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore", category=FutureWarning)
logging.getLogger("peft").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
pd.set_option("display.precision", 3)
NB = "04_evaluate"
manifest = provenance.Manifest(NB, parameters=params, seed=seed).__enter__()  # times the notebook from here


def show(fig, name: str, **kw) -> None:
    # save figures/<name>.pdf/.png, show it once, free it
    plotting.save_figure(fig, name, notebook=NB, **kw)
    display(fig)
    plt.close(fig)


def fail(err: Exception) -> None:
    # a readable message instead of a deep traceback
    display(Markdown(f"**Evaluation cannot run:** {err}"))
    raise RuntimeError(str(err)) from None


try:
    inputs = ev.read_inputs()
    vsets = ev.resolve_value_sets(value_sets, inputs["value_sets"])
    found, skipped = ev.discover_runs(runs, strict=strict)
    quantization = ev.scoring_quantization(eval_quantization, found)
    # controls: the positive one scores the runs' own train items; the cross-population one scores
    # each run also against the population farthest from its own (notebook 02's value_set_jsd)
    trained_only = ({ev.POSITIVE_SPLIT: ev.trained_item_ids(found)} if ev.POSITIVE_SPLIT in eval_splits else None)
    jsd_file = paths.ALIGNMENT / "value_set_jsd.parquet"
    far = (ev.farthest_populations(pd.read_parquet(jsd_file), sorted({r.value_set for r in found}),
                                   candidates=set(inputs["targets"]["value_set"]))
           if jsd_file.exists() else {})
except ev.EvaluationError as err:
    fail(err)
settings = ev.EvalSettings(n_paraphrases=n_paraphrases, permutations=permutations,
                           max_eval_items=max_eval_items, max_options=eval_max_options,
                           n_dilemmas=eval_n_dilemmas,
                           drift_new_tokens=eval_drift_tokens, seed=seed, quantization=quantization)
display(Markdown(f"Value sets: **{', '.join(vsets)}**. Finished runs found: **{len(found)}**. "
                 f"Every model (base, prompted base, each run) is scored on the **"
                 f"{'4-bit NF4' if quantization == '4bit' else 'unquantised'}** base weights "
                 f"(`eval_quantization = {eval_quantization!r}`), so each comparison is between an adapter "
                 f"and the base it was added to."))
if found:
    display(pd.DataFrame([{"run": r.run_id, "method": r.method, "value_set": r.value_set, "seed": r.seed,
                           "trained on": r.manifest.get("parameters", {}).get("quantization")}
                          for r in found]))
if len(skipped):
    display(Markdown("**Skipped run folders** (not evaluated; `strict = True` makes this an error):"))
    display(skipped)
"""),
    ("md", r"""
## Scoring every model on the same items

Uniform and oracle need no model. The *oracle* is the **nearest other population**: the country (not a
member of the value set) whose answers agree best with the value set's on the *train* items, predicting
its own answers on the held-out items (the mean of all other countries where it has no answer). It shows
what answering like the most similar known population would score, a reference that a survey-trained
model can hope to approach. Base, prompted base ("Answer as a person from …") and each run are scored on
identical prompts, so every comparison below is paired by item.
"""),
    ("code", r"""
try:
    res = ev.run_evaluation(runs=found, value_sets=vsets, eval_splits=eval_splits, settings=settings,
                            model_profile=model_profile, model_path=model_path or None,
                            batch_size=eval_batch_size, n_boot=bootstrap_samples, inputs=inputs,
                            skipped=skipped, extra_targets=sorted(set(far.values())), restrict_items=trained_only)
except ev.EvaluationError as err:
    fail(err)
res.item_table = ev.entropy_columns(res.item_table, res.predictions, inputs["targets"])
model_preds = res.predictions.dropna(subset=["valid_mass"])
display(Markdown(
    f"Evaluation `{res.eval_hash}`: {len(res.items)} items "
    f"({', '.join(f'{k}: {v}' for k, v in res.items['split'].value_counts().sort_index().items())}), "
    f"{int(model_preds['n_prompts'].sum())} prompts scored in {res.timings['total_s']:.0f} s. "
    f"Probability mass on the valid option letters (before renormalising): mean "
    f"{model_preds['valid_mass'].mean():.3f}, min {model_preds['valid_mass'].min():.3f}; "
    f"mean probability on letter A after renormalising (position bias; 1/K would be none): "
    f"{model_preds['p_first_position'].mean():.3f}."
))
display(model_preds.groupby("condition")[["valid_mass", "p_first_position"]].mean())
"""),
    ("code", r"""
written = ev.save_results(res, {"parameters": params, "value_sets": vsets})  # timings: in the manifest
manifest.__exit__(None, None, None)
manifest.add_inputs([p for p in (paths.ITEMS, paths.DISTRIBUTIONS, paths.ALIGNMENT / "splits.parquet",
                                 paths.ALIGNMENT / "value_sets.parquet",
                                 paths.ALIGNMENT / "value_set_distributions.parquet",
                                 paths.REFERENCE / ev.GENERAL_PROMPTS_NAME) if p.exists()]
                    + [r.path / "adapter" for r in found])
manifest.add_outputs(written)
manifest.extra = {"eval_hash": res.eval_hash, "timings": res.timings, "skipped_runs": skipped.to_dict("records"),
                  "dilemmas": res.dilemma_set.describe() if res.dilemma_set is not None else None}
manifest.write(ev.eval_folder(ev.BASELINES_RUN, res.eval_hash) / "manifest.json")
display(Markdown(f"Saved {len(written)} files; combined table `{paths.relative(paths.RUNS / ev.SUMMARY_NAME)}`."))
"""),
    ("md", r"""
## Controls: can this evaluation see an effect, and only where there is one?

Computed from the item scores above (rules in `valuealign.evaluation.CONTROL_RULES`; 95% CIs from the
two-level bootstrap, seeds then items). Written to `figures/eval-controls.tex` and `figures/eval-controls.json`.
"""),
    ("code", r"""
held_out = next((s for s in ("test", "validation", "test_cluster") if s in eval_splits), None)
verdicts = ev.control_verdicts(res.item_table, far, held_out_split=held_out or "test",
                               n_boot=bootstrap_samples, seed=seed)
display(Markdown(ev.controls_markdown(verdicts, sorted(set(res.items["split"])))))
controls_box.update(Markdown(ev.controls_headline(verdicts)))  # the notebook's first lines
if far:
    display(Markdown("Far populations (largest mean JS distance in `value_set_jsd.parquet`): "
                     + ", ".join(f"{a} -> {b}" for a, b in sorted(far.items())) + "."))
controls_view = verdicts.drop(columns="rule").assign(
    passes=verdicts["passes"].map(lambda v: "n/a" if v is None or pd.isna(v) else ("pass" if v else "FAIL")),
    ci=[ev.format_ci(lo, hi) for lo, hi in zip(verdicts["ci_low"], verdicts["ci_high"], strict=True)])
controls_tex = controls_view[["control", "method", "value_set", "scored_against", "split", "n_seeds", "estimate",
                              "ci", "n_items", "passes"]]
controls_tex.columns = ["Control", "Method", "Trained on", "Scored against", "Split", "Seeds", "Gain", "95% CI",
                        "Items", "Verdict"]
display(controls_tex)
plotting.save_table(controls_tex, "eval-controls", notebook=NB, inputs=[paths.RUNS / ev.SUMMARY_NAME],
                    caption="Controls of the evaluation. Positive: gain over the base model on the items a run "
                            "was trained on (must have a 95% CI above 0). Negative: a run trained on shuffled "
                            "targets scored against the real population, and a run's gain against the farthest "
                            "other population minus its gain against its own, on held-out items (neither may "
                            "have a CI above 0).")
controls_json = provenance.write_json({"eval_hash": res.eval_hash, "rules": ev.CONTROL_RULES, "far_populations": far,
                                       "verdicts": verdicts.astype(object).where(verdicts.notna(), None).to_dict("records")},
                                      paths.FIGURES / "eval-controls.json")
plotting.record_artefact("eval-controls-json", [controls_json], NB, [paths.RUNS / ev.SUMMARY_NAME], None,
                         extra={"kind": "data", "rows": len(verdicts)})
"""),
    ("md", r"""
## Alignment by method and value set

Per split, value set and method: the mean over seeds of the mean over items, the standard deviation
over seeds (n/a with one seed) and a 95% CI from the two-level bootstrap (seeds, then items; strata on
`test_cluster`). Fine-tuned and prompted models are scored against the population they were steered
to; base and uniform against each population.
"""),
    ("code", r"""
head = ev.headline(res.summary)
methods = res.methods
method_view = plotting.with_display_names(methods).assign(
    mean_sd=[ev.format_mean_sd(m, s) for m, s in zip(methods["mean"], methods["seed_sd"], strict=True)],
    ci=[ev.format_ci(lo, hi) for lo, hi in zip(methods["ci_low"], methods["ci_high"], strict=True)],
)
method_tex = method_view[["split", "value_set", "method", "n_seeds", "mean_sd", "ci", "ci_unit", "n_items"]]
method_tex.columns = ["Split", "Value set", "Method", "Seeds", "Mean ± seed sd", "95% CI", "Resampled", "Items"]
display(method_tex)
plotting.save_table(method_tex, "eval-method-table", notebook=NB,
                    caption="Alignment (1 - Jensen-Shannon distance, base 2) on held-out items per split, value "
                            "set and method: mean over seeds of the item mean, standard deviation over seeds "
                            "(n/a: one seed) and 95% two-level bootstrap CI (resampling seeds, then items; "
                            "whole strata on the held-out clusters split).")
fig = ev.plot_alignment(methods)
show(fig, "eval-alignment-by-method", inputs=[paths.RUNS / ev.SUMMARY_NAME])
"""),
    ("code", r"""
metrics_wide = (res.summary[(res.summary["value_set"] == res.summary["target_value_set"])
                            | res.summary["method"].isin(["uniform", "base"])]
                .pivot_table(index=["split", "target_value_set", "condition"], columns="metric", values="mean")
                .reset_index())
display(metrics_wide)
tex = metrics_wide.rename(columns={"target_value_set": "value set", "js_alignment": "1-JS (base 2)",
                                   "js_alignment_e": "1-JS (base e)", "w1_alignment": "1-W1",
                                   "majority_match": "majority", "entropy_diff_bits": "dH (bits)"})
plotting.save_table(tex, "eval-alignment-table", notebook=NB,
                    caption="Alignment on held-out items by split, value set and model (one row per run): "
                            "1 - Jensen-Shannon distance with base-2 logarithms (the headline) and with natural "
                            "logarithms (scipy's default, as in public GlobalOpinionQA replications), "
                            "1 - normalised Wasserstein-1 (ordinal items), majority-option match and entropy "
                            "difference H(model) - H(population) in bits (means over items).")
"""),
    ("md", r"""
### Did steering help? Paired gains on the same items

Per split, value set and fine-tuning method: the gain over the base model and over the base model
prompted as the population, paired by item (and population), averaged over seeds; 95% CI from the
two-level bootstrap (seeds, then items; strata on `test_cluster`); two-sided Wilcoxon signed-rank
p-value on the seed-averaged per-item gains (per-stratum means on `test_cluster`; n/a with fewer than 5
units) and its Holm adjustment over every test in the table. A CI that excludes 0 is evidence; with few
items (the embedded default) expect wide intervals and no p-values.
"""),
    ("code", r"""
gains = res.gains
if len(gains):
    gains_view = plotting.with_display_names(gains).assign(
        versus=gains["versus"].map(plotting.method_label),
        ci=[ev.format_ci(lo, hi) for lo, hi in zip(gains["ci_low"], gains["ci_high"], strict=True)])
    gains_tex = gains_view[["split", "value_set", "method", "versus", "n_seeds", "gain", "ci", "ci_unit",
                            "p_wilcoxon", "p_holm"]]
    gains_tex.columns = ["Split", "Value set", "Method", "Versus", "Seeds", "Gain", "95% CI", "Resampled",
                         "p", "p (Holm)"]
    display(gains_tex)
    plotting.save_table(gains_tex, "eval-gains-table", notebook=NB,
                        caption="Paired gain in alignment (1 - Jensen-Shannon distance, base 2) of each "
                                "fine-tuning method over the base model and over the base model prompted as the "
                                "population, on the same items: mean over seeds and items, 95% two-level "
                                "bootstrap CI, Wilcoxon signed-rank p (raw and Holm-adjusted over the table; "
                                "a dash: fewer than 5 items or strata).")
else:
    display(Markdown("No fine-tuned run: no gains to report."))
display(Markdown("Per run (each seed on its own; Holm over all js_alignment tests of this table):"))
comp = res.comparisons[res.comparisons["metric"] == "js_alignment"].drop(columns=["metric", "run"])
display(comp.reset_index(drop=True))
"""),
    ("md", r"""
## Steerability: does a model follow *its* population?

Rows: the population a model was steered to (fine-tuned on, or prompted as); columns: the population it
is scored against. The diagonal should beat the rest of its row; the *diagonal advantage* is the paired
per-item difference between alignment to its own population and the mean alignment to the others.
The raw advantage also contains how close the *base* model already is to each population (if the base
answers like the United States, every row leans that way); the *net advantage* computes the same on
alignment gains over the base model, which isolates what steering did.
"""),
    ("code", r"""
for method, matrix in res.steer_matrix.items():
    if matrix.shape[0] == 0:
        continue
    fig = ev.plot_steerability(matrix, plotting.method_label(method))
    show(fig, f"eval-steerability-{method.replace('+', '-then-')}")  # a chained run: sft+dpo -> sft-then-dpo
display(res.steer_advantage)
if len(res.steer_advantage):
    cols = ["method", "value_set", "diagonal", "off_diagonal", "advantage", "ci_low", "ci_high",
            "p_wilcoxon", "p_holm", "net_advantage", "net_ci_low", "net_ci_high", "net_p_holm", "n_items"]
    plotting.save_table(res.steer_advantage[[c for c in cols if c in res.steer_advantage.columns]],
                        "eval-steerability-table", notebook=NB,
                        caption="Diagonal advantage: alignment to the steered-to population minus the mean "
                                "alignment to the other populations, paired by item (95% bootstrap CI, "
                                "Wilcoxon signed-rank p, raw and Holm-adjusted over the table); net: the same "
                                "on gains over the base model.")
"""),
    ("md", r"""
## Generalisation: held-out items vs held-out clusters of items

`test` items come from strata (taxonomy clusters or sections) that training saw; `test_cluster` items
from strata held out entirely. A model that learned the population's values, rather than items, should
keep its advantage on `test_cluster`. Its intervals resample whole strata, so with few held-out strata
they are wide (and n/a with a single stratum): that is the honest uncertainty of a few clusters.
"""),
    ("code", r"""
gen = (methods[~methods["method"].isin(["uniform", "oracle"])]
       .pivot_table(index=["value_set", "method"], columns="split", values="mean"))
display(gen)
display(methods.groupby("split")[["n_items", "n_units"]].max().rename(
    columns={"n_units": "resampling units (items or strata)"}))
fig = ev.plot_strata(res.item_table)
show(fig, "eval-alignment-by-stratum")
"""),
    ("md", r"""
## Calibration: over- or under-confident?

Per item, the entropy of the model's answer distribution against the population's. Points below the
dashed line are more confident than the population (entropy difference H(model) − H(population) < 0 bits),
a typical effect of SFT on majority answers.
"""),
    ("code", r"""
fig = ev.plot_calibration(res.item_table)
show(fig, "eval-calibration-entropy")
"""),
    ("md", r"""
## Example items: population vs models
"""),
    ("code", r"""
vs0 = next((r.value_set for r in found if r.value_set in vsets), vsets[0])
own = res.item_table[(res.item_table["target_value_set"] == vs0) & (res.item_table["method"] == "base")]
examples = own.sort_values(["js_alignment", "item_id"])["item_id"].head(3).tolist()
conds = [(ev.BASELINES_RUN, "base"), (ev.BASELINES_RUN, "prompted")] + [
    (r.run_id, r.method) for r in found if r.value_set == vs0][:2]
preds_vs = res.predictions[(res.predictions["value_set"].isna()) | (res.predictions["value_set"] == vs0)]
fig = ev.plot_examples(res.items, preds_vs, inputs["targets"], examples, vs0, conds)
display(Markdown(f"The three items on which the base model is furthest from **{plotting.value_set_label(vs0)}**."))
show(fig, "eval-example-items")
"""),
    ("md", r"""
## Beyond the survey format: DailyDilemmas

Each dilemma ends in a yes/no question whose "yes" is the dilemma's action (*to do*). The model's
preference is P("Yes") against P("No") as its answer (both answer orders averaged), without lettered
options: a format the fine-tuning never showed. The claim that needs no value labels is a **shift
between models on the same dilemmas**: per dilemma, P(to do) of each fine-tuned model minus the base
model's (mean with a 95% bootstrap CI over dilemmas, Wilcoxon p, and the share of dilemmas whose
preferred answer flipped).

A value *dimension* claim needs to know which side of a dilemma a value is on: a value word in the
text may argue against the action (a roommate's journal: privacy). Only the full per-action file of
DailyDilemmas (`dilemmas_with_detail_by_action.csv`, not shipped; see `data/README.md`) says so: each
direct value of the *to do* action counts +1 for its WVS dimension, each of the *not to do* action -1,
and a model's support for a dimension is its probability of choosing the side with that dimension's
values. Without that file no dimension result is reported.
"""),
    ("code", r"""
if res.dilemma_set is not None:
    display(Markdown(res.dilemma_set.describe()))
if len(res.dilemma_shifts):
    shift_summary = ev.summarise_dilemma_shifts(res.dilemma_shifts, bootstrap_samples, seed)
    display(shift_summary)
    fig = ev.plot_dilemma_shifts(res.dilemma_shifts)
    show(fig, "eval-dilemmas-shift")
elif res.dilemma_set is not None:
    display(Markdown("Only the base model was scored on the dilemmas: no shift to report."))
if len(res.dilemmas_by_dim):
    display(res.dilemmas_by_dim)
    fig = ev.plot_dilemmas(res.dilemmas_by_dim)
    show(fig, "eval-dilemmas-wvs")
elif res.dilemma_set is not None and res.dilemma_set.signed:
    display(Markdown("No scored dilemma has a WVS-mapped direct value: no dimension result."))
if res.dilemma_set is None:
    display(Markdown("DailyDilemmas skipped (`eval_n_dilemmas = 0`)."))
"""),
    ("md", r"""
## Capability drift

On general prompts that are not about values (`data/reference/general_prompts.txt`): KL(base ‖ tuned)
of the next-token distributions along the base model's own greedy answer (nats per token), and the
mean per-token log-likelihood of that answer under base and tuned model. A large KL or a drop in
log-likelihood means the fine-tune changed more than opinions (over-fitting to the survey format).
"""),
    ("code", r"""
if len(res.drift):
    drift = (res.drift.groupby(["condition", "run"])[["kl_base_tuned", "loglik_base", "loglik_tuned"]]
             .mean().reset_index())
    display(drift)
    plotting.save_table(drift.drop(columns="run"), "eval-drift-table", notebook=NB,
                        caption="Capability drift on general prompts: KL(base || tuned) per token (nats) "
                                "and per-token log-likelihood of the base model's greedy answers.")
else:
    drift = pd.DataFrame()
    display(Markdown("No fine-tuned run (or `eval_drift_tokens = 0`): nothing to compare with the base model."))
"""),
    ("md", r"""
## Numbers quoted in the thesis

Macros (group `evaluation`) for `figures/results-macros.tex`. The fine-tuned (method, value set) with the
highest alignment on the **validation** items is *chosen there* and reported on the **test** items, with
its seed sd, the base model and the prompted base model on the *same* population, and its paired gains with
CI and Holm-adjusted p from the gains table. (Choosing the best on the test items and reporting it there
would overstate it.) Missing numbers print as n/a.
"""),
    ("code", r"""
def num(v):
    # a macro value: the float, or "n/a" where it is not estimable (one seed, too few items)
    return float(v) if pd.notna(v) else "n/a"


def pval(v) -> str:
    # a p-value with two significant digits, or "n/a" (fewer than 5 items or strata)
    return f"{v:.2g}" if pd.notna(v) else "n/a"


splits_done = set(res.items["split"])
macros = {"EvalNumItems": int(len(res.items)), "EvalNumRuns": len(found),
          "EvalNumValueSets": int(methods["value_set"].nunique()) if len(methods) else 0}
for split_name in ("validation", "test", "test_cluster"):
    macros[plotting.macro_name("eval", "num", split_name, "items")] = int((res.items["split"] == split_name).sum())
best = ev.best_on_validation(methods) if "validation" in splits_done and "test" in splits_done else None
keys = ["EvalBestMethod", "EvalBestValueSet", "EvalBestValidationAlign", "EvalBestTestAlign",
        "EvalBestTestSeedSd", "EvalBestSeeds", "EvalBestBaseTestAlign", "EvalBestPromptedTestAlign",
        "EvalBestUniformTestAlign"]
keys += [f"EvalBestGainOver{r}{k}" for r in ("Base", "Prompted") for k in ("", "Ci", "P", "PHolm")]
macros.update(dict.fromkeys(keys, "n/a"))
if best is not None:
    vs_best = best["value_set"]
    t_test = methods[(methods["split"] == "test") & (methods["value_set"] == vs_best)].set_index("method")["mean"]
    macros.update({
        "EvalBestMethod": plotting.method_label(best["method"]), "EvalBestValueSet": plotting.value_set_label(vs_best),
        "EvalBestValidationAlign": num(best["validation_mean"]), "EvalBestTestAlign": num(best["mean"]),
        "EvalBestTestSeedSd": num(best["seed_sd"]), "EvalBestSeeds": int(best["n_seeds"]),
        "EvalBestBaseTestAlign": num(t_test.get("base")), "EvalBestPromptedTestAlign": num(t_test.get("prompted")),
        "EvalBestUniformTestAlign": num(t_test.get("uniform")),
    })
    for ref in ("base", "prompted"):
        g = gains[(gains["split"] == "test") & (gains["value_set"] == vs_best) & (gains["method"] == best["method"])
                  & (gains["versus"] == ref)] if len(gains) else gains
        if len(g):
            g = g.iloc[0]
            name = f"EvalBestGainOver{ref.capitalize()}"
            macros.update({name: num(g["gain"]), name + "Ci": ev.format_ci(g["ci_low"], g["ci_high"]),
                           name + "P": pval(g["p_wilcoxon"]), name + "PHolm": pval(g["p_holm"])})
    display(Markdown(f"Chosen on validation: **{plotting.method_label(best['method'])}** for "
                     f"**{plotting.value_set_label(vs_best)}** (validation {best['validation_mean']:.3f}); "
                     f"reported on test: {ev.format_mean_sd(best['mean'], best['seed_sd'])} "
                     f"({best['n_seeds']} seed(s))."))
else:
    display(Markdown("No fine-tuned method was evaluated on both validation and test: the *best* macros are n/a."))
plotting.save_macros(macros, "evaluation", notebook=NB)
display(pd.Series(macros, name="value").to_frame())
"""),
    ("md", r"""
**Reading these results.** With the embedded default (a 135M model, a few items per split, runs trained
for a few steps on CPU) the numbers show that the pipeline works end to end, not a finding: the CIs
are wide and fine-tuned runs barely move. The thesis profiles change only the parameters
(`max_eval_items = 0`, more paraphrases, the 7–13B model and its runs).
"""),
]

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "notebooks" / "04_evaluate.ipynb"
    write(out, CELLS)
    print(f"wrote {out}")

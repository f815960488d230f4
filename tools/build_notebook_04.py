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

**How.** For every item, the probability of each option letter as the next token after the chat-formatted
prompt (`valuealign.prompts`), renormalised over the valid letters, averaged over prompt paraphrases and
over option orders (cyclic shifts put every option at every position once, so position bias cancels).
One batched forward pass scores all options of many prompts; nothing is generated or parsed.
Metrics per item, then means with percentile-bootstrap 95% CIs over items: alignment = 1 − Jensen–Shannon
distance (base 2), 1 − W1/(K−1) on ordinal items (don't-know/refused options removed), majority-option
match, entropy ratio (model/population; < 1 = over-confident).

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
eval_splits = ["test", "test_cluster"]  # held-out splits to evaluate {test, test_cluster, validation}
n_paraphrases = 1  # prompt paraphrases averaged per item (thesis: 4) [1, 4]
permutations = "cyclic"  # option orders per item: all cyclic shifts, or as many seeded random orders {cyclic, random}
eval_batch_size = 8  # prompts per forward pass [1, 512]
bootstrap_samples = 1000  # bootstrap resamples for the 95% CIs over items [0, 100000]
max_eval_items = 5  # items per split, the same for every model (0: all) [0, 100000]
eval_max_options = 4  # only items with at most this many options, a CPU cost cap (thesis: 0, all) [0, 26]
eval_n_dilemmas = 4  # DailyDilemmas scored per model (0: skip) [0, 1360]
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
except ev.EvaluationError as err:
    fail(err)
settings = ev.EvalSettings(n_paraphrases=n_paraphrases, permutations=permutations,
                           max_eval_items=max_eval_items, max_options=eval_max_options,
                           n_dilemmas=eval_n_dilemmas,
                           drift_new_tokens=eval_drift_tokens, seed=seed)
display(Markdown(f"Value sets: **{', '.join(vsets)}**. Finished runs found: **{len(found)}**."))
if found:
    display(pd.DataFrame([{"run": r.run_id, "method": r.method, "value_set": r.value_set, "seed": r.seed}
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
                            skipped=skipped)
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
manifest.extra = {"eval_hash": res.eval_hash, "timings": res.timings, "skipped_runs": skipped.to_dict("records")}
manifest.write(ev.eval_folder(ev.BASELINES_RUN, res.eval_hash) / "manifest.json")
display(Markdown(f"Saved {len(written)} files; combined table `{paths.relative(paths.RUNS / ev.SUMMARY_NAME)}`."))
"""),
    ("md", r"""
## Alignment by method and value set

Each point: mean over held-out items with its 95% bootstrap CI. Fine-tuned and prompted models are
scored against the population they were steered to; base and uniform against each population.
"""),
    ("code", r"""
head = ev.headline(res.summary)
table = head.pivot_table(index=["split", "target_value_set"], columns="condition", values="mean")
display(table)
fig = ev.plot_alignment(res.summary)
show(fig, "eval-alignment-by-method", inputs=[paths.RUNS / ev.SUMMARY_NAME])
"""),
    ("code", r"""
metrics_wide = (res.summary[(res.summary["value_set"] == res.summary["target_value_set"])
                            | res.summary["method"].isin(["uniform", "base"])]
                .pivot_table(index=["split", "target_value_set", "condition"], columns="metric", values="mean")
                .reset_index())
display(metrics_wide)
tex = metrics_wide.rename(columns={"target_value_set": "value set", "js_alignment": "1-JS",
                                   "w1_alignment": "1-W1", "majority_match": "majority",
                                   "entropy_ratio": "H ratio"})
plotting.save_table(tex, "eval-alignment-table", notebook=NB,
                    caption="Alignment on held-out items by split, value set and model: 1 - Jensen-Shannon "
                            "distance, 1 - normalised Wasserstein-1 (ordinal items), majority-option match "
                            "and entropy ratio (means over items).")
"""),
    ("md", r"""
### Did steering help? Paired differences on the same items

Each steered model (fine-tuned run or prompted base) minus a reference on its own population:
mean per-item difference, 95% bootstrap CI, and the two-sided Wilcoxon signed-rank p-value (NaN with
fewer than 5 items). A CI that excludes 0 is evidence; with few items (the embedded default) expect wide
intervals.
"""),
    ("code", r"""
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
    show(fig, f"eval-steerability-{method}")
display(res.steer_advantage)
if len(res.steer_advantage):
    cols = ["method", "value_set", "diagonal", "off_diagonal", "advantage", "ci_low", "ci_high",
            "p_wilcoxon", "net_advantage", "net_ci_low", "net_ci_high", "n_items"]
    plotting.save_table(res.steer_advantage[[c for c in cols if c in res.steer_advantage.columns]],
                        "eval-steerability-table", notebook=NB,
                        caption="Diagonal advantage: alignment to the steered-to population minus the mean "
                                "alignment to the other populations, paired by item (95% bootstrap CI, "
                                "Wilcoxon signed-rank p); net: the same on gains over the base model.")
"""),
    ("md", r"""
## Generalisation: held-out items vs held-out clusters of items

`test` items come from strata (taxonomy clusters or sections) that training saw; `test_cluster` items
from strata held out entirely. A model that learned the population's values, rather than items, should
keep its advantage on `test_cluster`.
"""),
    ("code", r"""
gen = (head[head["method"].isin(["base", "prompted", "sft", "dpo", "kto", "dist"])]
       .pivot_table(index=["target_value_set", "condition"], columns="split", values="mean"))
display(gen)
fig = ev.plot_strata(res.item_table)
show(fig, "eval-alignment-by-stratum")
"""),
    ("md", r"""
## Calibration: over- or under-confident?

Per item, the entropy of the model's answer distribution against the population's. Points below the
dashed line are more confident than the population (entropy ratio < 1), a typical effect of SFT on
majority answers.
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
options: a format the fine-tuning never showed. Only the dilemma text and an 8-row sample of the
per-action file are shipped, so a dilemma is linked to the WVS cultural dimensions through the values
of its action where the sample has them, and otherwise through the DailyDilemmas value names
(`values.csv`) that occur in its text (a lexical link, reported in `value_source`). The comparison that
matters is *between models* on the same dilemmas: a shift in P(to do) for dilemmas involving, e.g.,
Traditional vs Secular-rational values.
"""),
    ("code", r"""
if len(res.dilemmas_by_dim):
    display(res.dilemmas_by_dim.pivot_table(index="wvs_dimension", columns="condition", values="p_to_do"))
    fig = ev.plot_dilemmas(res.dilemmas_by_dim)
    show(fig, "eval-dilemmas-wvs")
    display(Markdown(f"{res.dilemmas['idx'].nunique()} dilemmas; value links: "
                     + ", ".join(f"{k} {v}" for k, v in res.dilemmas.drop_duplicates('idx')
                                 ['value_source'].value_counts().items())))
else:
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

Macros (group `evaluation`) for `figures/results-macros.tex`: mean alignment (1 − JS) on the first
evaluated split for uniform, base, prompted, oracle and the best fine-tuned run, and that run's paired
gain over the base model.
"""),
    ("code", r"""
split0 = sorted(res.items["split"].unique())[0]
h0 = head[head["split"] == split0]
macros = {"EvalNumItems": int(len(res.items)), "EvalNumRuns": len(found)}
for method in ("uniform", "base", "prompted", "oracle"):
    v = h0.loc[h0["method"] == method, "mean"].mean()
    if pd.notna(v):
        macros[plotting.macro_name("eval", method, "align")] = float(v)
tuned = h0[~h0["method"].isin(ev.BASELINE_METHODS)]
if len(tuned) and tuned["mean"].notna().any():
    best = tuned.loc[tuned["mean"].idxmax()]
    macros["EvalBestTunedAlign"] = float(best["mean"])
    macros["EvalBestTunedMethod"] = plotting.method_label(best["method"])
    gain = res.comparisons[(res.comparisons["run"] == best["run"]) & (res.comparisons["versus"] == "base")
                           & (res.comparisons["metric"] == "js_alignment") & (res.comparisons["split"] == split0)]
    if len(gain) and pd.notna(gain["mean_diff"].iloc[0]):
        macros["EvalBestTunedGainOverBase"] = float(gain["mean_diff"].iloc[0])
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

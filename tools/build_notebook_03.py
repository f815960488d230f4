"""Write notebooks/03_finetune.ipynb (source, no outputs). Run: python tools/build_notebook_03.py"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from nbbuild import write  # noqa: E402

NAME = "03_finetune"

CELLS: list[tuple[str, str]] = [
    ("md", """
# 03 · Fine-tuning: SFT, DPO, KTO and dist with (Q)LoRA

**Question.** Can a model be moved towards a population's answers with each alignment method, and
what does training look like (loss, preference rewards and margins, KL reference point)?

One *run* per value set × method (× seed): a LoRA adapter on the base model, trained with trl's
`SFTTrainer`, `DPOTrainer` or `KTOTrainer`, or, for *dist*, `valuealign.training`'s `DistTrainer`: trl's
`SFTTrainer` with a distributional loss, the cross-entropy between the population's answer shares and
the model's next-token distribution over the option letters (soft labels, as in SubPOP, Suh et al.
2025), read where and as notebook 04 reads it. DPO and KTO use the base model with the adapter switched
off as their reference (no second copy of the weights). On a CUDA GPU the base is loaded in 4-bit
NF4 (QLoRA); on CPU it stays unquantised.

**Inputs:** `data/processed/alignment/<value_set>/<method>/` (notebook 02; or, with
`data_source = "consultation"`, `data/processed/consultation/<value_set>/<method>/` from notebook 05),
the base model (`model_profile`, bundled SmolLM2-135M-Instruct by default).

**Outputs:** `runs/<run_id>/` per run: `adapter/` (safetensors + model card), `train_log.csv`,
`examples.json`, `manifest.json`, `checkpoints/`, `DONE`. A finished run is skipped; an interrupted
one resumes from its last checkpoint. Figures `figures/finetune-loss.pdf`,
`figures/finetune-preference.pdf`.

**Chained runs** (`chains`, e.g. `dpo<-sft`): alignment-handbook's recipe, SFT first, then DPO
*from the SFT adapter*. The DPO run loads the SFT run's adapter as its own (trainable) and trl keeps
a frozen copy of it as the reference, so DPO's reference is the SFT model, not the base. Its run id
ends in `__from-<parent hash>`, its manifest and model card name the parent run, the parent adapter's
SHA-256 and the lineage (base → SFT → DPO); notebook 04 shows it as method `sft+dpo`.

The embedded default trains each run for a few steps on CPU: enough to show that the whole path
works and that the adapters change the model, not to align it. Thesis runs use
`configs/thesis-7b.yaml` / `configs/thesis-13b.yaml` on one 80 GB GPU.
"""),
    ("params", """
model_profile = "smollm2-135m"  # base model {smollm2-135m, llama-3.1-8b, mistral-7b, qwen2.5-7b, qwen2.5-14b, llama-2-13b}
model_path = ""  # local folder with the base model's weights (empty: the profile's default, bundled folder or hub id)
methods = ["sft", "dpo", "kto", "dist"]  # alignment methods to train {sft, dpo, kto, dist}
value_sets = ["united-states", "germany"]  # value sets (slugs made by notebook 02) to align to
chains = ["dpo<-sft"]  # chained runs per value set: <method><-<parent method> continues the parent run's adapter (DPO's reference is then the SFT model) {dpo<-sft, kto<-sft, dist<-sft, dpo<-dist, kto<-dist}
data_source = "survey"  # training data: survey answers (notebook 02) or consultation votes (notebook 05) {survey, consultation}
seed = 0  # random seed: LoRA init, data order, subsample [0, 2147483647]
quantization = "auto"  # base weights (auto: 4bit on CUDA, none on CPU) {auto, 4bit, none}
strict = False  # turn fallbacks (4-bit or paged optimiser without CUDA) into errors
cpu_rehearsal = False  # make rehearse: keep 4-bit NF4 and the paged optimiser on CPU (bitsandbytes) instead of falling back
lora_r = 16  # LoRA rank (alignment-handbook zephyr QLoRA SFT: 16) [1, 1024]
lora_alpha = 16  # LoRA alpha; the update is scaled by alpha / r [1, 4096]
lora_dropout = 0.05  # dropout on the LoRA input [0.0, 0.9]
lora_target = "all-linear"  # adapted modules: all-linear (QLoRA) or comma-separated names, e.g. q_proj,v_proj
sft_learning_rate = 0.0002  # SFT learning rate (QLoRA: 2e-4) [1e-08, 0.1]
dpo_learning_rate = 5e-05  # DPO learning rate (embedded default; thesis: 5e-6 as zephyr's QLoRA DPO) [1e-08, 0.1]
kto_learning_rate = 5e-05  # KTO learning rate (embedded default; thesis: 5e-6) [1e-08, 0.1]
dist_learning_rate = 0.0002  # dist learning rate (a one-token cross-entropy like SFT's: 2e-4) [1e-08, 0.1]
train_lr_scheduler = "constant"  # learning-rate schedule {constant, constant_with_warmup, cosine, linear}
train_warmup_ratio = 0.0  # share of steps with linear warm-up [0.0, 0.5]
train_max_grad_norm = 0.3  # gradient clipping (QLoRA: 0.3) [0.0, 100.0]
max_steps = 3  # optimizer steps per run (-1: train for `epochs`) [-1, 10000000]
epochs = 1.0  # passes over the training rows when max_steps is -1 [0.01, 100.0]
train_batch_size = 2  # rows per device and step (KTO needs at least 2) [1, 1024]
grad_accum = 1  # gradient accumulation steps (effective batch: train_batch_size x grad_accum) [1, 1024]
max_length = 256  # token limit of prompt + answer; longer rows are truncated [32, 32768]
dpo_beta = 0.1  # DPO temperature beta (trl default; zephyr: 0.01) [0.001, 10.0]
dpo_precompute_ref = False  # DPO reference log-probabilities computed once before training (trl precompute_ref_log_probs) instead of an adapter-off forward per step
kto_desirable_weight = 0.0  # KTO weight of desirable rows (0: balanced from the data) [0.0, 100.0]
kto_undesirable_weight = 0.0  # KTO weight of undesirable rows (0: balanced from the data) [0.0, 100.0]
train_max_rows = 64  # training rows per run, a seeded subsample (0: all) [0, 100000000]
train_eval_rows = 0  # validation rows scored once after training, metrics in the model card (0: none) [0, 1000000]
train_save_steps = 3  # save a resumable checkpoint every this many optimizer steps [1, 1000000]
train_optim = "auto"  # optimiser (auto: paged_adamw_8bit on CUDA, adamw_torch on CPU) {auto, paged_adamw_8bit, paged_adamw_32bit, adamw_torch}
train_gradient_checkpointing = "auto"  # recompute activations to save memory (auto: on with CUDA) {auto, on, off}
train_examples = 3  # held-out items answered before and after training, per run [0, 20]
train_max_new_tokens = 4  # tokens generated per example answer [1, 256]
"""),
    ("code", """
from valuealign import config

params = config.check_parameters("03_finetune", globals())
"""),
    ("code", """
import gc
import logging
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # text progress bars are fine
import datasets
import matplotlib.pyplot as plt
import pandas as pd
import transformers
from IPython.display import Markdown, display

from valuealign import models, paths, plotting, provenance, training

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # no CPU-kernel notice
datasets.disable_progress_bars()
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
pd.set_option("display.max_colwidth", 80)
NB = "03_finetune"
manifest = provenance.Manifest(NB, parameters=params, seed=seed).__enter__()


def stop(err: Exception) -> None:
    \"\"\"Show a readable message and stop the notebook (no deep traceback).\"\"\"
    display(Markdown(f"**Stopped:** {err}"))
    raise SystemExit(f"stopped: {err}") from None
"""),
    ("md", """
## 1 · The runs
One run per value set × method, then the chained runs (`init_from`: the parent run they continue).
Its id is derived from every training parameter (and the parent's id), so the table says whether it
is already **finished** (skipped), **unfinished** (resumes from its last checkpoint) or **new**.
"""),
    ("code", """
try:
    runs, plan_table, notes = training.plan(params)
except (training.TrainingError, config.ConfigError) as err:
    stop(err)
device = training.training_device()
for note in notes:
    display(Markdown(f"**Note:** {note}"))
display(Markdown(f"Device: **{device}**; base model **{model_profile}** "
                 f"(`{models.get_profile(model_profile).resolve(model_path or None)}`)."))
plan_table
"""),
    ("md", """
## 2 · Training data
Each run reads its method's dataset for its value set (train split; validation rows are held out and
used only for the before/after examples). The embedded default trains on a seeded subsample
(`train_max_rows`) for `max_steps` steps.
"""),
    ("code", """
data = {}
try:
    for r in runs:
        if (r.value_set, r.method) not in data:
            data[(r.value_set, r.method)] = training.load_alignment_dataset(r.value_set, r.method, data_source)
except training.TrainingError as err:
    stop(err)
counts = pd.DataFrame([{"value_set": vs, "method": m, **{s: len(d[s]) for s in d}}
                       for (vs, m), d in data.items()])
counts
"""),
    ("md", """
## 3 · Training
Progress bars show one line per run; the trainers' detailed logs go to `runs/<run_id>/train.log`.
On a GPU, running out of memory stops with the knobs to turn (batch size, gradient accumulation,
sequence length) and leaves the run folder resumable.
"""),
    ("code", """
results = {}
for r in runs:
    try:
        res = training.train(r, data[(r.value_set, r.method)], eval_rows=train_eval_rows,
                             examples=train_examples, max_new_tokens=train_max_new_tokens,
                             keep_model=False)
    except (training.TrainingError, training.TrainingOOMError) as err:
        stop(err)
    results[(r.value_set, r.label)] = res
    gc.collect()
summary = pd.DataFrame([{
    "value_set": vs, "method": m, "status": res.status, "steps": res.global_step,
    "rows": res.metrics.get("train_rows"), "too long": res.metrics.get("rows_dropped_too_long"),
    "first loss": res.log["loss"].iloc[0] if len(res.log) else None,
    "last loss": res.log["loss"].iloc[-1] if len(res.log) else None,
    "last margin": res.metrics.get("final_rewards/margins"),
    "train s": res.metrics.get("train_runtime"), "run_id": res.run_id,
} for (vs, m), res in results.items()])
summary.style.format(precision=3, na_rep="–")
"""),
    ("md", """
**Reading the table.** *steps* is the number of optimizer updates (equal for a resumed and an
uninterrupted run); *rows* the training rows used (*too long*: rows longer than `max_length`
tokens, dropped rather than truncated, because truncation would cut the answer); the losses are per method and not comparable across methods (cross-entropy for
SFT, −log σ of the scaled log-ratio difference for DPO, the prospect-theory loss for KTO, which
starts at 0.5, and for dist the cross-entropy against the population's shares, which cannot fall below
their entropy; its log also has `target_kl`, the loss minus that entropy, 0 when the letters match). *margin* is the mean reward of the preferred minus the dispreferred answer: positive
means the adapter already prefers the population's answer more than the base model does.
"""),
    ("code", """
logs = {k: res.log for k, res in results.items() if len(res.log)}
fig = training.loss_figure(logs)
if fig is not None:
    plotting.save_figure(fig, "finetune-loss", notebook=NB,
                         inputs=[res.run_dir / "train_log.csv" for res in results.values()])
    display(fig)
    plt.close(fig)
"""),
    ("code", """
fig = training.plot_curves(logs, training.PREFERENCE_PANELS)
if fig is None:
    display(Markdown("No DPO or KTO run: no preference curves."))
else:
    plotting.save_figure(fig, "finetune-preference", notebook=NB,
                         inputs=[res.run_dir / "train_log.csv" for res in results.values()])
    display(fig)
    plt.close(fig)
"""),
    ("md", """
**Reading the curves.** Rewards are β × the log-ratio of the trained policy to the reference (the
base with the adapter off), so all start at 0. DPO's *reward accuracy* is the share of pairs whose
preferred answer gets the higher reward. KTO's *KL* estimate is its reference point: how far the
policy has moved from the base on mismatched prompt/answer pairs.
"""),
    ("md", """
## 4 · Before and after: held-out items
Greedy answers of the base model (adapter off) and the trained model to validation items never seen
in training, with the log-probability of the population's answer (*target*: the SFT answer, the DPO
chosen answer, a desirable KTO answer, for dist the most common answer). A rising log-probability is the change training aims at.
"""),
    ("code", """
frames = []
for (vs, m), res in results.items():
    if len(res.examples):
        frames.append(res.examples.assign(value_set=vs, method=m))
if frames:
    ex = pd.concat(frames, ignore_index=True)
    ex["question"] = ex["question"].str.replace("\\n", " ", regex=False).str.slice(0, 90) + "…"
    ex["Δ logp"] = ex["logp_target_after"] - ex["logp_target_before"]
    display(ex[["value_set", "method", "item_id", "question", "target", "before", "after",
                "logp_target_before", "logp_target_after", "Δ logp"]].style.format(precision=3))
else:
    display(Markdown("No examples (no validation rows, or `train_examples = 0`)."))
"""),
    ("code", """
manifest.add_inputs([training.dataset_dir(vs, m, data_source) for (vs, m) in data
                     if training.dataset_dir(vs, m, data_source).exists()])
manifest.add_outputs([res.run_dir / "manifest.json" for res in results.values()])
manifest.extra = {"runs": [res.run_id for res in results.values()], "device": device}
manifest.__exit__(None, None, None)
manifest.write(paths.RUNS / "03_finetune.manifest.json")
display(Markdown(f"{len(results)} runs in `runs/`: "
                 + ", ".join(f"`{res.run_id}` ({res.status})" for res in results.values())))
"""),
]


def main() -> None:
    write(ROOT / "notebooks" / f"{NAME}.ipynb", CELLS)


if __name__ == "__main__":
    main()

"""Tests of valuealign.training: real trl trainers with peft on a tiny random Llama.

The tiny Llama (~3M parameters) has the bundled SmolLM2 tokenizer and chat template, so the
whole code path (chat rendering, trl tokenisation, LoRA, checkpoints, adapters) is the real
one while a step takes well under a second on 2 cores.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from valuealign import inference, metrics, models, paths, training

pytestmark = pytest.mark.skipif(
    not (paths.BUNDLED_MODEL / "tokenizer.json").exists(), reason="bundled model not converted (make setup)"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(models.save_tiny_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama"))


def _params(tiny: str, method: str, **kw) -> training.TrainParams:
    base = dict(model_profile="smollm2-135m", model_path=tiny, method=method, value_set="toy",
                seed=0, quantization="none", lora_r=8, lora_alpha=16, lora_dropout=0.0,
                learning_rate=5e-3, max_steps=4, train_batch_size=2, max_length=128,
                save_steps=2, beta=0.1 if method != "sft" else 0.0)
    base.update(kw)
    return training.TrainParams(**base)


# ---------------------------------------------------------------- bad input


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(training.TrainingError, match=r"unknown method 'ppo'; valid: sft, dpo, kto"):
        training.check_method("ppo")
    with pytest.raises(training.TrainingError, match="valid: sft, dpo, kto"):
        training.params_for_run({"model_profile": "smollm2-135m"}, "orpo", "toy", cuda=False)


def test_unknown_profile_lists_valid_ones() -> None:
    with pytest.raises(training.TrainingError, match=r"unknown model profile 'gpt-5'.*smollm2-135m.*llama-3.1-8b"):
        training.TrainParams(model_profile="gpt-5", method="sft", value_set="toy")


def test_missing_columns_are_named() -> None:
    ds = training.synthetic_alignment_data("sft", n_items=4)
    broken = ds.remove_columns(["completion"])
    with pytest.raises(training.DatasetFormatError, match=r"lacks the column\(s\) completion that sft needs"):
        training.check_columns(broken, "sft", where="toy/sft")
    dpo = training.synthetic_alignment_data("dpo", n_items=4).remove_columns(["chosen", "rejected"])
    with pytest.raises(training.DatasetFormatError, match=r"chosen, rejected that dpo needs"):
        training.check_columns(dpo, "dpo")


def test_missing_data_folder_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(training.TrainingError, match="run notebook 02"):
        training.load_alignment_dataset("germany", "sft", root=tmp_path)
    with pytest.raises(training.TrainingError, match="consultation data are absent: run notebook 05"):
        training.load_alignment_dataset("everyone", "kto", data_source="consultation", root=tmp_path)


def test_4bit_without_cuda_warns_and_falls_back_or_errors_if_strict() -> None:
    with pytest.warns(UserWarning, match="needs a CUDA GPU.*quantization='none'"):
        assert training.resolve_quantization("4bit", strict=False, cuda=False) == "none"
    with pytest.raises(training.TrainingError, match="strict=True"):
        training.resolve_quantization("4bit", strict=True, cuda=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert training.resolve_quantization("auto", cuda=False) == "none"
        assert training.resolve_quantization("auto", cuda=True) == "4bit"
    with pytest.raises(training.TrainingError, match="valid: auto, 4bit, none"):
        training.resolve_quantization("8bit")


def test_run_id_follows_contract_and_ignores_other_methods_knobs() -> None:
    nb = {"model_profile": "smollm2-135m", "seed": 3, "dpo_beta": 0.1, "quantization": "auto"}
    sft = training.params_for_run(nb, "sft", "germany", cuda=False)
    assert sft.run_id.startswith("smollm2-135m__sft__germany__s3__") and len(sft.hash) == 8
    assert training.params_for_run({**nb, "dpo_beta": 0.5}, "sft", "germany", cuda=False).run_id == sft.run_id
    dpo = training.params_for_run(nb, "dpo", "germany", cuda=False)
    assert training.params_for_run({**nb, "dpo_beta": 0.5}, "dpo", "germany", cuda=False).run_id != dpo.run_id


def test_kto_weights_balance_the_classes() -> None:
    train = {"label": [True] * 3 + [False] * 9}
    d, u = training.kto_weights(train)
    assert d * 3 == pytest.approx(u * 9) and max(d, u) >= 1.0
    assert training.kto_weights(train, 2.0, 0.0) == (2.0, pytest.approx(2.0 / 3))
    with pytest.raises(training.DatasetFormatError, match="0 undesirable"):
        training.kto_weights({"label": [True, True]})


# ---------------------------------------------------------------- real training


@pytest.mark.slow
def test_sft_adapter_reloads_changes_logits_and_raises_answer_logprob(tiny: str, tmp_path: Path) -> None:
    data = training.synthetic_alignment_data("sft", n_items=4)
    p = _params(tiny, "sft", max_steps=8, train_batch_size=4, learning_rate=1e-2, save_steps=8)
    row = data["train"][0]
    base = models.load_causal_lm("smollm2-135m", tiny)
    tok = models.load_tokenizer("smollm2-135m", tiny)
    before = inference.completion_logprob(base, tok, row["prompt"], row["completion"][0]["content"])

    res = training.train(p, data, runs_root=tmp_path, progress=False)
    assert res.status == "trained" and res.global_step == 8 and res.optimizer_steps == 8
    for name in ("adapter/adapter_model.safetensors", "adapter/README.md", "train_log.csv", "manifest.json", "DONE"):
        assert (res.run_dir / name).exists(), name
    log = pd.read_csv(res.run_dir / "train_log.csv")
    assert list(log["step"]) == list(range(1, 9)) and log["loss"].notna().all()

    reloaded = models.load_with_adapter("smollm2-135m", res.adapter_dir, tiny)
    ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        diff = (reloaded(**ids).logits - base(**ids).logits).abs().max().item()
    assert diff > 1e-3
    after = inference.completion_logprob(reloaded, tok, row["prompt"], row["completion"][0]["content"])
    assert after > before + 0.1, (before, after)

    again = training.train(p, data, runs_root=tmp_path, progress=False)
    assert again.status == "skipped" and again.global_step == 8 and len(again.log) == 8


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_methods_log_rewards_and_save_adapters(tiny: str, tmp_path: Path, method: str) -> None:
    data = training.synthetic_alignment_data(method, n_items=8)
    res = training.train(_params(tiny, method, max_steps=2), data, runs_root=tmp_path, eval_rows=4,
                         progress=False)
    assert (res.adapter_dir / "adapter_model.safetensors").exists() and (res.run_dir / "DONE").exists()
    log = pd.read_csv(res.run_dir / "train_log.csv")
    expected = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins"}
    expected |= {"kl"} if method == "kto" else {"rewards/accuracies"}
    assert expected <= set(log.columns)
    assert "eval_loss" in res.metrics
    card = (res.adapter_dir / "README.md").read_text()
    assert f"__{method}__toy__" in card and "base_model:" in card
    examples = training.before_after(res.model, res.tokenizer, training.example_rows(data, method, n=2))
    assert len(examples) == 2 and examples["after"].map(type).eq(str).all()


def _oom_after_step(step: int):
    """A trainer callback that fails like a CUDA out-of-memory error once ``step`` has finished."""
    from transformers import TrainerCallback

    class OOMAfterStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    return OOMAfterStep()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_optimizer_step_count(tiny: str, tmp_path: Path) -> None:
    """Kill after step 3 (checkpoint at step 2) with a CUDA OOM; re-run resumes; 4 steps total."""
    data = training.synthetic_alignment_data("sft", n_items=4)
    p = _params(tiny, "sft", max_steps=4)
    full = training.train(p, data, runs_root=tmp_path / "a", progress=False)

    with pytest.raises(training.TrainingOOMError, match=r"lower train_batch_size.*raise grad_accum.*max_length") as err:
        training.train(p, data, runs_root=tmp_path / "b", callbacks=[_oom_after_step(3)], progress=False)
    assert "resumes from checkpoint-2" in str(err.value)
    run_dir = tmp_path / "b" / p.run_id
    assert training.run_status(run_dir) == "unfinished"
    assert training.last_checkpoint(run_dir).name == "checkpoint-2"

    resumed = training.train(p, data, runs_root=tmp_path / "b", progress=False)
    assert resumed.status == "resumed" and resumed.resumed_from == "checkpoint-2"
    assert resumed.global_step == full.global_step == 4
    assert resumed.optimizer_steps == full.optimizer_steps == 4
    assert list(resumed.log["step"]) == list(range(1, 5))


# ---------------------------------------------------------------- dist: the distributional objective


def test_soft_cross_entropy_equals_the_hand_computed_value() -> None:
    """Two rows, the second with 2 of 3 option slots (padding must not count)."""
    import math

    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, -0.5, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    target = torch.tensor([[0.5, 0.3, 0.2], [0.25, 0.75, 0.0]])
    logq = torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    got = training.soft_cross_entropy(logq, target, mask)
    z1 = math.log(math.exp(2) + math.exp(1) + math.exp(0))
    row1 = -(0.5 * (2 - z1) + 0.3 * (1 - z1) + 0.2 * (0 - z1))
    z2 = math.log(math.exp(0.5) + math.exp(-0.5))
    row2 = -(0.25 * (0.5 - z2) + 0.75 * (-0.5 - z2))
    assert got.tolist() == pytest.approx([row1, row2], abs=1e-6)


def test_dist_loss_is_the_cross_entropy_of_the_evaluations_letter_probabilities(tiny: str, tmp_path: Path) -> None:
    """The trainer's loss on a batch = -sum t log p with p from inference.score_labels (notebook 04's
    scoring: same prompt text, same position, same letter tokens, renormalised over the letters)."""
    import numpy as np

    data = training.synthetic_alignment_data("dist", n_items=4, n_options=4)
    p = _params(tiny, "dist")
    model = models.load_for_training("smollm2-135m", tiny)
    tok = models.load_tokenizer("smollm2-135m", tiny)
    train = training.prepare_split(data["train"], "dist")
    args = training.training_args(p, tmp_path / "ckpt", "cpu", len(train))
    trainer = training.make_trainer(p, model, tok, train, None, args)
    assert isinstance(trainer, training.dist_trainer_class())
    peft_model = trainer.model.eval()
    rows = [train[i] for i in range(3)]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    with torch.no_grad():
        loss = float(trainer.compute_loss(peft_model, batch))
        texts = [inference.chat_text(tok, list(r["prompt"])) for r in rows]
        scores = inference.score_labels(peft_model, tok, texts, [list(r["option_letters"]) for r in rows])
    expected = np.mean([-np.sum(np.asarray(r["target_shares"]) * np.log(sc.probs)) for r, sc in zip(rows, scores, strict=True)])
    assert loss == pytest.approx(float(expected), rel=1e-4)
    assert all(abs(sum(r["target_shares"]) - 1) < 1e-9 for r in rows)


def test_dist_run_trains_resumes_and_is_skipped_like_the_others(tiny: str, tmp_path: Path) -> None:
    data = training.synthetic_alignment_data("dist", n_items=8)
    p = _params(tiny, "dist", max_steps=4)
    assert "__dist__toy__s0__" in p.run_id
    with pytest.raises(training.TrainingOOMError):
        training.train(p, data, runs_root=tmp_path, callbacks=[_oom_after_step(3)], progress=False)
    res = training.train(p, data, runs_root=tmp_path, eval_rows=4, examples=2, progress=False)
    assert res.status == "resumed" and res.resumed_from == "checkpoint-2"
    assert res.global_step == 4 and res.optimizer_steps == 4
    for name in ("adapter/adapter_model.safetensors", "adapter/README.md", "manifest.json", "DONE", "examples.json"):
        assert (res.run_dir / name).exists(), name
    log = pd.read_csv(res.run_dir / "train_log.csv")
    assert list(log["step"]) == [1, 2, 3, 4] and {"loss", "target_kl", "option_mass"} <= set(log.columns)
    assert (log["target_kl"] >= -1e-6).all() and (log["loss"] > log["target_kl"]).all()  # CE = H(target) + KL
    assert "eval_loss" in res.metrics and "Distributional fine-tuning" in (res.adapter_dir / "README.md").read_text()
    # the example target is the letter of the largest share (option 0 of the toy items)
    assert set(res.examples["target"]) <= set("ABC") and len(res.examples) == 2
    assert training.train(p, data, runs_root=tmp_path, progress=False).status == "skipped"


def test_dist_bad_rows_are_named(tiny: str) -> None:
    data = training.synthetic_alignment_data("dist", n_items=4)
    bad = data["train"].map(lambda r, i: {"target_shares": [0.5, 0.4, 0.3]} if i == 1 else {}, with_indices=True)
    with pytest.raises(training.DatasetFormatError, match=r"toy/dist \(split 'train'\), row 1: column 'target_shares'"):
        training.check_columns(bad, "dist", where="toy/dist")
    short = data["train"].map(lambda r: {"target_shares": [1.0]})
    with pytest.raises(training.DatasetFormatError, match="has 1 value.*for 3 option letter"):
        training.check_columns(short, "dist")
    tok = models.load_tokenizer("smollm2-135m", tiny)
    long_letters = data["train"].map(lambda r: {"option_letters": ["A", "B", "Bonjour123"]})
    with pytest.raises(training.TrainingError, match=r"not distinct single tokens"):
        training.dist_features(long_letters, tok)


def test_dist_learning_rate_and_run_id() -> None:
    nb = {"model_profile": "smollm2-135m", "seed": 0, "dist_learning_rate": 1e-4, "sft_learning_rate": 3e-4}
    p = training.params_for_run(nb, "dist", "germany", cuda=False)
    assert p.learning_rate == 1e-4 and p.beta == 0.0 and p.run_id.startswith("smollm2-135m__dist__germany__s0__")
    assert p.run_id != training.params_for_run(nb, "sft", "germany", cuda=False).run_id.replace("__sft__", "__dist__")


def test_dist_is_a_method_of_the_notebooks_profiles_and_thesis_grid() -> None:
    from valuealign import config, sweep

    assert "dist" in config.notebook_parameters("03_finetune")["methods"].default
    for profile in ("thesis-7b", "thesis-13b"):
        assert "dist" in config.parameters_for("03_finetune", paths.CONFIGS / f"{profile}.yaml")["methods"]
    grid = sweep.load_grid(paths.CONFIGS / "grids" / "thesis.yaml")
    cells = [c for c in grid.cells if c.parameters["03_finetune"]["methods"] == ["dist"]]
    assert len(cells) == 15  # 5 value sets x 3 seeds


@pytest.mark.slow
def test_dist_training_moves_the_bundled_models_letters_towards_the_shares(tmp_path: Path) -> None:
    """Real SmolLM2-135M, real trainer: the JS distance between the letter distribution that the
    evaluation reads and the target falls, on the trained prompts and on held-out items."""
    import numpy as np

    data = training.synthetic_alignment_data("dist", n_items=8)
    p = training.TrainParams(model_profile="smollm2-135m", method="dist", value_set="toy", quantization="none",
                             lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=2e-3, max_steps=5,
                             train_batch_size=4, max_length=256, save_steps=100)
    res = training.train(p, data, runs_root=tmp_path, progress=False)
    tok = res.tokenizer

    def mean_js(split: str) -> float:
        rows = list(data[split])
        texts = [inference.chat_text(tok, list(r["prompt"])) for r in rows]
        scores = inference.score_labels(res.model, tok, texts, [list(r["option_letters"]) for r in rows])
        return float(np.mean([metrics.js_distance(sc.probs, r["target_shares"]) for sc, r in zip(scores, rows, strict=True)]))

    with res.model.disable_adapter():
        before = {s: mean_js(s) for s in ("train", "validation")}
    after = {s: mean_js(s) for s in ("train", "validation")}
    assert after["train"] < before["train"] - 0.05, (before, after)
    assert after["validation"] < before["validation"], (before, after)


@pytest.mark.parametrize("profile", ["thesis-7b", "thesis-13b"])
def test_thesis_profiles_plan_qlora_runs_on_cuda_and_refuse_cpu(profile: str) -> None:
    from valuealign import config

    params = config.parameters_for("03_finetune", paths.CONFIGS / f"{profile}.yaml")
    runs, table, notes = training.plan(params, cuda=True)
    assert not notes and {r.quantization for r in runs} == {"4bit"}
    assert {r.optim for r in runs} == {"paged_adamw_8bit"} and all(r.gradient_checkpointing for r in runs)
    with pytest.raises(training.TrainingError, match="needs a CUDA GPU"):
        training.plan(params, cuda=False)  # strict: no silent CPU fallback for a GPU profile


@pytest.mark.pipeline
@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_consultation_data_train_through_the_same_path(tiny: str, tmp_path: Path, method: str) -> None:
    """Phase 3 (refinement on the public's votes) is notebook 03 with data_source="consultation"."""
    from conftest import require_artefact

    require_artefact(paths.CONSULTATION / "value_sets.parquet")
    value_set = "consultation-all-everyone"
    data = training.load_alignment_dataset(value_set, method, data_source="consultation")
    assert len(data["train"]) > 0
    p = _params(tiny, method, value_set=value_set, data_source="consultation", max_steps=2)
    res = training.train(p, data, runs_root=tmp_path, progress=False, keep_model=False)
    assert res.status == "trained" and (res.adapter_dir / "adapter_model.safetensors").exists()
    assert f"__{method}__{value_set}__" in res.run_dir.name

"""Chained training (``init_from``): a run that continues another run's adapter (issue 17).

Real trl trainers with peft on the tiny random Llama of test_training (bundled tokenizer and
chat template): the parent is trained, the child continues it, and the reference model that
trl's DPO uses is read back and compared with the parent's and the base model's log-probs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from valuealign import evaluation, models, paths, provenance, training

pytestmark = pytest.mark.skipif(
    not (paths.BUNDLED_MODEL / "tokenizer.json").exists(), reason="bundled model not converted (make setup)"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(models.save_tiny_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama"))


def _params(tiny: str, method: str, **kw) -> training.TrainParams:
    base = dict(model_profile="smollm2-135m", model_path=tiny, method=method, value_set="toy",
                seed=0, quantization="none", lora_r=8, lora_alpha=16, lora_dropout=0.0,
                learning_rate=5e-2, max_steps=4, train_batch_size=2, max_length=128,
                save_steps=4, beta=0.1 if method != "sft" else 0.0)
    base.update(kw)
    return training.TrainParams(**base)


@pytest.fixture(scope="module")
def parent(tiny: str, tmp_path_factory: pytest.TempPathFactory) -> training.RunResult:
    """A finished SFT run with a clearly non-zero adapter (high learning rate)."""
    root = tmp_path_factory.mktemp("runs")
    data = training.synthetic_alignment_data("sft", n_items=8)
    return training.train(_params(tiny, "sft"), data, runs_root=root, progress=False, keep_model=False)


# ---------------------------------------------------------------- identity


def test_init_from_is_hashed_only_when_set_and_shows_in_the_run_id() -> None:
    plain = training.TrainParams(model_profile="smollm2-135m", method="dpo", value_set="germany")
    # an existing run id stays valid: the new field is left out of the hash while empty
    legacy = {k: v for k, v in plain.to_dict().items() if k not in ("save_steps", "init_from", "dpo_precompute_ref")}
    blob = json.dumps(legacy, sort_keys=True, separators=(",", ":"), default=str)
    import hashlib

    assert plain.hash == hashlib.sha256(blob.encode()).hexdigest()[:8]
    assert "__from-" not in plain.run_id
    parent_id = "smollm2-135m__sft__germany__s0__0123abcd"
    child = replace(plain, init_from=parent_id)
    assert child.run_id.startswith("smollm2-135m__dpo__germany__s0__")
    assert child.run_id.endswith("__from-0123abcd") and child.hash != plain.hash
    # a parent retrained on other data has another id, and so does its child
    other = replace(plain, init_from="smollm2-135m__sft__germany__s0__99999999")
    assert other.run_id != child.run_id
    # a chained id is itself a valid parent (grand-children)
    assert training.RUN_ID_PATTERN.fullmatch(child.run_id)
    with pytest.raises(training.TrainingError, match=r"init_from 'not a run' is not a run id"):
        replace(plain, init_from="not a run")


def test_plan_puts_chained_runs_after_their_parents_with_the_parents_id(tmp_path: Path) -> None:
    params = {"model_profile": "smollm2-135m", "methods": ["sft", "dpo"], "value_sets": ["germany"],
              "chains": ["dpo<-sft"], "quantization": "none"}
    runs, table, _ = training.plan(params, cuda=False, runs_root=tmp_path, data_root=tmp_path)
    assert [(r.method, bool(r.init_from)) for r in runs] == [("sft", False), ("dpo", False), ("dpo", True)]
    assert runs[2].init_from == runs[0].run_id and runs[2].run_id.endswith(f"__from-{runs[0].hash}")
    assert list(table["init_from"]) == ["", "", runs[0].run_id]
    # a sweep cell of one method trains only that method's run: the chain is left out, with a note
    runs, _, notes = training.plan({**params, "methods": ["dpo"]}, cuda=False, runs_root=tmp_path, data_root=tmp_path)
    assert [r.init_from for r in runs] == [""]
    assert notes == ["chains: 'dpo<-sft' left out: sft not in methods (dpo)"]
    with pytest.raises(training.TrainingError, match=r"chains: 'dpo' is not '<method><-<parent method>'"):
        training.parse_chains(["dpo"], ["sft", "dpo"])
    with pytest.raises(training.TrainingError, match=r"unknown method 'ppo'"):
        training.parse_chains(["ppo<-sft"], ["sft", "dpo"])


# ---------------------------------------------------------------- validation of the parent


def test_a_missing_unfinished_or_mismatched_parent_is_refused_by_name(tiny: str, parent: training.RunResult,
                                                                      tmp_path: Path) -> None:
    data = training.synthetic_alignment_data("dpo", n_items=8)
    missing = _params(tiny, "dpo", init_from="smollm2-135m__sft__toy__s0__deadbeef")
    with pytest.raises(training.TrainingError,
                       match=r"init_from: parent run smollm2-135m__sft__toy__s0__deadbeef not found"):
        training.train(missing, data, runs_root=parent.run_dir.parent, progress=False)

    unfinished_root = tmp_path / "runs"
    shutil.copytree(parent.run_dir, unfinished_root / parent.run_id)
    (unfinished_root / parent.run_id / training.DONE).unlink()
    child = _params(tiny, "dpo", init_from=parent.run_id)
    with pytest.raises(training.TrainingError, match=rf"parent run {parent.run_id} is not done \(status 'unfinished'"):
        training.train(child, data, runs_root=unfinished_root, progress=False)

    for field, value in (("quantization", "4bit"), ("model_path", "elsewhere"), ("lora_r", 4)):
        bad = replace(child, **{field: value})
        with pytest.raises(training.TrainingError,
                           match=rf"parent run {parent.run_id} does not fit run .*the parent has {field}="):
            training.resolve_parent(bad, parent.run_dir.parent)


# ---------------------------------------------------------------- the reference is the parent


def _sequence_logps(model, batch) -> torch.Tensor:
    """Sum of the completion tokens' log-probabilities per row (what DPO's reference computes)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = batch["input_ids"][:, 1:]
    per_token = logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    return (per_token * batch["completion_mask"][:, 1:]).sum(dim=1)


def test_dpo_reference_is_the_parent_and_stays_it_while_the_child_trains(tiny: str,
                                                                          parent: training.RunResult) -> None:
    data = training.synthetic_alignment_data("dpo", n_items=8)
    child = _params(tiny, "dpo", init_from=parent.run_id, max_steps=2, learning_rate=1e-2)
    found = training.resolve_parent(child, parent.run_dir.parent)
    model = training.load_model_for_run(child, "cpu", found)
    tok = models.load_tokenizer("smollm2-135m", tiny)
    train_ds = training.prepare_split(data["train"], "dpo")
    args = training.training_args(child, parent.run_dir.parent / "scratch", "cpu", len(train_ds))
    trainer = training.make_trainer(child, model, tok, train_ds, None, args)
    assert set(trainer.model.peft_config) == {"default", "ref"}  # trl's frozen copy of the parent
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    ref = torch.cat([ref_chosen, ref_rejected])

    parent_model = models.load_with_adapter("smollm2-135m", parent.adapter_dir, tiny)
    base_model = models.load_causal_lm("smollm2-135m", tiny)
    from_parent, from_base = _sequence_logps(parent_model, batch), _sequence_logps(base_model, batch)
    assert torch.allclose(ref, from_parent, atol=1e-4), (ref, from_parent)
    assert (ref - from_base).abs().max().item() > 1e-2, "the reference must not be the base model"

    trainer.train()
    after_chosen, after_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    assert torch.allclose(torch.cat([after_chosen, after_rejected]), from_parent, atol=1e-4)
    moved = (_sequence_logps(trainer.model, batch) - from_parent).abs().max().item()
    assert moved > 1e-4, "the child's own adapter trained"


@pytest.mark.parametrize("method", ["kto", "sft"])
def test_kto_and_sft_children_train_from_the_parent(tiny: str, parent: training.RunResult, method: str) -> None:
    """Notebook 05's refinement (KTO by default) continues an SFT run through the same path."""
    data = training.synthetic_alignment_data(method, n_items=8)
    child = _params(tiny, method, init_from=parent.run_id, max_steps=1, value_set=f"toy-{method}")
    res = training.train(child, data, runs_root=parent.run_dir.parent, progress=False, keep_model=True)
    assert res.status == "trained" and res.optimizer_steps == 1
    if method == "kto":  # trl's frozen copy of the parent is KTO's reference too
        assert set(res.model.peft_config) == {"default", "ref"}
    assert sorted(p.name for p in res.adapter_dir.iterdir()) == ["README.md", "adapter_config.json",
                                                                 "adapter_model.safetensors"]


def test_sft_child_starts_from_the_parents_weights(tiny: str, parent: training.RunResult) -> None:
    """SFT (the consultation refinement) has no reference: it must simply start where the parent ended."""
    child = _params(tiny, "sft", init_from=parent.run_id, value_set="toy-2")
    model = training.load_model_for_run(child, "cpu", training.resolve_parent(child, parent.run_dir.parent))
    trainable = [n for n, q in model.named_parameters() if q.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    from safetensors.torch import load_file

    saved = load_file(str(parent.adapter_dir / "adapter_model.safetensors"))
    state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(saved) == len(state)
    for k, v in saved.items():
        match = [s for s in state if s.replace(".default", "") == k]
        assert match and torch.equal(state[match[0]], v), k


# ---------------------------------------------------------------- what the run records


def test_chained_run_records_its_lineage_in_id_manifest_and_card(tiny: str, parent: training.RunResult,
                                                                  tmp_path: Path) -> None:
    data_root = tmp_path / "alignment"  # on disk, so the run records its data fingerprint
    training.synthetic_alignment_data("dpo", n_items=8).save_to_disk(str(data_root / "toy" / "dpo"))
    child = _params(tiny, "dpo", init_from=parent.run_id, max_steps=2)
    res = training.train(child, runs_root=parent.run_dir.parent, data_root=data_root, progress=False,
                         keep_model=False)
    assert res.status == "trained" and res.run_id.endswith(f"__from-{parent.params.hash}")
    man = provenance.read_json(res.run_dir / "manifest.json")
    sha = training.adapter_sha256(parent.adapter_dir)
    assert man["parameters"]["init_from"] == parent.run_id
    assert man["extra"]["parent"]["run_id"] == parent.run_id and man["extra"]["parent"]["adapter_sha256"] == sha
    assert man["extra"]["lineage"] == ["base:smollm2-135m", parent.run_id, res.run_id]
    assert man["extra"]["lineage_method"] == "sft+dpo"
    card = (res.adapter_dir / "README.md").read_text()
    assert parent.run_id in card and sha in card and "Lineage:" in card
    # only the trained adapter is saved, not trl's frozen "ref" copy
    assert not (res.adapter_dir / "ref").exists()
    # notebook 04 tells it apart from a fresh DPO run
    found, _ = evaluation.discover_runs([res.run_id], runs_dir=parent.run_dir.parent, data_root=data_root)
    assert [r.method for r in found] == ["sft+dpo"]


def test_a_child_whose_parents_data_changed_is_stale(tmp_path: Path) -> None:
    data_root = tmp_path / "alignment"
    for method in ("sft", "dpo"):
        training.synthetic_alignment_data(method, n_items=4).save_to_disk(str(data_root / "toy" / method))
    fp = {m: training.data_fingerprint("toy", m, root=data_root).combined for m in ("sft", "dpo")}
    manifest = {"parameters": {"value_set": "toy", "method": "dpo", "data_source": "survey",
                               "data_fingerprint": fp["dpo"]},
                "extra": {"parent": {"run_id": "p", "value_set": "toy", "method": "sft", "data_source": "survey",
                                     "data_fingerprint": fp["sft"]}}}
    training.check_run_data("child", manifest, data_root)  # both current
    training.synthetic_alignment_data("sft", n_items=6).save_to_disk(str(data_root / "toy" / "sft2"))
    shutil.rmtree(data_root / "toy" / "sft")
    (data_root / "toy" / "sft2").rename(data_root / "toy" / "sft")
    with pytest.raises(training.StaleRunError, match=r"run child continues run p, whose training data changed"):
        training.check_run_data("child", manifest, data_root)


def test_notebook_04_globs_leave_consultation_runs_to_notebook_05(tiny: str, tmp_path: Path) -> None:
    """A consultation-refined run in runs/ must not change notebook 04's tables (it is matched
    only when named), so notebook 04's results do not depend on whether notebook 05 ran first."""
    data_root = tmp_path / "consultation"
    training.synthetic_alignment_data("kto", n_items=8).save_to_disk(str(data_root / "toy" / "kto"))
    runs = tmp_path / "runs"
    p = _params(tiny, "kto", data_source="consultation", max_steps=1)
    res = training.train(p, runs_root=runs, data_root=data_root, progress=False, keep_model=False)
    found, skipped = evaluation.discover_runs(["*"], runs_dir=runs, data_root=data_root, strict=True)
    assert found == [] and skipped.empty
    found, _ = evaluation.discover_runs([res.run_id], runs_dir=runs, data_root=data_root)
    assert [r.run_id for r in found] == [res.run_id]

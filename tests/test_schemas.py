"""Each notebook's parameter schema (valuealign.schemas) against its parameters cell, the
library's defaults and the run ids and evaluation settings the embedded default produced.

The schema is where a stage's defaults live; the parameters cell is what a researcher reads and
edits in JupyterLab. These tests keep the two equal, keep the library's dataclasses
(``TrainParams``, ``EvalSettings``) on the schema's defaults, and check that moving the
defaults into the schema renamed no run and changed no evaluation.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd
import pytest

from valuealign import config, consultation_eval, evaluation, paths, schemas, thesis, training

from conftest import REPO, require_artefact

NOTEBOOKS = sorted(schemas.SCHEMAS)


def _cell_source(notebook: str) -> str:
    nb = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


# ---------------------------------------------------------------- the parameters cells


def test_every_numbered_notebook_has_a_schema() -> None:
    on_disk = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert on_disk == NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_parameters_cell_equals_the_schema(notebook: str) -> None:
    """Names, default values (and their types), ranges, choices and help of the cell."""
    differences = config.schema_differences(notebook, config.parameters_cell_specs(notebook))
    assert not differences, "\n".join(differences)


@pytest.mark.parametrize(("edit", "expected"), [
    (("max_length = 256 ", "max_length = 512 "),
     r"03_finetune: parameter 'max_length' defaults to 512 in the parameters cell but to 256"),
    (("epochs = 1.0 ", "epochs = 1 "),  # an int default would make `epochs` an integer parameter
     r"03_finetune: parameter 'epochs' defaults to 1 in the parameters cell but to 1.0"),
    (("[32, 32768]", "[64, 32768]"),
     r"03_finetune: parameter 'max_length' has range \[64.0, 32768.0\] in the parameters cell but \[32.0, 32768.0\]"),
    (("{constant, constant_with_warmup, cosine, linear}", "{constant, cosine}"),
     r"03_finetune: parameter 'train_lr_scheduler' allows \('constant', 'cosine'\) in the parameters cell"),
    (("grad_accum = 1 ", "grad_acum = 1 "),
     r"'grad_acum' is in the parameters cell but not in schemas.Finetune(.|\n)*'grad_accum' of schemas.Finetune "
     r"is missing from the parameters cell"),
])
def test_a_cell_that_differs_from_the_schema_fails_naming_notebook_and_parameter(
        edit: tuple[str, str], expected: str) -> None:
    source = _cell_source("03_finetune")
    assert source.count(edit[0]) == 1
    cell = config.parse_parameters_source(source.replace(*edit))
    differences = config.schema_differences("03_finetune", cell)
    assert re.search(expected, "\n".join(differences)), differences


def test_validation_uses_the_schema_not_a_changed_cell(tmp_path: Path) -> None:
    """A parameter added to a notebook's cell but not to its schema is not a parameter: a
    profile setting it is refused, and the schema check names it."""
    nb = json.loads((REPO / "notebooks" / "03_finetune.ipynb").read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\nwarp_speed = 9  # not in the schema [1, 10]\n"
    copy = tmp_path / "03_finetune.ipynb"
    copy.write_text(json.dumps(nb), encoding="utf-8")
    assert "warp_speed" in config.parameters_cell_specs(copy)
    assert "warp_speed" not in config.notebook_parameters(copy)
    with pytest.raises(config.ConfigError, match="unknown parameter 'warp_speed'"):
        config.validate({"warp_speed": 3}, config.notebook_parameters(copy), where=copy.name)
    assert any("warp_speed" in d for d in config.schema_differences("03_finetune", config.parameters_cell_specs(copy)))


def test_a_profile_key_no_schema_declares_names_the_file_and_key(tmp_path: Path) -> None:
    profile = tmp_path / "typo.yaml"
    shutil.copy(paths.CONFIGS / "smoke.yaml", profile)
    with profile.open("a", encoding="utf-8") as f:
        f.write("train_batchsize: 8\n")
    with pytest.raises(config.ConfigError, match=r"typo\.yaml: unknown parameter 'train_batchsize'.*train_batch_size"):
        config.parameters_for("03_finetune", profile)


def test_check_parameters_reads_the_schema() -> None:
    values = schemas.defaults(schemas.Finetune) | {"max_length": 64, "not_a_parameter": 1}
    checked = config.check_parameters("03_finetune", values)
    assert list(checked) == [f.name for f in fields(schemas.Finetune)] and checked["max_length"] == 64
    with pytest.raises(config.ConfigError, match=r"03_finetune 'max_length' = 16 is out of range \[32.0, 32768.0\]"):
        config.check_parameters("03_finetune", values | {"max_length": 16})


def test_a_list_default_is_not_shared_between_instances() -> None:
    a, b = schemas.Finetune(), schemas.Finetune()
    assert a.methods == b.methods and a.methods is not b.methods


def test_choices_and_ranges_agree_with_the_code_that_uses_them() -> None:
    """The schema's choices are written out (the schema imports no stage); the stages' own
    constants must allow exactly those values."""
    from valuealign import models, prompts

    nb03, nb04, nb05 = (schemas.specs_of(s) for s in (schemas.Finetune, schemas.Evaluate,
                                                       schemas.PublicConsultation))
    assert nb03["model_profile"].choices == tuple(models.PROFILES) == nb04["model_profile"].choices
    assert nb03["methods"].choices == training.METHODS == nb05["consultation_refine_from"].choices
    assert set(nb05["consultation_refine_method"].choices) <= set(training.METHODS)
    assert nb03["quantization"].choices == training.QUANTIZATIONS
    assert nb03["data_source"].choices == training.DATA_SOURCES
    assert nb03["train_optim"].choices == training.OPTIMIZERS
    assert nb03["train_lr_scheduler"].choices == training.SCHEDULERS
    assert nb04["eval_quantization"].choices == evaluation.EVAL_QUANTIZATIONS
    assert nb04["n_paraphrases"].high == len(prompts.PARAPHRASES)


def test_a_parameter_shared_by_several_notebooks_has_one_range() -> None:
    """One flat profile sets ``seed`` (or any shared knob) for every notebook: a value one notebook
    takes must not be refused by another (seed was [0, 1e6] in 01 and 05, [0, 2^31-1] in 02-04)."""
    seen: dict[str, dict[str, tuple]] = {}
    for name, schema in schemas.SCHEMAS.items():
        for key, spec in schemas.specs_of(schema).items():
            seen.setdefault(key, {})[name] = (spec.low, spec.high, spec.choices)
    differ = {k: v for k, v in seen.items() if len(v) > 1 and len(set(v.values())) > 1}
    assert not differ, differ


# ---------------------------------------------------------------- the library's defaults


def test_train_params_defaults_are_notebook_03s(tmp_path: Path) -> None:
    """A TrainParams given only its identity is the SFT run notebook 03's defaults plan on a CPU
    (method-specific knobs as SFT's: its learning rate, no temperature)."""
    bare = training.TrainParams(model_profile=schemas.Finetune.model_profile, method="sft", value_set="germany")
    planned = training.params_for_run(schemas.defaults(schemas.Finetune), "sft", "germany", cuda=False,
                                      data_root=tmp_path)
    assert bare == planned
    nb = schemas.defaults(schemas.Finetune)
    assert set(training.NOTEBOOK_NAMES.values()) - {"{method}_learning_rate"} <= set(nb)
    assert {f"{m}_learning_rate" for m in training.METHODS} <= set(nb)


def test_params_for_run_takes_a_missing_knob_from_the_schema(tmp_path: Path) -> None:
    given = training.params_for_run({"methods": ["dpo"]}, "dpo", "germany", cuda=False, data_root=tmp_path)
    full = training.params_for_run(schemas.defaults(schemas.Finetune), "dpo", "germany", cuda=False,
                                   data_root=tmp_path)
    assert given == full
    assert (full.max_length, full.train_batch_size, full.save_steps, full.learning_rate, full.beta) == (
        schemas.Finetune.max_length, schemas.Finetune.train_batch_size, schemas.Finetune.train_save_steps,
        schemas.Finetune.dpo_learning_rate, schemas.Finetune.dpo_beta)


def test_eval_settings_defaults_are_notebook_04s() -> None:
    assert evaluation.EvalSettings() == evaluation.EvalSettings.from_parameters(
        schemas.defaults(schemas.Evaluate), quantization="none")
    settings = evaluation.EvalSettings.from_parameters({"eval_max_options": 0, "n_paraphrases": 4}, "4bit")
    assert (settings.max_options, settings.n_paraphrases, settings.quantization) == (0, 4, "4bit")
    assert settings.n_dilemmas == schemas.Evaluate.eval_n_dilemmas


def test_notebook_05_scores_with_notebook_04s_knobs_declared_once() -> None:
    shared = ("n_paraphrases", "permutations", "eval_batch_size", "bootstrap_samples", "max_eval_items",
              "eval_max_options")
    nb04, nb05 = schemas.specs_of(schemas.Evaluate), schemas.specs_of(schemas.PublicConsultation)
    for name in shared:
        assert nb04[name] == nb05[name], name
    settings = consultation_eval.eval_settings(schemas.defaults(schemas.PublicConsultation), "none")
    assert (settings.n_dilemmas, settings.drift_new_tokens) == (0, 0)
    assert settings.max_eval_items == schemas.PublicConsultation.max_eval_items


# ---------------------------------------------------------------- run ids stay as they were

# Run ids of the embedded default's plan (notebook 03's defaults, no training data on disk),
# computed by the code before the schema existed (commit e10365b): the schema must not rename a run.
EMBEDDED_DEFAULT_RUN_IDS = {
    False: ["smollm2-135m__sft__united-states__s0__85b4022b", "smollm2-135m__dpo__united-states__s0__c1253e86",
            "smollm2-135m__kto__united-states__s0__c4fa4a62", "smollm2-135m__dist__united-states__s0__eeedacae",
            "smollm2-135m__dpo__united-states__s0__3eb9db27__from-85b4022b",
            "smollm2-135m__sft__germany__s0__9f570da7", "smollm2-135m__dpo__germany__s0__03e9ad00",
            "smollm2-135m__kto__germany__s0__f293a603", "smollm2-135m__dist__germany__s0__5ee709a5",
            "smollm2-135m__dpo__germany__s0__10995685__from-9f570da7"],
    True: ["smollm2-135m__sft__united-states__s0__210b5e7e", "smollm2-135m__dpo__united-states__s0__a0f00aba",
           "smollm2-135m__kto__united-states__s0__3a05b04b", "smollm2-135m__dist__united-states__s0__27c7095d",
           "smollm2-135m__dpo__united-states__s0__6967a4fd__from-210b5e7e",
           "smollm2-135m__sft__germany__s0__f2cd0aad", "smollm2-135m__dpo__germany__s0__6e154bb2",
           "smollm2-135m__kto__germany__s0__7093681b", "smollm2-135m__dist__germany__s0__c9e25aed",
           "smollm2-135m__dpo__germany__s0__1ec6b6be__from-f2cd0aad"],
}
THESIS_7B_RUN_IDS = [
    "llama-3.1-8b__sft__united-states__s0__8bbbf500", "llama-3.1-8b__dpo__united-states__s0__1e170c1a",
    "llama-3.1-8b__kto__united-states__s0__8d919bd1", "llama-3.1-8b__dist__united-states__s0__120c344c",
    "llama-3.1-8b__dpo__united-states__s0__af2d4b87__from-8bbbf500", "llama-3.1-8b__sft__germany__s0__f3215115",
    "llama-3.1-8b__dpo__germany__s0__e2226abf", "llama-3.1-8b__kto__germany__s0__1f194ba4",
    "llama-3.1-8b__dist__germany__s0__17ed7e53", "llama-3.1-8b__dpo__germany__s0__dd8673e3__from-f3215115"]


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_embedded_default_run_ids_are_unchanged(cuda: bool, tmp_path: Path) -> None:
    runs, _, _ = training.plan(schemas.defaults(schemas.Finetune), cuda=cuda, runs_root=tmp_path,
                               data_root=tmp_path)
    assert [r.run_id for r in runs] == EMBEDDED_DEFAULT_RUN_IDS[cuda]


def test_thesis_profile_run_ids_are_unchanged(tmp_path: Path) -> None:
    params = schemas.defaults(schemas.Finetune) | config.parameters_for("03_finetune", paths.CONFIGS / "thesis-7b.yaml")
    runs, _, _ = training.plan(params, cuda=True, runs_root=tmp_path, data_root=tmp_path)
    assert [r.run_id for r in runs] == THESIS_7B_RUN_IDS


@pytest.mark.pipeline
def test_notebook_03s_runs_are_recomputed_from_its_parameters() -> None:
    """The run ids notebook 03 recorded, from the parameters it recorded and the data on disk;
    and each run's own params.json gives its folder's name."""
    manifest = json.loads(require_artefact(paths.RUNS / "03_finetune.manifest.json").read_text())
    runs, _, _ = training.plan(manifest["parameters"], cuda=manifest["extra"]["device"] == "cuda")
    assert [r.run_id for r in runs] == manifest["extra"]["runs"]
    for run_id in manifest["extra"]["runs"]:
        recorded = json.loads((paths.RUNS / run_id / "params.json").read_text())["parameters"]
        assert training.TrainParams(**recorded).run_id == run_id


@pytest.mark.pipeline
def test_notebook_05s_refined_run_and_settings_follow_from_its_parameters() -> None:
    """The consultation-refined run id and the scoring settings notebook 05 recorded, recomputed
    from the parameters it recorded."""
    record = json.loads(require_artefact(paths.CONSULTATION / "evaluation.json").read_text())
    nb = record["parameters"]
    parent = consultation_eval.notebook03_run(nb["consultation_refine_from"], nb["consultation_refine_value_set"])
    refine = consultation_eval.refine_params(
        parent, nb["consultation_refine_method"], nb["consultation_refine_data"],
        max_steps=nb["consultation_refine_steps"], learning_rate=nb["consultation_refine_learning_rate"],
        train_batch_size=nb["consultation_refine_batch_size"], max_rows=nb["consultation_refine_max_rows"],
        seed=nb["seed"])
    assert refine.run_id == record["runs"]["survey+consultation"]
    assert asdict(consultation_eval.eval_settings(nb, refine.quantization)) == record["settings"]


@pytest.mark.pipeline
def test_notebook_04s_settings_follow_from_its_parameters() -> None:
    """``EvalSettings.from_parameters`` of the parameters notebook 04 recorded gives the settings
    hashed into its eval_hash (``eval_params`` of runs/eval_summary.parquet), for each profile's
    named evaluation."""
    summary = pd.read_parquet(require_artefact(paths.RUNS / evaluation.SUMMARY_NAME))
    pointers = sorted((paths.RUNS / thesis.EVALUATIONS_DIR_NAME).glob("*.json"))
    # `make all` names each profile's evaluation; `make test` (nbval, a fresh clone) names none, and
    # then the evaluation notebook 04 just saved is the one to check
    named = {p.name: json.loads(p.read_text())["eval_hash"] for p in pointers}
    for name, ehash in (named or {"latest": evaluation.latest_eval_hash()}).items():
        record = json.loads((paths.RUNS / evaluation.BASELINES_RUN / "eval" / ehash / "eval.json").read_text())
        hashed = json.loads(summary.loc[summary["eval_hash"] == ehash, "eval_params"].unique().item())
        settings = evaluation.EvalSettings.from_parameters(record["parameters"], quantization=hashed["quantization"])
        assert asdict(settings) == hashed, name

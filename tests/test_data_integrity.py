"""Issue 12: thesis profiles free of smoke caps, and runs tied to the data they were trained on.

Real parts throughout: the shipped profiles and notebooks' parameters cells, `datasets`
folders saved to disk, a real trl run on a tiny random Llama, the real sweep grid loader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from valuealign import config, evaluation, paths, sweep, training

THESIS_PROFILES = ["thesis-7b", "thesis-13b"]
CAPS = ["dataset_max_items", "train_max_rows", "max_steps", "max_eval_items", "eval_max_options",
        "eval_n_dilemmas", "n_paraphrases",
        # notebook 05's refinement and consultation evaluation (issue 17)
        "consultation_refine_steps", "consultation_refine_max_rows", "consultation_eval_max_statements"]


# ---------------------------------------------------------------- point 3: smoke caps
def _lifted() -> dict:
    """A strict profile with every smoke cap lifted."""
    specs = {k: s for nb in config.all_notebook_parameters().values() for k, s in nb.items()}
    out: dict = {"strict": True}
    for cap in config.SMOKE_CAPS:
        if cap.name in specs:
            out[cap.name] = int(specs[cap.name].high) if cap.full == "the range's maximum" else int(cap.full)
    return out


def test_smoke_caps_are_the_notebooks_size_knobs() -> None:
    assert [c.name for c in config.SMOKE_CAPS] == CAPS


def test_a_strict_profile_without_notebook_02_keys_is_refused(tmp_path: Path) -> None:
    """The thesis profiles as they were (notebook 03/04 keys only) left dataset_max_items = 60."""
    old = yaml.safe_load((paths.CONFIGS / "thesis-7b.yaml").read_text())
    for key in [k for k in old if k in config.notebook_parameters("02_alignment_datasets")]:
        if key not in ("seed", "value_sets"):
            del old[key]
    profile = tmp_path / "gpu.yaml"
    profile.write_text(yaml.safe_dump(old))
    with pytest.raises(config.ConfigError, match=r"gpu\.yaml.*dataset_max_items = 60.*dataset_max_items: 0"):
        config.parameters_for("02_alignment_datasets", profile)
    with pytest.raises(config.ConfigError, match="dataset_max_items"):  # whichever notebook runs
        config.parameters_for("03_finetune", profile)


@pytest.mark.parametrize("cap", CAPS)
def test_each_smoke_cap_is_refused_by_name_in_strict_mode(tmp_path: Path, cap: str) -> None:
    profile = _lifted()
    specs = {k: s for nb in config.all_notebook_parameters().values() for k, s in nb.items()}
    profile[cap] = specs[cap].default  # the smoke value
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(config.ConfigError, match=rf"p\.yaml: strict profile.*{cap} = "):
        config.parameters_for("00_survey_data", path)
    path.write_text(yaml.safe_dump({**profile, "strict": False}))  # not strict: allowed
    config.parameters_for("00_survey_data", path)


@pytest.mark.parametrize("profile", THESIS_PROFILES)
def test_thesis_profiles_lift_every_smoke_cap_and_size_the_datasets(profile: str) -> None:
    path = paths.CONFIGS / f"{profile}.yaml"
    data = config.load_profile(path)
    assert data["strict"] is True and config.smoke_caps_in_effect(data) == []
    p02 = config.parameters_for("02_alignment_datasets", path)
    assert p02["dataset_max_items"] == 0 and p02["sft_samples_per_item"] >= 16
    assert p02["valueset_max_clusters"] >= 3  # the thesis grid trains cluster-1..3
    p03 = config.parameters_for("03_finetune", path)
    assert p03["max_steps"] == -1 and p03["train_max_rows"] == 0


def test_smoke_profile_keeps_its_caps() -> None:
    smoke = config.load_profile(paths.CONFIGS / "smoke.yaml")
    assert {c.name for c, _, _ in config.smoke_caps_in_effect(smoke)} >= {"dataset_max_items", "max_steps"}
    config.parameters_for("02_alignment_datasets", paths.CONFIGS / "smoke.yaml")


def test_thesis_grid_refuses_a_step_cap_set_for_every_cell(tmp_path: Path) -> None:
    grid = yaml.safe_load((paths.CONFIGS / "grids" / "thesis.yaml").read_text())
    grid["set"] = {"max_steps": 5}
    path = tmp_path / "thesis-capped.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(config.ConfigError, match=r"thesis-capped\.yaml.*max_steps = 5"):
        sweep.load_grid(path)


# ---------------------------------------------------------------- point 4: data fingerprints
def _write_data(root: Path, test_items: tuple[str, ...] = ("toy-3",)) -> None:
    """A notebook-02-shaped data root: splits.parquet + germany/sft (a saved DatasetDict)."""
    data = training.synthetic_alignment_data("sft", n_items=8, value_set="germany")
    (root / "germany").mkdir(parents=True, exist_ok=True)
    data.save_to_disk(str(root / "germany" / "sft"))
    ids = [f"toy-{i}" for i in range(8)]
    split = ["test" if i in test_items else "validation" if i.endswith("7") else "train" for i in ids]
    pd.DataFrame({"item_id": ids, "split": split}).to_parquet(root / "splits.parquet")


def test_run_id_follows_the_training_data_and_the_splits(tmp_path: Path) -> None:
    root = tmp_path / "alignment"
    _write_data(root)
    nb = {"model_profile": "smollm2-135m", "seed": 0, "quantization": "auto"}
    first = training.params_for_run(nb, "sft", "germany", cuda=False, data_root=root)
    assert first.data_fingerprint and first.run_id.startswith("smollm2-135m__sft__germany__s0__")
    again = training.params_for_run(nb, "sft", "germany", cuda=False, data_root=root)
    assert again.run_id == first.run_id  # stable
    # datasets' cache files (written on use) are not data
    (root / "germany" / "sft" / "train" / "cache-0123456789abcdef.arrow").write_bytes(b"cache")
    assert training.params_for_run(nb, "sft", "germany", cuda=False, data_root=root).run_id == first.run_id
    # the same dataset, another split (notebook 01 or 02 re-ran): a new run id
    _write_data(root, test_items=("toy-2",))
    moved = training.params_for_run(nb, "sft", "germany", cuda=False, data_root=root)
    assert moved.run_id != first.run_id
    fp = training.data_fingerprint("germany", "sft", root=root)
    assert fp.combined == moved.data_fingerprint and fp.splits and fp.dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    from valuealign import models

    if not (paths.BUNDLED_MODEL / "tokenizer.json").exists():
        pytest.skip("bundled model not converted (make setup)")
    return str(models.save_tiny_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama"))


def test_notebook_04_refuses_a_run_trained_on_other_splits(tiny: str, tmp_path: Path) -> None:
    """Train a real run, re-split the items, and discover_runs refuses it by name."""
    root, runs = tmp_path / "alignment", tmp_path / "runs"
    _write_data(root)
    nb = {"model_profile": "smollm2-135m", "model_path": tiny, "seed": 0, "quantization": "none",
          "max_steps": 1, "train_batch_size": 2, "max_length": 128, "lora_r": 4, "lora_alpha": 8}
    p = training.params_for_run(nb, "sft", "germany", cuda=False, data_root=root)
    res = training.train(p, runs_root=runs, data_root=root, progress=False, keep_model=False)
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    assert manifest["parameters"]["data_fingerprint"] == p.data_fingerprint
    assert manifest["extra"]["data_fingerprint"]["splits"]
    found, skipped = evaluation.discover_runs([res.run_id], runs, data_root=root)
    assert [r.run_id for r in found] == [res.run_id] and skipped.empty

    _write_data(root, test_items=("toy-0",))  # toy-0 was a training item, now a test item
    with pytest.raises(evaluation.EvaluationError, match=rf"{res.run_id}.*item split.*differs"):
        evaluation.discover_runs([res.run_id], runs, data_root=root)
    with pytest.raises(evaluation.EvaluationError, match=res.run_id):
        evaluation.discover_runs(["*"], runs, strict=True, data_root=root)
    found, skipped = evaluation.discover_runs(["*"], runs, data_root=root)  # a glob: reported, not scored
    assert not found and skipped["run"].tolist() == [res.run_id]
    assert "item split" in skipped["reason"].iloc[0]
    # and notebook 03 would train anew instead of skipping the finished run
    p2 = training.params_for_run(nb, "sft", "germany", cuda=False, data_root=root)
    assert p2.run_id != res.run_id and training.run_status(runs / p2.run_id) == "new"


def test_a_run_without_a_data_fingerprint_is_refused(tmp_path: Path) -> None:
    manifest = {"parameters": {"method": "sft", "value_set": "germany", "model_profile": "smollm2-135m"}}
    with pytest.raises(training.StaleRunError, match="r1: its manifest records no training-data fingerprint"):
        training.check_run_data("r1", manifest, tmp_path)


TRAIN_PARAMS = '''methods = ["sft"]  # methods
value_sets = ["germany"]  # value sets
data_source = "survey"  # data {survey, consultation}
'''


def test_sweep_cell_changes_when_the_splits_change(tmp_path: Path) -> None:
    import nbformat

    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TRAIN_PARAMS), nbformat.v4.new_code_cell("pass")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, tmp_path / "notebooks" / "03_train.ipynb")
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"notebooks": ["03_train"], "axes": {"methods": [["sft"]]}}))
    layout = sweep.Layout(tmp_path)
    root = tmp_path / "data" / "processed" / "alignment"  # notebook 02's output under the layout
    _write_data(root)
    before = sweep.load_grid(grid, layout).cells[0].fingerprint
    assert sweep.load_grid(grid, layout).cells[0].fingerprint == before
    _write_data(root, test_items=("toy-0",))
    assert sweep.load_grid(grid, layout).cells[0].fingerprint != before


# ---------------------------------------------------------------- points 5 and 6 on the real split
@pytest.mark.pipeline
def test_real_split_keeps_batteries_together_and_reports_nearest_train_items() -> None:
    from valuealign.splits import battery_stem

    from conftest import require_artefact

    splits = pd.read_parquet(require_artefact(paths.ALIGNMENT / "splits.parquet"))
    near = pd.read_parquet(require_artefact(paths.ALIGNMENT / "split_nearest_train.parquet"))
    items = pd.read_parquet(paths.ITEMS)
    stems = items.set_index("item_id")["question"].map(battery_stem)
    sp = splits.assign(stem=splits["item_id"].map(stems))
    batteries = sp[sp["stem"] != ""].groupby("stem")["split"].nunique()
    assert len(batteries) > 20 and (batteries == 1).all()
    held = sp[sp["split"].isin(["test", "test_cluster"])]
    assert sorted(near["item_id"]) == sorted(held["item_id"])
    train = set(sp.loc[sp["split"] == "train", "item_id"])
    assert set(near["nearest_train_item_id"]) <= train
    assert not near["same_text"].any() and not near["same_battery"].any()
    assert (near["similarity"] < 0.95).all()
    clusters = pd.read_parquet(require_artefact(paths.ALIGNMENT / "group_clusters.parquet"))
    dists = pd.read_parquet(paths.DISTRIBUTIONS)
    n_train = dists[dists["item_id"].isin(train)].groupby("group")["item_id"].nunique()
    assert (clusters["n_items"].to_numpy() == n_train.loc[clusters["group"]].to_numpy()).all()

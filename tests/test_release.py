"""Tests of valuealign.release: checksums, model cards and licences of a release folder.

A tiny synthetic run (real files: a saved DatasetDict, an eval summary parquet, adapter
files as bytes) for the unit tests; the pipeline test packages this checkout's own runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import datasets
import pandas as pd
import pytest
import yaml

from valuealign import paths
from valuealign import release as R

from conftest import require_artefact

RUN = "smollm2-135m__sft__germany__s0__abcdef01"
CONS_RUN = "smollm2-135m__kto__consultation-all-everyone__s0__abcdef02"


def _save_dataset(folder: Path, rows: int) -> None:
    ds = datasets.Dataset.from_dict({"prompt": [f"q{i}" for i in range(rows)],
                                     "completion": [f"a{i}" for i in range(rows)]})
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(1))}).save_to_disk(str(folder))
    (folder / "README.md").write_text(f"card of {folder.name}\n")


def _run(runs: Path, run_id: str, method: str, value_set: str, data_source: str) -> None:
    d = runs / run_id
    (d / "adapter").mkdir(parents=True)
    (d / "adapter" / "adapter_config.json").write_text('{"r": 16}\n')
    (d / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00weights" + run_id.encode())
    (d / "manifest.json").write_text(json.dumps({
        "parameters": {"run_id": run_id, "model_profile": "smollm2-135m", "method": method,
                       "value_set": value_set, "seed": 0, "data_source": data_source},
        "git": {"commit": "0" * 40}, "extra": {"metrics": {"train_loss": 1.5}}}))
    (d / "DONE").write_text("")


@pytest.fixture
def inputs(tmp_path: Path) -> R.ReleaseInputs:
    runs, align, cons = tmp_path / "runs", tmp_path / "alignment", tmp_path / "consultation"
    _run(runs, RUN, "sft", "germany", "survey")
    _run(runs, CONS_RUN, "kto", "consultation-all-everyone", "consultation")
    _save_dataset(align / "germany" / "sft", 5)
    _save_dataset(align / "united-states" / "sft", 3)
    _save_dataset(cons / "consultation-all-everyone" / "kto", 4)
    (cons / "DATASHEET.md").write_text("# Datasheet: consultation\n")
    pd.DataFrame({
        "eval_hash": ["e1", "e1", "e1"], "run": [RUN, "_baselines", RUN], "split": ["test"] * 3,
        "target_value_set": ["germany"] * 3, "metric": ["one_minus_js", "one_minus_js", "w1"],
        "mean": [0.8123, 0.5, 0.7], "ci_low": [0.7011, 0.4, None], "ci_high": [0.9034, 0.6, None],
        "n_items": [5, 5, 1],
    }).to_parquet(runs / "eval_summary.parquet")
    lic = tmp_path / "LICENSE"
    shutil.copyfile(paths.ROOT / "LICENSE", lic)
    return R.ReleaseInputs(runs=runs, alignment=align, consultation=cons, code_licence=lic)


def test_release_has_checksums_cards_and_licences(inputs: R.ReleaseInputs, tmp_path: Path) -> None:
    out = R.build_release(out=tmp_path / "release", inputs=inputs)
    assert R.verify_release(out) == []
    # the standard tool agrees with our checksums
    subprocess.run(["sha256sum", "--quiet", "-c", R.CHECKSUMS], cwd=out, check=True)
    card = (out / "adapters" / RUN / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "license: cc-by-nc-sa-4.0" in card and "Apache-2.0" in card
    assert "| `e1` | test | germany | one_minus_js | 0.8123 | [0.7011, 0.9034] | 5 |" in card
    assert "0.5000" not in card  # the baseline's row is not this run's
    assert "| `e1` | test | germany | w1 | 0.7000 | n/a (too few items) | 1 |" in card
    assert "Not evaluated" in (out / "adapters" / CONS_RUN / "README.md").read_text()
    licences = json.loads((out / "licences.json").read_text())
    assert licences == {
        "code": "MIT", f"adapters/{RUN}": "CC-BY-NC-SA-4.0", f"adapters/{CONS_RUN}": "CC-BY-4.0",
        "datasets/alignment/germany": "CC-BY-NC-SA-4.0", "datasets/consultation": "CC-BY-4.0"}
    assert (out / "LICENSE").read_text().startswith("MIT License")
    sheet = (out / "datasets" / "alignment" / "germany" / "DATASHEET.md").read_text()
    assert "| sft | train 5, validation 1 |" in sheet and "CC-BY-NC-SA-4.0" in sheet
    assert not (out / "datasets" / "alignment" / "united-states").exists()  # no run trained on it
    reloaded = datasets.load_from_disk(str(out / "datasets" / "consultation" / "consultation-all-everyone" / "kto"))
    assert reloaded["train"].num_rows == 4
    cff = yaml.safe_load((out / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["authors"]


def test_release_is_reproducible(inputs: R.ReleaseInputs, tmp_path: Path) -> None:
    a = R.build_release([RUN], out=tmp_path / "a", inputs=inputs, with_consultation=False)
    b = R.build_release([RUN], out=tmp_path / "b", inputs=inputs, with_consultation=False)
    assert (a / R.CHECKSUMS).read_text() == (b / R.CHECKSUMS).read_text()


def test_verify_finds_changed_extra_and_unlicensed_files(inputs: R.ReleaseInputs, tmp_path: Path) -> None:
    out = R.build_release([RUN], out=tmp_path / "r", inputs=inputs)
    (out / "adapters" / RUN / "adapter_config.json").write_text('{"r": 8}\n')
    (out / "extra.txt").write_text("x")
    (out / "datasets" / "consultation" / "LICENSE.txt").unlink()
    problems = R.verify_release(out)
    assert f"adapters/{RUN}/adapter_config.json: checksum differs" in problems
    assert "extra.txt: not listed in SHA256SUMS" in problems
    assert "datasets/consultation/LICENSE.txt missing" in problems
    assert R.main(["--verify", str(out)]) == 1


def test_unfinished_or_unknown_runs_are_refused_and_leave_the_release_alone(
        inputs: R.ReleaseInputs, tmp_path: Path) -> None:
    out = R.build_release([RUN], out=tmp_path / "r", inputs=inputs)
    before = (out / R.CHECKSUMS).read_text()
    with pytest.raises(R.ReleaseError, match="no-such-run"):
        R.build_release(["no-such-run"], out=out, inputs=inputs)
    (inputs.runs / RUN / "DONE").unlink()
    with pytest.raises(R.ReleaseError, match=f"run '{RUN}'.*DONE"):
        R.build_release([RUN], out=out, inputs=inputs)
    with pytest.raises(R.ReleaseError, match="value set 'france'"):
        R.build_release([CONS_RUN], value_sets=["france"], out=out, inputs=inputs)
    assert (out / R.CHECKSUMS).read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.")] == []  # no temp left


@pytest.mark.pipeline
def test_release_of_this_checkouts_runs(tmp_path: Path) -> None:
    require_artefact(paths.RUNS / "eval_summary.parquet")
    require_artefact(paths.CONSULTATION / "DATASHEET.md")
    runs = R.finished_runs(paths.RUNS)
    assert runs, "no finished run under runs/"
    out = R.build_release(runs, out=tmp_path / "release")
    assert R.verify_release(out) == []
    evaluated = set(pd.read_parquet(paths.RUNS / "eval_summary.parquet")["run"])
    for run_id in runs:
        card = (out / "adapters" / run_id / "README.md").read_text()
        assert ("| mean |" not in card) or ("95 % CI" in card)
        if run_id in evaluated:
            assert "Not evaluated" not in card, run_id

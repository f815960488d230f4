"""Names that become paths stay inside their folder; `make nb-NN` plans its notebooks (issue 19)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from valuealign import datasets, evaluation, paths, sweep, training
from valuealign.config import ConfigError

ESCAPING = ["../../../../escaped", "..", ".", "/etc", "a/b", "a\\b", ".hidden", "", "x/../../y"]


# ---------------------------------------------------------------- safe_child itself
@pytest.mark.parametrize("name", ESCAPING)
def test_safe_child_refuses_names_that_are_not_one_plain_component(tmp_path: Path, name: str) -> None:
    with pytest.raises(paths.UnsafePathError) as err:
        paths.safe_child(tmp_path, name, "value_set")
    assert "value_set" in str(err.value) and repr(name) in str(err.value)


@pytest.mark.parametrize("name", ["united-states", "united-states-germany", "cluster-3",
                                  "smollm2-135m__dpo__germany__s0__0123abcd", "a.b_c+d=e"])
def test_safe_child_keeps_ordinary_names(tmp_path: Path, name: str) -> None:
    assert paths.safe_child(tmp_path, name, "value_set") == tmp_path / name


def test_safe_child_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(paths.UnsafePathError, match="outside"):
        paths.safe_child(root, "link", "run_id")


# ---------------------------------------------------------------- where names become paths
@pytest.mark.parametrize("value_set", ["../../../../escaped", "/etc", ".."])
def test_training_dataset_dir_refuses_escaping_value_set(tmp_path: Path, value_set: str) -> None:
    with pytest.raises(ValueError, match="value_set"):
        training.dataset_dir(value_set, "dpo", root=tmp_path / "alignment")


def test_training_refuses_escaping_value_set_before_reading_data(tmp_path: Path) -> None:
    """Notebook 03's path: the value set reaches the data folder through the fingerprint."""
    (tmp_path / "escaped" / "dpo").mkdir(parents=True)  # what `../escaped` would read
    with pytest.raises(ValueError, match="value_set"):
        training.data_fingerprint("../escaped", "dpo", root=tmp_path / "alignment")


def test_load_dataset_dict_refuses_escaping_value_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="value_set"):
        datasets.load_dataset_dict("../../escaped", "sft", root=tmp_path)


@pytest.mark.parametrize(("run_id", "eval_hash"), [("../../escaped", "abc"), ("/tmp", "abc"),
                                                    ("run", "../../../x")])
def test_eval_folder_stays_inside_runs(tmp_path: Path, run_id: str, eval_hash: str) -> None:
    with pytest.raises(ValueError, match="run_id|eval_hash"):
        evaluation.eval_folder(run_id, eval_hash, tmp_path / "runs")


def test_write_eval_writes_nothing_outside_runs(tmp_path: Path) -> None:
    import pandas as pd

    runs = tmp_path / "a" / "b" / "runs"
    runs.mkdir(parents=True)
    with pytest.raises(ValueError, match="run_id"):
        evaluation.write_eval("../../../escaped", "h", {"t": pd.DataFrame({"x": [1]})}, {}, runs)
    assert not (tmp_path / "escaped").exists()


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('tag = "a"  # the cell\'s tag'), nbformat.v4.new_code_cell("pass")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.parametrize(("grid", "what"), [
    ({"name": ".."}, "grid name"),
    ({"axes": {"tag": [".."]}}, "cell name"),
])
def test_sweep_grid_and_cell_names_stay_inside_executed(tmp_path: Path, grid: dict, what: str) -> None:
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_touch.ipynb")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"notebooks": ["01_touch"], "axes": {"tag": ["a"]}, **grid}))
    with pytest.raises(ConfigError) as err:
        sweep.load_grid(path, sweep.Layout(tmp_path))
    assert what in str(err.value) and str(path) in str(err.value) and "'..'" in str(err.value)


# ---------------------------------------------------------------- make nb-NN
def _make_plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=paths.ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_nb_plans_the_notebook_and_its_upstream_stages() -> None:
    # -B: plan as if nothing were up to date, so existing stamps do not hide the notebooks
    plan = _make_plan("-B", "nb-02", "PROFILE=smoke")
    assert plan.returncode == 0, plan.stderr
    ran = [nb for nb in ("00_survey_data", "01_value_taxonomy", "02_alignment_datasets", "03_finetune")
           if f"valuealign.notebooks --profile configs/smoke.yaml --out executed/smoke {nb} " in plan.stdout]
    assert ran == ["00_survey_data", "01_value_taxonomy", "02_alignment_datasets"], plan.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_nb_with_an_unknown_number_fails() -> None:
    plan = _make_plan("nb-99", "PROFILE=smoke")
    assert plan.returncode != 0
    assert "no notebook notebooks/99_*.ipynb" in plan.stderr


def test_dataset_stage_writes_no_value_set_outside_its_folder(tmp_path: Path) -> None:
    """Notebook 02's writer: a value-set name is one folder under the output, never `..`."""
    import pandas as pd

    out = tmp_path / "processed" / "alignment"
    members = pd.DataFrame({"value_set": ["x"], "group": ["g"], "weight": [1.0], "origin": ["parameter"]})
    empty = pd.DataFrame({"a": [0]})
    with pytest.raises(ValueError, match="value_set"):
        datasets.write_stage(out, [], members, empty, empty, None, {"../../escaped": {}},
                             {"../../escaped": {"n": 0}}, empty, empty, {}, {})
    assert not (tmp_path / "escaped").exists() and not out.exists()

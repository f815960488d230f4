"""The experiment-grid sweep on tiny synthetic notebooks (real papermill, real submitit).

Each synthetic notebook has a tagged parameters cell and writes a small output, so a test
can count how often a cell really ran. The real fine-tune notebooks are far too slow here.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from valuealign import sweep
from valuealign.config import ConfigError

TOUCH_PARAMS = '''tag = "a"  # the cell's tag
out_dir = ""  # where to write the per-tag log
fail_on = ""  # a tag that fails until out_dir/fixed exists
sleep_on = ""  # a tag that sleeps until out_dir/nosleep exists
method = "sft"  # alignment method {sft, dpo, kto}
n = 1  # a number [0, 100]
runs_dir = ""  # where to write a toy run (empty: none)
'''
TOUCH_BODY = '''import json, os, time
from pathlib import Path
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
(out / f"{tag}.pid").write_text(str(os.getpid()))
with open(out / f"{tag}.log", "a") as fh:
    fh.write(f"{method} {n}\\n")
if tag == sleep_on:
    t0 = time.time()
    while not (out / "nosleep").exists() and time.time() - t0 < 120:
        time.sleep(0.2)
if tag == fail_on and not (out / "fixed").exists():
    raise ValueError(f"tag {tag} is broken")
if runs_dir:
    run = Path(runs_dir) / f"toy__{method}__{tag}"
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(json.dumps({"parameters": {"method": method, "tag": tag}}))
    (run / "DONE").write_text("ok")
'''
REPORT_PARAMS = '''runs = []  # run ids to report on
out_dir = ""  # where to write the report
runs_dir = ""  # the runs folder
'''
REPORT_BODY = '''import fcntl, json
from pathlib import Path
import pandas as pd
rows = [{"run": r, "split": "test", "metric": m, "mean": v}
        for r in runs for m, v in (("score", len(r)), ("half", len(r) / 2))]
summary = Path(runs_dir) / "eval_summary.parquet"
with open(Path(runs_dir) / ".summary.lock", "a") as lock:  # parallel cells merge into one table
    fcntl.lockf(lock, fcntl.LOCK_EX)
    old = pd.read_parquet(summary) if summary.exists() else pd.DataFrame()
    if rows:
        new = pd.concat([old[~old["run"].isin(runs)] if len(old) else old, pd.DataFrame(rows)])
        new.to_parquet(summary)
name = "all" if len(runs) > 1 else "-".join(runs)
Path(out_dir, f"report_{name}.json").write_text(json.dumps(sorted(runs)))
'''


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# synthetic"), nbformat.v4.new_code_cell(params),
                nbformat.v4.new_code_cell(body)]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "configs" / "grids").mkdir(parents=True)
    _notebook(tmp_path / "notebooks" / "01_touch.ipynb", TOUCH_PARAMS, TOUCH_BODY)
    _notebook(tmp_path / "notebooks" / "02_report.ipynb", REPORT_PARAMS, REPORT_BODY)
    (tmp_path / "out").mkdir()
    return tmp_path


def _grid(root: Path, name: str = "g", **over) -> Path:
    grid = {"notebooks": ["01_touch"], "axes": {"tag": ["a", "b"]},
            "set": {"out_dir": str(root / "out")}}
    grid.update(over)
    path = root / "configs" / "grids" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _lines(root: Path, tag: str) -> int:
    p = root / "out" / f"{tag}.log"
    return len(p.read_text().splitlines()) if p.exists() else 0


# ---------------------------------------------------------------- validation (nothing runs)
@pytest.mark.parametrize(("over", "message"), [
    ({"axes": {"tga": ["a"]}}, "unknown axis 'tga'"),
    ({"notebooks": ["01_tuch"]}, "unknown notebook '01_tuch'"),
    ({"axes": {"tag": []}}, "axis 'tag' is empty"),
    ({"axes": {"tag": ["a", "a"]}}, "duplicate cell"),
    ({"axes": {"tag": ["a"], "method": ["sft", "sft"]}}, "duplicate cell"),
    ({"set": {"out_dri": "x"}}, "unknown parameter 'out_dri'; did you mean out_dir?"),
    ({"map": {"01_touch": {"fail_onn": "{tag}"}}}, "unknown parameter 'fail_onn'"),
    ({"map": {"02_report": {"runs": ["{tag}"]}}}, "map: unknown notebook '02_report'"),
    ({"map": {"01_touch": {"fail_on": "{tg}"}}}, "unknown placeholder"),
    ({"map": {"01_touch": {"fail_on": "{tag}-x"}}}, "a template is a whole value"),
    ({"map": {"01_touch": {"fail_on": "{cell_id}"}}}, "unknown placeholder"),
    ({"finalize": {"function": "valuealign.thesis:main"}}, "'finalize' must be {notebook: NN_name"),
    ({"axes": {"tag": ["a"], "method": ["ppo"]}}, "'ppo' is not one of"),
    ({"axes": {"tag": ["a"], "n": [1, 500]}}, "out of range"),
    ({"executor": {"slurm": {"gpus": 1}}}, "executor.slurm: unknown key(s) gpus"),
])
def test_bad_grid_is_refused_before_anything_runs(root: Path, over: dict, message: str) -> None:
    path = _grid(root, **over)
    with pytest.raises(ConfigError, match=None) as err:
        sweep.sweep(path, layout=sweep.Layout(root))
    assert message in str(err.value)
    assert str(path) in str(err.value)
    assert not (root / "out" / "a.log").exists() and not (root / "runs").exists()


def test_misspelt_parameter_names_the_valid_ones(root: Path) -> None:
    with pytest.raises(ConfigError) as err:
        sweep.load_grid(_grid(root, set={"out_dir": "x", "sleep_onn": "a"}), sweep.Layout(root))
    assert "'sleep_onn'" in str(err.value) and "valid: " in str(err.value)
    assert "sleep_on" in str(err.value).split("valid: ")[1]


def test_cells_ids_and_mapping(root: Path) -> None:
    path = _grid(root, notebooks=["01_touch", "02_report"],
                 axes={"method": ["sft", "dpo"], "tag": ["x"]},
                 map={"01_touch": {"fail_on": "{method}"},
                      "02_report": {"runs": "{run_ids}"}})
    grid = sweep.load_grid(path, sweep.Layout(root))
    assert [c.cell_id for c in grid.cells] == ["sft__x", "dpo__x"]
    p = grid.cells[1].parameters
    assert p["01_touch"] == {"fail_on": "dpo", "method": "dpo", "out_dir": str(root / "out"),
                             "tag": "x"}
    # 'set' reaches every notebook declaring the name; {run_ids} is filled in after 01 ran
    assert p["02_report"] == {"out_dir": str(root / "out"), "runs": "{run_ids}"}
    assert len({c.fingerprint for c in grid.cells}) == 2
    # {run_ids} cannot feed the first notebook: nothing has run yet
    with pytest.raises(ConfigError, match="unknown placeholder"):
        sweep.load_grid(_grid(root, map={"01_touch": {"fail_on": "{run_ids}"}}), sweep.Layout(root))


# ---------------------------------------------------------------- running
@pytest.mark.slow
def test_local_sweep_failure_retry_registry_index(root: Path, capsys) -> None:
    layout = sweep.Layout(root)
    path = _grid(root, notebooks=["01_touch", "02_report"],
                 axes={"tag": ["a", "b"]},
                 set={"out_dir": str(root / "out"), "runs_dir": str(root / "runs"), "fail_on": "b"},
                 map={"02_report": {"runs": "{run_ids}"}},
                 finalize={"notebook": "02_report", "parameters": {"runs": "{all_run_ids}"}},
                 executor={"local": {"workers": 2}})
    assert sweep.sweep(path, layout=layout, dry_run=True) == 0
    assert "2 to run" in capsys.readouterr().out and not (root / "runs" / "registry.parquet").exists()

    assert sweep.sweep(path, layout=layout) == 1  # one failed cell, the others went on
    reg = pd.read_parquet(layout.registry)
    assert list(reg["cell_id"]) == ["a", "b"]
    st = dict(zip(reg["cell_id"], reg["status"], strict=True))
    assert st == {"a": "done", "b": "failed"}
    b = reg.set_index("cell_id").loc["b"]
    assert "ValueError: tag b is broken" in b["error"] and "01_touch" in b["error"]
    failed_nb = root / "executed" / "g" / "b" / "01_touch.ipynb"
    assert failed_nb.exists() and "tag b is broken" in failed_nb.read_text()
    assert not (root / "executed" / "g" / "b" / "02_report.ipynb").exists()
    a = reg.set_index("cell_id").loc["a"]
    assert json.loads(a["run_ids"]) == ["toy__sft__a"] and a["run_folder"] == "runs/toy__sft__a"
    assert json.loads(a["metrics"]) == {"test:half": 5.5, "test:score": 11.0}
    assert json.loads((root / "out" / "report_toy__sft__a.json").read_text()) == ["toy__sft__a"]
    assert json.loads((root / "out" / "report_toy__sft__a.json").read_text()) == ["toy__sft__a"]
    index = (root / "executed" / "g" / "index.html").read_text()
    for cell in "ab":
        assert f'href="{cell}/01_touch.html"' in index
    assert "failed" in index and "_combined/02_report.html" in index

    (root / "out" / "fixed").touch()  # the bug is fixed: only b runs again
    assert sweep.sweep(path, layout=layout) == 0
    assert [_lines(root, t) for t in "ab"] == [1, 2]
    assert json.loads((root / "out" / "report_all.json").read_text()) == ["toy__sft__a",
                                                                          "toy__sft__b"]
    reg = pd.read_parquet(layout.registry)
    assert len(reg) == 2 and set(reg["status"]) == {"done"}
    assert reg.set_index("cell_id").loc["b", "attempts"] == 2

    capsys.readouterr()
    t0 = time.time()
    assert sweep.sweep(path, layout=layout) == 0
    assert time.time() - t0 < 10
    assert "nothing to do" in capsys.readouterr().out
    assert [_lines(root, t) for t in "ab"] == [1, 2]

    # a changed parameter makes the cells stale; a deleted output makes its cell incomplete
    (root / "executed" / "g" / "b" / "01_touch.ipynb").unlink()
    states = dict((c.cell_id, s) for c, s in sweep.plan(sweep.load_grid(path, layout), layout))
    assert states == {"a": "done", "b": "incomplete"}
    path = _grid(root, notebooks=["01_touch", "02_report"], axes={"tag": ["a", "b"]},
                 set={"out_dir": str(root / "out"), "runs_dir": str(root / "runs"), "n": 2},
                 map={"02_report": {"runs": "{run_ids}"}})
    states = [s for _, s in sweep.plan(sweep.load_grid(path, layout), layout)]
    assert states == ["changed"] * 2


@pytest.mark.slow
def test_killed_during_third_cell_then_resumed(root: Path) -> None:
    path = _grid(root, axes={"tag": ["a", "b", "c", "d"]},
                 set={"out_dir": str(root / "out"), "sleep_on": "c"})  # d: after the kill point
    env = {**os.environ, "VALUEALIGN_ROOT": str(root)}
    cmd = [sys.executable, "-m", "valuealign.sweep", str(path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (root / "out" / "c.log").exists():  # the third cell is sleeping now
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kernel = root / "out" / "c.pid"
        if kernel.exists():  # the kernel may live in its own session: end it by its id
            try:
                os.kill(int(kernel.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    reg = pd.read_parquet(root / "runs" / "registry.parquet")
    assert dict(zip(reg["cell_id"], reg["status"], strict=True)) == {
        "a": "done", "b": "done", "c": "running"}

    (root / "out" / "nosleep").touch()
    out = subprocess.run(cmd + ["--dry-run"], env=env, capture_output=True, text=True, check=True)
    assert "[interrupted] run  c" in out.stdout and "[       done] skip a" in out.stdout
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert [_lines(root, t) for t in "abcd"] == [1, 1, 2, 1]
    reg = pd.read_parquet(root / "runs" / "registry.parquet")
    assert list(reg["cell_id"]) == ["a", "b", "c", "d"]  # one row per cell, no duplicates
    assert set(reg["status"]) == {"done"}


# ---------------------------------------------------------------- Slurm through submitit
SLURM = {"partition": "gpu-a100", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64,
         "time_min": 360, "array_parallelism": 2, "account": "thesis",
         "setup": ["module load cuda/12.4"]}


def _check_sbatch(text: str, n: int) -> None:
    for flag in ("--partition=gpu-a100", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB",
                 "--time=360", f"--array=0-{n - 1}%2", "--account=thesis", "--job-name=valuealign-g"):
        assert f"#SBATCH {flag}\n" in text, flag
    assert "module load cuda/12.4" in text and "submitit.core._submit" in text


def test_sbatch_preview_has_the_grid_resources(root: Path) -> None:
    path = _grid(root, axes={"tag": ["a", "b", "c"]}, executor={"slurm": SLURM})
    assert sweep.sweep(path, layout=sweep.Layout(root), executor="slurm", dry_run=True) == 0
    _check_sbatch((root / "executed" / "g" / "preview.sbatch").read_text(), 3)
    assert not (root / "out" / "a.log").exists()


def test_slurm_submission_writes_the_array_script(root: Path, monkeypatch) -> None:
    """The real AutoExecutor -> sbatch path, with a stand-in ``sbatch`` that only records."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": "exit 0", "squeue": "exit 0",
                       "sbatch": f'cp "$1" {root}/submitted.sh; echo "Submitted batch job 4242"'}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    layout = sweep.Layout(root)
    path = _grid(root, axes={"tag": ["a", "b", "c"]}, executor={"slurm": SLURM})
    assert sweep.sweep(path, layout=layout, executor="slurm") == 0
    submitted = (root / "submitted.sh").read_text()
    _check_sbatch(submitted, 3)
    # the --dry-run preview is the script submitit submitted, to the letter
    preview = sweep.sbatch_script(sweep.load_grid(path, layout), 3, layout.executed / "g" / "submitit" / "%j")
    assert preview == submitted
    reg = pd.read_parquet(layout.registry)
    assert list(reg["status"]) == ["queued"] * 3
    assert list(reg["job_id"]) == ["4242_0", "4242_1", "4242_2"]
    assert not (root / "out" / "a.log").exists()  # submitted, not run


def test_submitit_local_executor_runs_the_cells(root: Path) -> None:
    layout = sweep.Layout(root)
    path = _grid(root, axes={"tag": ["a", "b"]}, executor={"slurm": SLURM})
    assert sweep.sweep(path, layout=layout, executor="submitit-local") == 0
    reg = pd.read_parquet(layout.registry)
    assert list(reg["status"]) == ["done", "done"] and reg["job_id"].notna().all()
    assert [_lines(root, t) for t in "ab"] == [1, 1]
    assert (root / "executed" / "g" / "b" / "01_touch.html").exists()
    assert 'href="b/01_touch.html"' in (root / "executed" / "g" / "index.html").read_text()


@pytest.mark.skipif(not all((sweep.Layout().notebooks / f"{n}.ipynb").exists()
                            for n in ("03_finetune", "04_evaluate")),
                    reason="notebooks 03_finetune/04_evaluate not written yet")
def test_shipped_smoke_grid_is_valid() -> None:
    grid = sweep.load_grid(sweep.Layout().root / "configs" / "grids" / "smoke.yaml")
    assert grid.name == "smoke-grid" and len(grid.cells) == 4
    assert grid.notebooks == ("03_finetune", "04_evaluate")
    assert {c.parameters["03_finetune"]["methods"][0] for c in grid.cells} == {"sft", "dpo"}


@pytest.mark.skipif(not (sweep.Layout().notebooks / "03_finetune.ipynb").exists(),
                    reason="notebook 03_finetune not written yet")
def test_run_ids_of_the_finetune_notebook_follow_training(tmp_path: Path) -> None:
    """A cell whose runs were already finished (03 skipped them) still finds them by id."""
    from valuealign import training

    layout = sweep.Layout(tmp_path)
    nb = sweep.Layout().notebooks / "03_finetune.ipynb"
    params = {"methods": ["dpo"], "value_sets": ["germany"], "seed": 3, "max_steps": 2}
    full = {k: s.default for k, s in sweep.config.notebook_parameters(nb).items()} | params
    rid = training.params_for_run(full, "dpo", "germany", data_root=layout.data_root()).run_id
    assert rid.startswith("smollm2-135m__dpo__germany__s3__")
    assert sweep._expected_runs(nb, params, layout) == []  # not finished: not a run of the cell
    (tmp_path / "runs" / rid).mkdir(parents=True)
    (tmp_path / "runs" / rid / "DONE").write_text("x")
    assert sweep._expected_runs(nb, params, layout) == []  # marked done without its adapter: not done
    (tmp_path / "runs" / rid / "adapter").mkdir()
    for name in training.ADAPTER_FILES:
        (tmp_path / "runs" / rid / "adapter" / name).write_text("{}")
    assert sweep._expected_runs(nb, params, layout) == [rid]


FIGURE_PARAMS = '''tag = "a"  # the cell's tag
'''
FIGURE_BODY = '''from valuealign import paths
paths.FIGURES.mkdir(parents=True, exist_ok=True)
(paths.FIGURES / "results-macros.json").write_text(tag)
'''


def test_a_sweep_cell_cannot_replace_the_thesis_figures(root: Path) -> None:
    """A cell re-running an evaluation notebook once overwrote figures/ (the thesis's macros)
    with its own results; its figures now go into the cell's folder."""
    _notebook(root / "notebooks" / "03_figure.ipynb", FIGURE_PARAMS, FIGURE_BODY)
    thesis_macros = root / "figures" / "results-macros.json"
    thesis_macros.parent.mkdir()
    thesis_macros.write_text("the thesis's")
    layout = sweep.Layout(root)
    path = _grid(root, notebooks=["03_figure"], axes={"tag": ["a"]}, set={})
    assert sweep.sweep(path, layout=layout) == 0
    assert thesis_macros.read_text() == "the thesis's"
    assert (root / "executed" / "g" / "a" / "figures" / "results-macros.json").read_text() == "a"


def test_registry_records_each_runs_lineage(tmp_path):
    """Issue 17: the registry shows the lineage (base -> survey -> consultation) of a cell's runs."""
    from valuealign import provenance
    from valuealign import sweep as S

    layout = S.Layout(tmp_path)
    chain = ["base:smollm2-135m", "p__sft__us__s0__aaaa", "p__kto__consultation-all__s0__bbbb__from-aaaa"]
    for i, rid in enumerate(chain[1:]):
        provenance.write_json({"extra": {"lineage": chain[: i + 2]}}, layout.runs / rid / "manifest.json")
    lineages = S.run_lineages(chain[1:] + ["never-trained"], layout)
    assert lineages == {chain[1]: chain[:2], chain[2]: chain}
    S.upsert_registry([{"grid": "g", "cell_id": "c1", "status": "done", "lineage": lineages}], layout)
    back = S.read_registry(layout)
    assert json.loads(back.loc[0, "lineage"])[chain[2]] == chain


def test_cell_metrics_come_from_the_evaluation_summary(tmp_path: Path) -> None:
    """The registry's metrics are notebook 04's summary rows of the cell's runs, on their own value
    set; a stray runs/<id>/eval/metrics.json (which no stage writes) is not read."""
    layout = sweep.Layout(tmp_path)
    rows = [("r1", "us", "us", "test", "js_alignment", 0.6), ("r1", "us", "de", "test", "js_alignment", 0.1),
            ("r2", "us", "us", "test", "js_alignment", 0.8), ("r3", "us", "us", "test", "js_alignment", 0.0)]
    layout.runs.mkdir(parents=True)
    pd.DataFrame(rows, columns=["run", "value_set", "target_value_set", "split", "metric", "mean"]).to_parquet(
        layout.runs / "eval_summary.parquet")
    assert sweep._metrics(["r1", "r2"], layout) == {"test:js_alignment": 0.7}
    stray = layout.runs / "r9" / "eval" / "metrics.json"
    stray.parent.mkdir(parents=True)
    stray.write_text('{"js_alignment": 0.99}')
    assert sweep._metrics(["r9"], layout) == {}

"""Nothing lost, nothing hidden (issue 19): locks, exact resume, outputs written only on success,
caches out of other stages' outputs, parameter and codebook checks, hygiene, seed export.

Every test here failed on the code before the fix (main at 336cf60). Training tests use the tiny
random Llama with the bundled tokenizer (real trl, peft, checkpoints), as tests/test_training.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from valuealign import evaluation, locks, models, notebooks, paths, provenance, training

REPO = Path(__file__).resolve().parents[1]
needs_model = pytest.mark.skipif(not (paths.BUNDLED_MODEL / "tokenizer.json").exists(),
                                 reason="bundled model not converted (make setup)")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "lib"), "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_holder(lock_file: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """Until the process has taken the lock (its holder record is in the lock file)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        holder = locks.read_holder(lock_file)
        if holder.get("pid") == proc.pid:
            return holder
        if proc.poll() is not None:
            pytest.fail(f"the lock holder exited early: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"{lock_file} was never taken by pid {proc.pid}")


HOLD_LOCK = """
import sys, time
from pathlib import Path
from valuealign import locks
with locks.hold(Path(sys.argv[1]), "test folder"):
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
"""


# ---------------------------------------------------------------- 1. locks


def test_sha256_tree_fails_on_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-adapter"):
        provenance.sha256_tree(tmp_path / "no-such-adapter")
    (tmp_path / "empty").mkdir()
    assert provenance.sha256_tree(tmp_path / "empty")  # an existing empty folder still hashes


def test_second_process_refuses_naming_the_holder_then_waits(tmp_path: Path) -> None:
    lock_file, release = tmp_path / ".run.lock", tmp_path / "release"
    holder = _start(HOLD_LOCK, str(lock_file), str(release))
    try:
        info = _wait_for_holder(lock_file, holder)
        assert info["host"] and "-c" in info["command"] and info["started"].endswith("Z")
        with pytest.raises(locks.LockHeldError, match=rf"locked by pid {holder.pid} on .* since .*command") as err:
            with locks.hold(lock_file, "run folder runs/x", timeout=0):
                pass
        assert "run folder runs/x" in str(err.value) and locks.TIMEOUT_ENV in str(err.value)
        with pytest.raises(locks.LockHeldError, match=r"after waiting 0\.5 s"):
            with locks.hold(lock_file, "run folder runs/x", timeout=0.5):
                pass
        release.touch()  # the holder lets go while we wait: we get the lock
        with locks.hold(lock_file, "run folder runs/x", timeout=60):
            assert locks.read_holder(lock_file)["pid"] == os.getpid()
    finally:
        release.touch()
        holder.communicate(timeout=30)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    lock_file = tmp_path / ".run.lock"
    holder = _start(HOLD_LOCK, str(lock_file), str(tmp_path / "never"))
    _wait_for_holder(lock_file, holder)
    holder.kill()
    holder.communicate(timeout=30)
    with locks.hold(lock_file, "run folder", timeout=0):
        pass


def test_notebook_runner_refuses_a_stage_another_process_runs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "executed"
    src = notebooks.config.notebook_path("00_survey_data")
    stage_lock = notebooks.stage_locks(src, out)[0][0]
    release = tmp_path / "release"
    holder = _start(HOLD_LOCK, str(stage_lock), str(release))
    try:
        _wait_for_holder(stage_lock, holder)
        rc = notebooks.main(["00_survey_data", "--out", str(out), "--stamp", str(tmp_path / "stamp")])
        err = capsys.readouterr().err
        assert rc == 3 and f"locked by pid {holder.pid}" in err and "00_survey_data" in err
        assert not (tmp_path / "stamp").exists() and not (out / "00_survey_data.ipynb").exists()
    finally:
        release.touch()
        holder.communicate(timeout=30)
    # the shared stages also lock the stage itself (two profiles write one data/processed)
    assert [p.name for p, _ in notebooks.stage_locks(src, out)] == [".00_survey_data.lock", "00_survey_data.lock"]
    assert len(notebooks.stage_locks(notebooks.config.notebook_path("03_finetune"), out)) == 1


def test_sweep_cell_held_by_another_sweep_is_left_to_it(tmp_path: Path) -> None:
    from valuealign import sweep

    root = tmp_path
    (root / "notebooks").mkdir()
    (root / "configs" / "grids").mkdir(parents=True)
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('tag = "a"  # the tag'), nbformat.v4.new_code_cell("x = 1")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "01_touch.ipynb")
    grid_file = root / "configs" / "grids" / "g.yaml"
    grid_file.write_text("notebooks: [01_touch]\naxes: {tag: [a]}\n")
    layout = sweep.Layout(root)
    cell = sweep.load_grid(grid_file, layout).cells[0]
    lock_file = locks.sibling_lock(sweep.cell_dir(cell, layout))
    release = tmp_path / "release"
    holder = _start(HOLD_LOCK, str(lock_file), str(release))
    try:
        _wait_for_holder(lock_file, holder)
        row = sweep.run_cell(cell, layout)
        assert row["status"] == "locked" and f"pid {holder.pid}" in row["error"]
        assert cell.cell_id not in sweep.registry_rows(cell.grid, layout)  # the holder's record is untouched
    finally:
        release.touch()
        holder.communicate(timeout=30)


# ---------------------------------------------------------------- 1-2. training: locks, DONE, exact resume


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(models.save_tiny_random_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama"))


def _on_disk(tmp_path: Path, method: str = "sft") -> Path:
    """Synthetic alignment data saved as notebook 02 saves it: <root>/toy/<method>/."""
    root = tmp_path / "alignment"
    training.synthetic_alignment_data(method, n_items=4).save_to_disk(str(root / "toy" / method))
    return root


def _params(tiny: str, data_root: Path | None = None, method: str = "sft", **kw) -> training.TrainParams:
    base = dict(model_profile="smollm2-135m", model_path=tiny, method=method, value_set="toy", seed=0,
                quantization="none", lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=5e-3,
                max_steps=4, train_batch_size=2, max_length=128, save_steps=2)
    if data_root is not None:
        base["data_fingerprint"] = training.data_fingerprint("toy", method, root=data_root).combined
    base.update(kw)
    return training.TrainParams(**base)


TRAIN_IN_SUBPROCESS = """
import sys, time, warnings
from pathlib import Path
from valuealign import training
from transformers import TrainerCallback
tiny, data_root, runs_root, fingerprint, timeout, release = sys.argv[1:7]
class Slow(TrainerCallback):  # holds the lock (mid-training) until the test has seen the others try
    def on_step_end(self, args, state, control, **kw):
        t0 = time.time()
        while not Path(release).exists() and time.time() - t0 < 300:
            time.sleep(0.1)
p = training.TrainParams(model_profile="smollm2-135m", model_path=tiny, method="sft", value_set="toy", seed=0,
                         quantization="none", lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=5e-3,
                         max_steps=4, train_batch_size=2, max_length=128, save_steps=2,
                         data_fingerprint=fingerprint)
try:
    res = training.train(p, runs_root=Path(runs_root), data_root=Path(data_root), progress=False,
                         callbacks=[Slow()], lock_timeout=float(timeout))
    print("RESULT", res.status, res.global_step)
except Exception as err:
    print("ERROR", type(err).__name__, err)
"""


@needs_model
@pytest.mark.slow
def test_two_processes_training_one_run_folder(tiny: str, tmp_path: Path) -> None:
    """Two trainings of one run at once: the second refuses naming the first (or, with a lock
    timeout, waits and then finds the run done); the run is done, with its adapter, and found."""
    data_root, runs_root = _on_disk(tmp_path), tmp_path / "runs"
    p = _params(tiny, data_root)
    release = tmp_path / "release"
    args = (tiny, str(data_root), str(runs_root), p.data_fingerprint)
    first = _start(TRAIN_IN_SUBPROCESS, *args, "0", str(release))
    lock_file = locks.sibling_lock(runs_root / p.run_id)
    try:
        _wait_for_holder(lock_file, first)
        refused = _start(TRAIN_IN_SUBPROCESS, *args, "0", str(release))
        waiting = _start(TRAIN_IN_SUBPROCESS, *args, "300", str(release))
        out_refused = refused.communicate(timeout=300)[0]
    finally:
        release.touch()
    out_waiting, out_first = (proc.communicate(timeout=600)[0] for proc in (waiting, first))
    assert "RESULT trained 4" in out_first, out_first
    assert f"ERROR LockHeldError run folder {paths.relative(runs_root / p.run_id)} is locked by pid {first.pid}" \
        in out_refused, out_refused
    assert "RESULT skipped 4" in out_waiting, out_waiting
    run_dir = runs_root / p.run_id
    assert training.run_status(run_dir) == "finished" and training.has_adapter(run_dir)
    found, skipped = evaluation.discover_runs(runs_dir=runs_root, data_root=data_root)
    assert [r.run_id for r in found] == [p.run_id] and skipped.empty


def test_a_run_marked_done_without_adapter_is_not_done_and_is_reported(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "smollm2-135m__kto__united-states__s0__abcdef12"
    run_dir.mkdir(parents=True)
    (run_dir / "DONE").write_text("2026-12-01T00:00:00Z\n")
    (run_dir / "manifest.json").write_text(json.dumps({"parameters": {"method": "kto"}}))
    assert training.run_status(run_dir) == "broken"
    with pytest.raises(evaluation.EvaluationError, match=r"marked done .* without a complete adapter.*kto__united-states"):
        evaluation.discover_runs(runs_dir=tmp_path / "runs")
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")  # weights still missing
    assert training.run_status(run_dir) == "broken"


@needs_model
@pytest.mark.slow
def test_a_done_run_that_lost_its_adapter_is_completed_again(tiny: str, tmp_path: Path) -> None:
    data = training.synthetic_alignment_data("sft", n_items=4)
    p = _params(tiny)
    first = training.train(p, data, runs_root=tmp_path, progress=False, keep_model=False)
    (first.run_dir / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.warns(UserWarning, match="marked done but has no complete adapter"):
        again = training.train(p, data, runs_root=tmp_path, progress=False, keep_model=False)
    assert again.status == "resumed" and again.global_step == again.optimizer_steps == 4
    assert training.run_status(first.run_dir) == "finished"


class _Injected(RuntimeError):
    """The failure a test injects at one phase of a run."""


def _adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference_run(tiny: str, tmp_path_factory: pytest.TempPathFactory) -> training.RunResult:
    data = training.synthetic_alignment_data("sft", n_items=4)
    return training.train(_params(tiny), data, runs_root=tmp_path_factory.mktemp("ref"), progress=False,
                          eval_rows=4, examples=1, keep_model=False)


@needs_model
@pytest.mark.slow
@pytest.mark.parametrize("phase", training.PHASES)
def test_a_failure_after_the_last_checkpoint_resumes_to_the_planned_steps(
        tiny: str, tmp_path: Path, phase: str, reference_run: training.RunResult) -> None:
    """A failure at each point between the last checkpoint and DONE (training done, evaluation
    (an out-of-memory error there), adapter saved, log, examples, manifest written); the re-run
    ends at exactly 4 steps of 4 with the uninterrupted run's adapter."""
    data = training.synthetic_alignment_data("sft", n_items=4)
    p = _params(tiny)

    def fail(at: str) -> None:
        if at == phase:
            if phase == "evaluating":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            raise _Injected(f"injected at {at}")

    expected = training.TrainingOOMError if phase == "evaluating" else _Injected
    with pytest.raises(expected):
        training.train(p, data, runs_root=tmp_path, progress=False, eval_rows=4, examples=1, phase_hook=fail)
    run_dir = tmp_path / p.run_id
    assert training.run_status(run_dir) == "unfinished"
    resumed = training.train(p, data, runs_root=tmp_path, progress=False, eval_rows=4, examples=1)
    assert resumed.status == "resumed" and resumed.resumed_from == "checkpoint-4"
    assert resumed.global_step == resumed.optimizer_steps == reference_run.global_step == 4
    assert list(resumed.log["step"]) == [1, 2, 3, 4]
    manifest = provenance.read_json(run_dir / "manifest.json")["extra"]
    assert manifest["global_step"] == manifest["optimizer_steps"] == 4
    ref, got = _adapter_tensors(reference_run.run_dir), _adapter_tensors(run_dir)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert resumed.metrics["final_loss"] == reference_run.metrics["final_loss"]
    assert training.run_status(run_dir) == "finished" and not list(run_dir.glob("adapter.tmp*"))


KILL_AT_PHASE = """
import os, signal, sys
from pathlib import Path
from valuealign import training
tiny, runs_root, phase = sys.argv[1:4]
data = training.synthetic_alignment_data("sft", n_items=4)
p = training.TrainParams(model_profile="smollm2-135m", model_path=tiny, method="sft", value_set="toy", seed=0,
                         quantization="none", lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=5e-3,
                         max_steps=4, train_batch_size=2, max_length=128, save_steps=2)
def kill(at):
    if at == phase:
        os.kill(os.getpid(), signal.SIGKILL)
training.train(p, data, runs_root=Path(runs_root), progress=False, phase_hook=kill)
"""


@needs_model
@pytest.mark.slow
def test_a_process_killed_while_saving_the_adapter_resumes_to_the_planned_steps(tiny: str, tmp_path: Path) -> None:
    proc = _start(KILL_AT_PHASE, tiny, str(tmp_path), "adapter_saved")
    proc.communicate(timeout=600)
    assert proc.returncode == -9
    p = _params(tiny)
    assert training.run_status(tmp_path / p.run_id) == "unfinished"
    resumed = training.train(p, training.synthetic_alignment_data("sft", n_items=4), runs_root=tmp_path,
                             progress=False, keep_model=False)
    assert resumed.global_step == resumed.optimizer_steps == 4


# ---------------------------------------------------------------- 3. stage 00 writes only on success


def _survey_tree(tmp_path: Path) -> Path:
    """A repository tree for stage 00 (notebooks, configs, reference data linked) whose data/raw
    holds only a two-group survey described by a YAML codebook (the README's "another survey")."""
    import numpy as np
    import pandas as pd

    root = tmp_path / "tree"
    for rel in ("notebooks", "configs", "data/reference"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(REPO / rel)
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    pd.DataFrame({"region": rng.choice(["North", "South"], 200), "wt": 1.0,
                  "pride": rng.choice([1, 2, 3], 200), "trust": rng.choice([1, 2], 200)}).to_csv(
        raw / "nzavs.csv", index=False)
    (raw / "nzavs.yaml").write_text(
        "name: nzavs\nfile: nzavs.csv\ngroup: region\nweight: wt\nmin_respondents: 10\nitems:\n"
        "  - column: pride\n    question: How proud are you?\n    options: {1: Very, 2: Somewhat, 3: Not}\n"
        "    ordinal: true\n"
        "  - column: trust\n    question: Can most people be trusted?\n    options: {1: 'Yes', 2: 'No'}\n")
    return root


def _run_stage00(root: Path, *params: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "valuealign.notebooks", "00_survey_data", "--profile",
            str(REPO / "configs" / "smoke.yaml"), "--out", str(root / "executed"),
            "-p", "sources", "[codebook]", "-p", "codebook_specs", "[nzavs.yaml]", *params]
    return subprocess.run(args, env={**_env(), "VALUEALIGN_ROOT": str(root), "MPLBACKEND": "Agg"},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_stage00_on_a_two_group_codebook_survey_writes_its_outputs_and_figures(tmp_path: Path) -> None:
    """The README's "another survey" path with two groups used to crash in the example-items
    figure ("Number of columns must be a positive integer, not 0") after overwriting data/processed."""
    import pandas as pd

    root = _survey_tree(tmp_path)
    proc = _run_stage00(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    processed = root / "data" / "processed"
    items = pd.read_parquet(processed / "items.parquet")
    assert sorted(items["item_id"]) == ["nzavs-pride", "nzavs-trust"]
    assert set(pd.read_parquet(processed / "distributions.parquet")["group"]) == {"North", "South"}
    for name in ("surveys-coverage", "surveys-example-items"):
        assert (root / "figures" / f"{name}.pdf").exists(), name
    manifest = provenance.read_json(processed / "00_survey_data.manifest.json")
    assert manifest["outputs"]["data/processed/items.parquet"] == provenance.sha256_file(processed / "items.parquet")
    assert not list(processed.glob(".staging-*"))


def test_staged_outputs_touch_nothing_until_commit(tmp_path: Path) -> None:
    target = tmp_path / "items.parquet"
    target.write_text("previous run")
    leftover = tmp_path / ".staging-00_survey_data"
    leftover.mkdir()
    (leftover / "0-items.parquet").write_text("from a killed run")
    staged = provenance.StagedOutputs("00_survey_data", root=tmp_path)
    assert not (leftover / "0-items.parquet").exists()  # a killed run's leftovers are cleaned up
    staged.path(target).write_text("new run")
    assert target.read_text() == "previous run"  # a failure before commit leaves it as it was
    other = tmp_path / "distributions.parquet"
    staged.path(other)  # never written: commit refuses and moves nothing
    with pytest.raises(FileNotFoundError, match="distributions.parquet"):
        staged.commit()
    assert target.read_text() == "previous run"
    staged.path(other).write_text("new")
    assert staged.commit() == [target, other] and target.read_text() == "new run"
    assert not leftover.exists()


# ---------------------------------------------------------------- 4. caches out of stage 02's outputs


@needs_model
@pytest.mark.slow
def test_training_leaves_stage02_outputs_and_their_hash_unchanged(tiny: str, tmp_path: Path) -> None:
    data_root = _on_disk(tmp_path)
    before = provenance.sha256_tree(data_root)
    files_before = sorted(p.relative_to(data_root) for p in data_root.rglob("*"))
    p = _params(tiny, data_root)
    res = training.train(p, runs_root=tmp_path / "runs", data_root=data_root, progress=False,
                         eval_rows=2, examples=1, keep_model=False)
    assert res.global_step == 4
    assert sorted(p.relative_to(data_root) for p in data_root.rglob("*")) == files_before
    assert provenance.sha256_tree(data_root) == before


# ---------------------------------------------------------------- 5. parameters


@pytest.mark.parametrize(("values", "message"), [
    ([-5, 10], r"'taxonomy_sweep_sizes' element 0 \(-5\) is out of range \[2, 10000\]"),
    ([5, 10**9], r"'taxonomy_sweep_sizes' element 1 \(1000000000\) is out of range \[2, 10000\]"),
    ([5, "1e9"], r"'taxonomy_sweep_sizes' element 1 \('1e9'\) must be an integer \(YAML reads 1e9 as text"),
    ([5, True], r"'taxonomy_sweep_sizes' element 1 \(True\) must be an integer"),
])
def test_list_elements_are_checked_against_the_declared_type_and_range(values: list, message: str) -> None:
    with pytest.raises(notebooks.config.ConfigError, match=message):
        notebooks.config.parameters_for("01_value_taxonomy", {"taxonomy_sweep_sizes": values})
    ok = notebooks.config.parameters_for("01_value_taxonomy", {"taxonomy_sweep_sizes": [2, 10000]})
    assert ok == {"taxonomy_sweep_sizes": [2, 10000]}


def test_a_profile_that_sets_a_key_twice_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "twice.yaml"
    profile.write_text("seed: 0\nmax_steps: 8\nlora_r: 8\nmax_steps: 800\n")
    with pytest.raises(notebooks.config.ConfigError, match=r"twice.yaml: .*duplicate key 'max_steps' "
                                                            r"\(first on line 2, again on line 4\)"):
        notebooks.config.load_profile(profile)


@pytest.mark.parametrize(("value", "message"), [
    ("[1, 2", r"^error: -p taxonomy_sweep_sizes '\[1, 2': not a valid YAML value \("),
    ("{a: 1, a: 2}", r"^error: -p taxonomy_sweep_sizes '\{a: 1, a: 2\}': not a valid YAML value \(.*duplicate key 'a'"),
    ("[-5, 1e9]", r"^error: .*'taxonomy_sweep_sizes' element 0 \(-5\) is out of range"),
])
def test_a_bad_dash_p_value_is_one_clear_line(tmp_path: Path, value: str, message: str, capsys) -> None:
    rc = notebooks.main(["01_value_taxonomy", "--out", str(tmp_path), "-p", "taxonomy_sweep_sizes", value])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert __import__("re").search(message, err), err


# ---------------------------------------------------------------- 7. hygiene: failure summary


def test_the_failure_summary_keeps_the_line_with_the_real_error(tmp_path: Path, capsys) -> None:
    """A long traceback (a deep call stack) used to be cut at 2000 characters from its start."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("depth = 40  # stack depth [1, 100]"),
                nbformat.v4.new_code_cell("def f(n):\n    if n == 0:\n        raise ValueError('column x of "
                                          "data.csv: the real error')\n    return f(n - 1)\nf(depth)")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_deep_failure.ipynb"
    nbformat.write(nb, path)
    profile = tmp_path / "empty.yaml"
    profile.write_text("{}\n")
    rc = notebooks.main([str(path), "--out", str(tmp_path / "out"), "--profile", str(profile)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.splitlines()[0] == ("error: notebook " + str(path) + " failed: ValueError: column x of data.csv: "
                                   "the real error (in cell [2])")
    assert err.rstrip().endswith("ValueError: column x of data.csv: the real error")


# ---------------------------------------------------------------- 6. codebook YAML validation

CODEBOOK = """name: nzavs
file: nzavs.csv
group: region
weight: wt
min_respondents: 5
items:
  - column: pride
    question: How proud are you?
    options: {1: Very, 2: Somewhat, 3: Not}
    ordinal: true
"""


def _codebook(tmp_path: Path, text: str, weights: list[float] | None = None) -> Path:
    import pandas as pd

    n = 40
    pd.DataFrame({"region": ["North", "South"] * (n // 2), "wt": weights or [1.0] * n,
                  "pride": [1, 2, 3, 1] * (n // 4)}).to_csv(tmp_path / "nzavs.csv", index=False)
    (tmp_path / "nzavs.yaml").write_text(text)
    return tmp_path / "nzavs.yaml"


@pytest.mark.parametrize(("old", "new", "message"), [
    ("{1: Very, 2: Somewhat, 3: Not}", "{yes: Very, 2: Somewhat, 3: Not}", r"items\[0\] \(pride\): key 'options': code True is not a number"),
    ("{1: Very, 2: Somewhat, 3: Not}", "{1: Very, 2: Somewhat, 3: }", r"items\[0\] \(pride\): key 'options': code 3 has no label"),
    ("{1: Very, 2: Somewhat, 3: Not}", "{1: 'Yes', 2: No, 3: Not}", r"key 'options': code 2 has no label \(False\)"),
    ("{1: Very, 2: Somewhat, 3: Not}", "{1: Very, 2: Very, 3: Not}", r"key 'options': label\(s\) Very given twice"),
    ("{1: Very, 2: Somewhat, 3: Not}", "{1: Very}", r"key 'options' must map at least two numeric codes"),
    ("ordinal: true", "ordinal: maybe", r"items\[0\] \(pride\): key 'ordinal' must be true or false, got 'maybe'"),
    ("question: How proud are you?", "question: ''", r"key 'question' must be a non-empty string"),
    ("weight: wt", "weight: 3", r"key 'weight' must be a non-empty string \(or left out\), got 3"),
    ("min_respondents: 5", "min_respondents: 0", r"key 'min_respondents' must be an integer >= 1, got 0"),
    ("min_respondents: 5", "min_respondents: 5\nweigth: wt", r"unknown key\(s\) weigth"),
    ("name: nzavs", "name: ../escape", r"key 'name' '../escape' must be a slug"),
])
def test_bad_codebook_values_are_refused_naming_file_and_key(tmp_path: Path, old: str, new: str,
                                                             message: str) -> None:
    from valuealign import surveys

    path = _codebook(tmp_path, CODEBOOK.replace(old, new))
    with pytest.raises(surveys.SurveyDataError, match=r"nzavs.yaml: .*" + message):
        surveys.load_codebook_survey(path)


def test_zero_weights_never_make_groups_vanish_silently(tmp_path: Path) -> None:
    from valuealign import surveys

    path = _codebook(tmp_path, CODEBOOK, weights=[0.0] * 40)
    with pytest.raises(surveys.SurveyDataError, match=r"nzavs.csv: column 'wt': every weight is 0"):
        surveys.load_codebook_survey(path, on_invalid="drop")
    south_zero = [1.0, 0.0] * 20  # one group's weights all 0: recorded, and an error in strict mode
    path = _codebook(tmp_path, CODEBOOK, weights=south_zero)
    data = surveys.load_codebook_survey(path, on_invalid="drop")
    assert set(data.distributions["group"]) == {"North"}
    row = data.dropped[data.dropped["row"] == "group South"].iloc[0]
    assert row["column"] == "wt" and "all have weight 0" in row["reason"]
    with pytest.raises(surveys.SurveyDataError, match=r"group South, column 'wt'.*all have weight 0"):
        surveys.load_codebook_survey(path, on_invalid="raise")
    ok = surveys.load_codebook_survey(_codebook(tmp_path, CODEBOOK))
    assert set(ok.distributions["group"]) == {"North", "South"}


# ---------------------------------------------------------------- 8. seed export from a run


def _synthetic_run(runs: Path, run_id: str = "smollm2-135m__sft__toy__s0__0123abcd") -> Path:
    run = runs / run_id
    run.mkdir(parents=True)
    (run / "examples.json").write_text(json.dumps([
        {"item_id": "goqa-1", "question": "Here is a question from an opinion survey:\nShould cities build "
         "more housing?\n\nPossible answers:\nA. Yes, much more\nB. No\n\nGive just the letter of your answer "
         "(A or B).", "target": "A", "before": "B. No", "after": "A. Yes, much more"},
        {"item_id": "goqa-2", "question": "Here is a question from an opinion survey:\nIs voting a duty?\n\n"
         "Possible answers:\nA. A duty\nB. A choice\n\nGive just the letter of your answer (A or B).",
         "target": "B", "before": "A", "after": "B"},
    ]))
    (run / "DONE").write_text("x\n")
    return run


def test_seed_export_resolves_a_run_id_and_reads_its_examples(tmp_path: Path, monkeypatch, capsys) -> None:
    import pandas as pd

    from valuealign import consultation

    runs = tmp_path / "runs"
    run = _synthetic_run(runs)
    monkeypatch.setattr(paths, "RUNS", runs)
    out = tmp_path / "seeds.csv"
    assert consultation.main(["seed", "--run", run.name, "--out", str(out)]) == 0, capsys.readouterr().err
    assert list(pd.read_csv(out)["comment_text"]) == ["Should cities build more housing? - Yes, much more",
                                                      "Is voting a duty? - A choice"]
    sources = pd.read_csv(out.with_name("seeds.sources.csv"))
    assert list(sources["source"]) == [f"{paths.relative(run / 'examples.json')}#goqa-1",
                                       f"{paths.relative(run / 'examples.json')}#goqa-2"]
    assert consultation.main(["seed", "--run", str(run), "--out", str(out), "--column", "before"]) == 0
    assert list(pd.read_csv(out)["comment_text"]) == ["Should cities build more housing? - No",
                                                      "Is voting a duty? - A duty"]
    assert consultation.main(["seed", "--run", run.name[:-2] + "xx", "--out", str(out)]) == 2
    assert "not found: neither a folder nor a run id under" in capsys.readouterr().err


@pytest.mark.pipeline
def test_seed_export_works_on_a_run_made_by_the_pipeline(tmp_path: Path) -> None:
    import pandas as pd

    from conftest import require_artefact

    require_artefact(paths.RUNS / "03_finetune.manifest.json")
    done = sorted(d.name for d in paths.RUNS.iterdir() if training.run_status(d) == "finished"
                  and (d / "examples.json").exists())
    assert done, "no finished run with examples.json under runs/"
    out = tmp_path / "seeds.csv"
    proc = subprocess.run([sys.executable, "-m", "valuealign.consultation", "seed", "--run", done[0],
                           "--out", str(out)], env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    seeds = pd.read_csv(out)["comment_text"]
    assert len(seeds) >= 1 and seeds.str.contains(" - ").all()


# ---------------------------------------------------------------- 7. hygiene

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from valuealign import provenance
with provenance.atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_text("half written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporaries_left_by_a_kill_are_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "items.parquet"
    proc = _start(KILLED_WRITER, str(target))
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".items.parquet.")]
    assert len(left) == 1 and not target.exists()
    live = tmp_path / (provenance.temp_prefix(target) + "mine.tmp")  # this (live) process's: kept
    live.write_text("in use")
    provenance.write_text("whole", target)
    assert target.read_text() == "whole" and not left[0].exists() and live.exists()


def test_stage_folders_get_normal_permissions_and_lose_a_killed_runs_leftovers(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        target = tmp_path / "alignment"
        dead = _start("pass")
        dead.communicate(timeout=60)
        stale = tmp_path / (provenance.temp_prefix(target).replace(f".{os.getpid()}.", f".{dead.pid}.") + "x")
        stale.mkdir()
        tmp = provenance.make_temp_dir(target)
        assert (tmp.stat().st_mode & 0o777) == 0o755  # tempfile.mkdtemp alone makes 0700
        assert not stale.exists()
    finally:
        os.umask(old_umask)


@pytest.mark.pipeline
def test_the_alignment_folder_is_readable_by_the_group() -> None:
    from conftest import require_artefact

    folder = require_artefact(paths.ALIGNMENT)
    assert folder.stat().st_mode & 0o050 == 0o050, oct(folder.stat().st_mode)


def _polis_export(folder: Path, voters: list[int]) -> Path:
    folder.mkdir(parents=True)
    header = "timestamp,datetime,comment-id,author-id,agrees,disagrees,moderated,comment-body"
    votes = [(1000 + 3 * p + c, c, p, 1 if (p + c) % 2 else -1) for p in voters for c in range(3)]
    rows = [f'0,x,{c},0,{sum(v[3] == 1 for v in votes if v[1] == c)},'
            f'{sum(v[3] == -1 for v in votes if v[1] == c)},1,"Statement {c}"' for c in range(3)]
    (folder / "comments.csv").write_text("\n".join([header, *rows]) + "\n")
    (folder / "votes.csv").write_text("\n".join(["timestamp,datetime,comment-id,voter-id,vote"]
                                                + [f"{t},x,{c},{p},{v}" for t, c, p, v in votes]) + "\n")
    (folder / "summary.csv").write_text("topic,Test topic\n")
    return folder


def test_a_one_participant_conversation_fails_consultation_check(tmp_path: Path, capsys) -> None:
    from valuealign import consultation

    one = _polis_export(tmp_path / "one", [7])
    assert consultation.main(["check", str(one)]) == 2
    assert "1 participant(s) with votes: opinion groups and consensus need at least 2" in capsys.readouterr().err
    assert consultation.main(["check", str(_polis_export(tmp_path / "two", [7, 8]))]) == 0


@pytest.mark.parametrize(("shares", "reason"), [
    ([True, False], "shares must be numbers, got True (bool)"),
    (["0.5", "0.5"], "shares must be numbers, got '0.5' (str)"),
    ([0.5, None], "shares must be numbers, got None (NoneType)"),
])
def test_boolean_or_string_shares_are_refused(shares: list, reason: str) -> None:
    from valuealign import surveys

    assert surveys.validate_shares(shares, 2, 0.02) == (None, reason)
    ok, why = surveys.validate_shares([0.25, 0.75], 2, 0.02)
    assert why == "" and list(ok) == [0.25, 0.75]


@pytest.mark.parametrize("group", ["", "  ", None])
def test_empty_group_names_are_refused(group) -> None:
    import pandas as pd

    from valuealign import surveys

    items = pd.DataFrame([{c: None for c in surveys.ITEM_COLUMNS}]).assign(item_id="i1", options=[["a", "b"]])
    dists = pd.DataFrame([{c: None for c in surveys.DIST_COLUMNS}]).assign(item_id="i1", group=group,
                                                                            shares=[[0.5, 0.5]])
    with pytest.raises(surveys.SurveyDataError, match="item 'i1' has a row with an empty group name"):
        surveys.check_schema(items, dists)
    surveys.check_schema(items, dists.assign(group="Germany"))


@pytest.mark.pipeline
def test_every_run_the_pipeline_marked_done_has_its_adapter_and_is_evaluated() -> None:
    from conftest import require_artefact

    require_artefact(paths.RUNS / "03_finetune.manifest.json")
    marked = sorted(d for d in paths.RUNS.iterdir() if d.is_dir() and (d / training.DONE).exists())
    assert marked and all(training.has_adapter(d) for d in marked), \
        [d.name for d in marked if not training.has_adapter(d)]
    evaluation.discover_runs()  # raises on a run marked done without its adapter
    for manifest in paths.RUNS.glob("_baselines/eval/*/manifest.json"):  # no evaluation left one out for it
        skipped = provenance.read_json(manifest).get("extra", {}).get("skipped_runs", [])
        assert not [s for s in skipped if "adapter" in s.get("reason", "")], (manifest, skipped)


@pytest.mark.slow
def test_two_runs_of_one_stage_at_once_the_second_refuses_naming_the_first(tmp_path: Path) -> None:
    """As two `make all` in one checkout: the same notebook under the same profile, at once."""
    root = _survey_tree(tmp_path)
    args = [sys.executable, "-m", "valuealign.notebooks", "00_survey_data", "--profile",
            str(REPO / "configs" / "smoke.yaml"), "--out", str(root / "executed"),
            "-p", "sources", "[codebook]", "-p", "codebook_specs", "[nzavs.yaml]"]
    env = {**_env(), "VALUEALIGN_ROOT": str(root), "MPLBACKEND": "Agg"}
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_holder(root / "executed" / ".00_survey_data.lock", first)
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    out_first, err_first = first.communicate(timeout=600)
    assert first.returncode == 0, err_first[-3000:]
    assert second.returncode == 3
    assert f"is locked by pid {first.pid} on " in second.stderr and "valuealign.notebooks" in second.stderr
    assert (root / "data" / "processed" / "items.parquet").exists()

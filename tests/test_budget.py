"""GPU budget of a grid (valuealign.budget via valuealign.sweep): estimate, report, refusal.

A synthetic training notebook (the parameters notebook 03 has), a real saved dataset and a
benchmark result file in a tmp tree: the arithmetic is checked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import nbformat
import pytest
import yaml

from valuealign import budget, sweep
from valuealign.config import ConfigError

TRAIN_PARAMS = '''methods = ["sft"]  # methods to train
value_sets = ["germany"]  # value sets
data_source = "survey"  # training data {survey, consultation}
model_profile = "llama-3.1-8b"  # base model
max_steps = -1  # optimizer steps (-1: epochs) [-1, 1000]
epochs = 2.0  # passes over the rows [0.01, 100.0]
train_batch_size = 2  # rows per step [1, 64]
grad_accum = 1  # accumulation [1, 64]
max_length = 1024  # token limit [32, 32768]
train_max_rows = 0  # rows per run (0: all) [0, 1000000]
out_dir = ""  # where the notebook leaves a mark
'''
TRAIN_BODY = '''from pathlib import Path
Path(out_dir).mkdir(parents=True, exist_ok=True)
(Path(out_dir) / ("-".join(methods) + ".ran")).write_text("ok")
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# train"), nbformat.v4.new_code_cell(TRAIN_PARAMS),
                nbformat.v4.new_code_cell(TRAIN_BODY)]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "03_train.ipynb")
    # 10 rows of 36 + 4 = 40 characters: 10 tokens per row at 4 characters per token
    ds = datasets.Dataset.from_dict({"prompt": ["p" * 36] * 10, "completion": ["abcd"] * 10})
    datasets.DatasetDict({"train": ds}).save_to_disk(
        str(tmp_path / "data" / "processed" / "alignment" / "germany" / "sft"))
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "gpu_qlora.json").write_text(json.dumps({"rows": [
        {"model": "8b", "method": "sft", "batch": 1, "status": "ok", "tokens_per_s": 80.0},
        {"model": "8b", "method": "sft", "batch": 4, "status": "ok", "tokens_per_s": 100.0},
        {"model": "8b", "method": "sft", "batch": 8, "status": "oom", "tokens_per_s": None},
        {"model": "8b", "method": "dpo", "batch": 4, "status": "ok", "tokens_per_s": 50.0},
        {"model": "13b", "method": "sft", "batch": 4, "status": "ok", "tokens_per_s": 999.0}]}))
    (results / "gpu_qlora_cpu_smoke.json").write_text(json.dumps({"rows": [
        {"model": "8b", "method": "sft", "batch": 1, "status": "ok", "tokens_per_s": 1e9}]}))
    return tmp_path


def _grid(root: Path, **over) -> Path:
    grid = {"name": "g", "notebooks": ["03_train"], "axes": {"method": ["sft", "dpo"]},
            "map": {"03_train": {"methods": ["{method}"]}}, "set": {"out_dir": str(root / "out")},
            "budget_gpu_hours": 10, "gpu_hour_usd": 3.0,
            "gpu_estimate": {"rows_per_cell": 30, "tokens_per_row": 20, "eval_gpu_hours_per_cell": 0.5,
                             "gpus_per_cell": 2}}
    grid.update(over)
    path = root / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_estimate_arithmetic(root: Path) -> None:
    layout = sweep.Layout(root)
    grid = sweep.load_grid(_grid(root), layout)
    est = {e.cell_id: e for e in sweep.estimate_grid(grid, layout)}
    sft, dpo = est["sft"], est["dpo"]
    # sft: 10 rows x 2 epochs x 10 tokens = 200 tokens at the best 8b sft rate, 100 tokens/s
    assert (sft.rows, sft.tokens, sft.tokens_per_second) == (20, pytest.approx(200.0), 100.0)
    assert sft.tokens_source == "datasets" and "gpu_qlora.json (8b, sft, batch 4)" in sft.throughput_source
    assert sft.gpu_hours == pytest.approx((200 / 100 / 3600 + 0.5) * 2)
    # dpo: no dataset -> stated 30 rows x 2 epochs x 20 tokens x 4/3 (reference) at 50 tokens/s
    assert (dpo.rows, dpo.tokens, dpo.tokens_per_second) == (60, pytest.approx(1600.0), 50.0)
    assert dpo.tokens_source == "stated estimate"
    assert dpo.gpu_hours == pytest.approx((1600 / 50 / 3600 + 0.5) * 2)
    # caps: max_steps x effective batch, and max_length per row
    capped = sweep.load_grid(_grid(root, set={"out_dir": "x", "max_steps": 3, "max_length": 32,
                                              "train_batch_size": 4}), layout)
    c = {e.cell_id: e for e in sweep.estimate_grid(capped, layout)}["dpo"]
    assert (c.rows, c.tokens) == (12, pytest.approx(12 * 20 * 4 / 3))
    assert budget.training_rows(100, {"train_max_rows": 7, "epochs": 3.0}) == 21.0


def test_dry_run_prints_hours_and_cost_against_the_budget(root: Path, capsys) -> None:
    assert sweep.sweep(_grid(root, budget_gpu_hours=1.5), layout=sweep.Layout(root), dry_run=True,
                       gpu_hour_usd=2.0) == 0
    out = capsys.readouterr().out
    total = (200 / 100 / 3600 + 0.5) * 2 + (1600 / 50 / 3600 + 0.5) * 2
    assert f"total: {total:.2f} GPU-hours = {total * 2.0:.2f} USD at 2 USD/GPU-hour (2 cells)" in out
    assert "OVER BUDGET (needs --over-budget)" in out
    assert not (root / "out").exists()


def test_over_budget_grid_is_refused_unless_asked_and_hours_are_recorded(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = sweep.Layout(root)
    path = _grid(root, budget_gpu_hours=1.5)
    with pytest.raises(budget.BudgetError, match=r"g\.yaml.*> budget_gpu_hours 1\.5.*--over-budget"):
        sweep.sweep(path, layout=layout)
    assert not (root / "out").exists() and not (root / "runs" / "registry.parquet").exists()
    assert sweep.main([str(path)]) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert sweep.sweep(path, layout=layout, over_budget=True) == 0
    rows = sweep.registry_rows("g", layout)
    assert sorted(p.name for p in (root / "out").iterdir()) == ["dpo.ran", "sft.ran"]
    for cell, e in {e.cell_id: e for e in sweep.estimate_grid(sweep.load_grid(path, layout), layout)}.items():
        r = rows[cell]
        assert r["gpus"] == 2 and r["planned_gpu_hours"] == pytest.approx(e.gpu_hours)
        assert r["gpu_hours"] == pytest.approx(r["wall_s"] * 2 / 3600, rel=0.05, abs=1e-5)
    assert sweep.used_gpu_hours(sweep.load_grid(path, layout), layout) > 0
    table = budget.planned_vs_used(sweep.read_registry(layout))
    assert table.to_dict("records")[0]["cells_done"] == 2
    assert table["planned_gpu_hours"].item() == pytest.approx(sum(r["planned_gpu_hours"] for r in rows.values()))
    assert table["used_gpu_hours"].item() == pytest.approx(sum(r["gpu_hours"] for r in rows.values()))


@pytest.mark.parametrize(("over", "message"), [
    ({"budget_gpu_hours": -1}, "budget_gpu_hours must be > 0"),
    ({"gpu_hour_usd": "cheap"}, "gpu_hour_usd must be a number"),
    ({"gpu_estimate": {"tokens_per_sec": 5}}, "gpu_estimate: unknown key(s) tokens_per_sec"),
])
def test_bad_budget_keys_are_named(root: Path, over: dict, message: str) -> None:
    path = _grid(root, **over)
    with pytest.raises(ConfigError) as err:
        sweep.load_grid(path, sweep.Layout(root))
    assert message in str(err.value) and str(path) in str(err.value)


def test_shipped_thesis_grid_has_a_budget() -> None:
    grid = sweep.load_grid(sweep.Layout().root / "configs" / "grids" / "thesis.yaml")
    assert grid.budget.budget_gpu_hours is not None and grid.budget.gpu_hour_usd > 0
    assert grid.budget.gpus_per_cell == 1

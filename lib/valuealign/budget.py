"""GPU budget of an experiment grid: estimated GPU-hours and cost per cell, against a budget.

Why: the thesis grid runs on shared cluster hours (the plan: about 4 GPU-hours per fine-tune
and evaluation). Before submitting, ``make sweep ... SWEEP_ARGS=--dry-run`` shows what each
cell will cost; a grid whose estimate exceeds ``budget_gpu_hours`` (minus the hours its done
cells already used) is refused unless ``--over-budget`` is given. After the runs the
registry holds the measured GPU-hours (wall time x GPUs of the run) next to the plan.

The estimate, per cell and training run (method x value set):

    rows      = training rows (``<data>/<value_set>/<method>/train``; else the stated
                ``rows_per_cell``), capped by ``train_max_rows`` and by
                ``max_steps x train_batch_size x grad_accum``; times ``epochs`` otherwise
    tokens    = rows x tokens per row (the dataset's text characters / ``chars_per_token``,
                else the stated ``tokens_per_row``; at most ``max_length``)
                x 4/3 for DPO and KTO (the frozen reference model's forward pass costs about a
                third of a training step's forward + backward)
    hours     = tokens / tokens_per_second / 3600 + ``eval_gpu_hours_per_cell``
    GPU-hours = hours x GPUs per cell (``gpu_estimate.gpus_per_cell``, else the Slurm
                ``gpus_per_node``; 0 for a CPU grid);   cost = GPU-hours x ``gpu_hour_usd``

Throughput: the grid's ``gpu_estimate.tokens_per_second``, else the best measured
``tokens_per_s`` of ``benchmarks/results/gpu_qlora*.json`` for the model size and method
(DPO rows for DPO/KTO), else the stated ``DEFAULT_TOKENS_PER_SECOND``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuealign import paths
from valuealign.config import ConfigError

# Stated estimates, used only where nothing was measured (printed with every estimate).
DEFAULT_TOKENS_PER_SECOND = 3000.0   # lower end of published QLoRA 7B anchors on A100/H100
DEFAULT_ROWS_PER_CELL = 5000         # "a few thousand rows" per value set and method
DEFAULT_TOKENS_PER_ROW = 250.0       # survey prompt + answer, ~150-300 tokens
DEFAULT_EVAL_GPU_HOURS = 0.33        # the plan's 5 evaluation hours over 15 fine-tunes
DEFAULT_GPU_HOUR_USD = 6.5           # the plan: ~65 GPU-hours for ~420 USD
DEFAULT_CHARS_PER_TOKEN = 4.0        # English text with a BPE tokenizer
REFERENCE_FACTOR = {"dpo": 4 / 3, "kto": 4 / 3}
ESTIMATE_KEYS = {"tokens_per_second", "rows_per_cell", "tokens_per_row", "eval_gpu_hours_per_cell",
                 "chars_per_token", "gpus_per_cell"}


class BudgetError(ConfigError):
    """The grid's estimated GPU-hours exceed its budget (and --over-budget was not given)."""


@dataclass(frozen=True)
class BudgetSettings:
    """The grid file's ``budget_gpu_hours``, ``gpu_hour_usd`` and ``gpu_estimate`` block."""

    budget_gpu_hours: float | None = None
    gpu_hour_usd: float = DEFAULT_GPU_HOUR_USD
    tokens_per_second: float | None = None
    rows_per_cell: int = DEFAULT_ROWS_PER_CELL
    tokens_per_row: float = DEFAULT_TOKENS_PER_ROW
    eval_gpu_hours_per_cell: float = DEFAULT_EVAL_GPU_HOURS
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    gpus_per_cell: int = 1


def _number(value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{where} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def settings_from_grid(data: Mapping[str, Any], where: str, gpus_per_node: Any = None) -> BudgetSettings:
    """Validate the budget keys of a grid file; every error names the file and key."""
    est = data.get("gpu_estimate") or {}
    if not isinstance(est, dict):
        raise ConfigError(f"{where}: 'gpu_estimate' must be a mapping")
    if bad := sorted(set(est) - ESTIMATE_KEYS):
        raise ConfigError(f"{where}: gpu_estimate: unknown key(s) {', '.join(bad)} "
                          f"(valid: {', '.join(sorted(ESTIMATE_KEYS))})")
    budget = data.get("budget_gpu_hours")
    gpus = est.get("gpus_per_cell", gpus_per_node if gpus_per_node is not None else 1)
    return BudgetSettings(
        budget_gpu_hours=None if budget is None else _number(budget, f"{where}: budget_gpu_hours"),
        gpu_hour_usd=_number(data.get("gpu_hour_usd", DEFAULT_GPU_HOUR_USD), f"{where}: gpu_hour_usd",
                             positive=False),
        tokens_per_second=(None if est.get("tokens_per_second") is None else
                           _number(est["tokens_per_second"], f"{where}: gpu_estimate.tokens_per_second")),
        rows_per_cell=int(_number(est.get("rows_per_cell", DEFAULT_ROWS_PER_CELL),
                                  f"{where}: gpu_estimate.rows_per_cell")),
        tokens_per_row=_number(est.get("tokens_per_row", DEFAULT_TOKENS_PER_ROW),
                               f"{where}: gpu_estimate.tokens_per_row"),
        eval_gpu_hours_per_cell=_number(est.get("eval_gpu_hours_per_cell", DEFAULT_EVAL_GPU_HOURS),
                                        f"{where}: gpu_estimate.eval_gpu_hours_per_cell", positive=False),
        chars_per_token=_number(est.get("chars_per_token", DEFAULT_CHARS_PER_TOKEN),
                                f"{where}: gpu_estimate.chars_per_token"),
        gpus_per_cell=int(_number(gpus, f"{where}: gpu_estimate.gpus_per_cell", positive=False)),
    )


@dataclass(frozen=True)
class CellEstimate:
    """Estimated GPU-hours of one cell, with where each number came from."""

    cell_id: str
    rows: int
    tokens: float
    tokens_source: str
    tokens_per_second: float
    throughput_source: str
    train_hours: float
    eval_hours: float
    gpus: int

    @property
    def gpu_hours(self) -> float:
        return (self.train_hours + self.eval_hours) * self.gpus


def dataset_size(train_dir: Path, chars_per_token: float) -> tuple[int, float] | None:
    """(rows, tokens per row) of a saved training split, from its text columns; None if absent."""
    files = sorted(train_dir.glob("*.arrow")) if train_dir.is_dir() else []
    if not files:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    rows, chars = 0, 0
    for f in files:
        with pa.memory_map(str(f)) as src:
            table = pa.ipc.open_stream(src).read_all()
        rows += table.num_rows
        for name in table.column_names:
            col = table[name]
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                chars += int(pc.sum(pc.utf8_length(col)).as_py() or 0)
    if rows == 0:
        return None
    return rows, chars / rows / chars_per_token


def measured_throughput(model_profile: str, method: str, results: Path | None = None) -> tuple[float, str] | None:
    """Best measured QLoRA training tokens/s for the profile's size and the method, or None."""
    from valuealign import models

    results = results or paths.BENCHMARK_RESULTS
    try:
        size_b = models.get_profile(model_profile).params_b
    except ValueError:
        return None
    bench_method = "dpo" if method in REFERENCE_FACTOR else "sft"
    best: tuple[float, str] | None = None
    for f in sorted(results.glob("gpu_qlora*.json")):
        if "cpu_smoke" in f.name:
            continue
        try:
            rows = json.loads(f.read_text()).get("rows", [])
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{f}: not a gpu_qlora benchmark result ({err})") from err
        sizes = {str(r.get("model")) for r in rows}
        numeric = {s: float(s.rstrip("b")) for s in sizes if s.rstrip("b").replace(".", "").isdigit()}
        if not numeric:
            continue
        closest = min(numeric, key=lambda s: abs(numeric[s] - size_b))
        for r in rows:
            tps = r.get("tokens_per_s")
            if (r.get("status") == "ok" and str(r.get("model")) == closest
                    and r.get("method") == bench_method and isinstance(tps, int | float)):
                if best is None or tps > best[0]:
                    best = (float(tps), f"{paths.relative(f)} ({closest}, {bench_method}, batch {r.get('batch')})")
    return best


def training_rows(rows: int, params: Mapping[str, Any]) -> float:
    """Rows a run trains on: capped by ``train_max_rows`` and by ``max_steps`` x effective batch."""
    max_rows = int(params.get("train_max_rows", 0) or 0)
    n = min(rows, max_rows) if max_rows > 0 else rows
    steps = int(params.get("max_steps", -1) or -1)
    if steps > 0:
        return float(steps * int(params.get("train_batch_size", 1)) * int(params.get("grad_accum", 1)))
    return n * float(params.get("epochs", 1.0))


def estimate_cell(cell_id: str, pairs: Sequence[tuple[str, str, str]], params: Mapping[str, Any],
                  data_root: Any, settings: BudgetSettings, results: Path | None = None) -> CellEstimate:
    """GPU-hours of one cell that trains ``pairs`` (value_set, method, data_source).

    ``params``: the training notebook's parameters in effect (defaults + profile + cell);
    ``data_root(data_source)`` -> folder of the training datasets.
    """
    profile = str(params.get("model_profile", ""))
    max_length = float(params.get("max_length", math.inf) or math.inf)
    tokens, rows_total, sources, tps_list = 0.0, 0, set(), []
    for value_set, method, source in pairs:
        size = dataset_size(Path(data_root(source)) / value_set / method / "train", settings.chars_per_token)
        if size is None:
            rows, per_row = settings.rows_per_cell, settings.tokens_per_row
            sources.add("stated estimate")
        else:
            rows, per_row = size
            sources.add("datasets")
        n = training_rows(rows, params)
        rows_total += int(round(n))
        tokens += n * min(per_row, max_length) * REFERENCE_FACTOR.get(method, 1.0)
        if settings.tokens_per_second is not None:
            tps_list.append((settings.tokens_per_second, "grid gpu_estimate.tokens_per_second"))
        else:
            tps_list.append(measured_throughput(profile, method, results)
                            or (DEFAULT_TOKENS_PER_SECOND, "stated estimate"))
    tps = min((t for t, _ in tps_list), default=settings.tokens_per_second or DEFAULT_TOKENS_PER_SECOND)
    tps_source = "; ".join(sorted({s for _, s in tps_list})) or "stated estimate"
    return CellEstimate(cell_id, rows_total, tokens, " + ".join(sorted(sources)) or "none", tps, tps_source,
                        tokens / tps / 3600.0, settings.eval_gpu_hours_per_cell, settings.gpus_per_cell)


def report(estimates: Sequence[CellEstimate], todo: set[str], settings: BudgetSettings,
           used_gpu_hours: float) -> str:
    """Per cell and in total: GPU-hours and cost, against the budget."""
    usd = settings.gpu_hour_usd
    lines = ["GPU budget (estimate; formula in valuealign.budget):",
             f"  {'cell':<44} {'rows':>8} {'tokens':>12} {'tok/s':>8} {'GPU-h':>8} {'USD':>9}"]
    for e in estimates:
        mark = "" if e.cell_id in todo else "  (done)"
        lines.append(f"  {e.cell_id:<44} {e.rows:>8} {e.tokens:>12.0f} {e.tokens_per_second:>8.0f} "
                     f"{e.gpu_hours:>8.2f} {e.gpu_hours * usd:>9.2f}{mark}")
    total = sum(e.gpu_hours for e in estimates)
    planned = sum(e.gpu_hours for e in estimates if e.cell_id in todo)
    lines.append(f"  total: {total:.2f} GPU-hours = {total * usd:.2f} USD at {usd:g} USD/GPU-hour "
                 f"({len(estimates)} cells); to run now: {planned:.2f} GPU-hours = {planned * usd:.2f} USD")
    srcs = sorted({e.tokens_source for e in estimates}) + sorted({e.throughput_source for e in estimates})
    lines.append(f"  sources: tokens from {', '.join(sorted({e.tokens_source for e in estimates}))}; "
                 f"throughput from {', '.join(sorted({e.throughput_source for e in estimates}))}"
                 if srcs else "  sources: none")
    if settings.budget_gpu_hours is not None:
        need = used_gpu_hours + planned
        verdict = "within budget" if need <= settings.budget_gpu_hours else "OVER BUDGET (needs --over-budget)"
        lines.append(f"  budget: {settings.budget_gpu_hours:g} GPU-hours; used {used_gpu_hours:.2f} + to run "
                     f"{planned:.2f} = {need:.2f}: {verdict}")
    else:
        lines.append("  budget: none set (budget_gpu_hours in the grid file)")
    return "\n".join(lines)


def check_budget(planned_gpu_hours: float, used_gpu_hours: float, settings: BudgetSettings,
                 where: str, over_budget: bool = False) -> None:
    """Refuse a grid whose used + planned GPU-hours exceed the budget, unless ``over_budget``."""
    if settings.budget_gpu_hours is None or over_budget:
        return
    need = used_gpu_hours + planned_gpu_hours
    if need > settings.budget_gpu_hours:
        raise BudgetError(
            f"{where}: estimated {planned_gpu_hours:.2f} GPU-hours to run + {used_gpu_hours:.2f} used = "
            f"{need:.2f} > budget_gpu_hours {settings.budget_gpu_hours:g} "
            f"({need * settings.gpu_hour_usd:.2f} USD); raise the budget or pass --over-budget")


def visible_gpus() -> int:
    """GPUs this process may use (0 on CPU): CUDA_VISIBLE_DEVICES, else torch's count."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch, no GPU
        return 0


def measured_gpu_hours(wall_s: float, gpus: int) -> float:
    """GPU-hours a run used: wall time x GPUs (0 on CPU)."""
    return round(float(wall_s) * int(gpus) / 3600.0, 6)


def planned_vs_used(registry: Any) -> Any:
    """Per grid: cells, planned and measured GPU-hours (sums over cells that recorded them).

    For notebook 06 (``sweep.read_registry()`` in, one row per grid out); registries written
    before the budget columns existed give NaN.
    """
    import pandas as pd

    df = registry.copy()
    for col in ("planned_gpu_hours", "gpu_hours"):
        if col not in df.columns:
            df[col] = float("nan")
        df[col] = pd.to_numeric(df[col], errors="coerce")
    done = df[df["status"] == "done"]
    out = done.groupby("grid").agg(cells_done=("cell_id", "count"),
                                   planned_gpu_hours=("planned_gpu_hours", lambda s: s.sum(min_count=1)),
                                   used_gpu_hours=("gpu_hours", lambda s: s.sum(min_count=1)))
    return out.reset_index()

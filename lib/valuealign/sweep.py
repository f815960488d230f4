"""Batch re-runs of the experiment grid: every cell through papermill, locally or on Slurm.

A *grid file* (``configs/grids/*.yaml``) names the notebooks each cell runs, in order
(e.g. ``03_finetune`` then ``04_evaluate``), the parameter *axes* (method, value set,
seed, model profile, ...) whose cartesian product gives the cells, how an axis value
becomes notebook parameters, a base parameter profile and the executor resources::

    profile: configs/smoke.yaml          # base parameters (flat, as for `make all`)
    notebooks: [03_finetune, 04_evaluate]
    axes:
      method: [sft, dpo]
      value_set: [united-states, germany]
      seed: [0]
    map:                                 # "{axis}" is replaced by the cell's value
      03_finetune: {methods: ["{method}"], value_sets: ["{value_set}"]}
      04_evaluate: {runs: "{run_ids}"}   # the runs the cell's earlier notebooks finished
    set: {train_max_steps: 4}            # fixed for every cell, overrides the profile
    finalize:                            # once after the grid, over every finished cell
      notebook: 04_evaluate
      parameters: {runs: "{all_run_ids}", value_sets: "{all_value_set}"}
    executor:
      local: {workers: 1}
      slurm: {partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 64,
              time_min: 360, array_parallelism: 8, setup: ["module load cuda"]}

Besides its templates, an axis goes under its own name to every notebook of the cell
that declares a parameter of that name (``seed``, ``model_profile``), unless that
notebook's ``map`` sets the name itself. A template is a whole parameter value (or a list
item) of the form ``{name}`` and is replaced by that value, typed (no text around it):
``{<axis>}``; ``{run_ids}``, the runs finished by the cell's earlier notebooks (a
``runs/<run_id>/DONE`` written during the cell whose manifest agrees with the cell's axes);
and in ``finalize`` ``{all_run_ids}`` and ``{all_<axis>}`` (sorted values over the finished
cells). These are the templates the grid files use; anything else is an error naming it.

Why this shape: the researcher launches, resumes and collects 3 methods x 5 value sets
x seeds (~4 GPU-hours each) with one command, so

- everything is validated before any cell runs (papermill only warns on a misspelt
  parameter): unknown axis or notebook, an empty axis, duplicate cells, and every
  notebook's parameters against its ``parameters`` cell (``valuealign.config``);
- the sweep is resumable and idempotent: ``runs/registry.parquet`` (one row per grid
  cell, written atomically under a file lock) records parameters, status, times, run
  folders, a metrics summary and the error; a cell whose registry row, cell manifest
  (``executed/<grid>/<cell_id>/cell.json``) and outputs match its parameters is skipped,
  a failed cell keeps its executed notebook (with the failing cell) and the others go on;
- the supervisor reads ``executed/<grid>/index.html``, which links every executed
  notebook (HTML rendering) with its status.

Slurm goes through submitit (one job array, resources from the grid file); each array
task runs one cell and updates the registry itself, so the sweep may be left while the
jobs queue (``--collect`` later rebuilds the combined tables and the index).

Why one module of about 1100 lines: grid validation, the registry, running a cell, the
executors and the index are one state machine over ``runs/registry.parquet`` (a cell's status
is read by the planner, written by the runner and by each Slurm task, shown by the index); the
pieces share the ``Layout``/``Cell`` records and the registry lock, and only the GPU budget,
which stands on its own, is elsewhere (``valuealign.budget``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import fcntl
import html
import itertools
import json
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from valuealign import budget, config, paths, provenance
from valuealign.config import ConfigError

GRID_KEYS = {"name", "description", "profile", "notebooks", "axes", "map", "set", "finalize",
             "executor", "budget_gpu_hours", "gpu_hour_usd", "gpu_estimate"}
LOCAL_KEYS = {"workers"}
SLURM_KEYS = {"partition", "gpus_per_node", "cpus_per_task", "mem_gb", "time_min",
              "array_parallelism", "account", "qos", "constraint", "setup", "additional",
              "job_name"}
REGISTRY_COLUMNS = [
    "grid", "cell_id", "axes", "parameters", "fingerprint", "status", "started", "finished",
    "wall_s", "run_folder", "run_ids", "executed_dir", "notebooks", "metrics", "error",
    "attempts", "host", "pid", "job_id", "gpus", "gpu_hours", "planned_gpu_hours", "lineage",
]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LATE = {"run_ids"}  # known only after the cell's earlier notebooks ran


# ---------------------------------------------------------------- layout and grid
@dataclass(frozen=True)
class Layout:
    """Where a sweep reads and writes; explicit so that tests can point it at a tmp tree."""

    root: Path = paths.ROOT

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def executed(self) -> Path:
        return self.root / "executed"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def registry(self) -> Path:
        return self.runs / "registry.parquet"

    def data_root(self, data_source: str = "survey") -> Path:
        """Where notebook 02 (survey) or 05 (consultation) writes the training datasets."""
        base = paths.ALIGNMENT if data_source == "survey" else paths.CONSULTATION
        return self.root / base.relative_to(paths.ROOT)

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its axis values and the parameters of each of its notebooks."""

    grid: str
    cell_id: str
    axes: dict[str, Any]
    notebooks: tuple[str, ...]
    parameters: dict[str, dict[str, Any]]  # notebook -> parameters (may hold late placeholders)
    fingerprint: str
    planned_gpu_hours: float | None = None  # the budget estimate, recorded next to the measured hours


@dataclass
class Grid:
    name: str
    path: Path
    notebooks: tuple[str, ...]
    axes: dict[str, list[Any]]
    cells: list[Cell]
    finalize: dict[str, Any] | None
    local: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    budget: budget.BudgetSettings = field(default_factory=budget.BudgetSettings)


def _slug(value: Any) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "-", str(value)).strip("-").lower()
    return s or "x"


def cell_id_for(axes: Mapping[str, Any]) -> str:
    """Readable, stable folder name from the axis values (``seed`` as ``s<seed>`` like run ids)."""
    parts = [f"s{v}" if k == "seed" else _slug(v) for k, v in axes.items()]
    return "__".join(parts) or "cell"


def _placeholders(obj: Any) -> set[str]:
    """Names of the templates in ``obj``; a ``{name}`` inside other text is an error (:func:`render`)."""
    if isinstance(obj, str):
        found = set(_PLACEHOLDER.findall(obj))
        if found and not _PLACEHOLDER.fullmatch(obj):
            raise ConfigError(f"template {obj!r}: a template is a whole value such as \"{{run_ids}}\", "
                              "with no text around it")
        return found
    if isinstance(obj, Mapping):
        return set().union(*(_placeholders(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list | tuple):
        return set().union(*(_placeholders(v) for v in obj)) if obj else set()
    return set()


def render(obj: Any, values: Mapping[str, Any]) -> Any:
    """Replace every value ``"{name}"`` whose name is in ``values`` by that value (typed);
    others stay as they are (a late ``{run_ids}`` before the cell's first notebook ran)."""
    if isinstance(obj, str):
        m = _PLACEHOLDER.fullmatch(obj)
        return copy.deepcopy(values[m.group(1)]) if m and m.group(1) in values else obj
    if isinstance(obj, Mapping):
        return {k: render(v, values) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [render(v, values) for v in obj]
    return obj


def fingerprint(parameters: Mapping[str, Any]) -> str:
    """Hash of what a cell runs (notebooks, their parameters in effect, the training data)."""
    return provenance.sha256_text(json.dumps(parameters, sort_keys=True, default=str))[:16]


def _training_pairs(notebook: Path, params: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(value_set, method, data_source) of every run a fine-tuning notebook trains (else [])."""
    specs = config.notebook_parameters(notebook)
    if not {"methods", "value_sets"} <= set(specs):
        return []
    full = {**{k: s.default for k, s in specs.items()}, **params}
    if not isinstance(full["methods"], list) or not isinstance(full["value_sets"], list):
        return []  # a late placeholder: known only when the cell runs
    source = str(full.get("data_source", "survey"))
    return [(str(v), str(m), source) for m in full["methods"] for v in full["value_sets"]]


def data_fingerprints(notebook: Path, params: Mapping[str, Any], layout: Layout) -> dict[str, str]:
    """``value_set/method`` -> data fingerprint of each run a notebook trains ("" when absent).

    Why in the cell fingerprint: after notebook 01 or 02 re-runs, the splits and datasets
    change while the parameters do not; the cell must then count as changed (its runs get new
    ids), not as done with adapters trained on what are now test items.
    """
    pairs = _training_pairs(notebook, params)
    if not pairs:
        return {}
    from valuealign import training

    return {f"{v}/{m}": training.data_fingerprint(v, m, src, layout.data_root(src)).combined
            for v, m, src in pairs}


def _notebook_file(name: str, layout: Layout, where: str) -> Path:
    p = layout.notebooks / f"{name}.ipynb"
    if not p.exists():
        valid = sorted(q.stem for q in layout.notebooks.glob("[0-9][0-9]_*.ipynb"))
        raise ConfigError(f"{where}: unknown notebook {name!r} (notebooks in "
                          f"{layout.rel(layout.notebooks)}/: {', '.join(valid) or 'none'})")
    return p


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"grid file not found: {path}")
    return config.read_yaml_mapping(path, "a grid file")


def _check_name(root: Path, name: str, what: str) -> None:
    """A grid or cell name becomes a folder under executed/: refuse `..`, separators and the like."""
    try:
        paths.safe_child(root, name, what)
    except paths.UnsafePathError as err:
        raise ConfigError(str(err)) from None


def load_grid(path: Path | str, layout: Layout | None = None) -> Grid:
    """Read and fully validate a grid file; every error names the file and the key."""
    layout = layout or Layout()
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = layout.root / path
    data = _read_yaml(path)
    where = str(path)
    if bad := sorted(set(data) - GRID_KEYS):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)} (valid: {', '.join(sorted(GRID_KEYS))})")
    name = _slug(data.get("name") or path.stem)
    _check_name(layout.executed, name, f"{where}: grid name")

    nb_names = data.get("notebooks")
    if not isinstance(nb_names, list) or not nb_names or not all(isinstance(n, str) for n in nb_names):
        raise ConfigError(f"{where}: 'notebooks' must be a non-empty list of notebook names")
    if len(set(nb_names)) != len(nb_names):
        raise ConfigError(f"{where}: 'notebooks' lists a notebook twice: {nb_names}")
    specs = {n: config.notebook_parameters(_notebook_file(n, layout, where)) for n in nb_names}

    axes = data.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise ConfigError(f"{where}: 'axes' must be a non-empty mapping of axis -> list of values")
    for axis, values in axes.items():
        if not isinstance(values, list):
            raise ConfigError(f"{where}: axis {axis!r} must be a list of values, got {values!r}")
        if not values:
            raise ConfigError(f"{where}: axis {axis!r} is empty (give at least one value)")
        if axis in _LATE or axis.startswith("all_"):
            raise ConfigError(f"{where}: axis name {axis!r} is reserved")

    mapping = data.get("map") or {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: 'map' must be a mapping notebook -> {{parameter: template}}")
    for nb, tpl in mapping.items():
        if nb not in specs:
            raise ConfigError(f"{where}: map: unknown notebook {nb!r} (the grid's notebooks: "
                              f"{', '.join(nb_names)})")
        if not isinstance(tpl, dict):
            raise ConfigError(f"{where}: map.{nb} must be a mapping parameter -> template")
        for key in tpl:
            if key not in specs[nb]:
                raise config.unknown_parameter_error(key, list(specs[nb]), f"{where}: map.{nb}")

    # an axis reaches a notebook through its map, or by its own name when the map is silent
    try:
        used: dict[str, set[str]] = {nb: _placeholders(mapping.get(nb, {})) for nb in nb_names}
    except ConfigError as err:
        raise ConfigError(f"{where}: map: {err}") from None
    for i, nb in enumerate(nb_names):
        allowed = set(axes) | (_LATE if i > 0 else set())
        if bad := sorted(used[nb] - allowed):
            raise ConfigError(f"{where}: map.{nb} uses unknown placeholder(s) "
                              f"{', '.join('{' + b + '}' for b in bad)} (axes: {', '.join(axes)}"
                              f"{'; {run_ids} only after the first notebook' if i == 0 else ''})")
    implicit: dict[str, list[str]] = {nb: [] for nb in nb_names}
    for axis in axes:
        reached = [nb for nb in nb_names if axis in used[nb]]  # via a template
        for nb in nb_names:
            if axis in specs[nb] and axis not in mapping.get(nb, {}):
                implicit[nb].append(axis)
                reached.append(nb)
        if not reached:
            known = sorted({k for s in specs.values() for k in s})
            raise ConfigError(
                f"{where}: unknown axis {axis!r}: no notebook of the grid ({', '.join(nb_names)}) "
                f"declares it and no 'map' uses {{{axis}}} (parameters: {', '.join(known)})")

    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}: 'set' must be a flat mapping parameter -> value")
    profile: dict[str, Any] = {}
    if data.get("profile"):
        ppath = Path(data["profile"])
        ppath = ppath if ppath.is_absolute() else layout.root / ppath
        profile = config.load_profile(ppath)
        everything = config.all_notebook_parameters(layout.notebooks)
        merged = {k: s for nb_specs in everything.values() for k, s in nb_specs.items()}
        config.validate(profile, merged, where=str(ppath))
    for key in fixed:
        if not any(key in s for s in specs.values()):
            raise config.unknown_parameter_error(key, sorted({k for s in specs.values() for k in s}), f"{where}: set")
    if profile:  # a strict (GPU) profile refuses smoke caps, also those the grid's `set` adds
        config.check_smoke_caps({**profile, **fixed}, f"{where} (profile {data['profile']})")

    cells: list[Cell] = []
    seen: dict[str, str] = {}
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        cid = cell_id_for(values)
        _check_name(layout.executed, cid, f"{where}: cell name (from axes {values})")
        ctx = dict(values)
        params: dict[str, dict[str, Any]] = {}
        for nb in nb_names:
            p = {k: v for k, v in profile.items() if k in specs[nb]}
            p.update({k: v for k, v in fixed.items() if k in specs[nb]})
            p.update({a: values[a] for a in implicit[nb]})
            p.update(render(mapping.get(nb, {}), ctx))
            probe = render(p, {"run_ids": ["<run_id>"]})
            config.validate(probe, specs[nb], where=f"{where}: cell {cid} {nb}")
            params[nb] = {k: p[k] for k in sorted(p)}
        trained_on = {nb: fps for nb in nb_names
                      if (fps := data_fingerprints(_notebook_file(nb, layout, where), params[nb], layout))}
        fp = fingerprint({"notebooks": nb_names, "parameters": params, "data": trained_on})
        if cid in seen or fp in seen.values():
            other = cid if cid in seen else next(c for c, f in seen.items() if f == fp)
            raise ConfigError(f"{where}: duplicate cell {cid!r} (same as {other!r}): every cell "
                              f"must differ in the parameters it runs (duplicate axis value, or an "
                              f"axis that changes no parameter?)")
        seen[cid] = fp
        cells.append(Cell(name, cid, values, tuple(nb_names), params, fp))

    fin = data.get("finalize")
    if fin is not None:
        fin = _check_finalize(fin, axes, layout, where, profile, fixed)
    executor = data.get("executor") or {}
    if bad := sorted(set(executor) - {"local", "slurm"}):
        raise ConfigError(f"{where}: executor: unknown executor(s) {', '.join(bad)} (valid: local, slurm)")
    local, slurm = executor.get("local") or {}, executor.get("slurm") or {}
    if bad := sorted(set(local) - LOCAL_KEYS):
        raise ConfigError(f"{where}: executor.local: unknown key(s) {', '.join(bad)} (valid: workers)")
    if bad := sorted(set(slurm) - SLURM_KEYS):
        raise ConfigError(f"{where}: executor.slurm: unknown key(s) {', '.join(bad)} "
                          f"(valid: {', '.join(sorted(SLURM_KEYS))})")
    return Grid(name, path, tuple(nb_names), dict(axes), cells, fin, dict(local), dict(slurm),
                profile, budget.settings_from_grid(data, where, slurm.get("gpus_per_node")))


def _check_finalize(fin: Any, axes: Mapping[str, Any], layout: Layout, where: str,
                    profile: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fin, dict) or set(fin) - {"notebook", "parameters"} or "notebook" not in fin:
        raise ConfigError(f"{where}: 'finalize' must be {{notebook: NN_name, parameters: {{...}}}}")
    specs = config.notebook_parameters(_notebook_file(fin["notebook"], layout, f"{where}: finalize"))
    tpl = fin.get("parameters") or {}
    allowed = {"all_run_ids"} | {f"all_{a}" for a in axes}
    try:
        used = _placeholders(tpl)
    except ConfigError as err:
        raise ConfigError(f"{where}: finalize: {err}") from None
    if bad := sorted(used - allowed):
        raise ConfigError(f"{where}: finalize uses unknown placeholder(s) {', '.join(bad)} "
                          f"(valid: {', '.join(sorted(allowed))})")
    p = {k: v for k, v in {**profile, **fixed}.items() if k in specs}
    p.update(tpl)
    probe = render(p, {"all_run_ids": ["<run_id>"], **{f"all_{a}": list(v) for a, v in axes.items()}})
    config.validate(probe, specs, where=f"{where}: finalize {fin['notebook']}")
    return {"notebook": fin["notebook"], "parameters": p}


# ---------------------------------------------------------------- registry
@contextlib.contextmanager
def registry_lock(layout: Layout) -> Iterator[None]:
    """Exclusive lock for read-modify-write of the registry (parallel workers, array tasks).

    ``lockf`` (POSIX record locks) also works on the NFS home folders of most clusters.
    """
    layout.runs.mkdir(parents=True, exist_ok=True)
    with open(layout.runs / ".registry.lock", "a+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


def read_registry(layout: Layout | None = None) -> pd.DataFrame:
    layout = layout or Layout()
    if not layout.registry.exists():
        return pd.DataFrame({c: pd.Series(dtype="object") for c in REGISTRY_COLUMNS})
    return pd.read_parquet(layout.registry)


def _normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {c: row.get(c) for c in REGISTRY_COLUMNS}
    for c in ("axes", "parameters", "run_ids", "notebooks", "metrics", "lineage"):
        if not isinstance(out[c], str) and out[c] is not None:
            out[c] = json.dumps(out[c], sort_keys=True, default=str)
    for c in ("pid", "attempts", "gpus"):
        out[c] = None if out[c] is None or pd.isna(out[c]) else int(out[c])
    for c in ("wall_s", "gpu_hours", "planned_gpu_hours"):
        out[c] = None if out[c] is None or pd.isna(out[c]) else float(out[c])
    for c in ("job_id", "run_folder", "error", "started", "finished", "host", "executed_dir"):
        out[c] = None if out[c] is None or (not isinstance(out[c], str) and pd.isna(out[c])) else str(out[c])
    return out


def upsert_registry(rows: Sequence[Mapping[str, Any]], layout: Layout | None = None,
                    only_if: set[str] | None = None) -> None:
    """Replace the rows of the given (grid, cell_id)s; one row per cell, written atomically.

    ``only_if``: replace a row only while its current status is one of these (so that a
    late bookkeeping write never clobbers what a running task recorded).
    """
    layout = layout or Layout()
    new = [_normalise(r) for r in rows]
    with registry_lock(layout):
        old = read_registry(layout)
        if only_if is not None:
            current = {(r["grid"], r["cell_id"]): r["status"] for r in old.to_dict("records")}
            new = [r for r in new if current.get((r["grid"], r["cell_id"])) in only_if]
        keys = {(r["grid"], r["cell_id"]) for r in new}
        keep = [_normalise(r) for r in old.to_dict("records")
                if (r["grid"], r["cell_id"]) not in keys]
        df = pd.DataFrame(keep + new, columns=REGISTRY_COLUMNS)
        df = df.sort_values(["grid", "cell_id"], kind="stable").reset_index(drop=True)
        df["attempts"] = df["attempts"].astype("Int64")
        df["pid"] = df["pid"].astype("Int64")
        for c in ("wall_s", "gpu_hours", "planned_gpu_hours"):
            df[c] = df[c].astype("Float64")
        df["gpus"] = df["gpus"].astype("Int64")
        provenance.write_parquet(df, layout.registry)


def registry_rows(grid: str, layout: Layout | None = None) -> dict[str, dict[str, Any]]:
    df = read_registry(layout)
    df = df[df["grid"] == grid]
    return {r["cell_id"]: r for r in df.to_dict("records")}


# ---------------------------------------------------------------- state of a cell
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _int0(v: Any) -> int:
    return 0 if v is None or pd.isna(v) else int(v)


def _pid_alive(pid: Any) -> bool:
    if pid is None or pd.isna(pid):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_job_alive(job_id: str) -> bool | None:
    """True/False from squeue; None where squeue is not available (not a Slurm machine)."""
    import shutil
    import subprocess

    if not job_id or shutil.which("squeue") is None:
        return None
    out = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
    return bool(out.stdout.strip()) if out.returncode == 0 else False


def cell_dir(cell: Cell, layout: Layout) -> Path:
    grid_dir = paths.safe_child(layout.executed, cell.grid, "grid name")
    return paths.safe_child(grid_dir, cell.cell_id, "cell name")


def cell_status(cell: Cell, row: Mapping[str, Any] | None, layout: Layout) -> str:
    """done | missing | changed | failed | interrupted | running | queued | incomplete.

    ``done`` needs all three to agree: the registry row, the cell manifest (same
    fingerprint) and the outputs it lists (executed notebooks by hash, run folders' DONE).
    """
    if row is None:
        return "missing"
    if row.get("fingerprint") != cell.fingerprint:
        return "changed"
    status = row.get("status")
    if status in ("running", "queued"):
        here = row.get("host") == socket.gethostname() and _pid_alive(row.get("pid"))
        job = _slurm_job_alive(row.get("job_id") or "")
        return status if here or job else "interrupted"
    if status != "done":
        return status or "missing"
    manifest = cell_dir(cell, layout) / "cell.json"
    if not manifest.exists():
        return "incomplete"
    m = provenance.read_json(manifest)
    if m.get("extra", {}).get("fingerprint") != cell.fingerprint:
        return "changed"
    for rel, digest in m.get("outputs", {}).items():
        p = layout.root / rel
        if not p.exists() or (p.is_file() and p.suffix == ".ipynb" and provenance.sha256_file(p) != digest):
            return "incomplete"
    return "done"


TO_RUN = {"missing", "changed", "failed", "interrupted", "incomplete"}


# ---------------------------------------------------------------- running one cell
def _done_runs(layout: Layout) -> dict[str, int]:
    if not layout.runs.exists():
        return {}
    return {p.parent.name: p.stat().st_mtime_ns for p in layout.runs.glob("*/DONE")}


def _matches(run_dir: Path, axes: Mapping[str, Any]) -> bool:
    """A run belongs to a cell when its manifest agrees with every axis it records."""
    mpath = run_dir / "manifest.json"
    if not mpath.exists():
        return True
    params = provenance.read_json(mpath).get("parameters", {})
    return all(str(params[a]) == str(v) for a, v in axes.items() if a in params)


def _new_runs(before: Mapping[str, int], layout: Layout, axes: Mapping[str, Any]) -> list[str]:
    after = _done_runs(layout)
    fresh = [r for r, t in after.items() if before.get(r) != t]
    return sorted(r for r in fresh if _matches(layout.runs / r, axes))


def _expected_runs(notebook: Path, params: Mapping[str, Any], layout: Layout) -> list[str]:
    """Finished runs a fine-tuning notebook stands for, by their run id.

    A notebook with list parameters ``methods`` and ``value_sets`` trains one run per pair,
    named by ``valuealign.training`` from its parameters; computing the ids (on the machine
    that ran the notebook: the id records the resolved quantization) finds runs that the
    notebook skipped because they were already finished, which no DONE time stamp shows.
    """
    specs = config.notebook_parameters(notebook)
    if not {"methods", "value_sets"} <= set(specs):
        return []
    try:
        from valuealign import training
    except ImportError:
        return []
    full = {**{k: s.default for k, s in specs.items()}, **params}
    ids = []
    for method in full["methods"] or []:
        for value_set in full["value_sets"] or []:
            try:
                rid = training.params_for_run(full, method, value_set, data_root=layout.data_root(
                    str(full.get("data_source", "survey")))).run_id
            except Exception:  # noqa: BLE001 - not a training notebook after all
                return []
            if training.run_status(layout.runs / rid) == "finished":  # DONE *and* its adapter
                ids.append(rid)
    return ids


def run_lineages(run_ids: Sequence[str], layout: Layout) -> dict[str, list[str]]:
    """Per run of a cell, the chain it continues (run manifest ``extra.lineage``: base model, then
    each parent run, then the run), so the registry shows base -> survey -> consultation."""
    out: dict[str, list[str]] = {}
    for rid in run_ids:
        manifest = layout.runs / rid / "manifest.json"
        if manifest.exists():
            extra = provenance.read_json(manifest).get("extra") or {}
            out[rid] = [str(x) for x in (extra.get("lineage") or [rid])]
    return out


def _metrics(run_ids: Sequence[str], layout: Layout) -> dict[str, Any]:
    """Small numeric summary of a cell's runs for the registry and the index.

    From the combined evaluation table ``runs/eval_summary.parquet`` that notebook 04 writes
    (rows keyed by ``run``; ``metric``/``mean`` -> ``<split>:<metric>``, averaged over the
    cell's runs and evaluations, on the run's own value set); empty before an evaluation.
    """
    summary = layout.runs / "eval_summary.parquet"
    if not summary.exists() or not run_ids:
        return {}
    df = pd.read_parquet(summary)
    if not {"run", "metric", "mean"} <= set(df.columns):
        return {}
    df = df[df["run"].isin(run_ids)]
    if {"target_value_set", "value_set"} <= set(df.columns):
        df = df[df["target_value_set"] == df["value_set"]]
    split = df["split"].astype(str) + ":" if "split" in df.columns else ""
    means = df.assign(k=split + df["metric"].astype(str)).groupby("k")["mean"].mean()
    return {k: round(float(v), 6) for k, v in means.items() if pd.notna(v)}


def _short_error(err: BaseException, notebook: str) -> str:
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    return f"{notebook}: {ename}: {evalue}"[:2000]


@contextlib.contextmanager
def _root_env(layout: Layout, figures_dir: Path | None = None) -> Iterator[None]:
    """Point the notebooks' kernels (which inherit the environment) at the layout's tree.

    ``figures_dir`` (a cell's own folder) redirects what the notebooks save as figures, tables
    and thesis macros away from ``figures/``: a sweep cell re-running notebook 04 used to
    overwrite the thesis's evaluation figures and macros with that cell's results.
    """
    env = {"VALUEALIGN_ROOT": str(layout.root)}
    if figures_dir is not None:
        env[paths.FIGURES_ENV] = str(figures_dir)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cell(cell: Cell, layout: Layout | None = None, job_id: str | None = None) -> dict[str, Any]:
    """Execute a cell's notebooks in order; record it in the registry; never raises on failure.

    A failing notebook stops the cell (the next notebook would read what it did not write);
    its executed copy, with the failing cell and traceback, stays in the cell's folder.
    The cell's folder is locked while it runs (``valuealign.locks``): a cell that another
    sweep is running is left to it (status ``locked``, the holder named), the registry untouched.
    """
    from valuealign import locks

    layout = layout or Layout()
    out_dir = cell_dir(cell, layout)
    try:
        lock = locks.hold(locks.sibling_lock(out_dir), f"sweep cell {cell.grid}/{cell.cell_id}")
        lock.__enter__()
    except locks.LockHeldError as err:
        print(f"[{cell.grid}] {cell.cell_id}: not run: {err}", file=sys.stderr, flush=True)
        return {"grid": cell.grid, "cell_id": cell.cell_id, "status": "locked", "error": str(err)}
    try:
        return _run_cell_locked(cell, layout, out_dir, job_id)
    finally:
        lock.__exit__(None, None, None)


def _run_cell_locked(cell: Cell, layout: Layout, out_dir: Path, job_id: str | None) -> dict[str, Any]:
    """:func:`run_cell` while holding the cell's lock."""
    from valuealign import notebooks as nbrun

    out_dir.mkdir(parents=True, exist_ok=True)
    for nb in cell.notebooks:  # a previous attempt's notebooks must not pass for this one's
        for suffix in (".ipynb", ".html"):
            (out_dir / f"{nb}{suffix}").unlink(missing_ok=True)
    (out_dir / "cell.json").unlink(missing_ok=True)
    prev = registry_rows(cell.grid, layout).get(cell.cell_id) or {}
    row: dict[str, Any] = {
        "grid": cell.grid, "cell_id": cell.cell_id, "axes": cell.axes,
        "parameters": cell.parameters, "fingerprint": cell.fingerprint, "status": "running",
        "started": _now(), "finished": None, "wall_s": None, "executed_dir": layout.rel(out_dir),
        "attempts": _int0(prev.get("attempts")) + 1, "host": socket.gethostname(),
        "pid": os.getpid(), "job_id": job_id or prev.get("job_id"), "error": None,
        "notebooks": [], "run_ids": [], "run_folder": None, "metrics": {},
        "gpus": budget.visible_gpus(), "gpu_hours": None, "planned_gpu_hours": cell.planned_gpu_hours,
    }
    upsert_registry([row], layout)
    print(f"[{cell.grid}] {cell.cell_id}: running {', '.join(cell.notebooks)}", flush=True)
    t0 = time.time()
    before = _done_runs(layout)
    run_ids: list[str] = []
    executed: list[Path] = []
    manifest = provenance.Manifest(f"sweep:{cell.grid}:{cell.cell_id}",
                                   parameters=cell.parameters, seed=cell.axes.get("seed"))
    status, error = "done", None
    try:
        for nb in cell.notebooks:
            params = render(cell.parameters[nb], {"run_ids": run_ids})
            target = out_dir / f"{nb}.ipynb"
            try:
                with _root_env(layout, figures_dir=out_dir / "figures"):
                    nbrun.execute(layout.notebooks / f"{nb}.ipynb", out_dir, params, html=True)
            finally:
                if target.exists():
                    executed.append(target)
            found = _expected_runs(layout.notebooks / f"{nb}.ipynb", params, layout)
            run_ids = sorted(set(run_ids) | set(found or _new_runs(before, layout, cell.axes)))
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted (KeyboardInterrupt)"
        raise
    except Exception as err:  # noqa: BLE001 - recorded, and the sweep goes on
        status, error = "failed", _short_error(err, nb)
        print(f"[{cell.grid}] {cell.cell_id}: FAILED in {error}", file=sys.stderr, flush=True)
    finally:
        row.update(
            status=status, error=error, finished=_now(), wall_s=round(time.time() - t0, 3),
            gpu_hours=budget.measured_gpu_hours(time.time() - t0, row["gpus"]),
            notebooks=[layout.rel(p) for p in executed], run_ids=run_ids,
            run_folder=layout.rel(layout.runs / run_ids[0]) if len(run_ids) == 1 else (
                layout.rel(layout.runs) if run_ids else None),
            metrics=_metrics(run_ids, layout) if status == "done" else {},
            lineage=run_lineages(run_ids, layout),
        )
        if status == "done":
            manifest.outputs = {layout.rel(p): provenance.sha256_file(p) for p in executed}
            manifest.outputs.update({layout.rel(layout.runs / r / "DONE"): "" for r in run_ids})
            manifest.extra = {"fingerprint": cell.fingerprint, "grid": cell.grid,
                              "cell_id": cell.cell_id, "axes": cell.axes, "run_ids": run_ids}
            manifest.write(out_dir / "cell.json")
        upsert_registry([row], layout)
    print(f"[{cell.grid}] {cell.cell_id}: {status} in {row['wall_s']:.1f} s", flush=True)
    return row


def _run_cell_worker(cell: Cell, root: str) -> dict[str, Any]:
    """Entry for process pools (picklable, module level)."""
    return run_cell(cell, Layout(Path(root)))


def run_cell_job(cell: Cell, root: str) -> dict[str, Any]:
    """Entry of one Slurm array task (or submitit local job): run the cell, refresh the index."""
    env_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job_id = (f"{env_job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if env_job
              else os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID"))
    layout = Layout(Path(root))
    row = run_cell(cell, layout, job_id=job_id)
    with contextlib.suppress(Exception):  # the index is a convenience; the registry is the record
        write_index(cell.grid, layout)
    return row


# ---------------------------------------------------------------- plan, executors
def plan(grid: Grid, layout: Layout) -> list[tuple[Cell, str]]:
    rows = registry_rows(grid.name, layout)
    return [(c, cell_status(c, rows.get(c.cell_id), layout)) for c in grid.cells]


def describe(grid: Grid, states: Sequence[tuple[Cell, str]]) -> str:
    lines = [f"grid {grid.name}: {len(states)} cells "
             f"({sum(s == 'done' for _, s in states)} done, {sum(s in TO_RUN for _, s in states)} to run)"]
    for cell, state in states:
        todo = "run " if state in TO_RUN else "skip"
        lines.append(f"  [{state:>11}] {todo} {cell.cell_id}")
        if state in TO_RUN:
            for nb in cell.notebooks:
                own = {k: v for k, v in cell.parameters[nb].items()
                       if k not in grid.profile or grid.profile[k] != v}
                ps = ", ".join(f"{k}={v!r}" for k, v in own.items())
                n_prof = len(cell.parameters[nb]) - len(own)
                lines.append(f"        {nb}({ps}{f', + {n_prof} from the profile' if n_prof else ''})")
    return "\n".join(lines)


def run_local(cells: Sequence[Cell], layout: Layout, workers: int = 1) -> list[dict[str, Any]]:
    if workers <= 1 or len(cells) <= 1:
        return [run_cell(c, layout) for c in cells]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_run_cell_worker, cells, [str(layout.root)] * len(cells)))


def slurm_parameters(grid: Grid, n_cells: int) -> dict[str, Any]:
    """The grid's resources as submitit ``SlurmExecutor`` parameters (= sbatch flags)."""
    s = grid.slurm
    p: dict[str, Any] = {
        "job_name": s.get("job_name", f"valuealign-{grid.name}"),
        "time": int(s.get("time_min", 240)),
        "gpus_per_node": int(s.get("gpus_per_node", 1)),
        "cpus_per_task": int(s.get("cpus_per_task", 8)),
        "array_parallelism": int(s.get("array_parallelism", max(1, n_cells))),
    }
    if "mem_gb" in s:
        mem = float(s["mem_gb"])
        p["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    for key in ("partition", "account", "qos", "constraint"):
        if s.get(key):
            p[key] = str(s[key])
    if s.get("setup"):
        p["setup"] = [str(x) for x in s["setup"]]
    if s.get("additional"):
        p["additional_parameters"] = dict(s["additional"])
    return p


# What submitit's SlurmExecutor adds to every job (submitit 1.5): one node, logs appended, the
# USR2 signal 90 s before the time limit (it checkpoints or requeues), and its wckey.
SUBMITIT_SBATCH_DEFAULTS: dict[str, Any] = {"nodes": 1, "open-mode": "append", "signal": "USR2@90",
                                            "wckey": "submitit"}


def sbatch_script(grid: Grid, n_cells: int, folder: Path) -> str:
    """The sbatch script of the grid's job array (one task per cell), written without submitting.

    Why written here: ``--dry-run`` shows the researcher what the cluster will receive on a
    machine without Slurm, and submitit offers no public way to render its script. The text
    is the one ``submit`` makes submitit write for the same parameters (flags sorted, the
    log paths of an array task, the grid's ``setup`` lines, the ``srun`` of submitit's
    entry point); ``tests/test_sweep.py`` compares the two.
    """
    p = slurm_parameters(grid, n_cells)
    logs = str(folder).replace("%j", "%A_%a")
    flags: dict[str, Any] = {
        **SUBMITIT_SBATCH_DEFAULTS, "job_name": p["job_name"], "time": p["time"],
        "gpus_per_node": p["gpus_per_node"], "cpus_per_task": p["cpus_per_task"],
        "array": f"0-{n_cells - 1}%{min(p['array_parallelism'], n_cells)}",
        "output": f"{logs}/%A_%a_0_log.out", "error": f"{logs}/%A_%a_0_log.err",
        **{k: p[k] for k in ("mem", "partition", "account", "qos", "constraint") if k in p},
        **p.get("additional_parameters", {}),
    }
    lines = ["#!/bin/bash", "", "# Parameters"]
    for key in sorted(flags):
        value = flags[key]
        lines.append(f"#SBATCH --{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
    if p.get("setup"):
        lines += ["", "# setup", *p["setup"]]
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    srun = shlex.join(["srun", "--unbuffered", "--output", f"{logs}/%A_%a_%t_log.out",
                       "--error", f"{logs}/%A_%a_%t_log.err"])
    lines += ["", "# command", "export SUBMITIT_EXECUTOR=slurm", f"{srun} {command}", ""]
    return "\n".join(lines)


def submit(cells: Sequence[Cell], grid: Grid, layout: Layout, cluster: str = "slurm",
           wait: bool = False) -> list[Any]:
    """Submit one job array (one task per cell) through submitit's AutoExecutor.

    ``cluster="local"``/``"debug"`` run the same path without Slurm (used by the tests).
    """
    import submitit

    folder = layout.executed / grid.name / "submitit" / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    sp = slurm_parameters(grid, len(cells))
    if cluster == "slurm":
        ex.update_parameters(**{f"slurm_{k}": v for k, v in sp.items()})
    else:
        ex.update_parameters(timeout_min=sp["time"], name=sp["job_name"])
    # queued rows first: a task that starts at once must find (and overwrite) its row
    upsert_registry([_queued_row(c, layout) for c in cells], layout)
    jobs = ex.map_array(run_cell_job, list(cells), [str(layout.root)] * len(cells))
    local = {} if cluster == "slurm" else {"host": socket.gethostname()}
    upsert_registry([{**_queued_row(c, layout), **local, "job_id": str(j.job_id),
                      "pid": int(j.job_id) if local and str(j.job_id).isdigit() else None}
                     for c, j in zip(cells, jobs, strict=True)], layout, only_if={"queued"})
    for c, j in zip(cells, jobs, strict=True):
        print(f"  submitted {c.cell_id} as job {j.job_id}")
    if wait:
        for j in jobs:
            with contextlib.suppress(Exception):  # a failed cell is in the registry already
                j.result()
    return jobs


def _queued_row(cell: Cell, layout: Layout) -> dict[str, Any]:
    prev = registry_rows(cell.grid, layout).get(cell.cell_id) or {}
    return {"grid": cell.grid, "cell_id": cell.cell_id, "axes": cell.axes,
            "parameters": cell.parameters, "fingerprint": cell.fingerprint, "status": "queued",
            "started": None, "finished": None, "executed_dir": layout.rel(cell_dir(cell, layout)),
            "attempts": _int0(prev.get("attempts")), "host": None, "pid": None,
            "notebooks": [], "run_ids": [], "metrics": {}}


# ---------------------------------------------------------------- after the grid
def finalize(grid: Grid, layout: Layout) -> Path | None:
    """Rebuild the combined tables/figures over every finished cell of the grid.

    ``finalize: {notebook, parameters}`` runs that notebook once more (the evaluation
    notebook over ``{all_run_ids}``) into ``executed/<grid>/_combined/``. Without
    ``finalize`` nothing is rebuilt.
    """
    if not grid.finalize:
        return None
    rows = read_registry(layout)
    current = {(c.cell_id, c.fingerprint) for c in grid.cells}  # not cells since removed
    in_grid = pd.Series([(c, f) in current for c, f in zip(rows["cell_id"], rows["fingerprint"],
                                                          strict=True)], index=rows.index, dtype=bool)
    rows = rows[(rows["grid"] == grid.name) & (rows["status"] == "done") & in_grid]
    if rows.empty:
        print(f"[{grid.name}] finalize: no finished cell yet, nothing to combine")
        return None
    from valuealign import notebooks as nbrun

    run_ids = sorted({r for v in rows["run_ids"] for r in json.loads(v or "[]")})
    axes = [json.loads(a) for a in rows["axes"]]
    ctx: dict[str, Any] = {"all_run_ids": run_ids}
    for a in grid.axes:
        ctx[f"all_{a}"] = sorted({x[a] for x in axes if a in x}, key=str)
    params = render(grid.finalize["parameters"], ctx)
    out = paths.safe_child(layout.executed, grid.name, "grid name") / "_combined"
    print(f"[{grid.name}] finalize: {grid.finalize['notebook']} over {len(rows)} cells")
    try:
        with _root_env(layout):
            return nbrun.execute(layout.notebooks / f"{grid.finalize['notebook']}.ipynb", out, params)
    except Exception as err:  # noqa: BLE001 - the index still links the failing notebook
        print(f"[{grid.name}] finalize FAILED: {_short_error(err, grid.finalize['notebook'])}",
              file=sys.stderr)
        return None


_STATUS_COLOR = {"done": "#009E73", "failed": "#D55E00", "running": "#0072B2",
                 "queued": "#56B4E9", "interrupted": "#E69F00"}


def _states(grid: Grid, layout: Layout) -> dict[str, str]:
    return {c.cell_id: s for c, s in plan(grid, layout)}


def write_index(grid_name: str, layout: Layout | None = None,
                states: Mapping[str, str] | None = None) -> Path:
    """``executed/<grid>/index.html``: every cell, its status and links to its notebooks.

    ``states``: the live state of each cell of the grid as it is now (an interrupted cell's
    row still says ``running``; a cell not run yet has no row); rows of cells no longer in
    the grid are marked as such. Without it, the registry's status is shown.
    """
    layout = layout or Layout()
    base = paths.safe_child(layout.executed, grid_name, "grid name")
    rows = read_registry(layout)
    rows = rows[rows["grid"] == grid_name]
    if states is not None:
        missing = [{"grid": grid_name, "cell_id": c, "axes": "{}", "status": s}
                   for c, s in states.items() if c not in set(rows["cell_id"])]
        rows = pd.concat([rows, pd.DataFrame([_normalise(m) for m in missing],
                                             columns=REGISTRY_COLUMNS)], ignore_index=True)
    esc = html.escape
    body = []
    for r in rows.sort_values("cell_id").to_dict("records"):
        links = []
        for nb in json.loads(r["notebooks"]) if isinstance(r["notebooks"], str) else []:
            p = layout.root / nb
            h = p.with_suffix(".html")
            rel = os.path.relpath(h if h.exists() else p, base)
            links.append(f'<a href="{esc(rel)}">{esc(p.stem)}</a>')
        metrics = json.loads(r["metrics"] or "{}") if isinstance(r["metrics"], str) else {}
        mtxt = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in list(metrics.items())[:6])
        status = r["status"] if states is None else states.get(
            r["cell_id"], f"{r['status']} (not in the grid any more)")
        color = _STATUS_COLOR.get(status, "#000000")
        finished = "" if r["finished"] is None or pd.isna(r["finished"]) else str(r["finished"])
        error = "" if r["error"] is None or pd.isna(r["error"]) else str(r["error"])
        wall = "" if pd.isna(r["wall_s"]) else f"{r['wall_s']:.0f} s"
        body.append(
            f"<tr><td><code>{esc(r['cell_id'])}</code></td>"
            f"<td>{esc(', '.join(f'{k}={v}' for k, v in json.loads(r['axes'] or '{}').items()))}</td>"
            f'<td style="color:{color};font-weight:bold">{esc(str(status))}</td>'
            f"<td>{' '.join(links) or '-'}</td><td>{esc(finished)}</td>"
            f"<td>{wall}</td>"
            f"<td>{esc(mtxt)}</td><td>{esc(error)[:300]}</td></tr>")
    counts = pd.Series([states.get(c, "not in grid") for c in rows["cell_id"]] if states is not None
                       else list(rows["status"]), dtype="object").value_counts().to_dict()
    combined = sorted((base / "_combined").glob("*.html")) if (base / "_combined").exists() else []
    comb = "".join(f'<li><a href="{esc(os.path.relpath(p, base))}">{esc(p.stem)}</a></li>'
                   for p in combined)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sweep {esc(grid_name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}</style></head>
<body><h1>Experiment grid <code>{esc(grid_name)}</code></h1>
<p>{len(rows)} cells: {esc(', '.join(f'{v} {k}' for k, v in sorted(counts.items())))}.
Each link opens the executed notebook (HTML rendering); a failed cell's notebook shows the
failing cell and its traceback. Source of truth: <code>runs/registry.parquet</code>.</p>
{f'<h2>Combined results</h2><ul>{comb}</ul>' if comb else ''}
<table><tr><th>cell</th><th>axes</th><th>status</th><th>notebooks</th><th>finished (UTC)</th>
<th>wall</th><th>metrics</th><th>error</th></tr>
{chr(10).join(body)}
</table></body></html>
"""
    return provenance.write_text(page, base / "index.html")


# ---------------------------------------------------------------- GPU budget
def estimate_grid(grid: Grid, layout: Layout) -> list[budget.CellEstimate]:
    """Estimated GPU-hours of every cell (see :mod:`valuealign.budget`)."""
    out = []
    for cell in grid.cells:
        pairs: list[tuple[str, str, str]] = []
        params: dict[str, Any] = {}
        for nb in cell.notebooks:
            file = layout.notebooks / f"{nb}.ipynb"
            if found := _training_pairs(file, cell.parameters[nb]):
                pairs += found
                params = {**{k: s.default for k, s in config.notebook_parameters(file).items()},
                          **cell.parameters[nb]}
        out.append(budget.estimate_cell(cell.cell_id, pairs, params, layout.data_root, grid.budget,
                                        layout.root / paths.BENCHMARK_RESULTS.relative_to(paths.ROOT)))
    return out


def used_gpu_hours(grid: Grid, layout: Layout) -> float:
    """Measured GPU-hours of the grid's finished cells (registry), 0 where unrecorded."""
    rows = registry_rows(grid.name, layout).values()
    return float(sum(float(r["gpu_hours"]) for r in rows
                     if r.get("status") == "done" and r.get("gpu_hours") is not None
                     and not pd.isna(r.get("gpu_hours"))))


# ---------------------------------------------------------------- command line
def sweep(grid_path: Path | str, *, layout: Layout | None = None, executor: str = "local",
          workers: int | None = None, dry_run: bool = False, wait: bool = False,
          collect: bool = False, over_budget: bool = False,
          gpu_hour_usd: float | None = None) -> int:
    """Validate, plan and run a grid; returns the number of failed cells (0 = all good).

    Refuses (:class:`budget.BudgetError`) a grid whose estimated GPU-hours exceed its
    ``budget_gpu_hours`` unless ``over_budget``; ``--dry-run`` prints the estimate instead.
    """
    layout = layout or Layout()
    t0 = time.time()
    grid = load_grid(grid_path, layout)
    if gpu_hour_usd is not None:
        grid.budget = dataclasses.replace(grid.budget, gpu_hour_usd=float(gpu_hour_usd))
    states = plan(grid, layout)
    todo = [c for c, s in states if s in TO_RUN]
    estimates = {} if collect else {e.cell_id: e for e in estimate_grid(grid, layout)}
    used = used_gpu_hours(grid, layout)
    todo = [dataclasses.replace(c, planned_gpu_hours=round(estimates[c.cell_id].gpu_hours, 6))
            if c.cell_id in estimates else c for c in todo]
    if dry_run:
        print(describe(grid, states))
        print(budget.report(list(estimates.values()), {c.cell_id for c in todo}, grid.budget, used))
        if executor == "slurm" and todo:
            folder = layout.executed / grid.name / "submitit" / "%j"
            text = sbatch_script(grid, len(todo), folder)
            target = provenance.write_text(text, layout.executed / grid.name / "preview.sbatch")
            print(f"sbatch script for {len(todo)} array tasks (not submitted): {layout.rel(target)}")
        return 0
    if collect:
        finalize(grid, layout)
        index = write_index(grid.name, layout, _states(grid, layout))
        print(f"[{grid.name}] index: {layout.rel(index)}")
        return 0
    if not todo:
        index = layout.executed / grid.name / "index.html"
        if not index.exists():
            write_index(grid.name, layout, _states(grid, layout))
        busy = [c.cell_id for c, s in states if s != "done"]
        print(f"[{grid.name}] nothing to do: {len(states) - len(busy)}/{len(states)} cells done"
              f"{', still running or queued: ' + ', '.join(busy) if busy else ''} "
              f"(checked in {time.time() - t0:.1f} s); index: {layout.rel(index)}")
        return 0
    print(describe(grid, states), flush=True)
    planned = sum(c.planned_gpu_hours or 0.0 for c in todo)
    budget.check_budget(planned, used, grid.budget, str(grid.path), over_budget)
    if executor in ("slurm", "submitit-local", "submitit-debug"):
        cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[executor]
        submit(todo, grid, layout, cluster=cluster, wait=wait or cluster != "slurm")
        if not (wait or cluster != "slurm"):
            write_index(grid.name, layout, _states(grid, layout))
            print(f"[{grid.name}] submitted {len(todo)} cells; when they have finished run "
                  f"`python -m valuealign.sweep {grid_path} --collect` for the combined results")
            return 0
    else:
        run_local(todo, layout, workers or int(grid.local.get("workers", 1)))
    finalize(grid, layout)
    index = write_index(grid.name, layout, _states(grid, layout))
    final = registry_rows(grid.name, layout)
    failed = sorted(c.cell_id for c in grid.cells if final.get(c.cell_id, {}).get("status") != "done")
    print(f"[{grid.name}] {len(grid.cells) - len(failed)}/{len(grid.cells)} cells done in "
          f"{time.time() - t0:.0f} s; index: {layout.rel(index)}")
    if failed:
        print(f"[{grid.name}] not done: {', '.join(failed)} (errors in the registry and the index; "
              f"run the sweep again to retry them)", file=sys.stderr)
    return len(failed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path, help="grid file, e.g. configs/grids/smoke.yaml")
    ap.add_argument("--dry-run", action="store_true",
                    help="list the cells, their state and what each would run; run nothing "
                         "(with --executor slurm also write the sbatch script)")
    ap.add_argument("--executor", default="local",
                    choices=["local", "slurm", "submitit-local", "submitit-debug"])
    ap.add_argument("--workers", type=int, default=None, help="parallel cells (local executor)")
    ap.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then collect")
    ap.add_argument("--collect", action="store_true",
                    help="only rebuild the combined results and the index (after Slurm jobs)")
    ap.add_argument("--over-budget", action="store_true",
                    help="run even though the estimated GPU-hours exceed the grid's budget_gpu_hours")
    ap.add_argument("--gpu-hour-usd", type=float, default=None,
                    help="price of one GPU-hour for the cost estimate (default: the grid's gpu_hour_usd)")
    args = ap.parse_args(argv)
    try:
        failed = sweep(args.grid, executor=args.executor, workers=args.workers,
                       dry_run=args.dry_run, wait=args.wait, collect=args.collect,
                       over_budget=args.over_budget, gpu_hour_usd=args.gpu_hour_usd)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

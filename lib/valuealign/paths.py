"""Every path of the compendium, from the repository root.

Notebooks run with their own folder as working directory (papermill, nbval, JupyterLab),
so nothing may depend on the cwd: all paths are derived from this file's location, or
from ``VALUEALIGN_ROOT`` when a test or a cluster job points the pipeline at a copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def _find_root() -> Path:
    env = os.environ.get("VALUEALIGN_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


ROOT: Path = _find_root()
# Shipped public data lives in data/raw/<source>/ (committed, read-only); licensed
# respondent-level files are dropped into data/raw/ by the user and never committed.
DATA = ROOT / "data"
RAW = DATA / "raw"
INTERIM = DATA / "interim"
PROCESSED = DATA / "processed"
CACHE = DATA / "cache"
REFERENCE = DATA / "reference"  # texts written for this project (value prototypes, prompts)

GOQA_DIR = RAW / "goqa"
WVS7_DIR = RAW / "wvs7"
POLIS_DIR = RAW / "polis"
VALUEEVAL_DIR = RAW / "touche23_valueeval"
DILEMMAS_DIR = RAW / "daily_dilemmas"

ITEMS = PROCESSED / "items.parquet"
DISTRIBUTIONS = PROCESSED / "distributions.parquet"
DROPPED = PROCESSED / "dropped_rows.parquet"
TAXONOMY = PROCESSED / "taxonomy.parquet"
ALIGNMENT = PROCESSED / "alignment"
CONSULTATION = PROCESSED / "consultation"

NOTEBOOKS = ROOT / "notebooks"
CONFIGS = ROOT / "configs"
EXECUTED = ROOT / "executed"
# What the thesis includes. A sweep cell sets VALUEALIGN_FIGURES to a folder of its own, so that
# re-running notebook 04 for one cell cannot replace the thesis's figures and macros.
FIGURES_ENV = "VALUEALIGN_FIGURES"
FIGURES = Path(os.environ[FIGURES_ENV]).resolve() if os.environ.get(FIGURES_ENV) else ROOT / "figures"
THESIS = ROOT / "thesis"
RUNS = ROOT / "runs"
MODELS = ROOT / "models"
BENCHMARKS = ROOT / "benchmarks"
BENCHMARK_RESULTS = BENCHMARKS / "results"

BUNDLED_MODEL = MODELS / "smollm2-135m-instruct"


def ensure_dirs(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)


def relative(path: Path) -> str:
    """Path relative to the repo root, for manifests that must not leak a user's home."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# A name that becomes one path component (value set, run id, grid, cell): letters, digits,
# `.`, `_`, `-`, `+`, `=`, not starting with a dot (no `..`, no hidden folders), no separators.
SLUG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=-]{0,199}")


class UnsafePathError(ValueError):
    """A name from a config, a parameter or a manifest would leave the folder it belongs in."""


def safe_child(root: Path | str, name: str, what: str) -> Path:
    """``root / name``, refusing any name that is not one plain folder/file name inside ``root``.

    Names come from notebooks' parameters, profiles and grid files; `../../x` or an absolute
    path there would read or write anywhere. ``what`` names the parameter for the error.
    """
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        raise UnsafePathError(
            f"{what} {name!r} is not a safe name: use letters, digits and . _ - + = "
            f"(1-200 characters, not starting with '.'; no '/', '\\\\' or '..')")
    base = Path(root).resolve()
    child = (base / name).resolve()
    if child.parent != base:
        raise UnsafePathError(f"{what} {name!r} resolves to {child}, outside {base}")
    return Path(root) / name

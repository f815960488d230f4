"""Shared test setup: offline hubs, headless plotting, and the pipeline marker.

Tests marked ``pipeline`` check artefacts that the notebooks write; ``make test`` runs the
notebooks (nbval) before them and sets VALUEALIGN_PIPELINE=1, which turns a missing
artefact into a failure instead of a skip.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def require_artefact(path: Path) -> Path:
    """Skip when run alone; fail inside `make test`, where the notebooks ran first."""
    if not path.exists():
        if os.environ.get("VALUEALIGN_PIPELINE") == "1":
            pytest.fail(f"{path} was not produced by the notebook pipeline")
        pytest.skip(f"{path} not built yet (run `make all` or `make test`)")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run notebooks first (they build the artefacts), then unit tests, then pipeline checks."""
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("pipeline"):
            return 2
        return 0 if str(item.fspath).endswith(".ipynb") else 1

    items.sort(key=rank)

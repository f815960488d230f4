"""The artefact registry: every figure, table and macro group saved into ``figures/`` and who made it.

Each saved artefact is recorded in ``figures/manifest.json`` (which notebook and run made it,
from which inputs, with checksums, when) so that the build can check that each file the thesis
includes has a producer (:mod:`valuealign.thesis`). The JSON stores in ``figures/`` are
read-modify-written under one file lock, because parallel sweep workers save into them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from valuealign import paths, provenance
from valuealign.style import TEXTWIDTH_IN

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def check_name(name: str) -> None:
    """A figure/table name becomes a LaTeX file name: lower-case letters, digits, '-' or '_'."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"figure/table name {name!r} must be lower-case letters, digits, '-' or '_' "
            "(it becomes a LaTeX file name)"
        )


@contextlib.contextmanager
def figures_lock() -> Any:
    """Serialise read-modify-write of the shared JSON stores (parallel sweep workers)."""
    paths.FIGURES.mkdir(parents=True, exist_ok=True)
    with open(paths.FIGURES / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def read_json_store(store: Path) -> dict[str, Any]:
    """A JSON object store of ``figures/`` (empty if absent; a clear error if it is not one)."""
    if not store.exists():
        return {}
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{store} is not valid JSON ({err}); delete it and re-run the notebooks") from err
    if not isinstance(data, dict):
        raise ValueError(f"{store} must hold a JSON object, found {type(data).__name__}")
    return data


def update_json_store(store: Path, key: str, value: Any) -> dict[str, Any]:
    """Set ``key`` of a JSON store (atomically); call it under :func:`figures_lock`."""
    data = read_json_store(store)
    data[key] = value
    provenance.write_json(data, store)
    return data


def read_manifest(figures_dir: Path | None = None) -> dict[str, Any]:
    """The artefact manifest ``figures/manifest.json`` (name -> entry); empty if none yet."""
    return read_json_store((figures_dir or paths.FIGURES) / "manifest.json")


def record_artefact(
    name: str, files: Sequence[Path], notebook: str | None, inputs: Iterable[Path | str] = (),
    run: str | None = None, extra: Mapping[str, Any] | None = None,
) -> None:
    """Record who made a figure/table and from what, in ``figures/manifest.json``.

    The notebook defaults to ``$VALUEALIGN_NOTEBOOK`` (set by ``valuealign.notebooks``) and
    the run to ``$VALUEALIGN_RUN``. An input that does not exist is an error: a checksum
    of nothing would make the record claim a provenance it does not have.
    """
    input_hashes = {}
    for p in inputs:
        if not Path(p).exists():
            raise FileNotFoundError(f"input {p} of figure/table {name!r} does not exist")
        input_hashes[paths.relative(Path(p))] = provenance.sha256_tree(p)
    entry = {
        "files": [paths.relative(f) for f in files],
        "sha256": {paths.relative(f): provenance.sha256_file(f) for f in files},
        "notebook": notebook or os.environ.get("VALUEALIGN_NOTEBOOK"),
        "run": run or os.environ.get("VALUEALIGN_RUN"),
        "commit": provenance.git_state().get("commit"),
        "inputs": input_hashes,
        "made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **dict(extra or {}),
    }
    with figures_lock():
        update_json_store(paths.FIGURES / "manifest.json", name, entry)


def forget_unmade(notebook: str, since: float) -> list[str]:
    """Drop the artefacts ``notebook`` recorded before ``since`` (the start of its execution that
    just finished) from ``figures/manifest.json``, and delete their files; returns their names.

    Why: the manifest is keyed by name, so a figure or table a notebook no longer makes (renamed,
    or not made under the current parameters) stayed listed, was counted by notebook 06 and could
    still be included by the thesis. After a complete execution the notebook's entries are
    exactly what it made; ``check_thesis`` then names a thesis reference to a dropped one."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(since)))  # made_utc's resolution
    store = paths.FIGURES / "manifest.json"
    with figures_lock():
        data = read_json_store(store)
        stale = sorted(k for k, e in data.items() if isinstance(e, dict) and e.get("notebook") == notebook
                       and e.get("kind") != "macros" and str(e.get("made_utc") or "") < stamp)
        if not stale:
            return []
        for name in stale:
            for f in data.pop(name).get("files") or []:
                (paths.ROOT / f).unlink(missing_ok=True)
        provenance.write_json(data, store)
    return stale


def save_figure(
    fig: Any, name: str, *, notebook: str | None = None,
    inputs: Iterable[Path | str] = (), run: str | None = None, out_dir: Path | None = None,
) -> list[Path]:
    """Write ``figures/<name>.pdf`` (vector) and ``.png`` atomically, and record them.

    The figure is saved at its own size (no tight bounding box), which is the size the
    thesis prints it at; a figure wider than the text width is saved but warned about,
    and ``valuealign.thesis.check_thesis`` rejects it if the thesis includes it.
    """
    check_name(name)
    width, height = (float(v) for v in fig.get_size_inches())
    if width > TEXTWIDTH_IN + 1e-6:
        warnings.warn(
            f"figure {name!r} is {width:.2f} in wide, more than the thesis text width "
            f"{TEXTWIDTH_IN} in: make it with plotting.figsize(fraction) so it prints unscaled",
            stacklevel=2,
        )
    out_dir = out_dir or paths.FIGURES
    written = []
    for ext in ("pdf", "png"):
        target = out_dir / f"{name}.{ext}"
        with provenance.atomic_path(target, f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None)
        written.append(target)
    if Path(out_dir).resolve() == paths.FIGURES.resolve():
        record_artefact(name, written, notebook, inputs, run, extra={
            "kind": "figure", "width_in": round(width, 4), "height_in": round(height, 4),
        })
    return written

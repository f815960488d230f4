"""Provenance: atomic writes, content hashes and run manifests.

Why atomic: a notebook killed mid-write must never leave a truncated parquet that a later
stage would read as valid. Every artefact is written to a temporary file in the same folder
and renamed over the target (``os.replace`` is atomic on POSIX).
Why manifests: a number in the thesis must be traceable to the parameters, inputs, code
version and seed that produced it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from valuealign import paths

TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets",
    "sentence-transformers", "umap-learn", "hdbscan", "scikit-learn", "numpy", "pandas",
    "pyarrow", "scipy", "papermill",
)


def temp_prefix(target: Path | str) -> str:
    """Prefix of this process's temporaries of ``target``: ``.<name>.<host>.<pid>.``.

    Why host and pid: a temporary that a killed process left behind is recognised by the next
    writer of the same target (:func:`remove_stale_temps`) without touching a live one."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f".{Path(target).name}.{host}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(target: Path | str) -> list[Path]:
    """Remove temporaries of ``target`` (files or folders) left by a killed process of this host."""
    target = Path(target)
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{re.escape(host)}\.(\d+)\.")
    removed = []
    if not target.parent.is_dir():
        return removed
    for p in target.parent.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(target: Path | str) -> Path:
    """A fresh temporary folder next to ``target`` with the permissions of a normal folder.

    ``tempfile.mkdtemp`` makes it owner-only (0700), and renamed over ``target`` it used to
    leave e.g. data/processed/alignment/ unreadable to the group; stale ones are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_path(target: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched; one
    left by a killed process is removed by the next write of the same target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(
        prefix=temp_prefix(target), suffix=suffix or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artefacts are ordinary files
    try:
        yield tmp_path
        if tmp_path.is_dir():
            raise IsADirectoryError(tmp_path)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame, target: Path | str) -> Path:
    """Write a DataFrame atomically and reproducibly (same data -> same bytes)."""
    target = Path(target)
    with atomic_path(target, ".parquet") as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
    return target


def write_text(text: str, target: Path | str) -> Path:
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def write_json(obj: Any, target: Path | str) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", target)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return paths.relative(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path | str) -> str:
    """Hash of a file, or of every file under a folder (names and contents, sorted).

    A missing path is an error (FileNotFoundError naming it): hashing it as empty input let a
    manifest record an output that was never written."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():  # a missing output must not hash like an empty one
        raise FileNotFoundError(f"cannot hash {paths.relative(path)}: no such file or folder")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_state(root: Path = paths.ROOT) -> dict[str, Any]:
    """Commit and dirty flag; both None outside a git checkout (e.g. an exported tarball)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Manifest:
    """What produced an artefact. Use as a context manager to time the work it records.

    >>> with Manifest("00_survey_data", parameters=params, seed=0) as m:
    ...     m.add_inputs([paths.GOQA_DIR])
    ...     ...  # work
    ...     m.add_outputs([paths.ITEMS])
    >>> m.write(paths.PROCESSED / "00_survey_data.manifest.json")
    """

    stage: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    wall_time_s: float | None = None

    def __enter__(self) -> Manifest:
        self.started = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_time_s = round(time.time() - self.started, 3)

    def add_inputs(self, files: Iterable[Path | str]) -> None:
        for f in files:
            self.inputs[paths.relative(Path(f))] = sha256_tree(f)

    def add_outputs(self, files: Iterable[Path | str]) -> None:
        for f in files:
            self.outputs[paths.relative(Path(f))] = sha256_tree(f)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "parameters": dict(self.parameters),
            "seed": self.seed,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "git": git_state(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": package_versions(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "wall_time_s": self.wall_time_s,
            **({"extra": self.extra} if self.extra else {}),
        }

    def write(self, target: Path | str) -> Path:
        if self.wall_time_s is None:
            self.wall_time_s = round(time.time() - self.started, 3)
        return write_json(self.to_dict(), target)


STAGING_PREFIX = ".staging-"


class StagedOutputs:
    """A stage's outputs written to a staging folder and moved into place only when it succeeded.

    Why: a notebook that failed half-way (e.g. in a figure, after its data were written) used to
    leave its new outputs next to the old manifest, or overwrite good outputs with half of a
    run. Files are written under ``<root>/.staging-<stage>/`` and :meth:`commit` renames them
    over their targets (``os.replace``, atomic per file, same file system) at the very end. A
    staging folder left by a killed run is removed when the stage starts again.
    """

    def __init__(self, stage: str, root: Path | str | None = None) -> None:
        self.root = Path(root or paths.PROCESSED)
        if not paths.SLUG.fullmatch(stage):
            raise paths.UnsafePathError(f"stage {stage!r} is not a safe name")
        self.folder = self.root / f"{STAGING_PREFIX}{stage}"
        shutil.rmtree(self.folder, ignore_errors=True)  # left by a killed run
        self.folder.mkdir(parents=True)
        self.targets: dict[Path, Path] = {}

    def path(self, target: Path | str) -> Path:
        """Where to write ``target`` for now (same name, in the staging folder)."""
        target = Path(target)
        staged = self.folder / f"{len(self.targets)}-{target.name}"
        self.targets[target] = staged
        return staged

    def commit(self) -> list[Path]:
        """Move every staged file over its target; returns the targets."""
        missing = [paths.relative(t) for t, s in self.targets.items() if not s.exists()]
        if missing:
            raise FileNotFoundError(f"staged outputs never written: {', '.join(missing)}")
        for target, staged in self.targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        shutil.rmtree(self.folder, ignore_errors=True)
        return list(self.targets)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

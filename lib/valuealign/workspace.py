"""A workspace: a root of its own (``VALUEALIGN_ROOT``) for a profile whose outputs must not mix
with the embedded default's.

Why: every notebook writes to fixed places under the root (``data/processed/alignment``,
``runs/``, ``figures/``). A profile that runs other parameters there (the CPU rehearsal of a GPU
profile, the demo profile) would replace the embedded default's datasets and the thesis's
figures and macros. A workspace links the read-only inputs (raw data, reference texts, pinned
taxonomy, notebooks, configs, models, the embedding cache, the thesis sources notebook 06 checks the
figures against, the measured benchmark anchors the GPU budget reads) and keeps its own
``data/processed``, ``runs`` and ``figures``.

    .venv/bin/python -m valuealign.workspace executed/demo/workspace   # what `make all PROFILE=demo` runs
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from valuealign import paths

LINKED = ("data/raw", "data/reference", "data/pinned", "data/cache", "notebooks", "configs", "models",
          "thesis", "benchmarks/results")
OWN = ("data/processed", "runs", "figures", "executed")


def prepare(workspace: Path, *, fresh: bool = False, copy: Iterable[Path] = ()) -> Path:
    """Create (or complete) ``workspace``: links to :data:`LINKED` of this checkout, empty
    folders :data:`OWN`, and copies of ``copy`` (files under the root, e.g. notebook 01's
    outputs) at the same relative place. ``fresh`` deletes an existing workspace first;
    otherwise what is there is kept, so an incremental ``make`` resumes."""
    workspace = Path(workspace).resolve()
    if workspace == paths.ROOT:
        raise ValueError(f"workspace {workspace} is the repository root itself")
    if fresh and workspace.exists():
        shutil.rmtree(workspace)
    for rel in LINKED:
        src, dst = paths.ROOT / rel, workspace / rel
        if src.exists() and not dst.is_symlink() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src.resolve(), dst)
    for rel in OWN:
        (workspace / rel).mkdir(parents=True, exist_ok=True)
    for f in copy:
        f = Path(f)
        target = workspace / f.resolve().relative_to(paths.ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return workspace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path, help="folder to create or complete")
    ap.add_argument("--fresh", action="store_true", help="delete an existing workspace first")
    args = ap.parse_args(argv)
    print(f"workspace: {prepare(args.workspace, fresh=args.fresh)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

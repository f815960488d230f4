"""Tiny helper to write a source notebook from a list of (kind, source) cells.

Notebooks are committed without outputs; building them from a script keeps their JSON
clean and reviewable. Usage: ``python tools/nbbuild.py`` is not needed: import ``write``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat


def write(path: Path | str, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (valuealign)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        elif kind == "params":
            cell = nbformat.v4.new_code_cell(src)
            cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    Path(path).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")

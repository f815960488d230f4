"""One thesis style for every figure and table, written straight into ``figures/``.

Why: the thesis includes ``figures/<name>.pdf`` and ``figures/<name>.tex`` directly, so a
figure must be made at the size it is printed (fractions of the LaTeX text width), with
fonts like the document's and embedded, in colours readable by colour-blind readers.
Every saved artefact is recorded in ``figures/manifest.json`` (which notebook made it,
from which inputs) so that the build can check that each included file has a producer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from valuealign import paths, provenance

# The LaTeX \textwidth of thesis/main.tex in inches (set by its geometry); one setting.
TEXTWIDTH_IN: float = 6.0
BASE_FONT_PT: float = 9.0
GOLDEN = (5**0.5 - 1) / 2

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO: list[str] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
]
METHOD_NAMES: dict[str, str] = {
    "uniform": "Uniform", "base": "Base", "prompted": "Prompted", "sft": "SFT",
    "dpo": "DPO", "kto": "KTO", "oracle": "Oracle",
}
METHOD_COLORS: dict[str, str] = {
    "uniform": "#999999", "base": OKABE_ITO[7], "prompted": OKABE_ITO[4],
    "sft": OKABE_ITO[0], "dpo": OKABE_ITO[1], "kto": OKABE_ITO[2], "oracle": OKABE_ITO[3],
}
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def method_label(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def value_set_label(value_set: str) -> str:
    """Consistent display name for a value set id (``nz`` -> ``NZ``, ``cluster-1`` -> ``Cluster 1``)."""
    if len(value_set) <= 3:
        return value_set.upper()
    return value_set.replace("_", " ").replace("-", " ").strip().title()


def set_thesis_style() -> None:
    """Apply the thesis rcParams: serif fonts, embedded TrueType, colour-blind cycle."""
    plt.rcParams.update({
        "font.family": "serif",
        "font.serif": ["DejaVu Serif", "Times New Roman", "Times"],
        "mathtext.fontset": "dejavuserif",
        "font.size": BASE_FONT_PT,
        "axes.titlesize": BASE_FONT_PT,
        "axes.labelsize": BASE_FONT_PT,
        "legend.fontsize": BASE_FONT_PT - 1,
        "xtick.labelsize": BASE_FONT_PT - 1,
        "ytick.labelsize": BASE_FONT_PT - 1,
        "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": 110,
        "savefig.dpi": 300,
        "savefig.bbox": "standard",  # keep the exact size the thesis prints
        "pdf.fonttype": 42,  # embed TrueType, not Type 3
        "ps.fonttype": 42,
        "svg.fonttype": "none",
        "figure.constrained_layout.use": True,
    })


def figsize(fraction: float = 1.0, aspect: float = GOLDEN) -> tuple[float, float]:
    """(width, height) in inches for a figure ``fraction`` of the text width wide."""
    if not 0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    width = TEXTWIDTH_IN * fraction
    return width, width * aspect


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"figure/table name {name!r} must be lower-case letters, digits, '-' or '_' "
            "(it becomes a LaTeX file name)"
        )


@contextlib.contextmanager
def _figures_lock() -> Any:
    """Serialise read-modify-write of the shared JSON stores (parallel sweep workers)."""
    paths.FIGURES.mkdir(parents=True, exist_ok=True)
    with open(paths.FIGURES / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _update_json_store(store: Path, key: str, value: Any) -> dict[str, Any]:
    data = json.loads(store.read_text()) if store.exists() else {}
    data[key] = value
    provenance.write_json(data, store)
    return data


def record_artefact(
    name: str, files: Sequence[Path], notebook: str | None, inputs: Iterable[Path | str] = (),
    run: str | None = None,
) -> None:
    """Record who made a figure/table and from what, in ``figures/manifest.json``."""
    entry = {
        "files": [paths.relative(f) for f in files],
        "notebook": notebook or os.environ.get("VALUEALIGN_NOTEBOOK"),
        "run": run,
        "inputs": {paths.relative(Path(p)): provenance.sha256_tree(p) for p in inputs if Path(p).exists()},
        "made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with _figures_lock():
        _update_json_store(paths.FIGURES / "manifest.json", name, entry)


def save_figure(
    fig: plt.Figure, name: str, *, notebook: str | None = None,
    inputs: Iterable[Path | str] = (), run: str | None = None, out_dir: Path | None = None,
) -> list[Path]:
    """Write ``figures/<name>.pdf`` (vector) and ``.png`` atomically, and record them."""
    _check_name(name)
    out_dir = out_dir or paths.FIGURES
    written = []
    for ext in ("pdf", "png"):
        target = out_dir / f"{name}.{ext}"
        with provenance.atomic_path(target, f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata={"CreationDate": None} if ext == "pdf" else None)
        written.append(target)
    if out_dir == paths.FIGURES:
        record_artefact(name, written, notebook, inputs, run)
    return written


def save_table(
    df: pd.DataFrame, name: str, *, caption: str, label: str | None = None,
    float_format: str = "{:.3f}", notebook: str | None = None,
    inputs: Iterable[Path | str] = (), run: str | None = None, index: bool = False,
) -> Path:
    """Write ``figures/<name>.tex``: a booktabs table with caption and label, ready to \\input."""
    _check_name(name)
    label = label or f"tab:{name}"
    body = df.to_latex(
        index=index, escape=True,
        float_format=lambda x: float_format.format(x),
        caption=caption, label=label, position="htbp",
    )
    body = body.replace("\\begin{table}[htbp]", "\\begin{table}[htbp]\n\\centering\\small", 1)
    header = f"% generated by {notebook or os.environ.get('VALUEALIGN_NOTEBOOK', 'valuealign')}; do not edit\n"
    target = provenance.write_text(header + body, paths.FIGURES / f"{name}.tex")
    record_artefact(name, [target], notebook, inputs, run)
    return target


def macro_name(*parts: str) -> str:
    """A LaTeX macro name from parts: letters only (``('align','kto','gain','nz')`` -> ``AlignKtoGainNz``)."""
    words = re.split(r"[^A-Za-z]+", " ".join(parts))
    name = "".join(w[:1].upper() + w[1:] for w in words if w)
    if not name:
        raise ValueError(f"no letters in macro parts {parts!r}")
    return name


def save_macros(values: Mapping[str, float | int | str], group: str, *, digits: int = 3) -> Path:
    """Merge numbers quoted in the thesis text into ``figures/results-macros.tex``.

    Each notebook writes its own ``group`` of macros; the file is rebuilt from a JSON store
    so that re-running one notebook replaces only its own numbers.
    """
    formatted = {}
    for key, v in values.items():
        if not re.fullmatch(r"[A-Za-z]+", key):
            raise ValueError(f"macro name {key!r} must be letters only (LaTeX rule)")
        formatted[key] = f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    with _figures_lock():
        data = _update_json_store(paths.FIGURES / "results-macros.json", group, formatted)
        lines = ["% generated by valuealign.plotting.save_macros; do not edit"]
        for g in sorted(data):
            lines.append(f"% -- {g}")
            for key in sorted(data[g]):
                lines.append(f"\\newcommand{{\\{key}}}{{{data[g][key]}}}")
        target = provenance.write_text("\n".join(lines) + "\n", paths.FIGURES / "results-macros.tex")
    return target


set_thesis_style()

"""The thesis style: sizes, fonts, colours and display names shared by every figure and table.

Why: the thesis includes ``figures/<name>.pdf`` directly, so a figure must be made at the size
it is printed (fractions of the LaTeX text width), with fonts like the document's and embedded,
in colours readable by colour-blind readers, and with the same name and colour for a method
everywhere. The single size setting is :data:`TEXTWIDTH_IN`: it must equal the ``textwidth=``
of the ``geometry`` options in ``thesis/main.tex`` (``valuealign.thesis.check_thesis`` fails
otherwise), so a figure made with ``figsize(0.5)`` prints at exactly half the text width.

Importing this module changes nothing: the rcParams are applied by :func:`set_thesis_style`,
which :func:`pyplot` calls once per process and ``valuealign.plotting`` (the notebooks' import)
calls on import. matplotlib is imported only by the functions that draw.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

# The LaTeX \textwidth of thesis/main.tex in inches (its geometry sets textwidth=6in); one setting.
TEXTWIDTH_IN: float = 6.0
# Body text of the thesis is 11 pt; figure text a little smaller, like \small captions.
BASE_FONT_PT: float = 9.0
GOLDEN = (5**0.5 - 1) / 2
# The document is set in Times (mathptmx); STIX is the Times-like face matplotlib ships, so
# figures match the text on every machine without a TeX installation at plotting time.
FONT_FAMILY: list[str] = ["STIXGeneral", "DejaVu Serif"]

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO: list[str] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
]
METHOD_NAMES: dict[str, str] = {
    "uniform": "Uniform", "base": "Base", "prompted": "Prompted", "sft": "SFT",
    "dpo": "DPO", "kto": "KTO", "dist": "Dist", "oracle": "Oracle",
}
METHOD_COLORS: dict[str, str] = {
    "uniform": "#999999", "base": OKABE_ITO[7], "prompted": OKABE_ITO[4],
    "sft": OKABE_ITO[0], "dpo": OKABE_ITO[1], "kto": OKABE_ITO[2], "dist": OKABE_ITO[5], "oracle": OKABE_ITO[3],
}
# Order in which methods appear in every legend, table and axis (baselines first).
METHOD_ORDER: list[str] = ["uniform", "base", "prompted", "sft", "dpo", "kto", "dist", "oracle"]
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "RdBu_r"

def method_label(method: str) -> str:
    """Display name of a method id (``kto`` -> ``KTO``, a chained ``sft+dpo`` -> ``SFT+DPO``);
    unknown ids pass through."""
    if method not in METHOD_NAMES and "+" in str(method):
        return "+".join(METHOD_NAMES.get(m, m) for m in str(method).split("+"))
    return METHOD_NAMES.get(method, method)


def method_color(method: str) -> str:
    """Colour of a method id, the same in every figure; unknown ids get grey."""
    return METHOD_COLORS.get(method, "#999999")


def sort_methods(methods: Iterable[str]) -> list[str]:
    """Methods in :data:`METHOD_ORDER` (unknown ones last, alphabetically)."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(set(methods), key=lambda m: (rank.get(m, len(rank)), m))


def value_set_label(value_set: str) -> str:
    """Consistent display name for a value set id (``nz`` -> ``NZ``, ``cluster-1`` -> ``Cluster 1``)."""
    if len(value_set) <= 3:
        return value_set.upper()
    if any(c.isupper() for c in value_set):  # already a display name, e.g. "United States"
        return value_set
    return value_set.replace("_", " ").replace("-", " ").strip().title()


def with_display_names(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose ``method`` and ``value_set`` columns (where present) hold display names,
    so a thesis table names them as the figures do."""
    names = {}
    if "method" in df.columns:
        names["method"] = df["method"].map(method_label)
    if "value_set" in df.columns:
        names["value_set"] = df["value_set"].astype(str).map(value_set_label)
    return df.assign(**names)


def categorical_colors(keys: Sequence[str]) -> dict[str, str]:
    """A stable colour per key (in the given order) from the colour-blind-safe palette.

    Yellow is skipped (unreadable as a thin line on white); beyond 7 keys colours repeat,
    which a figure with that many categories should avoid anyway.
    """
    palette = [c for c in OKABE_ITO if c != "#F0E442"]
    return {k: palette[i % len(palette)] for i, k in enumerate(keys)}


def set_thesis_style() -> None:
    """Apply the thesis rcParams: Times-like serif, embedded TrueType, colour-blind cycle."""
    import matplotlib
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.family": FONT_FAMILY,
        "mathtext.fontset": "stix",
        "font.size": BASE_FONT_PT,
        "axes.titlesize": BASE_FONT_PT,
        "axes.labelsize": BASE_FONT_PT,
        "legend.fontsize": BASE_FONT_PT - 1,
        "xtick.labelsize": BASE_FONT_PT - 1,
        "ytick.labelsize": BASE_FONT_PT - 1,
        "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.linewidth": 0.6,
        "xtick.major.width": 0.6,
        "ytick.major.width": 0.6,
        "lines.linewidth": 1.2,
        "legend.frameon": False,
        "image.cmap": SEQUENTIAL_CMAP,
        "figure.dpi": 110,
        "savefig.dpi": 300,
        "savefig.bbox": "standard",  # keep the exact size the thesis prints
        "pdf.fonttype": 42,  # embed TrueType, not Type 3
        "ps.fonttype": 42,
        "svg.fonttype": "none",
        "figure.constrained_layout.use": True,
    })


@functools.cache
def pyplot() -> Any:
    """``matplotlib.pyplot`` with the thesis style applied (once per process): what a stage's
    ``plot_*`` function draws with, so its figures look the same whether or not a notebook
    imported ``valuealign.plotting`` first."""
    import matplotlib.pyplot as plt

    set_thesis_style()
    return plt


def figsize(fraction: float = 1.0, aspect: float = GOLDEN) -> tuple[float, float]:
    """(width, height) in inches for a figure ``fraction`` of the text width wide."""
    if not 0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not 0 < aspect <= 3.0:
        raise ValueError(f"aspect (height / width) must be in (0, 3], got {aspect}")
    width = TEXTWIDTH_IN * fraction
    return width, width * aspect


def subplots(
    fraction: float = 1.0, aspect: float = GOLDEN, nrows: int = 1, ncols: int = 1, **kwargs: Any,
) -> tuple[Any, Any]:
    """``plt.subplots`` at a thesis size (``fraction`` of the text width), in the thesis style."""
    return pyplot().subplots(nrows, ncols, figsize=figsize(fraction, aspect), **kwargs)

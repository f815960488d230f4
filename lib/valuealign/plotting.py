"""One import for the notebooks: the thesis style (applied on import), the artefact registry,
LaTeX tables and the thesis macros.

The pieces live in :mod:`valuealign.style` (sizes, fonts, colours, display names),
:mod:`valuealign.artefacts` (``save_figure`` and ``figures/manifest.json``),
:mod:`valuealign.latex_tables` (``save_table``) and :mod:`valuealign.macros` (``save_macros``);
library modules import those. This module re-exports them and applies the thesis style when
imported, so a notebook's ``from valuealign import plotting`` gives figures in the thesis style
from its first cell on.
"""

from __future__ import annotations

from valuealign.artefacts import read_manifest, record_artefact, save_figure
from valuealign.latex_tables import latex_escape, save_table, table_to_latex
from valuealign.macros import MACROS_TEX, macro_name, read_macros, save_macros
from valuealign.style import (
    BASE_FONT_PT,
    DIVERGING_CMAP,
    FONT_FAMILY,
    GOLDEN,
    METHOD_COLORS,
    METHOD_NAMES,
    METHOD_ORDER,
    OKABE_ITO,
    SEQUENTIAL_CMAP,
    TEXTWIDTH_IN,
    categorical_colors,
    figsize,
    method_color,
    method_label,
    set_thesis_style,
    sort_methods,
    subplots,
    value_set_label,
    with_display_names,
)

__all__ = [
    "BASE_FONT_PT", "DIVERGING_CMAP", "FONT_FAMILY", "GOLDEN", "MACROS_TEX", "METHOD_COLORS", "METHOD_NAMES",
    "METHOD_ORDER", "OKABE_ITO", "SEQUENTIAL_CMAP", "TEXTWIDTH_IN", "categorical_colors", "figsize",
    "latex_escape", "macro_name", "method_color", "method_label", "read_macros", "read_manifest",
    "record_artefact", "save_figure", "save_macros", "save_table", "set_thesis_style", "sort_methods",
    "subplots", "table_to_latex", "value_set_label", "with_display_names",
]

set_thesis_style()

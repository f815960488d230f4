"""One thesis style for every figure and table, written straight into ``figures/``.

Why: the thesis includes ``figures/<name>.pdf`` and ``figures/<name>.tex`` directly, so a
figure must be made at the size it is printed (fractions of the LaTeX text width), with
fonts like the document's and embedded, in colours readable by colour-blind readers.
Every saved artefact is recorded in ``figures/manifest.json`` (which notebook and run made
it, from which inputs, with checksums, when) so that the build can check that each file
the thesis includes has a producer (:mod:`valuealign.thesis`).

The single size setting is :data:`TEXTWIDTH_IN`: it must equal the ``textwidth=`` of the
``geometry`` options in ``thesis/main.tex`` (``valuealign.thesis.check_thesis`` fails
otherwise), so a figure made with ``figsize(0.5)`` prints at exactly half the text width
when it is included with a plain ``\\includegraphics{../figures/<name>.pdf}``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from valuealign import paths, provenance

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

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


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
) -> tuple[plt.Figure, Any]:
    """``plt.subplots`` at a thesis size (``fraction`` of the text width)."""
    return plt.subplots(nrows, ncols, figsize=figsize(fraction, aspect), **kwargs)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
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


def _read_json_store(store: Path) -> dict[str, Any]:
    if not store.exists():
        return {}
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{store} is not valid JSON ({err}); delete it and re-run the notebooks") from err
    if not isinstance(data, dict):
        raise ValueError(f"{store} must hold a JSON object, found {type(data).__name__}")
    return data


def _update_json_store(store: Path, key: str, value: Any) -> dict[str, Any]:
    data = _read_json_store(store)
    data[key] = value
    provenance.write_json(data, store)
    return data


def read_manifest(figures_dir: Path | None = None) -> dict[str, Any]:
    """The artefact manifest ``figures/manifest.json`` (name -> entry); empty if none yet."""
    return _read_json_store((figures_dir or paths.FIGURES) / "manifest.json")


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
    with _figures_lock():
        _update_json_store(paths.FIGURES / "manifest.json", name, entry)


def save_figure(
    fig: plt.Figure, name: str, *, notebook: str | None = None,
    inputs: Iterable[Path | str] = (), run: str | None = None, out_dir: Path | None = None,
) -> list[Path]:
    """Write ``figures/<name>.pdf`` (vector) and ``.png`` atomically, and record them.

    The figure is saved at its own size (no tight bounding box), which is the size the
    thesis prints it at; a figure wider than the text width is saved but warned about,
    and ``valuealign.thesis.check_thesis`` rejects it if the thesis includes it.
    """
    _check_name(name)
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


# ---------------------------------------------------------------- LaTeX text and tables
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: Any) -> str:
    """Plain text -> LaTeX source that prints it literally."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def _escape_prose(text: str) -> str:
    """Escape ``& % # _`` in a caption, but keep ``$math$`` and ``\\commands`` as written.

    Why: captions are written by people who may use LaTeX (``$\\beta$``, ``\\cite{...}``), but
    also paste identifiers like ``value_set`` or ``5%`` that would break the build.
    """
    out, in_math, prev = [], False, ""
    for c in text:
        if c == "$" and prev != "\\":
            in_math = not in_math
        if not in_math and c in "&%#_" and prev != "\\":
            out.append("\\" + c)
        else:
            out.append(c)
        prev = c
    return "".join(out)


def _format_number(value: Any, float_format: str, integer: bool) -> str | None:
    """A cell as a number string, or None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if integer:
        return str(int(value))
    return float_format.format(value)


def _siunitx_format(cells: Sequence[str]) -> str:
    """``table-format`` for number strings: widest sign/integer/decimal/exponent parts."""
    sign = any(c.startswith("-") for c in cells)
    ints, decs, exps, exp_sign = 1, 0, 0, False
    for c in cells:
        mant, _, exp = c.lstrip("-").lower().partition("e")
        i, _, d = mant.partition(".")
        ints, decs = max(ints, len(i)), max(decs, len(d))
        if exp:
            exp_sign = exp_sign or exp.startswith("-")
            exps = max(exps, len(exp.lstrip("+-")))
    fmt = f"{'-' if sign else ''}{ints}.{decs}"
    if exps:
        fmt += f"e{'-' if exp_sign else ''}{exps}"
    return fmt


def table_to_latex(
    df: pd.DataFrame, *, caption: str, label: str, float_format: str = "{:.3f}",
    index: bool = False, header: str = "",
) -> str:
    """A booktabs ``table`` float; numeric columns become siunitx ``S`` columns.

    Numbers are aligned on the decimal point and typeset by siunitx (proper minus sign,
    exponents); column headers are braced so siunitx does not parse them; missing values
    print as a dash. Text cells are escaped.
    """
    if df.columns.nlevels > 1:
        raise ValueError("save_table needs flat column names; join a MultiIndex first")
    data = df.reset_index() if index else df
    specs, heads, columns = [], [], []
    for col in data.columns:
        s = data[col]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        if numeric:
            integer = pd.api.types.is_integer_dtype(s)
            try:
                cells = [_format_number(v, float_format, integer) for v in s.tolist()]
            except (ValueError, TypeError) as err:
                raise ValueError(f"float_format {float_format!r} fails on column {col!r}: {err}") from err
            present = [c for c in cells if c is not None]
            if all(_NUMBER.match(c) for c in present):
                fmt = _siunitx_format(present) if present else "1.0"
                specs.append(f"S[table-format={fmt}]")
                heads.append("{" + latex_escape(col) + "}")
                columns.append([c if c is not None else "{--}" for c in cells])
                continue
            specs.append("r")  # e.g. a percent format: right-aligned text
            heads.append(latex_escape(col))
            columns.append([latex_escape(c) if c is not None else "--" for c in cells])
        else:
            specs.append("l")
            heads.append(latex_escape(col))
            columns.append(["--" if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))
                            else latex_escape(v) for v in s.tolist()])
    rows = [" & ".join(r) + r" \\" for r in zip(*columns, strict=True)] if columns else []
    lines = [
        header.rstrip("\n"),
        r"\begin{table}[htbp]",
        r"\centering\small",
        f"\\caption{{{_escape_prose(caption)}}}",
        f"\\label{{{label}}}",
        # typeset into a box first; shrink to the text width only if wider (with a warning)
        r"\ifdefined\vatablebox\else\newsavebox{\vatablebox}\fi",
        r"\sbox{\vatablebox}{%",
        f"\\begin{{tabular}}{{{''.join(specs)}}}",
        r"\toprule",
        " & ".join(heads) + r" \\",
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\ifdim\wd\vatablebox>\linewidth",
        f"\\PackageWarning{{valuealign}}{{table {label} is wider than the text: scaled down}}%",
        r"\resizebox{\linewidth}{!}{\usebox{\vatablebox}}%",
        r"\else\usebox{\vatablebox}\fi",
        r"\end{table}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def save_table(
    df: pd.DataFrame, name: str, *, caption: str, label: str | None = None,
    float_format: str = "{:.3f}", notebook: str | None = None,
    inputs: Iterable[Path | str] = (), run: str | None = None, index: bool = False,
) -> Path:
    """Write ``figures/<name>.tex``: a booktabs table with caption and label, ready to \\input.

    The thesis needs ``booktabs``, ``siunitx`` (numeric columns are ``S`` columns) and
    ``graphicx`` (a table wider than the text is scaled down to fit, with a LaTeX warning). The
    caption may contain LaTeX (``$...$``, ``\\cite``); stray ``_ % & #`` are escaped.
    """
    _check_name(name)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"save_table({name!r}) needs a pandas DataFrame, got {type(df).__name__}")
    if not caption or not caption.strip():
        raise ValueError(f"table {name!r} needs a caption (a stub is fine; the researcher edits it)")
    producer = notebook or os.environ.get("VALUEALIGN_NOTEBOOK", "valuealign")
    body = table_to_latex(
        df, caption=caption, label=label or f"tab:{name}", float_format=float_format, index=index,
        header=f"% generated by {producer} via valuealign.plotting.save_table; do not edit",
    )
    target = provenance.write_text(body, paths.FIGURES / f"{name}.tex")
    record_artefact(name, [target], notebook, inputs, run, extra={"kind": "table", "rows": len(df)})
    return target


# ---------------------------------------------------------------- numbers quoted in the text
MACROS_TEX = "results-macros.tex"


def macro_name(*parts: str) -> str:
    """A LaTeX macro name from parts: letters only (``('align','kto','gain','nz')`` -> ``AlignKtoGainNz``)."""
    words = re.split(r"[^A-Za-z]+", " ".join(parts))
    name = "".join(w[:1].upper() + w[1:] for w in words if w)
    if not name:
        raise ValueError(f"no letters in macro parts {parts!r}")
    return name


def save_macros(
    values: Mapping[str, float | int | str], group: str, *, digits: int = 3,
    notebook: str | None = None,
) -> Path:
    """Merge numbers quoted in the thesis text into ``figures/results-macros.tex``.

    Each notebook writes its own ``group`` of macros; the file is rebuilt from a JSON store
    so that re-running one notebook replaces only its own numbers. A macro defined by two
    groups is an error (LaTeX's ``\\newcommand`` would stop the build later, less clearly).
    In the text use ``\\result{Name}`` (prints ``??Name`` in bold while a stage has not run)
    or ``\\Name`` directly.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", group or ""):
        raise ValueError(f"macro group {group!r} must be a short identifier (letters, digits, - _ .)")
    formatted = {}
    for key, v in values.items():
        if not re.fullmatch(r"[A-Za-z]+", key):
            raise ValueError(f"macro name {key!r} must be letters only (LaTeX rule); use macro_name()")
        if isinstance(v, bool):
            formatted[key] = "yes" if v else "no"
        elif isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f"):
            if math.isnan(float(v)):
                raise ValueError(f"macro {key!r} of group {group!r} is NaN")
            formatted[key] = f"{float(v):.{digits}f}"
        elif isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
            formatted[key] = str(int(v))
        else:
            formatted[key] = _escape_prose(str(v))
    store = paths.FIGURES / "results-macros.json"
    with _figures_lock():
        data = _read_json_store(store)
        clashes = {k: g for g, m in data.items() if g != group for k in m if k in formatted}
        if clashes:
            raise ValueError(
                "macro(s) already defined by another group: "
                + ", ".join(f"\\{k} (group {g!r})" for k, g in sorted(clashes.items()))
            )
        data = _update_json_store(store, group, formatted)
        lines = ["% generated by valuealign.plotting.save_macros; do not edit"]
        for g in sorted(data):
            lines.append(f"% -- {g}")
            for key in sorted(data[g]):
                lines.append(f"\\newcommand{{\\{key}}}{{{data[g][key]}}}")
        target = provenance.write_text("\n".join(lines) + "\n", paths.FIGURES / MACROS_TEX)
    record_artefact(f"results-macros/{group}", [target], notebook, (), None, extra={
        "kind": "macros", "macros": sorted(formatted),
    })
    return target


def read_macros(figures_dir: Path | None = None) -> dict[str, str]:
    """Every generated macro (name -> printed value) across groups."""
    data = _read_json_store((figures_dir or paths.FIGURES) / "results-macros.json")
    return {k: v for group in data.values() for k, v in group.items()}


set_thesis_style()

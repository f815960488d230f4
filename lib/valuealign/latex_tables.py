"""LaTeX text and booktabs tables written into ``figures/<name>.tex`` for the thesis to ``\\input``.

Why its own formatter: the thesis's numeric columns are ``siunitx`` ``S`` columns aligned on the
decimal point, captions may carry LaTeX, and stray ``_ % & #`` from data must be escaped;
pandas' ``to_latex`` does neither reliably.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from valuealign import paths, provenance
from valuealign.artefacts import check_name, record_artefact

_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def latex_escape(text: Any) -> str:
    """Plain text -> LaTeX source that prints it literally."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def escape_prose(text: str) -> str:
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
        f"\\caption{{{escape_prose(caption)}}}",
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
    check_name(name)
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

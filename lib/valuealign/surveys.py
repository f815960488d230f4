"""Survey loaders: every source into one tidy schema (stage 00).

Why one schema: the taxonomy, the alignment datasets and the evaluation must not care
whether an answer distribution came from GlobalOpinionQA's country marginals, from WVS-7
respondent-level microdata, or from another survey plugged in through a codebook. Every
loader returns a :class:`SurveyData` with

* ``items``: ``item_id, source, question, options (list[str]), nonsubstantive (list[bool]),
  ordinal (bool), section``;
* ``distributions``: ``item_id, group, group_type, shares (list[float], sums to 1),
  n (Int64, null for aggregated sources), weighted (bool), source``;
* ``dropped``: every input row that was left out, with ``file, row, column, value, reason``
  (including each processing-code option removed from an item, such as "Missing; Not available");
* ``processing_codes``: ``item_id, group, option, share``: the share each group gave to each
  removed processing code before the remaining shares were renormalised (not written to disk;
  :func:`processing_code_summary` turns it into the table notebook 00 shows).

Bad input is either an error naming the file, row, column and value (``on_invalid="raise"``,
the default for user-supplied files) or a recorded drop (``on_invalid="drop"``, used by
notebook 00 so the supervisor sees every dropped row and why). Nothing is ever ``eval``-ed:
GlobalOpinionQA's ``selections`` column is a Python repr parsed with ``ast.literal_eval``
on its dict part and validated.

Why one module of about 1100 lines: both readers (GlobalOpinionQA and the codebook-driven
surveys) must produce the same tidy tables with the same drop records, and the checks of
:func:`check_schema` are the contract between them; split apart, a reader could drift from the
schema the other one and notebook 00 rely on.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from valuealign import csvinput, paths, style

OnInvalid = Literal["raise", "drop"]

ITEM_COLUMNS = ["item_id", "source", "question", "options", "nonsubstantive", "ordinal", "section"]
DIST_COLUMNS = ["item_id", "group", "group_type", "shares", "n", "weighted", "source"]
DROP_COLUMNS = ["file", "row", "column", "value", "reason"]

GOQA_REQUIRED = ("question", "selections", "options")
GOQA_SECTIONS = {"WVS": "World Values Survey", "GAS": "Pew Global Attitudes"}
WVS_MISSING_NOTE = "negative codes (-1 don't know, -2 no answer, -4 not asked, -5 missing) are missing"

# Real non-responses: the respondent gave no position (kept as options, flagged non-substantive).
# A volunteered marker such as "(VOL)" is not one by itself: "Neither (VOL)" and "Same (VOL)" are
# answers. "Don't -9:-2" is a "Don't know" label whose last word the source replaced by its codes.
_NONSUBSTANTIVE = re.compile(
    r"\b(don'?t know|dk|refused|no answer|not sure|decline|missing|not asked|hard to say|"
    r"no opinion|depends|other answer|never heard of|haven'?t heard enough|can'?t rate)\b"
    r"|^\s*other\s*(\([^)]*\))?\s*$|\bdon'?t\s+-\d+:-\d+",
    re.IGNORECASE,
)
# Answers the interviewer did not read out: where they sit on a scale is not given by the source.
_VOLUNTEERED = re.compile(r"\((vol\.?|do not read|spontaneous)\)|\[only if volunteered\]", re.IGNORECASE)
# Processing codes of the source's data file, not answers ("Other missing; Multiple answers Mail
# (EVS)", "Missing; Not available"): dropped from the options, the other shares renormalised.
_PROCESSING_CODE = re.compile(
    r"^\s*(other\s+)?missing\b|^\s*not\s+(asked|applicable)\s*$|\bmultiple answers mail\b",
    re.IGNORECASE,
)
PROCESSING_CODE_REASON = "processing code, not an answer: option removed and the other shares renormalised"
PROCESSING_COLUMNS = ["item_id", "group", "option", "share"]

# Verbal scale words, for the conservative ordinal flag. A degree is looked up in this order
# (negations first, because "not very" contains "very"); the sign comes from the polar word.
_SCALE_DEGREE_WORDS = (
    (1, r"\bnot\b.*\bat all\b|^\s*no\b|\bnone\b|\bnever\b|\bnothing\b|\bnot an?\b"),
    (2, r"\bnot\b|\brarely\b|\bseldom\b|\blittle\b|\bsmall\b|\bminor\b|\blower\b|\bslightly\b"),
    (3, r"\bsomewhat\b|\bmostly\b|\bfairly\b|\brather\b|\bquite\b|\bmoderately\b|\bfair amount\b|"
        r"\bsome\b|\bsometimes\b|\boccasionally\b|\bgood deal\b|\bprobably\b"),
    (4, r"\bvery\b|\bcompletely\b|\bstrongly\b|\ba lot\b|\bgreat deal\b|\bmajor\b|"
        r"\bmuch\b|\bdefinitely\b|\babsolutely\b|\balways\b|\boften\b"),
    (5, r"\bmost\b|\bextremely\b|\btop\b"),
)
_SCALE_DEGREES = tuple((level, re.compile(rx, re.IGNORECASE)) for level, rx in _SCALE_DEGREE_WORDS)
_SCALE_NEGATIVE = re.compile(
    r"\b(unfavou?rable|disagree|disapprove|dissatisfied|bad|worse|poor|negative|difficult|unhappy)\b",
    re.IGNORECASE,
)
_SCALE_POSITIVE = re.compile(r"\b(favou?rable|agree|approve|satisfied|good|better|positive|easy|happy)\b",
                             re.IGNORECASE)
_SCALE_NEUTRAL = re.compile(r"\b(neither|about the same|stay(ed)? the same|no change|both equally)\b",
                            re.IGNORECASE)
_SCALE_MAX_WORDS = 6  # scale labels are short; longer options are statements, not scale points
_PURE_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")
_LEADING_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)(?![\d.])")


class SurveyDataError(ValueError):
    """Invalid survey input; the message names the file, row/column and value."""


@dataclass
class SurveyData:
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ITEM_COLUMNS))
    distributions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DIST_COLUMNS))
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DROP_COLUMNS))
    # the share each group gave to each processing code removed from an item's options
    processing_codes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROCESSING_COLUMNS))

    @staticmethod
    def concat(parts: Iterable[SurveyData]) -> SurveyData:
        parts = list(parts)
        if not parts:
            return SurveyData()
        return SurveyData(
            items=pd.concat([p.items for p in parts], ignore_index=True),
            distributions=pd.concat([p.distributions for p in parts], ignore_index=True),
            dropped=pd.concat([p.dropped for p in parts], ignore_index=True),
            processing_codes=pd.concat([p.processing_codes for p in parts], ignore_index=True),
        )


class _Drops:
    """Collects dropped rows, or raises at once when the caller asked for strictness."""

    def __init__(self, file: Path, on_invalid: OnInvalid) -> None:
        if on_invalid not in ("raise", "drop"):
            raise ValueError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
        self.file, self.on_invalid, self.rows = file, on_invalid, []

    def __call__(self, row: Any, column: str, value: Any, reason: str) -> None:
        text = _short(value)
        if self.on_invalid == "raise":
            raise SurveyDataError(f"{self.file}: row {row}, column {column!r}, value {text}: {reason}")
        self.record(row, column, value, reason)

    def record(self, row: Any, column: str, value: Any, reason: str) -> None:
        """Record a deliberate removal (not invalid input), in either mode."""
        self.rows.append({"file": paths.relative(self.file), "row": str(row), "column": column,
                          "value": _short(value), "reason": reason})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=DROP_COLUMNS)


def _number(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ shared helpers
def read_table(path: Path | str, required: Sequence[str] = (), sep: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV with errors that say what is wrong with which file."""
    path = Path(path)
    if sep is None:
        sep = "\t" if path.suffix in (".tsv", ".tab") else ","
    text = csvinput.read_csv_text(path, sep, "survey table", SurveyDataError)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise SurveyDataError(f"{path}: file has no header or rows") from err
    except pd.errors.ParserError as err:
        raise SurveyDataError(f"{path}: cannot be parsed as {'TSV' if sep == chr(9) else 'CSV'}: {err}") from err
    check_columns(df, required, path)
    if df.empty:
        raise SurveyDataError(f"{path}: has a header but no data rows")
    return df


def check_columns(df: pd.DataFrame, required: Iterable[str], path: Path | str) -> None:
    cols = [str(c) for c in df.columns]
    missing = [c for c in required if c not in cols]
    if missing:
        hints = {c: difflib.get_close_matches(c, cols, n=1) for c in missing}
        hint = "; ".join(f"{c!r} (did you mean {h[0]!r}?)" if h else repr(c) for c, h in hints.items())
        raise SurveyDataError(f"{path}: missing required column(s) {hint}; found {cols[:20]}")


def stable_id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:10]
    return f"{prefix}-{digest}"


def nonsubstantive_flags(options: Sequence[str]) -> list[bool]:
    """True for real non-responses ("Don't know", "Refused", "No answer", "Never heard of").

    Volunteered answers are flagged only when their text is a non-response: "Neither (VOL)"
    and "Same (VOL)" are positions a respondent took, so they count as substantive.
    """
    return [bool(_NONSUBSTANTIVE.search(o)) for o in options]


def processing_code_flags(options: Sequence[str]) -> list[bool]:
    """True for the source's processing codes ("Missing; Not available", "Other missing;
    Multiple answers Mail (EVS)"): they describe the data file, not anything a respondent said."""
    return [bool(_PROCESSING_CODE.search(o)) for o in options]


def volunteered_flags(options: Sequence[str]) -> list[bool]:
    """True for answers marked as not read out ("(VOL)", "(DO NOT READ)", "(spontaneous)")."""
    return [bool(_VOLUNTEERED.search(o)) for o in options]


def _pure_number(option: str) -> float | None:
    return float(option) if _PURE_NUMBER.match(option) else None


def _leading_number(option: str) -> float | None:
    m = _LEADING_NUMBER.match(option)
    return float(m.group(1)) if m else None


def _strictly_monotone(values: Sequence[float]) -> bool:
    steps = np.diff(np.asarray(values, dtype=float))
    return bool(len(steps)) and (bool(np.all(steps > 0)) or bool(np.all(steps < 0)))


def verbal_scale_position(option: str) -> float | None:
    """Signed position of a verbal scale label, or None when the label carries no scale word.

    Degree 1-5 from the modifier ("not at all" 1, "not too" 2, "somewhat" 3, "very" 4, "most" 5;
    a bare polar word such as "Agree" counts as 3), negative for the negative pole ("disagree",
    "bad", "unfavorable"), 0 for an explicit middle ("Neither agree nor disagree", "About the same").
    """
    if _SCALE_NEUTRAL.search(option):
        return 0.0
    negative, positive = bool(_SCALE_NEGATIVE.search(option)), bool(_SCALE_POSITIVE.search(option))
    if negative and positive:
        return None
    degree = next((level for level, rx in _SCALE_DEGREES if rx.search(option)), None)
    if degree is None:
        if not (negative or positive):
            return None
        degree = 3
    return float(-degree if negative else degree)


def _is_numeric_scale(options: Sequence[str]) -> bool:
    """Numbers in monotone order ('0'..'10', '18 to 49', '50 to 59', ...), where a label may stand
    for one end ('Never justifiable', '2', ..., '9', 'Always justifiable') or for the one number
    missing between two neighbours ('Men', '2', '3', '4', 'Both equally', '6', ..., 'Women')."""
    values = [_leading_number(o) for o in options]
    if all(v is not None for v in values):
        return _strictly_monotone(values)
    return _labelled_scale_in_order(values)


def _labelled_scale_in_order(values: Sequence[float | None]) -> bool:
    """Integers one apart per position (rising or falling), None for a label: at most one label
    at each end and single labels between numbers two apart."""
    numbered = [(pos, v) for pos, v in enumerate(values) if v is not None]
    if len(numbered) < 2 or any(not float(v).is_integer() for _, v in numbered):
        return False
    (p0, v0), (p1, v1) = numbered[0], numbered[1]
    step = (v1 - v0) / (p1 - p0)
    if step not in (1.0, -1.0):
        return False
    if any(v != v0 + step * (pos - p0) for pos, v in numbered):
        return False
    if any(b - a > 2 for (a, _), (b, _) in zip(numbered, numbered[1:], strict=False)):
        return False  # two labels in a row inside the scale: not one missing number
    return numbered[0][0] <= 1 and numbered[-1][0] >= len(values) - 2


def _is_verbal_scale(options: Sequence[str]) -> bool:
    """Short labels whose signed positions strictly rise or fall in the order given; a middle
    ("Neither ...") only counts between a positive and a negative pole."""
    if any(len(o.split()) > _SCALE_MAX_WORDS for o in options):
        return False
    positions = [verbal_scale_position(o) for o in options]
    if any(p is None for p in positions):
        return False
    if 0.0 in positions and not (min(positions) < 0 < max(positions)):
        return False
    return _strictly_monotone(positions)


def looks_ordinal(options: Sequence[str]) -> bool:
    """Conservative ordinal flag for aggregated sources without metadata.

    Ordinal only with positive evidence that the >= 3 substantive options, in the order given,
    are the points of one scale: monotone numbers (ends or a midpoint may be labelled), or short
    verbal labels whose degree and pole rise or fall monotonically (Very/Somewhat/Not too/Not at
    all; Strongly agree ... Strongly disagree). Unordered sets (More/Less/Same, Better/Worse/About
    the same), scrambled ladders and items with a substantive volunteered answer, whose place on
    the scale is unknown, are not ordinal: their 1 - W1/(K-1) would measure a made-up order.
    """
    flags = nonsubstantive_flags(options)
    subst = [o for o, f in zip(options, flags, strict=True) if not f]
    if len(subst) < 3 or any(volunteered_flags(subst)):
        return False
    return _is_numeric_scale(subst) or _is_verbal_scale(subst)


def _option_label(option: str | int | float) -> str:
    if isinstance(option, float) and option.is_integer():
        return str(int(option))
    return str(option)


def _string_sorted_scale(numbers: Sequence[float | None]) -> list[float] | None:
    """The integer scale whose string sort gives this order, when exactly one does.

    ``numbers`` are the substantive options in source order, None for a label. A 0-10 scale
    with labelled ends sorted as text reads ('Not at all', '1', 'Very', '2', ..., '9') = the
    strings '0', '1', '10', '2', ..., '9'; the labels then stand for 0 and 10.
    """
    known = [v for v in numbers if v is not None]
    n_labels = len(numbers) - len(known)
    if not known or any(not float(v).is_integer() for v in known) or len(set(known)) != len(known):
        return None
    fits = []
    for below in range(n_labels + 1):
        lo, hi = int(min(known)) - below, int(max(known)) + n_labels - below
        scale = list(range(lo, hi + 1))
        if len(scale) != len(numbers) or not set(known) <= set(scale):
            continue
        as_text = sorted(scale, key=str)
        if all(v is None or v == t for v, t in zip(numbers, as_text, strict=True)):
            fits.append([float(t) for t in as_text])
    return fits[0] if len(fits) == 1 else None


def answer_order(options: Sequence[str]) -> list[int]:
    """Source indices of the answers to keep, in scale order: processing codes left out,
    then :func:`numeric_scale_order` on the rest (shares are taken in the same order)."""
    answers = [j for j, f in enumerate(processing_code_flags(options)) if not f]
    order = numeric_scale_order([options[j] for j in answers])
    return [answers[j] for j in order]


def numeric_scale_order(options: Sequence[str]) -> list[int]:
    """Permutation into scale order; the source's order unless there is positive evidence.

    Why: the shares follow the same permutation, and the order is both what the model is shown
    and what 1 - W1/(K-1) measures positions on, so a wrong permutation is worse than none.
    Evidence that the source order is a sorting artefact, used here:

    * every substantive option is a number and they are not monotone ('0', '9', '10', 'DK',
      '1', ...): numbers in numeric order, non-substantive options after them in source order;
    * numbers and labels in exactly the order a string sort of one integer scale gives
      ('Not important at all', '1', 'Very important', '2', ..., '9'): the labels take the
      missing numbers (0 and 10).

    Everything else keeps the source order, including labelled ends ('Never justifiable',
    '2', ..., '9', 'Always justifiable') and reversed scales ('Satisfied', '9', ..., '2',
    'Dissatisfied').
    """
    identity = list(range(len(options)))
    flags = nonsubstantive_flags(options)
    subst = [j for j in identity if not flags[j]]
    numbers = [_pure_number(options[j]) for j in subst]
    known = [v for v in numbers if v is not None]
    if len(known) < 3 or len(set(known)) != len(known):
        return identity
    if len(known) == len(numbers):
        if _strictly_monotone(known):
            return identity
        values = numbers
    else:
        if _labelled_scale_in_order(numbers):
            return identity
        scale = _string_sorted_scale(numbers)
        if scale is None:
            return identity
        values = scale
    by_value = [j for _, j in sorted(zip(values, subst, strict=True))]
    return by_value + [j for j in identity if flags[j]]


def validate_shares(shares: Sequence[Any], n_options: int, tol: float) -> tuple[np.ndarray | None, str]:
    """(normalised shares, "") or (None, reason)."""
    if len(shares) != n_options:
        return None, f"{len(shares)} shares but {n_options} options"
    not_numbers = [v for v in shares if v is None or isinstance(v, bool | str | bytes)]
    if not_numbers:  # float(True) is 1.0 and float("0.5") is 0.5: neither is a share
        return None, f"shares must be numbers, got {not_numbers[0]!r} ({type(not_numbers[0]).__name__})"
    try:
        arr = np.asarray([float(s) for s in shares], dtype=float)
    except (TypeError, ValueError):
        return None, "shares must be numbers"
    if not np.all(np.isfinite(arr)):
        return None, "shares contain NaN or infinity"
    if np.any(arr < -1e-9):
        return None, "negative share"
    total = float(arr.sum())
    if total <= 0:
        return None, "all shares are zero (no answers)"
    if abs(total - 1.0) > tol:
        return None, f"shares sum to {total:.4f}, not 1 within tolerance {tol}"
    return np.clip(arr, 0, None) / total, ""


def parse_literal(text: str, kind: type, what: str) -> Any:
    """``ast.literal_eval`` of a literal, checked to be ``kind``; anything else is refused."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"{what} is not a {kind.__name__} literal") from err
    if not isinstance(value, kind):
        raise ValueError(f"{what} is a {type(value).__name__}, expected {kind.__name__}")
    return value


def parse_selections(cell: str) -> dict[str, list[float]]:
    """Parse ``defaultdict(<class 'list'>, {...})`` safely: only its dict literal is read."""
    start, end = cell.find("{"), cell.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no dict literal found")
    prefix, suffix = cell[:start].strip(), cell[end + 1 :].strip()
    if (prefix, suffix) not in (("", ""), ("defaultdict(<class 'list'>,", ")")):
        raise ValueError(f"unexpected text around the dict literal: {prefix[:40]!r} ... {suffix[:40]!r}")
    value = parse_literal(cell[start : end + 1], dict, "selections")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, list):
            raise ValueError(f"entry {k!r} must map a group name to a list of shares")
    return value


def _frames(items: list[dict], dists: list[dict], drops: _Drops) -> SurveyData:
    items_df = pd.DataFrame(items, columns=ITEM_COLUMNS)
    dist_df = pd.DataFrame(dists, columns=DIST_COLUMNS)
    dist_df["n"] = dist_df["n"].astype("Int64")
    dist_df["weighted"] = dist_df["weighted"].astype(bool)
    items_df["ordinal"] = items_df["ordinal"].astype(bool)
    return SurveyData(items_df, dist_df, drops.frame())


# ------------------------------------------------------------------ GlobalOpinionQA
def goqa_file(choice: str = "auto") -> Path:
    """The full Anthropic CSV when the user dropped it in data/raw/goqa/, else the shipped subset."""
    if choice and choice != "auto":
        p = Path(choice)
        return p if p.is_absolute() else paths.RAW / p
    full = paths.GOQA_DIR / "global_opinions.csv"
    return full if full.exists() else paths.GOQA_DIR / "global_opinions_subset.csv"


def load_goqa(path: Path | str, on_invalid: OnInvalid = "raise", tol: float = 0.02) -> SurveyData:
    """GlobalOpinionQA (HF ``Anthropic/llm_global_opinions`` schema) -> tidy schema."""
    path = Path(path)
    df = read_table(path, GOQA_REQUIRED)
    drops = _Drops(path, on_invalid)
    items: list[dict] = []
    dists: list[dict] = []
    processing: list[dict] = []
    seen: set[str] = set()
    has_source = "source" in df.columns
    for i, row in enumerate(df.itertuples(index=False), start=2):  # row 1 is the header
        question = str(row.question).strip()
        if not question:
            drops(i, "question", row.question, "empty question")
            continue
        try:
            options = parse_literal(row.options, list, "options")
            if not options or not all(isinstance(o, str | int | float) for o in options):
                raise ValueError("options must be a non-empty list of labels")
            options = [_option_label(o) for o in options]
        except ValueError as err:
            drops(i, "options", row.options, str(err))
            continue
        try:
            selections = parse_selections(row.selections)
        except ValueError as err:
            drops(i, "selections", row.selections, f"not a dict literal of group -> shares ({err})")
            continue
        item_id = stable_id("goqa", question, *options)  # from the source's options: ids stay stable
        if item_id in seen:
            drops(i, "question", question, "duplicate of an earlier row (same question and options)")
            continue
        order = answer_order(options)
        if not order:
            drops(i, "options", row.options, "every option is a processing code, none is an answer")
            continue
        codes = [j for j, f in enumerate(processing_code_flags(options)) if f]
        source_options, options = options, [options[j] for j in order]
        kept, removed = 0, []
        for group, shares in selections.items():
            norm, reason = validate_shares(shares, len(source_options), tol)
            if norm is None:
                drops(i, f"selections[{group}]", shares, reason)
                continue
            answers = norm[order]
            if answers.sum() <= 0:
                drops(i, f"selections[{group}]", shares, "all answers are processing codes")
                continue
            kept += 1
            removed += [{"item_id": item_id, "group": group, "option": source_options[j],
                         "share": float(norm[j])} for j in codes]
            if codes:  # renormalise only what lost mass: other items keep their exact shares
                answers = answers / answers.sum()
            dists.append({"item_id": item_id, "group": group, "group_type": "country",
                          "shares": answers.tolist(), "n": None, "weighted": True, "source": "goqa"})
        if not kept:
            drops(i, "selections", row.selections, "no valid group distribution left")
            continue
        seen.add(item_id)
        processing += removed
        for j in codes:
            drops.record(i, "options", source_options[j], PROCESSING_CODE_REASON)
        origin = str(getattr(row, "source", "")) if has_source else ""
        items.append({
            "item_id": item_id, "source": "goqa", "question": question, "options": options,
            "nonsubstantive": nonsubstantive_flags(options), "ordinal": looks_ordinal(options),
            "section": GOQA_SECTIONS.get(origin, "GlobalOpinionQA"),
        })
    out = _frames(items, dists, drops)
    out.processing_codes = pd.DataFrame(processing, columns=PROCESSING_COLUMNS)
    return out


# ------------------------------------------------------------------ codebook-driven surveys
@dataclass(frozen=True)
class ItemSpec:
    """One survey column: its question, its answer codes (in scale order) and labels."""

    column: str
    question: str
    codes: tuple[float, ...]  # raw codes, in option order; several codes may share an option
    option_of_code: tuple[int, ...]  # option index for each code
    options: tuple[str, ...]
    ordinal: bool
    section: str


@dataclass(frozen=True)
class SurveySpec:
    name: str
    items: tuple[ItemSpec, ...]
    group: str
    weight: str | None = None
    missing_codes: tuple[float, ...] = ()
    missing_below: float | None = 0.0  # codes < this are missing (WVS: negatives)
    min_respondents: int = 30
    group_labels: Mapping[str, str] = field(default_factory=dict)
    group_type: str | None = None


def wvs7_items(wvs_dir: Path = paths.WVS7_DIR) -> list[ItemSpec]:
    """The 239 WVS-7 value questions from the shipped codebook, recoded to monotone scales."""
    codebook = json.loads((wvs_dir / "wvs7_codebook.json").read_text(encoding="utf-8"))
    meta = json.loads((wvs_dir / "wvs7_question_metadata.json").read_text(encoding="utf-8"))
    adjust = json.loads((wvs_dir / "wvs7_answer_adjustment.json").read_text(encoding="utf-8"))
    specs = []
    for var, m in meta.items():
        if m.get("use_case") != "value" or var not in codebook:
            continue
        choices = {int(k): v for k, v in codebook[var]["choices"].items() if int(k) >= 0}
        recode = {int(k): (int(v) if v != "" else None) for k, v in adjust.get(var, {}).items()}
        new_of = {c: recode.get(c, c) for c in choices}
        targets = sorted({v for v in new_of.values() if v is not None})
        labels = []
        for t in targets:
            sources = [c for c, v in new_of.items() if v == t]
            src = t if t in sources else sources[0]
            labels.append(choices[src])
        labels = _label_numeric_scale(targets, labels)
        codes, opt_idx = [], []
        for c in sorted(choices):
            if new_of[c] is not None:
                codes.append(float(c))
                opt_idx.append(targets.index(new_of[c]))
        specs.append(ItemSpec(
            column=var, question=m["question"], codes=tuple(codes), option_of_code=tuple(opt_idx),
            options=tuple(labels), ordinal=m.get("answer_data_type") == "ordinal",
            section=m.get("category", "World Values Survey"),
        ))
    return specs


def _label_numeric_scale(codes: Sequence[int], labels: list[str]) -> list[str]:
    """'1'..'10' scales label only their ends; show the number everywhere: '1 (Not at all)'."""
    if not any(lbl.strip().isdigit() for lbl in labels):
        return labels
    return [lbl if lbl.strip() == str(c) else f"{c} ({lbl})" for c, lbl in zip(codes, labels, strict=True)]


def wvs7_spec(group_by: str = "B_COUNTRY_ALPHA", weight: str | None = "W_WEIGHT",
              min_respondents: int = 100, wvs_dir: Path = paths.WVS7_DIR) -> SurveySpec:
    codebook = json.loads((wvs_dir / "wvs7_codebook.json").read_text(encoding="utf-8"))
    labels = {}
    if group_by in codebook:
        labels = {str(k): v for k, v in codebook[group_by]["choices"].items()}
    return SurveySpec(
        name="wvs7", items=tuple(wvs7_items(wvs_dir)), group=group_by, weight=weight,
        missing_below=0.0, min_respondents=min_respondents, group_labels=labels,
        group_type="country" if group_by in ("B_COUNTRY_ALPHA", "B_COUNTRY") else group_by,
    )


def items_frame(spec: SurveySpec) -> pd.DataFrame:
    rows = [{
        "item_id": f"{spec.name}-{it.column}", "source": spec.name, "question": it.question,
        "options": list(it.options), "nonsubstantive": nonsubstantive_flags(it.options),
        "ordinal": it.ordinal, "section": it.section,
    } for it in spec.items]
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def _require_in_header(path: Path, header: Sequence[str], required: Sequence[str]) -> None:
    for col in required:
        if col not in header:
            close = difflib.get_close_matches(col, list(header), n=3)
            raise SurveyDataError(
                f"{path}: unknown column {col!r} (group/weight columns must exist)"
                + (f"; did you mean {', '.join(close)}?" if close else "")
            )


def read_microdata(path: Path | str, columns: Sequence[str] | None = None,
                   required: Sequence[str] = ()) -> pd.DataFrame:
    """Respondent-level file: CSV (comma/semicolon/tab), SPSS .sav or Stata .dta (pyreadstat).

    Only ``columns`` that exist are read (a survey may lack some items); ``required`` ones
    (group, weight) must exist, else the error suggests the closest column names.
    """
    path = Path(path)
    if not path.exists():
        raise SurveyDataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise SurveyDataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    if suffix in (".sav", ".zsav", ".dta"):
        import pyreadstat

        reader = pyreadstat.read_sav if suffix != ".dta" else pyreadstat.read_dta
        try:
            _, meta = reader(str(path), metadataonly=True)
            _require_in_header(path, meta.column_names, required)
            usecols = [c for c in columns if c in meta.column_names] if columns else None
            df, _ = reader(str(path), usecols=usecols, apply_value_formats=False)
        except SurveyDataError:
            raise
        except Exception as err:  # pyreadstat raises its own error types
            raise SurveyDataError(f"{path}: cannot be read as {suffix}: {err}") from err
        return df
    csvinput.check_utf8_stream(path, "microdata file", SurveyDataError)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    sep = max((",", ";", "\t"), key=first.count)
    header = [h.strip().strip('"') for h in first.split(sep)]
    _require_in_header(path, header, required)
    # the C parser (semicolon files) fills or drops fields of a ragged row without a word
    csvinput.check_rectangular_file(path, sep, "microdata file", SurveyDataError)
    usecols = [c for c in columns if c in header] if columns else None
    try:
        return pd.read_csv(path, sep=sep, usecols=usecols, engine="pyarrow" if sep != ";" else "c",
                           encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SurveyDataError(f"{path}: not UTF-8 ({err})") from err
    except (pd.errors.ParserError, ValueError) as err:
        raise SurveyDataError(f"{path}: cannot be parsed as CSV: {err}") from err


def aggregate_microdata(df: pd.DataFrame, spec: SurveySpec, path: Path | str,
                        on_invalid: OnInvalid = "raise") -> SurveyData:
    """Weighted answer distributions per group, vectorised over respondents (one pass per item)."""
    path = Path(path)
    drops = _Drops(path, on_invalid)
    needed = [spec.group] + ([spec.weight] if spec.weight else [])
    if spec.group not in df.columns:
        close = difflib.get_close_matches(spec.group, [str(c) for c in df.columns], n=3)
        raise SurveyDataError(
            f"{path}: unknown group column {spec.group!r}"
            + (f" (did you mean {', '.join(close)}?)" if close else "")
        )
    check_columns(df, needed, path)
    items = [it for it in spec.items if it.column in df.columns]
    if not items:
        raise SurveyDataError(f"{path}: none of the {len(spec.items)} item columns of {spec.name!r} are present")
    group_values = df[spec.group]
    groups = group_values.astype(str).str.strip()
    # pandas 3 keeps NaN through astype(str): an empty group cell is NaN, not the string "nan"
    no_group = (group_values.isna() | groups.isna() | (groups == "")).to_numpy()
    if no_group.any():
        first = int(np.flatnonzero(no_group)[0])
        drops(first + 2, spec.group, group_values.iloc[first],
              f"empty group value ({int(no_group.sum())} such respondents; they are left out)")
        groups = groups.where(~no_group, None)
    group_codes, group_names = pd.factorize(groups, sort=True)  # no group -> code -1
    has_group = group_codes >= 0
    n_groups = len(group_names)
    if spec.weight:
        w = pd.to_numeric(df[spec.weight], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            drops(first + 2, spec.weight, df[spec.weight].iloc[first],
                  f"weight must be a non-negative number ({int(bad.sum())} such rows; they get weight 0)")
            w = np.where(bad, 0.0, w)
        if len(w) and not (w > 0).any():  # every group would vanish without a word
            raise SurveyDataError(f"{path}: column {spec.weight!r}: every weight is 0 (or invalid), so no "
                                  "group has an answer distribution; check the weight column")
    else:
        w = np.ones(len(df))
    missing = np.asarray(spec.missing_codes, dtype=float)
    dists: list[dict] = []
    for it in items:
        answers = df[it.column]
        raw = pd.to_numeric(answers, errors="coerce").to_numpy(dtype=float)
        is_text = (answers.notna() & (answers.astype(str).str.strip() != "")).to_numpy() & np.isnan(raw)
        if is_text.any():  # e.g. a label ("Agree") where a code belongs: never silently missing
            first = int(np.flatnonzero(is_text)[0])
            drops(first + 2, it.column, answers.iloc[first],
                  f"not a numeric answer code ({int(is_text.sum())} such answers treated as missing)")
        is_missing = np.isnan(raw) | np.isin(raw, missing) | ~has_group
        if spec.missing_below is not None:
            is_missing |= raw < spec.missing_below
        codes = np.asarray(it.codes)
        order = np.argsort(codes)
        pos = np.searchsorted(codes[order], raw)
        pos = np.clip(pos, 0, len(codes) - 1)
        known = codes[order][pos] == raw
        invalid = ~is_missing & ~known
        if invalid.any():
            first = int(np.flatnonzero(invalid)[0])
            drops(first + 2, it.column, _number(raw[first]),
                  f"code not in the codebook (valid: {sorted(_number(c) for c in set(it.codes))}); "
                  f"{int(invalid.sum())} such answers treated as missing")
        valid = ~is_missing & known
        opt = np.asarray(it.option_of_code)[order][pos]
        k = len(it.options)
        flat = group_codes[valid] * k + opt[valid]
        wsum = np.bincount(flat, weights=w[valid], minlength=n_groups * k).reshape(n_groups, k)
        nresp = np.bincount(group_codes[valid], minlength=n_groups)
        totals = wsum.sum(axis=1)
        item_id = f"{spec.name}-{it.column}"
        for g in np.flatnonzero((nresp >= spec.min_respondents) & (totals > 0)):
            name = str(group_names[g])
            dists.append({
                "item_id": item_id, "group": spec.group_labels.get(name, name),
                "group_type": spec.group_type or spec.group, "shares": (wsum[g] / totals[g]).tolist(),
                "n": int(nresp[g]), "weighted": spec.weight is not None, "source": spec.name,
            })
        for g in np.flatnonzero((nresp >= spec.min_respondents) & (totals <= 0)):
            drops(f"group {group_names[g]}", spec.weight or it.column, 0,
                  f"the {int(nresp[g])} answers to {it.column} all have weight 0: group left out of this item")
        for g in np.flatnonzero((nresp > 0) & (nresp < spec.min_respondents)):
            drops(f"group {group_names[g]}", it.column, int(nresp[g]),
                  f"fewer than min_respondents={spec.min_respondents} answers")
    items_df = items_frame(SurveySpec(spec.name, tuple(items), spec.group))
    out = _frames([], dists, drops)
    out.items = items_df
    return out


def load_wvs7_microdata(path: Path | str, group_by: str = "B_COUNTRY_ALPHA",
                        weight: str | None = "W_WEIGHT", min_respondents: int = 100,
                        on_invalid: OnInvalid = "raise") -> SurveyData:
    """WVS-7 respondent-level data (licensed to the user; never committed) -> distributions."""
    spec = wvs7_spec(group_by, weight, min_respondents)
    required = [spec.group] + ([weight] if weight else [])
    df = read_microdata(path, required + [it.column for it in spec.items], required)
    return aggregate_microdata(df, spec, path, on_invalid)


def find_wvs7_microdata(raw_dir: Path = paths.RAW) -> Path | None:
    """A WVS-7 file the user placed in data/raw/ (the official names start with WVS_Cross-National)."""
    hits = sorted(p for p in raw_dir.glob("*") if p.is_file() and re.match(r"(?i)wvs", p.name)
                  and p.suffix.lower() in (".csv", ".sav", ".dta", ".zsav"))
    return hits[0] if hits else None


CODEBOOK_KEYS = {"name", "file", "group", "weight", "missing_codes", "missing_below", "min_respondents",
                 "group_labels", "group_type", "items"}
CODEBOOK_ITEM_KEYS = {"column", "question", "options", "ordinal", "section"}


def _codebook_text(value: Any, where: str, key: str, required: bool = True) -> str:
    """A non-empty string (YAML turns ``yes`` into True and ``1`` into 1: both refused)."""
    if not isinstance(value, str) or not value.strip():
        raise SurveyDataError(f"{where}: key {key!r} must be a non-empty string"
                              + ("" if required else " (or left out)") + f", got {value!r}")
    return value.strip()


def _codebook_number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SurveyDataError(f"{where}: key {key!r} must be a finite number, got {value!r}")
    return float(value)


def _codebook_options(opts: Any, where: str) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """``options: {code: label}``: numeric, distinct codes and non-empty, distinct labels."""
    if not isinstance(opts, dict) or len(opts) < 2:
        raise SurveyDataError(f"{where}: key 'options' must map at least two numeric codes to labels, got {opts!r}")
    codes, labels = [], []
    for code, label in opts.items():
        if isinstance(code, bool) or not isinstance(code, int | float) or not math.isfinite(code):
            raise SurveyDataError(f"{where}: key 'options': code {code!r} is not a number (codes are the "
                                  "numbers in the data file; YAML reads yes/no as true/false)")
        if isinstance(label, bool) or label is None or not str(label).strip():
            raise SurveyDataError(f"{where}: key 'options': code {code!r} has no label ({label!r}); quote "
                                  "labels such as 'Yes', 'No' or 'None' (YAML reads them as true/false/null)")
        codes.append(float(code))
        labels.append(str(label).strip())
    for what, values in (("label", labels), ("code", codes)):
        dup = sorted({str(v) for v in values if values.count(v) > 1})
        if dup:
            raise SurveyDataError(f"{where}: key 'options': {what}(s) {', '.join(dup)} given twice")
    return tuple(codes), tuple(labels)


def load_codebook_spec(spec_path: Path | str) -> tuple[SurveySpec, Path]:
    """A YAML codebook that plugs another survey (NZAVS, ESS, ...) in without code.

    Keys: ``name``, ``file`` (relative to the YAML), ``group``, optional ``weight``,
    ``missing_codes``, ``missing_below``, ``min_respondents``, ``group_labels``, and ``items``:
    a list of ``{column, question, options: {code: label}, ordinal, section}``; options are in
    scale order as listed. Every value is checked (codes numbers, labels non-empty and distinct,
    ``ordinal`` true/false, ``min_respondents`` a positive integer, ...), and an error names the
    file and the key, so a typo never turns into a silently different survey.
    """
    spec_path = Path(spec_path)
    try:
        raw = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SurveyDataError(f"{spec_path}: cannot read codebook: {err}") from err
    if not isinstance(raw, dict):
        raise SurveyDataError(f"{spec_path}: a codebook must be a mapping")
    for key in ("name", "file", "group", "items"):
        if key not in raw:
            raise SurveyDataError(f"{spec_path}: missing required key {key!r}")
    unknown = sorted(str(k) for k in raw if k not in CODEBOOK_KEYS)
    if unknown:
        raise SurveyDataError(f"{spec_path}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(CODEBOOK_KEYS))})")
    where = str(spec_path)
    name = _codebook_text(raw["name"], where, "name")
    if not paths.SLUG.fullmatch(name):
        raise SurveyDataError(f"{where}: key 'name' {name!r} must be a slug (letters, digits, . _ - + =): it "
                              "prefixes every item id")
    data_file_name = _codebook_text(raw["file"], where, "file")
    group = _codebook_text(raw["group"], where, "group")
    weight = raw.get("weight")
    weight = None if weight is None else _codebook_text(weight, where, "weight", required=False)
    if not isinstance(raw["items"], list) or not raw["items"]:
        raise SurveyDataError(f"{where}: key 'items' must be a non-empty list of items")
    items = []
    for i, it in enumerate(raw["items"]):
        at = f"{spec_path}: items[{i}]"
        if not isinstance(it, dict):
            raise SurveyDataError(f"{at}: an item must be a mapping with column, question, options")
        for key in ("column", "question", "options"):
            if key not in it:
                raise SurveyDataError(f"{at}: missing required key {key!r}")
        column = _codebook_text(it["column"], at, "column")
        at = f"{at} ({column})"
        extra = sorted(str(k) for k in it if k not in CODEBOOK_ITEM_KEYS)
        if extra:
            raise SurveyDataError(f"{at}: unknown key(s) {', '.join(extra)} (valid: {', '.join(sorted(CODEBOOK_ITEM_KEYS))})")
        codes, labels = _codebook_options(it["options"], at)
        ordinal = it.get("ordinal", False)
        if not isinstance(ordinal, bool):
            raise SurveyDataError(f"{at}: key 'ordinal' must be true or false, got {ordinal!r}")
        items.append(ItemSpec(
            column=column, question=_codebook_text(it["question"], at, "question"), codes=codes,
            option_of_code=tuple(range(len(codes))), options=labels, ordinal=ordinal,
            section=_codebook_text(it.get("section", name), at, "section"),
        ))
    columns = [it.column for it in items]
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise SurveyDataError(f"{where}: key 'items': column(s) {', '.join(dup)} described twice")
    missing_codes = raw.get("missing_codes", []) or []
    if not isinstance(missing_codes, list):
        raise SurveyDataError(f"{where}: key 'missing_codes' must be a list of numbers, got {missing_codes!r}")
    min_respondents = raw.get("min_respondents", 30)
    if isinstance(min_respondents, bool) or not isinstance(min_respondents, int) or min_respondents < 1:
        raise SurveyDataError(f"{where}: key 'min_respondents' must be an integer >= 1, got {min_respondents!r}")
    group_labels = raw.get("group_labels") or {}
    if not isinstance(group_labels, dict):
        raise SurveyDataError(f"{where}: key 'group_labels' must map group values to names, got {group_labels!r}")
    for k, v in group_labels.items():
        _codebook_text(v, where, f"group_labels.{k}")
    missing_below = raw.get("missing_below")
    group_type = raw.get("group_type")
    spec = SurveySpec(
        name=name, items=tuple(items), group=group, weight=weight,
        missing_codes=tuple(_codebook_number(c, where, "missing_codes") for c in missing_codes),
        missing_below=None if missing_below is None else _codebook_number(missing_below, where, "missing_below"),
        min_respondents=min_respondents,
        group_labels={str(k): str(v).strip() for k, v in group_labels.items()},
        group_type=None if group_type is None else _codebook_text(group_type, where, "group_type"),
    )
    data_file = Path(data_file_name)
    if not data_file.is_absolute():
        data_file = spec_path.parent / data_file
    return spec, data_file


def load_codebook_survey(spec_path: Path | str, on_invalid: OnInvalid = "raise") -> SurveyData:
    spec, data_file = load_codebook_spec(spec_path)
    required = [spec.group] + ([spec.weight] if spec.weight else [])
    df = read_microdata(data_file, required + [it.column for it in spec.items], required)
    return aggregate_microdata(df, spec, data_file, on_invalid)


# ------------------------------------------------------------------ combining and checking
def finalize(data: SurveyData, min_groups_per_item: int = 1) -> SurveyData:
    """Deterministic order, schema check, and items without enough groups recorded as dropped.

    Items of a codebook source without any distribution (e.g. WVS-7 without microdata) are
    kept: their text still feeds the value taxonomy.
    """
    items = data.items.drop_duplicates("item_id", keep="first")
    dists = data.distributions
    counts = dists.groupby("item_id")["group"].nunique()
    too_few = counts[counts < min_groups_per_item].index
    dropped = [data.dropped]
    if len(too_few):
        dropped.append(pd.DataFrame({
            "file": "", "row": "", "column": "item_id", "value": list(too_few),
            "reason": f"fewer than min_groups_per_item={min_groups_per_item} groups",
        }))
        dists = dists[~dists["item_id"].isin(too_few)]
        items = items[~items["item_id"].isin(too_few)]
    dup = dists.duplicated(["item_id", "group"], keep="first")
    if dup.any():
        dropped.append(pd.DataFrame({
            "file": "", "row": "", "column": "group",
            "value": (dists.loc[dup, "item_id"] + " / " + dists.loc[dup, "group"]).tolist(),
            "reason": "duplicate (item, group): kept the first source's distribution",
        }))
        dists = dists[~dup]
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    dists = dists.sort_values(["item_id", "group"], kind="stable").reset_index(drop=True)
    check_schema(items, dists)
    kept = pd.MultiIndex.from_frame(dists[["item_id", "group"]])
    codes = data.processing_codes
    codes = (codes[pd.MultiIndex.from_frame(codes[["item_id", "group"]]).isin(kept)]
             .sort_values(["item_id", "group", "option"], kind="stable").reset_index(drop=True))
    return SurveyData(items, dists, pd.concat(dropped, ignore_index=True)[DROP_COLUMNS], codes)


def check_schema(items: pd.DataFrame, dists: pd.DataFrame, tol: float = 1e-6) -> None:
    """Invariants every later stage relies on; violations are bugs, so they raise."""
    check_columns(items, ITEM_COLUMNS, "items")
    check_columns(dists, DIST_COLUMNS, "distributions")
    n_opts = dict(zip(items["item_id"], items["options"].map(len), strict=True))
    for row in dists.itertuples(index=False):
        if row.item_id not in n_opts:
            raise SurveyDataError(f"distributions: item {row.item_id!r} has no row in items")
        if not isinstance(row.group, str) or not row.group.strip():
            raise SurveyDataError(f"distributions: item {row.item_id!r} has a row with an empty group name "
                                  f"({row.group!r})")
        wrong = [v for v in row.shares if isinstance(v, bool | str | bytes) or v is None]
        if wrong:
            raise SurveyDataError(f"distributions: item {row.item_id!r} group {row.group!r}: shares must be "
                                  f"numbers, got {wrong[0]!r}")
        if len(row.shares) != n_opts[row.item_id]:
            raise SurveyDataError(
                f"distributions: item {row.item_id!r} group {row.group!r}: "
                f"{len(row.shares)} shares for {n_opts[row.item_id]} options"
            )
        if not math.isclose(float(np.sum(row.shares)), 1.0, abs_tol=tol):
            raise SurveyDataError(f"distributions: item {row.item_id!r} group {row.group!r} does not sum to 1")


def processing_code_summary(codes: pd.DataFrame) -> pd.DataFrame:
    """What removing processing codes touched: one row per code label, then one for all.

    ``codes`` is :attr:`SurveyData.processing_codes` (one row per item, group and code). Mass
    is the share of a group's answers that sat on the code(s) before renormalising, per
    distribution (item x group): its mean and maximum over the distributions touched.
    """
    check_columns(codes, PROCESSING_COLUMNS, "processing_codes")
    per_dist = codes.groupby(["item_id", "group"], sort=True)["share"].sum()
    rows = [{
        "processing code": str(label), "items": sub["item_id"].nunique(),
        "distributions": len(sub.drop_duplicates(["item_id", "group"])),
        "with mass > 0": int((sub["share"] > 0).sum()),
        "mean mass": float(sub["share"].mean()), "max mass": float(sub["share"].max()),
    } for label, sub in codes.groupby("option", sort=True)]
    rows.append({
        "processing code": "all (per distribution)", "items": codes["item_id"].nunique(),
        "distributions": len(per_dist), "with mass > 0": int((per_dist > 0).sum()),
        "mean mass": float(per_dist.mean()) if len(per_dist) else 0.0,
        "max mass": float(per_dist.max()) if len(per_dist) else 0.0,
    })
    return pd.DataFrame(rows)


def coverage(items: pd.DataFrame, dists: pd.DataFrame) -> pd.DataFrame:
    """Items per source x section, and how many groups answer them."""
    per_item = dists.groupby("item_id")["group"].nunique().rename("n_groups")
    df = items.merge(per_item, left_on="item_id", right_index=True, how="left").fillna({"n_groups": 0})
    return (df.groupby(["source", "section"])
              .agg(items=("item_id", "size"), with_distributions=("n_groups", lambda s: int((s > 0).sum())),
                   mean_groups=("n_groups", "mean"))
              .reset_index())


# ------------------------------------------------------------------ the stage, as notebook 00 runs it
def load_sources(sources: Sequence[str], *, goqa_choice: str = "auto", goqa_tolerance: float = 0.02,
                 wvs7_microdata: str = "auto", wvs7_group_by: str = "B_COUNTRY_ALPHA",
                 wvs7_weight: str = "W_WEIGHT", wvs7_min_respondents: int = 100,
                 codebook_specs: Sequence[str] = (), on_invalid: OnInvalid = "drop",
                 ) -> tuple[SurveyData, list[Path]]:
    """Load every requested source; returns the combined data and the input files read."""
    parts: list[SurveyData] = []
    inputs: list[Path] = []
    for source in sources:
        if source == "goqa":
            f = goqa_file(goqa_choice)
            parts.append(load_goqa(f, on_invalid=on_invalid, tol=goqa_tolerance))
            inputs.append(f)
        elif source == "wvs7":
            spec = wvs7_spec(wvs7_group_by, wvs7_weight or None, wvs7_min_respondents)
            inputs.append(paths.WVS7_DIR)
            micro = find_wvs7_microdata() if wvs7_microdata == "auto" else (
                (paths.RAW / wvs7_microdata) if wvs7_microdata else None)
            if micro is None:
                parts.append(SurveyData(items=items_frame(spec)))
            else:
                parts.append(load_wvs7_microdata(micro, wvs7_group_by, wvs7_weight or None,
                                                 wvs7_min_respondents, on_invalid))
                inputs.append(micro)
        elif source == "codebook":
            for spec_file in codebook_specs:
                p = Path(spec_file) if Path(spec_file).is_absolute() else paths.RAW / spec_file
                parts.append(load_codebook_survey(p, on_invalid=on_invalid))
                inputs.append(p)
        else:
            raise SurveyDataError(f"unknown source {source!r}; valid: goqa, wvs7, codebook")
    return SurveyData.concat(parts), inputs


def plot_coverage(items: pd.DataFrame, dists: pd.DataFrame, max_groups: int = 40) -> Any:
    """Heatmap of which group answered which item (items grouped by source and section)."""
    plt = style.pyplot()

    if dists.empty:  # e.g. WVS-7 text only, without microdata: say so instead of an empty heatmap
        return _note_figure("Coverage", "no answer distributions (no group answered any item)")
    top = dists["group"].value_counts().head(max_groups).index
    present = (dists[dists["group"].isin(top)].assign(v=1)
               .pivot_table(index="item_id", columns="group", values="v", fill_value=0))
    meta = items.set_index("item_id").loc[present.index, ["source", "section"]]
    order = meta.assign(cov=present.sum(axis=1)).sort_values(["source", "section", "cov"]).index
    present = present.loc[order, list(top)]
    fig, ax = plt.subplots(figsize=style.figsize(1.0, 0.55))
    ax.imshow(present.to_numpy().T, aspect="auto", interpolation="nearest", cmap="Greys")
    ax.set_yticks(range(len(top)), [str(g)[:18] for g in top], fontsize=5)
    ax.set_xlabel(f"items with distributions (n = {len(present)}), grouped by source and section")
    ax.set_title(f"Coverage: the {len(top)} groups with most items")
    return fig


def _note_figure(title: str, note: str) -> Any:
    """A one-panel figure that states why there is nothing to plot (small or empty inputs)."""
    plt = style.pyplot()

    fig, ax = plt.subplots(figsize=style.figsize(1.0, 0.2))
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=ax.transAxes)
    ax.set_title(title)
    ax.set_axis_off()
    return fig


def example_item_ids(items: pd.DataFrame, dists: pd.DataFrame, n: int = 3, min_groups: int = 4) -> list[str]:
    """Up to ``n`` items (one per section first) answered by at least ``min_groups`` groups, or by
    as many groups as any item has when no item reaches that (a survey with two groups)."""
    if dists.empty or n <= 0:
        return []
    answered = dists.groupby("item_id")["group"].nunique()
    need = min(min_groups, int(answered.max()))
    candidates = items[items["item_id"].isin(answered[answered >= need].index)].sort_values("item_id")
    first = candidates.groupby("section", dropna=False).head(1)["item_id"].tolist()
    rest = [i for i in candidates["item_id"] if i not in first]
    return (first + rest)[:n]


def plot_example_items(items: pd.DataFrame, dists: pd.DataFrame, item_ids: Sequence[str],
                       max_groups: int = 4) -> Any:
    """Bar charts of a few items' answer distributions in several groups (a note when none)."""
    plt = style.pyplot()

    if not len(item_ids):
        return _note_figure("Example items", "no item has an answer distribution to show")
    fig, axes = plt.subplots(1, len(item_ids), figsize=style.figsize(1.0, 0.42), squeeze=False)
    for ax, item_id in zip(axes[0], item_ids, strict=True):
        it = items.set_index("item_id").loc[item_id]
        sub = dists[dists["item_id"] == item_id].head(max_groups)
        width = 0.8 / max(len(sub), 1)
        for j, row in enumerate(sub.itertuples(index=False)):
            xs = np.arange(len(it["options"])) + j * width
            ax.bar(xs, row.shares, width=width, label=str(row.group)[:16])
        ax.set_xticks(np.arange(len(it["options"])) + 0.4 - width / 2,
                      [o[:14] for o in it["options"]], rotation=60, ha="right", fontsize=5)
        q = it["question"]
        ax.set_title((q[:60] + "...") if len(q) > 60 else q, fontsize=6, wrap=True)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=5, frameon=False)
    axes[0][0].set_ylabel("share of respondents")
    return fig

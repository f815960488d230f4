"""DailyDilemmas (notebook 04): did fine-tuning move the model's everyday choices, and which way?

Each dilemma is a yes/no question about an action; the model's probability of "Yes" (averaged
over the two answer orders of :func:`valuealign.prompts.dilemma_messages`) is compared between
models per dilemma. With the full per-action file (``data/README.md``) the actions' values are
signed on the World Values Survey's two dimensions, so a shift reads as a move towards
traditional or secular-rational, survival or self-expression values.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuealign import paths, prompts, provenance, style
from valuealign.errors import EvaluationError
from valuealign.inference import Scorer, chat_text
from valuealign.stats import bootstrap_ci, paired_test

WVS_DIMENSIONS = ("Traditional", "Secular-rational", "Survival", "Self-expression")

DILEMMA_ACTION_FILE = "dilemmas_with_detail_by_action.csv"  # full per-action file, researcher-provided
DILEMMA_ACTION_COLUMNS = ("idx", "action_type", "values_direct")
DILEMMA_ACTIONS = ("to_do", "not_to_do")
WVS_SIGN_COLUMNS = {d: "sign_" + re.sub(r"[^a-z]+", "_", d.lower()) for d in WVS_DIMENSIONS}


@dataclass
class DilemmaSet:
    """The dilemmas to score and what may be claimed about them.

    ``table``: ``idx``, ``question``, ``value_source`` and, with the full per-action file,
    ``values_to_do`` / ``values_not_to_do`` (direct values with a WVS mapping) and one sign
    column per WVS dimension (:data:`WVS_SIGN_COLUMNS`): +1 when the dimension's values are on
    the side of the action (``to_do``), -1 when on the side of not acting, 0 when absent or
    balanced. Without that file the table has no value links at all.
    """

    table: pd.DataFrame
    n_requested: int
    n_available: int
    per_action_file: str | None = None
    n_unsigned: int = 0  # dilemmas with no net sign on any dimension (no WVS-mapped value, or balanced)
    notes: list[str] = field(default_factory=list)

    @property
    def n_used(self) -> int:
        return int(len(self.table))

    @property
    def signed(self) -> bool:
        return self.per_action_file is not None

    def describe(self) -> str:
        """One sentence for the notebook: how many dilemmas were used of how many requested, and why."""
        used = f"{self.n_used} dilemmas scored of {self.n_requested} requested"
        if self.n_requested > self.n_available:
            used += f" (only {self.n_available} available, so all {self.n_available} were used)"
        if self.signed:
            how = (f"values signed by action from `{self.per_action_file}` (direct values; +1 on the side "
                   f"of acting, -1 on the side of not acting)")
            if self.n_unsigned:
                how += (f"; {self.n_unsigned} of them have no dimension with a net sign (no WVS-mapped direct "
                        f"value, or as many on both sides) and count only for shifts")
        else:
            how = (f"only the shipped files are present, so per-dilemma shifts between models are reported "
                   f"without any value-dimension claim (add `{DILEMMA_ACTION_FILE}` to "
                   f"`{paths.relative(paths.DILEMMAS_DIR)}/` for signed WVS dimensions, see data/README.md)")
        return "; ".join([f"{used}; {how}", *self.notes]) + "."


def _parse_list(cell: Any, where: str) -> list[str]:
    import ast

    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    try:
        value = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError) as err:
        raise EvaluationError(f"{where}: not a Python list literal ({err}): {str(cell)[:80]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise EvaluationError(f"{where}: expected a list of value names, got {type(value).__name__}")
    return [str(v).strip().lower() for v in value if isinstance(v, str) and v.strip()]


def read_dilemma_actions(path: Path) -> dict[int, dict[str, list[str]]]:
    """Direct values per dilemma and action from the full per-action file.

    Why direct values: they are the values the action itself serves for the people directly
    involved; the same word can sit on either side (the roommate's journal: privacy argues
    against reading it), so only the action a value is listed under gives its direction.
    Errors name the file, row and column; each ``idx`` may have each action at most once.
    """
    df = pd.read_csv(path)
    missing = [c for c in DILEMMA_ACTION_COLUMNS if c not in df.columns]
    if missing:
        raise EvaluationError(f"{paths.relative(path)}: missing column(s) {missing} "
                              f"(needs {list(DILEMMA_ACTION_COLUMNS)})")
    out: dict[int, dict[str, list[str]]] = {}
    for row_no, r in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        where = f"{paths.relative(path)} line {row_no}"
        if r.action_type not in DILEMMA_ACTIONS:
            raise EvaluationError(f"{where}: column action_type is {r.action_type!r}, not one of {DILEMMA_ACTIONS}")
        try:
            idx = int(r.idx)
        except (TypeError, ValueError):
            raise EvaluationError(f"{where}: column idx is {r.idx!r}, not an integer") from None
        actions = out.setdefault(idx, {})
        if r.action_type in actions:
            raise EvaluationError(f"{where}: dilemma idx {idx} has a second {r.action_type!r} row")
        actions[r.action_type] = _parse_list(r.values_direct, f"{where}, column values_direct")
    return out


def load_dilemmas(n: int, seed: int = 0, folder: Path | None = None) -> DilemmaSet:
    """A deterministic sample of ``n`` DailyDilemmas (0: all), signed by action where possible.

    Every dilemma of ``dilemma.csv`` can be scored; the sample does not depend on which
    have value links (a linked-only sample would be a biased one). Values are linked to the
    WVS dimensions of ``values.csv`` only through the full per-action file
    (:data:`DILEMMA_ACTION_FILE`, researcher-provided like WVS microdata): a dimension gets
    +1 for a dilemma when more of its values are direct values of ``to_do`` than of
    ``not_to_do``, -1 in the opposite case. Neither a word in the text (it may argue against
    the action) nor the shipped 8-row schema sample (4 dilemmas) gives a direction, so without
    the full file there are no value links and :func:`dilemmas_by_dimension` reports nothing.
    """
    folder = folder or paths.DILEMMAS_DIR
    f_d, f_v, f_x = folder / "dilemma.csv", folder / "values.csv", folder / DILEMMA_ACTION_FILE
    for f in (f_d, f_v):
        if not f.exists():
            raise EvaluationError(f"{paths.relative(f)} is missing (DailyDilemmas, see data/README.md)")
    if n < 0:
        raise EvaluationError(f"parameter eval_n_dilemmas must be >= 0, got {n}")
    dil = pd.read_csv(f_d)
    for col in ("idx", "dilemma_situation"):
        if col not in dil.columns:
            raise EvaluationError(f"{paths.relative(f_d)}: missing column {col!r}")
    vals = pd.read_csv(f_v)
    if not {"value", "WVS"} <= set(vals.columns):
        raise EvaluationError(f"{paths.relative(f_v)}: needs columns 'value' and 'WVS'")
    vals = vals.dropna(subset=["WVS"])
    wvs = {str(v).strip().lower(): str(w) for v, w in zip(vals["value"], vals["WVS"], strict=True)}
    unknown = sorted(set(wvs.values()) - set(WVS_DIMENSIONS))
    if unknown:
        raise EvaluationError(f"{paths.relative(f_v)}: column WVS has {unknown}, not one of {WVS_DIMENSIONS}")
    dil = dil.drop_duplicates("idx")
    order = sorted(dil["idx"].astype(int), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    chosen = set(order[:n] if n > 0 else order)
    table = pd.DataFrame({"idx": dil["idx"].astype(int), "question": dil["dilemma_situation"].astype(str).str.strip()})
    table = table[table["idx"].isin(chosen)].sort_values("idx").reset_index(drop=True)
    result = DilemmaSet(table.assign(value_source="none"), n_requested=n if n > 0 else len(order),
                        n_available=len(order))
    if not f_x.exists():
        return result
    actions = read_dilemma_actions(f_x)
    incomplete = sorted(i for i in table["idx"] if set(actions.get(i, {})) != set(DILEMMA_ACTIONS))
    unsignable = set(incomplete)
    if incomplete:
        result.notes.append(f"{len(incomplete)} scored dilemma(s) lack a to_do or not_to_do row in "
                            f"{DILEMMA_ACTION_FILE} and are unsigned (idx {incomplete[:5]}"
                            f"{' ...' if len(incomplete) > 5 else ''})")
    to_do, not_to_do, signs = [], [], {d: [] for d in WVS_DIMENSIONS}
    for i in table["idx"]:
        a = actions.get(i, {}) if i not in unsignable else {}
        pro = [v for v in a.get("to_do", []) if v in wvs]
        con = [v for v in a.get("not_to_do", []) if v in wvs]
        to_do.append(pro)
        not_to_do.append(con)
        for d in WVS_DIMENSIONS:
            balance = sum(wvs[v] == d for v in pro) - sum(wvs[v] == d for v in con)
            signs[d].append(int(np.sign(balance)))
    table = table.assign(values_to_do=to_do, values_not_to_do=not_to_do, value_source="per_action",
                         **{WVS_SIGN_COLUMNS[d]: s for d, s in signs.items()})
    result.table = table
    result.per_action_file = paths.relative(f_x)
    result.n_unsigned = int((table[list(WVS_SIGN_COLUMNS.values())] == 0).all(axis=1).sum())
    return result


def dilemma_input_hashes(folder: Path | None = None) -> dict[str, str]:
    """SHA-256 of the DailyDilemmas files an evaluation reads (the per-action file too, when
    present), so evaluations with and without it get different keys."""
    folder = folder or paths.DILEMMAS_DIR
    files = [folder / "dilemma.csv", folder / "values.csv", folder / DILEMMA_ACTION_FILE]
    return {paths.relative(f): provenance.sha256_file(f) for f in files if f.exists()}


def dilemma_preferences(dilemmas: pd.DataFrame, tokenizer: Any, scorer: Scorer) -> pd.DataFrame:
    """P(to_do) per dilemma: the probability of "Yes" vs "No" as the answer to its question.

    Out of the survey format on purpose (no lettered options); the two templates name the
    answers in both orders and are averaged, as option orders are for survey items.
    ``logit_to_do`` = log P(Yes) - log P(No), the log-probability margin of the action.
    ``dilemmas`` is :attr:`DilemmaSet.table`; its value links and signs are carried along.
    """
    texts, labels, keys = [], [], []
    for r in dilemmas.itertuples():
        for messages in prompts.dilemma_messages(r.question):
            texts.append(chat_text(tokenizer, messages))
            labels.append(["Yes", "No"])
            keys.append(r.idx)
    scores = scorer(texts, labels)
    df = pd.DataFrame({"idx": keys, "p_to_do": [s.probs[0] for s in scores],
                       "logit_to_do": [s.logprobs[0] - s.logprobs[1] for s in scores],
                       "valid_mass": [s.valid_mass for s in scores]})
    carry = [c for c in dilemmas.columns if c in ("value_source", *WVS_SIGN_COLUMNS.values())]
    return df.groupby("idx", as_index=False).mean().merge(dilemmas[["idx", *carry]], on="idx")


def dilemma_shifts(prefs: pd.DataFrame, reference: str = "base") -> pd.DataFrame:
    """Per dilemma and model: P(to_do) minus the ``reference`` model's on the same dilemma.

    The claim that needs no value links: did fine-tuning move the model's choices in
    everyday dilemmas, and in which direction (towards acting or not)? One row per
    (condition, idx) of every condition other than the reference.
    """
    ref = prefs[prefs["method"] == reference]
    if ref.empty:
        raise EvaluationError(f"dilemma shifts: no {reference!r} rows to compare with")
    ref = ref.set_index("idx")["p_to_do"]
    rows = prefs[prefs["method"] != reference].copy()
    missing = sorted(set(rows["idx"]) - set(ref.index))
    if missing:
        raise EvaluationError(f"dilemma shifts: {reference!r} has no score for dilemma idx {missing[:5]}")
    rows["p_reference"] = rows["idx"].map(ref)
    rows["shift"] = rows["p_to_do"] - rows["p_reference"]
    keep = [c for c in ("run", "method", "value_set", "seed", "condition") if c in rows.columns]
    return rows[[*keep, "idx", "p_reference", "p_to_do", "shift"]].reset_index(drop=True)


def summarise_dilemma_shifts(shifts: pd.DataFrame, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Per model: mean shift of P(to_do) against the reference with a bootstrap CI over
    dilemmas and the Wilcoxon p, the mean absolute shift, and the share of dilemmas whose
    preferred answer flipped (P(to_do) crossed 0.5)."""
    rows = []
    for cond, g in shifts.groupby("condition", sort=True):
        mean, lo, hi, n = bootstrap_ci(g["shift"], n_boot, seed)
        rows.append({"condition": cond, "mean_shift": mean, "ci_low": lo, "ci_high": hi,
                     "p_wilcoxon": paired_test(g["shift"]), "mean_abs_shift": float(g["shift"].abs().mean()),
                     "share_flipped": float(((g["p_to_do"] > 0.5) != (g["p_reference"] > 0.5)).mean()),
                     "n_dilemmas": n})
    return pd.DataFrame(rows)


def dilemmas_by_dimension(prefs: pd.DataFrame, n_boot: int, seed: int = 0,
                          reference: str = "base") -> pd.DataFrame:
    """Per WVS dimension and model, on the dilemmas whose action is signed for it.

    ``p_dimension_side``: mean probability of choosing the side whose direct values carry the
    dimension (P(to_do) where the sign is +1, 1 - P(to_do) where it is -1). ``shift``: the
    same minus the ``reference`` model's, paired by dilemma (95% bootstrap CI, Wilcoxon p):
    > 0 means the model moved towards that dimension's values. Empty without sign columns
    (only the shipped files): then no dimension claim is made.
    """
    sign_cols = [c for c in WVS_SIGN_COLUMNS.values() if c in prefs.columns]
    if not sign_cols or prefs.empty:
        return pd.DataFrame()
    ref = prefs.loc[prefs["method"] == reference].set_index("idx")["p_to_do"]
    rows = []
    for d, col in WVS_SIGN_COLUMNS.items():
        signed = prefs[prefs[col] != 0]
        for cond, g in signed.groupby("condition", sort=True):
            side = np.where(g[col] > 0, g["p_to_do"], 1 - g["p_to_do"])
            mean, lo, hi, n = bootstrap_ci(side, n_boot, seed)
            row = {"condition": cond, "wvs_dimension": d, "p_dimension_side": mean, "ci_low": lo,
                   "ci_high": hi, "n_dilemmas": n}
            if len(ref) and g["method"].iloc[0] != reference:
                diff = g[col].to_numpy() * (g["p_to_do"].to_numpy() - g["idx"].map(ref).to_numpy())
                s_mean, s_lo, s_hi, _ = bootstrap_ci(diff, n_boot, seed)
                row.update(shift=s_mean, shift_ci_low=s_lo, shift_ci_high=s_hi, p_wilcoxon=paired_test(diff))
            rows.append(row)
    return pd.DataFrame(rows)


def plot_dilemmas(by_dim: pd.DataFrame) -> Any:
    """P(choosing the side whose direct values carry a WVS dimension), per model: only with the
    full per-action file (signed dimensions, :func:`dilemmas_by_dimension`)."""
    plt = style.pyplot()

    if by_dim.empty or "p_dimension_side" not in by_dim.columns:
        raise EvaluationError("plot_dilemmas needs signed dimensions (the full per-action file); "
                              "without it use plot_dilemma_shifts")
    fig, ax = plt.subplots(figsize=style.figsize(0.8, 0.5))
    conds = sorted(by_dim["condition"].unique())
    dims = [d for d in WVS_DIMENSIONS if d in set(by_dim["wvs_dimension"])]
    for k, c in enumerate(conds):
        d = by_dim[by_dim["condition"] == c].set_index("wvs_dimension").reindex(dims)
        x = np.arange(len(dims)) + (k - (len(conds) - 1) / 2) * 0.8 / len(conds)
        err = np.vstack([d["p_dimension_side"] - d["ci_low"], d["ci_high"] - d["p_dimension_side"]]).clip(min=0)
        ax.errorbar(x, d["p_dimension_side"], yerr=np.nan_to_num(err), fmt="o", ms=3, capsize=2, label=c)
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(range(len(dims)), dims)
    ax.set_ylabel("P(side with these values)")
    ax.legend(frameon=False, fontsize=6)
    return fig


def plot_dilemma_shifts(shifts: pd.DataFrame) -> Any:
    """Per model, every dilemma's shift in P(to_do) against the base model (sorted), with the
    mean: how far and which way fine-tuning moved everyday choices, without value links."""
    plt = style.pyplot()

    fig, ax = plt.subplots(figsize=style.figsize(0.8, 0.5))
    for k, (_cond, g) in enumerate(shifts.groupby("condition", sort=True)):
        v = np.sort(g["shift"].to_numpy())
        x = k + np.linspace(-0.3, 0.3, len(v)) if len(v) > 1 else np.array([float(k)])
        color = style.METHOD_COLORS.get(g["method"].iloc[0]) if "method" in g else None
        ax.plot(x, v, ".", ms=3, color=color)
        ax.hlines(v.mean(), k - 0.35, k + 0.35, color="k", lw=1.2)
    conds = sorted(shifts["condition"].unique())
    ax.axhline(0, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(range(len(conds)), conds, rotation=20, ha="right", fontsize=6)
    ax.set_ylabel("P(to do) minus base, per dilemma")
    return fig

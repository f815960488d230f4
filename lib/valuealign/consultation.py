"""Public consultation (stage 05): Polis data in, opinion groups, consensus, alignment data out.

Why this stage: phase 3 of the thesis asks the public for preference feedback (with Polis)
and turns it into training data and a publishable dataset. The shipped Scoop HiveMind
conversations (Polis open data, CC BY 4.0) stand in for the thesis's own consultation until
it has been run; the same code imports the researcher's own Polis export.

The pipeline, one function per step:

1. :func:`load_conversation` reads a Polis open-data export folder (``comments.csv``,
   ``votes.csv`` and/or ``participants-votes.csv``, ``summary.csv``) into a participant x
   statement vote matrix (1 agree, -1 disagree, 0 pass, NaN unseen) plus each statement's
   moderation status. Duplicate votes: the latest wins, as Polis does (ties in timestamp:
   the later row in the file wins); every correction is recorded in ``Conversation.report``.
   :func:`source_checks` re-derives the counts the export itself states and says which hold.
2. :func:`opinion_groups` forms opinion groups twice on the same participants: as Polis's
   math engine does (rejected statements zeroed, PCA of the mean-imputed matrix, projections
   scaled by sqrt(statements / statements seen), 100 base clusters of the in-conv
   participants, weighted k-means of the base clusters with k chosen by their silhouette)
   and with the thesis's own method (UMAP + HDBSCAN), and reports their agreement and the
   agreement with the groups Polis published (adjusted Rand index).
3. :func:`statement_table` computes group-informed consensus (the product over groups of
   each group's smoothed agree probability (agree + 1) / (seen + 2), as Polis computes it),
   division between groups, and :func:`representative_statements` per group.
4. :func:`export_alignment_data` writes KTO / DPO (and SFT) rows in the row schema of
   ``valuealign.rows.TRAINER_COLUMNS`` under ``paths.CONSULTATION / <value_set> / <method>/`` with a datasheet.
   Participant ids (voters and comment authors) never leave :class:`Conversation`.
5. :func:`export_seed_comments` writes selected model responses as a Polis seed-comments CSV
   for the next round; :func:`match_seed_comments` maps the statements of that round's
   export back to the responses that seeded them (the re-import path).

Missing votes: a participant sees only some statements. For PCA the matrix is imputed with
each statement's mean vote over those who saw it (a statement nobody saw gets 0); centred,
an imputed cell is then exactly 0, so a projection sums over the statements a participant
actually voted on, and it is scaled up by sqrt(n_statements / n_seen) so that people who
voted on few statements are not pulled to the centre (Polis's "sparsity-aware" projection).
UMAP + HDBSCAN take the same mean-imputed matrix (unscaled).

Why one module of about 1200 lines: notebook 05 walks through it in order (import and check a
Polis export, consensus, export of KTO/DPO/SFT rows, seed comments for the next round, and the
``python -m valuealign.consultation`` commands for them); every part works on the one
``Conversation`` record and its vote matrix. The opinion groups, one published algorithm, are
:mod:`valuealign.polis_groups` (re-exported here); the evaluation of the refined models is
:mod:`valuealign.consultation_eval`.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from valuealign import csvinput, paths, provenance, style
from valuealign.errors import EmptyConversationError, PolisFormatError
from valuealign.ids import slugify

# notebook 05 and the tests reach the opinion groups through this module (``C.opinion_groups``)
from valuealign.polis_groups import (  # noqa: F401
    POLIS_BASE_ITERS,
    POLIS_BASE_K,
    POLIS_CENTER_TOLERANCE,
    POLIS_GREEDY_N,
    POLIS_GROUP_ITERS,
    POLIS_K_BUFFER,
    Grouping,
    KSmoother,
    PolisClustering,
    impute_column_mean,
    in_conv_participants,
    opinion_groups,
    polis_group_clusters,
    polis_kmeans,
    polis_pca,
    polis_rating_matrix,
    umap_hdbscan,
)
from valuealign.prompts import TOPIC_PROMPTS, render_topic_messages
from valuealign.rows import ROW_COLUMNS, KtoBalanceError, kto_balance

DEFAULT_CONVERSATIONS: tuple[str, ...] = (
    "scoop-hivemind.ubi",
    "scoop-hivemind.affordable-housing",
    "scoop-hivemind.biodiversity",
)
ALL_CONVERSATIONS: tuple[str, ...] = (*DEFAULT_CONVERSATIONS, "american-assembly.bowling-green")

COMMENTS_COLUMNS: tuple[str, ...] = (
    "timestamp", "datetime", "comment-id", "author-id", "agrees", "disagrees", "moderated",
    "comment-body",
)
VOTES_COLUMNS: tuple[str, ...] = ("timestamp", "datetime", "comment-id", "voter-id", "vote")
PARTICIPANTS_META_COLUMNS: tuple[str, ...] = (
    "participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree",
)
VOTE_VALUES = (-1, 0, 1)

POLIS_ATTRIBUTION = (
    "Data was gathered using the Polis software (compdemocracy.org/polis) and is sub-licensed "
    "under CC BY 4.0 with Attribution to The Computational Democracy Project. The data and more "
    "information about how the data was collected can be found at the following link(s): "
    "https://compdemocracy.org/case-studies/2017-scoop-hivemind-ubi , "
    "https://compdemocracy.org/case-studies/2019-scoop-hivemind-biodiversity , "
    "https://compdemocracy.org/case-studies/2017-scoop-hivemind-affordable-housing , "
    "https://compdemocracy.org/case-studies/2018-kentucky"
)
POLIS_CITATION = (
    "Small, C., Bjorkegren, M., Erkkilä, T., Shaw, L., Megill, C. (2021). Polis: Scaling "
    "deliberation by mapping high dimensional opinion spaces. Recerca 26(2)."
)

# Polis's significance level for representative statements (one-sided 90 %).
Z_90 = 1.2816


# ---------------------------------------------------------------------------------- import
@dataclass
class Conversation:
    """One Polis conversation, ready for analysis.

    ``matrix``: participants (index ``participant``) x statements (columns = comment ids,
    every id of comments.csv, sorted), float: 1 agree, -1 disagree, 0 pass, NaN unseen.
    ``comments``: one row per statement (``comment_id``, ``text``, ``moderated``, and the
    export's own ``agrees``/``disagrees`` counts). No author ids are kept.
    ``report``: one dict per correction or observation made on import (kind, file, count, detail).
    """

    name: str
    topic: str
    description: str
    summary: dict[str, str]
    comments: pd.DataFrame
    matrix: pd.DataFrame
    source: str
    polis_group: pd.Series | None = None
    raw_counts: pd.DataFrame | None = None
    participants_matrix: pd.DataFrame | None = None
    participants_meta: pd.DataFrame | None = None
    report: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """Lower-case id usable in value-set names (``scoop-hivemind.ubi`` -> ``scoop-hivemind-ubi``)."""
        return slugify(self.name)

    @property
    def n_participants(self) -> int:
        return int(self.matrix.shape[0])


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """A Polis export table; undecodable bytes and ragged rows are errors naming file and line."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    if not path.read_bytes().strip():
        raise EmptyConversationError(f"{path}: {what} is empty (no header, no rows)")
    text = csvinput.read_csv_text(path, ",", what, PolisFormatError)
    try:
        return pd.read_csv(io.StringIO(text), dtype_backend="numpy_nullable")
    except pd.errors.EmptyDataError as err:
        raise EmptyConversationError(f"{path}: {what} is empty (no header, no rows)") from err
    except pd.errors.ParserError as err:
        raise PolisFormatError(f"{path}: {what} cannot be parsed as CSV: {err}") from err


def _require_columns(df: pd.DataFrame, required: Sequence[str], path: Path, what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PolisFormatError(
            f"{path}: {what} lacks column(s) {missing}; found {list(df.columns)}; "
            f"expected the Polis open-data layout {list(required)} (column order does not matter)"
        )


def _int_column(df: pd.DataFrame, col: str, path: Path, *, allowed: Iterable[int] | None = None) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        examples = df.loc[bad, col].astype(str).head(5).tolist()
        raise PolisFormatError(
            f"{path}: column {col!r} must hold integers; {int(bad.sum())} row(s) do not, e.g. {examples}"
        )
    values = values.astype("int64")
    if allowed is not None:
        allowed = set(allowed)
        out = ~values.isin(allowed)
        if out.any():
            raise PolisFormatError(
                f"{path}: column {col!r} must be one of {sorted(allowed)}; found "
                f"{sorted(set(values[out].tolist()))[:10]} in {int(out.sum())} row(s)"
            )
    return values


def read_summary(path: Path) -> dict[str, str]:
    """``summary.csv`` (key,value rows) as a dict; a missing file gives an empty dict."""
    if not path.exists():
        return {}
    text = csvinput.read_utf8(path, "Polis summary file (key,value rows)", PolisFormatError)
    try:
        df = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise PolisFormatError(f"{path}: summary cannot be parsed as key,value CSV: {err}") from err
    if df.shape[1] < 2:
        raise PolisFormatError(f"{path}: summary must have two columns (key,value), found {df.shape[1]}")
    return {str(k).strip(): str(v) for k, v in zip(df[0], df[1], strict=True)}


def read_comments(path: Path) -> pd.DataFrame:
    """Statements of a conversation; raises on a different column layout or duplicate ids."""
    df = _read_csv(path, "comments file")
    _require_columns(df, ("comment-id", "moderated", "comment-body", "agrees", "disagrees"), path,
                     "comments file")
    if df.empty:
        raise EmptyConversationError(f"{path}: the conversation has no statements (0 rows)")
    out = pd.DataFrame({
        "comment_id": _int_column(df, "comment-id", path),
        "text": df["comment-body"].astype("string").fillna("").str.strip().astype(object),
        "moderated": _int_column(df, "moderated", path, allowed=(-1, 0, 1)),
        "agrees": _int_column(df, "agrees", path),
        "disagrees": _int_column(df, "disagrees", path),
    })
    dup = out["comment_id"].duplicated(keep=False)
    if dup.any():
        raise PolisFormatError(
            f"{path}: column 'comment-id' has duplicate ids {sorted(set(out.loc[dup, 'comment_id']))[:10]}"
        )
    return out.sort_values("comment_id").reset_index(drop=True)


def _unknown_ids(ids: pd.Series, known: set[int], path: Path, column: str,
                 policy: Literal["error", "drop"], report: list[dict[str, Any]]) -> pd.Series:
    """Boolean mask of rows to keep; raises (policy 'error') or reports (policy 'drop')."""
    unknown = ~ids.isin(known)
    if unknown.any():
        examples = sorted(set(ids[unknown].tolist()))
        msg = (f"{path}: {int(unknown.sum())} row(s) refer to comment id(s) not in comments.csv "
               f"(column {column!r}): {examples[:10]}")
        if policy == "error":
            raise PolisFormatError(msg + "; pass unknown_comments='drop' to drop them (reported)")
        report.append({"kind": "unknown_comment_ids_dropped", "file": path.name,
                       "count": int(unknown.sum()), "detail": msg})
    return ~unknown


def read_votes(path: Path, comment_ids: Iterable[int], *,
               unknown_comments: Literal["error", "drop"] = "error",
               report: list[dict[str, Any]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``votes.csv`` -> (latest vote per participant and statement, all valid rows).

    Why latest-wins: Polis lets a participant change a vote and keeps the last one. Rows with
    the same timestamp keep file order (a stable sort), so the later row wins.
    """
    report = report if report is not None else []
    df = _read_csv(path, "votes file")
    _require_columns(df, ("timestamp", "comment-id", "voter-id", "vote"), path, "votes file")
    if df.empty:
        raise EmptyConversationError(f"{path}: the conversation has no votes (0 rows)")
    raw = pd.DataFrame({
        "timestamp": _int_column(df, "timestamp", path),
        "participant": _int_column(df, "voter-id", path),
        "comment_id": _int_column(df, "comment-id", path),
        "vote": _int_column(df, "vote", path, allowed=VOTE_VALUES),
    })
    raw = raw[_unknown_ids(raw["comment_id"], set(comment_ids), path, "comment-id",
                           unknown_comments, report)].reset_index(drop=True)
    ordered = raw.sort_values("timestamp", kind="mergesort")
    latest = ordered.drop_duplicates(["participant", "comment_id"], keep="last")
    n_dup = len(raw) - len(latest)
    if n_dup:
        dups = ordered[ordered.duplicated(["participant", "comment_id"], keep=False)]
        per_pair = dups.groupby(["participant", "comment_id"])["vote"]
        changed = int((per_pair.nunique() > 1).sum())
        ties = int(dups.duplicated(["participant", "comment_id", "timestamp"], keep=False).sum())
        report.append({
            "kind": "duplicate_votes_latest_wins", "file": path.name, "count": int(n_dup),
            "detail": (f"{n_dup} earlier vote row(s) on {per_pair.ngroups} (participant, statement) "
                       f"pair(s) superseded by the latest; {changed} pair(s) changed their vote, the "
                       f"rest repeat it; {ties} row(s) share a timestamp (the later row in the file wins)"),
        })
    latest = latest.sort_values(["participant", "comment_id"]).reset_index(drop=True)
    return latest[["participant", "comment_id", "vote"]], raw


def read_participants_votes(path: Path, comment_ids: Iterable[int], *,
                            unknown_comments: Literal["error", "drop"] = "error",
                            report: list[dict[str, Any]] | None = None,
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``participants-votes.csv`` -> (participant x statement matrix, per-participant metadata).

    The metadata keeps Polis's own opinion group (``group-id``) for comparison; the matrix
    columns are the comment-id columns (the export omits statements nobody saw).
    """
    report = report if report is not None else []
    df = _read_csv(path, "participants-votes file")
    _require_columns(df, ("participant",), path, "participants-votes file")
    if df.empty:
        raise EmptyConversationError(f"{path}: no participants (0 rows)")
    vote_cols = [c for c in df.columns if c not in PARTICIPANTS_META_COLUMNS]
    not_ids = [c for c in vote_cols if not re.fullmatch(r"\d+", str(c))]
    if not_ids:
        raise PolisFormatError(
            f"{path}: columns after {list(PARTICIPANTS_META_COLUMNS)} must be comment ids; "
            f"found {not_ids[:10]}"
        )
    ids = pd.Series([int(c) for c in vote_cols])
    keep = _unknown_ids(ids, set(comment_ids), path, "<comment-id columns>", unknown_comments, report)
    vote_cols = [c for c, k in zip(vote_cols, keep, strict=True) if k]
    participant = _int_column(df, "participant", path)
    if participant.duplicated().any():
        raise PolisFormatError(f"{path}: column 'participant' has duplicate ids")
    m = df[vote_cols].apply(pd.to_numeric, errors="coerce").astype("float64")
    bad = m.notna() & ~m.isin(VOTE_VALUES)
    non_numeric = m.isna() & df[vote_cols].notna()
    if bad.to_numpy().any() or non_numeric.to_numpy().any():
        raise PolisFormatError(f"{path}: vote cells must be 1, -1, 0 or empty")
    m.columns = [int(c) for c in vote_cols]
    m.index = pd.Index(participant.to_numpy(), name="participant")
    meta = pd.DataFrame(index=m.index)
    for col in PARTICIPANTS_META_COLUMNS[1:]:
        if col in df.columns:
            meta[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64").to_numpy()
    return m.sort_index(), meta.sort_index()


def vote_matrix(votes: pd.DataFrame, comment_ids: Sequence[int]) -> pd.DataFrame:
    """Long (participant, comment_id, vote) rows -> participants x all statements, NaN unseen."""
    if votes.duplicated(["participant", "comment_id"]).any():
        raise ValueError("vote_matrix: duplicate (participant, comment_id) rows; deduplicate first")
    m = votes.pivot(index="participant", columns="comment_id", values="vote").astype("float64")
    m = m.reindex(columns=sorted(int(c) for c in comment_ids))
    m.columns.name = None
    m.index.name = "participant"
    return m.sort_index()


def conversation_dir(conversation: str | Path, root: Path | None = None) -> Path:
    p = Path(conversation)
    if p.is_dir():
        return p
    root = root or paths.POLIS_DIR
    d = root / str(conversation)
    if not d.is_dir():
        known = sorted(x.name for x in root.iterdir() if x.is_dir()) if root.is_dir() else []
        raise FileNotFoundError(
            f"Polis conversation {str(conversation)!r} not found under {root} (available: {known})"
        )
    return d


def load_conversation(conversation: str | Path, *, root: Path | None = None,
                      unknown_comments: Literal["error", "drop"] = "error") -> Conversation:
    """Read one Polis export folder into a :class:`Conversation`.

    Votes come from ``votes.csv`` when present (latest vote wins), otherwise from
    ``participants-votes.csv`` (already one cell per participant and statement; the shipped
    bowling-green conversation has only this file).
    """
    d = conversation_dir(conversation, root)
    report: list[dict[str, Any]] = []
    summary = read_summary(d / "summary.csv")
    comments = read_comments(d / "comments.csv")
    ids = comments["comment_id"].tolist()
    pv_path = d / "participants-votes.csv"
    pv = meta = None
    if pv_path.exists():
        pv, meta = read_participants_votes(pv_path, ids, unknown_comments=unknown_comments,
                                           report=report)
    raw_counts = None
    if (d / "votes.csv").exists():
        latest, raw = read_votes(d / "votes.csv", ids, unknown_comments=unknown_comments,
                                 report=report)
        matrix = vote_matrix(latest, ids)
        source = "votes.csv"
        raw_counts = (raw.assign(agree=raw.vote.eq(1), disagree=raw.vote.eq(-1), pass_=raw.vote.eq(0))
                      .groupby("comment_id")[["agree", "disagree", "pass_"]].sum()
                      .rename(columns={"pass_": "pass"}).reindex(ids, fill_value=0).astype("int64"))
    elif pv is not None:
        matrix = pv.reindex(columns=sorted(ids))
        source = "participants-votes.csv"
        report.append({"kind": "votes_from_participants_votes", "file": pv_path.name, "count": 0,
                       "detail": "no votes.csv: the matrix is participants-votes.csv (Polis's latest "
                                 "vote per cell); raw duplicate votes cannot be checked"})
    else:
        raise FileNotFoundError(f"{d}: neither votes.csv nor participants-votes.csv found")
    if matrix.shape[0] == 0 or matrix.notna().sum().sum() == 0:
        raise EmptyConversationError(f"{d}: the conversation has no votes")
    polis_group = None
    if meta is not None and "group-id" in meta:
        polis_group = meta["group-id"].reindex(matrix.index)
    return Conversation(
        name=d.name, topic=summary.get("topic", d.name).strip(),
        description=summary.get("conversation-description", "").strip(), summary=summary,
        comments=comments, matrix=matrix, source=source, polis_group=polis_group,
        raw_counts=raw_counts, participants_matrix=pv, participants_meta=meta, report=report,
    )


def import_report(conversations: Sequence[Conversation]) -> pd.DataFrame:
    rows = [{"conversation": c.name, **r} for c in conversations for r in c.report]
    return pd.DataFrame(rows, columns=["conversation", "kind", "file", "count", "detail"])


def source_checks(conv: Conversation) -> pd.DataFrame:
    """Re-derive the counts the export states and say which hold exactly.

    What holds in the shipped conversations (and what does not, documented in notebook 05):
    ``comments.csv`` agrees/disagrees count every vote row *before* deduplication; the
    latest-vote matrix equals ``participants-votes.csv`` cell by cell; ``summary.csv``
    voters equals the participants; ``summary.csv`` comments counts the statements somebody
    saw (the export leaves out never-shown ones, e.g. rejected comments with no votes).
    """
    m = conv.matrix
    rows: list[dict[str, Any]] = []

    def add(check: str, expected: Any, observed: Any, note: str = "") -> None:
        rows.append({"conversation": conv.name, "check": check, "expected": str(expected),
                     "observed": str(observed), "holds": bool(expected == observed), "note": note})

    if "voters" in conv.summary:
        add("participants == summary voters", int(conv.summary["voters"]), conv.n_participants)
    if "comments" in conv.summary:
        add("statements seen by anyone == summary comments", int(conv.summary["comments"]),
            int(m.notna().any().sum()),
            f"comments.csv has {len(conv.comments)} rows")
    c = conv.comments.set_index("comment_id")
    latest_agree = m.eq(1).sum().reindex(c.index)
    if conv.raw_counts is not None:
        add("statements whose raw agree rows == comments.csv agrees", len(c),
            int((conv.raw_counts["agree"] == c["agrees"]).sum()), "votes.csv rows before dedup")
        add("statements whose raw disagree rows == comments.csv disagrees", len(c),
            int((conv.raw_counts["disagree"] == c["disagrees"]).sum()), "votes.csv rows before dedup")
    add("statements whose latest-vote agrees == comments.csv agrees", len(c),
        int((latest_agree == c["agrees"]).sum()),
        "differs where a participant voted twice (comments.csv counts every row)")
    add("no statement has more latest-vote agrees than comments.csv agrees", 0,
        int((latest_agree > c["agrees"]).sum()))
    pv = conv.participants_matrix
    if pv is not None and conv.source == "votes.csv":
        b = pv.reindex(index=m.index, columns=m.columns)
        same = (m.eq(b) | (m.isna() & b.isna())).to_numpy()
        add("vote-matrix cells differing from participants-votes.csv", 0, int((~same).sum()),
            f"{same.size} cells compared")
    meta = conv.participants_meta
    if meta is not None and "n-votes" in meta:
        add("participants whose votes == participants-votes n-votes", conv.n_participants,
            int((m.notna().sum(axis=1) == meta["n-votes"].reindex(m.index)).sum()))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- consensus
def group_vote_counts(matrix: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """Per (statement, group): members, agree / disagree / pass / seen counts, smoothed p_agree.

    ``groups`` maps participant -> group (>= 0); participants not in it, or labelled < 0
    (HDBSCAN noise), are left out, as Polis leaves out unclustered participants.
    """
    groups = groups[groups >= 0]
    m = matrix.reindex(groups.index)
    rows = []
    for g in sorted(groups.unique()):
        sub = m[groups.to_numpy() == g]
        a, d, p = sub.eq(1).sum(), sub.eq(-1).sum(), sub.eq(0).sum()
        rows.append(pd.DataFrame({
            "comment_id": sub.columns.astype("int64"), "group": int(g), "n_members": len(sub),
            "n_agree": a.to_numpy(), "n_disagree": d.to_numpy(), "n_pass": p.to_numpy(),
        }))
    if not rows:
        raise EmptyConversationError("no participant belongs to a group")
    out = pd.concat(rows, ignore_index=True)
    out["n_seen"] = out["n_agree"] + out["n_disagree"] + out["n_pass"]
    out["p_agree"] = (out["n_agree"] + 1) / (out["n_seen"] + 2)
    out["p_disagree"] = (out["n_disagree"] + 1) / (out["n_seen"] + 2)
    return out.sort_values(["comment_id", "group"]).reset_index(drop=True)


def group_informed_consensus(counts: pd.DataFrame) -> pd.Series:
    """Polis's group-informed consensus per statement: prod_g (agree_g + 1) / (seen_g + 2)."""
    p = (counts["n_agree"] + 1) / (counts["n_seen"] + 2)
    return p.groupby(counts["comment_id"]).prod().rename("consensus")


_SELF_DESCRIPTION = re.compile(
    r"^\s*(i\s+am|i'm|i\s+live|i\s+own|i\s+have|i\s+work|my\s+household)\b", re.IGNORECASE)
_OPINION_WORDS = re.compile(r"\b(should|must|need|think|believe|support|oppose|against|agree)\b",
                            re.IGNORECASE)


def is_self_description(text: str) -> bool:
    """A short demographic statement ("I am under 30 years of age", "I live in a city").

    Why: the Scoop HiveMind organisers seeded such statements so that opinion groups can be
    described demographically. They are kept for forming groups (as Polis did) and for
    describing them, but they are not opinions on the topic, so they are never exported
    as completions.
    """
    t = str(text).strip()
    return bool(_SELF_DESCRIPTION.match(t)) and len(t) <= 90 and not _OPINION_WORDS.search(t)


def statement_table(conv: Conversation, groups: pd.Series, *, min_votes: int = 5) -> pd.DataFrame:
    """One row per statement: counts, group-informed consensus, division, eligibility.

    ``consensus`` is Polis's product; ``consensus_mean`` its geometric mean over the groups
    (comparable between conversations with different numbers of groups: "on average over
    groups, the smoothed probability of agreeing"). ``division`` = max - min of the groups'
    smoothed agree probabilities. ``eligible`` (exported): accepted by moderators, seen by at
    least ``min_votes`` participants, and not a demographic self-description.
    """
    counts = group_vote_counts(conv.matrix, groups)
    n_groups = counts["group"].nunique()
    gic = group_informed_consensus(counts)
    per = counts.pivot(index="comment_id", columns="group", values="p_agree")
    m = conv.matrix
    t = conv.comments[["comment_id", "text", "moderated"]].copy()
    t["n_agree"] = m.eq(1).sum().reindex(t.comment_id).to_numpy()
    t["n_disagree"] = m.eq(-1).sum().reindex(t.comment_id).to_numpy()
    t["n_pass"] = m.eq(0).sum().reindex(t.comment_id).to_numpy()
    t["n_seen"] = t["n_agree"] + t["n_disagree"] + t["n_pass"]
    t["agree_share"] = np.where(t["n_seen"] > 0, t["n_agree"] / t["n_seen"].clip(lower=1), np.nan)
    t["consensus"] = gic.reindex(t.comment_id).to_numpy()
    t["consensus_mean"] = t["consensus"] ** (1.0 / n_groups)
    t["division"] = (per.max(axis=1) - per.min(axis=1)).reindex(t.comment_id).to_numpy()
    t["n_groups"] = n_groups
    t["self_description"] = t["text"].map(is_self_description)
    t["eligible"] = (t["moderated"] == 1) & (t["n_seen"] >= min_votes) & ~t["self_description"]
    t.insert(0, "conversation", conv.name)
    return t.reset_index(drop=True)


def representative_statements(counts: pd.DataFrame, *, top: int = 3) -> pd.DataFrame:
    """Statements that set each group apart (Polis "repness").

    For each group and statement: repness = p_in / p_out for agreeing and for disagreeing
    (smoothed probabilities inside the group vs all other groups' members); the direction
    with the larger repness is kept, and a two-proportion z-test must pass at 90 % (Polis's
    level). Ranked by repness x p_in; at most ``top`` per group.
    """
    rows = []
    tot = counts.groupby("comment_id")[["n_agree", "n_disagree", "n_seen"]].sum()
    for _, r in counts.iterrows():
        o = tot.loc[r.comment_id] - r[["n_agree", "n_disagree", "n_seen"]].to_numpy()
        for direction, k_in, k_out in (("agree", r.n_agree, o["n_agree"]),
                                       ("disagree", r.n_disagree, o["n_disagree"])):
            p_in = (k_in + 1) / (r.n_seen + 2)
            p_out = (k_out + 1) / (o["n_seen"] + 2)
            pooled = (k_in + k_out + 1) / (r.n_seen + o["n_seen"] + 2)
            se = math.sqrt(pooled * (1 - pooled) * (1 / (r.n_seen + 1) + 1 / (o["n_seen"] + 1)))
            z = (p_in - p_out) / se if se > 0 else 0.0
            rows.append({"group": int(r.group), "comment_id": int(r.comment_id),
                         "direction": direction, "p_in": p_in, "p_out": p_out,
                         "repness": p_in / p_out, "z": z})
    rep = pd.DataFrame(rows)
    rep = rep.sort_values("repness", ascending=False).drop_duplicates(["group", "comment_id"])
    rep = rep[(rep.z > Z_90) & (rep.p_in > 0.5)]
    rep["score"] = rep["repness"] * rep["p_in"]
    rep = rep.sort_values(["group", "score", "comment_id"], ascending=[True, False, True])
    return rep.groupby("group").head(top).reset_index(drop=True)


def group_profiles(counts: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Who is in each group: the share of members who agreed to each self-description.

    Rows: self-description statements; columns: groups; values: agree / seen in the group
    (raw share, with n seen). Only aggregated counts, never individuals.
    """
    sd = table.loc[table["self_description"], ["comment_id", "text"]]
    c = counts[counts["comment_id"].isin(sd["comment_id"])].copy()
    if c.empty:
        return pd.DataFrame()
    c["cell"] = [f"{a / s:.0%} of {s}" if s else "-" for a, s in zip(c.n_agree, c.n_seen, strict=True)]
    out = c.pivot(index="comment_id", columns="group", values="cell")
    out.columns = [f"group {g}" for g in out.columns]
    return sd.set_index("comment_id").join(out).reset_index()


def divisive_statements(table: pd.DataFrame, *, top: int = 5) -> pd.DataFrame:
    """Accepted statements on which the groups' agree probabilities differ most."""
    t = table[table["eligible"]]
    return t.sort_values(["division", "comment_id"], ascending=[False, True]).head(top)


# ----------------------------------------------------------------------------- export
def _hash01(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def assign_splits(table: pd.DataFrame, *, validation_fraction: float = 0.2, seed: int = 0,
                  test_fraction: float = 0.0) -> pd.Series:
    """Statement-level split (train / validation / test), stable under re-runs and row order.

    Statements are ranked by a hash of (conversation, comment_id, seed) within each
    conversation; the first ceil(test_fraction x n) eligible ones are held out as ``test``
    (never exported for training, never used to choose anything: notebook 05 evaluates the
    models on them), the next ceil(validation_fraction x n) go to validation. Every value set
    of a conversation uses the same split, and a DPO pair never crosses it. At least one
    statement of a conversation stays in train.
    """
    for name, frac in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    split = pd.Series("train", index=table.index, name="split")
    for _, sub in table[table["eligible"]].groupby("conversation"):
        h = sub.apply(lambda r: _hash01(r.conversation, r.comment_id, seed), axis=1)
        ranked = h.sort_values(kind="mergesort").index
        n_test = math.ceil(test_fraction * len(sub)) if len(sub) > 2 else 0
        n_val = math.ceil(validation_fraction * len(sub)) if len(sub) > 1 else 0
        n_val = max(0, min(n_val, len(sub) - n_test - 1))
        split.loc[ranked[:n_test]] = "test"
        split.loc[ranked[n_test:n_test + n_val]] = "validation"
    split[~table["eligible"]] = "none"
    return split


@dataclass(frozen=True)
class ExportSettings:
    threshold: float = 0.5
    dpo_margin: float = 0.1
    dpo_pairs_per_statement: int = 3
    validation_fraction: float = 0.2
    min_votes: int = 5
    seed: int = 0
    test_fraction: float = 0.2  # statements held out of every training set (evaluated in notebook 05)


def _value_set_frames(conv_table: pd.DataFrame, topic: str, value_set: str, score: pd.Series,
                      settings: ExportSettings) -> dict[str, pd.DataFrame]:
    """KTO, DPO and SFT rows of one value set from one conversation's eligible statements."""
    t = conv_table.assign(share=score.to_numpy()).dropna(subset=["share"])
    # held-out test statements never become training rows (not even as a DPO partner)
    t = t[t["eligible"] & (t["split"] != "test")].sort_values("comment_id")
    conv = str(t["conversation"].iloc[0]) if len(t) else ""
    kto, dpo = [], []
    for r in t.itertuples():
        pid = _hash01(conv, r.comment_id, "paraphrase") % len(TOPIC_PROMPTS)
        kto.append({
            "prompt": render_topic_messages(topic, pid),
            "completion": [{"role": "assistant", "content": r.text}],
            "label": bool(r.share > settings.threshold), "share": float(r.share),
            "item_id": f"polis-{slugify(conv)}-{r.comment_id}", "paraphrase_id": int(pid),
            "option_order": [], "value_set": value_set, "conversation": conv,
            "comment_id": int(r.comment_id), "consensus": float(r.consensus),
            "split": r.split,
        })
    rng = np.random.default_rng([settings.seed, _hash01(value_set, conv) % (2**32)])
    for split, sub in t.groupby("split", sort=True):
        shares = sub.set_index("comment_id")["share"]
        texts = sub.set_index("comment_id")["text"]
        for cid in shares.index:
            cands = shares.index[(shares[cid] - shares) >= settings.dpo_margin].to_numpy()
            if cands.size == 0:
                continue
            take = min(settings.dpo_pairs_per_statement, cands.size)
            for rej in sorted(rng.choice(cands, size=take, replace=False).tolist()):
                pid = _hash01(conv, cid, rej, "paraphrase") % len(TOPIC_PROMPTS)
                dpo.append({
                    "prompt": render_topic_messages(topic, pid),
                    "chosen": [{"role": "assistant", "content": texts[cid]}],
                    "rejected": [{"role": "assistant", "content": texts[rej]}],
                    "chosen_share": float(shares[cid]), "rejected_share": float(shares[rej]),
                    "item_id": f"polis-{slugify(conv)}-{cid}",
                    "rejected_item_id": f"polis-{slugify(conv)}-{rej}",
                    "paraphrase_id": int(pid), "option_order": [], "value_set": value_set,
                    "conversation": conv, "split": split,
                })
    kto_df = pd.DataFrame(kto)
    sft_cols = [*ROW_COLUMNS["sft"], "conversation", "comment_id", "split"]
    sft_df = kto_df[kto_df["label"]][sft_cols] if len(kto_df) else pd.DataFrame(columns=sft_cols)
    return {"kto": kto_df, "dpo": pd.DataFrame(dpo), "sft": sft_df}


def _features(method: str) -> Any:
    import datasets as hfd

    msg = [{"role": hfd.Value("string"), "content": hfd.Value("string")}]
    common = {"item_id": hfd.Value("string"), "paraphrase_id": hfd.Value("int64"),
              "option_order": hfd.List(hfd.Value("int64")), "value_set": hfd.Value("string"),
              "conversation": hfd.Value("string")}
    if method == "kto":
        f = {"prompt": msg, "completion": msg, "label": hfd.Value("bool"),
             "share": hfd.Value("float64"), **common, "comment_id": hfd.Value("int64"),
             "consensus": hfd.Value("float64")}
    elif method == "dpo":
        f = {"prompt": msg, "chosen": msg, "rejected": msg, "chosen_share": hfd.Value("float64"),
             "rejected_share": hfd.Value("float64"), **common,
             "rejected_item_id": hfd.Value("string")}
    else:
        f = {"prompt": msg, "completion": msg, **common, "comment_id": hfd.Value("int64")}
    return hfd.Features(f)


def _save_dataset_dict(df: pd.DataFrame, method: str, target: Path, card: str) -> dict[str, int]:
    """Save train/validation splits with ``save_to_disk`` atomically (temp folder + rename)."""
    import datasets as hfd

    hfd.disable_progress_bars()
    feats = _features(method)
    cols = list(feats)
    splits = {}
    for split in ("train", "validation"):
        part = df[df["split"] == split] if len(df) else df
        columns = {c: (part[c].tolist() if len(part) else []) for c in cols}
        splits[split] = hfd.Dataset.from_dict(columns, features=feats)  # keeps columns when empty
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # one shard per split: an empty split saved with the default sharding cannot be loaded
        hfd.DatasetDict(splits).save_to_disk(str(tmp), num_shards={s: 1 for s in splits})
        (tmp / "README.md").write_text(card, encoding="utf-8")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {s: len(d) for s, d in splits.items()}


def kto_weights(kto: pd.DataFrame) -> dict[str, Any]:
    """``kto_weights.json`` of a consultation value set: :func:`valuealign.rows.kto_balance` of its
    train rows, the same record notebook 02 writes for survey value sets. A value set whose train
    rows are of one class (or none) cannot be balanced: its counts with weights 1, so it can still
    be listed (training a KTO run on it stops with the reason)."""
    tr = kto[kto["split"] == "train"] if len(kto) else kto
    labels = [bool(x) for x in tr["label"]] if len(tr) else []
    try:
        return kto_balance(labels)
    except KtoBalanceError:
        n_d = sum(labels)
        return {"n_desirable": n_d, "n_undesirable": len(labels) - n_d,
                "desirable_ratio": round(n_d / len(labels), 6) if labels else 0.0,
                "desirable_weight": 1.0, "undesirable_weight": 1.0}


def export_alignment_data(
    conversations: Sequence[Conversation], tables: Mapping[str, pd.DataFrame],
    group_counts: Mapping[str, pd.DataFrame], settings: ExportSettings,
    out_dir: Path | None = None, *, grouping: str = "polis", pooled: bool = True,
) -> pd.DataFrame:
    """Write every consultation value set (everyone, each group, all conversations pooled).

    Layout under ``out_dir`` (default ``paths.CONSULTATION``)::

        statements.parquet, group_statements.parquet, value_sets.parquet, DATASHEET.md
        <value_set>/{kto,dpo,sft}/  DatasetDict (train, validation) + README.md (datasheet)
        <value_set>/kto_weights.json

    Value sets: ``consultation-<conversation slug>-everyone`` (share = consensus_mean,
    the geometric mean over groups of the smoothed agree probability),
    ``consultation-<slug>-group-<k>`` (share = group k's smoothed agree probability) and
    ``consultation-all-everyone`` (the everyone rows of all conversations). A row is
    desirable when share > ``settings.threshold``. Returns one row per value set and method.
    """
    out_dir = out_dir or paths.CONSULTATION
    frames: dict[str, dict[str, list[pd.DataFrame]]] = {}
    members: list[dict[str, Any]] = []
    all_tables = []
    for conv in conversations:
        t = tables[conv.name].copy()
        t["split"] = assign_splits(t, validation_fraction=settings.validation_fraction,
                                   seed=settings.seed, test_fraction=settings.test_fraction)
        t["topic"] = conv.topic
        all_tables.append(t)
        counts = group_counts[conv.name]
        vs = f"consultation-{conv.slug}-everyone"
        frames[vs] = {k: [v] for k, v in _value_set_frames(t, conv.topic, vs, t["consensus_mean"],
                                                           settings).items()}
        members.append({"value_set": vs, "conversation": conv.name, "group": "everyone",
                        "n_participants": int(counts.groupby("group")["n_members"].first().sum())})
        for g, sub in counts.groupby("group"):
            vs_g = f"consultation-{conv.slug}-group-{int(g)}"
            s = sub.set_index("comment_id")
            score = s["p_agree"].where(s["n_seen"] >= settings.min_votes).reindex(t["comment_id"])
            frames[vs_g] = {k: [v] for k, v in _value_set_frames(t, conv.topic, vs_g, score,
                                                                 settings).items()}
            members.append({"value_set": vs_g, "conversation": conv.name, "group": f"group-{int(g)}",
                            "n_participants": int(s["n_members"].iloc[0])})
    if pooled and len(conversations) > 1:
        vs = "consultation-all-everyone"
        frames[vs] = {}
        for method in ("kto", "dpo", "sft"):
            parts = [frames[f"consultation-{c.slug}-everyone"][method][0] for c in conversations]
            parts = [p.assign(value_set=vs) for p in parts if len(p)]
            frames[vs][method] = parts
        members.append({"value_set": vs, "conversation": "all", "group": "everyone",
                        "n_participants": int(sum(m["n_participants"] for m in members
                                                  if m["group"] == "everyone"))})
    statements = pd.concat(all_tables, ignore_index=True)
    datasheet = render_datasheet(conversations, statements, members, settings, grouping)
    provenance.write_parquet(statements.sort_values(["conversation", "comment_id"]),
                             out_dir / "statements.parquet")
    gc = pd.concat([group_counts[c.name].assign(conversation=c.name) for c in conversations],
                   ignore_index=True)
    provenance.write_parquet(gc[["conversation", *[c for c in gc.columns if c != "conversation"]]]
                             .sort_values(["conversation", "comment_id", "group"]),
                             out_dir / "group_statements.parquet")
    summary_rows = []
    for vs in sorted(frames):
        for method in ("kto", "dpo", "sft"):
            parts = [p for p in frames[vs][method] if len(p)]
            df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["split"])
            card = dataset_card(vs, method, datasheet)
            sizes = _save_dataset_dict(df, method, paths.safe_child(paths.safe_child(out_dir, vs, "value_set"), method, "method"), card)
            summary_rows.append({"value_set": vs, "method": method, **sizes})
            if method == "kto":
                provenance.write_json(kto_weights(df), paths.safe_child(out_dir, vs, "value_set") / "kto_weights.json")
    vs_df = pd.DataFrame(members)
    counts_kto = {r["value_set"]: r["train"] + r["validation"] for r in summary_rows if r["method"] == "kto"}
    vs_df["n_statements"] = vs_df["value_set"].map(counts_kto).fillna(0).astype("int64")
    provenance.write_parquet(vs_df.sort_values("value_set"), out_dir / "value_sets.parquet")
    provenance.write_text(datasheet, out_dir / "DATASHEET.md")
    return pd.DataFrame(summary_rows)


def render_datasheet(conversations: Sequence[Conversation], statements: pd.DataFrame,
                     members: Sequence[Mapping[str, Any]], settings: ExportSettings,
                     grouping: str) -> str:
    """A datasheet (Gebru et al. 2021) for the exported consultation preference data."""
    conv_lines = "\n".join(
        f"| `{c.name}` | {c.topic} | {c.n_participants} | {len(c.comments)} | "
        f"{int(statements[(statements.conversation == c.name) & statements.eligible].shape[0])} |"
        for c in conversations
    )
    n_sets = len(members)
    return f"""# Datasheet: value-alignment consultation preference data

Structure after Gebru et al. (2021), *Datasheets for Datasets*, CACM 64(12).

## Motivation
Built to align a language model to the opinions of a consulted public rather than of a few
hired annotators (phase 3 of the thesis). Each statement written by participants of a Polis
conversation becomes a completion to a prompt asking for a view on the conversation's topic;
whether it is *desirable* depends on how much agreement it found **across opinion groups**
(group-informed consensus), not on a simple majority, so that a large group cannot outvote a
smaller one. Built by the `valuealign` research compendium (notebook 05, module
`valuealign.consultation`).

## Composition
| conversation | topic | participants | statements | exported statements |
|---|---|---|---|---|
{conv_lines}

- Instances: statements (short texts written by participants, accepted by the conversation's
  moderators) with vote-derived scores. No votes of individuals, no participant ids, no author
  ids are included; only counts aggregated over groups of at least
  {min(int(m['n_participants']) for m in members)} participants.
- {n_sets} value sets: `consultation-<conversation>-everyone` (share = geometric mean over
  opinion groups of each group's smoothed agree probability (agree + 1) / (seen + 2); this
  is Polis's group-informed consensus, the product over groups, normalised by the number of
  groups), `consultation-<conversation>-group-<k>` (share = group k's smoothed agree
  probability; opinion groups by `{grouping}`), and `consultation-all-everyone` (all
  conversations pooled).
- Methods: `kto` (prompt, completion, label = share > {settings.threshold}), `dpo` (pairs
  within one conversation and split, chosen share - rejected share >= {settings.dpo_margin},
  at most {settings.dpo_pairs_per_statement} per chosen statement, sampled with seed
  {settings.seed}), `sft` (the desirable completions). Splits `train` / `validation`
  by statement ({settings.validation_fraction:.0%} validation); a further
  {settings.test_fraction:.0%} of each conversation's statements (seeded hash order, seed
  {settings.seed}) is held out as `test`: in no training set, used for nothing but the final
  evaluation of notebook 05 (its statements are marked `split = test` in
  `statements.parquet`); a statement seen by fewer
  than {settings.min_votes} participants (of the group, for group value sets) is left out.
- Left out: statements rejected or not yet accepted by moderators, and demographic
  self-descriptions seeded by the organisers ("I am under 30 years of age", "I live in a
  city"), which describe participants rather than state a view.
- Statements may contain opinions some readers find offensive, names of public bodies and
  spelling errors; they are kept as written (moderation by the original organisers only).

## Collection process
Participants of the Scoop HiveMind consultations (New Zealand, 2017-2019; run by Scoop Media
and the Public Engagement Projects with Polis) and of the American Assembly's Bowling Green
conversation (Kentucky, 2018), when included, read statements one at a time and voted agree,
disagree or pass; they could add statements, which moderators accepted or rejected. The
participants were self-selected (open online invitation): they are not a representative sample
of any population. Votes were exported by The Computational Democracy Project as open data
(github.com/compdemocracy/openData). Duplicate votes of a participant on a statement were
reduced to the latest, as Polis does.

## Consent and privacy
Participants took part in public consultations whose data were released as open data by the
organisers. This dataset adds no personal data: participant and author ids are dropped on
import and never written; per-group counts cover groups of at least the size stated above.

## Licence and attribution
CC BY 4.0. {POLIS_ATTRIBUTION}

Cite: {POLIS_CITATION}

## Uses
Intended: research on aligning language models to consulted publics (KTO / DPO / SFT
fine-tuning), and comparing opinion-group methods. Not intended: inferring the views of any
individual, or treating the groups as representative of New Zealand or Kentucky. A model
trained on these statements reproduces opinions of self-selected participants at the time.

## Maintenance
Regenerated by `make all` (notebook 05); the numbers above come from the run that wrote it.
"""


def dataset_card(value_set: str, method: str, datasheet: str) -> str:
    return (f"---\nlicense: cc-by-4.0\npretty_name: {value_set} ({method})\n"
            f"tags: [polis, public-consultation, preference-data, {method}]\n---\n\n"
            f"# {value_set} / {method}\n\nValue set `{value_set}`, rows for `{method}` "
            f"(splits train, validation). Datasheet follows.\n\n" + datasheet)


# ---------------------------------------------------------------------------- seeding
def normalise_text(text: str) -> str:
    """Whitespace-collapsed text: the key that matches a seed to the statement it became."""
    return re.sub(r"\s+", " ", str(text)).strip()


def export_seed_comments(texts: Sequence[str], target: Path | str, *,
                         sources: Sequence[str] | None = None,
                         max_chars: int | None = None) -> pd.DataFrame:
    """Write a Polis seed-comments CSV (header ``comment_text``) and a sources sidecar.

    Why a sidecar: Polis ignores columns other than ``comment_text`` on bulk upload, and the
    statements come back in the next export under new comment ids; ``<target>.sources.csv``
    (``seed_id``, ``source``, ``comment_text``) lets :func:`match_seed_comments` map them back
    to the model response (run, prompt) that produced them. Newlines are collapsed (one
    statement per row); empty and duplicate texts are dropped and counted in the return value.
    """
    target = Path(target)
    if sources is not None and len(sources) != len(texts):
        raise ValueError(f"sources has {len(sources)} entries for {len(texts)} texts")
    rows = []
    seen: set[str] = set()
    dropped = {"empty": 0, "duplicate": 0, "too_long": 0}
    for i, text in enumerate(texts):
        t = normalise_text(text)
        if not t:
            dropped["empty"] += 1
            continue
        if max_chars is not None and len(t) > max_chars:
            dropped["too_long"] += 1
            continue
        if t in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(t)
        rows.append({"seed_id": f"seed-{hashlib.sha256(t.encode()).hexdigest()[:10]}",
                     "source": "" if sources is None else str(sources[i]), "comment_text": t})
    if not rows:
        raise ValueError(f"no seed comment left to write to {target} (dropped: {dropped})")
    df = pd.DataFrame(rows)
    with provenance.atomic_path(target, ".csv") as tmp:
        df[["comment_text"]].to_csv(tmp, index=False)
    sidecar = target.with_name(target.stem + ".sources.csv")
    with provenance.atomic_path(sidecar, ".csv") as tmp:
        df.to_csv(tmp, index=False)
    df.attrs["dropped"] = dropped
    return df


def read_texts(path: Path | str, column: str | None = None) -> tuple[list[str], list[str]]:
    """Texts and their sources from .txt (one per line), .jsonl, .csv or .parquet.

    Without ``column`` the first of ``completion``, ``response``, ``generation``, ``text``
    present is used; a chat-message list is reduced to its last message's content.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: texts file not found")
    if path.suffix == ".txt":
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return lines, [f"{path.name}:{i + 1}" for i in range(len(lines))]
    if path.suffix == ".jsonl":
        df = pd.read_json(path, lines=True)
    elif path.suffix == ".csv":
        df = pd.read_csv(path)
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: unsupported texts file type {path.suffix!r} "
                         "(use .txt, .jsonl, .csv or .parquet)")
    candidates = [column] if column else ["completion", "response", "generation", "text"]
    col = next((c for c in candidates if c in df.columns), None)
    if col is None:
        raise PolisFormatError(f"{path}: no text column among {candidates}; found {list(df.columns)}")

    def as_text(v: Any) -> str:
        if isinstance(v, list | np.ndarray) and len(v) and isinstance(v[-1], Mapping):
            return str(v[-1].get("content", ""))
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    texts = [as_text(v) for v in df[col]]
    return texts, [f"{path.name}:{i}" for i in range(len(texts))]


def resolve_run(run: str | Path, runs_root: Path | None = None) -> Path:
    """A run folder from a path or a run id under ``runs/`` (as the README's ``--run <run_id>``).

    Why both: notebook 03 prints run ids, and a user copies one; a path still works."""
    root = Path(runs_root or paths.RUNS)
    given = Path(run)
    if given.is_dir():
        return given
    if paths.SLUG.fullmatch(str(run)) and (root / str(run)).is_dir():
        return paths.safe_child(root, str(run), "run id")
    have = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", "."))) \
        if root.is_dir() else []
    close = difflib.get_close_matches(str(run), have, n=3, cutoff=0.5)
    raise FileNotFoundError(
        f"run {str(run)!r} not found: neither a folder nor a run id under {paths.relative(root)}"
        + (f" (did you mean {', '.join(close)}?)" if close else
           f" ({len(have)} runs there{': ' + ', '.join(have[:5]) if have else '; run notebook 03 (make all)'})"))


def run_generation_files(run_dir: Path | str) -> list[Path]:
    """Files of model answers in a run folder: ``*generations*.{jsonl,csv,parquet}`` files, or the
    ``examples.json`` that notebook 03 writes for every run (held-out questions answered after
    training)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found")
    files = sorted(p for ext in ("jsonl", "csv", "parquet") for p in run_dir.rglob(f"*generations*.{ext}"))
    if not files and (run_dir / "examples.json").is_file():
        files = [run_dir / "examples.json"]
    if not files:
        raise FileNotFoundError(f"{run_dir}: no model answers (no examples.json, written by notebook 03 with "
                                "train_examples > 0, and no *generations*.jsonl/.csv/.parquet file)")
    return files


_OPTION_LINE = re.compile(r"^\s*([A-Z])[.)]\s+(.+?)\s*$")


def example_statement(question: str, answer: str) -> str:
    """A Polis statement from one of a run's example answers: the survey question and the
    answer option the model chose (its letter looked up in the prompt's option list), e.g.
    "Do you think ...? - Sincere effort". An answer that names no listed letter is kept as given."""
    lines = [ln for ln in str(question).splitlines() if ln.strip()]
    options = {m.group(1): m.group(2) for ln in lines if (m := _OPTION_LINE.match(ln))}
    body = [ln.strip() for ln in lines if not _OPTION_LINE.match(ln)]
    survey_q = next((ln for ln in body if ln.endswith("?")), body[1] if len(body) > 1 else " ".join(body))
    answer = str(answer).strip()
    m = re.match(r"^\(?([A-Z])\b", answer)
    chosen = options.get(m.group(1)) if m else None
    return f"{survey_q} - {chosen}" if chosen else (f"{survey_q} - {answer}" if answer else "")


def read_run_examples(path: Path | str, column: str | None = None) -> tuple[list[str], list[str]]:
    """Statements from a run's ``examples.json`` (``column``: ``after``, the trained model's answer,
    by default; ``before`` gives the base model's), with ``examples.json:<item_id>`` sources."""
    path = Path(path)
    records = provenance.read_json(path)
    col = column or "after"
    if not isinstance(records, list) or any(not isinstance(r, Mapping) or col not in r or "question" not in r
                                            for r in records):
        raise PolisFormatError(f"{path}: expected a list of records with 'question' and {col!r} "
                               "(as notebook 03 writes examples.json)")
    texts = [example_statement(r["question"], r[col]) for r in records]
    return texts, [f"{path.name}:{r.get('item_id', i)}" for i, r in enumerate(records)]


def match_seed_comments(conv: Conversation, sources_csv: Path | str) -> pd.DataFrame:
    """Re-import: map the statements of a new round's export back to their seeds.

    Returns comment_id, seed_id, source for every statement whose normalised text equals a
    seed's; unmatched seeds (e.g. edited or rejected on upload) are listed with comment_id -1.
    """
    seeds = pd.read_csv(sources_csv, dtype=str, keep_default_na=False)
    _require_columns(seeds, ("seed_id", "source", "comment_text"), Path(sources_csv), "seed sources file")
    by_text = {normalise_text(t): cid for cid, t in zip(conv.comments.comment_id, conv.comments.text,
                                                         strict=True)}
    rows = [{"seed_id": s.seed_id, "source": s.source,
             "comment_id": int(by_text.get(normalise_text(s.comment_text), -1))}
            for s in seeds.itertuples()]
    return pd.DataFrame(rows).sort_values(["comment_id", "seed_id"]).reset_index(drop=True)


# ---------------------------------------------------------------------------- figures
def plot_participant_maps(groupings: Sequence[Grouping], method_rows: Sequence[str] = ("polis", "umap_hdbscan")):
    """Participants on the Polis PCA map (top) and the UMAP map (bottom), coloured by group."""
    plt = style.pyplot()

    rows = [m for m in method_rows if m == "polis" or all(g.umap is not None for g in groupings)]
    n = len(groupings)
    fig, axes = plt.subplots(len(rows), n, figsize=style.figsize(1.0, 0.36 * len(rows) * 3 / max(n, 3)),
                             squeeze=False)
    for j, g in enumerate(groupings):
        for i, method in enumerate(rows):
            ax = axes[i, j]
            xy = g.pca if method == "polis" else g.umap
            lab = g.labels(method).to_numpy()
            colours = [style.OKABE_ITO[k % 7] if k >= 0 else "#BBBBBB" for k in lab]
            ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=4, linewidths=0, alpha=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(g.conversation.split(".")[-1].replace("-", " "))
            if j == 0:
                ax.set_ylabel("PCA + k-means" if method == "polis" else "UMAP + HDBSCAN")
    return fig


def plot_consensus_division(tables: Mapping[str, pd.DataFrame], threshold: float):
    """Each accepted statement: consensus (geometric mean over groups) vs division."""
    plt = style.pyplot()

    n = len(tables)
    fig, axes = plt.subplots(1, n, figsize=style.figsize(1.0, 0.36 * 3 / max(n, 3)),
                             sharey=True, squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items(), strict=True):
        t = t[t["eligible"]]
        desirable = t["consensus_mean"] > threshold
        ax.scatter(t["division"], t["consensus_mean"], s=6, linewidths=0,
                   c=np.where(desirable, style.OKABE_ITO[2], style.OKABE_ITO[5]))
        ax.axhline(threshold, color="#666666", lw=0.6, ls="--")
        ax.set_title(name.split(".")[-1].replace("-", " "))
        ax.set_xlabel("division between groups")
    axes[0, 0].set_ylabel("group-informed consensus\n(geometric mean over groups)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", ms=3, color=style.OKABE_ITO[2], label="desirable (KTO)"),
               Line2D([], [], ls="", marker="o", ms=3, color=style.OKABE_ITO[5], label="undesirable")]
    axes[0, -1].legend(handles=handles, loc="upper right", frameon=False)
    return fig


# ---------------------------------------------------------------------------- CLI
def _cli_seed(args: argparse.Namespace) -> int:
    texts: list[str] = []
    sources: list[str] = []
    files = [Path(p) for p in args.texts]
    for run in args.run:
        files += run_generation_files(resolve_run(run))
    if not files:
        print("error: give --texts FILE and/or --run RUN_ID_OR_DIR", file=sys.stderr)
        return 2
    for f in files:
        t, s = read_run_examples(f, args.column) if f.name == "examples.json" else read_texts(f, args.column)
        texts += t
        sources += [f"{paths.relative(f)}#{x.split(':', 1)[1]}" for x in s]
    if args.limit:
        texts, sources = texts[: args.limit], sources[: args.limit]
    df = export_seed_comments(texts, args.out, sources=sources, max_chars=args.max_chars)
    print(f"wrote {len(df)} seed comments to {args.out} (+ {Path(args.out).stem}.sources.csv); "
          f"dropped {df.attrs['dropped']}")
    return 0


MIN_PARTICIPANTS = 2  # opinion groups, consensus and preference pairs compare participants
MIN_STATEMENTS = 2


def usability_problems(conv: Conversation) -> list[str]:
    """Why a conversation cannot be used as consultation data (empty when it can)."""
    problems = []
    if conv.n_participants < MIN_PARTICIPANTS:
        problems.append(f"{conv.n_participants} participant(s) with votes: opinion groups and consensus need "
                        f"at least {MIN_PARTICIPANTS}")
    if conv.matrix.shape[1] < MIN_STATEMENTS:
        problems.append(f"{conv.matrix.shape[1]} statement(s) with votes: at least {MIN_STATEMENTS} are needed")
    return problems


def _cli_check(args: argparse.Namespace) -> int:
    conv = load_conversation(args.conversation, unknown_comments=args.unknown_comments)
    problems = usability_problems(conv)
    if problems:
        print(f"error: {conv.name} ({conv.source}) cannot be used: " + "; ".join(problems), file=sys.stderr)
        return 2
    print(f"{conv.name}: {conv.n_participants} participants x {conv.matrix.shape[1]} statements "
          f"(votes from {conv.source})")
    with pd.option_context("display.width", 200, "display.max_colwidth", 120):
        rep = import_report([conv])
        if len(rep):
            print(rep.to_string(index=False))
        print(source_checks(conv).to_string(index=False))
    if args.match:
        print(match_seed_comments(conv, args.match).to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m valuealign.consultation",
                                 description="Polis consultation tools (seed export, import check).")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed", help="write model responses / texts as a Polis seed-comments CSV")
    s.add_argument("--texts", action="append", default=[], help=".txt/.jsonl/.csv/.parquet (repeatable)")
    s.add_argument("--run", action="append", default=[],
                   help="run id under runs/ or run folder; its *generations*.{jsonl,csv,parquet} files, "
                        "else its examples.json, are read (repeatable)")
    s.add_argument("--column", default=None, help="text column (default: completion/response/generation/text)")
    s.add_argument("--limit", type=int, default=0, help="keep the first N texts (0 = all)")
    s.add_argument("--max-chars", type=int, default=None, help="drop texts longer than this")
    s.add_argument("--out", type=Path, required=True, help="seed CSV to write")
    c = sub.add_parser("check", help="import a Polis export folder and print the import report and checks")
    c.add_argument("conversation", help="folder, or a name under data/raw/polis/")
    c.add_argument("--unknown-comments", choices=("error", "drop"), default="error")
    c.add_argument("--match", type=Path, default=None, help="seed sources CSV to match (re-import)")
    args = ap.parse_args(argv)
    try:
        return _cli_seed(args) if args.command == "seed" else _cli_check(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

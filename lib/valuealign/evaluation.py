"""Evaluation (notebook 04): does the model now answer like its population?

The model's answer distribution for a survey item is read from next-token probabilities of
the option labels after the chat-formatted prompt (OpinionQA / GlobalOpinionQA practice): no
sampling and no parsing of generated text. Why not generate-and-parse: a distribution needs
many samples per prompt and parsing fails silently on malformed answers; one forward pass
gives the whole distribution exactly. Why average over paraphrases and option orders: small
models have a strong position bias ("always A"), which would otherwise be scored as an
opinion. Cyclic orders put every option at every position exactly once, so a pure position
bias averages out to the uniform distribution instead of a spurious preference.

Metrics (per item, then mean over items with a percentile-bootstrap 95% CI):
alignment = 1 - Jensen-Shannon distance with base-2 logarithms (in [0, 1]; the headline), and
the same with natural logarithms (``js_alignment_e``, scipy's default, which public
GlobalOpinionQA replications report); for ordinal items 1 - W1/(K-1) over the substantive
options (OpinionQA's representativeness); majority-option match; entropy difference
H(model) - H(population) in bits (< 0: over-confident; a ratio explodes on peaked items).

Uncertainty: items are resampled, except on splits of whole held-out strata
(:data:`CLUSTER_SPLITS`), where whole strata are resampled (items of one stratum are not
independent). Several seeds of one method are combined with a two-level bootstrap (seeds,
then items or strata), never by averaging per-seed intervals. p-values of a reported family
of tests get Holm-adjusted companions (``p_holm``).

Results are keyed by (run, split, eval_hash): ``eval_hash`` hashes every parameter that
changes predictions *and* the input data, so two evaluations that differ are never averaged
together (:func:`load_summary` refuses a mixed table unless told which hash to read).

Why one module of about 1500 lines: the conditions, runs, baselines, tables, controls and
figures all read and write the one item table keyed by ``eval_hash``, and notebooks 04-06 use
them as ``ev.*``. The parts with a life of their own are elsewhere and re-used by other stages:
forward passes (:mod:`valuealign.inference`), the per-item metrics (:mod:`valuealign.metrics`),
the bootstrap and tests (:mod:`valuealign.stats`) and the DailyDilemmas
(:mod:`valuealign.dilemmas`, re-exported here for notebook 04).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from valuealign import models, paths, prompts, provenance, schemas, style
from valuealign.datasets import control_source

# notebook 04 and the tests reach the DailyDilemmas through this module (``ev.plot_dilemmas``)
from valuealign.dilemmas import (  # noqa: F401
    DILEMMA_ACTION_FILE,
    WVS_SIGN_COLUMNS,
    DilemmaSet,
    dilemma_input_hashes,
    dilemma_preferences,
    dilemma_shifts,
    dilemmas_by_dimension,
    load_dilemmas,
    plot_dilemma_shifts,
    plot_dilemmas,
    summarise_dilemma_shifts,
)
from valuealign.errors import EvaluationError
from valuealign.ids import EmptySlugError, value_set_id
from valuealign.inference import (
    Scorer,
    answer_logprobs,
    chat_text,
    greedy_answers,
    score_labels,
)
from valuealign.metrics import (
    as_distribution,
    entropy_bits,
    item_metrics,
    js_alignment,
)
from valuealign.stats import bootstrap_ci, holm_adjust, paired_test, two_level_bootstrap_ci

BASELINES_RUN = "_baselines"
SUMMARY_NAME = "eval_summary.parquet"
SCORED_RUNS_KEY = "scored_runs"  # eval.json: the runs one execution of notebook 04 scored
GENERAL_PROMPTS_NAME = "general_prompts.txt"
BASELINE_METHODS = ("uniform", "base", "prompted", "oracle")
METRICS = ("js_alignment", "js_alignment_e", "w1_alignment", "majority_match", "entropy_diff_bits")
METRIC_LABELS = {
    "js_alignment": "1 - JS distance (base 2)", "js_alignment_e": "1 - JS distance (base e)",
    "w1_alignment": "1 - W1/(K-1) (ordinal)", "majority_match": "majority-option match",
    "entropy_diff_bits": "H(model) - H(population) (bits)",
}
# Splits whose items come from a few whole held-out strata: resampled by stratum.
CLUSTER_SPLITS = ("test_cluster",)
# Fine-tuned methods are compared with these references (paired by item).
GAIN_REFERENCES = ("base", "prompted")


# ----------------------------------------------------------------------------- settings

_NB04 = schemas.Evaluate  # notebook 04's parameters: names, defaults, ranges


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes predictions; hashed into ``eval_hash`` with the input data.

    Defaults are notebook 04's (:class:`valuealign.schemas.Evaluate`); the field names are
    hashed, so a field keeps its name where the notebook's differs (:data:`NOTEBOOK_NAMES`), and
    :meth:`from_parameters` maps a notebook's parameters onto them."""

    n_paraphrases: int = _NB04.n_paraphrases
    permutations: str = _NB04.permutations
    max_eval_items: int = _NB04.max_eval_items
    max_options: int = _NB04.eval_max_options
    n_dilemmas: int = _NB04.eval_n_dilemmas
    drift_new_tokens: int = _NB04.eval_drift_tokens
    seed: int = _NB04.seed
    quantization: str = "none"  # base weights scored on (resolved: 4bit | none); see scoring_quantization

    # field <- notebook 04's parameter, where the names differ (``quantization`` is resolved from
    # ``eval_quantization`` and the runs by :func:`scoring_quantization`, so it is passed apart)
    NOTEBOOK_NAMES: ClassVar[dict[str, str]] = {
        "max_options": "eval_max_options",
        "n_dilemmas": "eval_n_dilemmas",
        "drift_new_tokens": "eval_drift_tokens",
    }

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any], quantization: str) -> EvalSettings:
        """The settings of a notebook's parameters (notebook 04's, or notebook 05's scoring knobs
        with its own ``eval_n_dilemmas``/``eval_drift_tokens`` given); a knob ``params`` lacks
        takes notebook 04's default. ``quantization``: already resolved (4bit | none)."""
        nb = {**schemas.defaults(_NB04), **params}
        values = {f.name: nb[cls.NOTEBOOK_NAMES.get(f.name, f.name)] for f in fields(cls) if f.name != "quantization"}
        return cls(**values, quantization=quantization)

    def __post_init__(self) -> None:
        if self.quantization not in models.QUANTIZATIONS:
            raise EvaluationError(f"quantization must be resolved to one of {models.QUANTIZATIONS}, "
                                  f"got {self.quantization!r}")
        if self.permutations not in ("cyclic", "random"):
            raise EvaluationError(f"permutations must be 'cyclic' or 'random', got {self.permutations!r}")
        if not 1 <= self.n_paraphrases <= len(prompts.PARAPHRASES):
            raise EvaluationError(
                f"n_paraphrases must be in [1, {len(prompts.PARAPHRASES)}], got {self.n_paraphrases}"
            )

    def key(self, input_hashes: Mapping[str, str] | None = None, value_sets: Sequence[str] = (),
            items: Sequence[str] = ()) -> str:
        """Hash of the settings, the input files, the value sets scored and the evaluated items
        (``split:item_id``): with ``max_eval_items > 0`` the item set depends on the value sets,
        so two evaluations on different items must not share a key."""
        payload = json.dumps({"settings": asdict(self), "inputs": dict(sorted((input_hashes or {}).items())),
                              "value_sets": sorted(set(value_sets)), "items": sorted(set(items))},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- prompts

def option_orders(n_options: int, permutations: str, seed: int = 0, item_id: str = "") -> list[list[int]]:
    """The option orders an item is shown in: ``n_options`` cyclic shifts, or as many random ones.

    Random orders are seeded per item (seed + item id), so they do not depend on which other
    items are evaluated.
    """
    if n_options < 2:
        raise EvaluationError(f"item {item_id!r}: needs at least 2 options, got {n_options}")
    if permutations == "cyclic":
        return [prompts.cyclic_order(n_options, s) for s in range(n_options)]
    if permutations == "random":
        h = int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng(h)
        return [rng.permutation(n_options).tolist() for _ in range(n_options)]
    raise EvaluationError(f"permutations must be 'cyclic' or 'random', got {permutations!r}")


# ----------------------------------------------------------------------------- scoring

EVAL_QUANTIZATIONS = ("as_trained", "4bit", "none")


def load_kwargs(quantization: str = "none") -> dict[str, str]:
    """Inference placement and base-weight precision for ``models.load_causal_lm``: bf16 on a
    GPU, float32 on CPU (bf16 is ~10x slower on the build machines' CPUs), and NF4 4-bit
    weights when ``quantization="4bit"`` (the QLoRA base an adapter was trained on; the
    4-bit rounding is part of the model the adapter learnt to correct, so scoring it on
    bf16 weights scores a different model)."""
    import torch

    if quantization not in models.QUANTIZATIONS:
        raise EvaluationError(f"quantization must be resolved to one of {models.QUANTIZATIONS}, "
                              f"got {quantization!r}")
    placement = {"device": "cuda", "dtype": "bfloat16"} if torch.cuda.is_available() else {}
    return {**placement, "quantization": quantization}




def model_scorer(model: Any, tokenizer: Any, batch_size: int = 8) -> Scorer:
    return lambda texts, labels: score_labels(model, tokenizer, texts, labels, batch_size)


@dataclass
class PromptSpec:
    item_id: str
    paraphrase_id: int
    order: list[int]
    text: str
    labels: list[str] = field(default_factory=list)


def build_prompts(items: pd.DataFrame, tokenizer: Any, settings: EvalSettings,
                  persona: str | None = None) -> list[PromptSpec]:
    """Every (item, paraphrase, option order) prompt, rendered through the shared templates."""
    specs = []
    for row in items.itertuples(index=False):
        options = list(row.options)
        for order in option_orders(len(options), settings.permutations, settings.seed, row.item_id):
            for pid in range(settings.n_paraphrases):
                msgs = prompts.render_messages(row.question, options, order, pid, persona=persona)
                specs.append(PromptSpec(row.item_id, pid, order, chat_text(tokenizer, msgs),
                                        list(prompts.LETTERS[: len(options)])))
    return specs


def predict_items(items: pd.DataFrame, tokenizer: Any, scorer: Scorer, settings: EvalSettings,
                  persona: str | None = None) -> pd.DataFrame:
    """Model answer distribution per item, in the item's original option order.

    Each prompt's label probabilities are renormalised over the valid labels, mapped back to
    the original options (``p[order[i]] = P(letter i)``) and averaged over paraphrases and
    orders. ``valid_mass`` (mean probability on valid labels before renormalisation) and
    ``p_first_position`` (mean renormalised probability of label A: the position bias)
    are kept as diagnostics.
    """
    specs = build_prompts(items, tokenizer, settings, persona)
    scores = scorer([s.text for s in specs], [s.labels for s in specs])
    acc: dict[str, dict[str, Any]] = {}
    for spec, sc in zip(specs, scores, strict=True):
        p = sc.probs
        orig = np.zeros(len(spec.order))
        orig[spec.order] = p
        a = acc.setdefault(spec.item_id, {"sum": np.zeros(len(spec.order)), "mass": 0.0, "first": 0.0,
                                          "n": 0, "multi": False})
        a["sum"] += orig
        a["mass"] += sc.valid_mass
        a["first"] += p[0]
        a["n"] += 1
        a["multi"] |= sc.multi_token
    rows = [{"item_id": k, "probs": (a["sum"] / a["n"]).tolist(), "valid_mass": a["mass"] / a["n"],
             "p_first_position": a["first"] / a["n"], "n_prompts": a["n"], "multi_token": a["multi"]}
            for k, a in acc.items()]
    return pd.DataFrame(rows).sort_values("item_id").reset_index(drop=True)


# ----------------------------------------------------------------------------- inputs

def read_inputs(alignment_dir: Path | None = None) -> dict[str, pd.DataFrame]:
    """Items, splits, value sets and their target distributions; errors name the missing file."""
    alignment_dir = alignment_dir or paths.ALIGNMENT
    files = {
        "items": paths.ITEMS, "distributions": paths.DISTRIBUTIONS,
        "splits": alignment_dir / "splits.parquet", "value_sets": alignment_dir / "value_sets.parquet",
        "targets": alignment_dir / "value_set_distributions.parquet",
    }
    need = {"items": {"item_id", "question", "options", "nonsubstantive", "ordinal"},
            "distributions": {"item_id", "group", "shares"},
            "splits": {"item_id", "split", "stratum"}, "value_sets": {"value_set", "group", "weight"},
            "targets": {"value_set", "item_id", "shares"}}
    out = {}
    for key, f in files.items():
        if not f.exists():
            stage = "00_survey_data" if key in ("items", "distributions") else "02_alignment_datasets"
            raise EvaluationError(f"{paths.relative(f)} is missing: run notebook {stage} first")
        df = pd.read_parquet(f)
        missing = need[key] - set(df.columns)
        if missing:
            raise EvaluationError(f"{paths.relative(f)}: missing column(s) {sorted(missing)}")
        out[key] = df
    return out


def input_hashes(alignment_dir: Path | None = None) -> dict[str, str]:
    alignment_dir = alignment_dir or paths.ALIGNMENT
    files = [paths.ITEMS, paths.DISTRIBUTIONS, alignment_dir / "splits.parquet",
             alignment_dir / "value_sets.parquet", alignment_dir / "value_set_distributions.parquet"]
    return {paths.relative(f): provenance.sha256_file(f) for f in files if f.exists()}


def select_items(inputs: Mapping[str, pd.DataFrame], value_sets: Sequence[str], splits: Sequence[str],
                 max_items: int, seed: int = 0, max_options: int = 0,
                 restrict: Mapping[str, Iterable[str]] | None = None) -> pd.DataFrame:
    """Held-out items per split that have a target for at least one evaluated value set.

    At most ``max_items`` per split (0 = all): items with targets for the most value sets first
    (so the steerability matrix is paired), then a seeded hash order. The same items are used
    for every model, so all comparisons are paired by item. ``max_options`` > 0 keeps only items
    with at most that many options: a CPU cost cap (an item costs K orders x K-line prompts),
    recorded in the settings hash; 0 (thesis profiles) keeps all. ``restrict`` maps a split to
    the only item ids it may use (the ``train`` split of the positive control: the items the
    runs were trained on, see :func:`trained_item_ids`).
    """
    targets = inputs["targets"]
    known = sorted(targets["value_set"].unique())
    for vs in value_sets:
        if vs not in known:
            raise EvaluationError(
                f"value_sets: {vs!r} has no targets in value_set_distributions.parquet (known: {', '.join(known)})"
            )
    bad = set(splits) - set(inputs["splits"]["split"].unique())
    if bad:
        raise EvaluationError(f"eval_splits: {sorted(bad)} not in splits.parquet "
                              f"(has {sorted(inputs['splits']['split'].unique())})")
    t = targets[targets["value_set"].isin(value_sets)]
    n_vs = t.groupby("item_id")["value_set"].nunique().rename("n_value_sets")
    sp = inputs["splits"][inputs["splits"]["split"].isin(splits)].merge(n_vs, on="item_id")
    for split_name, allowed in (restrict or {}).items():
        allowed = set(allowed)
        sp = sp[(sp["split"] != split_name) | sp["item_id"].isin(allowed)]
    if max_options > 0:
        k = inputs["items"].set_index("item_id")["options"].map(len)
        sp = sp[sp["item_id"].map(k).fillna(0).le(max_options)]
    sp["_h"] = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in sp["item_id"]]
    sp = sp.sort_values(["split", "n_value_sets", "_h"], ascending=[True, False, True])
    if max_items > 0:
        sp = sp.groupby("split", sort=True).head(max_items)
    items = inputs["items"].set_index("item_id")
    missing = sorted(set(sp["item_id"]) - set(items.index))
    if missing:
        raise EvaluationError(f"splits.parquet: item ids not in items.parquet: {missing[:5]}")
    out = sp.drop(columns="_h").join(items, on="item_id")
    for r in out.itertuples():
        if len(r.nonsubstantive) != len(r.options):
            raise EvaluationError(f"items.parquet: item {r.item_id}: {len(r.options)} options but "
                                  f"{len(r.nonsubstantive)} nonsubstantive flags")
    return out.sort_values(["split", "item_id"]).reset_index(drop=True)


def persona_for(value_set: str, value_sets_table: pd.DataFrame, max_named: int = 3) -> str:
    """The prompting baseline's persona: "a person from X" (the largest members by weight)."""
    m = value_sets_table[value_sets_table["value_set"] == value_set].sort_values(
        ["weight", "group"], ascending=[False, True])
    if m.empty:
        raise EvaluationError(f"value_sets.parquet: no members for value set {value_set!r}")
    names = [re.sub(r"\s*\(.*\)\s*$", "", g) for g in m["group"]]
    if len(names) == 1:
        return f"a person from {names[0]}"
    shown = names[:max_named]
    more = "" if len(names) <= max_named else f" (or another of {len(names)} countries in this group)"
    return "a person from " + ", ".join(shown[:-1]) + " or " + shown[-1] + more


# ----------------------------------------------------------------------------- baselines

def uniform_predictions(items: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"item_id": items["item_id"].values,
                         "probs": [[1 / len(o)] * len(o) for o in items["options"]]})


def oracle_predictions(inputs: Mapping[str, pd.DataFrame], value_set: str, items: pd.DataFrame,
                       min_overlap: int = 3) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Oracle-like reference: the *nearest other population*.

    Among groups that are not members of ``value_set``, pick the one whose answers agree
    best (mean 1 - JS) with the value set's targets on the **train** items (no test
    leakage), and predict its answer distribution on each evaluated item; where it did not
    answer an item, the mean over all other groups. What it measures: how well a model that
    answered exactly like the most similar known population would score, a strong reference
    a survey-trained model can hope to approach. (The brief's other option, the same
    population's train distribution on the same item, does not exist here: splits are by item.)
    """
    targets = inputs["targets"]
    dist = inputs["distributions"]
    members = set(inputs["value_sets"].loc[inputs["value_sets"]["value_set"] == value_set, "group"])
    others = dist[~dist["group"].isin(members)]
    train_ids = set(inputs["splits"].loc[inputs["splits"]["split"] == "train", "item_id"])
    tgt = targets[(targets["value_set"] == value_set) & targets["item_id"].isin(train_ids)]
    tmap = dict(zip(tgt["item_id"], tgt["shares"], strict=True))
    best, best_score = None, -1.0
    for g, sub in others[others["item_id"].isin(tmap)].groupby("group", sort=True):
        scores = [js_alignment(s, tmap[i]) for i, s in zip(sub["item_id"], sub["shares"], strict=True)
                  if len(s) == len(tmap[i])]
        if len(scores) >= min_overlap and np.mean(scores) > best_score:
            best, best_score = g, float(np.mean(scores))
    rows, direct = [], 0
    for r in items.itertuples():
        k = len(r.options)
        own = others[(others["item_id"] == r.item_id) & (others["group"] == best)] if best else others.iloc[:0]
        if len(own) and len(own.iloc[0]["shares"]) == k:
            p, direct = list(own.iloc[0]["shares"]), direct + 1
        else:
            pool = [np.asarray(s, float) for s in others.loc[others["item_id"] == r.item_id, "shares"]
                    if len(s) == k]
            p = (np.mean(pool, axis=0) if pool else np.full(k, 1 / k)).tolist()
        rows.append({"item_id": r.item_id, "probs": list(as_distribution(p))})
    info = {"value_set": value_set, "nearest_group": best, "train_alignment": best_score,
            "share_items_direct": direct / max(len(items), 1)}
    return pd.DataFrame(rows), info


# ----------------------------------------------------------------------------- metrics tables

def score_predictions(preds: pd.DataFrame, items: pd.DataFrame, targets: pd.DataFrame,
                      target_value_sets: Sequence[str]) -> pd.DataFrame:
    """Per-item metrics of one condition's predictions against each target value set."""
    it = items.set_index("item_id")
    tg = targets[targets["value_set"].isin(target_value_sets)]
    rows = []
    pr = preds.set_index("item_id")
    for t in tg.itertuples():
        if t.item_id not in pr.index or t.item_id not in it.index:
            continue
        item = it.loc[t.item_id]
        p = pr.loc[t.item_id, "probs"]
        if len(t.shares) != len(p):
            raise EvaluationError(f"value_set_distributions.parquet: {t.value_set}/{t.item_id} has "
                                  f"{len(t.shares)} shares for {len(p)} options")
        m = item_metrics(p, as_distribution(t.shares, f"{t.value_set}/{t.item_id} shares"),
                         bool(item["ordinal"]), list(item["nonsubstantive"]))
        rows.append({"item_id": t.item_id, "split": item["split"], "stratum": item["stratum"],
                     "target_value_set": t.value_set, **m})
    return pd.DataFrame(rows)


def _clusters_for(split: Any, frame: pd.DataFrame) -> pd.Series | None:
    """The resampling clusters of a split: strata on :data:`CLUSTER_SPLITS`, else None (items)."""
    if split in CLUSTER_SPLITS:
        if "stratum" not in frame.columns:
            raise EvaluationError(f"split {split!r} needs a 'stratum' column for the cluster bootstrap")
        return frame["stratum"]
    return None


def summarise(item_table: pd.DataFrame, keys: Sequence[str], n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Long table: one row per (keys..., metric) with mean, bootstrap CI and n_items.

    On a split of held-out strata (:data:`CLUSTER_SPLITS`) whole strata are resampled
    (``ci_unit`` "strata", ``n_units`` strata); elsewhere items."""
    rows = []
    for k, g in item_table.groupby(list(keys), sort=True, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        ident = dict(zip(keys, k, strict=True))
        split = ident.get("split", g["split"].iloc[0] if "split" in g.columns else None)
        clusters = _clusters_for(split, g)
        for metric in METRICS:
            v = g[metric].to_numpy(dtype=float)
            r = two_level_bootstrap_ci(v[None, :], n_boot, seed,
                                       clusters=None if clusters is None else clusters.to_numpy())
            rows.append({**ident, "metric": metric, "mean": r["mean"], "ci_low": r["ci_low"],
                         "ci_high": r["ci_high"], "n_items": r["n_items"], "ci_unit": r["ci_unit"],
                         "n_units": r["n_units"]})
    return pd.DataFrame(rows)


def select_rows(item_table: pd.DataFrame, spec: Mapping[str, Any]) -> pd.DataFrame:
    """Rows matching every ``column: value`` of ``spec`` (``None`` matches a missing value)."""
    m = np.ones(len(item_table), dtype=bool)
    for k, v in spec.items():
        if k not in item_table.columns:
            raise EvaluationError(f"item table has no column {k!r} (selecting {dict(spec)})")
        col = item_table[k]
        m &= (col.isna() if v is None or (isinstance(v, float) and np.isnan(v)) else col == v).to_numpy()
    return item_table.loc[m]


def paired_difference(item_table: pd.DataFrame, a: Mapping[str, Any], b: Mapping[str, Any],
                      metric: str = "js_alignment", n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean per-item difference a - b (paired on item and target), bootstrap CI and Wilcoxon p.

    ``a`` and ``b`` must each name one condition completely (run, method, value set): a
    selection that matches two conditions would pair every item twice. On a cluster split
    the CI resamples strata and the test runs on per-stratum mean differences."""
    on = ["item_id", "target_value_set", "split"]
    sa, sb = select_rows(item_table, a), select_rows(item_table, b)
    for name, sel in (("a", sa), ("b", sb)):
        if sel.duplicated(on).any():
            raise EvaluationError(f"paired_difference: selection {name} = {dict(a if name == 'a' else b)} "
                                  "matches several conditions; name run, method and value_set")
    cols = [*on, metric] + (["stratum"] if "stratum" in sa.columns else [])
    j = sa[cols].merge(sb[[*on, metric]], on=on, suffixes=("_a", "_b"))
    d = (j[f"{metric}_a"] - j[f"{metric}_b"]).to_numpy(dtype=float)
    split = a.get("split", j["split"].iloc[0] if len(j) else None)
    clusters = _clusters_for(split, j) if len(j) else None
    cl = None if clusters is None else clusters.to_numpy()
    r = two_level_bootstrap_ci(d[None, :], n_boot, seed, clusters=cl)
    return {"mean_diff": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_items": r["n_items"],
            "ci_unit": r["ci_unit"], "n_units": r["n_units"], "p_wilcoxon": paired_test(d, cl)}


def steerability(item_table: pd.DataFrame, row_key: str = "value_set", metric: str = "js_alignment",
                 n_boot: int = 1000, seed: int = 0,
                 base_table: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Matrix (rows: model steered to A, columns: evaluated against B) and diagonal advantage.

    Advantage of row A, per item: alignment to A minus the mean alignment to the other value
    sets on the same item (paired), then bootstrap CI over items and a Wilcoxon test.
    With ``base_table`` (the base model's rows) also the *net* advantage, computed on
    alignment gains over the base model: the raw advantage also contains how close the base
    model already was to A (a base model that answers like A gives every row a tilt to A).
    """
    t = item_table.dropna(subset=[row_key])
    matrix = t.pivot_table(index=row_key, columns="target_value_set", values=metric, aggfunc="mean")
    base_w = (base_table.pivot_table(index="item_id", columns="target_value_set", values=metric,
                                     aggfunc="mean") if base_table is not None and len(base_table) else None)
    rows = []

    def advantage(w: pd.DataFrame, a: str) -> np.ndarray:
        off = w.drop(columns=a).mean(axis=1, skipna=True)
        return (w[a] - off).dropna().to_numpy()

    for a, g in t.groupby(row_key, sort=True):
        w = g.pivot_table(index="item_id", columns="target_value_set", values=metric, aggfunc="mean")
        if a not in w.columns or w.shape[1] < 2:
            continue
        d = advantage(w, a)
        mean, lo, hi, n = bootstrap_ci(d, n_boot, seed)
        row = {row_key: a, "diagonal": float(w[a].mean()),
               "off_diagonal": float(w.drop(columns=a).mean(axis=1).mean()),
               "advantage": mean, "ci_low": lo, "ci_high": hi, "n_items": n, "p_wilcoxon": paired_test(d)}
        if base_w is not None:
            net = (w - base_w.reindex(index=w.index, columns=w.columns))
            dn = advantage(net, a)
            m2, lo2, hi2, _ = bootstrap_ci(dn, n_boot, seed)
            row.update({"net_advantage": m2, "net_ci_low": lo2, "net_ci_high": hi2,
                        "net_p_wilcoxon": paired_test(dn)})
        rows.append(row)
    return matrix, pd.DataFrame(rows)


# ----------------------------------------------------------------------------- runs

@dataclass
class RunInfo:
    run_id: str
    path: Path
    method: str
    value_set: str
    seed: int | None
    model_profile: str
    model_path: str | None
    manifest: dict[str, Any]


def _trained_on_consultation(run_dir: Path) -> bool:
    """Whether a run folder's manifest says it was trained on consultation data (notebook 05's)."""
    try:
        params = provenance.read_json(run_dir / "manifest.json").get("parameters", {})
    except (OSError, ValueError, AttributeError):
        return False
    return str(params.get("data_source", "survey")) == "consultation"


def discover_runs(patterns: Sequence[str] = ("*",), runs_dir: Path | None = None,
                  strict: bool = False, data_root: Path | None = None) -> tuple[list[RunInfo], pd.DataFrame]:
    """Finished fine-tuning runs matching ``patterns`` (run ids or globs).

    A folder without ``adapter/adapter_config.json``, ``manifest.json`` or ``DONE`` (or with an
    unreadable manifest) is reported by name with the reason and skipped; with ``strict`` it is
    an error. Folders starting with ``_`` or ``.`` (baselines, temporaries) are not runs.
    A run trained on other data than the current split and datasets
    (``training.check_run_data``: its test items may have been training items) is never
    evaluated: named explicitly or with ``strict`` it is an error, matched by a glob it is
    skipped with the reason (``data_root``: where its datasets are, default notebook 02's).
    Runs trained on consultation data are notebook 05's (it scores them on held-out statements
    and survey items): a glob does not match them, so this notebook's tables do not depend on
    whether notebook 05 ran before; named explicitly they are evaluated like any run.
    """
    from valuealign import training
    runs_dir = runs_dir or paths.RUNS
    found: list[RunInfo] = []
    skipped: list[dict[str, str]] = []
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.exists() else []
    names = [p.name for p in folders if not p.name.startswith(("_", "."))]
    matched: set[str] = set()
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits and not any(c in pat for c in "*?["):
            skipped.append({"run": pat, "reason": f"no folder {paths.relative(runs_dir / pat)}"})
        matched.update(hits)
    broken = [n for n in sorted(matched) if training.run_status(runs_dir / n) == "broken"]
    if broken:  # a run marked done without its adapter is damage, never a run to leave out quietly
        raise EvaluationError(
            f"run(s) marked done (DONE file) without a complete adapter (adapter/{' and '.join(training.ADAPTER_FILES)}): "
            f"{', '.join(broken)} in {paths.relative(runs_dir)}; they are not done: run notebook 03 again "
            "(it completes them from their last checkpoint), then evaluate")
    for name in sorted(matched):
        d = runs_dir / name
        if name not in patterns and _trained_on_consultation(d):
            continue  # notebook 05 evaluates it against the consultation; named, it is scored here too
        reasons = []
        if not (d / "adapter" / "adapter_config.json").exists():
            reasons.append("no adapter/adapter_config.json")
        if not (d / "manifest.json").exists():
            reasons.append("no manifest.json")
        if not (d / "DONE").exists():
            reasons.append("no DONE file (unfinished)")
        manifest: dict[str, Any] = {}
        if not reasons:
            try:
                manifest = provenance.read_json(d / "manifest.json")
                params = manifest["parameters"]
                # a chained run is its lineage ("sft+dpo"), never pooled with a fresh run of its method
                method = str((manifest.get("extra") or {}).get("lineage_method") or params["method"])
                info = RunInfo(name, d, method, str(params["value_set"]),
                               params.get("seed", manifest.get("seed")), str(params["model_profile"]),
                               params.get("model_path") or None, manifest)
                training.check_run_data(name, manifest, data_root)
                found.append(info)
                continue
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                reasons.append(f"manifest.json unreadable or lacks parameters ({type(err).__name__}: {err})")
            except training.StaleRunError as err:
                if strict or name in patterns:
                    raise EvaluationError(str(err)) from None
                reasons.append(str(err))
        skipped.append({"run": name, "reason": "; ".join(reasons)})
    report = pd.DataFrame(skipped, columns=["run", "reason"])
    if strict and len(report):
        raise EvaluationError("runs: " + "; ".join(f"{r.run}: {r.reason}" for r in report.itertuples()))
    return found, report


def scoring_quantization(requested: str, runs: Sequence[RunInfo]) -> str:
    """Resolve notebook 04's ``eval_quantization`` to the base weights every model is scored on.

    ``as_trained`` reads each run's training quantisation from its manifest
    (``parameters.quantization``, already resolved by training to ``4bit`` or ``none``).
    One evaluation scores base, prompted base and every run on the *same* base weights, so
    that "tuned minus base" compares an adapter with the model it was added to: runs trained
    on different quantisations cannot share one evaluation (evaluate them separately, or
    force one with ``4bit``/``none``). Without runs there is nothing to match and the
    unquantised base is scored (``none``).
    """
    if requested not in EVAL_QUANTIZATIONS:
        raise EvaluationError(f"parameter eval_quantization: {requested!r} is not one of "
                              f"{', '.join(EVAL_QUANTIZATIONS)}")
    if requested != "as_trained":
        return requested
    by_quant: dict[str, list[str]] = {}
    for run in runs:
        q = run.manifest.get("parameters", {}).get("quantization")
        if q not in models.QUANTIZATIONS:
            raise EvaluationError(
                f"{paths.relative(run.path / 'manifest.json')}: parameters.quantization is {q!r}, not one of "
                f"{models.QUANTIZATIONS}; set eval_quantization to 4bit or none explicitly"
            )
        by_quant.setdefault(str(q), []).append(run.run_id)
    if len(by_quant) > 1:
        groups = "; ".join(f"{q}: {', '.join(ids)}" for q, ids in sorted(by_quant.items()))
        raise EvaluationError(
            "eval_quantization = 'as_trained' but the runs were trained on different base weights "
            f"({groups}): baselines and runs must be scored on one model, so evaluate each group "
            "separately (parameter runs) or force one with eval_quantization = '4bit' or 'none'"
        )
    return next(iter(by_quant), "none")


# ----------------------------------------------------------------------------- capability drift

def read_general_prompts(path: Path | None = None) -> list[str]:
    path = path or paths.REFERENCE / GENERAL_PROMPTS_NAME
    if not path.exists():
        raise EvaluationError(f"{paths.relative(path)} is missing (general prompts for capability drift)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    out = [ln for ln in lines if ln and not ln.startswith("#")]
    if not out:
        raise EvaluationError(f"{paths.relative(path)}: no prompts (one per line, '#' comments)")
    return out


def drift_table(base_logp: Sequence[Any], tuned_logp: Sequence[Any],
                answers: Sequence[Sequence[int]]) -> pd.DataFrame:
    """Per prompt: mean KL(base || tuned) over answer positions (nats) and the mean per-token
    log-likelihood of the base model's greedy answer under base and tuned."""
    import torch

    rows = []
    for i, (b, t, a) in enumerate(zip(base_logp, tuned_logp, answers, strict=True)):
        kl = torch.sum(b.exp() * (b - t), dim=-1).mean().item()
        idx = torch.tensor(list(a)).unsqueeze(-1)
        rows.append({"prompt_id": i, "kl_base_tuned": kl,
                     "loglik_base": b.gather(-1, idx).mean().item(),
                     "loglik_tuned": t.gather(-1, idx).mean().item(), "n_tokens": len(a)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- persistence

def eval_folder(run_id: str, eval_hash: str, runs_dir: Path | None = None) -> Path:
    """``runs/<run_id>/eval/<eval_hash>/``; both names are checked to stay inside ``runs_dir``."""
    run_dir = paths.safe_child(runs_dir or paths.RUNS, run_id, "run_id")
    return paths.safe_child(run_dir / "eval", eval_hash, "eval_hash")


def write_eval(run_id: str, eval_hash: str, tables: Mapping[str, pd.DataFrame],
               meta: Mapping[str, Any], runs_dir: Path | None = None) -> list[Path]:
    """Write ``runs/<run>/eval/<eval_hash>/<name>.parquet`` (+ ``eval.json``); rows are sorted
    so that the same inputs give the same bytes."""
    folder = eval_folder(run_id, eval_hash, runs_dir)
    out = []
    for name, df in tables.items():
        df = df.copy()
        df.insert(0, "eval_hash", eval_hash)
        df.insert(0, "run", run_id)
        sort = [c for c in df.columns if df[c].map(lambda v: isinstance(v, str | int | float | bool)
                                                   or v is None).all()]
        df = df.sort_values(sort, kind="mergesort").reset_index(drop=True) if sort else df
        out.append(provenance.write_parquet(df, folder / f"{name}.parquet"))
    out.append(provenance.write_json(dict(meta), folder / "eval.json"))
    return out


def update_summary(new: pd.DataFrame, runs_dir: Path | None = None) -> Path:
    """Merge into ``runs/eval_summary.parquet``.

    A row is identified by (run, split, eval_hash, method, value_set, target_value_set, metric)
    where those columns exist: re-evaluating replaces exactly its own rows, so sweep cells that
    each evaluate one value set add up instead of overwriting each other's baselines; rows of
    another ``eval_hash`` (other parameters or data) are kept, distinguishable by that column.
    """
    target = (runs_dir or paths.RUNS) / SUMMARY_NAME
    need = {"run", "split", "eval_hash"}
    if not need <= set(new.columns):
        raise EvaluationError(f"summary rows need columns {sorted(need)}")
    ident = ["run", "split", "eval_hash", *[c for c in ("method", "value_set", "target_value_set", "metric")
                                           if c in new.columns]]
    if target.exists():
        old = pd.read_parquet(target)
        if set(ident) <= set(old.columns):
            def key(df: pd.DataFrame) -> pd.Series:
                # pandas 3 keeps missing values through astype(str): name them explicitly
                return df[ident].astype("string").fillna("<NA>").agg("\x1f".join, axis=1)

            old = old[~key(old).isin(set(key(new)))]
        new = pd.concat([old, new], ignore_index=True)
    sort = [c for c in ident if c in new.columns]
    new = new.sort_values(sort, kind="mergesort", na_position="first").reset_index(drop=True)
    return provenance.write_parquet(new, target)


def latest_eval_hash(runs_dir: Path | None = None) -> str:
    """The most recently written evaluation (by its baselines folder), for readers that want
    "the current one" explicitly rather than a mix."""
    folders = sorted((runs_dir or paths.RUNS).glob(f"{BASELINES_RUN}/eval/*/eval.json"),
                     key=lambda p: p.stat().st_mtime)
    if not folders:
        raise EvaluationError("no evaluation found under runs/_baselines/eval/: run notebook 04_evaluate")
    return folders[-1].parent.name


def load_summary(eval_hash: str | None = None, runs_dir: Path | None = None) -> pd.DataFrame:
    """The combined summary for one ``eval_hash``; refuses to return a mix of several."""
    target = (runs_dir or paths.RUNS) / SUMMARY_NAME
    if not target.exists():
        raise EvaluationError(f"{paths.relative(target)} is missing: run notebook 04_evaluate first")
    df = pd.read_parquet(target)
    hashes = sorted(df["eval_hash"].unique())
    if eval_hash is None:
        if len(hashes) > 1:
            raise EvaluationError(f"{paths.relative(target)} holds {len(hashes)} evaluations "
                                  f"({', '.join(hashes)}): pass eval_hash to pick one")
        return df
    if eval_hash not in hashes:
        raise EvaluationError(f"eval_hash {eval_hash!r} not in {paths.relative(target)} (has {hashes})")
    return df[df["eval_hash"] == eval_hash].reset_index(drop=True)


# ----------------------------------------------------------------------------- orchestration

def resolve_value_sets(specs: Sequence[str], value_sets_table: pd.DataFrame) -> list[str]:
    """Value-set ids from the shared ``value_sets`` parameter.

    Entries may be ids (``united-states``) or notebook 02's group specs (``United States``,
    ``France+Britain``), which map to ids as notebook 02 names them; empty = every value set.
    """
    known = sorted(value_sets_table["value_set"].unique())
    if not specs:
        return known
    out = []
    for spec in specs:
        try:
            slug = value_set_id(spec)
        except EmptySlugError:
            slug = ""
        if slug not in known:
            raise EvaluationError(f"parameter value_sets: {spec!r} (id {slug!r}) is not a value set of "
                                  f"value_sets.parquet (known: {', '.join(known)})")
        if slug not in out:
            out.append(slug)
    return out


@dataclass
class Condition:
    """One model (or reference) whose answers are scored: a row label of every result table."""

    run: str
    method: str
    value_set: str | None = None  # the population it was steered to (trained / prompted / oracle)
    seed: int | None = None
    persona: str | None = None

    @property
    def label(self) -> str:
        vs = f" ({style.value_set_label(self.value_set)})" if self.value_set else ""
        sd = f" s{self.seed}" if self.seed is not None and self.method not in BASELINE_METHODS else ""
        return f"{style.method_label(self.method)}{vs}{sd}"

    def columns(self) -> dict[str, Any]:
        return {"run": self.run, "method": self.method, "value_set": self.value_set,
                "seed": self.seed, "condition": self.label}


@dataclass
class Results:
    eval_hash: str
    settings: EvalSettings
    items: pd.DataFrame
    predictions: pd.DataFrame
    item_table: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    steer_matrix: dict[str, pd.DataFrame]
    steer_advantage: pd.DataFrame
    dilemmas: pd.DataFrame
    dilemmas_by_dim: pd.DataFrame
    drift: pd.DataFrame
    oracle: pd.DataFrame
    skipped: pd.DataFrame
    timings: dict[str, float]
    methods: pd.DataFrame = field(default_factory=pd.DataFrame)  # method_summary (1 - JS, base 2)
    gains: pd.DataFrame = field(default_factory=pd.DataFrame)  # gains_table (1 - JS, base 2)
    dilemma_set: DilemmaSet | None = None  # which dilemmas, how many of those requested, signed or not
    dilemma_shifts: pd.DataFrame = field(default_factory=pd.DataFrame)  # per dilemma, each model minus base


def _targets_for(cond: Condition, all_targets: Sequence[str]) -> list[str]:
    # the oracle is defined per population; every other condition is scored against every
    # value set (the steerability matrix needs the off-diagonal)
    return [cond.value_set] if cond.method == "oracle" else list(all_targets)


def run_evaluation(
    *, runs: Sequence[RunInfo], value_sets: Sequence[str], eval_splits: Sequence[str],
    settings: EvalSettings, model_profile: str, model_path: str | None = None,
    batch_size: int = _NB04.eval_batch_size, n_boot: int = _NB04.bootstrap_samples, inputs: Mapping[str, pd.DataFrame] | None = None,
    skipped: pd.DataFrame | None = None, progress: bool = True,
    extra_targets: Sequence[str] = (), restrict_items: Mapping[str, Iterable[str]] | None = None,
) -> Results:
    """Evaluate uniform, oracle, base, prompted-base and every run on the same items.

    ``extra_targets``: value sets every model is also scored against without a prompted or
    oracle baseline of their own (the cross-population control's far populations).
    ``restrict_items``: per split, the only items it may use (:func:`select_items`). Shuffled
    controls in ``value_sets`` get no prompted or oracle baseline: no population answers so."""
    import time

    import torch
    from tqdm.auto import tqdm

    from valuealign import models

    t_all = time.time()
    inputs = inputs or read_inputs()
    targets_known = set(inputs["targets"]["value_set"])
    target_sets = sorted(set(value_sets) | {r.value_set for r in runs if r.value_set in targets_known}
                         | {v for v in extra_targets if v in targets_known})
    items = select_items(inputs, target_sets, eval_splits, settings.max_eval_items, settings.seed,
                         settings.max_options, restrict=restrict_items)
    populations = [vs for vs in value_sets if control_source(vs) is None]  # prompted and oracle
    ehash = settings.key({**input_hashes(), **(dilemma_input_hashes() if settings.n_dilemmas > 0 else {})},
                         target_sets, [f"{sp}:{i}" for sp, i in zip(items["split"], items["item_id"], strict=True)])
    timings: dict[str, float] = {}
    preds: list[pd.DataFrame] = []
    conds: list[Condition] = []

    def add(cond: Condition, df: pd.DataFrame) -> None:
        conds.append(cond)
        preds.append(df.assign(**cond.columns()))

    add(Condition(BASELINES_RUN, "uniform"), uniform_predictions(items))
    oracle_rows = []
    for vs in populations:
        p, info = oracle_predictions(inputs, vs, items)
        add(Condition(BASELINES_RUN, "oracle", vs), p)
        oracle_rows.append(info)

    dilemmas = load_dilemmas(settings.n_dilemmas, settings.seed) if settings.n_dilemmas > 0 else None
    general = read_general_prompts() if settings.drift_new_tokens > 0 else []
    dil_rows, drift_rows = [], []
    pbar = tqdm(total=1 + len(populations) + len(runs), desc="models", disable=not progress)

    tok = models.load_tokenizer(model_profile, model_path or None)
    base = models.load_causal_lm(model_profile, model_path or None, **load_kwargs(settings.quantization))
    scorer = model_scorer(base, tok, batch_size)
    t0 = time.time()
    add(Condition(BASELINES_RUN, "base"), predict_items(items, tok, scorer, settings))
    timings["base_items_s"] = time.time() - t0
    pbar.update()
    base_cond = Condition(BASELINES_RUN, "base")
    if dilemmas is not None:
        dil_rows.append(dilemma_preferences(dilemmas.table, tok, scorer).assign(**base_cond.columns()))
    gen_texts = [chat_text(tok, [{"role": "user", "content": g}]) for g in general]
    answers = greedy_answers(base, tok, gen_texts, settings.drift_new_tokens, batch_size) if general else []
    base_lp = answer_logprobs(base, tok, gen_texts, answers, batch_size) if general else []
    for vs in populations:
        persona = persona_for(vs, inputs["value_sets"])
        cond = Condition(BASELINES_RUN, "prompted", vs, persona=persona)
        add(cond, predict_items(items, tok, scorer, settings, persona=persona).assign(persona=persona))
        pbar.update()
    del base, scorer

    for run in runs:
        t0 = time.time()
        if (run.model_profile, run.model_path) != (model_profile, model_path or None):
            raise EvaluationError(
                f"run {run.run_id}: model_profile {run.model_profile!r}/{run.model_path!r} differs from "
                f"the evaluation's {model_profile!r}/{model_path!r}; evaluate it with its own profile"
            )
        model = models.load_with_adapter(run.model_profile, run.path / "adapter", run.model_path,
                                         **load_kwargs(settings.quantization))
        sc = model_scorer(model, tok, batch_size)
        cond = Condition(run.run_id, run.method, run.value_set, run.seed)
        add(cond, predict_items(items, tok, sc, settings))
        if dilemmas is not None:
            dil_rows.append(dilemma_preferences(dilemmas.table, tok, sc).assign(**cond.columns()))
        if general:
            tuned_lp = answer_logprobs(model, tok, gen_texts, answers, batch_size)
            drift_rows.append(drift_table(base_lp, tuned_lp, answers).assign(**cond.columns()))
        del model, sc
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        timings[f"run:{run.run_id}"] = time.time() - t0
        pbar.update()
    pbar.close()

    predictions = pd.concat(preds, ignore_index=True)
    tables = []
    for cond, p in zip(conds, preds, strict=True):
        t = score_predictions(p, items, inputs["targets"], _targets_for(cond, target_sets))
        tables.append(t.assign(**cond.columns()))
    item_table = pd.concat(tables, ignore_index=True)
    keys = ["run", "method", "value_set", "seed", "condition", "split", "target_value_set"]
    summary = summarise(item_table, keys, n_boot, settings.seed)
    summary.insert(0, "eval_hash", ehash)
    comparisons = compare_to_baselines(item_table, n_boot, settings.seed)
    steer_m, steer_a = {}, []
    for method in sorted(set(item_table["method"]) - {"uniform", "base", "oracle"}):
        sub = item_table[item_table["method"] == method]
        m, a = steerability(sub, n_boot=n_boot, seed=settings.seed,
                            base_table=item_table[item_table["method"] == "base"])
        steer_m[method] = m
        steer_a.append(a.assign(method=method))
    steer_adv = pd.concat(steer_a, ignore_index=True) if steer_a else pd.DataFrame()
    if len(steer_adv):  # one family: every diagonal-advantage test of the table
        steer_adv["p_holm"] = holm_adjust(steer_adv["p_wilcoxon"])
        if "net_p_wilcoxon" in steer_adv.columns:
            steer_adv["net_p_holm"] = holm_adjust(steer_adv["net_p_wilcoxon"])
    methods = method_summary(item_table, "js_alignment", n_boot, settings.seed)
    gains = gains_table(item_table, "js_alignment", n_boot, settings.seed)
    dil = pd.concat(dil_rows, ignore_index=True) if dil_rows else pd.DataFrame()
    dil_dim = dilemmas_by_dimension(dil, n_boot, settings.seed) if len(dil) else pd.DataFrame()
    dil_shift = dilemma_shifts(dil) if len(dil) and (dil["method"] != "base").any() else pd.DataFrame()
    drift = pd.concat(drift_rows, ignore_index=True) if drift_rows else pd.DataFrame()
    timings["total_s"] = time.time() - t_all
    return Results(ehash, settings, items, predictions, item_table, summary, comparisons, steer_m,
                   steer_adv, dil, dil_dim, drift, pd.DataFrame(oracle_rows),
                   skipped if skipped is not None else pd.DataFrame(columns=["run", "reason"]), timings,
                   methods, gains, dilemma_set=dilemmas, dilemma_shifts=dil_shift)


def compare_to_baselines(item_table: pd.DataFrame, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Each steered condition (run or prompted) minus base, uniform and prompted on its own
    value set, paired by item: the per-run "did it help" numbers.

    The steered condition is selected on its full identity (run, method, value set): the
    prompted baseline has one condition per value set under the same run, and without the
    value set "prompted as A" would also average "prompted as B" rows. ``p_holm``: Holm's
    adjustment over every test of the same metric in this table (the family reported together).
    """
    rows = []
    own = item_table[item_table["target_value_set"] == item_table["value_set"]]
    for (run, method, vs, split), g in own.groupby(["run", "method", "value_set", "split"], sort=True):
        if method == "oracle":
            continue
        seed_v = g["seed"].iloc[0] if "seed" in g.columns else None
        for ref in ("base", "uniform", "prompted"):
            if ref == method:
                continue
            b = {"run": BASELINES_RUN, "method": ref, "split": split, "target_value_set": vs}
            if ref == "prompted":
                b["value_set"] = vs
            if select_rows(item_table, b).empty:  # no prompted baseline for a shuffled control
                continue
            for metric in ("js_alignment", "w1_alignment"):
                d = paired_difference(item_table, {"run": run, "method": method, "value_set": vs,
                                                   "split": split, "target_value_set": vs}, b, metric, n_boot, seed)
                rows.append({"run": run, "method": method, "value_set": vs, "seed": seed_v, "split": split,
                             "versus": ref, "metric": metric, **d})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = np.nan
        for _, idx in out.groupby("metric").groups.items():
            out.loc[idx, "p_holm"] = holm_adjust(out.loc[idx, "p_wilcoxon"])
    return out


def own_rows(item_table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each condition on its own population: steered conditions (runs, prompted,
    oracle) against the value set they were steered to; untargeted baselines (uniform, base)
    against every value set. ``value_set`` of the result is the population scored against."""
    steered = item_table["value_set"].notna() & (item_table["value_set"] == item_table["target_value_set"])
    untargeted = item_table["value_set"].isna()
    return item_table[steered | untargeted].assign(value_set=lambda d: d["target_value_set"])


def _replicate_matrix(rows: pd.DataFrame, metric: str, items: Sequence[str]) -> np.ndarray:
    """(runs x items) table of ``metric``: one row per run (training seed), items in ``items`` order."""
    w = rows.pivot_table(index="run", columns="item_id", values=metric, aggfunc="mean", dropna=False)
    return w.reindex(columns=list(items)).to_numpy(dtype=float)


def _strata(rows: pd.DataFrame, items: Sequence[str]) -> np.ndarray:
    s = rows.drop_duplicates("item_id").set_index("item_id")["stratum"]
    return s.reindex(list(items)).to_numpy(dtype=object)


def method_summary(item_table: pd.DataFrame, metric: str = "js_alignment", n_boot: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """Per (split, value set, method): mean over seeds, seed sd and a two-level bootstrap CI.

    Each fine-tuning run is one replicate (seed) of its (method, value set); baselines have
    one replicate. ``mean`` is the mean over seeds of the per-seed item means (all seeds are
    scored on the same items); ``seed_sd`` the standard deviation of the per-seed means
    (NaN with one seed: not estimable, shown as n/a); the CI resamples seeds, then items, or
    strata on cluster splits. Methods are whatever the table holds (no fixed list).
    """
    rows = []
    t = own_rows(item_table)
    for (split, vs, method), g in t.groupby(["split", "value_set", "method"], sort=True):
        items = sorted(g["item_id"].unique())
        m = _replicate_matrix(g, metric, items)
        cl = _strata(g, items) if split in CLUSTER_SPLITS else None
        r = two_level_bootstrap_ci(m, n_boot, seed, clusters=cl)
        per_seed = np.nanmean(m, axis=1) if m.size else np.array([])
        runs = sorted(g["run"].unique())
        rows.append({"split": split, "value_set": vs, "method": method, "metric": metric,
                     "n_seeds": int(len(runs)), "mean": r["mean"],
                     "seed_sd": float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else float("nan"),
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "ci_unit": ("seeds x " if len(runs) > 1 else "") + r["ci_unit"],
                     "n_items": r["n_items"], "n_units": r["n_units"], "runs": ",".join(runs)})
    return pd.DataFrame(rows)


def gains_table(item_table: pd.DataFrame, metric: str = "js_alignment", n_boot: int = 1000, seed: int = 0,
                references: Sequence[str] = GAIN_REFERENCES) -> pd.DataFrame:
    """Paired gain of each method over each reference, per (split, value set).

    Per item and seed: the run's score minus the reference's on the same item and population
    (base: the untargeted base model; prompted: the base prompted as that population). The
    gain is the mean over seeds and items with a two-level bootstrap CI (seeds, then items,
    or strata on cluster splits); the Wilcoxon test runs on the seed-averaged per-item gains
    (per-stratum means on cluster splits). ``p_holm``: Holm's adjustment over every test in
    this table (one metric: the family reported together).
    """
    rows = []
    t = own_rows(item_table)
    for (split, vs, method), g in t.groupby(["split", "value_set", "method"], sort=True):
        if method in ("uniform", "base", "oracle"):
            continue
        for ref in references:
            if ref == method:
                continue
            ref_rows = t[(t["split"] == split) & (t["value_set"] == vs) & (t["method"] == ref)]
            if ref_rows.empty:
                continue
            if ref_rows["run"].nunique() != 1:
                raise EvaluationError(f"reference {ref!r} has several conditions for {vs}/{split}: "
                                      f"{sorted(ref_rows['run'].unique())}")
            ref_score = ref_rows.groupby("item_id")[metric].mean()
            items = sorted(set(g["item_id"]) & set(ref_score.index))
            m = _replicate_matrix(g, metric, items) - ref_score.reindex(items).to_numpy(dtype=float)[None, :]
            cl = _strata(g, items) if split in CLUSTER_SPLITS else None
            r = two_level_bootstrap_ci(m, n_boot, seed, clusters=cl)
            per_item = np.nanmean(m, axis=0) if m.size else np.array([])
            per_seed = np.nanmean(m, axis=1) if m.size else np.array([])
            rows.append({"split": split, "value_set": vs, "method": method, "versus": ref, "metric": metric,
                         "n_seeds": int(m.shape[0]), "gain": r["mean"],
                         "gain_seed_sd": float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else float("nan"),
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "ci_unit": ("seeds x " if m.shape[0] > 1 else "") + r["ci_unit"],
                         "n_items": r["n_items"], "n_units": r["n_units"],
                         "p_wilcoxon": paired_test(per_item, cl)})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm_adjust(out["p_wilcoxon"])
    return out


def method_table(summary: pd.DataFrame, gains: pd.DataFrame,
                 references: Sequence[str] = GAIN_REFERENCES) -> pd.DataFrame:
    """One row per (split, value set, method): mean, seed sd, CI, and per reference the gain,
    its CI and raw and Holm-adjusted p (columns ``gain_<ref>``, ``gain_<ref>_ci_low``, ...)."""
    keys = ["split", "value_set", "method"]
    out = summary[[*keys, "n_seeds", "mean", "seed_sd", "ci_low", "ci_high", "ci_unit", "n_items"]].copy()
    for ref in references:
        g = gains[gains["versus"] == ref] if len(gains) else pd.DataFrame(columns=[*keys, "versus"])
        g = g.reindex(columns=[*keys, "gain", "ci_low", "ci_high", "p_wilcoxon", "p_holm"]).rename(columns={
            "gain": f"gain_{ref}", "ci_low": f"gain_{ref}_ci_low", "ci_high": f"gain_{ref}_ci_high",
            "p_wilcoxon": f"p_{ref}", "p_holm": f"p_holm_{ref}"})
        out = out.merge(g, on=keys, how="left")
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


def best_on_validation(summary: pd.DataFrame, report_split: str = "test",
                       choose_split: str = "validation") -> dict[str, Any] | None:
    """The fine-tuned (method, value set) with the highest mean alignment on ``choose_split``,
    and its numbers on ``report_split``.

    Why: a "best run" chosen on the test items and then reported on them is optimistically
    biased (the maximum of noisy estimates); choosing on validation items keeps the test
    number an honest estimate. None when no fine-tuned method was evaluated on both splits.
    ``summary`` is :func:`method_summary`'s table.
    """
    tuned = summary[~summary["method"].isin(BASELINE_METHODS)
                    & summary["value_set"].map(lambda v: control_source(v) is None)]  # never a control
    if choose_split not in set(summary["split"]):
        raise EvaluationError(f"choosing the best run needs the {choose_split!r} split in eval_splits "
                              f"(evaluated: {sorted(set(summary['split']))})")
    val = tuned[(tuned["split"] == choose_split) & tuned["mean"].notna()]
    rep = tuned[tuned["split"] == report_split].set_index(["value_set", "method"])
    val = val[[k in rep.index for k in zip(val["value_set"], val["method"], strict=True)]]
    if val.empty:
        return None
    best = val.sort_values(["mean", "method", "value_set"], ascending=[False, True, True]).iloc[0]
    r = rep.loc[(best["value_set"], best["method"])]
    return {"method": best["method"], "value_set": best["value_set"], "chosen_on": choose_split,
            "validation_mean": float(best["mean"]), "reported_on": report_split,
            "mean": float(r["mean"]), "seed_sd": float(r["seed_sd"]), "n_seeds": int(r["n_seeds"])}


def format_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """"0.512 +- 0.010"; "0.512 +- n/a" when the sd is not estimable (one seed)."""
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± " + (f"{sd:.{digits}f}" if np.isfinite(sd) else "n/a")


def format_ci(low: float, high: float, digits: int = 3) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) and np.isfinite(high) else "n/a"


def entropy_columns(item_table: pd.DataFrame, predictions: pd.DataFrame,
                    targets: pd.DataFrame) -> pd.DataFrame:
    """Model and population entropy (bits) per item row, for the calibration figure."""
    pe = {(r.run, r.method, r.value_set, r.item_id): entropy_bits(r.probs)
          for r in predictions.itertuples()}
    te = {(r.value_set, r.item_id): entropy_bits(r.shares) for r in targets.itertuples()}
    return item_table.assign(
        entropy_model=[pe.get((r.run, r.method, r.value_set, r.item_id), np.nan) for r in item_table.itertuples()],
        entropy_population=[te.get((r.target_value_set, r.item_id), np.nan) for r in item_table.itertuples()],
    )


def save_results(res: Results, meta: Mapping[str, Any], runs_dir: Path | None = None) -> list[Path]:
    """Per-run folders (``runs/<run>/eval/<eval_hash>/``; baselines under ``runs/_baselines``)
    and the combined ``runs/eval_summary.parquet``."""
    out: list[Path] = []
    # which runs this execution scored: the combined summary also keeps rows of runs scored
    # earlier with the same settings and items (valuealign.thesis.ReportedEvaluation)
    meta = {**meta, SCORED_RUNS_KEY: sorted(str(r) for r in set(res.predictions["run"])
                                            if not str(r).startswith("_"))}

    def strip(df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=[c for c in ("run", "eval_hash") if c in df.columns])

    for run in sorted(set(res.predictions["run"])):
        tables = {
            "predictions": res.predictions[res.predictions["run"] == run],
            "item_metrics": res.item_table[res.item_table["run"] == run],
            "summary": res.summary[res.summary["run"] == run],
        }
        for name, df in (("dilemmas", res.dilemmas), ("dilemma_shifts", res.dilemma_shifts), ("drift", res.drift)):
            if len(df) and "run" in df.columns and (df["run"] == run).any():
                tables[name] = df[df["run"] == run]
        if run == BASELINES_RUN:
            tables["items"] = res.items[["item_id", "split", "stratum"]]
            if len(res.oracle):
                tables["oracle"] = res.oracle
            for name, df in (("methods", res.methods), ("gains", res.gains)):
                if len(df):
                    tables[name] = df
        if len(res.comparisons) and (res.comparisons["run"] == run).any():
            tables["comparisons"] = res.comparisons[res.comparisons["run"] == run]
        out += write_eval(run, res.eval_hash, {k: strip(v) for k, v in tables.items()},
                          {**meta, "eval_hash": res.eval_hash, "run": run}, runs_dir)
    summary = res.summary.copy()
    summary["eval_params"] = json.dumps(asdict(res.settings), sort_keys=True)
    out.append(update_summary(summary, runs_dir))
    return out


# ----------------------------------------------------------------------------- figures

def headline(summary: pd.DataFrame, metric: str = "js_alignment") -> pd.DataFrame:
    """One row per (condition, split): alignment on its own value set (baselines: mean over
    the value sets), the table behind the main figure."""
    s = summary[summary["metric"] == metric]
    own = s[(s["value_set"] == s["target_value_set"]) | s["method"].isin(["uniform", "base"])]
    return own.sort_values(["split", "target_value_set", "method", "condition"]).reset_index(drop=True)


def plot_alignment(methods: pd.DataFrame, metric: str = "js_alignment") -> Any:
    """Alignment per split, x = value set, one marker per method: the mean over seeds with the
    two-level bootstrap 95% CI of :func:`method_summary` (seeds, then items or strata), not
    an average of per-seed intervals."""
    plt = style.pyplot()

    need = {"split", "value_set", "method", "mean", "ci_low", "ci_high"}
    if not need <= set(methods.columns):
        raise EvaluationError(f"plot_alignment needs method_summary's columns {sorted(need)}, "
                              f"got {sorted(methods.columns)}")
    h = methods[methods["metric"] == metric] if "metric" in methods.columns else methods
    rank = {"validation": 0, "test": 1, "test_cluster": 2}
    splits = sorted(h["split"].unique(), key=lambda s: (rank.get(s, len(rank)), s))
    fig, axes = plt.subplots(1, len(splits), figsize=style.figsize(1.0, 0.5), sharey=True,
                             squeeze=False)
    order = style.sort_methods(h["method"])
    for ax, split in zip(axes[0], splits, strict=True):
        d = h[h["split"] == split]
        vsets = sorted(d["value_set"].unique())
        for k, m in enumerate(order):
            dm = d[d["method"] == m].set_index("value_set").reindex(vsets)
            x = np.arange(len(vsets)) + (k - (len(order) - 1) / 2) * 0.8 / max(len(order), 1)
            err = np.vstack([dm["mean"] - dm["ci_low"], dm["ci_high"] - dm["mean"]]).clip(min=0)
            ax.errorbar(x, dm["mean"], yerr=np.nan_to_num(err), fmt="o", ms=3, capsize=2,
                        color=style.method_color(m), label=style.method_label(m))
        ax.set_xticks(range(len(vsets)), [style.value_set_label(v) for v in vsets])
        ax.set_title(f"split: {split}")
    axes[0][0].set_ylabel(METRIC_LABELS.get(metric, metric))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 7), frameon=False)
    return fig


def plot_steerability(matrix: pd.DataFrame, title: str) -> Any:
    plt = style.pyplot()

    fig, ax = plt.subplots(figsize=style.figsize(0.5, 0.9))
    im = ax.imshow(matrix.to_numpy(dtype=float), cmap=style.SEQUENTIAL_CMAP)
    ax.set_xticks(range(matrix.shape[1]), [style.value_set_label(c) for c in matrix.columns], rotation=30)
    ax.set_yticks(range(matrix.shape[0]), [style.value_set_label(c) for c in matrix.index])
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            v = matrix.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w", fontsize=7)
    ax.set_xlabel("evaluated against")
    ax.set_ylabel("steered to")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="1 - JS distance")
    return fig


def plot_calibration(table: pd.DataFrame) -> Any:
    """Model vs population entropy per item (own value set): below the diagonal = over-confident."""
    plt = style.pyplot()

    t = table[(table["value_set"] == table["target_value_set"]) | table["method"].isin(["base", "uniform"])]
    fig, ax = plt.subplots(figsize=style.figsize(0.5, 0.9))
    for m, g in t.groupby("method", sort=True):
        ax.scatter(g["entropy_population"], g["entropy_model"], s=8, alpha=0.7,
                   color=style.METHOD_COLORS.get(m), label=style.method_label(m))
    lim = float(np.nanmax([t["entropy_population"].max(), t["entropy_model"].max(), 1.0]))
    ax.plot([0, lim], [0, lim], color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("population entropy (bits)")
    ax.set_ylabel("model entropy (bits)")
    ax.legend(frameon=False, fontsize=6)
    return fig


def plot_examples(items: pd.DataFrame, predictions: pd.DataFrame, targets: pd.DataFrame,
                  item_ids: Sequence[str], value_set: str, conditions: Sequence[tuple[str, str]]) -> Any:
    """Population vs models on a few items: grouped bars per option."""
    plt = style.pyplot()

    fig, axes = plt.subplots(len(item_ids), 1, figsize=style.figsize(1.0, 0.28 * len(item_ids)),
                             squeeze=False)
    it = items.set_index("item_id")
    for ax, iid in zip(axes[:, 0], item_ids, strict=True):
        opts = list(it.loc[iid, "options"])
        series = [("Population", targets[(targets["value_set"] == value_set) & (targets["item_id"] == iid)]
                   ["shares"].iloc[0], "#555555")]
        for run, method in conditions:
            p = predictions[(predictions["run"] == run) & (predictions["method"] == method)
                            & (predictions["item_id"] == iid)]
            if len(p):
                series.append((p["condition"].iloc[0], p["probs"].iloc[0], style.METHOD_COLORS.get(method)))
        w = 0.8 / len(series)
        for k, (name, v, c) in enumerate(series):
            ax.bar(np.arange(len(opts)) + (k - (len(series) - 1) / 2) * w, v, w, label=name, color=c)
        ax.set_xticks(range(len(opts)), [o[:22] for o in opts], fontsize=6)
        q = str(it.loc[iid, "question"])
        ax.set_title(q if len(q) < 110 else q[:107] + "...", fontsize=7, loc="left")
        ax.set_ylim(0, 1)
    axes[0, 0].legend(frameon=False, fontsize=6, ncol=len(series))
    return fig


def plot_strata(item_table: pd.DataFrame, metric: str = "js_alignment") -> Any:
    """Mean alignment per stratum (taxonomy cluster / section) and method, own value set."""
    plt = style.pyplot()

    t = item_table[(item_table["value_set"] == item_table["target_value_set"])
                   | item_table["method"].isin(["base", "uniform"])]
    g = t.groupby(["stratum", "method"])[metric].mean().unstack("method")
    fig, ax = plt.subplots(figsize=style.figsize(1.0, 0.4))
    for m in g.columns:
        ax.plot(range(len(g)), g[m], "o", ms=4, color=style.METHOD_COLORS.get(m),
                label=style.method_label(m))
    ax.set_xticks(range(len(g)), [str(s)[:18] for s in g.index], rotation=30, ha="right", fontsize=6)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.legend(frameon=False, fontsize=6, ncol=4)
    return fig


# ----------------------------------------------------------------------------- controls
# Can the pipeline detect alignment at all, and does it refuse to see alignment where there is
# none? A positive control (a run scored on the items it was trained on must beat the base
# model) and two negative controls (a run trained on shuffled targets; a run scored against a
# very different population) with verdicts computed from the item table, so notebook 04 states
# them from the numbers and tests can plant inputs where each must pass or fail.

CONTROL_POSITIVE = "positive: trained items"
CONTROL_SHUFFLED = "negative: shuffled targets"
CONTROL_OTHER_POPULATION = "negative: other population"
POSITIVE_SPLIT = "train"  # scored only as the positive control, never to choose a "best" run
CONTROL_RULES = {
    CONTROL_POSITIVE: "gain over base on the run's own train items, scored against its population: "
                      "passes if the 95% CI excludes 0 (lower bound > 0)",
    CONTROL_SHUFFLED: "gain over base of the run trained on shuffled targets, scored against the real "
                      "population on held-out items: passes unless the 95% CI lies above 0",
    CONTROL_OTHER_POPULATION: "gain over base against the farthest other population minus the gain "
                              "against the run's own, paired by held-out item: passes unless the 95% CI "
                              "lies above 0",
}
VERDICT_COLUMNS = ["control", "method", "value_set", "scored_against", "split", "n_seeds", "estimate",
                   "ci_low", "ci_high", "ci_unit", "n_items", "passes", "rule"]


def trained_item_ids(runs: Sequence[RunInfo], data_root: Path | None = None) -> set[str]:
    """Item ids in the train split of the datasets the runs were trained on.

    Why: the positive control scores a run on items it saw; notebook 02 caps the train items
    written as datasets (``dataset_max_items``), so the train split of ``splits.parquet`` holds
    many items no run saw. Read from the Hugging Face datasets on disk (the ``item_id`` column)."""
    from datasets import load_from_disk

    root = Path(data_root or paths.ALIGNMENT)
    out: set[str] = set()
    for r in runs:
        folder = paths.safe_child(paths.safe_child(root, r.value_set, "value_set"), r.method, "method")
        if not folder.exists():
            raise EvaluationError(f"run {r.run_id}: its training data {paths.relative(folder)} is missing "
                                  "(positive control on train items); run notebook 02 again")
        dd = load_from_disk(str(folder))
        if "train" not in dd or "item_id" not in dd["train"].column_names:
            raise EvaluationError(f"{paths.relative(folder)}: no train split with an item_id column")
        out |= {str(i) for i in dd["train"]["item_id"]}
    return out


def farthest_populations(jsd: pd.DataFrame, sources: Iterable[str],
                         candidates: Iterable[str] | None = None) -> dict[str, str]:
    """Per value set in ``sources``, the other real population farthest from it (mean JS
    distance of ``value_set_jsd.parquet``), for the cross-population negative control.

    Controls (``*-shuffled``) are never a far population; ``candidates`` limits the choice."""
    need = {"value_set_a", "value_set_b", "mean_js_distance"}
    if not need <= set(jsd.columns):
        raise EvaluationError(f"value_set_jsd.parquet: missing column(s) {sorted(need - set(jsd.columns))}")
    allowed = None if candidates is None else set(candidates)
    out = {}
    for a in sources:
        if control_source(a) is not None:
            continue
        d = jsd[(jsd["value_set_a"] == a) & (jsd["value_set_b"] != a) & jsd["mean_js_distance"].notna()]
        d = d[d["value_set_b"].map(lambda v: control_source(v) is None)]
        if allowed is not None:
            d = d[d["value_set_b"].isin(allowed)]
        if len(d):
            out[a] = str(d.sort_values(["mean_js_distance", "value_set_b"], ascending=[False, True])
                          .iloc[0]["value_set_b"])
    return out


def gain_matrix(item_table: pd.DataFrame, method: str, trained_on: str, target: str, split: str,
                 metric: str) -> pd.DataFrame:
    """(runs x items) gains over the base model: the runs of ``method`` trained on ``trained_on``,
    scored against ``target`` on ``split``, minus the base model against ``target`` per item."""
    t = item_table
    runs = t[(t["method"] == method) & (t["value_set"] == trained_on) & (t["target_value_set"] == target)
             & (t["split"] == split)]
    base = t[(t["method"] == "base") & (t["target_value_set"] == target) & (t["split"] == split)]
    if runs.empty or base.empty:
        return pd.DataFrame()
    w = runs.pivot_table(index="run", columns="item_id", values=metric, aggfunc="mean")
    b = base.groupby("item_id")[metric].mean()
    items = sorted(set(w.columns) & set(b.index))
    return w[items] - b.reindex(items).to_numpy(dtype=float)[None, :]


def _verdict(control: str, method: str, value_set: str, target: str, split: str, gains: pd.DataFrame,
             item_table: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    items = list(gains.columns)
    cl = None
    if split in CLUSTER_SPLITS:
        cl = _strata(item_table[item_table["split"] == split], items)
    r = two_level_bootstrap_ci(gains.to_numpy(dtype=float), n_boot, seed, clusters=cl)
    if control == CONTROL_POSITIVE:
        passes = bool(np.isfinite(r["ci_low"]) and r["ci_low"] > 0)
    else:
        passes = not bool(np.isfinite(r["ci_low"]) and r["ci_low"] > 0)
    if not np.isfinite(r["ci_low"]):
        passes = None  # too few items or strata for an interval: no verdict
    return {"control": control, "method": method, "value_set": value_set, "scored_against": target,
            "split": split, "n_seeds": int(gains.shape[0]), "estimate": r["mean"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "ci_unit": ("seeds x " if gains.shape[0] > 1 else "") + r["ci_unit"],
            "n_items": r["n_items"], "passes": passes, "rule": CONTROL_RULES[control]}


def control_verdicts(item_table: pd.DataFrame, far: Mapping[str, str], held_out_split: str = "test",
                     metric: str = "js_alignment", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (control, method, value set): estimate, 95% CI and whether the control passes.

    * positive (:data:`CONTROL_POSITIVE`): each run on a real population, on the ``train``
      split (the items it was trained on): its gain over the base model must have a CI above 0;
    * shuffled (:data:`CONTROL_SHUFFLED`): each run on ``<A>-shuffled``, scored against ``A`` on
      ``held_out_split``: its gain over the base model must not have a CI above 0;
    * other population (:data:`CONTROL_OTHER_POPULATION`): each run on ``A``, its gain against
      ``far[A]`` minus its gain against ``A`` on the same held-out items must not have a CI above 0.

    Seeds of a (method, value set) are replicates of a two-level bootstrap (seeds, then items;
    strata on held-out-cluster splits). ``passes`` is None where no interval can be formed
    (fewer than two items); a control whose split or population was not evaluated has no row.
    """
    rows: list[dict[str, Any]] = []
    t = item_table[item_table["value_set"].notna() & ~item_table["method"].isin(BASELINE_METHODS)]
    for (method, vs), _ in t.groupby(["method", "value_set"], sort=True):
        source = control_source(vs)
        if source is None:
            g = gain_matrix(item_table, method, vs, vs, POSITIVE_SPLIT, metric)
            if g.shape[1]:
                rows.append(_verdict(CONTROL_POSITIVE, method, vs, vs, POSITIVE_SPLIT, g, item_table, n_boot, seed))
            if vs in far:
                own = gain_matrix(item_table, method, vs, vs, held_out_split, metric)
                other = gain_matrix(item_table, method, vs, far[vs], held_out_split, metric)
                items = sorted(set(own.columns) & set(other.columns))
                if items:
                    d = other[items] - own[items]
                    rows.append(_verdict(CONTROL_OTHER_POPULATION, method, vs, far[vs], held_out_split, d,
                                         item_table, n_boot, seed))
        else:
            g = gain_matrix(item_table, method, vs, source, held_out_split, metric)
            if g.shape[1]:
                rows.append(_verdict(CONTROL_SHUFFLED, method, vs, source, held_out_split, g, item_table,
                                     n_boot, seed))
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def controls_markdown(verdicts: pd.DataFrame, evaluated_splits: Sequence[str]) -> str:
    """The controls in a few lines for the top of notebook 04: each verdict with its numbers,
    and which control could not be judged and why."""
    def fmt(v: pd.Series) -> str:
        p = v["passes"]
        word = ("no verdict (too few items)" if p is None or (isinstance(p, float) and np.isnan(p))
                else "**passes**" if p else "**FAILS**")
        return (f"{v['method']} on {v['value_set']} vs {v['scored_against']}: {v['estimate']:+.3f} "
                f"{format_ci(v['ci_low'], v['ci_high'])} ({v['n_items']} items, {v['n_seeds']} seed(s)) {word}")

    lines = []
    for control, rule in CONTROL_RULES.items():
        v = verdicts[verdicts["control"] == control] if len(verdicts) else verdicts
        if len(v) == 0:
            why = {CONTROL_POSITIVE: f"add `{POSITIVE_SPLIT}` to `eval_splits` and evaluate a run"
                   if POSITIVE_SPLIT not in evaluated_splits else "no run on a real population",
                   CONTROL_SHUFFLED: "no run on a shuffled control (`<value set>-shuffled`, notebooks 02-03)",
                   CONTROL_OTHER_POPULATION: "no run with a far population scored on the held-out split"}[control]
            lines.append(f"- **{control}**: not evaluated ({why}).")
            continue
        n_pass = int((v["passes"] == True).sum())  # noqa: E712 (None is no verdict)
        lines.append(f"- **{control}** ({rule}): {n_pass} of {len(v)} pass. "
                     + "; ".join(fmt(r) for _, r in v.iterrows()) + ".")
    return "\n".join(lines)


def _verdict_names(v: pd.DataFrame) -> str:
    return ", ".join(f"{m} ({s} {e:+.3f})" for m, s, e in
                     zip(v["method"], v["value_set"], v["estimate"], strict=True)) or "none"


def controls_headline(verdicts: pd.DataFrame) -> str:
    """One line per control for the very top of notebook 04: which (method, value set) pass.

    Why a separate, shorter text than :func:`controls_markdown`: a reader (the supervisor)
    should see before any other result whether the evaluation can detect an effect at all
    (positive control) and only where there is one (negative controls); the numbers follow
    in the notebook's Controls section.
    """
    if len(verdicts) == 0:
        return ("**Controls:** none could be judged (no run on a real population with the `train` split, "
                "no shuffled-target run, no far population): nothing below shows that this evaluation "
                "can detect an effect.")
    lines = ["**Controls** (rules and numbers in the section *Controls* below):"]
    for control in CONTROL_RULES:
        v = verdicts[verdicts["control"] == control]
        if len(v) == 0:
            lines.append(f"- {control}: not evaluated.")
            continue
        passed = v["passes"].map(lambda p: p is True or p is np.True_)
        failed = v["passes"].map(lambda p: p is False or p is np.False_)
        lines.append(f"- {control}: **passes** for {_verdict_names(v[passed])}; **fails** for "
                     f"{_verdict_names(v[failed])}"
                     + (f"; no verdict for {_verdict_names(v[~passed & ~failed])}" if (~passed & ~failed).any()
                        else "") + ".")
    return "\n".join(lines)

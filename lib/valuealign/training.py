"""Fine-tuning with LoRA / QLoRA through trl: SFT, DPO, KTO and dist (notebook 03).

One code path for the bundled 135M model on a laptop CPU and a 7-13B model on one 80 GB
GPU; only the parameters differ. Each run (one model profile x method x value set x seed x
hyperparameters) lives in ``runs/<run_id>/``:

- ``adapter/``     peft ``save_pretrained`` (safetensors) + a model card ``README.md``
- ``train_log.csv`` one row per logged optimizer step (loss; rewards/margins/KL for DPO/KTO)
- ``manifest.json`` ``provenance.Manifest`` of the run
- ``checkpoints/`` Trainer checkpoints (adapter + optimizer + scheduler + RNG state)
- ``DONE``         written last, only once the adapter is on disk; a run folder without it is
  unfinished, and one with it but without its adapter is ``broken`` (not done: completed again)

The run folder is locked (``valuealign.locks``) while a process trains it, so two notebooks or
sweeps never write one run at once; the second refuses naming the holder, or waits. A run killed
after its last checkpoint (while saving the adapter, writing examples, evaluating) resumes from
that checkpoint without training again when it was saved at the planned step count, so the
run ends at exactly the planned number of optimizer steps.

Why the run id is a hash of the parameters *and of the training data*: a grid of runs can be
re-launched blindly; a finished run is found and skipped, an interrupted one (killed job, out of
memory, pre-empted cluster node) resumes from its last checkpoint with ``resume_from_checkpoint``.
The data fingerprint (the run's dataset folder and, for survey data, the item split) is part of
the id, so after notebook 01 or 02 re-runs (new splits) an old adapter is never taken for a
finished run, and notebook 04 refuses a run whose recorded fingerprint no longer matches
(:func:`check_run_data`): its "test" items may have been its training items.

Why a fourth method, ``dist``: SFT learns from a few sampled answers per item, and DPO and
KTO (as built by default) push towards the most common answer; the evaluation scores the whole
answer distribution. ``dist`` trains on the distribution itself: the cross-entropy between the
population's shares and the model's next-token distribution over the option letters,
renormalised over the item's letters (soft labels, as in SubPOP, Suh et al. 2025,
arXiv:2502.16761). ``DistTrainer`` (:func:`dist_trainer_class`) is trl's ``SFTTrainer`` with its own ``compute_loss``,
so LoRA, quantisation, optimiser, checkpoints and logging are SFT's; it reads the letter
probabilities at the position and with the tokens that the evaluation scores
(``valuealign.inference.chat_text`` and ``label_token_ids``).

Why the reference model is the base with the adapter switched off: DPO and KTO need a frozen
reference policy; with peft, trl uses the same weights with the LoRA layers disabled, so a
7-13B model is held in memory once (a second 4-bit copy is a known cause of out-of-memory).

Why one module of about 1500 lines: a run's id, its resumption, its data fingerprint, the
trainer it builds and the record it leaves (manifest, model card, ``DONE``) must agree with
each other exactly (a finished run is found again by its id); they share ``TrainParams`` and
the run folder layout. What several stages share is elsewhere: forward passes in
``valuealign.inference``, the row schema and KTO weights in ``valuealign.rows``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import re
import resource
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from valuealign import models, paths, provenance, schemas, style
from valuealign.inference import chat_text, completion_logprob, greedy_replies, label_token_ids
from valuealign.rows import METHODS, TRAINER_COLUMNS, KtoBalanceError, kto_class_weights

QUANTIZATIONS: tuple[str, ...] = ("auto", "4bit", "none")
DATA_SOURCES: tuple[str, ...] = ("survey", "consultation")
OPTIMIZERS: tuple[str, ...] = ("auto", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_torch")
SCHEDULERS: tuple[str, ...] = ("constant", "constant_with_warmup", "cosine", "linear")

SHARE_TOLERANCE = 1e-6  # |sum of a dist row's target shares - 1| allowed
KTO_BETA = 0.1  # trl's default and the KTO paper's; recorded in each KTO run's parameters
STAGE = "03_finetune"
DONE = "DONE"


class TrainingError(ValueError):
    """A training request is invalid (unknown method, profile, missing data); the message says which."""


class DatasetFormatError(TrainingError):
    """An alignment dataset lacks the columns its method needs; the message names them."""


class StaleRunError(TrainingError):
    """A finished run was trained on data other than the current ones (or on unknown data)."""


class TrainingOOMError(RuntimeError):
    """CUDA ran out of memory; the message lists the knobs to turn. The run folder stays resumable."""


# ---------------------------------------------------------------- validation


def check_method(method: str) -> str:
    if method not in METHODS:
        raise TrainingError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    return method


def check_profile(profile: str) -> str:
    if profile not in models.PROFILES:
        raise TrainingError(f"unknown model profile {profile!r}; valid: {', '.join(models.PROFILES)}")
    return profile


def training_device() -> str:
    return "cuda" if models.cuda_available() else "cpu"


def resolve_quantization(requested: str, strict: bool = False, cuda: bool | None = None,
                         cpu_rehearsal: bool = False) -> str:
    """``auto`` -> ``4bit`` on CUDA, ``none`` on CPU; ``4bit`` without CUDA warns and falls back.

    Why fall back rather than run 4-bit on CPU: bitsandbytes does run NF4 on CPU, but only
    with float32 compute, and it visibly hurts a 135M model (measured on the bundled model); QLoRA exists to
    fit 7-13B models on one GPU. With ``strict`` the fallback is an error instead.
    ``cpu_rehearsal`` (``make rehearse``): keep 4-bit on CPU, so that a GPU profile's QLoRA code
    path (bitsandbytes NF4, double quantisation, k-bit preparation) runs before it reaches a GPU.
    """
    if requested not in QUANTIZATIONS:
        raise TrainingError(f"unknown quantization {requested!r}; valid: {', '.join(QUANTIZATIONS)}")
    cuda = models.cuda_available() if cuda is None else cuda
    if requested == "auto":
        return "4bit" if cuda else "none"
    if requested == "4bit" and not cuda and cpu_rehearsal:
        return "4bit"
    if requested == "4bit" and not cuda:
        msg = ("quantization='4bit' needs a CUDA GPU and none is available: "
               "training the unquantised model (quantization='none') on CPU instead")
        if strict:
            raise TrainingError(msg.split(":")[0] + " (strict=True, so this is an error; "
                                "set quantization='none' or 'auto' to train on CPU)")
        warnings.warn(msg, UserWarning, stacklevel=2)
        return "none"
    return requested


def check_columns(dataset: Any, method: str, where: str = "dataset") -> None:
    """Every split must have the method's columns; the error names the missing ones."""
    check_method(method)
    splits = dataset.items() if hasattr(dataset, "keys") else [("train", dataset)]
    for split, ds in splits:
        missing = [c for c in TRAINER_COLUMNS[method] if c not in ds.column_names]
        if missing:
            raise DatasetFormatError(
                f"{where} (split {split!r}) lacks the column(s) {', '.join(missing)} that {method} "
                f"needs (it needs {', '.join(TRAINER_COLUMNS[method])}; it has "
                f"{', '.join(ds.column_names)})"
            )
        if method == "kto" and len(ds) and not isinstance(ds[0]["label"], bool):
            raise DatasetFormatError(
                f"{where} (split {split!r}): column 'label' must be boolean (desirable = True), "
                f"got {type(ds[0]['label']).__name__}"
            )
        if method == "dist":
            check_dist_targets(ds, f"{where} (split {split!r})")


def check_dist_targets(ds: Any, where: str) -> None:
    """Every dist row needs one target share per option letter, >= 0, summing to 1."""
    for i, (letters, shares) in enumerate(zip(ds["option_letters"], ds["target_shares"], strict=True)):
        if len(letters) < 2 or len(letters) != len(shares):
            raise DatasetFormatError(f"{where}, row {i}: column 'target_shares' has {len(shares)} value(s) for "
                                     f"{len(letters)} option letter(s) in 'option_letters' (need one per "
                                     "letter, at least 2)")
        if len(set(letters)) != len(letters):
            raise DatasetFormatError(f"{where}, row {i}: column 'option_letters' repeats a letter: {letters}")
        if any(not math.isfinite(x) or x < 0 for x in shares) or abs(sum(shares) - 1) > SHARE_TOLERANCE:
            raise DatasetFormatError(f"{where}, row {i}: column 'target_shares' must be >= 0 and sum to 1, "
                                     f"got {list(shares)}")


# ---------------------------------------------------------------- parameters and run ids

_NB03 = schemas.Finetune  # notebook 03's parameters: names, defaults, ranges

# TrainParams field <- notebook 03's parameter, where the names differ ("{method}": the run's
# method). The field names are hashed into run ids, so they stay as they are.
NOTEBOOK_NAMES: dict[str, str] = {
    "learning_rate": "{method}_learning_rate",
    "lr_scheduler": "train_lr_scheduler",
    "warmup_ratio": "train_warmup_ratio",
    "max_grad_norm": "train_max_grad_norm",
    "max_rows": "train_max_rows",
    "beta": "dpo_beta",
    "optim": "train_optim",
    "gradient_checkpointing": "train_gradient_checkpointing",
    "save_steps": "train_save_steps",
}


def resolve_optimizer(requested: str, strict: bool = False, cuda: bool | None = None,
                      cpu_rehearsal: bool = False) -> str:
    """``auto`` -> ``paged_adamw_8bit`` on CUDA, ``adamw_torch`` on CPU; a paged optimiser
    without CUDA warns and falls back to ``adamw_torch`` (an error with ``strict``), except in a
    CPU rehearsal, which runs bitsandbytes' CPU optimiser."""
    cuda = models.cuda_available() if cuda is None else cuda
    if requested == "auto":
        return "paged_adamw_8bit" if cuda else "adamw_torch"
    if requested.startswith("paged_") and not cuda and not cpu_rehearsal:
        if strict:
            raise TrainingError(f"train_optim={requested!r} needs CUDA (strict=True)")
        warnings.warn(f"train_optim={requested!r} needs CUDA: using adamw_torch on CPU", UserWarning, stacklevel=2)
        return "adamw_torch"
    return requested


def resolve_gradient_checkpointing(requested: str, cuda: bool | None = None) -> bool:
    """``auto`` -> on with CUDA (memory is what it saves), off on CPU; else ``on``/``off``."""
    cuda = models.cuda_available() if cuda is None else cuda
    return cuda if requested == "auto" else requested == "on"


def notebook03_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook 03's parameters in effect: ``params`` over the schema's defaults (a caller that
    gives some knobs, a test or a grid cell, gets the notebook's value for the others)."""
    return {**schemas.defaults(_NB03), **params}


@dataclass(frozen=True)
class TrainParams:
    """Everything that determines one training run (and so its run id).

    Knobs that do not change the trained adapter (``save_steps``) are recorded but not hashed.
    Method-specific knobs are neutral for other methods, so that changing ``dpo_beta`` does not
    rename the SFT runs. Defaults are notebook 03's (:class:`valuealign.schemas.Finetune`;
    ``auto`` resolved as on a CPU); the field names are hashed into run ids, so a field keeps its
    name where the notebook's differs (:data:`NOTEBOOK_NAMES`).
    """

    model_profile: str
    method: str
    value_set: str
    seed: int = _NB03.seed
    model_path: str = _NB03.model_path
    data_source: str = _NB03.data_source
    quantization: str = resolve_quantization(_NB03.quantization, cuda=False)  # resolved: 4bit | none
    lora_r: int = _NB03.lora_r
    lora_alpha: int = _NB03.lora_alpha
    lora_dropout: float = _NB03.lora_dropout
    lora_target: str = _NB03.lora_target
    learning_rate: float = _NB03.sft_learning_rate  # params_for_run: the method's <method>_learning_rate
    lr_scheduler: str = _NB03.train_lr_scheduler
    warmup_ratio: float = _NB03.train_warmup_ratio
    max_grad_norm: float = _NB03.train_max_grad_norm
    max_steps: int = _NB03.max_steps
    epochs: float = _NB03.epochs
    train_batch_size: int = _NB03.train_batch_size
    grad_accum: int = _NB03.grad_accum
    max_length: int = _NB03.max_length
    max_rows: int = _NB03.train_max_rows
    beta: float = 0.0  # DPO/KTO temperature (dpo_beta, KTO_BETA); 0, no temperature, for SFT and dist
    kto_desirable_weight: float = _NB03.kto_desirable_weight  # 0 = balanced from the data
    kto_undesirable_weight: float = _NB03.kto_undesirable_weight
    optim: str = resolve_optimizer(_NB03.train_optim, cuda=False)  # resolved
    gradient_checkpointing: bool = resolve_gradient_checkpointing(_NB03.train_gradient_checkpointing, cuda=False)
    save_steps: int = _NB03.train_save_steps
    data_fingerprint: str = ""  # DataFingerprint.combined of the training data ("" = none on disk)
    dpo_precompute_ref: bool = _NB03.dpo_precompute_ref  # DPO: reference log-probs computed once (trl)
    init_from: str = ""  # parent run id: start from its adapter (chained training; "" = a fresh adapter)

    NOT_HASHED = ("save_steps",)
    # options added after runs existed: hashed only when switched on, so earlier run ids stay valid
    HASHED_IF_SET = {"dpo_precompute_ref": False, "init_from": ""}

    def __post_init__(self) -> None:
        check_profile(self.model_profile)
        check_method(self.method)
        if self.data_source not in DATA_SOURCES:
            raise TrainingError(f"unknown data_source {self.data_source!r}; valid: {', '.join(DATA_SOURCES)}")
        if self.quantization not in ("4bit", "none"):
            raise TrainingError(f"quantization must be resolved to 4bit or none, got {self.quantization!r}")
        if not self.value_set:
            raise TrainingError("value_set is empty")
        if self.method == "kto" and self.train_batch_size < 2:
            raise TrainingError("kto needs train_batch_size >= 2 (its KL reference point is estimated "
                                f"from mismatched pairs within a batch), got {self.train_batch_size}")
        if self.max_steps == 0:
            raise TrainingError("max_steps = 0 trains nothing: use -1 (train for `epochs`) or a positive count")
        if self.init_from and not RUN_ID_PATTERN.fullmatch(self.init_from):
            raise TrainingError(f"init_from {self.init_from!r} is not a run id "
                                "(<model_profile>__<method>__<value_set>__s<seed>__<hash>[__from-<hash>])")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        d = {k: v for k, v in self.to_dict().items()
             if k not in self.NOT_HASHED and not (k in self.HASHED_IF_SET and v == self.HASHED_IF_SET[k])}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    @property
    def run_id(self) -> str:
        """``<profile>__<method>__<value_set>__s<seed>__<hash>``, and for a chained run
        ``__from-<parent's hash>``: the id shows that the run continues another one. The parent's
        whole id (and so its parameters and training-data fingerprint) is in ``hash``."""
        rid = f"{self.model_profile}__{self.method}__{self.value_set}__s{self.seed}__{self.hash}"
        return f"{rid}__from-{run_id_hash(self.init_from)}" if self.init_from else rid

    @property
    def label(self) -> str:
        """The method as tables show it: ``dpo``, or ``sft+dpo`` when continuing an SFT run (its
        parent's method read from the parent's run id)."""
        return f"{self.init_from.split('__')[1]}+{self.method}" if self.init_from else self.method


RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9.\-]+__[a-z]+__[A-Za-z0-9._\-]+__s\d+__[0-9a-f]+(__from-[0-9a-f]+)?")


def run_id_hash(run_id: str) -> str:
    """The parameter hash of a run id (its 5th ``__`` part), e.g. for the ``__from-`` suffix."""
    parts = run_id.split("__")
    if len(parts) < 5:
        raise TrainingError(f"{run_id!r} is not a run id (<model_profile>__<method>__<value_set>__s<seed>__<hash>)")
    return parts[4]


def params_for_run(params: Mapping[str, Any], method: str, value_set: str,
                   cuda: bool | None = None, data_root: Path | None = None,
                   init_from: str = "") -> TrainParams:
    """Map notebook 03's parameters onto one run's :class:`TrainParams` (resolving ``auto``s).

    A knob ``params`` lacks takes notebook 03's default (:func:`notebook03_parameters`), and a
    field named otherwise in the notebook is read under that name (:data:`NOTEBOOK_NAMES`).
    The run's data fingerprint is read from the dataset on disk (``data_root``: the folder
    holding ``<value_set>/<method>/``, default notebook 02's or 05's output). ``init_from``:
    the run id of a parent run whose adapter this run continues (chained training)."""
    check_method(method)
    cuda = models.cuda_available() if cuda is None else cuda
    nb = notebook03_parameters(params)

    def knob(name: str) -> Any:  # a TrainParams field's value under its notebook name
        return nb[NOTEBOOK_NAMES.get(name, name).format(method=method)]

    rehearsal = bool(nb["cpu_rehearsal"])
    quant = resolve_quantization(nb["quantization"], nb["strict"], cuda, cpu_rehearsal=rehearsal)
    optim = resolve_optimizer(knob("optim"), nb["strict"], cuda, cpu_rehearsal=rehearsal)
    return TrainParams(
        model_profile=knob("model_profile"),
        method=method,
        value_set=value_set,
        seed=int(knob("seed")),
        model_path=knob("model_path") or "",
        data_source=knob("data_source"),
        quantization=quant,
        lora_r=int(knob("lora_r")),
        lora_alpha=int(knob("lora_alpha")),
        lora_dropout=float(knob("lora_dropout")),
        lora_target=knob("lora_target"),
        learning_rate=float(knob("learning_rate")),
        lr_scheduler=knob("lr_scheduler"),
        warmup_ratio=float(knob("warmup_ratio")),
        max_grad_norm=float(knob("max_grad_norm")),
        max_steps=int(knob("max_steps")),
        epochs=float(knob("epochs")),
        train_batch_size=int(knob("train_batch_size")),
        grad_accum=int(knob("grad_accum")),
        max_length=int(knob("max_length")),
        max_rows=int(knob("max_rows")),
        beta=float(knob("beta")) if method == "dpo" else (KTO_BETA if method == "kto" else 0.0),
        kto_desirable_weight=float(knob("kto_desirable_weight")) if method == "kto" else 0.0,
        kto_undesirable_weight=float(knob("kto_undesirable_weight")) if method == "kto" else 0.0,
        optim=optim,
        gradient_checkpointing=resolve_gradient_checkpointing(knob("gradient_checkpointing"), cuda),
        save_steps=int(knob("save_steps")),
        dpo_precompute_ref=bool(knob("dpo_precompute_ref")) if method == "dpo" else False,
        data_fingerprint=data_fingerprint(value_set, method, knob("data_source"), data_root).combined,
        init_from=init_from,
    )


def parse_chains(chains: Sequence[str], methods: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """``["dpo<-sft"]`` -> ``[("dpo", "sft")]``: (child method, parent method) pairs, and notes.

    A chain applies when both its methods are in ``methods``: the chained run of a value set
    starts from the parent run of the *same* value set and parameters that this plan trains
    first. One whose methods are not both planned (a sweep cell of one method) is left out with
    a note, so a cell trains, and its budget counts, only the runs its methods name."""
    out, notes = [], []
    for spec in chains:
        child, sep, parent = str(spec).replace(" ", "").partition("<-")
        if not sep or not child or not parent:
            raise TrainingError(f"chains: {spec!r} is not '<method><-<parent method>' (e.g. 'dpo<-sft')")
        check_method(child)
        check_method(parent)
        if child == parent:
            raise TrainingError(f"chains: {spec!r} continues a method with itself")
        missing = [m for m in (parent, child) if m not in methods]
        if missing:
            notes.append(f"chains: {spec!r} left out: {' and '.join(missing)} not in methods ({', '.join(methods)})")
            continue
        out.append((child, parent))
    return out, notes


def plan(params: Mapping[str, Any], cuda: bool | None = None, runs_root: Path | None = None,
         data_root: Path | None = None) -> tuple[list[TrainParams], pd.DataFrame, list[str]]:
    """The runs notebook 03 will make (value sets x methods), their status, and any fallbacks.

    Warnings (e.g. 4-bit asked for without CUDA) are collected once and returned as text, so
    the notebook can state them; with ``strict`` they are errors instead.
    """
    runs: list[TrainParams] = []
    params = notebook03_parameters(params)
    chains, chain_notes = parse_chains(params["chains"] or [], params["methods"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for value_set in params["value_sets"]:
            planned = {}
            for method in params["methods"]:
                planned[method] = params_for_run(params, method, value_set, cuda, data_root)
                runs.append(planned[method])
            for child, parent in chains:  # after their parents: a chained run needs the parent's adapter
                runs.append(params_for_run(params, child, value_set, cuda, data_root,
                                           init_from=planned[parent].run_id))
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, UserWarning)}) + chain_notes
    if not runs:
        raise TrainingError("nothing to train: `methods` and `value_sets` must each list at least one entry")
    root = Path(runs_root or paths.RUNS)
    table = pd.DataFrame([{"value_set": r.value_set, "method": r.method, "init_from": r.init_from,
                           "run_id": r.run_id,
                           "status": run_status(paths.safe_child(root, r.run_id, "run_id")), "quantization": r.quantization,
                           "learning_rate": r.learning_rate} for r in runs])
    return runs, table, notes


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def has_adapter(run_dir: Path) -> bool:
    """Whether ``run_dir/adapter/`` holds a complete saved adapter (config and weights)."""
    return all((run_dir / "adapter" / name).is_file() for name in ADAPTER_FILES)


# the parameters a chained run must share with its parent: the base weights the parent's adapter
# was trained on, and the LoRA shape the child continues (its adapter *is* the parent's, trained on)
PARENT_MUST_MATCH = ("model_profile", "model_path", "quantization", "lora_r", "lora_alpha", "lora_target")


@dataclass(frozen=True)
class ParentRun:
    """The run a chained run starts from, as found on disk and checked (:func:`resolve_parent`)."""

    run_id: str
    run_dir: Path
    parameters: dict[str, Any]
    adapter_sha256: str
    lineage: list[str]  # base model, then each ancestor run id, ending with this parent
    method_chain: str = ""  # the parent's own lineage method (``sft``, or ``sft+dpo`` for a chained parent)

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"

    def record(self) -> dict[str, Any]:
        """What the child's manifest keeps of its parent (its identity and training data)."""
        keys = ("method", "value_set", "data_source", "data_fingerprint", "seed")
        return {"run_id": self.run_id, "adapter_sha256": self.adapter_sha256,
                "lineage_method": self.method_chain or self.parameters.get("method"),
                **{k: self.parameters.get(k) for k in keys}}


def adapter_sha256(adapter_dir: Path) -> str:
    """SHA-256 of an adapter's weights file (what a chained run was initialised with)."""
    return provenance.sha256_file(Path(adapter_dir) / "adapter_model.safetensors")


def resolve_parent(p: TrainParams, runs_root: Path | None = None) -> ParentRun:
    """Find and check the parent run of a chained run (``p.init_from``).

    Refuses (naming the parent run id and what is wrong) a parent that is missing, not done,
    or trained on another base model, quantisation or LoRA shape than ``p``: its adapter would
    not fit, or would be continued on weights it never saw."""
    if not p.init_from:
        raise TrainingError(f"run {p.run_id} has no init_from: it starts from a fresh adapter")
    root = Path(runs_root or paths.RUNS)
    run_dir = paths.safe_child(root, p.init_from, "init_from")
    where = f"init_from: parent run {p.init_from}"
    if not run_dir.is_dir():
        raise TrainingError(f"{where} not found (no folder {paths.relative(run_dir)}); train the parent first "
                            "(notebook 03 plans parents before the runs that continue them)")
    status = run_status(run_dir)
    if status != "finished":
        raise TrainingError(f"{where} is not done (status {status!r}: "
                            f"{'no DONE file' if status == 'unfinished' else 'DONE without a complete adapter'}); "
                            "finish it first (re-running notebook 03 resumes it)")
    try:
        manifest = provenance.read_json(run_dir / "manifest.json")
        parent_params = dict(manifest["parameters"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrainingError(f"{where}: {paths.relative(run_dir / 'manifest.json')} unreadable or lacks "
                            f"parameters ({type(err).__name__}: {err})") from None
    mine = p.to_dict()
    differ = [f"{k}={parent_params.get(k)!r} (this run: {mine[k]!r})" for k in PARENT_MUST_MATCH
              if str(parent_params.get(k, "")) != str(mine[k])]
    if differ:
        raise TrainingError(f"{where} does not fit run {p.run_id}: the parent has " + ", ".join(differ)
                            + "; a chained run continues the parent's adapter on the same base weights")
    extra = manifest.get("extra") or {}
    lineage = list(extra.get("lineage") or []) or [f"base:{parent_params.get('model_profile')}", p.init_from]
    return ParentRun(p.init_from, run_dir, parent_params, adapter_sha256(run_dir / "adapter"), lineage,
                     str(extra.get("lineage_method") or parent_params.get("method")))


def lineage_method(parameters: Mapping[str, Any], parent: Mapping[str, Any] | None) -> str:
    """A run's method as tables show it: ``dpo``, or ``sft+dpo`` for DPO continuing an SFT run.

    Why: a chained run and a fresh run of the same method, value set and seed are different
    models; keyed by method alone they would be pooled in notebook 04's tables."""
    method = str(parameters.get("method"))
    if not parameters.get("init_from") or not parent:
        return method
    return f"{parent.get('lineage_method') or parent.get('method')}+{method}"


def run_status(run_dir: Path) -> str:
    """``finished`` (DONE and adapter present), ``broken`` (DONE without adapter: not done, it is
    trained again), ``unfinished`` (folder without DONE: will resume) or ``new``."""
    if (run_dir / DONE).exists():
        return "finished" if has_adapter(run_dir) else "broken"
    return "unfinished" if run_dir.exists() else "new"


def checkpoint_complete(ckpt: Path) -> bool:
    """Whether a checkpoint was saved at the end of training (its step reached the planned count).

    Why: resuming ``trainer.train`` from such a checkpoint trains one step more than planned
    (transformers resumes a ``max_steps`` run at global_step + 1), so a kill between the last
    checkpoint and ``DONE`` (saving the adapter, examples, evaluation) must not train again.
    """
    state = provenance.read_json(ckpt / "trainer_state.json")
    return int(state.get("max_steps") or 0) > 0 and int(state["global_step"]) >= int(state["max_steps"])


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint of a run, or None."""
    ckpts = []
    for d in (run_dir / "checkpoints").glob("checkpoint-*"):
        step = d.name.rsplit("-", 1)[-1]
        if step.isdigit() and (d / "trainer_state.json").exists():
            ckpts.append((int(step), d))
    return max(ckpts)[1] if ckpts else None


# ---------------------------------------------------------------- data


def dataset_dir(value_set: str, method: str, data_source: str = "survey", root: Path | None = None) -> Path:
    """Where a method's data for a value set lives: notebook 02's output, or the consultation's.

    Consultation data (phase 3, notebook 05) mirror the survey layout under
    ``data/processed/consultation/<value_set>/<method>/``.
    """
    if data_source not in DATA_SOURCES:
        raise TrainingError(f"unknown data_source {data_source!r}; valid: {', '.join(DATA_SOURCES)}")
    base = root or (paths.ALIGNMENT if data_source == "survey" else paths.CONSULTATION)
    return paths.safe_child(paths.safe_child(base, value_set, "value_set"), method, "method")


def available_value_sets(data_source: str = "survey", root: Path | None = None) -> list[str]:
    base = Path(root or (paths.ALIGNMENT if data_source == "survey" else paths.CONSULTATION))
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and any((d / m).is_dir() for m in METHODS))


SPLITS_FILE = "splits.parquet"  # notebook 02's item split, next to the value-set folders


def _is_cache_file(path: Path) -> bool:
    """Files ``datasets`` writes next to a dataset when it is used (not part of the data)."""
    return path.name.startswith((".", "cache-")) or path.suffix == ".lock"


@dataclass(frozen=True)
class DataFingerprint:
    """What a run was trained on: its dataset folder and the item split it was cut from.

    ``dataset``: sha256 over the file names and contents of ``<value_set>/<method>/`` (cache
    files that ``datasets`` adds on use excluded); ``splits``: sha256 of the (item_id, split)
    pairs of ``splits.parquet`` (survey data only: consultation data are not survey items).
    Empty strings when absent. ``combined`` goes into the run id.
    """

    dataset: str
    splits: str
    dataset_folder: str = ""
    splits_file: str = ""

    @property
    def combined(self) -> str:
        if not self.dataset and not self.splits:
            return ""
        return hashlib.sha256(f"{self.dataset}:{self.splits}".encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, str]:
        return {"combined": self.combined, **asdict(self)}


def _folder_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = f.relative_to(folder)
        if any(_is_cache_file(Path(part)) for part in rel.parts):
            continue
        h.update(str(rel.as_posix()).encode())
        h.update(provenance.sha256_file(f).encode())
    return h.hexdigest()


def splits_sha256(path: Path) -> str:
    """Hash of the split *content* (sorted item_id, split pairs), not of the parquet bytes,
    so that a re-write with another pyarrow version keeps the fingerprint."""
    try:
        sp = pd.read_parquet(path, columns=["item_id", "split"])
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types
        raise TrainingError(f"{paths.relative(path)}: unreadable or lacks item_id/split ({err})") from err
    pairs = sorted(zip(sp["item_id"].astype(str), sp["split"].astype(str), strict=True))
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def data_fingerprint(value_set: str, method: str, data_source: str = "survey",
                     root: Path | None = None) -> DataFingerprint:
    """Fingerprint of one run's training data as it is on disk now (empty parts when absent)."""
    folder = dataset_dir(value_set, method, data_source, root)
    base = folder.parent.parent
    splits = base / SPLITS_FILE
    dataset = _folder_sha256(folder) if folder.is_dir() else ""
    split_hash = splits_sha256(splits) if data_source == "survey" and splits.exists() else ""
    return DataFingerprint(dataset, split_hash, paths.relative(folder) if dataset else "",
                           paths.relative(splits) if split_hash else "")


def check_run_data(run_id: str, manifest: Mapping[str, Any], data_root: Path | None = None) -> None:
    """Refuse a finished run whose training-data fingerprint differs from the current data.

    Why: a run's adapter is evaluated on the *current* test items; if notebook 01 or 02 re-ran
    since it was trained, the split changed and some of those items may have been its training
    items. Raises :class:`StaleRunError` naming the run and which fingerprint differs.
    """
    params = manifest.get("parameters", {})
    recorded = str(params.get("data_fingerprint") or "")
    if not recorded:
        raise StaleRunError(
            f"run {run_id}: its manifest records no training-data fingerprint (trained before "
            "fingerprints were recorded, or on data not read from disk), so it cannot be shown that "
            f"its training items are not among the current test items; retrain it (notebook 03) or "
            f"remove runs/{run_id}")
    now = data_fingerprint(str(params.get("value_set")), str(params.get("method")),
                           str(params.get("data_source", "survey")), data_root)
    if now.combined == recorded:
        _check_parent_data(run_id, manifest, str(params.get("data_source", "survey")), data_root)
        return
    parts = manifest.get("extra", {}).get("data_fingerprint", {}) or {}
    names = {"dataset": f"the training dataset ({now.dataset_folder or 'now missing'})",
             "splits": f"the item split ({now.splits_file or SPLITS_FILE + ', now missing'})"}
    differ = [names[k] for k in ("dataset", "splits") if parts.get(k) != getattr(now, k)]
    what = " and ".join(differ) if differ else "the training dataset or the item split"
    raise StaleRunError(
        f"run {run_id} was trained on other data than the current ones: the fingerprint of {what} "
        f"differs (recorded {recorded}, now {now.combined or 'none'}); notebook 01 or 02 re-ran since, "
        f"so its test items may have been training items. Retrain it (notebook 03 gives it a new run "
        f"id) or remove runs/{run_id}")


def _check_parent_data(run_id: str, manifest: Mapping[str, Any], data_source: str,
                       data_root: Path | None) -> None:
    """A chained run also learnt from its parent's data: refuse it when those changed too.

    ``data_root`` is the child's; a parent on another data source (a consultation run continuing
    a survey run) is checked against that source's default folder."""
    parent = (manifest.get("extra") or {}).get("parent") or {}
    recorded = str(parent.get("data_fingerprint") or "")
    if not parent or not recorded:
        return
    source = str(parent.get("data_source") or "survey")
    now = data_fingerprint(str(parent.get("value_set")), str(parent.get("method")), source,
                           data_root if source == data_source else None)
    if now.combined != recorded:
        raise StaleRunError(
            f"run {run_id} continues run {parent.get('run_id')}, whose training data changed since (its "
            f"{source} data fingerprint: recorded {recorded}, now {now.combined or 'none'}); its test items may "
            f"have been the parent's training items. Retrain both (notebook 03) or remove runs/{run_id}")


def load_alignment_dataset(value_set: str, method: str, data_source: str = "survey",
                           root: Path | None = None) -> Any:
    """The ``DatasetDict`` (train, validation) for one value set and method, checked."""
    from datasets import load_from_disk

    check_method(method)
    folder = dataset_dir(value_set, method, data_source, root)
    if not folder.exists():
        have = available_value_sets(data_source, root)
        if data_source == "consultation":
            hint = ("consultation data are absent: run notebook 05 (public consultation, phase 3) "
                    "to export them" if not have else f"value sets with consultation data: {', '.join(have)}")
        else:
            hint = ("no alignment data yet: run notebook 02 (make all)" if not have
                    else f"value sets with data: {', '.join(have)}")
        raise TrainingError(f"no {method} data for value set {value_set!r} at {paths.relative(folder)} ({hint})")
    # in memory: ``datasets`` would otherwise write its cache-*.arrow files of every map/filter
    # (trl's tokenisation) into notebook 02's output folder and change its recorded hash
    ds = load_from_disk(str(folder), keep_in_memory=True)
    if "train" not in ds:
        raise DatasetFormatError(f"{paths.relative(folder)}: no 'train' split (splits: {', '.join(ds)})")
    check_columns(ds, method, where=paths.relative(folder))
    return ds


def kto_weights(train: Any, desirable: float = 0.0, undesirable: float = 0.0) -> tuple[float, float]:
    """KTO class weights of a train split (its ``label`` column): :func:`valuealign.rows.kto_class_weights`;
    a 0 weight is derived so that the weighted counts balance (ratio 1:1)."""
    labels = list(train["label"])
    n_d = sum(1 for x in labels if x)
    try:
        return kto_class_weights(n_d, len(labels) - n_d, desirable, undesirable)
    except KtoBalanceError as err:
        raise DatasetFormatError(str(err)) from err


def drop_too_long(ds: Any, method: str, tokenizer: Any, max_length: int) -> tuple[Any, int]:
    """Drop rows whose chat-rendered prompt + answer exceeds ``max_length`` tokens; return the count.

    Why drop rather than truncate: the answer is the last token(s) of a row, and trl truncates
    from the end (SFT) or cuts the completion (DPO/KTO), so a truncated row teaches nothing or
    the wrong thing. The count is reported in the run's manifest.
    """
    answers = [c for c in TRAINER_COLUMNS[method] if c not in ("prompt", "label")]

    def fits(row: Mapping[str, Any]) -> bool:
        if method == "dist":  # the prompt and the one letter token read after it
            return len(tokenizer(chat_text(tokenizer, list(row["prompt"])), add_special_tokens=False)
                       ["input_ids"]) + 1 <= max_length
        for col in answers:
            text = chat_text(tokenizer, list(row["prompt"]) + list(row[col]), generation_prompt=False)
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > max_length:
                return False
        return True

    keep = [i for i, row in enumerate(ds) if fits(row)]
    return (ds.select(keep) if len(keep) < len(ds) else ds), len(ds) - len(keep)


def prepare_split(ds: Any, method: str, max_rows: int = 0, seed: int = 0) -> Any:
    """Keep the columns trl needs; optionally a seeded subsample of ``max_rows`` rows."""
    ds = ds.select_columns(list(TRAINER_COLUMNS[method]))
    if max_rows and len(ds) > max_rows:
        ds = ds.shuffle(seed=seed).select(range(max_rows))
    return ds


# ---------------------------------------------------------------- trainer construction


def lora_config(p: TrainParams) -> Any:
    from peft import LoraConfig

    target: str | list[str] = p.lora_target
    if target != "all-linear":
        target = [t.strip() for t in target.split(",") if t.strip()]
    return LoraConfig(r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                      target_modules=target, bias="none", task_type="CAUSAL_LM")


def training_args(p: TrainParams, output_dir: Path, device: str, train_rows: int,
                  kto_w: tuple[float, float] | None = None) -> Any:
    """The trl config for one method, with every knob that differs between CPU and GPU explicit."""
    from trl import DPOConfig, KTOConfig, SFTConfig

    cuda = device.startswith("cuda")
    common: dict[str, Any] = dict(
        output_dir=str(output_dir), seed=p.seed, data_seed=p.seed,
        learning_rate=p.learning_rate, lr_scheduler_type=p.lr_scheduler, warmup_steps=p.warmup_ratio,  # < 1: a ratio (transformers 5)
        max_grad_norm=p.max_grad_norm, max_steps=p.max_steps, num_train_epochs=p.epochs,
        per_device_train_batch_size=p.train_batch_size, per_device_eval_batch_size=p.train_batch_size,
        gradient_accumulation_steps=p.grad_accum, max_length=p.max_length,
        optim=p.optim, gradient_checkpointing=p.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if p.gradient_checkpointing else None,
        use_cpu=not cuda, bf16=cuda, fp16=False,
        logging_steps=1, logging_first_step=True, save_strategy="steps", save_steps=p.save_steps,
        save_total_limit=2, eval_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, dataset_num_proc=None,
    )
    if p.method == "sft":
        return SFTConfig(**common, completion_only_loss=True, packing=False)
    if p.method == "dist":
        # SFT's config (same LoRA, quantisation and optimiser handling); the rows are tokenised by
        # dist_features, so trl's dataset preparation is skipped and the extra columns are kept
        return SFTConfig(**common, packing=False, dataset_kwargs={"skip_prepare_dataset": True},
                         remove_unused_columns=False)
    if p.method == "dpo":
        # precompute_ref_log_probs: one adapter-off pass over the data before training instead of
        # an adapter-off forward per step (benchmarks/bench_dpo_reference.py compares the two)
        return DPOConfig(**common, beta=p.beta, precompute_ref_log_probs=p.dpo_precompute_ref)
    desirable, undesirable = kto_w or (1.0, 1.0)
    return KTOConfig(**common, beta=p.beta, desirable_weight=desirable, undesirable_weight=undesirable)


def load_model_for_run(p: TrainParams, device: str, parent: ParentRun | None = None) -> Any:
    """The model a run trains: the base (:func:`models.load_for_training`), and for a chained
    run the parent's adapter loaded on it as the trainable ``default`` adapter.

    Why no new adapter on top: alignment-handbook's recipe continues the SFT adapter with DPO,
    and trl (1.16) then copies it into a frozen ``ref`` adapter for DPO's and KTO's reference,
    so the reference is the parent model, not the base."""
    model = models.load_for_training(p.model_profile, p.model_path or None,
                                     quantization=p.quantization, device=device)
    if parent is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(parent.adapter_dir), is_trainable=True)


def make_trainer(p: TrainParams, model: Any, tokenizer: Any, train: Any, eval_ds: Any | None,
                 args: Any, callbacks: Sequence[Any] = ()) -> Any:
    """trl trainer with a LoRA adapter; DPO/KTO get no ``ref_model`` (adapter-off reference, or
    for a chained run the parent's adapter); dist gets :class:`DistTrainer` on rows tokenised by
    :func:`dist_features`."""
    from transformers import PrinterCallback
    from trl import DPOTrainer, KTOTrainer, SFTTrainer

    extra: dict[str, Any] = {}
    if p.method == "dist":
        train = dist_features(train, tokenizer)
        eval_ds = dist_features(eval_ds, tokenizer) if eval_ds is not None else None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra["data_collator"] = DistCollator(int(pad))
    from peft import PeftModel

    cls = {"sft": SFTTrainer, "dpo": DPOTrainer, "kto": KTOTrainer, "dist": dist_trainer_class()}[p.method]
    # a chained run's model already carries its parent's adapter (trainable): no new adapter; trl's
    # DPO/KTO then copy it into a frozen "ref" adapter and use that as the reference (the parent)
    peft_config = None if isinstance(model, PeftModel) else lora_config(p)
    trainer = cls(model=model, args=args, train_dataset=train, eval_dataset=eval_ds,
                  processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks), **extra)
    trainer.remove_callback(PrinterCallback)  # metrics go to train_log.csv, not the notebook
    return trainer


# ---------------------------------------------------------------- dist: the distributional objective


def dist_features(ds: Any, tokenizer: Any) -> Any:
    """Tokenise dist rows as the evaluation scores them: ``input_ids`` of the chat prompt,
    ``option_ids`` (the token of each option letter after it) and ``target`` (the shares).

    The prompt text is :func:`valuealign.inference.chat_text` and the letter tokens come from
    :func:`valuealign.inference.label_token_ids`, so training raises exactly the probabilities
    that notebook 04 reads. A letter that is not one token, or two letters with one token,
    cannot be scored in one position: an error naming the row and the letters.
    """
    from datasets import Dataset

    rows: dict[str, list[Any]] = {"input_ids": [], "option_ids": [], "target": []}
    for i, row in enumerate(ds):
        text = chat_text(tokenizer, list(row["prompt"]))
        letters = [str(x) for x in row["option_letters"]]
        ids = [label_token_ids(tokenizer, text, letter) for letter in letters]
        if any(len(t) != 1 for t in ids) or len({t[0] for t in ids}) != len(ids):
            raise TrainingError(
                f"dist row {i}: the option letters {letters} are not distinct single tokens after the chat "
                f"prompt for this tokenizer (token ids {ids}); the distributional loss reads one next-token "
                "position, as the evaluation's batched scoring does"
            )
        shares = [float(x) for x in row["target_shares"]]
        total = sum(shares)
        rows["input_ids"].append(tokenizer(text, add_special_tokens=False)["input_ids"])
        rows["option_ids"].append([t[0] for t in ids])
        rows["target"].append([x / total for x in shares])
    return Dataset.from_dict(rows)


@dataclass(frozen=True)
class DistCollator:
    """Left-pads prompts (the last position is then every row's next-token position, as in the
    evaluation) and pads option ids and targets to the batch's largest option count."""

    pad_token_id: int

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        k = max(len(f["option_ids"]) for f in features)
        ids = torch.full((len(features), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        opt = torch.zeros((len(features), k), dtype=torch.long)
        opt_mask = torch.zeros((len(features), k), dtype=torch.bool)
        target = torch.zeros((len(features), k), dtype=torch.float32)
        for i, f in enumerate(features):
            m, j = len(f["input_ids"]), len(f["option_ids"])
            ids[i, n - m:] = torch.tensor(list(f["input_ids"]), dtype=torch.long)
            mask[i, n - m:] = 1
            opt[i, :j] = torch.tensor(list(f["option_ids"]), dtype=torch.long)
            opt_mask[i, :j] = True
            target[i, :j] = torch.tensor(list(f["target"]), dtype=torch.float32)
        return {"input_ids": ids, "attention_mask": mask, "option_ids": opt, "option_mask": opt_mask,
                "target": target}


def option_logprobs(model: Any, input_ids: Any, attention_mask: Any, option_ids: Any,
                    option_mask: Any) -> tuple[Any, Any]:
    """Log-probabilities of each row's option letters as the next token, renormalised over the
    row's letters, and the probability mass the letters had before renormalising.

    Left-padded input with position ids from the attention mask and only the last position's
    logits, exactly as ``valuealign.evaluation`` scores a prompt.
    """
    import torch

    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    try:
        out = model(**kwargs, logits_to_keep=1)
    except TypeError:  # models without logits_to_keep
        out = model(**kwargs)
    full = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    picked = full.gather(1, option_ids).masked_fill(~option_mask, float("-inf"))
    return torch.log_softmax(picked, dim=-1), picked.logsumexp(-1).exp()


def soft_cross_entropy(option_logp: Any, target: Any, option_mask: Any) -> Any:
    """Per row: -sum_i target_i log q_i over the row's letters (padding letters count 0)."""
    return -(target * option_logp.masked_fill(~option_mask, 0.0)).sum(-1)


@functools.cache
def dist_trainer_class() -> type:
    """``DistTrainer``, defined on first use (importing trl is slow, so this module does not at import)."""
    import torch
    from trl import SFTTrainer

    class _DistTrainer(SFTTrainer):
        """trl's SFTTrainer with the distributional loss: soft-label cross-entropy between the
        population's shares and the model's next-token distribution over the option letters.

        Everything else (LoRA through ``peft_config``, 4-bit handling, optimiser, schedule,
        checkpoints, resume) is SFTTrainer's. Logged besides the loss: ``target_kl``, the
        KL divergence from the target to the model's letter distribution (0 = matched; the
        loss minus the target's entropy), and ``option_mass``, the probability on the letters
        before renormalising (the evaluation's ``valid_mass``).
        """

        loss_is_scaled_for_ga = False  # a mean over the micro-batch: Trainer divides by accumulation

        def compute_loss(self, model: Any, inputs: Mapping[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            mode = "train" if self.model.training else "eval"
            logq, mass = option_logprobs(model, inputs["input_ids"], inputs["attention_mask"],
                                         inputs["option_ids"], inputs["option_mask"])
            target, opt_mask = inputs["target"].to(logq.dtype), inputs["option_mask"]
            ce = soft_cross_entropy(logq, target, opt_mask)
            loss = ce.mean()
            with torch.no_grad():
                safe = torch.where(target > 0, target, torch.ones_like(target))
                entropy = -(target * safe.log()).sum(-1)
                self._metrics[mode]["target_kl"].append(float((ce - entropy).mean()))
                self._metrics[mode]["option_mass"].append(float(mass.mean()))
            return (loss, {"option_logprobs": logq}) if return_outputs else loss

        def prediction_step(self, model: Any, inputs: Mapping[str, Any], prediction_loss_only: bool,
                            ignore_keys: list[str] | None = None) -> tuple[Any, None, None]:
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs)
            return loss.detach(), None, None

    _DistTrainer.__name__ = _DistTrainer.__qualname__ = "DistTrainer"
    return _DistTrainer


def progress_callback(desc: str) -> Any:
    """A compact tqdm.auto bar (one line per run) instead of the Trainer's printed dicts."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    return _Progress()


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Send transformers/trl/peft log records and Python warnings to ``path`` while training.

    Why: the notebook must stay readable; the details stay available next to the run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    names = ("transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "py.warnings")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.propagate, lg.level, list(lg.handlers)) for lg in loggers]
    logging.captureWarnings(True)
    for lg in loggers:
        for h in list(lg.handlers):  # e.g. transformers' own stderr handler
            lg.removeHandler(h)
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for lg, (prop, level, handlers) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            for h in handlers:
                lg.addHandler(h)
            lg.propagate = prop
            lg.setLevel(level)  # setLevel, not .level: it clears the loggers' level caches
        handler.close()


# ---------------------------------------------------------------- logs, cards


LOG_COLUMNS = ("step", "epoch", "loss", "grad_norm", "learning_rate")


def log_frame(log_history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Training log rows (those with a ``loss``), columns named as trl logs them."""
    rows = [dict(r) for r in log_history if "loss" in r and "train_runtime" not in r]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=list(LOG_COLUMNS))
    df = df.drop_duplicates("step", keep="last").sort_values("step")
    first = [c for c in LOG_COLUMNS if c in df.columns]
    return df[first + sorted(c for c in df.columns if c not in first)].reset_index(drop=True)


def _final_metrics(log: pd.DataFrame, summary: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    if not log.empty:
        last = log.iloc[-1]
        for key in ("loss", "rewards/margins", "rewards/accuracies", "kl", "mean_token_accuracy", "target_kl",
                    "option_mass"):
            if key in log.columns and pd.notna(last[key]):
                out[f"final_{key}"] = float(last[key])
    for k, v in summary.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def model_card(p: TrainParams, run_id: str, metrics: Mapping[str, Any], data_folder: Path,
               base_source: str, parent: ParentRun | None = None) -> str:
    """The adapter's README.md: what it is, from what data, with which knobs, how well it trained,
    and for a chained run which run it continues (parent run id, adapter SHA-256, lineage)."""
    method_name = {"sft": "supervised fine-tuning (SFT)", "dpo": "direct preference optimisation (DPO)",
                   "kto": "Kahneman-Tversky optimisation (KTO)",
                   "dist": "distributional fine-tuning (dist: soft-label cross-entropy over the option letters)",
                   }[p.method]
    card = data_folder / "README.md"
    data_link = paths.relative(card) if card.exists() else paths.relative(data_folder)
    hp = "\n".join(f"| `{k}` | `{v}` |" for k, v in p.to_dict().items())
    mt = "\n".join(f"| `{k}` | {v:.4g} |" if isinstance(v, float) else f"| `{k}` | {v} |"
                   for k, v in sorted(metrics.items())) or "| (none) | |"
    chain = ""
    if parent is not None:
        steps = " -> ".join(f"`{x}`" for x in [*parent.lineage, run_id])
        chain = (f"\n## Lineage\nInitialised from the adapter of run `{parent.run_id}` "
                 f"({parent.parameters.get('method')} on {parent.parameters.get('value_set')}, "
                 f"{parent.parameters.get('data_source', 'survey')} data; adapter SHA-256 "
                 f"`{parent.adapter_sha256}`), trained on as this run's adapter"
                 + ("; the reference model of the preference loss is that parent adapter, frozen"
                    if p.method in ("dpo", "kto") else "") + f".\n\nLineage: {steps}\n")
    return f"""---
base_model: {base_source}
library_name: peft
tags: [valuealign, {p.method}, lora, trl]
---
# LoRA adapter `{run_id}`

{method_name.capitalize()} of `{p.model_profile}` ({base_source}) towards the answer
distributions of the value set **{p.value_set}** ({p.data_source} data), seed {p.seed},
base weights {'4-bit NF4 (QLoRA)' if p.quantization == '4bit' else 'unquantised'}.
Made by `valuealign.training` (notebook 03_finetune). Training data and its card:
`{data_link}`. Load it with `valuealign.models.load_with_adapter("{p.model_profile}", <this folder>, quantization="{p.quantization}")`.
{chain}
## Hyperparameters
| parameter | value |
|---|---|
{hp}

## Training metrics
| metric | value |
|---|---|
{mt}
"""


# ---------------------------------------------------------------- a run


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    params: TrainParams
    status: str  # trained | resumed | skipped
    resumed_from: str | None = None
    global_step: int = 0
    optimizer_steps: int = 0
    log: pd.DataFrame = field(default_factory=pd.DataFrame)
    metrics: dict[str, float] = field(default_factory=dict)
    model: Any = None  # the trained peft model (None when skipped)
    tokenizer: Any = None
    examples: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def adapter_dir(self) -> Path:
        return self.run_dir / "adapter"


def read_examples(run_dir: Path) -> pd.DataFrame:
    f = run_dir / "examples.json"
    return pd.DataFrame(provenance.read_json(f)) if f.exists() else pd.DataFrame()


def _oom_message(p: TrainParams, run_dir: Path, stage: str) -> str:
    ckpt = last_checkpoint(run_dir)
    b, g = p.train_batch_size, p.grad_accum
    return (
        f"CUDA ran out of memory while {stage} run {p.run_id} (model_profile={p.model_profile}, "
        f"train_batch_size={b}, grad_accum={g}, max_length={p.max_length}, quantization={p.quantization}, "
        f"train_gradient_checkpointing={'on' if p.gradient_checkpointing else 'off'}). Knobs to turn: "
        f"lower train_batch_size (e.g. {max(1, b // 2)}) and raise grad_accum (e.g. {g * 2}) to keep the "
        f"effective batch of {b * g}; lower max_length; keep quantization=4bit and "
        f"train_gradient_checkpointing=on; close other processes on the GPU. The run folder "
        f"{paths.relative(run_dir)} is kept: re-running with the same parameters (e.g. on a larger GPU) "
        f"resumes from {ckpt.name if ckpt else 'the start (no checkpoint yet)'}; changed knobs give a new run id."
    )


def _optimizer_steps(trainer: Any) -> int:
    """Adam's own step counter (restored from checkpoints), the ground truth of optimizer updates."""
    opt = getattr(trainer, "optimizer", None)
    steps = []
    for state in getattr(opt, "state", {}).values():
        s = state.get("step") if isinstance(state, dict) else None
        if s is not None:
            steps.append(int(s.item() if hasattr(s, "item") else s))
    return max(steps) if steps else 0


def _peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _checkpoint_optimizer_steps(ckpt: Path) -> int:
    """Adam's step counter as saved in a checkpoint's ``optimizer.pt`` (0 when absent)."""
    import torch

    f = ckpt / "optimizer.pt"
    if not f.exists():
        return 0
    state = torch.load(f, map_location="cpu", weights_only=True).get("state", {})
    steps = [int(v["step"].item() if hasattr(v["step"], "item") else v["step"])
             for v in state.values() if isinstance(v, dict) and "step" in v]
    return max(steps) if steps else 0


PHASES = ("training", "evaluating", "adapter_saved", "log_written", "examples_written", "manifest_written")


def train(
    p: TrainParams,
    dataset: Any | None = None,
    *,
    runs_root: Path | None = None,
    data_root: Path | None = None,
    callbacks: Sequence[Any] = (),
    eval_rows: int = 0,
    examples: int = 0,
    max_new_tokens: int = 8,
    progress: bool = True,
    keep_model: bool = True,
    lock_timeout: float | None = None,
    phase_hook: Callable[[str], None] | None = None,
) -> RunResult:
    """Train one run into ``runs_root/<run_id>/``; skip if finished, resume if interrupted.

    ``dataset`` (a DatasetDict with ``train`` and optionally ``validation``) overrides the
    alignment data on disk (tests, custom data). ``eval_rows`` validation rows are scored
    once after training (their metrics go into the model card). ``examples`` held-out
    (validation) items are answered before (adapter off) and after training, into
    ``examples.json`` (kept with the run, so a skipped run still shows them).

    The run folder is locked for the whole call (:mod:`valuealign.locks`; ``lock_timeout``
    seconds to wait for another process holding it, None: ``$VALUEALIGN_LOCK_TIMEOUT`` or 0).
    ``phase_hook`` is called with each name of :data:`PHASES` as the run passes it (tests inject
    a failure there to check that a resume ends at exactly the planned step count).
    """
    from valuealign import locks

    fingerprint = data_fingerprint(p.value_set, p.method, p.data_source, data_root)
    if not p.data_fingerprint and dataset is None:
        p = replace(p, data_fingerprint=fingerprint.combined)
    elif p.data_fingerprint and p.data_fingerprint != fingerprint.combined:
        raise TrainingError(
            f"run {p.run_id}: the training data changed since the run was planned (data fingerprint "
            f"{p.data_fingerprint}, now {fingerprint.combined or 'none'}); plan it again")
    runs_root = Path(runs_root or paths.RUNS)
    run_dir = paths.safe_child(runs_root, p.run_id, "run_id")
    with locks.hold(locks.sibling_lock(run_dir), f"run folder {paths.relative(run_dir)}", lock_timeout):
        return _train_locked(p, dataset, run_dir, fingerprint, data_root=data_root, callbacks=callbacks,
                             eval_rows=eval_rows, examples=examples, max_new_tokens=max_new_tokens,
                             progress=progress, keep_model=keep_model, phase_hook=phase_hook or (lambda _: None))


def _train_locked(p: TrainParams, dataset: Any | None, run_dir: Path, fingerprint: DataFingerprint, *,
                  data_root: Path | None, callbacks: Sequence[Any], eval_rows: int, examples: int,
                  max_new_tokens: int, progress: bool, keep_model: bool,
                  phase_hook: Callable[[str], None]) -> RunResult:
    """:func:`train` while holding the run folder's lock."""
    import torch
    from transformers import TrainerState, set_seed

    status = run_status(run_dir)
    if status == "finished":
        log_path = run_dir / "train_log.csv"
        man = provenance.read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
        return RunResult(p.run_id, run_dir, p, "skipped",
                         global_step=int(man.get("extra", {}).get("global_step", 0)),
                         optimizer_steps=int(man.get("extra", {}).get("optimizer_steps", 0)),
                         log=pd.read_csv(log_path) if log_path.exists() else pd.DataFrame(),
                         metrics=man.get("extra", {}).get("metrics", {}),
                         examples=read_examples(run_dir))
    if status == "broken":
        warnings.warn(f"run {p.run_id} was marked done but has no complete adapter "
                      f"({paths.relative(run_dir / 'adapter')}): it is not done; its DONE marker is removed "
                      "and the run is completed again from its last checkpoint", UserWarning, stacklevel=3)
        (run_dir / DONE).unlink()

    parent = resolve_parent(p, run_dir.parent) if p.init_from else None
    data_folder = dataset_dir(p.value_set, p.method, p.data_source, data_root)
    if dataset is None:
        dataset = load_alignment_dataset(p.value_set, p.method, p.data_source, data_root)
    else:
        check_columns(dataset, p.method, where=f"dataset for {p.value_set}/{p.method}")
    tokenizer = models.load_tokenizer(p.model_profile, p.model_path or None)
    train_ds = prepare_split(dataset["train"], p.method, p.max_rows, p.seed)
    train_ds, n_too_long = drop_too_long(train_ds, p.method, tokenizer, p.max_length)
    if len(train_ds) == 0:
        raise TrainingError(f"the train split for {p.value_set}/{p.method} is empty"
                            + (f" ({n_too_long} rows longer than max_length={p.max_length})" if n_too_long else ""))
    eval_ds = None
    if eval_rows and "validation" in dataset and len(dataset["validation"]):
        eval_ds = prepare_split(dataset["validation"], p.method, eval_rows, p.seed)
        eval_ds, _ = drop_too_long(eval_ds, p.method, tokenizer, p.max_length)
        if len(eval_ds) == 0 or (p.method == "kto" and len(set(eval_ds["label"])) < 2):
            eval_ds = None  # KTO's metrics need both classes
    kto_w = kto_weights(train_ds, p.kto_desirable_weight, p.kto_undesirable_weight) if p.method == "kto" else None

    device = training_device()
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob("adapter.tmp*"):  # left by a kill while the adapter was being saved
        shutil.rmtree(stale, ignore_errors=True)
    provenance.write_json({"run_id": p.run_id, "parameters": p.to_dict()}, run_dir / "params.json")
    resume = last_checkpoint(run_dir)
    trained_out = resume is not None and checkpoint_complete(resume)
    manifest = provenance.Manifest(STAGE, parameters={**p.to_dict(), "run_id": p.run_id}, seed=p.seed)
    t0 = time.time()
    stage = "loading the model for"
    train_metrics: dict[str, Any] = {}
    try:
        with log_to_file(run_dir / "train.log"):
            set_seed(p.seed)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            model = load_model_for_run(p, device, parent)
            args = training_args(p, run_dir / "checkpoints", device, len(train_ds), kto_w)
            cbs = list(callbacks)
            if progress and not trained_out:
                cbs.append(progress_callback(f"{p.method} {p.value_set}"))
            trainer = make_trainer(p, model, tokenizer, train_ds, eval_ds, args, cbs)
            stage = "training"
            if trained_out:  # training had ended: take its weights and state, train no further step
                trainer._load_from_checkpoint(str(resume))
                trainer.state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
                opt_steps = _checkpoint_optimizer_steps(resume)
            else:
                train_metrics = dict(trainer.train(resume_from_checkpoint=str(resume) if resume else None).metrics)
                opt_steps = _optimizer_steps(trainer)
            phase_hook("training")
            eval_metrics = {}
            if eval_ds is not None:
                stage = "evaluating"
                phase_hook("evaluating")
                eval_metrics = trainer.evaluate()
    except torch.cuda.OutOfMemoryError as err:
        raise TrainingOOMError(_oom_message(p, run_dir, stage)) from err

    log = log_frame(trainer.state.log_history)
    summary = {k: v for k, v in train_metrics.items() if k in ("train_runtime", "train_loss")}
    summary.update({k: v for k, v in eval_metrics.items()
                    if k.startswith("eval_") and not k.endswith(("_runtime", "per_second"))})
    metrics = _final_metrics(log, summary)
    metrics.update(train_rows=len(train_ds), rows_dropped_too_long=n_too_long)
    peft_model = trainer.model
    base_source = models.get_profile(p.model_profile).resolve(p.model_path or None)
    with log_to_file(run_dir / "train.log"):
        adapter_tmp = run_dir / "adapter.tmp"
        shutil.rmtree(adapter_tmp, ignore_errors=True)
        # the trained adapter only: a chained DPO/KTO run also holds trl's frozen "ref" copy
        peft_model.save_pretrained(str(adapter_tmp), safe_serialization=True, selected_adapters=["default"])
    provenance.write_text(model_card(p, p.run_id, metrics, data_folder,
                                     paths.relative(Path(base_source)) if Path(base_source).exists()
                                     else base_source, parent), adapter_tmp / "README.md")
    shutil.rmtree(run_dir / "adapter", ignore_errors=True)
    adapter_tmp.rename(run_dir / "adapter")
    phase_hook("adapter_saved")
    with provenance.atomic_path(run_dir / "train_log.csv", ".csv") as tmp:
        log.to_csv(tmp, index=False)
    phase_hook("log_written")
    ex = pd.DataFrame()
    if examples:
        ex = before_after(peft_model, tokenizer, example_rows(dataset, p.method, examples, p.seed), max_new_tokens)
        provenance.write_json(ex.to_dict(orient="records"), run_dir / "examples.json")
    phase_hook("examples_written")
    if data_folder.exists():
        manifest.add_inputs([data_folder])
    if parent is not None:
        manifest.add_inputs([parent.adapter_dir])
    manifest.add_outputs([run_dir / "adapter", run_dir / "train_log.csv"])
    manifest.extra = {
        "run_id": p.run_id, "device": device, "train_rows": len(train_ds),
        "train_rows_dropped_too_long": n_too_long,
        "eval_rows": len(eval_ds) if eval_ds is not None else 0,
        "kto_weights": list(kto_w) if kto_w else None,
        "resumed_from": resume.name if resume else None,
        "data_fingerprint": fingerprint.to_dict() if p.data_fingerprint else None,
        "global_step": int(trainer.state.global_step), "optimizer_steps": opt_steps,
        "peak_memory_gb": round(_peak_memory_gb(device), 3),
        "peak_memory_kind": "cuda max allocated" if device.startswith("cuda") else "process max RSS",
        "wall_time_this_session_s": round(time.time() - t0, 2),
        "metrics": metrics,
        "parent": parent.record() if parent is not None else None,
        "lineage": [*parent.lineage, p.run_id] if parent is not None else [f"base:{p.model_profile}", p.run_id],
    }
    manifest.extra["lineage_method"] = lineage_method(p.to_dict(), manifest.extra["parent"])
    manifest.write(run_dir / "manifest.json")
    phase_hook("manifest_written")
    if not has_adapter(run_dir):  # never mark a run done whose adapter is not on disk
        raise TrainingError(f"run {p.run_id}: {paths.relative(run_dir / 'adapter')} lacks "
                            f"{' or '.join(ADAPTER_FILES)} after saving it; the run is not marked done")
    provenance.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()), run_dir / DONE)
    peft_model.eval()
    return RunResult(p.run_id, run_dir, p, "resumed" if resume else "trained",
                     resumed_from=resume.name if resume else None,
                     global_step=int(trainer.state.global_step), optimizer_steps=opt_steps, log=log,
                     metrics=metrics, model=peft_model if keep_model else None,
                     tokenizer=tokenizer if keep_model else None, examples=ex)


# ---------------------------------------------------------------- before/after examples


def target_answer(row: Mapping[str, Any], method: str) -> str:
    """The answer a row teaches: SFT completion, DPO chosen, KTO completion (if desirable),
    dist: the letter with the largest target share (the population's most common answer)."""
    if method == "dist":
        shares = list(row["target_shares"])
        return str(row["option_letters"][shares.index(max(shares))])
    key = {"sft": "completion", "dpo": "chosen", "kto": "completion"}[method]
    return str(row[key][-1]["content"])


def example_rows(dataset: Any, method: str, n: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` held-out (validation) rows with distinct items; KTO: desirable rows only."""
    split = dataset["validation"] if "validation" in dataset and len(dataset["validation"]) else None
    if split is None:
        return []
    if method == "kto":
        split = split.filter(lambda r: bool(r["label"]))
    split = split.shuffle(seed=seed)
    seen, rows = set(), []
    for row in split:
        key = row.get("item_id", len(seen))
        if key in seen:
            continue
        seen.add(key)
        rows.append({"item_id": row.get("item_id", ""), "prompt": row["prompt"],
                     "target": target_answer(row, method)})
        if len(rows) == n:
            break
    return rows


def before_after(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]],
                 max_new_tokens: int = 8) -> pd.DataFrame:
    """Greedy answers and the target answer's log-probability, base (adapter off) vs trained."""
    if not rows:
        return pd.DataFrame(columns=["item_id", "question", "target", "before", "after",
                                     "logp_target_before", "logp_target_after"])
    model.eval()
    prompts = [list(r["prompt"]) for r in rows]
    with model.disable_adapter():
        before = greedy_replies(model, tokenizer, prompts, max_new_tokens)
        lp_before = [completion_logprob(model, tokenizer, pr, r["target"]) for pr, r in zip(prompts, rows, strict=True)]
    after = greedy_replies(model, tokenizer, prompts, max_new_tokens)
    lp_after = [completion_logprob(model, tokenizer, pr, r["target"]) for pr, r in zip(prompts, rows, strict=True)]
    return pd.DataFrame({
        "item_id": [r["item_id"] for r in rows],
        "question": [pr[-1]["content"] for pr in prompts],
        "target": [r["target"] for r in rows],
        "before": before, "after": after,
        "logp_target_before": lp_before, "logp_target_after": lp_after,
    })


# ---------------------------------------------------------------- figures


def plot_curves(logs: Mapping[tuple[str, str], pd.DataFrame], metrics: Sequence[tuple[str, str]],
                methods: Sequence[str] | None = None) -> Any:
    """One panel per (metric, title); a line per run, coloured by method, styled by value set.

    ``logs`` maps (value_set, method) to a training log; runs lacking a metric are left out.
    """
    plt = style.pyplot()

    value_sets = sorted({vs for vs, _ in logs})
    styles = ["-", "--", ":", "-."]
    panels = [(col, title) for col, title in metrics
              if any(col in df.columns and df[col].notna().any() for df in logs.values())]
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=style.figsize(1.0, 0.33 * nrow), squeeze=False)
    for ax, (col, title) in zip(axes.flat, panels, strict=False):
        for (vs, method), df in sorted(logs.items()):
            if methods and method not in methods or col not in df.columns or df[col].isna().all():
                continue
            ax.plot(df["step"], df[col], styles[value_sets.index(vs) % len(styles)], marker=".",
                    color=style.METHOD_COLORS.get(method), lw=1,
                    label=f"{style.method_label(method)}, {style.value_set_label(vs)}")
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.legend(frameon=False, fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return fig


LOSS_PANELS: dict[str, tuple[str, str]] = {
    "sft": ("loss", "SFT loss (cross-entropy)"),
    "dpo": ("loss", "DPO loss"),
    "kto": ("loss", "KTO loss"),
    "dist": ("loss", "Dist loss (soft-label cross-entropy)"),
}
PREFERENCE_PANELS: tuple[tuple[str, str], ...] = (
    ("rewards/margins", "reward margin (chosen - rejected)"),
    ("rewards/accuracies", "DPO reward accuracy"),
    ("kl", "KTO KL reference point"),
)


def loss_figure(logs: Mapping[tuple[str, str], pd.DataFrame]) -> Any:
    """One loss panel per method (their scales differ: cross-entropy vs log-sigmoid losses)."""
    plt = style.pyplot()

    methods = [m for m in METHODS if any(mm.rsplit("+", 1)[-1] == m for _, mm in logs)]
    if not methods:
        return None
    fig, axes = plt.subplots(1, len(methods), figsize=style.figsize(1.0, 0.3), squeeze=False)
    value_sets = sorted({vs for vs, _ in logs})
    for ax, method in zip(axes.flat, methods, strict=True):
        for (vs, m), df in sorted(logs.items()):
            # a chained run ("sft+dpo") shares its own method's panel (same loss), drawn open-marked
            if m.rsplit("+", 1)[-1] != method or "loss" not in df.columns:
                continue
            chained = "+" in m
            label = style.value_set_label(vs) + (f" (from {style.method_label(m.rsplit('+', 1)[0])})"
                                                     if chained else "")
            ax.plot(df["step"], df["loss"], ["-", "--", ":", "-."][value_sets.index(vs) % 4],
                    marker="o" if chained else ".", mfc="none" if chained else None,
                    color=style.METHOD_COLORS.get(method), lw=1, label=label)
        ax.set_title(LOSS_PANELS[method][1])
        ax.set_xlabel("optimizer step")
        ax.legend(frameon=False, fontsize=6)
    return fig


# ---------------------------------------------------------------- synthetic data (tests, benchmarks)


def synthetic_alignment_data(method: str, n_items: int = 8, n_options: int = 3, value_set: str = "toy",
                             filler_words: int = 0, seed: int = 0) -> Any:
    """A small DatasetDict in notebook 02's contract format, for tests and benchmarks.

    Each item's "population" prefers option 0; train/validation are split by item (3:1).
    ``filler_words`` lengthens each question (benchmarks at a fixed sequence length).
    """
    import random

    from datasets import Dataset, DatasetDict

    from valuealign import prompts

    check_method(method)
    rng = random.Random(seed)
    filler = " ".join(["background"] * filler_words)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for i in range(n_items):
        split = "validation" if i % 4 == 3 else "train"
        options = [f"option {j} of item {i}" for j in range(n_options)]
        shares = [0.6] + [0.4 / (n_options - 1)] * (n_options - 1)
        for paraphrase_id in range(2):
            order = list(range(n_options))
            rng.shuffle(order)
            prompt = prompts.render_messages(f"Toy question number {i}? {filler}".strip(), options,
                                             order, paraphrase_id)
            base = {"prompt": prompt, "item_id": f"toy-{i}", "paraphrase_id": paraphrase_id,
                    "option_order": order, "value_set": value_set}
            best = prompts.label_for(order, 0)
            worst = prompts.label_for(order, n_options - 1)
            if method == "sft":
                rows[split].append({**base, "completion": prompts.answer_message(best)})
            elif method == "dist":
                rows[split].append({**base, "option_letters": list(prompts.LETTERS[:n_options]),
                                    "target_shares": [shares[o] for o in order]})
            elif method == "dpo":
                rows[split].append({**base, "chosen": prompts.answer_message(best),
                                    "rejected": prompts.answer_message(worst),
                                    "chosen_share": shares[0], "rejected_share": shares[-1]})
            else:
                for j in (0, n_options - 1):
                    rows[split].append({**base, "completion": prompts.answer_message(prompts.label_for(order, j)),
                                        "label": j == 0, "share": shares[j]})
    return DatasetDict({k: Dataset.from_list(v) for k, v in rows.items()})

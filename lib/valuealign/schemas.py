"""One parameter schema per notebook: the names, defaults, ranges, choices and help of each stage's knobs.

Each numbered notebook has a frozen dataclass here (as alignment-handbook's ``configs.py`` has one
per script); a field's default is the notebook's default and its metadata carries the closed range
``bounds`` (for a list parameter: of each element), the allowed ``choices`` (for a list: of each
element) and the one-line ``help``. Why one place: the same knob used to be declared in the
notebook, in the library's dataclasses (``TrainParams``, ``EvalSettings``) and in fallbacks,
with different defaults. Now

- :mod:`valuealign.config` validates profiles and the values in effect against these specs;
- ``TrainParams``, ``params_for_run``, ``EvalSettings`` and notebook 05's refined run take their
  defaults from here (a renamed field maps from the schema's name in one table next to it);
- ``tests/test_schemas.py`` checks that each notebook's ``parameters`` cell (the values a
  researcher reads and edits in JupyterLab) declares exactly these names, defaults, ranges,
  choices and help texts, so the two cannot drift apart.

This module imports nothing of the stages, so every stage module can import it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    """One notebook parameter as validation sees it: default (its type is the parameter's
    type), help, closed range ``[low, high]`` and allowed values."""

    name: str
    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def kind(self) -> str:
        if self.default is None:
            return "any"
        return type(self.default).__name__

    def describe(self) -> str:
        extra = ""
        if self.choices:
            extra = f" one of {{{', '.join(self.choices)}}}"
        elif self.low is not None or self.high is not None:
            extra = f" in [{self.low}, {self.high}]"
        return f"{self.name}: {self.kind}{extra} (default {self.default!r}) - {self.doc}"


def param(
    default: Any,
    help: str,
    *,
    bounds: tuple[float, float] | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A schema field: ``default`` (a list default is copied per instance), its ``help`` and
    either a closed range ``bounds`` or the allowed ``choices``."""
    meta = {"help": help, "bounds": bounds, "choices": choices}
    if isinstance(default, list):
        items = tuple(default)
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- knobs notebooks 04 and 05 share
# Notebook 05 scores its checkpoints exactly as notebook 04 scores runs; these knobs are
# declared once and used by both schemas.


def _n_paraphrases() -> Any:
    return param(1, "prompt paraphrases averaged per item (thesis: 4)", bounds=(1, 4))


def _permutations() -> Any:
    return param(
        "cyclic",
        "option orders per item: all cyclic shifts, or as many seeded random orders",
        choices=("cyclic", "random"),
    )


def _eval_batch_size() -> Any:
    return param(8, "prompts per forward pass", bounds=(1, 512))


def _bootstrap_samples() -> Any:
    return param(1000, "bootstrap resamples for the 95% CIs over items", bounds=(0, 100000))


def _max_eval_items() -> Any:
    return param(5, "items per split, the same for every model (0: all)", bounds=(0, 100000))


def _eval_max_options() -> Any:
    return param(
        4, "only items with at most this many options, a CPU cost cap (thesis: 0, all)", bounds=(0, 26)
    )


# ---------------------------------------------------------------- one schema per notebook


@dataclass(frozen=True)
class SurveyData:
    """Notebook 00_survey_data: which survey sources are read and which rows are kept."""

    sources: list[str] = param(
        ["goqa", "wvs7"], "which sources to load", choices=("goqa", "wvs7", "codebook")
    )
    goqa_file: str = param(
        "auto",
        'GlobalOpinionQA CSV relative to data/raw/ ("auto": the full CSV if present, else the shipped subset)',
    )
    goqa_tolerance: float = param(
        0.02, "how far a country's shares may sum from 1 before the row is dropped", bounds=(0, 0.5)
    )
    wvs7_microdata: str = param(
        "auto", 'WVS-7 respondent file in data/raw/ ("auto": first WVS*.csv/.sav/.dta found; "": none)'
    )
    wvs7_group_by: str = param(
        "B_COUNTRY_ALPHA", "microdata column that defines the groups (country, or e.g. Q260 for sex)"
    )
    wvs7_weight: str = param("W_WEIGHT", 'survey weight column ("" for unweighted)')
    wvs7_min_respondents: int = param(
        100, "a group needs this many valid answers to an item", bounds=(1, 1000000)
    )
    codebook_specs: list[str] = param(
        [], 'YAML codebooks (relative to data/raw/) for other surveys, used when sources has "codebook"'
    )
    min_groups_per_item: int = param(1, "items answered by fewer groups are dropped", bounds=(1, 1000))


@dataclass(frozen=True)
class ValueTaxonomy:
    """Notebook 01_value_taxonomy: embedding, clustering, consensus and validation of the value taxonomy."""

    seed: int = param(0, "random seed for UMAP, the stability subsamples and k-means", bounds=(0, 2147483647))
    taxonomy_mode: str = param(
        "pinned",
        "pinned: the pinned embeddings and taxonomy of data/pinned/ when they match these inputs, else recompute and say so; recompute: re-run and compare with the pin; require-pin: fail without a matching pin",
        choices=("pinned", "recompute", "require-pin"),
    )
    taxonomy_corpus: list[str] = param(
        ["survey"],
        "texts to cluster: survey items, ValueEval arguments, DailyDilemmas value words",
        choices=("survey", "valueeval", "dilemmas"),
    )
    taxonomy_valueeval_max: int = param(
        1000, "at most this many single-label ValueEval training arguments", bounds=(10, 10000)
    )
    taxonomy_embedding_model: str = param(
        "all-MiniLM-L6-v2", "sentence-transformers model: the bundled MiniLM or a local folder (offline)"
    )
    taxonomy_embedding_batch_size: int = param(64, "texts per encoder batch", bounds=(1, 1024))
    umap_n_neighbors: int = param(
        15, "UMAP neighbourhood size (larger keeps more global structure)", bounds=(2, 200)
    )
    umap_n_components: int = param(5, "dimensions of the UMAP space HDBSCAN clusters in", bounds=(2, 50))
    umap_min_dist: float = param(
        0.0, "UMAP min_dist of the clustering space (0 packs clusters tightly)", bounds=(0.0, 1.0)
    )
    umap_n_epochs: int = param(200, "UMAP optimisation epochs", bounds=(10, 2000))
    hdbscan_min_cluster_size: int = param(
        15, "smallest group HDBSCAN reports as a cluster", bounds=(2, 10000)
    )
    hdbscan_min_samples: int = param(
        5, "HDBSCAN density smoothing (larger gives more noise; 0 means min_cluster_size)", bounds=(0, 1000)
    )
    taxonomy_sweep_sizes: list[int] = param(
        [5, 10, 15, 25, 40, 60, 100], "min_cluster_size values of the trade-off sweep", bounds=(2, 10000)
    )
    taxonomy_consensus_runs: int = param(
        50,
        "UMAP + HDBSCAN runs behind the consensus clustering (1 means the single-seed fit, for comparison)",
        bounds=(1, 200),
    )
    taxonomy_consensus_noise: float = param(
        0.0001,
        "std of the Gaussian added to each embedding coordinate in each consensus run",
        bounds=(0.0, 0.01),
    )
    taxonomy_consensus_cut: float = param(
        0.6,
        "average-linkage cut on 1 - co-association: a group's members co-cluster in over 40% of runs on average",
        bounds=(0.05, 0.95),
    )
    taxonomy_consensus_jobs: int = param(
        2, "worker processes for the consensus runs (the result does not depend on it)", bounds=(1, 64)
    )
    taxonomy_curve_sizes: list[int] = param(
        [1, 5, 10, 25, 50], "runs per consensus in the stability curve (disjoint seed sets)", bounds=(1, 200)
    )
    taxonomy_avx2_check: bool = param(
        True,
        "re-embed the texts with PyTorch's AVX2 kernels (ATEN_CPU_CAPABILITY avx2; cached) and compare the consensus",
    )
    taxonomy_value_prototypes: str = param(
        "project+valueeval",
        "texts behind each basic value's prototype: ours, or ours plus ValueEval's value descriptions",
        choices=("project", "project+valueeval"),
    )
    taxonomy_mapping_folds: int = param(
        5, "folds of the cross-validated logistic regression on ValueEval", bounds=(2, 20)
    )
    taxonomy_permutations: int = param(
        1000, "label permutations in the within/between-cluster profile test", bounds=(100, 100000)
    )
    taxonomy_min_countries: int = param(
        5, "countries an item needs (and an item pair must share) for the profile test", bounds=(3, 100)
    )
    taxonomy_stability_runs: int = param(
        10, "single-seed subsample refits for the stability estimate (mean pairwise ARI)", bounds=(2, 100)
    )
    taxonomy_stability_fraction: float = param(
        0.8, "share of texts drawn (without replacement) in each refit", bounds=(0.1, 1.0)
    )
    taxonomy_top_terms: int = param(5, "c-TF-IDF terms in each cluster's label", bounds=(1, 20))
    taxonomy_circumplex_temperature: float = param(
        0.02, "softmax temperature placing clusters on the circumplex", bounds=(0.001, 1.0)
    )
    taxonomy_table_rows: int = param(25, "largest clusters listed in the LaTeX table", bounds=(1, 500))


@dataclass(frozen=True)
class AlignmentDatasets:
    """Notebook 02_alignment_datasets: value sets, the item split and the SFT/DPO/KTO/dist rows."""

    seed: int = param(
        0, "random seed for splits, clustering, answer sampling and prompt variants", bounds=(0, 2147483647)
    )
    value_sets: list[str] = param(
        ["united-states", "germany"],
        'value sets: group names or ids; "A+B" mixes groups; "cluster-<k>" picks a derived one; "<id>-shuffled" adds the shuffled-target negative control of <id>',
    )
    group_type: str = param(
        "country", "which groups value sets are made of (group_type in distributions.parquet)"
    )
    mixture_weighting: str = param("equal", "member weights in a mixture", choices=("equal", "respondents"))
    mixture_missing: str = param(
        "renormalize",
        "an item a member lacks: mix the members that have it, or drop the item",
        choices=("renormalize", "drop"),
    )
    valueset_clustering: bool = param(
        True, "also derive value sets by clustering groups on their answer profiles"
    )
    valueset_min_items: int = param(50, "groups with fewer items are not clustered", bounds=(1, 100000))
    valueset_min_shared: int = param(
        5, "shared items two groups need for a direct distance", bounds=(1, 10000)
    )
    valueset_umap_n_neighbors: int = param(10, "UMAP neighbours in the group map", bounds=(2, 200))
    valueset_min_cluster_size: int = param(4, "HDBSCAN minimum groups per cluster", bounds=(2, 1000))
    valueset_max_clusters: int = param(3, "largest clusters kept as value sets cluster-1..", bounds=(0, 50))
    split_validation_fraction: float = param(0.1, "share of items for validation", bounds=(0.0, 0.5))
    split_test_fraction: float = param(0.1, "share of items for test", bounds=(0.0, 0.5))
    split_cluster_fraction: float = param(
        0.1, "share of items in whole held-out strata (test_cluster)", bounds=(0.0, 0.5)
    )
    split_stratify_by: str = param(
        "auto",
        "strata: taxonomy clusters if present, else topic clusters of the questions",
        choices=("auto", "taxonomy", "section", "topic"),
    )
    split_n_topics: int = param(
        12, "topic clusters (k-means on MiniLM embeddings) when not stratified by taxonomy", bounds=(2, 200)
    )
    split_dup_threshold: float = param(
        0.95,
        "cosine similarity from which two questions are near-duplicates (kept in one split)",
        bounds=(0.5, 1.0),
    )
    split_min_items: int = param(5, "items a value set needs in every split", bounds=(1, 100000))
    dataset_max_items: int = param(
        60,
        "cap on train and on validation items per value set written as datasets (0: all)",
        bounds=(0, 1000000),
    )
    sft_samples_per_item: int = param(
        4, "SFT answers sampled per item from the value set's distribution", bounds=(1, 100)
    )
    sft_majority_only: bool = param(False, "SFT on the majority option only instead of samples")
    dpo_min_margin: float = param(
        0.1, "minimum share difference between chosen and rejected", bounds=(0.0, 1.0)
    )
    dpo_max_pairs_per_item: int = param(
        3, "DPO pairs per item, largest share difference first", bounds=(1, 325)
    )
    kto_threshold: float = param(
        1.0,
        "KTO: desirable iff share is at least kto_threshold / n_options (1: above chance)",
        bounds=(0.0, 26.0),
    )
    kto_prompts_per_item: int = param(
        1, "KTO prompt variants per item (each with every option as a completion)", bounds=(1, 20)
    )
    dpo_pair_direction: str = param(
        "higher",
        "DPO pairs: chosen is the option with the higher share, or drawn with probability s_i / (s_i + s_j)",
        choices=("higher", "sampled"),
    )
    kto_labels: str = param(
        "threshold",
        "KTO labels: the kto_threshold rule, or per prompt one desirable answer drawn from the shares",
        choices=("threshold", "sampled"),
    )
    dist_prompts_per_item: int = param(
        4,
        "dist: prompt variants per item, each with the value set's shares as the soft target",
        bounds=(1, 100),
    )


@dataclass(frozen=True)
class Finetune:
    """Notebook 03_finetune: the (Q)LoRA runs (mapped onto each run's ``TrainParams`` by ``params_for_run``)."""

    model_profile: str = param(
        "smollm2-135m",
        "base model",
        choices=("smollm2-135m", "llama-3.1-8b", "mistral-7b", "qwen2.5-7b", "qwen2.5-14b", "llama-2-13b"),
    )
    model_path: str = param(
        "",
        "local folder with the base model's weights (empty: the profile's default, bundled folder or hub id)",
    )
    methods: list[str] = param(
        ["sft", "dpo", "kto", "dist"], "alignment methods to train", choices=("sft", "dpo", "kto", "dist")
    )
    value_sets: list[str] = param(
        ["united-states", "germany"], "value sets (slugs made by notebook 02) to align to"
    )
    chains: list[str] = param(
        ["dpo<-sft"],
        "chained runs per value set: <method><-<parent method> continues the parent run's adapter (DPO's reference is then the SFT model)",
        choices=("dpo<-sft", "kto<-sft", "dist<-sft", "dpo<-dist", "kto<-dist"),
    )
    data_source: str = param(
        "survey",
        "training data: survey answers (notebook 02) or consultation votes (notebook 05)",
        choices=("survey", "consultation"),
    )
    seed: int = param(0, "random seed: LoRA init, data order, subsample", bounds=(0, 2147483647))
    quantization: str = param(
        "auto", "base weights (auto: 4bit on CUDA, none on CPU)", choices=("auto", "4bit", "none")
    )
    strict: bool = param(False, "turn fallbacks (4-bit or paged optimiser without CUDA) into errors")
    cpu_rehearsal: bool = param(
        False,
        "make rehearse: keep 4-bit NF4 and the paged optimiser on CPU (bitsandbytes) instead of falling back",
    )
    lora_r: int = param(16, "LoRA rank (alignment-handbook zephyr QLoRA SFT: 16)", bounds=(1, 1024))
    lora_alpha: int = param(16, "LoRA alpha; the update is scaled by alpha / r", bounds=(1, 4096))
    lora_dropout: float = param(0.05, "dropout on the LoRA input", bounds=(0.0, 0.9))
    lora_target: str = param(
        "all-linear", "adapted modules: all-linear (QLoRA) or comma-separated names, e.g. q_proj,v_proj"
    )
    sft_learning_rate: float = param(0.0002, "SFT learning rate (QLoRA: 2e-4)", bounds=(1e-08, 0.1))
    dpo_learning_rate: float = param(
        5e-05, "DPO learning rate (embedded default; thesis: 5e-6 as zephyr's QLoRA DPO)", bounds=(1e-08, 0.1)
    )
    kto_learning_rate: float = param(
        5e-05, "KTO learning rate (embedded default; thesis: 5e-6)", bounds=(1e-08, 0.1)
    )
    dist_learning_rate: float = param(
        0.0002, "dist learning rate (a one-token cross-entropy like SFT's: 2e-4)", bounds=(1e-08, 0.1)
    )
    train_lr_scheduler: str = param(
        "constant", "learning-rate schedule", choices=("constant", "constant_with_warmup", "cosine", "linear")
    )
    train_warmup_ratio: float = param(0.0, "share of steps with linear warm-up", bounds=(0.0, 0.5))
    train_max_grad_norm: float = param(0.3, "gradient clipping (QLoRA: 0.3)", bounds=(0.0, 100.0))
    max_steps: int = param(3, "optimizer steps per run (-1: train for `epochs`)", bounds=(-1, 10000000))
    epochs: float = param(1.0, "passes over the training rows when max_steps is -1", bounds=(0.01, 100.0))
    train_batch_size: int = param(2, "rows per device and step (KTO needs at least 2)", bounds=(1, 1024))
    grad_accum: int = param(
        1, "gradient accumulation steps (effective batch: train_batch_size x grad_accum)", bounds=(1, 1024)
    )
    max_length: int = param(
        256, "token limit of prompt + answer; longer rows are truncated", bounds=(32, 32768)
    )
    dpo_beta: float = param(0.1, "DPO temperature beta (trl default; zephyr: 0.01)", bounds=(0.001, 10.0))
    dpo_precompute_ref: bool = param(
        False,
        "DPO reference log-probabilities computed once before training (trl precompute_ref_log_probs) instead of an adapter-off forward per step",
    )
    kto_desirable_weight: float = param(
        0.0, "KTO weight of desirable rows (0: balanced from the data)", bounds=(0.0, 100.0)
    )
    kto_undesirable_weight: float = param(
        0.0, "KTO weight of undesirable rows (0: balanced from the data)", bounds=(0.0, 100.0)
    )
    train_max_rows: int = param(
        64, "training rows per run, a seeded subsample (0: all)", bounds=(0, 100000000)
    )
    train_eval_rows: int = param(
        0,
        "validation rows scored once after training, metrics in the model card (0: none)",
        bounds=(0, 1000000),
    )
    train_save_steps: int = param(
        3, "save a resumable checkpoint every this many optimizer steps", bounds=(1, 1000000)
    )
    train_optim: str = param(
        "auto",
        "optimiser (auto: paged_adamw_8bit on CUDA, adamw_torch on CPU)",
        choices=("auto", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_torch"),
    )
    train_gradient_checkpointing: str = param(
        "auto", "recompute activations to save memory (auto: on with CUDA)", choices=("auto", "on", "off")
    )
    train_examples: int = param(
        3, "held-out items answered before and after training, per run", bounds=(0, 20)
    )
    train_max_new_tokens: int = param(4, "tokens generated per example answer", bounds=(1, 256))


@dataclass(frozen=True)
class Evaluate:
    """Notebook 04_evaluate: which runs and items are scored, and how (``EvalSettings.from_parameters``)."""

    runs: list[str] = param(
        ["*"], "fine-tuned runs to evaluate: run ids or globs under runs/ (default: every finished run)"
    )
    value_sets: list[str] = param(
        ["united-states", "germany"],
        "value sets (ids made by notebook 02, or its group names) to evaluate against ([]: all)",
    )
    eval_splits: list[str] = param(
        ["validation", "test", "test_cluster"],
        "splits to evaluate; best is chosen on validation; train only as the positive control (the runs' own train items)",
        choices=("test", "test_cluster", "validation", "train"),
    )
    n_paraphrases: int = _n_paraphrases()
    permutations: str = _permutations()
    eval_batch_size: int = _eval_batch_size()
    bootstrap_samples: int = _bootstrap_samples()
    max_eval_items: int = _max_eval_items()
    eval_max_options: int = _eval_max_options()
    eval_n_dilemmas: int = param(
        4, "DailyDilemmas scored per model (0: skip; more than exist: all, and said so)", bounds=(0, 100000)
    )
    eval_quantization: str = param(
        "as_trained",
        "base weights every model is scored on: the runs' training quantisation, or forced",
        choices=("as_trained", "4bit", "none"),
    )
    eval_drift_tokens: int = param(
        6, "greedy answer tokens per general prompt for the capability-drift check (0: skip)", bounds=(0, 256)
    )
    strict: bool = param(False, "stop at a run folder without adapter/manifest/DONE instead of skipping it")
    model_profile: str = param(
        "smollm2-135m",
        "base model profile (valuealign.models.PROFILES)",
        choices=("smollm2-135m", "llama-3.1-8b", "mistral-7b", "qwen2.5-7b", "qwen2.5-14b", "llama-2-13b"),
    )
    model_path: str = param("", 'local folder of the base model ("": the profile\'s default)')
    seed: int = param(0, "seed for item selection, random orders and the bootstrap", bounds=(0, 2147483647))


@dataclass(frozen=True)
class PublicConsultation:
    """Notebook 05_public_consultation: Polis grouping, consultation data, the refined run and its evaluation."""

    seed: int = param(
        0,
        "random seed: UMAP, DPO pair sampling, the held-out split, the refined run and the statements scored (the Polis groups are deterministic)",
        bounds=(0, 2147483647),
    )
    consultation_conversations: list[str] = param(
        ["scoop-hivemind.ubi", "scoop-hivemind.affordable-housing", "scoop-hivemind.biodiversity"],
        "Polis conversations in data/raw/polis/",
        choices=(
            "scoop-hivemind.ubi",
            "scoop-hivemind.affordable-housing",
            "scoop-hivemind.biodiversity",
            "american-assembly.bowling-green",
        ),
    )
    consultation_unknown_comments: str = param(
        "error",
        "votes on comment ids missing from comments.csv: stop, or drop and report",
        choices=("error", "drop"),
    )
    consultation_min_votes_per_participant: int = param(
        7, "participants with fewer votes are not grouped (Polis: 7)", bounds=(1, 1000)
    )
    consultation_include_unmoderated: bool = param(
        True, "form groups on not-yet-moderated statements too (never exported)"
    )
    consultation_k_max: int = param(
        5, "groups of base clusters: k in 2..k_max with the best silhouette (Polis: 5)", bounds=(2, 10)
    )
    consultation_umap_n_neighbors: int = param(
        15, "UMAP neighbours for the thesis's own grouping", bounds=(2, 200)
    )
    consultation_hdbscan_min_cluster_size: int = param(10, "smallest HDBSCAN group", bounds=(2, 1000))
    consultation_grouping: str = param(
        "polis", "groups used for consensus and per-group value sets", choices=("polis", "umap_hdbscan")
    )
    consultation_min_votes_per_statement: int = param(
        5, "statements seen by fewer participants are not exported", bounds=(1, 1000)
    )
    consultation_consensus_threshold: float = param(
        0.5, "KTO row desirable if consensus (geometric mean over groups) exceeds this", bounds=(0.0, 1.0)
    )
    consultation_dpo_margin: float = param(
        0.1, "smallest consensus difference between chosen and rejected", bounds=(0.0, 1.0)
    )
    consultation_dpo_pairs_per_statement: int = param(
        3, "rejected partners sampled per chosen statement", bounds=(1, 50)
    )
    consultation_validation_fraction: float = param(
        0.2, "share of statements in the validation split", bounds=(0.0, 0.5)
    )
    consultation_test_fraction: float = param(
        0.2,
        "share of each conversation's statements held out as the test split: never trained on, only for the final evaluation",
        bounds=(0.0, 0.5),
    )
    consultation_refine_from: str = param(
        "sft",
        "method of notebook 03's survey run that the consultation run continues",
        choices=("sft", "dpo", "kto", "dist"),
    )
    consultation_refine_value_set: str = param(
        "united-states", "value set of that survey run (one of notebook 03's value_sets)"
    )
    consultation_refine_method: str = param(
        "kto",
        "method of the consultation-refined run (KTO: desirable if the groups' consensus passes the threshold)",
        choices=("sft", "dpo", "kto"),
    )
    consultation_refine_data: str = param(
        "consultation-all-everyone", "consultation value set the refined run trains on (exported above)"
    )
    consultation_refine_steps: int = param(
        3, "optimizer steps of the refined run (-1: one epoch)", bounds=(-1, 10000000)
    )
    consultation_refine_learning_rate: float = param(
        5e-05, "learning rate of the refined run", bounds=(1e-08, 0.1)
    )
    consultation_refine_batch_size: int = param(
        2, "rows per step of the refined run (KTO needs at least 2)", bounds=(1, 1024)
    )
    consultation_refine_max_rows: int = param(
        64, "training rows of the refined run, a seeded subsample (0: all)", bounds=(0, 100000000)
    )
    consultation_eval_max_statements: int = param(
        4,
        "held-out statements scored per conversation, the same for every model (0: all)",
        bounds=(0, 100000),
    )
    n_paraphrases: int = _n_paraphrases()
    permutations: str = _permutations()
    eval_batch_size: int = _eval_batch_size()
    bootstrap_samples: int = _bootstrap_samples()
    max_eval_items: int = _max_eval_items()
    eval_max_options: int = _eval_max_options()


@dataclass(frozen=True)
class ThesisFigures:
    """Notebook 06_thesis_figures: which evaluation is summarised and the summary figures' widths."""

    eval_hash: str = param(
        "",
        'which evaluation in runs/eval_summary.parquet to summarise ("": the one named for this profile in runs/_evaluations/<profile>.json)',
    )
    summary_runtime_fraction: float = param(
        0.8, "width of the run-time figure, as a fraction of the text width", bounds=(0.3, 1.0)
    )
    summary_scatter_fraction: float = param(
        0.6, "width of the cost-vs-alignment figure, fraction of the text width", bounds=(0.3, 1.0)
    )
    thesis_fail_on_error: bool = param(
        False, "stop this notebook when the thesis check finds errors (make figures/thesis always do)"
    )


SCHEMAS: dict[str, type] = {
    "00_survey_data": SurveyData,
    "01_value_taxonomy": ValueTaxonomy,
    "02_alignment_datasets": AlignmentDatasets,
    "03_finetune": Finetune,
    "04_evaluate": Evaluate,
    "05_public_consultation": PublicConsultation,
    "06_thesis_figures": ThesisFigures,
}


def schema_for(notebook: str) -> type | None:
    """The schema of a numbered notebook by its name (``03_finetune``); None for a notebook
    without one (a sweep's own notebook, described by its parameters cell)."""
    return SCHEMAS.get(notebook)


def specs_of(schema: type) -> dict[str, ParamSpec]:
    """The validation specs of a schema's fields, in declaration order (the parameters cell's
    order). Bounds are floats, as the parameters cell's ``[lo, hi]`` has always been read."""
    out: dict[str, ParamSpec] = {}
    for f in fields(schema):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        bounds = f.metadata.get("bounds")
        low, high = (float(bounds[0]), float(bounds[1])) if bounds is not None else (None, None)
        out[f.name] = ParamSpec(
            f.name, default, f.metadata.get("help", ""), low, high, f.metadata.get("choices")
        )
    return out


def defaults(schema: type) -> dict[str, Any]:
    """A schema's defaults as a dict: the embedded default's parameters of that notebook."""
    return {name: spec.default for name, spec in specs_of(schema).items()}

"""Package chosen runs and datasets for publication: ``release/`` (nothing is uploaded).

Why: the thesis promises aligned adapters and a public dataset of the consultation. A
release folder is what one uploads to the Hugging Face Hub or Zenodo: every part carries its
card (model card or datasheet) and its licence, the whole has a ``CITATION.cff``, and
``SHA256SUMS`` (``sha256sum -c`` format) lets anyone check that nothing changed.

Layout::

    release/
      README.md          what is inside, the licence of each part
      LICENSE            the code's licence (MIT)
      CITATION.cff
      licences.json      part -> SPDX licence id
      SHA256SUMS         every other file, sorted
      adapters/<run_id>/ adapter files, README.md (model card), LICENSE.txt, manifest.json
      datasets/alignment/<value_set>/   <method>/ (HF DatasetDict), DATASHEET.md, LICENSE.txt
      datasets/consultation/            <value_set>/<method>/, DATASHEET.md, LICENSE.txt

Licences (``data/README.md``): everything derived from GlobalOpinionQA (the survey
alignment data and adapters trained on it) stays CC BY-NC-SA 4.0; the consultation data
derives from Polis open data, CC BY 4.0 with attribution; an adapter's licence is that of
its training data, and the base model's own licence applies to the base weights.
The folder is built next to its target and renamed into place (atomic); the same inputs give
the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from valuealign import paths, provenance

RELEASE_DIR = paths.ROOT / "release"
CHECKSUMS = "SHA256SUMS"
CODE_LICENCE = "MIT"
SURVEY_DATA_LICENCE = "CC-BY-NC-SA-4.0"
CONSULTATION_DATA_LICENCE = "CC-BY-4.0"
LICENCE_URLS = {
    "MIT": "https://opensource.org/license/mit",
    "CC-BY-NC-SA-4.0": "https://creativecommons.org/licenses/by-nc-sa/4.0/legalcode",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/legalcode",
}
DATA_LICENCE = {"survey": SURVEY_DATA_LICENCE, "consultation": CONSULTATION_DATA_LICENCE}
# Base models of valuealign.models.PROFILES: (hub id, licence of the base weights).
BASE_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0"),
    "llama-3.1-8b": ("meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 Community License"),
    "mistral-7b": ("mistralai/Mistral-7B-Instruct-v0.3", "Apache-2.0"),
    "qwen2.5-7b": ("Qwen/Qwen2.5-7B-Instruct", "Apache-2.0"),
    "qwen2.5-14b": ("Qwen/Qwen2.5-14B-Instruct", "Apache-2.0"),
    "llama-2-13b": ("meta-llama/Llama-2-13b-chat-hf", "Llama 2 Community License"),
}
SURVEY_ATTRIBUTION = (
    "Derived from GlobalOpinionQA (Durmus et al. 2023, arXiv:2306.16388, CC BY-NC-SA 4.0; "
    "underlying survey data (c) Pew Research Center and WVSA, aggregated country marginals only) "
    "and the World Values Survey wave 7 questionnaire (Haerpfer et al. 2022, doi:10.14281/18241.24)."
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class ReleaseError(ValueError):
    """A run or dataset cannot be released as asked; the message names it."""


@dataclass(frozen=True)
class ReleaseInputs:
    """Where the release reads from (the pipeline's folders unless a test points elsewhere)."""

    runs: Path = paths.RUNS
    alignment: Path = paths.ALIGNMENT
    consultation: Path = paths.CONSULTATION
    code_licence: Path = paths.ROOT / "LICENSE"


# ------------------------------------------------------------------------------- choose
def finished_runs(runs_dir: Path) -> list[str]:
    """Run ids with a ``DONE`` marker and an adapter (the default choice)."""
    if not runs_dir.is_dir():
        return []
    return sorted(p.name for p in runs_dir.iterdir()
                  if (p / "DONE").exists() and (p / "adapter" / ADAPTER_FILES[0]).exists())


def run_manifest(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """The run's manifest, after checking that the run is finished and has its adapter."""
    run = runs_dir / run_id
    if not run.is_dir():
        raise ReleaseError(f"run {run_id!r}: no folder {run} (finished runs: {finished_runs(runs_dir)})")
    if not (run / "DONE").exists():
        raise ReleaseError(f"run {run_id!r}: {run / 'DONE'} missing (the run did not finish)")
    missing = [f for f in ADAPTER_FILES if not (run / "adapter" / f).exists()]
    if missing:
        raise ReleaseError(f"run {run_id!r}: adapter files missing in {run / 'adapter'}: {missing}")
    if not (run / "manifest.json").exists():
        raise ReleaseError(f"run {run_id!r}: {run / 'manifest.json'} missing")
    manifest = provenance.read_json(run / "manifest.json")
    params = manifest.get("parameters", {})
    for key in ("model_profile", "method", "value_set"):
        if key not in params:
            raise ReleaseError(f"run {run_id!r}: {run / 'manifest.json'} has no parameters.{key}")
    return manifest


# ---------------------------------------------------------------------------- metrics
def run_metrics(runs_dir: Path, run_id: str) -> pd.DataFrame:
    """The run's evaluation rows (mean with 95 % CI) from ``runs/eval_summary.parquet``.

    Empty when the run was not evaluated; the card then says so rather than inventing numbers.
    """
    summary = runs_dir / "eval_summary.parquet"
    cols = ["eval_hash", "split", "target_value_set", "metric", "mean", "ci_low", "ci_high", "n_items"]
    if not summary.exists():
        return pd.DataFrame(columns=cols)
    df = pd.read_parquet(summary)
    missing = [c for c in ("run", *cols) if c not in df.columns]
    if missing:
        raise ReleaseError(f"{summary}: columns {missing} missing")
    rows = df.loc[df["run"] == run_id, cols]
    return rows.sort_values(["eval_hash", "split", "target_value_set", "metric"]).reset_index(drop=True)


def _metrics_markdown(metrics: pd.DataFrame) -> str:
    if metrics.empty:
        return "Not evaluated (no rows for this run in `runs/eval_summary.parquet`).\n"
    lines = ["| evaluation | split | target | metric | mean | 95 % CI | items |",
             "|---|---|---|---|---|---|---|"]
    for r in metrics.itertuples(index=False):
        ci = ("n/a (too few items)" if pd.isna(r.ci_low) or pd.isna(r.ci_high)
              else f"[{r.ci_low:.4f}, {r.ci_high:.4f}]")
        lines.append(f"| `{r.eval_hash}` | {r.split} | {r.target_value_set} | {r.metric} | "
                     f"{r.mean:.4f} | {ci} | {int(r.n_items)} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ cards
def adapter_licence(manifest: dict[str, Any]) -> str:
    """The adapter's licence: that of its training data (share-alike for survey data)."""
    source = manifest["parameters"].get("data_source", "survey")
    if source not in DATA_LICENCE:
        raise ReleaseError(f"run {manifest['parameters'].get('run_id')!r}: unknown data_source {source!r}")
    return DATA_LICENCE[source]


def model_card(run_id: str, manifest: dict[str, Any], metrics: pd.DataFrame) -> str:
    """Hugging Face model card: base model, data, licence, metrics with CIs, hyperparameters."""
    p = manifest["parameters"]
    profile = p["model_profile"]
    hub_id, base_licence = BASE_MODELS.get(profile, (p.get("model_path") or profile, "see the base model"))
    source = p.get("data_source", "survey")
    licence = adapter_licence(manifest)
    data = (f"`datasets/alignment/{p['value_set']}/{p['method']}/`" if source == "survey"
            else f"`datasets/consultation/{p['value_set']}/{p['method']}/`")
    attribution = SURVEY_ATTRIBUTION if source == "survey" else _polis_attribution()
    hyper = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(p.items()))
    train = manifest.get("extra", {}).get("metrics", {})
    train_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(train.items()))
    return f"""---
base_model: {hub_id}
library_name: peft
license: {licence.lower()}
tags: [valuealign, {p['method']}, lora]
---
# LoRA adapter `{run_id}`

{p['method'].upper()} fine-tune of **{hub_id}** (profile `{profile}`) towards the answer
distributions of the value set **{p['value_set']}** ({source} data), seed {p.get('seed')}.
Made by `valuealign.training` (notebook 03), git commit `{manifest.get('git', {}).get('commit')}`.

## Licence
- This adapter: **{licence}** ({LICENCE_URLS[licence]}), the licence of its training data.
- Base weights (not included): {base_licence} ({hub_id}).

## Training data
{data} in this release. {attribution}

## Evaluation (notebook 04; mean with 95 % bootstrap CI)
{_metrics_markdown(metrics)}
## Training
| metric | value |
|---|---|
{train_rows}

## Hyperparameters
| parameter | value |
|---|---|
{hyper}
"""


def _polis_attribution() -> str:
    from valuealign import consultation

    return consultation.POLIS_ATTRIBUTION + " " + consultation.POLIS_CITATION


def _dataset_rows(folder: Path) -> dict[str, int]:
    """Rows per split of a saved DatasetDict, from its arrow metadata (no full load)."""
    out: dict[str, int] = {}
    for split in sorted(p for p in folder.iterdir() if p.is_dir()):
        state = split / "dataset_info.json"
        files = sorted(split.glob("*.arrow"))
        if not files or not state.exists():
            continue
        import pyarrow as pa

        n = 0
        for f in files:
            with pa.memory_map(str(f)) as src:
                n += pa.ipc.open_stream(src).read_all().num_rows
        out[split.name] = n
    return out


def alignment_datasheet(value_set: str, folder: Path) -> str:
    """Datasheet of one survey value set's alignment data: methods, rows, source, licence."""
    methods = sorted(p.name for p in folder.iterdir() if (p / "dataset_dict.json").exists())
    rows = "\n".join(f"| {m} | " + ", ".join(f"{k} {v}" for k, v in _dataset_rows(folder / m).items())
                     + " |" for m in methods)
    cards = "\n\n".join(f"### {m}\n\n" + (folder / m / "README.md").read_text(encoding="utf-8")
                        for m in methods if (folder / m / "README.md").exists())
    return f"""# Datasheet: alignment data for the value set `{value_set}`

**Licence: {SURVEY_DATA_LICENCE}** ({LICENCE_URLS[SURVEY_DATA_LICENCE]}). {SURVEY_ATTRIBUTION}
Made by notebook 02 (`valuealign.datasets`): one row schema per method, Hugging Face `DatasetDict`
saved to disk (`datasets.load_from_disk`). Splits are by survey item, shared by every value set.

| method | rows per split |
|---|---|
{rows}

## The cards written with each dataset

{cards}
"""


# ------------------------------------------------------------------------------ build
def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", ".*", "cache-*.arrow"))


def _licence_text(licence: str) -> str:
    return f"{licence}\n{LICENCE_URLS[licence]}\n"


def _git_date() -> str:
    """Date of the current commit (a fixed date keeps the release reproducible)."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs"], cwd=paths.ROOT, capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
        return out or "1970-01-01"
    except (OSError, subprocess.SubprocessError):
        return "1970-01-01"


def write_checksums(root: Path) -> Path:
    """``SHA256SUMS`` over every file below ``root`` except itself, sorted by path."""
    lines = [f"{provenance.sha256_file(f)}  {f.relative_to(root).as_posix()}"
             for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS)]
    target = root / CHECKSUMS
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def verify_release(root: Path) -> list[str]:
    """Problems found in a release folder (empty list = sound).

    Checks every checksum, that every file is listed, that each adapter has a model card
    naming its base model, licence and metrics, and that each part has a licence.
    """
    problems: list[str] = []
    sums = root / CHECKSUMS
    if not sums.exists():
        return [f"{sums} missing"]
    listed: dict[str, str] = {}
    for n, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"{sums}:{n}: not '<sha256>  <path>'")
            continue
        listed[name] = digest
    present = {f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file() and f.name != CHECKSUMS}
    problems += [f"{name}: listed in {CHECKSUMS} but missing" for name in sorted(set(listed) - present)]
    problems += [f"{name}: not listed in {CHECKSUMS}" for name in sorted(present - set(listed))]
    problems += [f"{name}: checksum differs" for name in sorted(set(listed) & present)
                 if provenance.sha256_file(root / name) != listed[name]]
    for required in ("LICENSE", "CITATION.cff", "README.md", "licences.json"):
        if not (root / required).exists():
            problems.append(f"{required} missing")
    licences = json.loads((root / "licences.json").read_text()) if (root / "licences.json").exists() else {}
    parts = [p for p in (root / "adapters").glob("*") if p.is_dir()]
    parts += [p for p in (root / "datasets" / "alignment").glob("*") if p.is_dir()]
    parts += [p for p in [root / "datasets" / "consultation"] if p.is_dir()]
    for part in sorted(parts):
        problems += _part_licence_problems(root, part, licences)
        rel = part.relative_to(root).as_posix()
        if rel.startswith("adapters/"):
            text = (part / "README.md").read_text(encoding="utf-8") if (part / "README.md").exists() else ""
            for needle in ("base_model:", "license:", "## Evaluation", "## Training data"):
                if needle not in text:
                    problems.append(f"{rel}/README.md: no '{needle}'")
        elif not (part / "DATASHEET.md").exists():
            problems.append(f"{rel}/DATASHEET.md missing")
    unknown = set(licences) - {"code"} - {p.relative_to(root).as_posix() for p in parts}
    problems += [f"licences.json names {u}, which is not in the release" for u in sorted(unknown)]
    if licences.get("code") != CODE_LICENCE:
        problems.append(f"licences.json: code licence is {licences.get('code')!r}, expected {CODE_LICENCE}")
    return sorted(set(problems))


def _part_licence_problems(root: Path, part: Path, licences: dict[str, str]) -> list[str]:
    rel = part.relative_to(root).as_posix()
    lic = part / "LICENSE.txt"
    if not lic.exists():
        return [f"{rel}/LICENSE.txt missing"]
    first = lic.read_text(encoding="utf-8").splitlines()[0]
    if licences.get(rel) != first:
        return [f"{rel}: LICENSE.txt says {first!r}, licences.json says {licences.get(rel)!r}"]
    return []


def _citation(version: str, date: str, runs: Sequence[str]) -> str:
    return f"""cff-version: 1.2.0
message: "If you use these adapters, datasets or code, please cite them as below."
title: "valuealign: language models aligned to representatively collected human values (release)"
type: dataset
version: "{version}"
date-released: "{date}"
license: {CODE_LICENCE}
authors:
  - name: "The valuealign authors"
keywords: [alignment, values, surveys, polis, lora]
abstract: "LoRA adapters ({len(runs)}) aligned to survey-based value sets, their training data and
  the public-consultation data, with model cards, datasheets and checksums. Data licences differ
  by part: see licences.json."
references:
  - type: article
    title: "Towards Measuring the Representation of Subjective Global Opinions in Language Models"
    authors: [{{family-names: Durmus, given-names: Esin}}]
    year: 2023
    url: "https://arxiv.org/abs/2306.16388"
  - type: article
    title: "Polis: Scaling deliberation by mapping high dimensional opinion spaces"
    authors: [{{family-names: Small, given-names: Christopher}}]
    year: 2021
    journal: "Recerca"
"""


def build_release(runs: Sequence[str] | None = None, *, value_sets: Sequence[str] | None = None,
                  with_consultation: bool = True, out: Path = RELEASE_DIR,
                  inputs: ReleaseInputs | None = None, version: str = "0.1.0") -> Path:
    """Build ``out`` from the chosen runs (default: every finished run) and their datasets.

    ``value_sets``: survey alignment value sets to include (default: those the chosen survey
    runs trained on). Written into a sibling temporary folder, checked, then renamed over
    ``out``. Raises :class:`ReleaseError` naming the run or folder that is missing.
    """
    src = inputs or ReleaseInputs()
    run_ids = list(runs) if runs else finished_runs(src.runs)
    if not run_ids:
        raise ReleaseError(f"no finished run under {src.runs} (run notebook 03, or name runs with --runs)")
    manifests = {r: run_manifest(src.runs, r) for r in run_ids}
    if value_sets is None:
        value_sets = sorted({m["parameters"]["value_set"] for m in manifests.values()
                             if m["parameters"].get("data_source", "survey") == "survey"})
    for vs in value_sets:
        if not (src.alignment / vs).is_dir():
            raise ReleaseError(f"value set {vs!r}: no alignment data at {src.alignment / vs} (run notebook 02)")
    if with_consultation and not (src.consultation / "DATASHEET.md").exists():
        raise ReleaseError(f"{src.consultation / 'DATASHEET.md'} missing (run notebook 05, or --no-consultation)")
    if not src.code_licence.exists():
        raise ReleaseError(f"{src.code_licence} missing: the code's licence file")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        licences: dict[str, str] = {"code": CODE_LICENCE}
        shutil.copyfile(src.code_licence, tmp / "LICENSE")
        for run_id in run_ids:
            part = tmp / "adapters" / run_id
            part.mkdir(parents=True)
            for f in ADAPTER_FILES:
                shutil.copyfile(src.runs / run_id / "adapter" / f, part / f)
            shutil.copyfile(src.runs / run_id / "manifest.json", part / "manifest.json")
            card = model_card(run_id, manifests[run_id], run_metrics(src.runs, run_id))
            (part / "README.md").write_text(card, encoding="utf-8")
            lic = adapter_licence(manifests[run_id])
            (part / "LICENSE.txt").write_text(_licence_text(lic), encoding="utf-8")
            licences[f"adapters/{run_id}"] = lic
        for vs in value_sets:
            part = tmp / "datasets" / "alignment" / vs
            _copy_tree(src.alignment / vs, part)
            (part / "DATASHEET.md").write_text(alignment_datasheet(vs, src.alignment / vs), encoding="utf-8")
            (part / "LICENSE.txt").write_text(_licence_text(SURVEY_DATA_LICENCE), encoding="utf-8")
            licences[f"datasets/alignment/{vs}"] = SURVEY_DATA_LICENCE
        if with_consultation:
            part = tmp / "datasets" / "consultation"
            _copy_tree(src.consultation, part)
            (part / "LICENSE.txt").write_text(_licence_text(CONSULTATION_DATA_LICENCE), encoding="utf-8")
            licences["datasets/consultation"] = CONSULTATION_DATA_LICENCE
        (tmp / "licences.json").write_text(json.dumps(licences, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
        (tmp / "CITATION.cff").write_text(_citation(version, _git_date(), run_ids), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(licences), encoding="utf-8")
        write_checksums(tmp)
        problems = verify_release(tmp)
        if problems:
            raise ReleaseError("release check failed: " + "; ".join(problems[:10]))
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _readme(licences: dict[str, str]) -> str:
    rows = "\n".join(f"| `{part}` | {lic} |" for part, lic in sorted(licences.items()))
    return f"""# valuealign release

Adapters (with model cards), the alignment and consultation datasets (with datasheets), the
code's licence and a citation. Check it with `sha256sum -c {CHECKSUMS}`. Nothing here was
uploaded; upload this folder as it is (Hugging Face Hub or Zenodo).

## Licence of each part
| part | licence |
|---|---|
{rows}

Data derived from GlobalOpinionQA stays CC BY-NC-SA 4.0 (non-commercial, share-alike); the
consultation data derives from Polis open data (CC BY 4.0, attribution in its datasheet). An
adapter carries the licence of its training data; the base model's licence applies to the base
weights, which are not included.
"""


# -------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m valuealign.release", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="", help="comma-separated run ids (default: every finished run)")
    ap.add_argument("--value-sets", default=None, help="comma-separated survey value sets (default: the runs')")
    ap.add_argument("--no-consultation", action="store_true", help="leave the consultation data out")
    ap.add_argument("--out", type=Path, default=RELEASE_DIR)
    ap.add_argument("--verify", type=Path, default=None, help="only check an existing release folder")
    args = ap.parse_args(argv)
    if args.verify is not None:
        problems = verify_release(args.verify)
        print("\n".join(problems) if problems else f"{args.verify}: checksums, cards and licences hold")
        return 1 if problems else 0
    try:
        out = build_release([r for r in args.runs.split(",") if r] or None,
                            value_sets=None if args.value_sets is None else
                            [v for v in args.value_sets.split(",") if v],
                            with_consultation=not args.no_consultation, out=args.out)
    except ReleaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = len((out / CHECKSUMS).read_text().splitlines())
    print(f"wrote {paths.relative(out)}/ ({n} files, checksums in {CHECKSUMS}); nothing uploaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rehearse a GPU profile on CPU: notebooks 02-04 with its training and evaluation configuration.

Why: the thesis profiles (QLoRA on 4-bit NF4 weights with double quantisation, the paged 8-bit
AdamW, gradient checkpointing, LoRA on all linear layers, a cosine schedule, 4-bit scoring) only
ever ran on a GPU, so a change that breaks them would be found on the cluster. bitsandbytes runs
NF4 and its 8-bit optimiser on CPU too, so every code path except the CUDA kernels can run on
every push. The rehearsal substitutes what a CPU cannot afford: the model (the bundled one), the
step count, the item caps and the rows per step. :data:`SUBSTITUTIONS` is the complete list; the
differences between the profile and what runs are computed from the two and must equal it, and
they are printed and written to ``executed/rehearse-<profile>/SUBSTITUTIONS.md``.

The rehearsal runs in its own workspace (``VALUEALIGN_ROOT`` = ``executed/rehearse-<profile>/
workspace``): its alignment datasets, runs and figures never mix with the embedded default's.
It reads the embedded default's notebook 00-01 outputs (items, distributions, taxonomy).

    .venv/bin/python -m valuealign.rehearsal configs/thesis-7b.yaml      # what `make rehearse` runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuealign import config, paths, provenance
from valuealign import workspace as workspace_module

NOTEBOOKS = ("02_alignment_datasets", "03_finetune", "04_evaluate")
UPSTREAM = (paths.ITEMS, paths.DISTRIBUTIONS, paths.TAXONOMY)  # notebooks 00-01, embedded default


@dataclass(frozen=True)
class Substitution:
    """One parameter the rehearsal sets to another value than the profile, and why."""

    key: str
    value: Any
    why: str


SUBSTITUTIONS: tuple[Substitution, ...] = (
    Substitution("model_profile", "smollm2-135m", "the bundled model (the profile's 7-13B weights are not on "
                 "a CI machine and would not fit its time); a Llama-architecture model with the same LoRA targets"),
    Substitution("model_path", "", "the bundled model's folder"),
    Substitution("max_steps", 2, "two optimizer steps per run instead of `epochs` (step count; the first is the "
                 "warm-up step of the cosine schedule, at learning rate 0)"),
    Substitution("train_batch_size", 2, "rows per step: 2 x accumulation 2 (batching and accumulation both "
                 "run) instead of 4 x 4, so that four runs fit the CI's 5 minutes on 2 cores"),
    Substitution("grad_accum", 2, "see train_batch_size"),
    Substitution("train_max_rows", 16, "training rows per run (item cap)"),
    Substitution("train_eval_rows", 4, "validation rows scored after training (item cap)"),
    Substitution("dataset_max_items", 8, "train and validation items per value set written by notebook 02 "
                 "(item cap; the full data takes minutes to build and tokenise)"),
    Substitution("max_eval_items", 2, "held-out items per split in notebook 04 (item cap)"),
    Substitution("eval_max_options", 4, "only items with up to 4 options in notebook 04 (item cap)"),
    Substitution("eval_n_dilemmas", 2, "DailyDilemmas scored per model (item cap)"),
    Substitution("train_examples", 1, "held-out items answered before and after training per run (item cap)"),
    Substitution("eval_drift_tokens", 8, "greedy tokens per general prompt in the capability-drift check "
                 "(a cap on generated tokens; generation on 4-bit CPU weights is slow)"),
    Substitution("cpu_rehearsal", True, "4-bit NF4 and the paged optimiser run on CPU (bitsandbytes) instead "
                 "of being refused by strict"),
)
# what the CPU itself changes, whatever the parameters say (models.load_for_training, bitsandbytes)
DEVICE_DIFFERENCES: tuple[tuple[str, str, str], ...] = (
    ("device", "cuda", "cpu"),
    ("4-bit compute dtype", "bfloat16", "float32 (models.load_for_training on CPU)"),
    ("paged optimiser", "paged (CUDA unified memory)", "bitsandbytes falls back to its non-paged 8-bit AdamW on CPU"),
    ("notebooks 00-01", "run under the profile", "outputs of the embedded default reused (not part of 02-04)"),
)


class RehearsalError(ValueError):
    """The profile cannot be rehearsed; the message names the profile and the key."""


def first_value_set(profile: Mapping[str, Any]) -> list[str]:
    vs = list(profile.get("value_sets", []))
    if not vs:
        raise RehearsalError("profile: value_sets is empty, nothing to rehearse")
    return vs[:1]


def rehearsal_parameters(profile_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rehearsal's flat parameters and the table of what differs from the profile.

    The profile is first validated as it is (``config.parameters_for`` for every notebook, which
    applies ``strict``'s smoke-cap check): the rehearsal passes that check with the profile's own
    values and only then applies :data:`SUBSTITUTIONS` (and one value set: the first). The
    difference table is computed by comparing the two mappings, and anything but the listed
    substitutions differing is an error."""
    profile = config.load_profile(profile_path)
    if profile.get("strict") is not True:
        raise RehearsalError(f"{profile_path}: rehearsal is for the strict GPU profiles (strict: true)")
    for nb in NOTEBOOKS:
        config.parameters_for(nb, profile_path)  # unknown keys, types, ranges, strict smoke caps
    subs = {s.key: s.value for s in SUBSTITUTIONS}
    subs["value_sets"] = first_value_set(profile)
    why = {s.key: s.why for s in SUBSTITUTIONS}
    why["value_sets"] = ("the first value set only (every method's code path runs once); the others "
                         "differ only in their data")
    specs = {k: s for nb in NOTEBOOKS for k, s in config.notebook_parameters(nb).items()}
    rehearsal = {k: v for k, v in profile.items()}
    rehearsal.update(subs)
    table = []
    for key in sorted(set(profile) | set(rehearsal)):
        before = profile.get(key, specs[key].default if key in specs else None)
        after = rehearsal.get(key, before)
        if before != after:
            if key not in subs:
                raise RehearsalError(f"{profile_path}: {key!r} differs in the rehearsal but is no listed substitution")
            table.append({"parameter": key, "profile": before, "rehearsal": after, "why": why[key]})
    return rehearsal, table


def substitutions_markdown(profile_path: Path, table: list[dict[str, Any]]) -> str:
    lines = [f"# Rehearsal of `{paths.relative(profile_path)}` on CPU", "",
             "Every other parameter of notebooks 02-04 is the profile's own (quantization, optimiser, "
             "scheduler, warm-up, gradient checkpointing, LoRA rank/alpha/dropout/targets, learning rates, "
             "max_length, beta, KTO weights, DPO/KTO targets, paraphrases, eval_quantization, bootstrap).", "",
             "| parameter | profile | rehearsal | why |", "|---|---|---|---|"]
    lines += [f"| `{r['parameter']}` | `{r['profile']!r}` | `{r['rehearsal']!r}` | {r['why']} |" for r in table]
    lines += ["", "Differences that come from the CPU itself:", "", "| what | GPU run | rehearsal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in DEVICE_DIFFERENCES]
    return "\n".join(lines) + "\n"


def prepare_workspace(workspace: Path) -> None:
    """A fresh workspace (:mod:`valuealign.workspace`) with copies of notebooks 00-01's outputs
    (so each rehearsal trains and evaluates anew on the embedded default's items and taxonomy)."""
    missing = [paths.relative(p) for p in UPSTREAM if not p.exists()]
    if missing:
        raise RehearsalError(f"missing {', '.join(missing)}: run notebooks 00-01 first (make nb-01)")
    workspace_module.prepare(workspace, fresh=True, copy=UPSTREAM)


def rehearse(profile_path: Path, out_dir: Path | None = None) -> Path:
    """Run notebooks 02-04 under the rehearsal parameters; return the output folder."""
    from valuealign import notebooks

    profile_path = Path(profile_path)
    params, table = rehearsal_parameters(profile_path)
    out_dir = Path(out_dir or paths.EXECUTED / f"rehearse-{profile_path.stem}")
    out_dir.mkdir(parents=True, exist_ok=True)
    text = substitutions_markdown(profile_path, table)
    provenance.write_text(text, out_dir / "SUBSTITUTIONS.md")
    print(text)
    workspace = out_dir / "workspace"
    prepare_workspace(workspace)
    old_root = os.environ.get("VALUEALIGN_ROOT")
    os.environ["VALUEALIGN_ROOT"] = str(workspace.resolve())  # the kernels' paths
    times = {}
    try:
        for nb in NOTEBOOKS:
            specs = config.notebook_parameters(nb)
            t0 = time.time()
            notebooks.execute(nb, out_dir, {k: v for k, v in params.items() if k in specs}, html=False)
            times[nb] = round(time.time() - t0, 1)
    finally:
        if old_root is None:
            os.environ.pop("VALUEALIGN_ROOT", None)
        else:
            os.environ["VALUEALIGN_ROOT"] = old_root
    provenance.write_json({"profile": paths.relative(profile_path), "substitutions": table,
                           "device_differences": [dict(zip(("what", "gpu", "rehearsal"), d, strict=True))
                                                  for d in DEVICE_DIFFERENCES],
                           "wall_time_s": times}, out_dir / "rehearsal.json")
    print(f"rehearsal of {profile_path.name} passed: " + ", ".join(f"{k} {v} s" for k, v in times.items()))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", type=Path, help="a strict GPU profile, e.g. configs/thesis-7b.yaml")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default executed/rehearse-<profile>)")
    args = ap.parse_args(argv)
    try:
        rehearse(args.profile, args.out)
    except (RehearsalError, config.ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # papermill's error carries the failing cell
        print(f"error: rehearsal of {args.profile} failed: {type(err).__name__}: {str(err)[:3000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

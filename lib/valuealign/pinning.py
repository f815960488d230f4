"""Pinned artefacts of the taxonomy stage: the same thesis numbers on every machine.

Why: the MiniLM embeddings depend on the CPU kernels PyTorch picks at run time (AVX-512 vs AVX2
moves them by ~1e-7), and UMAP + HDBSCAN turn that rounding into a different clustering (a
consensus of 50 runs agrees with itself across kernels at ARI ~0.95, not 1). Everything downstream
(the split, the datasets, the runs, every number) follows the clustering. What cannot be made
identical is therefore *pinned*: the canonical embeddings and the consensus assignment are committed
under ``data/pinned/`` with their SHA-256, and the stage reads them whenever its inputs (texts and
parameters: the *input fingerprint*) match the pin. ``taxonomy_mode = "recompute"`` re-runs the stage
and reports its agreement with the pin instead of silently replacing it; ``make pin-taxonomy``
re-pins deliberately.

Layout (all small enough for git):

* ``data/pinned/embeddings-<model>.parquet``: ``sha256`` of a text -> ``embedding`` (float32 bytes).
  Embeddings are pinned per text, so every stage that embeds a pinned text (notebook 01, the
  near-duplicate search of notebook 02) gets the same vector on every machine.
* ``data/pinned/taxonomy-<fingerprint[:16]>.parquet``: per distinct text (``sha256``) its consensus
  ``cluster``, ``confidence`` and 2-d map coordinates ``x``, ``y``.
* ``data/pinned/manifest.json``: per file its SHA-256; per taxonomy pin its input fingerprint, the
  parameters behind it, the machine and settings it was made on, and the validation numbers measured
  when it was made (stability curve, disjoint-seed and AVX2 agreement), which pinned mode reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from valuealign import paths, provenance

PINNED_DIR_NAME = "pinned"
MANIFEST_NAME = "manifest.json"
# where notebook 01 in recompute mode leaves a candidate pin for `make pin-taxonomy`
CANDIDATE_DIR_NAME = "taxonomy-pin-candidate"
# environment settings that decide the numerics of the stage: recorded with every pin
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMBA_CPU_NAME", "NUMBA_NUM_THREADS", "PYTHONHASHSEED")
MODES = ("pinned", "recompute", "require-pin")


class PinError(ValueError):
    """A pin that is missing, corrupt or does not match; the message names the file and the fix."""


def pinned_dir() -> Path:
    return paths.DATA / PINNED_DIR_NAME


def candidate_dir() -> Path:
    return paths.PROCESSED / CANDIDATE_DIR_NAME


def embeddings_file(model_slug: str, directory: Path | None = None) -> Path:
    return (directory or pinned_dir()) / f"embeddings-{model_slug}.parquet"


def taxonomy_file(fingerprint: str, directory: Path | None = None) -> Path:
    return (directory or pinned_dir()) / f"taxonomy-{fingerprint[:16]}.parquet"


# ------------------------------------------------------------------------------ fingerprint
def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 over the ordered per-text SHA-256s (order matters: labels are per position)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(provenance.sha256_text(t).encode())
        h.update(b"\n")
    return h.hexdigest()


def input_fingerprint(texts: Sequence[str], model_name: str, fit_params: Any, consensus_params: Any) -> str:
    """What the taxonomy assignment is a function of: the texts, the encoder and the parameters.

    The worker count (``jobs``) is left out: it does not change the result.
    """
    cons = {k: v for k, v in asdict(consensus_params).items() if k != "jobs"} if consensus_params else None
    payload = {"texts": texts_hash(texts), "n_texts": len(texts), "model": model_name,
               "fit": asdict(fit_params), "consensus": cons}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def machine_settings() -> dict[str, Any]:
    """The machine and the numeric settings a pin was made on (recorded, never compared)."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(),
                            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001 - a record, best effort
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    info["env"] = {k: os.environ.get(k) for k in NUMERIC_ENV}
    return info


# ------------------------------------------------------------------------------- embeddings
def write_embeddings(keys: Sequence[str], vectors: np.ndarray, target: Path) -> Path:
    """Pinned embeddings: one row per text SHA-256, the float32 vector as raw bytes (exact)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(keys) != len(vectors):
        raise PinError(f"{len(keys)} keys for {len(vectors)} vectors")
    order = np.argsort(np.asarray(keys, dtype=object).astype(str), kind="stable")
    df = pd.DataFrame({"sha256": [keys[i] for i in order],
                       "embedding": [vectors[i].tobytes() for i in order]})
    return provenance.write_parquet(df, target)


def read_embeddings(path: Path) -> dict[str, np.ndarray]:
    """Text SHA-256 -> float32 vector from a pinned embeddings file (empty when absent)."""
    if not path.exists():
        return {}
    try:
        df = pd.read_parquet(path)
        return {k: np.frombuffer(v, dtype=np.float32).copy() for k, v in zip(df["sha256"], df["embedding"],
                                                                              strict=True)}
    except Exception as err:  # noqa: BLE001 - re-raised naming the file
        raise PinError(f"{paths.relative(path)} is not a pinned embeddings file ({type(err).__name__}: "
                       f"{err}); restore it from git or re-pin with `make pin-taxonomy`") from err


# ------------------------------------------------------------------------------- assignment
@dataclass
class TaxonomyPin:
    """A pinned consensus assignment, per distinct text, in the order of the texts it was made for."""

    fingerprint: str
    labels: np.ndarray
    confidence: np.ndarray
    xy: np.ndarray
    entry: dict[str, Any]


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    path = (directory or pinned_dir()) / MANIFEST_NAME
    if not path.exists():
        return {"files": {}, "taxonomy": {}}
    data = provenance.read_json(path)
    data.setdefault("files", {})
    data.setdefault("taxonomy", {})
    return data


def verify_file(path: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a pinned file whose bytes differ from the SHA-256 the manifest recorded."""
    want = manifest["files"].get(path.name)
    if want is None:
        raise PinError(f"{paths.relative(path)} is not listed in {PINNED_DIR_NAME}/{MANIFEST_NAME}; "
                       "re-pin with `make pin-taxonomy`")
    have = provenance.sha256_file(path)
    if have != want:
        raise PinError(f"{paths.relative(path)} has SHA-256 {have[:12]}..., the manifest records "
                       f"{want[:12]}...: the pinned file was changed; restore it (git checkout) or re-pin "
                       "with `make pin-taxonomy`")


def find_taxonomy_pin(texts: Sequence[str], fingerprint: str, directory: Path | None = None) -> TaxonomyPin | None:
    """The pin made for exactly these inputs, or None when no pin matches them."""
    directory = directory or pinned_dir()
    manifest = read_manifest(directory)
    entry = manifest["taxonomy"].get(fingerprint)
    if entry is None:
        return None
    path = directory / entry["file"]
    if not path.exists():
        raise PinError(f"{paths.relative(path)} (pin {fingerprint[:16]}) is listed in the manifest but missing")
    verify_file(path, manifest)
    df = pd.read_parquet(path)
    keys = [provenance.sha256_text(t) for t in texts]
    if df["sha256"].tolist() != keys:
        raise PinError(f"{paths.relative(path)}: its texts differ from this corpus although the fingerprint "
                       "matches; re-pin with `make pin-taxonomy`")
    return TaxonomyPin(fingerprint, df["cluster"].to_numpy(np.int64), df["confidence"].to_numpy(np.float64),
                       df[["x", "y"]].to_numpy(np.float64), dict(entry))


def pinned_embeddings_for(texts: Sequence[str], model_slug: str, directory: Path | None = None) -> np.ndarray | None:
    """The pinned vectors of ``texts`` when every one of them is pinned, else None."""
    directory = directory or pinned_dir()
    path = embeddings_file(model_slug, directory)
    if not path.exists():
        return None
    verify_file(path, read_manifest(directory))
    table = read_embeddings(path)
    keys = [provenance.sha256_text(t) for t in texts]
    if not all(k in table for k in keys):
        return None
    return np.stack([table[k] for k in keys]).astype(np.float32)


# ----------------------------------------------------------------------------- candidate/pin
def write_candidate(
    *, texts: Sequence[str], embeddings: np.ndarray, extra_texts: Sequence[str], extra_embeddings: np.ndarray,
    labels: np.ndarray, confidence: np.ndarray, xy: np.ndarray, fingerprint: str, model_slug: str,
    parameters: Mapping[str, Any], validation: Mapping[str, Any], directory: Path | None = None,
) -> Path:
    """What recompute mode computed, as a pin candidate (``make pin-taxonomy`` promotes it)."""
    directory = directory or candidate_dir()
    directory.mkdir(parents=True, exist_ok=True)
    keys = [provenance.sha256_text(t) for t in texts]
    extra_keys = [provenance.sha256_text(t) for t in extra_texts]
    seen: dict[str, np.ndarray] = {}
    for k, v in zip(keys + extra_keys, list(embeddings) + list(extra_embeddings), strict=True):
        seen.setdefault(k, np.asarray(v, dtype=np.float32))
    write_embeddings(list(seen), np.stack(list(seen.values())), embeddings_file(model_slug, directory))
    provenance.write_parquet(pd.DataFrame({
        "sha256": keys, "cluster": np.asarray(labels, dtype=np.int64),
        "confidence": np.asarray(confidence, dtype=np.float64),
        "x": np.asarray(xy, dtype=np.float64)[:, 0], "y": np.asarray(xy, dtype=np.float64)[:, 1],
    }), taxonomy_file(fingerprint, directory))
    return provenance.write_json({
        "fingerprint": fingerprint, "model_slug": model_slug, "n_texts": len(texts),
        "texts_sha256": texts_hash(texts), "parameters": dict(parameters), "validation": dict(validation),
        "machine": machine_settings(),
    }, directory / "candidate.json")


def promote_candidate(candidate: Path | None = None, directory: Path | None = None) -> list[Path]:
    """Copy the candidate into ``data/pinned/`` and record SHA-256s and provenance in the manifest.

    Pinned embeddings are merged (a text already pinned keeps its vector, so pins made for
    other profiles stay valid); the taxonomy pin of this fingerprint is replaced.
    """
    candidate = candidate or candidate_dir()
    directory = directory or pinned_dir()
    meta_path = candidate / "candidate.json"
    if not meta_path.exists():
        raise PinError(f"no pin candidate in {paths.relative(candidate)}: run notebook 01 with "
                       "taxonomy_mode recompute first (`make pin-taxonomy` does both)")
    meta = provenance.read_json(meta_path)
    fp, slug = meta["fingerprint"], meta["model_slug"]
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory)
    emb_target = embeddings_file(slug, directory)
    merged = read_embeddings(emb_target)
    for k, v in read_embeddings(embeddings_file(slug, candidate)).items():
        merged.setdefault(k, v)
    written = [write_embeddings(list(merged), np.stack(list(merged.values())), emb_target)]
    tax_target = taxonomy_file(fp, directory)
    written.append(provenance.write_parquet(pd.read_parquet(taxonomy_file(fp, candidate)), tax_target))
    for p in written:
        manifest["files"][p.name] = provenance.sha256_file(p)
    manifest["taxonomy"][fp] = {
        "file": tax_target.name, "embeddings": emb_target.name, "n_texts": meta["n_texts"],
        "texts_sha256": meta["texts_sha256"], "parameters": meta["parameters"],
        "validation": meta["validation"], "machine": meta["machine"],
    }
    manifest["note"] = ("Pinned artefacts of notebook 01 (valuealign.pinning); re-pin with `make pin-taxonomy`. "
                        "files: SHA-256 of each pinned file; taxonomy: input fingerprint -> pin.")
    written.append(provenance.write_json(manifest, directory / MANIFEST_NAME))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Promote notebook 01's recomputed taxonomy to data/pinned/.")
    ap.add_argument("command", choices=["promote", "show"])
    args = ap.parse_args(argv)
    try:
        if args.command == "promote":
            for p in promote_candidate():
                print(f"pinned {paths.relative(p)}")
        else:
            print(json.dumps(read_manifest(), indent=2, default=str))
    except PinError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

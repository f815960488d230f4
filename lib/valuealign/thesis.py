"""Check that the thesis and the figures the notebooks produce fit together.

Why: the LaTeX includes ``figures/*`` directly. A figure renamed in a notebook, a stage
that has not run, or a figure included with ``width=`` (which rescales its fonts) would
otherwise surface as a LaTeX error deep in a log, or not at all. :func:`check_thesis`
reads the LaTeX (following ``\\input``/``\\include`` of chapter files), the artefact
manifest ``figures/manifest.json`` written by :mod:`valuealign.plotting`, and reports:

errors (the build must stop)
  - an ``\\includegraphics``/``\\input`` target under ``figures/`` that does not exist;
  - a target that exists but that no notebook recorded in the manifest (hand-made/stale);
  - a figure included with ``width``/``height``/``scale`` options, or wider than the
    text width; the ``geometry`` text width differs from ``plotting.TEXTWIDTH_IN``;
  - ``\\result{Name}`` for a macro that no notebook wrote to ``results-macros.tex``.
warnings
  - a produced figure/table that nothing in the thesis uses;
  - a manifest entry with no notebook name, or whose files are gone.

Command line: ``python -m valuealign.thesis check`` (exit 1 on errors) and
``python -m valuealign.thesis fonts thesis/main.pdf`` (exit 1 if a font is not embedded).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from valuealign import artefacts, paths, style
from valuealign.macros import read_macros

GRAPHICS_EXTS = (".pdf", ".png", ".jpg", ".jpeg")
_REF = re.compile(
    r"\\(?P<cmd>includegraphics|input|include|subfile)\*?\s*(?:\[(?P<opts>[^\]]*)\])?\s*\{(?P<target>[^}]*)\}"
)
_RESULT = re.compile(r"\\result\s*\{(?P<name>[A-Za-z]+)\}")
_GEOMETRY = re.compile(r"\\(?:usepackage|geometry)\s*(?:\[(?P<opts>[^\]]*)\])?\s*\{geometry\}|\\geometry\s*\{(?P<opts2>[^}]*)\}")
_TEXTWIDTH = re.compile(r"(?:^|,)\s*(?:textwidth|width)\s*=\s*(?P<num>[\d.]+)\s*(?P<unit>in|cm|mm|pt|bp)\s*(?:,|$)")
_UNITS_IN = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4, "pt": 1 / 72.27, "bp": 1 / 72.0}
_RESCALING = re.compile(r"\b(width|height|totalheight|scale)\s*=")
_MEDIABOX = re.compile(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]")


@dataclass(frozen=True)
class Reference:
    """One ``\\includegraphics``/``\\input`` in the LaTeX source."""

    tex: Path
    line: int
    command: str
    target: str
    options: str
    resolved: Path | None  # the existing file it points to (extension filled in), else None
    candidate: Path  # where it should be (relative targets resolved from the main file's folder)

    def where(self) -> str:
        return f"{paths.relative(self.tex)}:{self.line}"


@dataclass
class ThesisReport:
    references: list[Reference] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    used_artefacts: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        n_fig = sum(1 for r in self.references if r.command == "includegraphics")
        lines = [f"thesis check: {len(self.references)} references ({n_fig} figures), "
                 f"{len(self.used_artefacts)} produced artefacts used, "
                 f"{len(self.errors)} errors, {len(self.warnings)} warnings"]
        lines += [f"  ERROR   {e}" for e in self.errors]
        lines += [f"  warning {w}" for w in self.warnings]
        return "\n".join(lines)


def strip_comments(source: str) -> str:
    """Remove ``%`` comments (not ``\\%``), keeping line numbers."""
    return "\n".join(re.sub(r"(?<!\\)%.*$", "", line) for line in source.split("\n"))


def _resolve(target: str, base: Path, command: str) -> tuple[Path | None, Path]:
    candidate = (base / target) if not Path(target).is_absolute() else Path(target)
    if command == "includegraphics":
        options = [candidate] if candidate.suffix.lower() in GRAPHICS_EXTS else [
            candidate.with_name(candidate.name + ext) for ext in GRAPHICS_EXTS]
    else:
        options = [candidate] if candidate.suffix == ".tex" else [
            candidate.with_name(candidate.name + ".tex"), candidate]
    for p in options:
        if p.is_file():
            return p, p
    return None, options[0]


def scan_references(main_tex: Path) -> list[Reference]:
    """Every include-like command in ``main_tex`` and the .tex files it inputs (recursively).

    Relative targets resolve from the main file's folder, as LaTeX does when latexmk runs
    with ``-cd``. Generated files under ``figures/`` are listed but not descended into.
    """
    main_tex = Path(main_tex)
    if not main_tex.is_file():
        raise FileNotFoundError(f"thesis main file {main_tex} does not exist")
    base = main_tex.parent
    refs: list[Reference] = []
    seen: set[Path] = set()

    def visit(tex: Path) -> None:
        if tex.resolve() in seen:
            return
        seen.add(tex.resolve())
        source = strip_comments(tex.read_text(encoding="utf-8"))
        for m in _REF.finditer(source):
            line = source.count("\n", 0, m.start()) + 1
            cmd, target = m.group("cmd"), m.group("target").strip()
            if not target or "#" in target or "\\" in target:  # inside a macro definition
                continue
            resolved, candidate = _resolve(target, base, cmd)
            refs.append(Reference(tex, line, cmd, target, m.group("opts") or "", resolved, candidate))
            if resolved is not None and cmd != "includegraphics" and not _under(resolved, paths.FIGURES):
                visit(resolved)

    visit(main_tex)
    return refs


def _under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def geometry_textwidth_in(main_tex: Path) -> float | None:
    """The ``textwidth=`` (or ``width=``) set by ``geometry`` in the main file, in inches."""
    source = strip_comments(Path(main_tex).read_text(encoding="utf-8"))
    for m in _GEOMETRY.finditer(source):
        opts = re.sub(r"\s+", "", m.group("opts") or m.group("opts2") or "")
        if t := _TEXTWIDTH.search(opts):
            return float(t.group("num")) * _UNITS_IN[t.group("unit")]
    return None


def pdf_size_in(pdf: Path) -> tuple[float, float] | None:
    """Page size of a (single-page, matplotlib-written) PDF in inches, from its MediaBox."""
    m = _MEDIABOX.search(Path(pdf).read_bytes())
    if not m:
        return None
    x0, y0, x1, y1 = (float(v) for v in m.groups())
    return (x1 - x0) / 72.0, (y1 - y0) / 72.0


def results_used(main_tex: Path) -> list[tuple[Path, int, str]]:
    """``\\result{Name}`` uses: (file, line, name)."""
    out = []
    for tex in [Path(main_tex)] + [r.resolved for r in scan_references(main_tex)
                                   if r.resolved is not None and r.resolved.suffix == ".tex"
                                   and not _under(r.resolved, paths.FIGURES)]:
        source = strip_comments(tex.read_text(encoding="utf-8"))
        for m in _RESULT.finditer(source):
            out.append((tex, source.count("\n", 0, m.start()) + 1, m.group("name")))
    return out


def check_thesis(
    main_tex: Path | None = None, figures_dir: Path | None = None,
    textwidth_in: float | None = None, notebooks_dir: Path | None = None,
) -> ThesisReport:
    """Cross-check the thesis LaTeX against ``figures/`` and its manifest (see module doc)."""
    main_tex = Path(main_tex or paths.THESIS / "main.tex")
    figures_dir = Path(figures_dir or paths.FIGURES)
    textwidth_in = style.TEXTWIDTH_IN if textwidth_in is None else textwidth_in
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS)
    report = ThesisReport()

    tw = geometry_textwidth_in(main_tex)
    if tw is None:
        report.errors.append(
            f"{paths.relative(main_tex)}: the geometry options must set textwidth= explicitly "
            f"(plotting.TEXTWIDTH_IN = {textwidth_in} in sizes the figures)")
    elif abs(tw - textwidth_in) > 1e-3:
        report.errors.append(
            f"{paths.relative(main_tex)}: geometry textwidth is {tw:.4f} in but "
            f"plotting.TEXTWIDTH_IN is {textwidth_in} in; change one so they agree")

    manifest = artefacts.read_manifest(figures_dir)
    producers: dict[str, list[str]] = {}
    for name, entry in manifest.items():
        for f in entry.get("files", []):
            producers.setdefault(str((paths.ROOT / f).resolve()), []).append(name)

    report.references = scan_references(main_tex)
    for ref in report.references:
        if ref.resolved is None and not _under(ref.candidate, figures_dir):
            if ref.command != "includegraphics" and ref.candidate.suffix == ".tex":
                report.errors.append(f"{ref.where()}: \\{ref.command}{{{ref.target}}}: file not found")
            continue
        path = ref.resolved or ref.candidate
        if not _under(path, figures_dir):
            continue
        if ref.resolved is None:
            report.errors.append(
                f"{ref.where()}: \\{ref.command}{{{ref.target}}}: {paths.relative(ref.candidate)} "
                "is missing (has the notebook that makes it run? `make all`, then `make figures`)")
            continue
        names = producers.get(str(path.resolve()), [])
        if not names:
            report.errors.append(
                f"{ref.where()}: {paths.relative(path)} exists but no notebook produced it "
                "(no entry in figures/manifest.json): save it with valuealign.plotting")
        report.used_artefacts.update(names)
        if ref.command == "includegraphics":
            if _RESCALING.search(ref.options):
                report.errors.append(
                    f"{ref.where()}: \\includegraphics[{ref.options}] rescales "
                    f"{paths.relative(path)}; include it at its own size and choose the size in "
                    "the notebook with plotting.figsize(fraction)")
            size = pdf_size_in(path) if path.suffix == ".pdf" else None
            if size and size[0] > textwidth_in + 0.01:
                report.errors.append(
                    f"{ref.where()}: {paths.relative(path)} is {size[0]:.2f} in wide, wider than the "
                    f"text width {textwidth_in} in: make it with plotting.figsize(fraction <= 1)")

    macros = read_macros(figures_dir)
    for tex, line, name in results_used(main_tex):
        if name not in macros:
            report.errors.append(
                f"{paths.relative(tex)}:{line}: \\result{{{name}}} is not defined by any notebook "
                "(figures/results-macros.json); the PDF would print ??" + name)

    notebooks = {p.stem for p in notebooks_dir.glob("*.ipynb")}
    for name in sorted(manifest):
        entry = manifest[name]
        files = entry.get("files", [])
        if name not in report.used_artefacts:
            what = "macros" if entry.get("kind") == "macros" else "figure/table"
            report.warnings.append(
                f"{what} {name!r} ({', '.join(files)}) from {entry.get('notebook') or '?'} "
                "is not used by the thesis")
        nb = entry.get("notebook")
        if not nb:
            report.warnings.append(f"{name!r}: the manifest does not say which notebook made it")
        elif notebooks and nb not in notebooks:
            report.warnings.append(f"{name!r}: made by {nb!r}, which is not a notebook in notebooks/")
        gone = [f for f in files if not (paths.ROOT / f).exists()]
        if gone:
            report.warnings.append(f"{name!r}: recorded files are gone: {', '.join(gone)}")
    return report


def pdf_fonts(pdf: Path) -> list[dict[str, str]]:
    """Fonts of a PDF as reported by poppler's ``pdffonts`` (name, type, emb, ...)."""
    exe = shutil.which("pdffonts")
    if exe is None:
        raise RuntimeError("pdffonts not found: install poppler-utils (`make thesis-deps`)")
    out = subprocess.run([exe, str(pdf)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    if len(lines) < 2:
        return []
    # columns are fixed-width; the dashes line gives their extents
    spans, pos = [], 0
    for dash in lines[1].split(" "):
        spans.append((pos, pos + len(dash)))
        pos += len(dash) + 1
    keys = ["name", "type", "encoding", "emb", "sub", "uni", "object", "id"]
    fonts = []
    for row in lines[2:]:
        cells = [row[a:b].strip() for a, b in spans]
        fonts.append(dict(zip(keys, cells, strict=False)))
    return fonts


def unembedded_fonts(pdf: Path) -> list[str]:
    """Names of fonts in ``pdf`` that are not embedded (empty list = all embedded)."""
    return [f"{f['name']} ({f['type']})" for f in pdf_fonts(pdf) if f.get("emb") != "yes"]


def font_problems(pdf: Path) -> list[str]:
    """Fonts that are not embedded, or are Type 3 (bitmaps from a missing Type 1 font in LaTeX,
    or ``pdf.fonttype: 3`` in matplotlib): both print badly or not at all."""
    out = []
    for f in pdf_fonts(pdf):
        if f.get("emb") != "yes":
            out.append(f"{f['name']} ({f['type']}): not embedded")
        elif f.get("type", "").startswith("Type 3"):
            out.append(f"{f['name']} (Type 3): bitmap/Type 3 font")
    return out


# ---------------------------------------------------------------- cross-stage summaries (notebook 06)
SELF = "06_thesis_figures"


def _read_manifest_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "stage" in data else None


def stage_manifests(processed: Path | None = None, runs: Path | None = None,
                    exclude: tuple[str, ...] = (SELF,)) -> pd.DataFrame:
    """One row per recorded notebook or fine-tuning run: stage, wall time, seed, outputs.

    Reads the provenance manifests the stages write (``data/processed/NN_*.manifest.json``,
    ``runs/<run_id>/manifest.json``); files that are not manifests are ignored.
    """
    processed = processed or paths.PROCESSED
    runs = runs or paths.RUNS
    rows = []
    # notebooks' records, one per fine-tune (not runs/03_finetune.manifest.json, which would
    # count the same training twice), and stage 04's per-evaluation records
    files = (sorted(processed.glob("**/*.manifest.json")) + sorted(runs.glob("*/manifest.json"))
             + sorted(runs.glob("*/eval/*/manifest.json")))
    for f in files:
        m = _read_manifest_file(f)
        if m is None or str(m["stage"]).split(":")[0] in exclude:
            continue
        rows.append({
            "stage": str(m["stage"]).split(":")[0],
            "record": paths.relative(f),
            "run_id": (m.get("extra") or {}).get("run_id") or (m.get("parameters") or {}).get("run_id"),
            "wall_time_s": float(m.get("wall_time_s") or 0.0),
            "seed": m.get("seed"),
            "n_inputs": len(m.get("inputs") or {}),
            "n_outputs": len(m.get("outputs") or {}),
            "commit": ((m.get("git") or {}).get("commit") or "")[:10] or None,
        })
    cols = ["stage", "record", "run_id", "wall_time_s", "seed", "n_inputs", "n_outputs", "commit"]
    return pd.DataFrame(rows, columns=cols).sort_values(["stage", "record"], kind="mergesort",
                                                        ignore_index=True)


def current_runs(runs_dir: Path | None = None, consultation_dir: Path | None = None) -> set[str] | None:
    """The fine-tuned runs of the pipeline's latest notebook executions: those notebook 03's
    record lists and those notebook 05's evaluation names in its lineage. None before notebook
    03 recorded any (then every run folder counts).

    Why: ``runs/`` keeps every earlier run (other parameters, data or code) so that nothing is
    trained twice; a summary of this pipeline must not count, time or choose among them."""
    from valuealign import consultation_eval

    listed = consultation_eval.notebook03_runs(runs_dir)
    if listed is None:
        return None
    runs = set(listed)
    try:
        lineage = consultation_eval.read_evaluation(consultation_dir).get("lineage") or []
    except consultation_eval.ConsultationEvalError:
        lineage = []
    return runs | {str(x["run"]) for x in lineage if isinstance(x, dict) and x.get("run")}


def current_records(manifests: pd.DataFrame, runs: set[str] | None = None,
                    eval_hash: str | None = None) -> pd.DataFrame:
    """:func:`stage_manifests` without the records of earlier work: fine-tunes not in ``runs``
    (:func:`current_runs`; None keeps all) and notebook 04 records of another ``eval_hash``."""
    keep = pd.Series(True, index=manifests.index)
    if runs is not None:
        keep &= (manifests["stage"] != "03_finetune") | manifests["run_id"].isin(runs)
    if eval_hash:
        folder = manifests["record"].map(lambda r: Path(str(r)).parent.name)
        keep &= (manifests["stage"] != "04_evaluate") | (folder == eval_hash)
    return manifests[keep].reset_index(drop=True)


def pipeline_table(manifests: pd.DataFrame) -> pd.DataFrame:
    """Per stage: how many records (notebook runs, fine-tunes) and their total wall time."""
    if manifests.empty:
        raise ValueError("no stage manifests found under data/processed/ or runs/: run `make all` first")
    g = manifests.groupby("stage", sort=True)
    return pd.DataFrame({
        "Stage": list(g.groups),
        "Records": g.size().to_numpy(),
        "Wall time (min)": (g["wall_time_s"].sum() / 60.0).to_numpy(),
        "Outputs": g["n_outputs"].sum().to_numpy(),
    })


def plot_pipeline_runtime(table: pd.DataFrame, fraction: float = 0.8) -> Any:
    """Horizontal bars: wall time per stage (what a re-run of the thesis costs, and where)."""
    fig, ax = style.subplots(fraction, 0.45)
    stages = list(table["Stage"])[::-1]
    minutes = list(table["Wall time (min)"])[::-1]
    ax.barh(stages, minutes, color=style.OKABE_ITO[0])
    for y, v in enumerate(minutes):
        ax.text(v, y, f" {v:.1f}" if v >= 1 else f" {v:.2f}", va="center",
                fontsize=style.BASE_FONT_PT - 1)
    ax.set_xlabel("wall time (minutes, this profile)")
    ax.set_xlim(0, max(minutes + [0.1]) * 1.18)
    return fig


def runs_table(manifests: pd.DataFrame, runs: Path | None = None) -> pd.DataFrame:
    """Fine-tuning runs (stage 03) with method, value set, size and cost, from their records."""
    runs = runs or paths.RUNS
    rows = []
    for rec in manifests.loc[manifests["stage"] == "03_finetune", "record"]:
        m = _read_manifest_file(paths.ROOT / rec) or {}
        p, x = m.get("parameters") or {}, m.get("extra") or {}
        rows.append({
            "run": x.get("run_id") or p.get("run_id") or Path(rec).parent.name,
            "method": x.get("lineage_method") or p.get("method"),  # a chained run: "sft+dpo"
            "value_set": p.get("value_set"), "seed": m.get("seed"),
            "train_rows": x.get("train_rows"), "steps": x.get("optimizer_steps"),
            "wall_time_s": m.get("wall_time_s"), "peak_memory_gb": x.get("peak_memory_gb"),
        })
    cols = ["run", "method", "value_set", "seed", "train_rows", "steps", "wall_time_s", "peak_memory_gb"]
    return pd.DataFrame(rows, columns=cols).sort_values("run", kind="mergesort", ignore_index=True)


def run_alignment(summary: pd.DataFrame, metric: str = "js_alignment", split: str | None = None) -> pd.DataFrame:
    """Mean alignment per evaluated run on its own value set, on one split.

    ``summary`` is stage 04's ``runs/eval_summary.parquet`` (long: run, metric, mean, ...).
    ``split``: "test" when evaluated, else the first split. Untargeted baselines (uniform,
    base) get one row per population they were scored against (``value_set`` = that
    population), so that a run is compared with the base model on the *same* population,
    not with the base model's mean over all populations.
    """
    need = {"run", "metric", "mean"}
    if not need <= set(summary.columns):
        raise ValueError(f"eval summary needs columns {sorted(need)}, has {sorted(summary.columns)}")
    s = summary[summary["metric"] == metric]
    if "split" in s.columns and s["split"].notna().any():
        if split is None:
            split = "test" if (s["split"] == "test").any() else sorted(s["split"].dropna().unique())[0]
        if not (s["split"] == split).any():
            raise ValueError(f"eval summary has no rows of split {split!r} (has {sorted(s['split'].dropna().unique())})")
        s = s[s["split"] == split]
    if {"value_set", "target_value_set"} <= set(s.columns):
        # a steered run counts on its own population; untargeted baselines on each population
        untargeted = s["value_set"].isna()
        if "method" in s.columns:
            untargeted |= s["method"].isin(["uniform", "base"])
        own = (s["target_value_set"] == s["value_set"]) | untargeted
        s = s[own].assign(value_set=lambda d: d["value_set"].where(~untargeted[own], d["target_value_set"]))
    keep = [c for c in ("run", "method", "value_set") if c in s.columns]
    return (s.groupby(keep, dropna=False, sort=True)["mean"].mean().rename("alignment")
            .reset_index())


def best_run_on_validation(summary: pd.DataFrame, metric: str = "js_alignment",
                           report_split: str = "test") -> dict[str, Any] | None:
    """The fine-tuned run with the highest alignment on the *validation* items, and its
    alignment on ``report_split``.

    Why: the best of many runs measured on the test items overstates what the chosen run
    does on new items (the maximum of noisy estimates); the test number of a run chosen on
    validation does not. Raises if no validation split was evaluated; None if no run was
    evaluated on both splits.
    """
    if "split" not in summary.columns or not (summary["split"] == "validation").any():
        raise ValueError("choosing the best run needs evaluations on the validation split "
                         "(notebook 04 parameter eval_splits must include 'validation')")
    val = run_alignment(summary, metric, "validation")
    rep = run_alignment(summary, metric, report_split)
    tuned = val[~val["run"].astype(str).str.startswith("_")].merge(
        rep[["run", "alignment"]], on="run", suffixes=("_validation", ""))
    tuned = tuned.dropna(subset=["alignment_validation", "alignment"])
    if tuned.empty:
        return None
    best = tuned.sort_values(["alignment_validation", "run"], ascending=[False, True]).iloc[0]
    return {"run": best["run"], "method": best.get("method"), "value_set": best.get("value_set"),
            "validation_alignment": float(best["alignment_validation"]), "split": report_split,
            "alignment": float(best["alignment"])}


def plot_cost_vs_alignment(runs: pd.DataFrame, alignment: pd.DataFrame, fraction: float = 0.6) -> Any:
    """Alignment of each fine-tuned run against its training wall time, one colour per method.

    Why cross-stage: it joins what stage 03 recorded (cost) with what stage 04 measured
    (alignment), the trade-off a reader of the thesis asks about first. The dashed baselines
    are averaged over the populations the plotted runs were trained for (not over every
    population), so that a run is set against the baseline on its own population.
    """
    df = runs.merge(alignment[["run", "alignment"]], on="run", how="inner")
    if df.empty:
        raise ValueError("no fine-tuned run has an evaluation: run notebooks 03 and 04 first")
    fig, ax = style.subplots(fraction, 0.75)
    for method in style.sort_methods(df["method"].dropna()):
        d = df[df["method"] == method]
        ax.scatter(d["wall_time_s"] / 60.0, d["alignment"], s=18, label=style.method_label(method),
                   color=style.method_color(method))
    base = alignment[alignment["run"].astype(str).str.startswith("_")] if "method" in alignment else None
    if base is not None and "method" in base.columns:
        if "value_set" in base.columns and "value_set" in df.columns:
            base = base[base["value_set"].isin(set(df["value_set"].dropna()))]
        for method in style.sort_methods(base["method"].dropna()):
            v = base.loc[base["method"] == method, "alignment"].mean()
            ax.axhline(v, color=style.method_color(method), lw=0.8, ls="--",
                       label=f"{style.method_label(method)} (no training)")
    ax.set_xlabel("fine-tuning wall time (minutes)")
    ax.set_ylabel("alignment (1 - JS distance)")
    ax.legend(loc="best", fontsize=style.BASE_FONT_PT - 2)
    return fig


def artefact_table(manifest: dict[str, Any], exclude_notebook: str | None = SELF) -> pd.DataFrame:
    """Every produced figure/table (for the appendix): name, kind, notebook, number of inputs."""
    rows = []
    for name, e in sorted(manifest.items()):
        if e.get("kind") == "macros" or (exclude_notebook and e.get("notebook") == exclude_notebook):
            continue
        rows.append({"Artefact": name, "Kind": e.get("kind") or "figure",
                     "Notebook": e.get("notebook") or "?", "Inputs": len(e.get("inputs") or {})})
    return pd.DataFrame(rows, columns=["Artefact", "Kind", "Notebook", "Inputs"])


def figure_checks(manifest: dict[str, Any], textwidth_in: float | None = None) -> pd.DataFrame:
    """Per produced figure PDF: width vs the text width and whether every font is embedded."""
    textwidth_in = style.TEXTWIDTH_IN if textwidth_in is None else textwidth_in
    have_pdffonts = shutil.which("pdffonts") is not None
    rows = []
    for name, e in sorted(manifest.items()):
        for f in e.get("files", []):
            path = paths.ROOT / f
            if path.suffix != ".pdf" or not path.exists():
                continue
            w, h = pdf_size_in(path) or (float("nan"), float("nan"))
            rows.append({
                "figure": name, "width_in": round(w, 3), "height_in": round(h, 3),
                "fraction_of_textwidth": round(w / textwidth_in, 3),
                "fits": bool(w <= textwidth_in + 0.01),
                "fonts_embedded": (not font_problems(path)) if have_pdffonts else None,
            })
    return pd.DataFrame(rows, columns=["figure", "width_in", "height_in", "fraction_of_textwidth",
                                       "fits", "fonts_embedded"])


# ------------------------------------------------------------------ the evaluation the thesis reports
EVALUATIONS_DIR_NAME = "_evaluations"  # "_": not a run folder (valuealign.evaluation.discover_runs)
PROFILE_ENV = "VALUEALIGN_PROFILE"  # exported by the Makefile: the profile `make` runs under


def evaluation_pointer(profile: str, runs_dir: Path | None = None) -> Path:
    """``runs/_evaluations/<profile>.json``: the evaluation the thesis of ``profile`` reports."""
    return paths.safe_child((runs_dir or paths.RUNS) / EVALUATIONS_DIR_NAME, f"{profile}.json", "profile")


def name_evaluation(profile: str, eval_hash: str | None = None, runs_dir: Path | None = None) -> Path:
    """Record ``eval_hash`` (default: the evaluation notebook 04 just saved) as the profile's evaluation.

    Why: several evaluations live side by side in ``runs/eval_summary.parquet`` (a sweep cell or a
    test adds its own); the thesis must report the one its profile made, not whichever came last.
    `make` calls this right after notebook 04 ran under the profile; the pointer also lists the runs
    and the settings of that evaluation, so the choice can be read off the file.
    """
    from valuealign import evaluation

    eval_hash = eval_hash or evaluation.latest_eval_hash(runs_dir)
    summary = evaluation.load_summary(eval_hash, runs_dir)  # refuses an unknown eval_hash
    meta = _evaluation_meta(eval_hash, runs_dir)
    scored = _scored_in(meta)
    from valuealign import provenance

    return provenance.write_json({
        "profile": profile, "eval_hash": eval_hash,
        # the runs notebook 04 scored in it, not every run with rows of this eval_hash in the
        # combined summary (rows of earlier runs, scored before with the same settings, stay there)
        "runs": scored if scored is not None else sorted(
            str(r) for r in summary["run"].unique() if not str(r).startswith("_")),
        "settings": {k: v for k, v in meta.items() if k != evaluation.SCORED_RUNS_KEY
                     and isinstance(v, str | int | float | bool | list)},
    }, evaluation_pointer(profile, runs_dir))


def _evaluation_meta(eval_hash: str, runs_dir: Path | None = None) -> dict[str, Any]:
    from valuealign import evaluation

    meta_file = evaluation.eval_folder(evaluation.BASELINES_RUN, eval_hash, runs_dir) / "eval.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
    return meta if isinstance(meta, dict) else {}


def scored_runs(eval_hash: str, runs_dir: Path | None = None) -> list[str] | None:
    """The fine-tuned runs notebook 04's latest execution of ``eval_hash`` scored (None: not
    recorded, an evaluation saved before this was kept)."""
    return _scored_in(_evaluation_meta(eval_hash, runs_dir))


def _scored_in(meta: dict[str, Any]) -> list[str] | None:
    from valuealign import evaluation

    runs = meta.get(evaluation.SCORED_RUNS_KEY)
    return sorted(str(r) for r in runs) if isinstance(runs, list) else None


@dataclass(frozen=True)
class ReportedEvaluation:
    """The evaluation the thesis reports (:func:`reported_evaluation`): its hash, why it was
    chosen, and the runs it covers (None: every run with rows of that hash)."""

    eval_hash: str
    why: str
    runs: tuple[str, ...] | None

    def summary(self, runs_dir: Path | None = None) -> pd.DataFrame:
        """Its rows of ``runs/eval_summary.parquet``: the baselines and its own runs only.

        Why: the combined summary keeps the rows of every run ever scored with the same
        settings and items (the same ``eval_hash``); a run since replaced (other parameters,
        data or code) must not be counted, pooled or chosen as "best"."""
        from valuealign import evaluation

        s = evaluation.load_summary(self.eval_hash, runs_dir)
        if self.runs is None:
            return s
        run = s["run"].astype(str)
        return s[run.str.startswith("_") | run.isin(self.runs)].reset_index(drop=True)


def named_evaluation(profile: str, runs_dir: Path | None = None) -> dict[str, Any] | None:
    """The pointer of ``profile`` (eval_hash, runs, settings), or None when none was recorded."""
    path = evaluation_pointer(profile, runs_dir)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("eval_hash"), str):
        raise ValueError(f"{paths.relative(path)} has no eval_hash: delete it and re-run `make all`")
    return data


def reported_evaluation(eval_hash: str = "", profile: str | None = None,
                        runs_dir: Path | None = None) -> ReportedEvaluation:
    """The evaluation the thesis reports, why, and the runs it covers: an explicit ``eval_hash``,
    else the one named for ``profile`` (default ``$VALUEALIGN_PROFILE``, else ``smoke``). Only when
    the profile names none (notebooks run outside `make`, e.g. under nbval before any `make all`)
    the latest, said so. Its runs: the named pointer's list, else the runs notebook 04 recorded
    scoring in it."""
    import os

    from valuealign import evaluation

    def covering(h: str) -> tuple[str, ...] | None:
        runs = scored_runs(h, runs_dir)
        return tuple(runs) if runs is not None else None

    if eval_hash:
        return ReportedEvaluation(eval_hash, "given by the eval_hash parameter", covering(eval_hash))
    profile = profile or os.environ.get(PROFILE_ENV) or "smoke"
    named = named_evaluation(profile, runs_dir)
    pointer = paths.relative(evaluation_pointer(profile, runs_dir))
    if named is not None:
        runs = named.get("runs")
        return ReportedEvaluation(named["eval_hash"], f"named for profile {profile!r} in {pointer}",
                                  tuple(str(r) for r in runs) if isinstance(runs, list) else None)
    latest = evaluation.latest_eval_hash(runs_dir)
    return ReportedEvaluation(latest, (
        f"the latest: profile {profile!r} names no evaluation yet ({pointer} "
        "is written when `make` runs notebook 04)"), covering(latest))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Check the thesis against figures/ and its manifest.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("name-evaluation", help="record the evaluation notebook 04 just saved as PROFILE's")
    n.add_argument("--profile", required=True)
    n.add_argument("--eval-hash", default=None)
    c = sub.add_parser("check", help="references vs figures/manifest.json (exit 1 on errors)")
    c.add_argument("--main", type=Path, default=paths.THESIS / "main.tex")
    c.add_argument("--strict", action="store_true", help="treat warnings as errors too")
    f = sub.add_parser("fonts", help="fail if a PDF has fonts that are not embedded")
    f.add_argument("pdf", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "name-evaluation":
        target = name_evaluation(args.profile, args.eval_hash)
        print(f"{paths.relative(target)}: {named_evaluation(args.profile)['eval_hash']}")
        return 0
    if args.cmd == "check":
        report = check_thesis(args.main)
        print(report.format())
        return 1 if report.errors or (args.strict and report.warnings) else 0
    bad = 0
    for pdf in args.pdf:
        missing = font_problems(pdf)
        n = len(pdf_fonts(pdf))
        print(f"{pdf}: {n} fonts, " + ("all embedded, none Type 3" if not missing
                                       else "PROBLEMS: " + "; ".join(missing)))
        bad += bool(missing)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

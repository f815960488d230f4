"""valuealign.thesis: the check that the LaTeX and figures/ (with its manifest) fit together.

Unit tests run the checker on a tiny synthetic tex tree with real saved figures; the
``pipeline`` tests run after the notebooks in ``make test`` and check the real thesis.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from valuealign import paths, plotting, thesis

from conftest import require_artefact

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/{thesis,figures,notebooks}: a thesis including produced, missing, stale, rescaled figures."""
    for name, value in {"ROOT": tmp_path, "FIGURES": tmp_path / "figures",
                        "THESIS": tmp_path / "thesis", "NOTEBOOKS": tmp_path / "notebooks"}.items():
        monkeypatch.setattr(paths, name, value)
    monkeypatch.delenv("VALUEALIGN_NOTEBOOK", raising=False)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "04_evaluate.ipynb").write_text("{}")
    for name in ("eval-good", "eval-rescaled", "eval-unused"):
        fig, ax = plotting.subplots(0.5)
        ax.plot([0, 1], [1, 0])
        plotting.save_figure(fig, name, notebook="04_evaluate")
        plt.close(fig)
    plotting.save_table(pd.DataFrame({"a": [1.0]}), "eval-table", caption="c", notebook="04_evaluate")
    plotting.save_macros({"AlignGain": 0.1}, "04_evaluate", notebook="04_evaluate")
    fig, ax = plt.subplots(figsize=(7.5, 2))  # wider than the text width
    with pytest.warns(UserWarning):
        plotting.save_figure(fig, "eval-wide", notebook="04_evaluate")
    plt.close(fig)
    (tmp_path / "figures" / "hand-made.pdf").write_bytes((tmp_path / "figures" / "eval-good.pdf").read_bytes())
    tex = tmp_path / "thesis"
    (tex / "chapters").mkdir(parents=True)
    (tex / "main.tex").write_text(
        "\\documentclass{report}\n"
        "\\usepackage[a4paper, textwidth=6in, centering]{geometry}\n"
        "\\input{../figures/results-macros.tex}\n"
        "\\begin{document}\n\\input{chapters/results}\n\\end{document}\n")
    (tex / "chapters" / "results.tex").write_text(
        "Gain \\result{AlignGain} and \\result{NotMade}.\n"
        "\\includegraphics{../figures/eval-good.pdf}\n"
        "% \\includegraphics{../figures/commented-out.pdf}\n"
        "\\includegraphics{../figures/eval-missing}\n"
        "\\includegraphics[width=\\textwidth]{../figures/eval-rescaled.pdf}\n"
        "\\includegraphics{../figures/hand-made.pdf}\n"
        "\\includegraphics{../figures/eval-wide.pdf}\n"
        "\\input{../figures/eval-table.tex}\n")
    return tmp_path


def _one(messages: list[str], needle: str) -> str:
    hits = [m for m in messages if needle in m]
    assert len(hits) == 1, f"expected one message with {needle!r} in:\n" + "\n".join(messages)
    return hits[0]


def test_check_finds_every_kind_of_problem(tree: Path) -> None:
    report = thesis.check_thesis()
    assert not report.ok
    assert "results.tex:4" in _one(report.errors, "eval-missing")
    assert "missing" in _one(report.errors, "eval-missing")
    assert "rescales" in _one(report.errors, "eval-rescaled")
    assert "no notebook produced it" in _one(report.errors, "hand-made.pdf")
    assert "7.50 in wide" in _one(report.errors, "eval-wide")
    assert "results.tex:1" in _one(report.errors, "NotMade")
    assert len(report.errors) == 5, report.format()
    assert not any("commented-out" in m for m in report.errors + report.warnings)
    assert "not used by the thesis" in _one(report.warnings, "'eval-unused'")
    used = {"eval-good", "eval-rescaled", "eval-wide", "eval-table", "results-macros/04_evaluate"}
    assert report.used_artefacts == used
    assert "5 errors" in report.format()


def test_check_passes_on_a_clean_tree_and_extension_is_optional(tree: Path) -> None:
    (tree / "thesis" / "chapters" / "results.tex").write_text(
        "\\result{AlignGain}\n\\includegraphics{../figures/eval-good}\n\\input{../figures/eval-table}\n"
        "\\includegraphics{../figures/eval-rescaled.pdf}\n\\includegraphics{../figures/eval-unused.pdf}\n"
        "\\includegraphics[trim=0 0 0 0]{../figures/eval-wide.png}\n")
    report = thesis.check_thesis()
    assert report.ok, report.format()
    assert report.warnings == []
    assert thesis.main(["check", "--main", str(tree / "thesis" / "main.tex")]) == 0


def test_cli_fails_on_errors_and_strict_fails_on_warnings(tree: Path, capsys: pytest.CaptureFixture) -> None:
    main_tex = str(tree / "thesis" / "main.tex")
    assert thesis.main(["check", "--main", main_tex]) == 1
    assert "ERROR" in capsys.readouterr().out
    (tree / "thesis" / "chapters" / "results.tex").write_text("\\includegraphics{../figures/eval-good.pdf}\n")
    assert thesis.main(["check", "--main", main_tex]) == 0
    assert thesis.main(["check", "--main", main_tex, "--strict"]) == 1  # unused figures


def test_textwidth_must_match_the_geometry(tree: Path) -> None:
    main = tree / "thesis" / "main.tex"
    main.write_text(main.read_text().replace("textwidth=6in", "textwidth=15cm"))
    assert thesis.geometry_textwidth_in(main) == pytest.approx(15 / 2.54)
    assert "geometry textwidth is 5.9055 in" in _one(thesis.check_thesis().errors, "TEXTWIDTH_IN")
    main.write_text(main.read_text().replace("textwidth=15cm", "margin=2cm"))
    assert "TEXTWIDTH_IN = 6.0" in _one(thesis.check_thesis().errors, "must set textwidth")


def test_missing_chapter_and_main_file_are_reported(tree: Path) -> None:
    (tree / "thesis" / "chapters" / "results.tex").unlink()
    assert "file not found" in _one(thesis.check_thesis().errors, "chapters/results")
    with pytest.raises(FileNotFoundError, match="nope.tex"):
        thesis.check_thesis(tree / "thesis" / "nope.tex")


def test_real_thesis_geometry_equals_plotting_textwidth() -> None:
    """The single size setting: plotting.TEXTWIDTH_IN is the thesis's \\textwidth."""
    assert thesis.geometry_textwidth_in(REPO / "thesis" / "main.tex") == pytest.approx(
        plotting.TEXTWIDTH_IN, abs=1e-9)


def test_real_thesis_includes_figures_unscaled_from_figures_dir() -> None:
    """Every figure the real thesis includes comes from figures/ and is not rescaled."""
    refs = [r for r in thesis.scan_references(REPO / "thesis" / "main.tex") if r.command == "includegraphics"]
    assert refs, "the thesis includes no figures"
    for r in refs:
        assert r.target.startswith("../figures/"), r
        assert not thesis._RESCALING.search(r.options), r


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="pdffonts (poppler-utils) not installed")
def test_pdffonts_parsing(tree: Path) -> None:
    fonts = thesis.pdf_fonts(tree / "figures" / "eval-good.pdf")
    assert fonts and set(fonts[0]) >= {"name", "type", "emb"}
    assert thesis.font_problems(tree / "figures" / "eval-good.pdf") == []


# ---------------------------------------------------------------- after the notebooks (make test)
@pytest.mark.pipeline
def test_every_thesis_figure_target_exists_after_make_figures() -> None:
    """After `make figures` (or the notebooks) no \\includegraphics/\\input target under figures/
    is missing, unproduced, rescaled or too wide, and every \\result macro is defined."""
    require_artefact(paths.FIGURES / "manifest.json")
    report = thesis.check_thesis()
    assert report.ok, report.format()


@pytest.mark.pipeline
def test_produced_figures_fit_and_embed_their_fonts() -> None:
    manifest = plotting.read_manifest()
    require_artefact(paths.FIGURES / "manifest.json")
    checks = thesis.figure_checks(manifest)
    assert len(checks), "no figure PDFs recorded in figures/manifest.json"
    too_wide = checks.loc[~checks["fits"], "figure"].tolist()
    assert not too_wide, f"figures wider than the text width: {too_wide}"
    if shutil.which("pdffonts"):
        bad = checks.loc[checks["fonts_embedded"] == False, "figure"].tolist()  # noqa: E712
        assert not bad, f"figures with fonts not embedded or Type 3: {bad}"


# ---------------------------------------------------------------- notebook 06's cross-stage summaries
def _write_record(path: Path, stage: str, wall: float, **extra: object) -> None:
    from valuealign import provenance

    m = provenance.Manifest(stage, parameters=dict(extra.pop("parameters", {})), seed=0)
    m.extra = dict(extra)
    m.wall_time_s = wall
    m.write(path)


def test_cross_stage_summaries_from_saved_records(tree: Path) -> None:
    processed, runs = tree / "data" / "processed", tree / "runs"
    _write_record(processed / "00_survey_data.manifest.json", "00_survey_data", 30.0)
    _write_record(processed / "06_thesis_figures.manifest.json", "06_thesis_figures", 5.0)  # itself: skipped
    for run, method, wall in (("kto-de-s0", "kto", 120.0), ("sft-de-s0", "sft", 60.0)):
        _write_record(runs / run / "manifest.json", "03_finetune", wall, run_id=run, train_rows=40,
                      optimizer_steps=5, parameters={"method": method, "value_set": "germany", "run_id": run})
    _write_record(runs / "03_finetune.manifest.json", "03_finetune", 999.0)  # the notebook: not double-counted
    _write_record(runs / "_baselines" / "eval" / "abc" / "manifest.json", "04_evaluate", 90.0)
    (runs / "not-a-record").mkdir()
    (runs / "not-a-record" / "manifest.json").write_text("[]")

    records = thesis.stage_manifests(processed, runs)
    assert list(records["stage"]) == ["00_survey_data", "03_finetune", "03_finetune", "04_evaluate"]
    table = thesis.pipeline_table(records).set_index("Stage")
    assert table.loc["03_finetune", "Records"] == 2
    assert table.loc["03_finetune", "Wall time (min)"] == pytest.approx(3.0)
    runs_t = thesis.runs_table(records)
    assert list(runs_t["run"]) == ["kto-de-s0", "sft-de-s0"] and list(runs_t["method"]) == ["kto", "sft"]

    summary = pd.DataFrame([
        # run, method, value_set, split, target, metric, mean
        ("kto-de-s0", "kto", "germany", "test", "germany", "js_alignment", 0.80),
        ("kto-de-s0", "kto", "germany", "test", "usa", "js_alignment", 0.10),  # other population
        ("kto-de-s0", "kto", "germany", "validation", "germany", "js_alignment", 0.99),  # other split
        ("kto-de-s0", "kto", "germany", "test", "germany", "w1_alignment", 0.50),  # other metric
        ("sft-de-s0", "sft", "germany", "test", "germany", "js_alignment", 0.70),
        ("_baselines", "base", None, "test", "germany", "js_alignment", 0.60),
        ("_baselines", "base", None, "test", "usa", "js_alignment", 0.64),
    ], columns=["run", "method", "value_set", "split", "target_value_set", "metric", "mean"])
    align = thesis.run_alignment(summary).set_index(["run", "value_set"])["alignment"]
    assert align["kto-de-s0", "germany"] == pytest.approx(0.80)
    assert align["sft-de-s0", "germany"] == pytest.approx(0.70)
    # untargeted baseline: one number per population, so a run meets base on its own population
    assert align["_baselines", "germany"] == pytest.approx(0.60)
    assert align["_baselines", "usa"] == pytest.approx(0.64)
    fig = thesis.plot_cost_vs_alignment(runs_t, thesis.run_alignment(summary))
    assert tuple(fig.get_size_inches()) == pytest.approx(plotting.figsize(0.6, 0.75))
    plt.close(fig)
    fig = thesis.plot_pipeline_runtime(thesis.pipeline_table(records))
    plt.close(fig)
    with pytest.raises(ValueError, match="columns"):
        thesis.run_alignment(summary.drop(columns="mean"))
    with pytest.raises(ValueError, match="no fine-tuned run has an evaluation"):
        thesis.plot_cost_vs_alignment(runs_t.assign(run="other"), thesis.run_alignment(summary))
    with pytest.raises(ValueError, match="make all"):
        thesis.pipeline_table(records.iloc[0:0])

    arte = thesis.artefact_table(plotting.read_manifest())
    assert set(arte["Artefact"]) == {"eval-good", "eval-rescaled", "eval-unused", "eval-table", "eval-wide"}
    assert set(arte["Kind"]) == {"figure", "table"}
    checks = thesis.figure_checks(plotting.read_manifest()).set_index("figure")
    assert not checks.loc["eval-wide", "fits"] and checks.loc["eval-good", "fits"]
    assert checks.loc["eval-good", "fraction_of_textwidth"] == pytest.approx(0.5)


def test_best_run_is_picked_on_validation_and_baseline_is_on_the_same_population(tree: Path) -> None:
    """KTO is best on the test items, SFT on the validation items: the pick is SFT, reported
    with its test alignment. The base line in the cost figure is base on the runs' own
    population (germany, 0.60), not base averaged over every population (0.62)."""
    rows = [
        ("kto-de-s0", "kto", "germany", "test", "germany", 0.80),
        ("kto-de-s0", "kto", "germany", "validation", "germany", 0.55),
        ("sft-de-s0", "sft", "germany", "test", "germany", 0.70),
        ("sft-de-s0", "sft", "germany", "validation", "germany", 0.65),
        ("_baselines", "base", None, "test", "germany", 0.60),
        ("_baselines", "base", None, "test", "usa", 0.64),
        ("_baselines", "base", None, "validation", "germany", 0.90),
    ]
    summary = pd.DataFrame(rows, columns=["run", "method", "value_set", "split", "target_value_set", "mean"]).assign(
        metric="js_alignment")
    best = thesis.best_run_on_validation(summary)
    assert (best["run"], best["alignment"], best["validation_alignment"]) == (
        "sft-de-s0", pytest.approx(0.70), pytest.approx(0.65))
    with pytest.raises(ValueError, match="validation"):
        thesis.best_run_on_validation(summary[summary["split"] == "test"])
    runs_t = pd.DataFrame({"run": ["kto-de-s0", "sft-de-s0"], "method": ["kto", "sft"],
                           "value_set": ["germany", "germany"], "wall_time_s": [60.0, 120.0]})
    fig = thesis.plot_cost_vs_alignment(runs_t, thesis.run_alignment(summary))
    base_lines = [ln.get_ydata()[0] for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert base_lines == [pytest.approx(0.60)]
    plt.close(fig)

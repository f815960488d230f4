"""valuealign.plotting: thesis-sized figures, booktabs/siunitx tables, macros, manifest.

Everything writes into a temporary figures/ folder (paths.ROOT/FIGURES are pointed at tmp).
The LaTeX test compiles a generated table with the real pdflatex when it is installed.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from valuealign import paths, plotting, provenance, thesis

from conftest import REPO


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    monkeypatch.delenv("VALUEALIGN_NOTEBOOK", raising=False)
    monkeypatch.delenv("VALUEALIGN_RUN", raising=False)
    return tmp_path


def _line_figure(fraction: float = 0.5) -> plt.Figure:
    fig, ax = plotting.subplots(fraction)
    ax.plot([0, 1, 2], [0.2, -0.4, 0.9], label="KTO − base")
    ax.set_xlabel("value_set × 5% (Côte d'Ivoire)")
    ax.legend()
    return fig


def test_figsize_is_a_fraction_of_the_text_width() -> None:
    assert plotting.figsize(1.0) == (plotting.TEXTWIDTH_IN, pytest.approx(plotting.TEXTWIDTH_IN * plotting.GOLDEN))
    w, h = plotting.figsize(0.5, aspect=1.0)
    assert (w, h) == (plotting.TEXTWIDTH_IN / 2, plotting.TEXTWIDTH_IN / 2)
    for bad in (0, -0.1, 1.2):
        with pytest.raises(ValueError, match="fraction"):
            plotting.figsize(bad)
    with pytest.raises(ValueError, match="aspect"):
        plotting.figsize(0.5, aspect=0)


def test_labels_and_colours_are_consistent() -> None:
    assert plotting.method_label("kto") == "KTO" and plotting.method_label("new") == "new"
    assert plotting.value_set_label("nz") == "NZ"
    assert plotting.value_set_label("cluster-1") == "Cluster 1"
    assert plotting.value_set_label("United States") == "United States"
    shown = plotting.with_display_names(pd.DataFrame({"method": ["kto"], "value_set": ["cluster-1"], "n": [3]}))
    assert shown.to_dict("records") == [{"method": "KTO", "value_set": "Cluster 1", "n": 3}]
    assert plotting.sort_methods(["kto", "zzz", "base", "sft"]) == ["base", "sft", "kto", "zzz"]
    colours = plotting.categorical_colors(["a", "b", "c"])
    assert len(set(colours.values())) == 3 and "#F0E442" not in colours.values()
    assert plotting.method_color("dpo") == plotting.METHOD_COLORS["dpo"]


def test_dist_has_a_display_name_colour_and_place() -> None:
    assert plotting.method_label("dist") == "Dist"
    assert plotting.method_color("dist") not in {plotting.method_color(m) for m in plotting.METHOD_ORDER if m != "dist"}
    assert plotting.sort_methods(["oracle", "dist", "sft", "kto"]) == ["sft", "kto", "dist", "oracle"]


def test_save_figure_writes_pdf_and_png_at_print_size_and_records_provenance(root: Path) -> None:
    src = root / "data" / "input.csv"
    src.parent.mkdir()
    src.write_text("a,b\n1,2\n")
    fig = _line_figure(0.5)
    pdf, png = plotting.save_figure(fig, "test-line", notebook="99_test", inputs=[src], run="r1")
    plt.close(fig)
    assert pdf == root / "figures" / "test-line.pdf" and png.suffix == ".png"
    w_in, h_in = thesis.pdf_size_in(pdf)
    assert w_in == pytest.approx(plotting.TEXTWIDTH_IN * 0.5, abs=1e-3)
    assert h_in == pytest.approx(plotting.TEXTWIDTH_IN * 0.5 * plotting.GOLDEN, abs=1e-3)
    with Image.open(png) as im:  # 300 dpi at the same size
        assert im.size == (round(w_in * 300), round(h_in * 300))
    entry = plotting.read_manifest()["test-line"]
    assert entry["files"] == ["figures/test-line.pdf", "figures/test-line.png"]
    assert entry["notebook"] == "99_test" and entry["run"] == "r1" and entry["kind"] == "figure"
    assert entry["inputs"] == {"data/input.csv": provenance.sha256_file(src)}
    assert entry["sha256"]["figures/test-line.pdf"] == provenance.sha256_file(pdf)
    assert entry["width_in"] == pytest.approx(3.0)


def test_saved_figures_are_byte_identical_across_saves(root: Path) -> None:
    fig = _line_figure()
    first = plotting.save_figure(fig, "same")[0].read_bytes()
    second = plotting.save_figure(fig, "same")[0].read_bytes()
    plt.close(fig)
    assert first == second


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="pdffonts (poppler-utils) not installed")
def test_figure_fonts_are_embedded_truetype_matching_the_thesis(root: Path) -> None:
    fig = _line_figure()
    pdf = plotting.save_figure(fig, "fonts")[0]
    plt.close(fig)
    fonts = thesis.pdf_fonts(pdf)
    assert fonts, "no fonts found in the figure"
    assert all(f["emb"] == "yes" for f in fonts), fonts
    assert not thesis.font_problems(pdf)
    assert any("STIX" in f["name"] for f in fonts), fonts  # Times-like, as the thesis text


def test_save_figure_errors_and_warnings(root: Path) -> None:
    fig = _line_figure()
    with pytest.raises(ValueError, match="lower-case"):
        plotting.save_figure(fig, "Bad Name")
    with pytest.raises(FileNotFoundError, match="does-not-exist.parquet"):
        plotting.save_figure(fig, "ok-name", inputs=[root / "does-not-exist.parquet"])
    plt.close(fig)
    wide, _ = plt.subplots(figsize=(8, 3))
    with pytest.warns(UserWarning, match="wider|more than the thesis text width"):
        plotting.save_figure(wide, "too-wide")
    plt.close(wide)
    assert plotting.read_manifest()["too-wide"]["width_in"] == pytest.approx(8.0)


def test_notebook_name_defaults_to_the_runner_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALUEALIGN_NOTEBOOK", "03_finetune")
    fig = _line_figure()
    plotting.save_figure(fig, "from-env")
    plt.close(fig)
    assert plotting.read_manifest()["from-env"]["notebook"] == "03_finetune"


def _table_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "value_set": ["nz_all", "de 5%", "us&ca"],
        "alignment": [0.71234, -0.05, np.nan],
        "n_items": pd.array([12, 250, 3], dtype="Int64"),
        "tiny": [1.5e-5, 2.25e-3, 3e-7],
        "ok": [True, False, True],
    })


def test_table_to_latex_uses_booktabs_siunitx_and_escapes() -> None:
    tex = plotting.table_to_latex(_table_frame(), caption="Alignment per value_set ($\\beta=0.1$), 5% held out",
                                  label="tab:x")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\caption{Alignment per value\\_set ($\\beta=0.1$), 5\\% held out}" in tex
    assert "\\label{tab:x}" in tex
    spec = tex.split("\\begin{tabular}{")[1].split("}\n")[0]
    assert spec == "lS[table-format=-1.3]S[table-format=3.0]S[table-format=1.3]l"
    assert "{alignment} & {n\\_items}" in tex  # headers braced for S columns, escaped
    assert "nz\\_all & 0.712 & 12" in tex
    assert "us\\&ca & {--} & 3" in tex  # missing number
    assert "de 5\\% & -0.050" in tex
    sci = plotting.table_to_latex(_table_frame()[["tiny"]], caption="c", label="l", float_format="{:.2e}")
    assert "S[table-format=1.2e-2]" in sci and "1.50e-05" in sci
    pct = plotting.table_to_latex(_table_frame()[["alignment"]], caption="c", label="l", float_format="{:.1%}")
    assert "{r}" in pct and "71.2\\%" in pct


def test_save_table_records_and_validates(root: Path) -> None:
    target = plotting.save_table(_table_frame(), "test-table", caption="Stub.", notebook="99_test")
    assert target == root / "figures" / "test-table.tex"
    assert target.read_text().startswith("% generated by 99_test")
    entry = plotting.read_manifest()["test-table"]
    assert entry["kind"] == "table" and entry["rows"] == 3 and entry["files"] == ["figures/test-table.tex"]
    with pytest.raises(ValueError, match="caption"):
        plotting.save_table(_table_frame(), "t2", caption=" ")
    with pytest.raises(ValueError, match="lower-case"):
        plotting.save_table(_table_frame(), "T2", caption="c")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex (TeX Live) not installed")
def test_generated_table_and_macros_compile_with_pdflatex(root: Path) -> None:
    plotting.save_table(_table_frame(), "compile-me", caption="All cells of value_set, 5% and $x^2$.")
    plotting.save_macros({"AlignKtoGainNz": 0.0712, "TopCountry": "S. Korea & co", "NItems": 250}, "t")
    doc = root / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage{booktabs}\\usepackage{siunitx}"
        "\\usepackage{graphicx}\n"
        "\\input{figures/results-macros.tex}\n\\begin{document}\n"
        "Gain \\AlignKtoGainNz{} in \\TopCountry{} over \\NItems{} items.\n"
        "\\input{figures/compile-me.tex}\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (root / "doc.pdf").stat().st_size > 1000
    assert "scaled down" not in (root / "doc.log").read_text()
    wide = pd.DataFrame({f"a long column header {i}": [1.234567] for i in range(12)})
    plotting.save_table(wide, "wide-table", caption="Too wide.")
    doc.write_text(doc.read_text().replace("compile-me", "wide-table"))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (root / "doc.log").read_text().replace("\n", "")  # TeX wraps log lines at 79 chars
    assert "tab:wide-table is wider than the text: scaled down" in log


def test_save_macros_merges_groups_and_rejects_clashes(root: Path) -> None:
    plotting.save_macros({"AlignKtoGainNz": 0.07123, "NRuns": np.int64(6)}, "04_evaluate")
    plotting.save_macros({"SummaryStages": 5}, "06_thesis_figures")
    plotting.save_macros({"AlignKtoGainNz": np.float64(0.5)}, "04_evaluate")  # re-run replaces the group
    tex = (root / "figures" / plotting.MACROS_TEX).read_text()
    assert "\\newcommand{\\AlignKtoGainNz}{0.500}" in tex
    assert "NRuns" not in tex  # the group's previous numbers are replaced, not merged
    assert "\\newcommand{\\SummaryStages}{5}" in tex
    assert plotting.read_macros() == {"AlignKtoGainNz": "0.500", "SummaryStages": "5"}
    assert "results-macros/04_evaluate" in plotting.read_manifest()
    with pytest.raises(ValueError, match="SummaryStages.*06_thesis_figures"):
        plotting.save_macros({"SummaryStages": 1}, "05_public_consultation")
    with pytest.raises(ValueError, match="letters only"):
        plotting.save_macros({"gain_nz": 1.0}, "04_evaluate")
    with pytest.raises(ValueError, match="NaN"):
        plotting.save_macros({"Gain": math.nan}, "04_evaluate")
    assert plotting.macro_name("align", "kto", "gain", "nz") == "AlignKtoGainNz"


def test_corrupt_manifest_gives_a_clear_error(root: Path) -> None:
    (root / "figures").mkdir()
    (root / "figures" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        plotting.read_manifest()
    (root / "figures" / "manifest.json").write_text(json.dumps([1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="JSON object"):
            plotting.read_manifest()


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter (matplotlib's rcParams and imported modules start clean)."""
    import os
    import sys

    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)


def test_registry_tables_macros_and_stages_import_without_applying_the_style() -> None:
    """Importing the artefact registry, the LaTeX tables, the macros or a stage module changes
    no rcParams and does not import pyplot; only ``plotting`` (the notebooks' import) and
    ``style.pyplot()`` (a stage's figure) apply the thesis style."""
    probe = _fresh_python(
        "import sys, matplotlib\n"
        "before = dict(matplotlib.rcParams)\n"
        "from valuealign import artefacts, latex_tables, macros, style, datasets, evaluation, thesis\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert dict(matplotlib.rcParams) == before, 'rcParams changed'\n"
        "plt = style.pyplot()\n"
        "assert matplotlib.rcParams['pdf.fonttype'] == 42 and matplotlib.rcParams['font.family'] == style.FONT_FAMILY\n"
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    on_import = _fresh_python(
        "import matplotlib\nfrom valuealign import plotting\n"
        "assert matplotlib.rcParams['pdf.fonttype'] == 42\n"
        "assert matplotlib.rcParams['axes.prop_cycle'].by_key()['color'] == plotting.OKABE_ITO\n"
    )
    assert on_import.returncode == 0, on_import.stderr[-2000:]


def test_plotting_still_offers_every_name_the_notebooks_use() -> None:
    """The notebooks keep ``from valuealign import plotting``: every ``plotting.<name>`` they use exists."""
    import re

    used = set()
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        used |= set(re.findall(r"\bplotting\.([A-Za-z_]+)", nb.read_text(encoding="utf-8")))
    assert used, "no notebook uses plotting"
    assert sorted(n for n in used if not hasattr(plotting, n)) == []

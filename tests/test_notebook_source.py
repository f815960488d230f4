"""Each notebook has one source, ``notebooks/NN_*.ipynb``, committed without what running it adds.

Why: the notebooks used to be written by builder scripts (every cell a Python string), so a cell
edited in JupyterLab silently diverged from its builder. Now the ``.ipynb`` is the source; the
nbstripout git filter (``.gitattributes``, registered by ``make setup`` with the Makefile's
``NBSTRIPOUT_ARGS``) strips outputs, execution counts and run metadata on ``git add``, and these
tests fail if a committed notebook still carries any of it, or if the filter would not restore a
notebook as JupyterLab or papermill leave it to its committed form.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# What a committed notebook may carry besides its cells' sources.
ALLOWED_NOTEBOOK_METADATA = {"kernelspec", "language_info"}
ALLOWED_LANGUAGE_INFO = {"name"}  # not JupyterLab's "version" (the Python of whoever saved it) etc.
# tags: papermill's "parameters"; the rest are presentation choices an author makes in JupyterLab
ALLOWED_CELL_METADATA = {"tags", "jupyter", "editable", "deletable", "slideshow"}
FORBIDDEN_TAGS = {"injected-parameters"}  # papermill's copy of one run's parameters


def source_problems(nb: dict[str, Any]) -> list[str]:
    """Everything in a notebook's JSON that running it added: outputs, execution counts, run
    metadata, papermill's injected-parameters cell. Empty for a clean source."""
    problems = [f"notebook metadata {k!r}" for k in sorted(set(nb.get("metadata", {})) - ALLOWED_NOTEBOOK_METADATA)]
    language = nb.get("metadata", {}).get("language_info", {})
    problems += [f"language_info {k!r}" for k in sorted(set(language) - ALLOWED_LANGUAGE_INFO)]
    for i, cell in enumerate(nb.get("cells", [])):
        where = f"cell {i} ({cell.get('id', 'no id')})"
        if cell.get("outputs"):
            problems.append(f"{where}: {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"{where}: execution count {cell['execution_count']}")
        problems += [f"{where}: metadata {k!r}" for k in sorted(set(cell.get("metadata", {})) - ALLOWED_CELL_METADATA)]
        problems += [f"{where}: tag {t!r}" for t in cell.get("metadata", {}).get("tags", []) if t in FORBIDDEN_TAGS]
    return problems


def nbstripout_args() -> list[str]:
    """The filter's options as ``make setup`` registers them (the Makefile's NBSTRIPOUT_ARGS)."""
    found = re.search(r"^NBSTRIPOUT_ARGS\s*:=\s*(.+)$", (REPO / "Makefile").read_text(encoding="utf-8"), re.M)
    assert found, "Makefile: NBSTRIPOUT_ARGS := ... (the nbstripout filter's options) is missing"
    return shlex.split(found.group(1))


def as_saved_after_a_run(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook as JupyterLab saves it after running every cell under papermill: outputs,
    counts, timing and papermill metadata, the full language_info, an injected-parameters cell."""
    ran = copy.deepcopy(nb)
    ran["metadata"]["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
        "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3", "version": "3.11.9"}
    ran["metadata"]["papermill"] = {"parameters": {"seed": 1}, "duration": 12.3}
    ran["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    count = 0
    for cell in ran["cells"]:
        cell["metadata"]["papermill"] = {"status": "completed", "duration": 0.5}
        if cell["cell_type"] == "code":
            count += 1
            cell["execution_count"] = count
            cell["metadata"]["execution"] = {"iopub.execute_input": "2026-12-01T00:00:00Z"}
            cell["metadata"]["scrolled"] = True
            cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["ran\n"]},
                               {"data": {"text/plain": ["42"]}, "execution_count": count, "metadata": {},
                                "output_type": "execute_result"}]
    where = next(i for i, c in enumerate(ran["cells"]) if "parameters" in c["metadata"].get("tags", []))
    ran["cells"].insert(where + 1, {"cell_type": "code", "execution_count": None, "id": "injected",
                                    "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
                                    "source": ["seed = 1\n"]})
    return ran


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_carries_no_outputs_counts_or_run_metadata(path):
    """The file in notebooks/ is a source: no outputs, no execution counts, only allowlisted metadata."""
    problems = source_problems(json.loads(path.read_text(encoding="utf-8")))
    assert not problems, (f"{path.name} carries what running it added ({'; '.join(problems)}): run `make setup` "
                          "(registers the nbstripout filter), then `git add` it again")


def test_the_check_rejects_a_notebook_with_an_executed_output():
    """The check above is not vacuous: an executed notebook fails it, for each thing a run adds."""
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    assert source_problems(nb) == []
    one_output = copy.deepcopy(nb)
    code = next(c for c in one_output["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["x\n"]}]
    assert source_problems(one_output) == [f"cell {one_output['cells'].index(code)} ({code['id']}): 1 output(s)"]
    problems = "\n".join(source_problems(as_saved_after_a_run(nb)))
    for added in ("output(s)", "execution count", "notebook metadata 'papermill'", "notebook metadata 'widgets'",
          "language_info 'version'", "language_info 'codemirror_mode'", "metadata 'execution'", "metadata 'scrolled'",
                  "metadata 'papermill'", "tag 'injected-parameters'"):
        assert added in problems, added


def test_every_notebook_is_a_fixed_point_of_the_filter():
    """nbstripout with the Makefile's options leaves each committed notebook byte for byte as it is
    (so the filter never rewrites a clean source: cell ids, key order and the last newline stay)."""
    run = subprocess.run([sys.executable, "-m", "nbstripout", *nbstripout_args(), "--verify", *map(str, NOTEBOOKS)],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"nbstripout would rewrite: {run.stdout}{run.stderr}"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_add_through_the_registered_filter_commits_the_clean_source(tmp_path):
    """End to end with real git: a repository with this .gitattributes and the filter registered as
    `make setup` registers it; `git add` of a notebook saved after a run stages the committed source."""
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    _git(repo, "init", "-q")
    shutil.copy(REPO / ".gitattributes", repo / ".gitattributes")
    command = shlex.join([sys.executable, "-m", "nbstripout", *nbstripout_args()])
    _git(repo, "config", "filter.nbstripout.clean", command)
    _git(repo, "config", "filter.nbstripout.smudge", "cat")
    for path in NOTEBOOKS:
        ran = as_saved_after_a_run(json.loads(path.read_text(encoding="utf-8")))
        (repo / "notebooks" / path.name).write_text(json.dumps(ran, indent=1, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")
    _git(repo, "add", ".")
    for path in NOTEBOOKS:
        staged = _git(repo, "show", f":notebooks/{path.name}")
        assert staged == path.read_text(encoding="utf-8"), f"git add of an executed {path.name} staged more than its source"


# ---------------------------------------------------------------- the one stage skeleton

def _code_cells(path: Path) -> list[dict[str, Any]]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def _source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return node.id if isinstance(node, ast.Name) else ""


def skeleton_problems(path: Path) -> list[str]:
    """Where a notebook leaves the skeleton of :mod:`valuealign.notebooks`: it must start with
    ``stage = notebooks.start("<its name>", globals())`` in the cell after its parameters, end with
    ``stage.finish(...)``, and not time, stop, show figures or name itself any other way."""
    cells = _code_cells(path)
    problems = []
    at = next((i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])), None)
    first = ast.parse(_source(cells[at + 1])) if at is not None and at + 1 < len(cells) else ast.Module(body=[])
    starts = [s for s in first.body if isinstance(s, ast.Assign) and _dotted(s.targets[0]) == "stage"
              and isinstance(s.value, ast.Call) and _dotted(s.value.func) == "notebooks.start"]
    if not starts:
        problems.append("the cell after the parameters does not set `stage = notebooks.start(...)`")
    elif [ast.literal_eval(a) for a in starts[0].value.args[:1]] != [path.stem] or \
            ast.unparse(starts[0].value.args[1]) != "globals()":
        problems.append(f"start(...) must name the notebook {path.stem!r} and pass globals()")
    last = ast.parse(_source(cells[-1])).body
    if not (last and isinstance(last[-1], ast.Expr) and isinstance(last[-1].value, ast.Call)
            and _dotted(last[-1].value.func) == "stage.finish"):
        problems.append("the last code cell does not end with stage.finish(...)")
    other_ways = {"provenance.Manifest": "its own manifest", "config.check_parameters": "its own parameter check",
                  "plotting.save_figure": "a figure saved without stage.figure", "plt.show": "a figure shown by plt.show",
                  "display": None}
    for i, cell in enumerate(cells):
        for node in ast.walk(ast.parse(_source(cell))):
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name == "display" and node.args and _dotted(node.args[0]) == "fig":
                    problems.append(f"code cell {i}: display(fig) (use stage.figure)")
                elif other_ways.get(name):
                    problems.append(f"code cell {i}: {name}(...): {other_ways[name]}")
                elif isinstance(node.func, ast.Attribute) and node.func.attr in ("__enter__", "__exit__"):
                    problems.append(f"code cell {i}: {node.func.attr}() (the stage times itself)")
            elif isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc):
                problems.append(f"code cell {i}: raise SystemExit (use stage.stop)")
            elif isinstance(node, ast.FunctionDef) and node.name in ("stop", "fail", "show"):
                problems.append(f"code cell {i}: its own {node.name}() (use stage.{'figure' if node.name == 'show' else 'stop'})")
            elif isinstance(node, ast.Assign | ast.NamedExpr):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for name in ("NB", "NOTEBOOK", "NAME"):
                    if any(_dotted(t) == name for t in targets):
                        problems.append(f"code cell {i}: its own name as {name} (use stage.name)")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_uses_the_stage_skeleton(path):
    """Every notebook starts with notebooks.start(...) and ends with stage.finish(...), and shows
    figures, stops and names itself only through the stage."""
    assert skeleton_problems(path) == []


def test_the_skeleton_check_finds_the_old_styles(tmp_path):
    """The check is not vacuous: a notebook written the ways they were before the skeleton (its own
    parameter check, a Manifest entered and exited across cells, `NB`, its own stop() raising
    SystemExit, figures saved and shown by hand) fails it on each."""
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    at = next(i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    code[at + 1]["source"] = 'from valuealign import config\n\nparams = config.check_parameters("x", globals())'
    code[at + 2]["source"] = ('NB = "03_finetune"\nmanifest = provenance.Manifest(NB, parameters=params).__enter__()\n'
                              'def stop(err):\n    raise SystemExit(f"stopped: {err}") from None\n'
                              'plotting.save_figure(fig, "x", notebook=NB)\ndisplay(fig)\nplt.show()\n')
    code[-1]["source"] = "manifest.__exit__(None, None, None)\nmanifest.write(paths.RUNS / 'm.json')"
    old = tmp_path / NOTEBOOKS[0].name
    old.write_text(json.dumps(nb), encoding="utf-8")
    found = "\n".join(skeleton_problems(old))
    for style in ("does not set `stage = notebooks.start", "does not end with stage.finish",
                  "config.check_parameters", "provenance.Manifest", "__enter__", "__exit__", "as NB",
                  "its own stop()", "raise SystemExit", "plotting.save_figure", "display(fig)", "plt.show"):
        assert style in found, style


def test_stage_saves_figures_stops_and_writes_the_manifest(tmp_path, monkeypatch):
    """The skeleton itself, outside a kernel: start checks the parameters and takes the seed; figure
    saves through the plotting registry as this notebook's and closes the figure; stop raises
    StageStopped naming the notebook and the error; finish writes the manifest where it is told
    (default data/processed/<name>.manifest.json) with the parameters, seed, hashes and extra."""
    import matplotlib.pyplot as plt

    from valuealign import config, notebooks, paths, plotting, provenance

    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(paths, "PROCESSED", tmp_path / "processed")
    monkeypatch.setenv("VALUEALIGN_NOTEBOOK", "someone-else")
    namespace = {name: spec.default for name, spec in config.notebook_parameters("03_finetune").items()}
    stage = notebooks.start("03_finetune", {**namespace, "seed": 7})
    assert stage.name == "03_finetune" and stage.params["seed"] == 7 and stage.manifest.seed == 7
    with pytest.raises(config.ConfigError):
        notebooks.start("03_finetune", {**namespace, "max_steps": "three"})

    source = tmp_path / "input.txt"
    source.write_text("data", encoding="utf-8")
    fig, ax = plotting.subplots(0.5)
    ax.plot([0, 1], [1, 0])
    stage.figure(fig, "stage-test", inputs=[source])
    assert (tmp_path / "figures" / "stage-test.pdf").exists() and (tmp_path / "figures" / "stage-test.png").exists()
    record = plotting.read_manifest()["stage-test"]
    assert record["notebook"] == "03_finetune" and record["inputs"] == {"input.txt": provenance.sha256_file(source)}
    assert not plt.fignum_exists(fig.number)

    with pytest.raises(notebooks.StageStopped, match="03_finetune stopped: ValueError: no such value set"):
        stage.stop(ValueError("no such value set"))

    stage.finish(tmp_path / "runs" / "m.json", inputs=[source], outputs=[tmp_path / "figures" / "stage-test.pdf"],
                 extra={"runs": ["a"]})
    written = provenance.read_json(tmp_path / "runs" / "m.json")
    assert written["stage"] == "03_finetune" and written["seed"] == 7 and written["parameters"] == stage.params
    assert written["inputs"] == {"input.txt": provenance.sha256_file(source)}
    assert list(written["outputs"]) == ["figures/stage-test.pdf"] and written["extra"] == {"runs": ["a"]}
    assert written["wall_time_s"] >= 0
    notebooks.start("06_thesis_figures", {}).finish()
    default = provenance.read_json(tmp_path / "processed" / "06_thesis_figures.manifest.json")
    assert default["stage"] == "06_thesis_figures" and default["seed"] is None


def test_finish_drops_what_the_notebook_no_longer_makes(tmp_path, monkeypatch):
    """A figure a notebook made in an earlier execution but not in this one (here renamed) stayed in
    figures/manifest.json and was counted by notebook 06 (SummaryFigures 28 for 27 in a long-lived
    checkout). Finish now drops it and its files; other notebooks' entries and the macros stay."""
    import matplotlib.pyplot as plt

    from valuealign import artefacts, config, notebooks, paths, plotting

    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr(paths, "PROCESSED", tmp_path / "processed")

    def save(name: str, notebook: str) -> None:
        fig, ax = plotting.subplots(0.5)
        ax.plot([0, 1], [1, 0])
        plotting.save_figure(fig, name, notebook=notebook)
        plt.close(fig)

    save("eval-old-name", "04_evaluate")
    save("taxonomy-map", "01_value_taxonomy")
    artefacts.record_artefact("evaluation-macros", [], "04_evaluate", extra={"kind": "macros"})
    store = tmp_path / "figures" / "manifest.json"
    data = plotting.read_manifest()
    for entry in data.values():
        entry["made_utc"] = "2026-01-01T00:00:00Z"  # an earlier execution
    store.write_text(json.dumps(data), encoding="utf-8")

    namespace = {name: spec.default for name, spec in config.notebook_parameters("04_evaluate").items()}
    stage = notebooks.start("04_evaluate", namespace)
    save("eval-new-name", "04_evaluate")
    stage.finish(tmp_path / "m.json")
    assert sorted(plotting.read_manifest()) == ["eval-new-name", "evaluation-macros", "taxonomy-map"]
    assert not (tmp_path / "figures" / "eval-old-name.pdf").exists()
    assert (tmp_path / "figures" / "eval-new-name.pdf").exists() and (tmp_path / "figures" / "taxonomy-map.png").exists()

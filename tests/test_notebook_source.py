"""Each notebook has one source, ``notebooks/NN_*.ipynb``, committed without what running it adds.

Why: the notebooks used to be written by builder scripts (every cell a Python string), so a cell
edited in JupyterLab silently diverged from its builder. Now the ``.ipynb`` is the source; the
nbstripout git filter (``.gitattributes``, registered by ``make setup`` with the Makefile's
``NBSTRIPOUT_ARGS``) strips outputs, execution counts and run metadata on ``git add``, and these
tests fail if a committed notebook still carries any of it, or if the filter would not restore a
notebook as JupyterLab or papermill leave it to its committed form.
"""

from __future__ import annotations

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

"""Every command the README shows still works (cheaply: nothing is trained or installed).

Why: `make nb-02 PROFILE=thesis-7b` once built nothing and exited 0, and `consultation seed
--run <run_id>` failed on every real run; both were documented. This test extracts each command
from README.md (fenced bash blocks, and inline code that starts with `make `, `python -m`,
`.venv/bin/python ` or `bash `) and checks it with the first matching rule of
:data:`COMMAND_CHECKS`:

- ``make ...``: ``make -n -B`` (print, run nothing, as if every target were out of date) must
  succeed and show the recipe lines that :data:`MAKE_PLANS` expects for each target;
- ``python -m valuealign.<module> [subcommand] ...``: ``--help`` of the module (and subcommand)
  must succeed and list every ``--option`` the README uses; path arguments must exist;
- ``python -m valuealign.notebooks NN ...`` and ``papermill NN.ipynb ... -f profile``: besides,
  the profile and ``-p`` values pass the notebook's parameter checks (``valuealign.config``);
- ``consultation seed --run <run_id>``: run for real on a small run folder as notebook 03 leaves it;
- ``bash <script>``: the script exists and ``bash -n`` parses it.

A README command that no rule matches, or a make target without an expected plan, fails with a
message telling the author what to add (a row of MAKE_PLANS or a rule of COMMAND_CHECKS).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
THIS = "tests/test_readme_commands.py"


def _run_nb(nb: str) -> str:
    """The recipe line that runs notebook ``nb`` under the profile (PROFILE is substituted)."""
    return f"-m valuealign.notebooks --profile configs/{{PROFILE}}.yaml --out executed/{{PROFILE}} {nb} --stamp"


# target -> lines (substrings; {PROFILE}, {GRID}, {EXECUTOR}, {SWEEP_ARGS} filled in from the
# command's variables) that `make -n -B <target>` must print. Add a row when the README shows a
# new target (other helpers: make rehearse, make verify, make release ... go here).
MAKE_PLANS: dict[str, list[str]] = {
    "all": [_run_nb(nb) for nb in NOTEBOOKS],
    "test": ["-m ruff check lib tests", "-m pytest", "--nbval-lax"],
    "help": ["grep -hE"],
    "setup": ["tools/env_requirements.py environment.yml", "-m pip install", "-m valuealign.models convert-bundled",
              "git config filter.nbstripout.clean"],
    "figures": [_run_nb("06_thesis_figures"), "-m valuealign.thesis check"],
    "thesis": ["-m valuealign.thesis check", "latexmk -pdf", "-m valuealign.thesis fonts thesis/main.pdf"],
    "thesis-deps": ["dpkg-query", "apt-get install"],
    "sweep": ["-m valuealign.sweep {GRID} --executor {EXECUTOR} {SWEEP_ARGS}"],
    "bench-gpu-quick": ["benchmarks/gpu_qlora.py --quick"],
    "release": ["-m valuealign.release"],
    "rehearse": ["-m valuealign.rehearsal configs/{PROFILE}.yaml"],
    "verify": [*(_run_nb(nb) for nb in NOTEBOOKS), "-m valuealign.verify check --profile {PROFILE}"],
    "verify-update": [*(_run_nb(nb) for nb in NOTEBOOKS), "-m valuealign.verify update --profile {PROFILE}"],
    "pin-taxonomy": ["01_value_taxonomy -p taxonomy_mode recompute", "-m valuealign.pinning promote"],
    "release-verify": ["-m valuealign.release --verify release"],
    "clean": ["rm -rf executed data/processed data/interim data/cache runs"],
    "distclean": ["rm -rf executed data/processed", "rm -rf .venv models .stamps"],
    # nb-05 (phase 3): the survey runs it refines (00-03), then 05; not 04
    "nb-05": [_run_nb(n) for n in NOTEBOOKS if n[:2] in ("00", "01", "02", "03", "05")],
    # nb-NN: notebooks 00..NN (what NN reads), e.g. nb-02 runs 00, 01 and 02
    **{f"nb-{nb[:2]}": [_run_nb(n) for n in NOTEBOOKS[: i + 1] if n[:2] <= nb[:2]]
       for i, nb in enumerate(NOTEBOOKS) if nb[:2] in ("00", "01", "02")},
}
MAKE_DEFAULTS = {"PROFILE": "smoke", "GRID": "configs/grids/smoke.yaml", "EXECUTOR": "local", "SWEEP_ARGS": ""}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "lib"), "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}


# ---------------------------------------------------------------- extraction

_FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:make|python -m|\.venv/bin/python|bash) [^`]*|make)`")


def readme_commands(text: str | None = None) -> list[str]:
    """The commands README.md shows: lines of ```bash blocks (comments cut) and inline commands."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found: list[str] = []
    for lang, body in _FENCE.findall(text):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        for line in body.splitlines():
            cmd = re.sub(r"\s+#.*$", "", line.strip().removeprefix("$ ")).strip()
            if cmd and not cmd.startswith("#"):
                found.append(cmd)
    prose = _FENCE.sub("", text)
    found += [m.strip() for m in _INLINE.findall(prose)]
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- checks


def _fill_placeholder(word: str) -> str:
    """``PROFILE=<profile>`` (a placeholder the reader fills in) -> the variable's default value."""
    name, _, value = word.partition("=")
    if value.startswith("<") and value.endswith(">") and name in MAKE_DEFAULTS:
        return f"{name}={MAKE_DEFAULTS[name]}"
    return word


def check_make(cmd: str) -> None:
    words = [_fill_placeholder(w) for w in shlex.split(cmd)[1:]]
    variables = dict(MAKE_DEFAULTS, **dict(w.split("=", 1) for w in words if "=" in w))
    targets = [w for w in words if "=" not in w and not w.startswith("-")]
    missing = [t for t in targets if t not in MAKE_PLANS]
    if missing:
        pytest.fail(f"README command {cmd!r}: make target(s) {', '.join(missing)} have no expected plan: add "
                    f"a row to MAKE_PLANS in {THIS} with the recipe lines `make -n -B <target>` must print")
    proc = subprocess.run(["make", "-n", "-B", *words], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"`make -n -B {' '.join(words)}` failed:\n{proc.stderr[-3000:]}"
    plan = re.sub(r"[ \t]+", " ", proc.stdout)
    for target in targets or ["help"]:
        for line in MAKE_PLANS[target]:
            want = re.sub(r"[ \t]+", " ", line.format(**variables)).strip()
            assert want in plan, (f"README command {cmd!r}: `make -n -B {' '.join(words)}` does not plan "
                                  f"{want!r} (target {target}); plan:\n{proc.stdout[-3000:]}")


def check_python_module(cmd: str) -> None:
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    rest = words[words.index("-m") + 2:]
    sub = rest[0] if rest and not rest[0].startswith(("-", "<")) and not (REPO / rest[0]).exists() else None
    for word in rest:
        if "/" in word and not word.startswith(("-", "<")):
            assert (REPO / word).exists(), f"README command {cmd!r}: {word} does not exist"
    help_cmd = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
    proc = subprocess.run(help_cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"README command {cmd!r}: `{' '.join(help_cmd[1:])}` failed:\n{proc.stderr[-3000:]}"
    for option in (w.split("=", 1)[0] for w in rest if w.startswith("--")):
        assert option in proc.stdout, (f"README command {cmd!r}: option {option} is not in "
                                       f"`{' '.join(help_cmd[1:])}`:\n{proc.stdout}")


def _notebook_parameters(cmd: str, notebook: str, profile: str, overrides: dict[str, str]) -> None:
    """The profile and overrides a README command passes to a notebook pass its parameter checks."""
    import yaml

    from valuealign import config

    assert (REPO / profile).is_file(), f"README command {cmd!r}: profile {profile} does not exist"
    try:
        params = {**config.parameters_for(notebook, REPO / profile),
                  **{k: yaml.safe_load(v) for k, v in overrides.items()}}
        config.validate(params, config.notebook_parameters(notebook), where=notebook)
    except config.ConfigError as err:
        pytest.fail(f"README command {cmd!r}: its parameters are refused: {err}")


def check_notebook_runner(cmd: str) -> None:
    """``python -m valuealign.notebooks NN_name --profile P -p k v``: options exist, parameters pass."""
    check_python_module(cmd)
    words = shlex.split(cmd)
    rest = words[words.index("-m") + 2:]
    profile = rest[rest.index("--profile") + 1] if "--profile" in rest else "configs/smoke.yaml"
    overrides = {rest[i + 1]: rest[i + 2] for i, w in enumerate(rest) if w in ("-p", "--param")}
    _notebook_parameters(cmd, rest[0], profile, overrides)


def check_papermill(cmd: str) -> None:
    """``papermill IN OUT -f profile.yaml``: papermill runs, the notebook exists, the profile passes."""
    words = shlex.split(cmd)
    notebook = REPO / words[1]
    assert notebook.is_file(), f"README command {cmd!r}: {words[1]} does not exist"
    proc = subprocess.run([sys.executable, "-m", "papermill", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "-f" in proc.stdout, f"papermill --help failed: {proc.stderr[-2000:]}"
    profile = words[words.index("-f") + 1] if "-f" in words else None
    if profile:
        _notebook_parameters(cmd, notebook.stem, profile, {})


def check_seed_export(cmd: str) -> None:
    """``consultation seed --run <run_id> --out seeds.csv``: run for real on a small run folder
    shaped as notebook 03 leaves it (examples.json), the run id resolved under runs/."""
    import json
    import tempfile

    check_python_module(cmd)
    with tempfile.TemporaryDirectory() as tmp:
        run_id = "smollm2-135m__sft__toy__s0__0123abcd"
        run = Path(tmp) / "runs" / run_id
        run.mkdir(parents=True)
        (run / "examples.json").write_text(json.dumps([{
            "item_id": "q1", "question": "Here is a question:\nIs it fair?\n\nPossible answers:\nA. Yes\nB. No\n",
            "target": "A", "before": "B", "after": "A"}]))
        (run / "DONE").write_text("x\n")
        words = [w.replace("<run_id>", run_id) for w in shlex.split(cmd)]
        if "--out" in words:
            words[words.index("--out") + 1] = str(Path(tmp) / "seeds.csv")
        words[0] = sys.executable if words[0].endswith("python") else words[0]
        proc = subprocess.run(words, cwd=REPO, env={**_env(), "VALUEALIGN_ROOT": tmp}, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"README command {cmd!r} failed on a run folder from notebook 03:\n{proc.stderr}"
        assert "Is it fair? - Yes" in (Path(tmp) / "seeds.csv").read_text()


def check_bash_script(cmd: str) -> None:
    script = REPO / shlex.split(cmd)[1]
    assert script.is_file(), f"README command {cmd!r}: {script} does not exist"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"README command {cmd!r}: bash -n {script}: {proc.stderr}"


def check_python_script(cmd: str) -> None:
    script = REPO / next(w for w in shlex.split(cmd) if w.endswith(".py"))
    assert script.is_file(), f"README command {cmd!r}: {script} does not exist"
    proc = subprocess.run([sys.executable, "-m", "py_compile", str(script)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"README command {cmd!r}: {script} does not compile: {proc.stderr}"


# (pattern, check, what it checks): the first rule whose pattern matches a command checks it.
COMMAND_CHECKS: list[tuple[re.Pattern[str], Callable[[str], None], str]] = [
    (re.compile(r"^make(\s|$)"), check_make, "make -n -B and the expected recipe lines"),
    (re.compile(r"^(\.venv/bin/)?python3? -m valuealign\.notebooks "), check_notebook_runner,
     "options exist; the profile and -p values pass the notebook's parameter checks"),
    (re.compile(r"-m valuealign\.consultation seed .*--run <run_id>"), check_seed_export,
     "runs on a run folder shaped as notebook 03 leaves it"),
    (re.compile(r"^papermill \S+\.ipynb "), check_papermill, "the notebook exists; the -f profile passes"),
    (re.compile(r"^(\.venv/bin/)?python3? -m valuealign\.\w+"), check_python_module,
     "--help lists every option used"),
    (re.compile(r"^bash \S+$"), check_bash_script, "the script exists and parses"),
    (re.compile(r"^(\.venv/bin/)?python3? (benchmarks|tools)/\w+\.py"), check_python_script,
     "the script exists and compiles (benchmarks run for minutes)"),
]


def check_command(cmd: str) -> None:
    for pattern, check, _ in COMMAND_CHECKS:
        if pattern.search(cmd):
            check(cmd)
            return
    pytest.fail(f"README command {cmd!r} has no check: add a rule to COMMAND_CHECKS in {THIS} "
                "(a pattern and a cheap check: a dry run, --help, or make -n)")


# ---------------------------------------------------------------- tests


def test_the_readme_shows_the_commands_this_test_knows() -> None:
    cmds = readme_commands()
    assert "make all" in cmds and "make test" in cmds and "make nb-02 PROFILE=thesis-7b" in cmds
    assert ".venv/bin/python -m valuealign.consultation seed --run <run_id> --out seeds.csv" in cmds


@pytest.mark.parametrize("cmd", readme_commands())
def test_every_readme_command_still_works(cmd: str) -> None:
    check_command(cmd)


def test_an_unknown_command_or_target_fails_telling_the_author_what_to_add() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"has no check: add a rule to COMMAND_CHECKS"):
        check_command("docker compose up")
    with pytest.raises(pytest.fail.Exception, match=r"make target\(s\) rehearse-everything have no expected "
                                                    r"plan: add a row to MAKE_PLANS"):
        check_command("make rehearse-everything")
    with pytest.raises(AssertionError, match=r"option --no-such-option is not in"):
        check_command(".venv/bin/python -m valuealign.consultation seed --no-such-option x")
    md = "Run:\n```bash\nmake all   # everything\n# a comment\n```\nthen `make nb-02 PROFILE=x` and `ls`.\n"
    assert readme_commands(md) == ["make all", "make nb-02 PROFILE=x"]

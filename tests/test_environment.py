"""environment.yml is the single source of truth: what `make setup` installs must match it."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
from env_requirements import pip_requirements  # noqa: E402


def test_every_pip_requirement_is_pinned_exactly() -> None:
    reqs = pip_requirements(REPO / "environment.yml")
    assert len(reqs) >= 30
    for req, _ in reqs:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.+]*", req), f"not pinned with ==: {req}"


def test_installed_versions_match_environment_yml() -> None:
    """The venv was built from the same list, so any drift (manual pip install, edited pin) fails."""
    mismatches = []
    for req, _ in pip_requirements(REPO / "environment.yml"):
        name, version = req.split("==")
        installed = importlib.metadata.version(name)
        if installed.split("+")[0] != version:
            mismatches.append(f"{name}: environment.yml {version}, installed {installed}")
    assert not mismatches, "\n".join(mismatches)


def test_make_setup_reads_environment_yml() -> None:
    """The Makefile's install step takes its list from environment.yml, not a second file."""
    makefile = (REPO / "Makefile").read_text()
    assert "tools/env_requirements.py environment.yml" in makefile
    assert not (REPO / "requirements.txt").exists(), "a second requirements file could drift"
    out = subprocess.run([sys.executable, str(REPO / "tools/env_requirements.py"), str(REPO / "environment.yml")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith("torch=="), "torch must come first so no package pulls a CUDA build"


def test_parser_rejects_garbage_in_pip_section(tmp_path) -> None:
    bad = tmp_path / "environment.yml"
    bad.write_text("dependencies:\n  - pip\n  - pip:\n      not-a-list-item\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools/env_requirements.py"), str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "unexpected line" in proc.stderr

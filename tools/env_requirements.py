"""Print the `pip:` section of environment.yml as requirement lines.

Runs with the bare system Python before any environment exists, so it parses the one
list it needs by hand instead of importing PyYAML. A requirement whose comment starts with
``no-deps`` is installed without its dependencies (``--no-deps`` prints only those, the
default prints the others).
"""

from __future__ import annotations

import sys
from pathlib import Path


def pip_requirements(env_file: Path) -> list[tuple[str, bool]]:
    """(requirement, no_deps) pairs in file order."""
    reqs: list[tuple[str, bool]] = []
    in_pip, pip_indent = False, -1
    for line in env_file.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped == "- pip:":
            in_pip, pip_indent = True, indent
            continue
        if in_pip:
            if indent <= pip_indent:
                break
            if not stripped.startswith("- "):
                raise SystemExit(f"{env_file}: unexpected line in the pip section: {line!r}")
            req, _, comment = stripped[2:].partition("#")
            reqs.append((req.strip(), comment.strip().startswith("no-deps")))
    if not reqs:
        raise SystemExit(f"{env_file}: no `pip:` section found")
    return reqs


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    want_no_deps = "--no-deps" in sys.argv
    path = Path(args[0]) if args else Path("environment.yml")
    print("\n".join(r for r, nd in pip_requirements(path) if nd == want_no_deps))

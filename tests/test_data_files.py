"""Raw data is immutable: every shipped file matches the checksum in data/README.md."""

from __future__ import annotations

import re

from valuealign import provenance

from conftest import REPO


def test_shipped_raw_files_match_their_documented_checksums() -> None:
    readme = (REPO / "data/README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"\| `(raw/[^`]+)` \| `([0-9a-f]{64})` \|", readme))
    assert len(listed) >= 30
    for rel, digest in listed.items():
        path = REPO / "data" / rel
        assert path.exists(), f"{rel} is documented but missing"
        assert provenance.sha256_file(path) == digest, f"{rel} changed: raw data is immutable"
    shipped = {str(p.relative_to(REPO / "data")) for p in (REPO / "data/raw").rglob("*")
               if p.is_file() and not p.name.startswith(".")}
    dropped_in = {"raw/goqa/global_opinions.csv", "raw/daily_dilemmas/dilemmas_with_detail_by_action.csv"}
    tracked = {p for p in shipped if not p.startswith("raw/WVS") and p not in dropped_in}
    assert tracked <= set(listed), f"undocumented raw files: {sorted(tracked - set(listed))}"


def test_goqa_licence_is_stated_where_it_is_shipped() -> None:
    readme = (REPO / "data/README.md").read_text(encoding="utf-8")
    assert "CC BY-NC-SA 4.0" in readme and "never" in readme

"""Identifiers shared by the stages: value-set slugs and seeds derived from names.

Why one module: a value set is named by notebook 02 (``"United States"`` -> ``united-states``),
found again by notebooks 03-05 from the same profile entries, and consultation value sets
(``consultation-<conversation>-...``) live beside them; two slug rules would make a profile
entry name one value set in one stage and none in the next. Seeds derived from names
(:func:`stable_int`) do not depend on iteration order or ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np


class EmptySlugError(ValueError):
    """A name has no letter or digit, so it gives no id."""


def slugify(name: Any) -> str:
    """Id of a value set or conversation: lower-case, '-' separated ('United States' -> 'united-states')."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    if not slug:
        raise EmptySlugError(f"value set name {name!r} gives an empty id")
    return slug


def value_set_id(spec: str) -> str:
    """The id of a ``value_sets`` profile entry: members joined by ``+`` (``France+Britain`` ->
    ``france-britain``), as notebook 02 names the mixture of those groups."""
    return slugify("-".join(m.strip() for m in str(spec).split("+")))


def stable_int(*parts: Any) -> int:
    """A 63-bit integer from its parts: seeds that do not depend on iteration order."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") >> 1


def rng_for(*parts: Any) -> np.random.Generator:
    """A generator seeded by :func:`stable_int` of ``parts`` (one independent stream per name)."""
    return np.random.default_rng(stable_int(*parts))

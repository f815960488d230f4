"""Parameter profiles and their validation.

The names, defaults, ranges, choices and help of a numbered notebook's parameters are its
schema in :mod:`valuealign.schemas` (one dataclass per notebook); the notebook's ``parameters``
cell repeats them as ``name = default  # what it is [lo, hi]`` or ``# what it is {a, b, c}``
lines, and ``tests/test_schemas.py`` checks that the cell and the schema agree. The default
gives the type, ``[lo, hi]`` a closed range and ``{...}`` the allowed values (for a list
parameter, each element). A notebook without a schema (a sweep's own notebook) is described by
its parameters cell, read with :func:`parse_parameters_source`. Profiles in ``configs/*.yaml``
are flat mappings of such names to values; a profile may set parameters of any notebook, and
each notebook receives only its own.

Why this strictness: papermill only *warns* on a misspelt parameter, so a full GPU run
could silently use a default. Here an unknown key, a wrong type or an out-of-range value
is an error that names the key (and the closest valid names).

A profile with ``strict: true`` (the GPU profiles) must also switch off every *smoke cap*
(:data:`SMOKE_CAPS`): the notebook defaults are the embedded default, sized to run in minutes
on a CPU, and a thesis profile that forgets a key would otherwise train and evaluate on a
smoke-sized sample without a word.
"""

from __future__ import annotations

import ast
import difflib
import io
import json
import math
import os
import re
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from valuealign import paths, schemas
from valuealign.schemas import ParamSpec  # noqa: F401 - re-exported: config.ParamSpec


class ConfigError(ValueError):
    """A parameter profile or parameter value is invalid; the message names the key."""


_RANGE = re.compile(r"\[\s*([^\],]+)\s*,\s*([^\]]+)\s*\]\s*$")
_CHOICES = re.compile(r"\{([^}]*)\}\s*$")


def _parse_comment(comment: str) -> tuple[str, float | None, float | None, tuple[str, ...] | None]:
    text = comment.lstrip("#").strip()
    low = high = None
    choices = None
    if m := _RANGE.search(text):
        low, high = (float(v) if v.strip() not in ("inf", "-inf") else float(v) for v in m.groups())
        text = text[: m.start()].strip()
    elif m := _CHOICES.search(text):
        choices = tuple(c.strip() for c in m.group(1).split(",") if c.strip())
        text = text[: m.start()].strip()
    return text, low, high, choices


def parse_parameters_source(source: str, origin: str = "<parameters>") -> dict[str, ParamSpec]:
    """Parse a parameters cell's source into specs (literal defaults only)."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    specs: dict[str, ParamSpec] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        try:
            default = ast.literal_eval(node.value)
        except ValueError as err:
            raise ConfigError(
                f"{origin}: parameter {target.id!r} must have a literal default"
            ) from err
        doc, low, high, choices = _parse_comment(comments.get(node.lineno, ""))
        specs[target.id] = ParamSpec(target.id, default, doc, low, high, choices)
    return specs


def notebook_parameters(notebook: Path | str) -> dict[str, ParamSpec]:
    """Specs of a notebook's parameters: its schema (:mod:`valuealign.schemas`), or for a
    notebook without one (a sweep's own) its ``parameters`` cell."""
    path = notebook_path(notebook)
    schema = schemas.schema_for(path.stem)
    return schemas.specs_of(schema) if schema is not None else parameters_cell_specs(path)


def parameters_cell_specs(notebook: Path | str) -> dict[str, ParamSpec]:
    """Specs as written in the cell tagged ``parameters`` of a notebook file (what the
    researcher reads and edits; ``tests/test_schemas.py`` compares it with the schema)."""
    path = notebook_path(notebook)
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return parse_parameters_source(src, origin=str(path))
    raise ConfigError(f"{path}: no cell tagged 'parameters'")


def _same_value(a: Any, b: Any) -> bool:
    """Equal and of the same type, element by element for lists (``0`` is not ``0.0``: the
    default's type is the parameter's type)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def schema_differences(notebook: str, cell: Mapping[str, ParamSpec]) -> list[str]:
    """How a parameters cell (:func:`parameters_cell_specs`) differs from the notebook's schema:
    one line per difference, naming the notebook and the parameter; empty when they agree."""
    schema = schemas.schema_for(notebook)
    if schema is None:
        return [f"{notebook}: no schema in valuealign.schemas"]
    declared = schemas.specs_of(schema)
    out = [f"{notebook}: parameter {name!r} is in the parameters cell but not in schemas.{schema.__name__}"
           for name in cell if name not in declared]
    out += [f"{notebook}: parameter {name!r} of schemas.{schema.__name__} is missing from the parameters cell"
            for name in declared if name not in cell]
    for name in [n for n in declared if n in cell]:
        mine, theirs = declared[name], cell[name]
        if not _same_value(theirs.default, mine.default):
            out.append(f"{notebook}: parameter {name!r} defaults to {theirs.default!r} in the parameters cell "
                       f"but to {mine.default!r} in schemas.{schema.__name__}")
        if (theirs.low, theirs.high) != (mine.low, mine.high):
            out.append(f"{notebook}: parameter {name!r} has range [{theirs.low}, {theirs.high}] in the "
                       f"parameters cell but [{mine.low}, {mine.high}] in schemas.{schema.__name__}")
        if theirs.choices != mine.choices:
            out.append(f"{notebook}: parameter {name!r} allows {theirs.choices} in the parameters cell "
                       f"but {mine.choices} in schemas.{schema.__name__}")
        if theirs.doc != mine.doc:
            out.append(f"{notebook}: parameter {name!r} is described as {theirs.doc!r} in the parameters "
                       f"cell but as {mine.doc!r} in schemas.{schema.__name__}")
    return out


def notebook_path(notebook: Path | str) -> Path:
    """The file of a notebook given by name (``03_finetune``, looked up in ``notebooks/``) or
    path; a missing notebook is a :class:`ConfigError` naming the path."""
    p = Path(notebook)
    if p.suffix != ".ipynb":
        p = paths.NOTEBOOKS / f"{notebook}.ipynb"
    elif not p.is_absolute() and not p.exists():
        p = paths.NOTEBOOKS / p.name
    if not p.exists():
        raise ConfigError(f"notebook not found: {p}")
    return p


def all_notebook_parameters(notebooks_dir: Path = paths.NOTEBOOKS) -> dict[str, dict[str, ParamSpec]]:
    return {p.stem: notebook_parameters(p) for p in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))}


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML itself would let
    the last one win silently, so a profile could set a parameter twice and use the second)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]}, again on line {line})",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`_UniqueKeyLoader`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (profiles, grid files); errors name the file.

    Safe loading only (a config file never constructs Python objects), and a key given twice
    is an error naming it and both lines."""
    try:
        data = safe_load_unique(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: {what} is not UTF-8 (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); re-save the file as UTF-8") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping")
    return data


def load_profile(path: Path | str) -> dict[str, Any]:
    """Read a flat YAML profile; errors name the file."""
    path = Path(path)
    if not path.exists():
        valid = sorted(p.name for p in paths.CONFIGS.glob("*.yaml"))
        raise ConfigError(f"profile not found: {path} (profiles in configs/: {', '.join(valid)})")
    return read_yaml_mapping(path, "a profile")


def unknown_parameter_error(key: str, valid: list[str], where: str) -> ConfigError:
    """The error for a parameter name no notebook (or section) declares: names ``where`` (the
    profile file or grid section), the key, the closest valid names and all valid ones."""
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown parameter {key!r}{hint} (valid: {', '.join(sorted(valid))})")


def check_value(spec: ParamSpec, value: Any, where: str = "parameter") -> Any:
    """Validate one value against its spec; returns the value (ints widened to float)."""
    name = f"{where} {spec.name!r}"
    d = spec.default
    if d is not None:
        if isinstance(d, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true/false, got {value!r}")
        elif isinstance(d, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        elif isinstance(d, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(d, str):
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
        elif isinstance(d, list | tuple):
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{name} must be a list, got {value!r}")
            value = [_check_element(spec, d, i, v, name) for i, v in enumerate(value)]
        elif isinstance(d, dict) and not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
    if spec.choices is not None:
        elems = value if isinstance(value, list) else [value]
        for v in elems:
            if str(v) not in spec.choices:
                raise ConfigError(f"{name}: {v!r} is not one of {{{', '.join(spec.choices)}}}")
    if spec.low is not None and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isnan(value) or value < spec.low or value > spec.high:
            raise ConfigError(f"{name} = {value!r} is out of range [{spec.low}, {spec.high}]")
    return value


def _element_type(default: list | tuple) -> type | None:
    """The one scalar type of a list default's elements (None: empty or mixed, not checked)."""
    kinds = {type(v) for v in default}
    kind = kinds.pop() if len(kinds) == 1 else None
    return kind if kind in (bool, int, float, str) else None


def _check_element(spec: ParamSpec, default: list | tuple, i: int, value: Any, name: str) -> Any:
    """One element of a list parameter: the default's element type, and the declared range
    ``[lo, hi]`` applied to each element (the range of a list parameter bounds its elements)."""
    kind = _element_type(default)
    where = f"{name} element {i} ({value!r})"
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true/false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be an integer"
                          + (" (YAML reads 1e9 as text: write 1000000000)" if isinstance(value, str) else ""))
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number")
        value = float(value)
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    if spec.low is not None and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isnan(value) or value < spec.low or value > spec.high:
            raise ConfigError(f"{where} is out of range [{spec.low:g}, {spec.high:g}]")
    return value


def validate(values: Mapping[str, Any], specs: Mapping[str, ParamSpec], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in specs:
            raise unknown_parameter_error(key, list(specs), where)
        out[key] = check_value(specs[key], value, where)
    return out


@dataclass(frozen=True)
class SmokeCap:
    """A parameter whose notebook default shrinks the work to smoke size, and what lifts it."""

    name: str
    capped: Callable[[Any, ParamSpec], bool]  # (value, spec) -> is this value a cap?
    full: str  # the value that lifts the cap, as written in a profile
    what: str


# Dilemmas in DailyDilemmas (the shipped data/raw/daily_dilemmas/dilemma.csv; a test checks the
# count): notebook 04 accepts any larger number as "all", so its range's maximum is not the size.
DAILY_DILEMMAS_COUNT = 1360

SMOKE_CAPS: tuple[SmokeCap, ...] = (
    SmokeCap("dataset_max_items", lambda v, s: v > 0, "0",
             "caps the train and validation items per value set written as datasets (notebook 02)"),
    SmokeCap("train_max_rows", lambda v, s: v > 0, "0",
             "trains on a subsample of the training rows (notebook 03)"),
    SmokeCap("max_steps", lambda v, s: v > 0, "-1",
             "stops training after a fixed number of optimizer steps instead of `epochs` (notebook 03)"),
    SmokeCap("max_eval_items", lambda v, s: v > 0, "0",
             "evaluates a sample of the held-out items (notebook 04)"),
    SmokeCap("eval_max_options", lambda v, s: v > 0, "0",
             "evaluates only items with few options (notebook 04)"),
    SmokeCap("eval_n_dilemmas", lambda v, s: 0 < v < DAILY_DILEMMAS_COUNT, str(DAILY_DILEMMAS_COUNT),
             "scores a sample of the DailyDilemmas (notebook 04)"),
    SmokeCap("n_paraphrases", lambda v, s: s.high is not None and v < s.high, "the range's maximum",
             "averages fewer prompt paraphrases than the protocol's (notebook 04)"),
    SmokeCap("consultation_refine_steps", lambda v, s: v > 0, "-1",
             "stops the consultation-refined run after a fixed number of steps (notebook 05)"),
    SmokeCap("consultation_refine_max_rows", lambda v, s: v > 0, "0",
             "trains the consultation-refined run on a subsample of its rows (notebook 05)"),
    SmokeCap("consultation_eval_max_statements", lambda v, s: v > 0, "0",
             "evaluates a sample of the held-out consultation statements (notebook 05)"),
)


def smoke_caps_in_effect(profile: Mapping[str, Any]) -> list[tuple[SmokeCap, Any, ParamSpec]]:
    """The smoke caps a profile leaves active: its own value, else the notebook default."""
    specs = {k: s for nb in all_notebook_parameters().values() for k, s in nb.items()}
    out = []
    for cap in SMOKE_CAPS:
        if cap.name not in specs:
            continue
        value = profile.get(cap.name, specs[cap.name].default)
        if isinstance(value, int | float) and not isinstance(value, bool) and cap.capped(value, specs[cap.name]):
            out.append((cap, value, specs[cap.name]))
    return out


def check_smoke_caps(profile: Mapping[str, Any], where: str) -> None:
    """A ``strict: true`` profile refuses every active smoke cap; the error names each key and
    the profile file (``where``) and says which value lifts it."""
    if profile.get("strict") is not True:
        return
    active = smoke_caps_in_effect(profile)
    if not active:
        return
    lines = []
    for cap, value, spec in active:
        source = "set in the profile" if cap.name in profile else "the notebook default, not set in the profile"
        full = f"{spec.high:g}" if cap.full == "the range's maximum" else cap.full
        lines.append(f"{cap.name} = {value!r} ({source}) {cap.what}; set `{cap.name}: {full}`")
    raise ConfigError(f"{where}: strict profile with smoke-sized parameter(s): " + "; ".join(lines))


def parameters_for(notebook: Path | str, profile: Mapping[str, Any] | Path | str) -> dict[str, Any]:
    """The validated subset of a profile that a notebook declares.

    Every key of the profile must be declared by *some* notebook, so a misspelling is caught
    even when it targets a notebook other than the one being run; a ``strict`` profile must
    lift every smoke cap of every notebook (:func:`check_smoke_caps`).
    """
    where = "profile"
    if not isinstance(profile, Mapping):
        where = str(profile)
        profile = load_profile(profile)
    everything = all_notebook_parameters()
    known = {k for specs in everything.values() for k in specs}
    for key in profile:
        if key not in known:
            raise unknown_parameter_error(key, sorted(known), where)
    check_smoke_caps(profile, where)
    specs = notebook_parameters(notebook)
    subset = {k: v for k, v in profile.items() if k in specs}
    return validate(subset, specs, where)


def check_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Called in a notebook right after its parameters: validate the values in effect.

    Catches values injected by plain papermill (which only warns) or typed by hand.
    Returns the parameter dict, for the run manifest.
    """
    os.environ["VALUEALIGN_NOTEBOOK"] = notebook  # figures saved by this kernel name their producer
    specs = notebook_parameters(notebook)
    values = {k: namespace[k] for k in specs if k in namespace}
    return validate(values, specs, where=notebook)

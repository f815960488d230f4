"""Parameter profiles: unknown keys, wrong types and out-of-range values are errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from valuealign import config

from conftest import REPO

SOURCE = '''
seed = 0  # random seed [0, 1000000]
rate = 0.5  # a fraction [0, 1]
method = "sft"  # which method {sft, dpo, kto}
methods = ["sft"]  # several {sft, dpo, kto}
name = "x"  # free text
flag = False  # a switch
anything = None  # untyped
'''


@pytest.fixture
def specs() -> dict[str, config.ParamSpec]:
    return config.parse_parameters_source(SOURCE)


def test_parses_defaults_ranges_and_choices(specs) -> None:
    assert specs["seed"].default == 0 and (specs["seed"].low, specs["seed"].high) == (0, 1_000_000)
    assert specs["method"].choices == ("sft", "dpo", "kto")
    assert specs["name"].doc == "free text" and specs["name"].choices is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", "1", "must be an integer"),
        ("seed", True, "must be an integer"),
        ("seed", -1, "out of range"),
        ("rate", 1.5, "out of range"),
        ("rate", "high", "must be a number"),
        ("method", "ppo", "not one of"),
        ("methods", ["sft", "ppo"], "not one of"),
        ("methods", "sft", "must be a list"),
        ("flag", 1, "true/false"),
        ("name", 3, "must be a string"),
    ],
)
def test_bad_values_name_the_key(specs, key, value, message) -> None:
    with pytest.raises(config.ConfigError, match=rf"'{key}'.*{message}|{message}.*'{key}'"):
        config.validate({key: value}, specs, where="test")


def test_unknown_key_suggests_the_closest(specs) -> None:
    with pytest.raises(config.ConfigError, match=r"unknown parameter 'sead'.*did you mean seed"):
        config.validate({"sead": 1}, specs, where="test")


def test_valid_values_pass_and_ints_widen_to_float(specs) -> None:
    out = config.validate({"rate": 1, "methods": ["dpo", "kto"], "anything": {"a": 1}}, specs, "t")
    assert out == {"rate": 1.0, "methods": ["dpo", "kto"], "anything": {"a": 1}}
    assert isinstance(out["rate"], float)


def test_profile_key_unknown_to_every_notebook_is_an_error(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [goqa]\ngoqa_tolerence: 0.1\n")
    with pytest.raises(config.ConfigError, match="goqa_tolerence.*goqa_tolerance"):
        config.parameters_for("00_survey_data", bad)


def test_profile_must_be_a_mapping(tmp_path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(config.ConfigError, match="must be a mapping"):
        config.load_profile(bad)


def test_missing_profile_lists_the_existing_ones(tmp_path) -> None:
    with pytest.raises(config.ConfigError, match="smoke.yaml"):
        config.load_profile(tmp_path / "nope.yaml")


def test_every_notebook_has_a_valid_parameters_cell() -> None:
    everything = config.all_notebook_parameters()
    assert "00_survey_data" in everything
    for name, specs in everything.items():
        assert specs, f"{name}: empty parameters cell"
        for spec in specs.values():  # each default satisfies its own declared range/choices
            config.check_value(spec, spec.default, where=name)


def test_papermill_sees_every_parameter() -> None:
    """Papermill drops a parameter line with a second "=" (in its comment) and then calls a
    profile's value for it an unknown parameter: every declared parameter must survive its parser."""
    import papermill

    for name in config.all_notebook_parameters():
        seen = set(papermill.inspect_notebook(str(REPO / "notebooks" / f"{name}.ipynb")))
        missed = set(config.notebook_parameters(name)) - seen
        assert not missed, f"{name}: papermill cannot parse the parameter lines of {sorted(missed)}"


def test_shared_parameter_names_mean_the_same_everywhere() -> None:
    """One flat profile feeds every notebook, so a shared name must have one type."""
    seen: dict[str, tuple[str, str]] = {}
    for name, specs in config.all_notebook_parameters().items():
        for key, spec in specs.items():
            if key in seen and spec.default is not None and seen[key][0] != "NoneType":
                assert seen[key][0] == type(spec.default).__name__, (
                    f"{key!r} is {seen[key][0]} in {seen[key][1]} but {spec.kind} in {name}")
            seen.setdefault(key, (type(spec.default).__name__, name))


@pytest.mark.parametrize("profile", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_profile_validates(profile) -> None:
    for notebook in config.all_notebook_parameters():
        config.parameters_for(notebook, profile)


def test_smoke_profile_equals_the_notebook_defaults() -> None:
    """`make all` (papermill + smoke.yaml) and nbval (source defaults) must compute the same thing."""
    smoke = yaml.safe_load((REPO / "configs/smoke.yaml").read_text()) or {}
    everything = config.all_notebook_parameters()
    for key, value in smoke.items():
        for name, specs in everything.items():
            if key in specs:
                assert specs[key].default == value, f"{key}: smoke.yaml {value!r} != {name} default"


def test_non_utf8_profile_names_the_file(tmp_path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("sources: [goqa]\n# réglage\n".encode("latin-1"))
    with pytest.raises(config.ConfigError, match=r"latin.yaml: a profile is not UTF-8 \(byte 0xe9 at offset 19\)"):
        config.load_profile(latin)

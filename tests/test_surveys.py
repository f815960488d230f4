"""Survey loaders: one tidy schema, and bad input rejected with file, row, column and value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from valuealign import metrics, paths, surveys

from conftest import REPO

HEADER = "question,selections,options,source\n"
GOOD = (
    '"Is it good?","defaultdict(<class \'list\'>, {\'Germany\': [0.25, 0.75], \'Japan\': [0.5, 0.5]})",'
    '"[\'Yes\', \'No\']",GAS\n'
)


def goqa_csv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "goqa.csv"
    path.write_text(header + "".join(rows), encoding="utf-8")
    return path


def test_goqa_good_row_gives_tidy_schema(tmp_path) -> None:
    data = surveys.load_goqa(goqa_csv(tmp_path, GOOD))
    assert list(data.items.columns) == surveys.ITEM_COLUMNS
    assert list(data.distributions.columns) == surveys.DIST_COLUMNS
    item = data.items.iloc[0]
    assert item["options"] == ["Yes", "No"] and item["section"] == "Pew Global Attitudes"
    shares = dict(zip(data.distributions["group"], data.distributions["shares"], strict=True))
    assert shares == {"Germany": [0.25, 0.75], "Japan": [0.5, 0.5]}
    assert data.distributions["n"].isna().all()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (GOOD.replace("0.25, 0.75", "0.25, 0.5"), r"row 2, column 'selections\[Germany\]'.*sum to 0.75"),
        (GOOD.replace("0.25, 0.75", "0.2, 0.3, 0.5"), r"row 2.*3 shares but 2 options"),
        (GOOD.replace("{'Germany'", "__import__('os').system('echo pwned') or {'Germany'"),
         r"row 2, column 'selections'.*not a dict literal"),
        (GOOD.replace("defaultdict(<class 'list'>, {'Germany': [0.25, 0.75], 'Japan': [0.5, 0.5]})",
                      "__import__('os').system('echo pwned')"), r"column 'selections'.*no dict literal"),
        (GOOD.replace("{'Germany'", "{'x': __import__('os'), 'Germany'"), r"column 'selections'.*not a dict literal"),
        (GOOD.replace("['Yes', 'No']", "Yes or No"), r"row 2, column 'options'"),
        (GOOD.replace("0.25, 0.75", "float('nan'), 1.0"), r"column 'selections'"),
    ],
)
def test_goqa_bad_rows_name_file_row_column_value(tmp_path, row, message) -> None:
    path = goqa_csv(tmp_path, row)
    with pytest.raises(surveys.SurveyDataError, match=message) as err:
        surveys.load_goqa(path)
    assert str(path) in str(err.value)


def test_goqa_code_in_selections_is_never_executed(tmp_path) -> None:
    marker = tmp_path / "pwned"
    row = GOOD.replace("{'Germany'", f"{{'x': open('{marker}', 'w'), 'Germany'")
    with pytest.raises(surveys.SurveyDataError):
        surveys.load_goqa(goqa_csv(tmp_path, row))
    assert not marker.exists()


def test_goqa_drop_mode_records_every_dropped_row(tmp_path) -> None:
    bad = (GOOD.replace("Is it good?", "Is it bad?").replace("0.25, 0.75", "0.0, 0.0")
           .replace("0.5, 0.5", "0.0, 0.0"))
    data = surveys.load_goqa(goqa_csv(tmp_path, GOOD, bad), on_invalid="drop")
    assert len(data.items) == 1
    assert set(data.dropped["row"]) == {"3"}
    assert data.dropped["reason"].str.contains("all shares are zero").any()


def test_goqa_missing_column_empty_and_non_utf8_files(tmp_path) -> None:
    with pytest.raises(surveys.SurveyDataError, match=r"missing required column.*'selections'"):
        surveys.load_goqa(goqa_csv(tmp_path, "q,x,['a']\n", header="question,selection,options\n"))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(surveys.SurveyDataError, match="empty.csv: file is empty"):
        surveys.load_goqa(empty)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((HEADER + GOOD.replace("Is it good?", "Est-ce bien fait? été")).encode("latin-1"))
    with pytest.raises(surveys.SurveyDataError, match=r"latin1.csv: not UTF-8 \(byte 0xe9 at offset"):
        surveys.load_goqa(latin)
    header_only = goqa_csv(tmp_path)
    with pytest.raises(surveys.SurveyDataError, match="no data rows"):
        surveys.load_goqa(header_only)


def test_numeric_scales_are_put_in_numeric_order(tmp_path) -> None:
    row = ('"Scale?","{\'A\': [0.1, 0.2, 0.3, 0.4]}","[0.0, 10.0, 2.0, \'DK/Refused\']",WVS\n')
    data = surveys.load_goqa(goqa_csv(tmp_path, row))
    assert data.items.iloc[0]["options"] == ["0", "2", "10", "DK/Refused"]
    assert data.distributions.iloc[0]["shares"] == pytest.approx([0.1, 0.3, 0.2, 0.4])
    assert data.items.iloc[0]["nonsubstantive"] == [False, False, False, True]


def test_shipped_goqa_subset_loads_with_documented_drops() -> None:
    data = surveys.load_goqa(paths.GOQA_DIR / "global_opinions_subset.csv", on_invalid="drop")
    assert len(data.items) == 1726  # 1,727 rows; one has no valid country left
    assert data.dropped["reason"].str.contains("all shares are zero").sum() == 9  # 9 rows of the shipped subset have all-zero shares
    assert data.distributions["group"].nunique() == 130
    sums = data.distributions["shares"].map(sum)
    assert np.allclose(sums, 1.0)


# ------------------------------------------------------------------ WVS-7 microdata (synthetic, real layout)
def synthetic_wvs(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "B_COUNTRY_ALPHA": rng.choice(["DEU", "NZL", "JPN"], size=n),
        "W_WEIGHT": rng.uniform(0.5, 1.5, size=n).round(3),
        "Q260": rng.choice([1, 2], size=n),
    })
    df["Q1"] = rng.choice([1, 2, 3, 4, -1, -2], size=n, p=[0.4, 0.3, 0.15, 0.1, 0.03, 0.02])
    df["Q56"] = rng.choice([1, 2, 3, -5], size=n)
    df.loc[df["B_COUNTRY_ALPHA"] == "JPN", "Q56"] = -4  # not asked in one country
    return df


def test_wvs7_weighted_shares_and_missing_codes(tmp_path) -> None:
    df = synthetic_wvs()
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False)
    data = surveys.load_wvs7_microdata(path, min_respondents=50)
    de = df[(df.B_COUNTRY_ALPHA == "DEU") & (df.Q1 > 0)]
    expected = de.groupby("Q1")["W_WEIGHT"].sum().reindex([1, 2, 3, 4]).to_numpy()
    row = data.distributions.query("item_id == 'wvs7-Q1' and group == 'Germany'").iloc[0]
    assert row["shares"] == pytest.approx(expected / expected.sum())
    assert row["n"] == len(de) and row["weighted"]
    # Q56 is recoded (2 <-> 3) so that the scale is monotone: Better off, About the same, Worse off
    q56 = data.items.set_index("item_id").loc["wvs7-Q56", "options"]
    assert q56 == ["Better off", "Or about the same", "Worse off"]
    nz = df[(df.B_COUNTRY_ALPHA == "NZL") & (df.Q56 > 0)]
    share_worse = nz.loc[nz.Q56 == 2, "W_WEIGHT"].sum() / nz["W_WEIGHT"].sum()
    row56 = data.distributions.query("item_id == 'wvs7-Q56' and group == 'New Zealand'").iloc[0]
    assert row56["shares"][2] == pytest.approx(share_worse)
    assert "Japan" not in set(data.distributions.query("item_id == 'wvs7-Q56'")["group"])


def test_wvs7_groups_by_demographic_and_thresholds(tmp_path) -> None:
    df = synthetic_wvs(n=400)
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False)
    data = surveys.load_wvs7_microdata(path, group_by="Q260", min_respondents=150, on_invalid="drop")
    assert set(data.distributions["group_type"]) == {"Q260"}
    small = surveys.load_wvs7_microdata(path, group_by="B_COUNTRY_ALPHA", min_respondents=1000,
                                        on_invalid="drop")
    assert small.distributions.empty
    assert small.dropped["reason"].str.contains("min_respondents=1000").any()


def test_wvs7_unknown_group_column_and_bad_codes(tmp_path) -> None:
    df = synthetic_wvs(n=200)
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False)
    with pytest.raises(surveys.SurveyDataError, match=r"unknown column 'B_COUNTRY_ALPH'.*did you mean B_COUNTRY_ALPHA"):
        surveys.load_wvs7_microdata(path, group_by="B_COUNTRY_ALPH")
    df.loc[5, "Q1"] = 7
    df.to_csv(path, index=False)
    with pytest.raises(surveys.SurveyDataError, match=r"row 7, column 'Q1', value 7: code not in the codebook"):
        surveys.load_wvs7_microdata(path, min_respondents=1)


def test_wvs7_reads_spss_and_stata(tmp_path) -> None:
    import pyreadstat

    df = synthetic_wvs(n=300)
    csv = tmp_path / "WVS_a.csv"
    df.to_csv(csv, index=False)
    ref = surveys.load_wvs7_microdata(csv, min_respondents=10).distributions
    for name, writer in (("WVS_a.sav", pyreadstat.write_sav), ("WVS_a.dta", pyreadstat.write_dta)):
        writer(df, str(tmp_path / name))
        got = surveys.load_wvs7_microdata(tmp_path / name, min_respondents=10).distributions
        assert list(got["group"]) == list(ref["group"])
        for a, b in zip(got["shares"], ref["shares"], strict=True):
            assert np.allclose(a, b)


def test_codebook_adapter_plugs_in_another_survey(tmp_path) -> None:
    rng = np.random.default_rng(1)
    pd.DataFrame({"region": rng.choice(["North", "South"], 500), "wt": 1.0,
                  "pride": rng.choice([1, 2, 3, 9], 500)}).to_csv(tmp_path / "nzavs.csv", index=False)
    (tmp_path / "nzavs.yaml").write_text(
        "name: nzavs\nfile: nzavs.csv\ngroup: region\nweight: wt\nmissing_codes: [9]\nmin_respondents: 10\n"
        "items:\n  - column: pride\n    question: How proud are you to be a New Zealander?\n"
        "    options: {1: Very proud, 2: Somewhat proud, 3: Not proud}\n    ordinal: true\n"
        "    section: Identity\n"
    )
    data = surveys.load_codebook_survey(tmp_path / "nzavs.yaml")
    assert data.items.iloc[0]["item_id"] == "nzavs-pride"
    assert set(data.distributions["group"]) == {"North", "South"}
    assert np.allclose(data.distributions["shares"].map(sum), 1)
    (tmp_path / "broken.yaml").write_text("name: x\nfile: nzavs.csv\ngroup: region\nitems:\n  - column: pride\n")
    with pytest.raises(surveys.SurveyDataError, match=r"broken.yaml: items\[0\]: missing required key 'question'"):
        surveys.load_codebook_survey(tmp_path / "broken.yaml")


# ------------------------------------------------------------------ the whole stage
@pytest.mark.slow
def test_notebook_00_twice_gives_byte_identical_parquet(tmp_path) -> None:
    """Run the real notebook twice (papermill) against a scratch root that shares data/raw."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw").symlink_to(REPO / "data" / "raw")
    (root / "notebooks").symlink_to(REPO / "notebooks")
    (root / "configs").symlink_to(REPO / "configs")
    env = {**os.environ, "VALUEALIGN_ROOT": str(root)}
    outputs = []
    for run in range(2):
        subprocess.run([sys.executable, "-m", "valuealign.notebooks", "00_survey_data",
                        "--out", str(tmp_path / f"exec{run}")], env=env, check=True, capture_output=True)
        outputs.append({p.name: p.read_bytes() for p in (root / "data/processed").glob("*.parquet")})
    assert set(outputs[0]) == {"items.parquet", "distributions.parquet", "dropped_rows.parquet"}
    assert outputs[0] == outputs[1]


# ------------------------------------------------------------------ option order, ordinal flag, processing codes
# Examples are rows of the shipped GlobalOpinionQA subset (data/raw/goqa), selected by their options.
SHIPPED_GOQA = paths.GOQA_DIR / "global_opinions_subset.csv"
NEVER_TO_ALWAYS = ["Never justifiable", "2", "3", "4", "5", "6", "7", "8", "9", "Always justifiable"]


def _label(option: object) -> str:
    return str(int(option)) if isinstance(option, float) and option.is_integer() else str(option)


def shipped_goqa_row(tmp_path: Path, first_options: list[str]) -> tuple[Path, list[str], dict]:
    """The first shipped row whose options start with ``first_options``, as a one-row CSV,
    with its source options and group shares (to check what the loader made of them)."""
    df = surveys.read_table(SHIPPED_GOQA)
    for _, row in df.iterrows():
        options = [_label(o) for o in surveys.parse_literal(row["options"], list, "options")]
        if options[: len(first_options)] == first_options:
            path = tmp_path / "shipped_row.csv"
            df.loc[[row.name]].to_csv(path, index=False)
            return path, options, surveys.parse_selections(row["selections"])
    raise AssertionError(f"no shipped row has options starting with {first_options}")


def loaded_item(path: Path) -> tuple[pd.Series, pd.DataFrame]:
    data = surveys.load_goqa(path)
    assert len(data.items) == 1
    return data.items.iloc[0], data.distributions


@pytest.mark.parametrize("first_options", [
    NEVER_TO_ALWAYS,  # labelled ends
    ["Satisfied", "9", "8", "7", "6", "5", "4", "3", "2", "Dissatisfied"],  # reversed
    ["Men", "2", "3", "4", "Both Equally", "6", "7", "8", "Women"],  # labelled midpoint
])
def test_labelled_and_reversed_scales_keep_the_source_order(tmp_path, first_options) -> None:
    path, source, selections = shipped_goqa_row(tmp_path, first_options)
    item, dists = loaded_item(path)
    answers = [o for o in source if not o.lower().startswith(("missing", "other missing"))]
    assert item["options"] == answers
    assert item["options"][: len(first_options)] == first_options
    group, shares = next(iter(selections.items()))
    got = dists.set_index("group").loc[group, "shares"]
    kept = np.asarray(shares[: len(answers)], dtype=float)
    assert got == pytest.approx(kept / kept.sum())


def test_labelled_end_scale_gives_the_right_w1(tmp_path) -> None:
    """All mass on 'Never justifiable' vs all on '2' is one step of nine: 1 - 1/9, not 1 - 8/9."""
    item, _ = loaded_item(shipped_goqa_row(tmp_path, NEVER_TO_ALWAYS)[0])
    assert item["ordinal"]
    never, two = (np.eye(len(item["options"]))[item["options"].index(o)] for o in ("Never justifiable", "2"))
    w1 = metrics.w1_alignment(never, two, item["nonsubstantive"])
    assert w1 == pytest.approx(1 - 1 / 9)


def test_scales_shipped_in_a_sorting_order_are_put_in_scale_order(tmp_path) -> None:
    """'Not important at all', '1', 'Very important', '2', ..., '9' is the string order of 0..10;
    '0', '9', '10', 'DK/Refused', '1', ... has numbers only. Shares follow the options."""
    path, source, selections = shipped_goqa_row(tmp_path, ["Not important at all", "1", "Very important", "2"])
    item, dists = loaded_item(path)
    assert item["options"] == ["Not important at all", *map(str, range(1, 10)), "Very important"]
    assert item["ordinal"]
    group, shares = next(iter(selections.items()))
    expected = [shares[0], shares[1], *shares[3:], shares[2]]
    assert dists.set_index("group").loc[group, "shares"] == pytest.approx(expected)

    path, source, selections = shipped_goqa_row(tmp_path, ["0", "9", "10", "DK/Refused"])
    item, dists = loaded_item(path)
    assert item["options"] == [*map(str, range(11)), "DK/Refused"]
    group, shares = next(iter(selections.items()))
    expected = [shares[source.index(o)] for o in item["options"]]
    assert dists.set_index("group").loc[group, "shares"] == pytest.approx(expected)


@pytest.mark.parametrize("options", [
    # shipped unordered sets: the order given is not a scale
    ["More important role", "Less important role", "As important as 10 years ago", "DK/Refused"],
    ["Better", "Worse", "About the same", "DK/Refused"],
    ["More", "Less", "Same (VOL.)"],
    ["Change for the better", "Change for the worse", "Not much difference"],
    ["Men generally have more opportunities", "Women generally have more opportunities",
     "Opportunities are generally about the same for both", "DK/Refused"],
    ["Good", "Bad", "Good thing", "Bad thing", "DK/Refused"],
    # shipped scales listed out of order, or with a volunteered answer of unknown place
    ["Very big problem", "Not a problem at all", "Moderately big problem", "DK/Refused", "Small problem"],
    ["Very good influence", "Good influence", "Bad influence", "Very bad influence", "No influence (VOL)"],
    # constructed: a scale ladder with its ends swapped into the middle
    ["Somewhat agree", "Strongly agree", "Strongly disagree", "Somewhat disagree"],
])
def test_unordered_option_sets_are_not_ordinal(options) -> None:
    assert not surveys.looks_ordinal(options)


def test_real_scales_stay_ordinal() -> None:
    scales = [  # shipped, except the last two (constructed)
        ["Very favorable", "Somewhat favorable", "Somewhat unfavorable", "Very unfavorable", "DK/Refused"],
        ["Very big problem", "Moderately big problem", "Small problem", "Not a problem at all"],
        ["A great deal", "Quite a lot", "Not very much", "None at all", "Don't know", "No answer"],
        ["Agree strongly", "Agree", "Neither agree nor disagree", "Disagree", "Disagree strongly"],
        ["Much better", "Somewhat better", "About the same", "Somewhat worse", "Much worse", "DK/Refused"],
        ["One of the most important priorities", "A very important priority", "A lower priority",
         "Not a priority at all"],
        ["Major threat", "Minor threat", "No threat"],
        ["Men", "2", "3", "4", "Both Equally", "6", "7", "8", "Women", "Don't know"],
        ["Left", "2", "3", "4", "5", "6", "7", "8", "9", "Right", "Don't know", "No answer"],
        ["Satisfied", "9", "8", "7", "6", "5", "4", "3", "2", "Dissatisfied", "Don't know"],
        ["18 to 49", "50 to 59", "60 to 69", "70 to 79", "80 to 89", "90+", "Depends on Individual (VOL)"],
        ["Never", "Rarely", "Sometimes", "Often"],
        ["Strongly disagree", "Disagree", "Agree", "Strongly agree"],
    ]
    assert [o for o in scales if not surveys.looks_ordinal(o)] == []


def test_volunteered_answers_are_substantive_unless_they_say_no_answer() -> None:
    options = ["Neither (VOL)", "Same (VOL)", "Both (DO NOT READ)", "None of these (VOL)",
               "Never heard of (VOL)", "Can't rate (VOL)", "Other (VOL)", "Depends (VOL)",
               "DK/Refused", "No answer", "Don't -9:-2", "Hard to say"]
    assert surveys.nonsubstantive_flags(options) == [False] * 4 + [True] * 8


def test_processing_codes_are_dropped_and_shares_renormalised(tmp_path) -> None:
    row = ('"Agree?","{\'Germany\': [0.4, 0.3, 0.1, 0.2], \'Japan\': [0.5, 0.4, 0.1, 0.0], '
           '\'Chile\': [0.0, 0.0, 0.0, 1.0]}","[\'Agree\', \'Disagree\', \'No answer\', '
           '\'Missing; Not available\']",WVS\n')
    # drop mode for Chile, whose only answer is the code; removing a code alone never raises
    # (the shipped rows above load in raise mode)
    data = surveys.load_goqa(goqa_csv(tmp_path, row), on_invalid="drop")
    item = data.items.iloc[0]
    assert item["options"] == ["Agree", "Disagree", "No answer"]
    assert item["nonsubstantive"] == [False, False, True]
    shares = dict(zip(data.distributions["group"], data.distributions["shares"], strict=True))
    assert set(shares) == {"Germany", "Japan"}  # Chile answered nothing but the code
    assert shares["Germany"] == pytest.approx([0.5, 0.375, 0.125])
    assert shares["Japan"] == pytest.approx([0.5, 0.4, 0.1])
    reasons = dict(zip(data.dropped["value"], data.dropped["reason"], strict=True))
    assert reasons["'Missing; Not available'"] == surveys.PROCESSING_CODE_REASON
    assert "all answers are processing codes" in reasons[repr([0.0, 0.0, 0.0, 1.0])]
    codes = data.processing_codes.set_index("group")["share"]
    assert codes.to_dict() == {"Germany": pytest.approx(0.2), "Japan": 0.0}

    only_codes = ('"Asked?","{\'Germany\': [0.5, 0.5]}","[\'Missing; Unknown\', '
                  '\'Other missing; Multiple answers Mail (EVS)\']",WVS\n')
    data = surveys.load_goqa(goqa_csv(tmp_path, only_codes), on_invalid="drop")
    assert data.items.empty and data.distributions.empty
    assert data.dropped["reason"].tolist() == ["every option is a processing code, none is an answer"]


def test_shipped_subset_processing_codes_and_ordinal_counts() -> None:
    """Numbers stated in notebook 00 and the project report; change them only with the data."""
    data = surveys.finalize(surveys.load_goqa(SHIPPED_GOQA, on_invalid="drop"))
    items = data.items
    assert not items["options"].map(lambda o: any(surveys.processing_code_flags(o))).any()
    assert int(items["ordinal"].sum()) == 795  # 851 under the old heuristic
    summary = surveys.processing_code_summary(data.processing_codes).set_index("processing code")
    total = summary.loc["all (per distribution)"]
    assert (total["items"], total["distributions"], total["with mass > 0"]) == (221, 2110, 292)
    assert total["max mass"] == pytest.approx(0.385)
    assert (data.dropped["reason"] == surveys.PROCESSING_CODE_REASON).sum() == 221


# ------------------------------------------------------------------ input reading (issue 19: 4, 6, 8, 9)
def test_goqa_row_with_an_extra_field_is_rejected_with_file_and_line(tmp_path) -> None:
    # pandas alone turns the first column into the index and silently drops the extra field
    # (an extra field on the first data row); on a later row pandas' own error named no column count
    extra = GOOD.rstrip("\n") + ",surplus\n"
    with pytest.raises(surveys.SurveyDataError, match=r"goqa.csv: line 2 of survey table has 5 fields but "
                                                      r"the header has 4"):
        surveys.load_goqa(goqa_csv(tmp_path, extra, GOOD.replace("good", "fine")), on_invalid="drop")


def test_goqa_trailing_commas_are_named_not_blamed_on_options(tmp_path) -> None:
    rows = [GOOD.rstrip("\n") + ",\n", GOOD.replace("Is it good?", "Is it bad?").rstrip("\n") + ",\n"]
    with pytest.raises(surveys.SurveyDataError, match=r"goqa.csv: line 2 .*5 fields .*header has 4 "
                                                      r"\(a trailing delimiter\?\)"):
        surveys.load_goqa(goqa_csv(tmp_path, *rows))


def test_wvs7_non_utf8_byte_after_the_first_64kib_names_file_and_line(tmp_path) -> None:
    df = synthetic_wvs(n=6000)
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False)
    good = path.read_bytes()
    assert len(good) > 1 << 16
    path.write_bytes(good + b"DEU,1.0,1,2,\xe9\n")
    with pytest.raises(surveys.SurveyDataError,
                       match=rf"WVS_synthetic.csv: not UTF-8 \(byte 0xe9 at offset {len(good) + 12}, "
                             rf"line {len(df) + 2} "):
        surveys.load_wvs7_microdata(path, min_respondents=1)


def test_wvs7_empty_group_values_are_named_and_left_out(tmp_path) -> None:
    df = synthetic_wvs(n=300)
    df.loc[[4, 9], "B_COUNTRY_ALPHA"] = ""
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False)
    with pytest.raises(surveys.SurveyDataError,
                       match=r"WVS_synthetic.csv: row 6, column 'B_COUNTRY_ALPHA'.*empty group value "
                             r"\(2 such respondents"):
        surveys.load_wvs7_microdata(path, min_respondents=1)
    data = surveys.load_wvs7_microdata(path, min_respondents=1, on_invalid="drop")
    assert set(data.distributions["group"]) == {"Germany", "Japan", "New Zealand"}
    q1 = data.distributions.query("item_id == 'wvs7-Q1'")
    kept = df[(df.B_COUNTRY_ALPHA != "") & (df.Q1 > 0)]
    assert q1["n"].sum() == len(kept)
    assert ((data.dropped["column"] == "B_COUNTRY_ALPHA") & (data.dropped["row"] == "6")).any()


def test_wvs7_text_answers_are_recorded_and_raise_in_strict_mode(tmp_path) -> None:
    df = synthetic_wvs(n=300)
    df["Q1"] = df["Q1"].astype(object)
    df.loc[df.index % 2 == 1, "Q1"] = "Agree"  # half the answers are labels, not codes
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False)
    with pytest.raises(surveys.SurveyDataError,
                       match=r"WVS_synthetic.csv: row 3, column 'Q1', value 'Agree': not a numeric answer "
                             r"code \(150 such answers"):
        surveys.load_wvs7_microdata(path, min_respondents=1)
    data = surveys.load_wvs7_microdata(path, min_respondents=1, on_invalid="drop")
    text_rows = data.dropped[data.dropped["column"] == "Q1"]
    assert text_rows[["row", "value"]].values.tolist() == [["3", "'Agree'"]]
    assert text_rows["file"].iloc[0].endswith("WVS_synthetic.csv")
    assert text_rows["reason"].iloc[0].startswith("not a numeric answer code (150 such")


def test_utf8_check_of_large_files_is_exact_across_read_chunks(tmp_path) -> None:
    from valuealign import csvinput

    path = tmp_path / "WVS_big.csv"
    before = b"a" * ((1 << 20) - 1)  # a 2-byte character straddles the first 1 MiB read
    path.write_bytes(before + "é".encode() + b"\nok\n")
    csvinput.check_utf8_stream(path, "microdata file", surveys.SurveyDataError)
    path.write_bytes(before + b"\xc3(\n")  # a lead byte whose continuation never comes
    with pytest.raises(surveys.SurveyDataError, match=rf"byte 0xc3 at offset {len(before)}, line 1 "):
        csvinput.check_utf8_stream(path, "microdata file", surveys.SurveyDataError)
    path.write_bytes(before + b"\xc3")
    with pytest.raises(surveys.SurveyDataError, match=rf"ends inside a multi-byte character: byte 0xc3 at "
                                                      rf"offset {len(before)}"):
        csvinput.check_utf8_stream(path, "microdata file", surveys.SurveyDataError)


@pytest.mark.parametrize("sep", [",", ";"])
def test_wvs7_ragged_rows_are_rejected_with_file_and_line(tmp_path, sep) -> None:
    df = synthetic_wvs(n=200)
    path = tmp_path / "WVS_synthetic.csv"
    df.to_csv(path, index=False, sep=sep)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[10] += f"{sep}3"  # one field too many: the semicolon (C) parser dropped it silently
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(surveys.SurveyDataError, match=r"WVS_synthetic.csv: line 11 of microdata file has 6 "
                                                      r"fields but the header has 5"):
        surveys.load_wvs7_microdata(path, min_respondents=1)

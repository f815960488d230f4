"""Same thesis numbers on every machine: pins, the verify comparison, the named evaluation.

* Pinning (valuealign.pinning): a taxonomy recomputed on this machine is promoted to a pin; the
  stage then reads it whenever the texts and parameters match, also in a second process under other
  CPU kernels and thread counts (``ATEN_CPU_CAPABILITY=avx2``, one thread): a simulated second
  machine. A changed pinned file or a missing pin in ``require-pin`` mode fails, naming the fix.
* ``make verify`` (valuealign.verify): a macro that drifts beyond its tolerance is named and the
  command exits non-zero; a deliberate update keeps each stated tolerance.
* The named evaluation (valuealign.thesis): an evaluation saved later does not change what the
  thesis reports.

Real MiniLM, UMAP and HDBSCAN on a small corpus; nothing mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_taxonomy import GROUPS, SMALL, items_frame

from valuealign import consensus as C
from valuealign import evaluation, paths, pinning, provenance, thesis, verify
from valuealign import taxonomy as T

from conftest import REPO, require_artefact

CONS = C.ConsensusParams(runs=3, noise=1e-4, cut=0.6, jobs=1)
PROTOTYPES = REPO / "data" / "reference" / "schwartz_values.yaml"


# ------------------------------------------------------------------------------------- pinning
def _tree(root: Path) -> Path:
    """A VALUEALIGN_ROOT with an empty data/ (its own cache and pins), reading the repo's prototypes."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    return root


def _point_at(mp: pytest.MonkeyPatch, root: Path) -> None:
    mp.setattr(paths, "DATA", root / "data")
    mp.setattr(paths, "PROCESSED", root / "data" / "processed")
    mp.setattr(paths, "CACHE", root / "data" / "cache")


def _corpus() -> pd.DataFrame:
    return T.build_corpus(items_frame(GROUPS))


def _run(mode: str, params: T.FitParams = SMALL) -> T.Taxonomy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return T.run(_corpus(), params, consensus=CONS, prototypes=PROTOTYPES, mode=mode)


def _pin(tax: T.Taxonomy) -> None:
    protos = [t for ts in tax.protos["texts"] for t in ts]
    pinning.write_candidate(
        texts=tax.texts, embeddings=tax.embeddings, extra_texts=protos,
        extra_embeddings=T.embed_texts(protos, pinned=False), labels=tax.fit.labels,
        confidence=tax.fit.probabilities, xy=tax.xy, fingerprint=tax.fingerprint,
        model_slug=T._slug(T.DEFAULT_MODEL), parameters={"test": True}, validation={"consensus_disjoint_ari": 0.5})
    pinning.promote_candidate()


@pytest.fixture(scope="module")
def pinned_root(tmp_path_factory):
    """A tree whose data/pinned/ holds the pin of the small corpus, computed once on this machine."""
    root = _tree(tmp_path_factory.mktemp("pinned") / "root")
    with pytest.MonkeyPatch.context() as mp:
        _point_at(mp, root)
        computed = _run("recompute")
        _pin(computed)
    return root, computed


@pytest.fixture
def at_root(pinned_root, tmp_path, monkeypatch):
    """A private copy of the pinned tree, with paths pointing at it."""
    import shutil

    root = tmp_path / "root"
    shutil.copytree(pinned_root[0], root)
    _point_at(monkeypatch, root)
    return root, pinned_root[1]


def test_fingerprint_depends_on_texts_and_parameters_but_not_on_workers():
    texts = ["a b c", "d e f"]
    fp = pinning.input_fingerprint(texts, "m", SMALL, CONS)
    assert fp == pinning.input_fingerprint(texts, "m", SMALL, C.ConsensusParams(runs=3, jobs=4))
    assert fp != pinning.input_fingerprint(texts[::-1], "m", SMALL, CONS)
    assert fp != pinning.input_fingerprint(texts, "m", T.FitParams(seed=1), CONS)
    assert fp != pinning.input_fingerprint(texts, "m", SMALL, C.ConsensusParams(runs=4))


@pytest.mark.slow
def test_pinned_mode_reads_the_pin_and_require_pin_refuses_other_inputs(at_root):
    _, computed = at_root
    assert computed.pin is None
    listed = pinning.read_manifest()
    assert set(listed["files"]) == {p.name for p in pinning.pinned_dir().glob("*.parquet")}
    for name, sha in listed["files"].items():
        assert provenance.sha256_file(pinning.pinned_dir() / name) == sha
    entry = listed["taxonomy"][computed.fingerprint]
    assert entry["machine"]["torch_cpu_capability"] and entry["validation"]["consensus_disjoint_ari"] == 0.5

    pinned = _run("pinned")
    assert pinned.pin is not None and pinned.consensus is None  # read, not re-clustered
    pd.testing.assert_frame_equal(pinned.items, computed.items)
    assert np.array_equal(pinned.embeddings, computed.embeddings)
    # other parameters: no pin matches; require-pin refuses, naming the command that pins
    other = T.FitParams(**{**SMALL.__dict__, "seed": 7})
    with pytest.raises(T.TaxonomyError, match="make pin-taxonomy"):
        _run("require-pin", other)


def test_pinned_embeddings_win_over_this_machines_cache(at_root):
    """Notebook 02's near-duplicate search embeds through the same function: it gets the pin."""
    _, computed = at_root
    text = computed.texts[0]
    table = pinning.read_embeddings(pinning.embeddings_file(T._slug(T.DEFAULT_MODEL)))
    assert provenance.sha256_text(text) in table
    cache = paths.CACHE / "other-machine"
    cache.mkdir(parents=True)
    other = computed.embeddings[:1] + np.float32(1e-3)
    pd.DataFrame({"sha256": [provenance.sha256_text(text)], "embedding": [other[0].tolist()]}).to_parquet(
        T.embedding_cache_file(T.DEFAULT_MODEL, cache))
    assert np.array_equal(T.embed_texts([text], cache_dir=cache)[0], computed.embeddings[0])
    assert np.array_equal(T.embed_texts([text], cache_dir=cache, pinned=False)[0], other[0])


def test_a_changed_pinned_file_is_refused_naming_it(at_root):
    _, computed = at_root
    target = pinning.taxonomy_file(computed.fingerprint)
    df = pd.read_parquet(target)
    df.loc[0, "cluster"] = df["cluster"].max() + 1
    provenance.write_parquet(df, target)
    with pytest.raises(pinning.PinError, match=target.name):
        pinning.find_taxonomy_pin(computed.texts, computed.fingerprint)


SECOND_MACHINE = """
import sys, warnings
from pathlib import Path
import pandas as pd
from valuealign import consensus as C, taxonomy as T
sys.path.insert(0, sys.argv[1])
from test_taxonomy import GROUPS, SMALL, items_frame
warnings.simplefilter("ignore")
tax = T.run(T.build_corpus(items_frame(GROUPS)), SMALL, consensus=C.ConsensusParams(runs=3, noise=1e-4, cut=0.6),
            prototypes=Path(sys.argv[2]), mode=sys.argv[4])
print("PINNED" if tax.pin is not None else "COMPUTED")
T.write_outputs(tax, Path(sys.argv[3]), Path(sys.argv[3] + ".clusters"))
"""


def _second_machine(root: Path, out: Path, mode: str, **env: str) -> str:
    """Notebook 01's library path in a fresh interpreter under other CPU kernels / thread counts."""
    full_env = {**os.environ, "VALUEALIGN_ROOT": str(root), "PYTHONPATH": str(REPO / "lib"), **env}
    proc = subprocess.run([sys.executable, "-c", SECOND_MACHINE, str(REPO / "tests"), str(PROTOTYPES), str(out), mode],
                          env=full_env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_second_machine_gives_the_same_taxonomy_once_pinned(at_root, tmp_path):
    """Simulated second machine: AVX2 kernels, one thread and the other numba target CPU."""
    root, _ = at_root
    here = tmp_path / "here.parquet"
    T.write_outputs(_run("pinned"), here, tmp_path / "here-clusters.parquet")
    other = {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
             "NUMBA_CPU_NAME": "host" if os.environ.get("NUMBA_CPU_NAME") == "generic" else "generic"}
    there = tmp_path / "there.parquet"
    assert _second_machine(root, there, "pinned", **other) == "PINNED"
    assert provenance.sha256_file(there) == provenance.sha256_file(here)
    assert provenance.sha256_file(str(there) + ".clusters") == provenance.sha256_file(tmp_path / "here-clusters.parquet")


@pytest.mark.pipeline
def test_pipeline_taxonomy_is_the_pinned_one_under_avx2_kernels(tmp_path):
    """Notebook 01's corpus and defaults under AVX2 and one thread give taxonomy.parquet's assignment."""
    require_artefact(paths.TAXONOMY)
    manifest = provenance.read_json(require_artefact(T.MANIFEST))
    if not manifest.get("extra", {}).get("pinned"):
        pytest.skip("notebook 01 did not read a pin (no pin matches this profile's inputs)")
    code = (
        "import sys, warnings; warnings.simplefilter('ignore'); from valuealign import consensus as C, "
        "taxonomy as T, taxonomy_validation as V; "
        "c = T.build_corpus(T.load_items(), ['survey'], valueeval_max=1000, seed=0, origin='items'); "
        "tax = T.run(c, T.FitParams(), consensus=C.ConsensusParams(runs=50, noise=1e-4, cut=0.6, jobs=1), "
        "extra_basic_texts=V.valueeval_description_texts(), mode='require-pin'); "
        "T.write_outputs(tax, __import__('pathlib').Path(sys.argv[1]), __import__('pathlib').Path(sys.argv[1] + '.c'))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "taxonomy.parquet"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = pd.read_parquet(out), pd.read_parquet(paths.TAXONOMY)
    assert (a["item_id"] == b["item_id"]).all()
    assert (a["cluster"] == b["cluster"]).all() and np.allclose(a["confidence"], b["confidence"])


# -------------------------------------------------------------------------------------- verify
STORE = {
    "taxonomy": {"TaxonomyClusters": "51", "TaxonomySectionAri": "0.395", "TaxonomyProfileP": "0.0010"},
    "evaluation": {"EvalBestMethod": "DPO", "EvalBaseAlignment": "0.712"},
    "06_thesis_figures": {"SummaryPipelineMinutes": "8.70", "SummaryEvalHash": "abc123"},
}


def _store(**changes: str) -> dict[str, dict[str, str]]:
    out = json.loads(json.dumps(STORE))
    for name, value in changes.items():
        group = next(g for g, m in out.items() if name in m)
        out[group][name] = value
    return out


def test_reference_rules_count_exact_metric_within_tolerance_timing_skipped():
    ref = verify.build_reference(STORE, None, profile="smoke", evaluation=None)["macros"]
    assert ref["TaxonomyClusters"]["kind"] == "count"
    assert ref["TaxonomySectionAri"] == {"group": "taxonomy", "value": "0.395", "kind": "metric",
                                         "tolerance": verify.DEFAULT_METRIC_TOLERANCE}
    assert ref["EvalBestMethod"]["kind"] == "text"
    assert ref["SummaryPipelineMinutes"]["kind"] == "skip" and "timing" in ref["SummaryPipelineMinutes"]["reason"]


@pytest.mark.parametrize(("changes", "drifted"), [
    ({}, set()),
    ({"TaxonomySectionAri": "0.399"}, set()),  # within 0.01
    ({"TaxonomySectionAri": "0.420"}, {"TaxonomySectionAri"}),
    ({"TaxonomyClusters": "48"}, {"TaxonomyClusters"}),
    ({"EvalBestMethod": "KTO"}, {"EvalBestMethod"}),
    ({"SummaryPipelineMinutes": "99.00"}, set()),  # timing: skipped
    ({"EvalBaseAlignment": "n/a"}, {"EvalBaseAlignment"}),
])
def test_compare_names_each_macro_that_drifted(changes, drifted):
    ref = verify.build_reference(STORE, None, profile="smoke", evaluation=None)
    checks = verify.compare(ref, _store(**changes))
    assert {c.name for c in checks if not c.holds} == drifted


def test_compare_fails_on_missing_and_new_macros():
    ref = verify.build_reference(STORE, None, profile="smoke", evaluation=None)
    now = _store()
    del now["taxonomy"]["TaxonomyClusters"]
    now["taxonomy"]["TaxonomyNewNumber"] = "3"
    bad = {c.name: c.note for c in verify.compare(ref, now) if not c.holds}
    assert set(bad) == {"TaxonomyClusters", "TaxonomyNewNumber"}
    assert "missing" in bad["TaxonomyClusters"] and "verify-update" in bad["TaxonomyNewNumber"]


def test_update_keeps_a_stated_tolerance_and_skip_reason():
    ref = verify.build_reference(STORE, None, profile="smoke", evaluation=None)
    ref["macros"]["TaxonomySectionAri"]["tolerance"] = 0.05
    ref["macros"]["EvalBestMethod"] = {"group": "evaluation", "value": "DPO", "kind": "skip", "reason": "tie"}
    again = verify.build_reference(_store(TaxonomySectionAri="0.380"), ref, profile="smoke", evaluation=None)
    assert again["macros"]["TaxonomySectionAri"] == {"group": "taxonomy", "value": "0.380", "kind": "metric",
                                                     "tolerance": 0.05}
    assert again["macros"]["EvalBestMethod"]["reason"] == "tie"


def _summary_rows(eval_hash: str, run: str) -> pd.DataFrame:
    return pd.DataFrame({"run": [run, "_baselines"], "split": "test", "eval_hash": eval_hash,
                         "method": ["dpo", "base"], "value_set": "germany", "metric": "js_alignment",
                         "mean": [0.7, 0.6]})


def _save_evaluation(runs: Path, eval_hash: str, run: str) -> None:
    evaluation.update_summary(_summary_rows(eval_hash, run), runs)
    provenance.write_json({"split": "test", "eval_hash": eval_hash},
                          evaluation.eval_folder(evaluation.BASELINES_RUN, eval_hash, runs) / "eval.json")


def test_an_evaluation_saved_later_does_not_change_what_the_thesis_reports(tmp_path):
    runs = tmp_path / "runs"
    _save_evaluation(runs, "aaaa1111", "run-a")
    thesis.name_evaluation("smoke", runs_dir=runs)  # what `make` does after notebook 04
    time.sleep(0.05)
    _save_evaluation(runs, "bbbb2222", "run-b")  # a sweep cell or a test evaluates later
    assert evaluation.latest_eval_hash(runs) == "bbbb2222"
    reported = thesis.reported_evaluation("", "smoke", runs)
    assert reported.eval_hash == "aaaa1111" and "named for profile 'smoke'" in reported.why
    assert thesis.named_evaluation("smoke", runs)["runs"] == ["run-a"]
    assert thesis.reported_evaluation("bbbb2222", "smoke", runs).eval_hash == "bbbb2222"  # explicit wins
    # make verify: figures built from another evaluation do not hold
    assert not verify.evaluation_check("smoke", _store(SummaryEvalHash="bbbb2222"), runs).holds
    assert verify.evaluation_check("smoke", _store(SummaryEvalHash="aaaa1111"), runs).holds


def _results(eval_hash: str, run: str, mean: float) -> evaluation.Results:
    """What notebook 04 saves for one run and the base model (the tables save_results writes)."""
    e = pd.DataFrame()
    rows = _summary_rows(eval_hash, run).drop(columns=["eval_hash"]).assign(mean=[mean, 0.6])
    preds = pd.DataFrame({"run": [run, "_baselines"], "item_id": "i1", "split": "test"})
    items = pd.DataFrame({"item_id": ["i1"], "split": ["test"], "stratum": ["s"]})
    return evaluation.Results(eval_hash, evaluation.EvalSettings(), items, preds, preds.copy(),
                              rows.assign(eval_hash=eval_hash), e, {}, e, e, e, e, e, e, {})


def test_the_thesis_reports_only_the_runs_its_evaluation_scored(tmp_path):
    """Two executions of notebook 04 with the same settings and items share an eval_hash, and the
    combined summary keeps both runs' rows. A run replaced since (here: retrained with other
    parameters, so it has a new id) was listed by the pointer and counted, pooled and chosen as
    "best" by notebook 06; now both read only the runs the latest execution scored."""
    runs = tmp_path / "runs"
    evaluation.save_results(_results("aaaa1111", "run-old", 0.9), {"value_sets": ["germany"]}, runs)
    evaluation.save_results(_results("aaaa1111", "run-new", 0.7), {"value_sets": ["germany"]}, runs)
    assert set(evaluation.load_summary("aaaa1111", runs)["run"]) == {"run-old", "run-new", "_baselines"}
    assert thesis.scored_runs("aaaa1111", runs) == ["run-new"]
    thesis.name_evaluation("smoke", runs_dir=runs)
    pointer = thesis.named_evaluation("smoke", runs)
    assert pointer["runs"] == ["run-new"] and "scored_runs" not in pointer["settings"]
    for reported in (thesis.reported_evaluation("", "smoke", runs), thesis.reported_evaluation("aaaa1111", "x", runs)):
        summary = reported.summary(runs)
        assert set(summary["run"]) == {"run-new", "_baselines"}, reported.why
        assert thesis.best_run_on_validation(summary.assign(split="validation"), report_split="validation")["run"] == "run-new"


def test_notebook_06_counts_only_this_pipelines_runs_and_evaluation(tmp_path):
    """runs/ keeps earlier fine-tunes and evaluations; notebook 06's run table, run count, wall
    times and lineage take those of notebook 03's record, notebook 05's evaluation and the
    reported eval_hash only (they used to count every folder)."""
    runs, consultation = tmp_path / "runs", tmp_path / "consultation"
    for run in ("sft-old", "sft-new", "kto-new__from-sft-new", "dpo-old__from-sft-old"):
        m = provenance.Manifest("03_finetune", parameters={"run_id": run, "method": run[:3]}, seed=0)
        m.wall_time_s, m.extra = 60.0, {"run_id": run}
        m.write(runs / run / "manifest.json")
        (runs / run / "adapter").mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            (runs / run / "adapter" / f).write_text("{}")
        (runs / run / "DONE").write_text("")
    for h in ("aaaa1111", "bbbb2222"):
        m = provenance.Manifest("04_evaluate")
        m.wall_time_s = 10.0
        m.write(evaluation.eval_folder(evaluation.BASELINES_RUN, h, runs) / "manifest.json")
    provenance.write_json({"stage": "03_finetune", "extra": {"runs": ["sft-new"]}}, runs / "03_finetune.manifest.json")
    provenance.write_json({"lineage": [{"run": "sft-new"}, {"run": "kto-new__from-sft-new"}], "summary": [],
                           "differences": []}, consultation / "evaluation.json")
    current = thesis.current_runs(runs, consultation)
    assert current == {"sft-new", "kto-new__from-sft-new"}
    records = thesis.current_records(thesis.stage_manifests(tmp_path / "processed", runs), current, "bbbb2222")
    assert sorted(records["run_id"].dropna()) == ["kto-new__from-sft-new", "sft-new"]
    assert list(records.loc[records["stage"] == "04_evaluate", "record"].map(lambda r: Path(r).parent.name)) == ["bbbb2222"]
    assert sorted(thesis.runs_table(records)["run"]) == ["kto-new__from-sft-new", "sft-new"]
    assert thesis.pipeline_table(records)["Wall time (min)"].sum() == pytest.approx(2 + 10 / 60)
    from valuealign import consultation_eval
    assert list(consultation_eval.chained_lineage(runs, only=current)["run"]) == ["kto-new__from-sft-new"]
    (runs / "03_finetune.manifest.json").unlink()
    assert thesis.current_runs(runs, consultation) is None  # before notebook 03: every run counts


def test_the_named_evaluation_is_not_taken_for_a_run_folder(tmp_path):
    """`make` names the profile's evaluation after notebook 04; a second notebook 04 run (make verify
    after make all) listed that folder (then runs/evaluations) as a skipped run without adapter."""
    runs = tmp_path / "runs"
    _save_evaluation(runs, "aaaa1111", "run-a")
    pointer = thesis.name_evaluation("smoke", runs_dir=runs)
    assert pointer.parent.parent == runs
    found, skipped = evaluation.discover_runs(["*"], runs_dir=runs)
    assert found == [] and pointer.parent.name not in set(skipped.get("run", pd.Series(dtype=str)))


def test_verify_command_exits_nonzero_naming_the_drifted_macro(tmp_path):
    root = tmp_path / "root"
    (root / "figures").mkdir(parents=True)
    runs = root / "runs"
    _save_evaluation(runs, "abc123", "run-a")
    thesis.name_evaluation("smoke", runs_dir=runs)
    (root / "data" / "expected").mkdir(parents=True)
    ref = verify.build_reference(STORE, None, profile="smoke", evaluation=None)
    (root / "data" / "expected" / "results-macros-smoke.json").write_text(json.dumps(ref))
    env = {**os.environ, "VALUEALIGN_ROOT": str(root), "PYTHONPATH": str(REPO / "lib")}

    def check(store: dict) -> subprocess.CompletedProcess:
        (root / "figures" / "results-macros.json").write_text(json.dumps(store))
        return subprocess.run([sys.executable, "-m", "valuealign.verify", "check", "--profile", "smoke"],
                              env=env, capture_output=True, text=True, timeout=120, check=False)

    ok = check(_store())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "TaxonomySectionAri" in ok.stdout and "0 drifted" in ok.stdout
    bad = check(_store(TaxonomySectionAri="0.500", TaxonomyClusters="48"))
    assert bad.returncode == 1
    assert "drifted: TaxonomyClusters, TaxonomySectionAri" in bad.stderr


@pytest.mark.pipeline
def test_committed_reference_covers_the_current_macros():
    """`make verify`'s reference exists for the embedded default and lists every macro the notebooks wrote."""
    ref = provenance.read_json(REPO / "data" / "expected" / "results-macros-smoke.json")
    kinds = {m["kind"] for m in ref["macros"].values()}
    assert {"count", "metric"} <= kinds
    store = verify.current_macros(require_artefact(paths.FIGURES / "results-macros.json").parent)
    assert set(ref["macros"]) == {n for m in store.values() for n in m}


@pytest.mark.skipif(__import__("shutil").which("make") is None, reason="needs GNU make")
def test_make_names_the_evaluation_after_notebook_04_and_verify_compares_after_all():
    def plan(*targets: str) -> str:
        out = subprocess.run(["make", "--no-print-directory", "-n", "-B", *targets, "PROFILE=smoke"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    nb04 = plan("nb-04")
    assert nb04.index("04_evaluate --stamp") < nb04.index("valuealign.thesis name-evaluation --profile smoke")
    ver = plan("verify")
    assert ver.index("06_thesis_figures") < ver.index("valuealign.verify check --profile smoke")
    pin = plan("pin-taxonomy")
    assert "01_value_taxonomy -p taxonomy_mode recompute" in pin and "valuealign.pinning promote" in pin


def test_notebook_02_near_duplicate_search_reads_the_pinned_embeddings(at_root):
    """splits.embed_texts (notebook 02's split) returns the pinned vector, not this machine's."""
    from valuealign import splits as item_splits

    _, computed = at_root
    text = computed.texts[0]
    target = pinning.embeddings_file(T._slug(T.DEFAULT_MODEL))
    table = pinning.read_embeddings(target)
    key = provenance.sha256_text(text)
    moved = table[key] + np.float32(1e-3)  # a pin made on "another machine"
    table[key] = moved
    pinning.write_embeddings(list(table), np.stack(list(table.values())), target)
    manifest = pinning.read_manifest()
    manifest["files"][target.name] = provenance.sha256_file(target)
    provenance.write_json(manifest, pinning.pinned_dir() / pinning.MANIFEST_NAME)
    assert np.array_equal(item_splits.embed_texts([text])[0], moved)

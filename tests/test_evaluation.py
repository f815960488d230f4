"""Tests of valuealign.evaluation: metrics against scipy, label scoring against an independent
per-option computation, a really trained "always B" model, permutation averaging, run discovery
and result keying. Models are tiny random-init Llamas with the bundled tokenizer (fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from valuealign import evaluation as ev
from valuealign import inference, metrics, models, prompts, stats

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer("smollm2-135m")


def tiny_llama(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(tokenizer)


QUESTIONS = [
    ("How important is family in your life?", ["Very", "Rather", "Not very", "Not at all"]),
    ("Should the government reduce income differences?", ["Yes", "No", "Don't know"]),
    ("Is it ever justified to cheat on taxes?", ["Never", "Sometimes", "Always"]),
    ("Do you trust your neighbours?", ["Completely", "Somewhat", "Not very much", "Not at all", "Refused"]),
]


def items_frame(qs=QUESTIONS) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [f"t-{i}" for i in range(len(qs))], "question": [q for q, _ in qs],
        "options": [o for _, o in qs], "nonsubstantive": [[False] * len(o) for _, o in qs],
        "ordinal": [True] * len(qs),
    })


# ----------------------------------------------------------------------------- metrics

DISTS = [
    ([0.1, 0.2, 0.7], [0.3, 0.3, 0.4]),
    ([0.5, 0.5, 0.0, 0.0], [0.0, 0.1, 0.2, 0.7]),
    ([1.0, 0.0], [0.0, 1.0]),
    ([0.25, 0.25, 0.25, 0.25], [0.25, 0.25, 0.25, 0.25]),
    ([0.05, 0.15, 0.3, 0.3, 0.2], [0.4, 0.1, 0.1, 0.1, 0.3]),
]


@pytest.mark.parametrize("p,q", DISTS)
def test_js_matches_scipy(p, q):
    assert metrics.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)
    assert metrics.js_alignment(p, q) == pytest.approx(1 - jensenshannon(p, q, base=2), abs=1e-9)


@pytest.mark.parametrize("p,q", DISTS)
def test_w1_matches_scipy(p, q):
    k = len(p)
    pos = np.arange(k)
    expected = 1 - wasserstein_distance(pos, pos, p, q) / (k - 1)
    assert metrics.w1_alignment(p, q) == pytest.approx(expected, abs=1e-9)


def test_w1_drops_nonsubstantive_and_renormalises():
    p, q = [0.2, 0.3, 0.1, 0.4], [0.5, 0.1, 0.2, 0.2]
    flags = [False, False, False, True]
    ps, qs = np.array(p[:3]) / sum(p[:3]), np.array(q[:3]) / sum(q[:3])
    expected = 1 - wasserstein_distance([0, 1, 2], [0, 1, 2], ps, qs) / 2
    assert metrics.w1_alignment(p, q, flags) == pytest.approx(expected, abs=1e-9)


def test_majority_entropy_and_bad_input():
    assert metrics.majority_match([0.1, 0.6, 0.3], [0.2, 0.5, 0.3]) == 1.0
    assert metrics.majority_match([0.6, 0.1, 0.3], [0.2, 0.5, 0.3]) == 0.0
    assert metrics.majority_match([0.6, 0.1, 0.3], [0.4, 0.4, 0.2]) == 1.0  # ties count
    assert metrics.entropy_difference([1 / 3] * 3, [1 / 3] * 3) == pytest.approx(0.0)
    assert metrics.entropy_difference([0.98, 0.01, 0.01], [1 / 3] * 3) < -1.0  # over-confident
    with pytest.raises(metrics.DistributionError, match="differ in length"):
        metrics.js_distance([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(metrics.DistributionError, match="non-negative"):
        metrics.js_distance([-0.5, 1.5], [0.5, 0.5])


def test_bootstrap_ci_and_paired_test():
    rng = np.random.default_rng(1)
    v = rng.normal(0.3, 0.1, 200)
    mean, lo, hi, n = stats.bootstrap_ci(v, 2000, seed=0)
    assert n == 200 and lo < mean < hi and hi - lo < 0.05
    assert stats.bootstrap_ci(v, 2000, seed=0) == (mean, lo, hi, n)  # seeded
    assert stats.paired_test(rng.normal(0.5, 0.1, 30)) < 1e-3
    assert np.isnan(stats.paired_test([0.1, 0.2]))


# ----------------------------------------------------------------------------- scoring

def _texts(tokenizer, n=6):
    out, labels = [], []
    for i, (q, o) in enumerate(QUESTIONS * 2):
        order = ev.option_orders(len(o), "cyclic")[i % len(o)]
        msgs = prompts.render_messages(q, o, order, i % len(prompts.PARAPHRASES))
        out.append(inference.chat_text(tokenizer, msgs))
        labels.append(list(prompts.LETTERS[: len(o)]))
    return out[:n], labels[:n]


def test_batched_scores_equal_per_option_loop(tokenizer, tiny):
    """Left padding + explicit position ids: the batched pass gives the per-option numbers."""
    texts, labels = _texts(tokenizer)
    fast = inference.score_labels(tiny, tokenizer, texts, labels, batch_size=4)
    slow = inference.score_labels_per_option(tiny, tokenizer, texts, labels)
    for f, s in zip(fast, slow, strict=True):
        assert not f.multi_token
        np.testing.assert_allclose(f.logprobs, s.logprobs, atol=1e-4)
        assert 0 < f.valid_mass < 1
        assert f.probs.sum() == pytest.approx(1.0)


def test_multi_token_labels_scored_as_full_sequences(tokenizer, tiny):
    texts, _ = _texts(tokenizer, 3)
    labels = [["Strongly agree", "Xylophonic", "No"], ["Yes", "Nope, never"], ["Aa", "Bb", "Cc", "Dd"]]
    lens = [[len(inference.label_token_ids(tokenizer, t, lab)) for lab in labs] for t, labs in zip(texts, labels, strict=True)]
    assert any(n > 1 for ls in lens for n in ls), lens  # the case really is multi-token
    fast = inference.score_labels(tiny, tokenizer, texts, labels, batch_size=2)
    slow = inference.score_labels_per_option(tiny, tokenizer, texts, labels)
    for f, s, ls in zip(fast, slow, lens, strict=True):
        assert f.multi_token == any(n > 1 for n in ls)
        np.testing.assert_allclose(f.logprobs, s.logprobs, atol=1e-4)
    # full-sequence probability: a longer label's log-prob is the sum over its tokens
    t = texts[0]
    ids = tokenizer(t, add_special_tokens=False).input_ids
    lab = inference.label_token_ids(tokenizer, t, "Xylophonic")
    with torch.inference_mode():
        logp = torch.log_softmax(tiny(input_ids=torch.tensor([ids + lab])).logits[0], -1)
    manual = sum(logp[len(ids) - 1 + j, tok].item() for j, tok in enumerate(lab))
    assert fast[0].logprobs[1] == pytest.approx(manual, abs=1e-4)


def _train_always(tokenizer, letter: str = "B", steps: int = 25):
    """Real optimisation: a tiny Llama trained so that the next token after any survey prompt
    is ``letter``."""
    model = tiny_llama(tokenizer, seed=1).train()
    target = inference.label_token_ids(tokenizer, "x", letter)[0]
    texts = []
    for pid in range(len(prompts.PARAPHRASES)):
        for q, o in QUESTIONS:
            for order in ev.option_orders(len(o), "random", seed=pid, item_id=q)[:1]:
                texts.append(inference.chat_text(tokenizer, prompts.render_messages(q, o, order, pid)))
    ids, mask = inference.pad_left([tokenizer(t, add_special_tokens=False).input_ids for t in texts],
                             tokenizer.pad_token_id)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    y = torch.full((len(texts),), target)
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), float(loss.detach())


@pytest.fixture(scope="module")
def always_b(tokenizer):
    return _train_always(tokenizer, "B")


def test_forced_answer_b_under_every_permutation(tokenizer, always_b):
    model, loss = always_b
    assert loss < 0.05
    items = items_frame()
    settings = ev.EvalSettings(n_paraphrases=2, permutations="cyclic")
    specs = ev.build_prompts(items, tokenizer, settings)
    scores = inference.score_labels(model, tokenizer, [s.text for s in specs], [s.labels for s in specs])
    for spec, sc in zip(specs, scores, strict=True):
        assert sc.probs[1] > 0.95, (spec.item_id, spec.order, sc.probs)
        assert sc.valid_mass > 0.9
    # the original option shown under B changes with the order, and so does the model's pick:
    # cyclic averaging turns this pure position preference into (near) uniform, no fake opinion
    preds = ev.predict_items(items, tokenizer, ev.model_scorer(model, tokenizer), settings)
    for row, (_, opts) in zip(preds.itertuples(), QUESTIONS, strict=True):
        np.testing.assert_allclose(row.probs, np.full(len(opts), 1 / len(opts)), atol=0.03)
        assert row.p_first_position < 0.05
        assert row.n_prompts == 2 * len(opts)


def test_cyclic_averaging_removes_planted_position_bias(tokenizer):
    """A scorer that knows the truth but piles extra mass onto label A: a single order
    reports A's option as the majority; cyclic averaging recovers the true majority and gets
    much closer to the truth (what is left is a uniform shrinkage, not a preference)."""
    truth = {"t-0": [0.1, 0.6, 0.2, 0.1], "t-1": [0.2, 0.7, 0.1], "t-2": [0.15, 0.25, 0.6],
             "t-3": [0.1, 0.2, 0.4, 0.2, 0.1]}
    items = items_frame()
    specs = {s.text: s for s in ev.build_prompts(items, tokenizer, ev.EvalSettings(n_paraphrases=1))}

    def biased(texts, labels):
        out = []
        for t in texts:
            s = specs[t]
            shown = np.array([truth[s.item_id][j] for j in s.order])
            p = 0.4 * shown + 0.6 * np.eye(len(shown))[0]
            out.append(inference.LabelScores(np.log(p), 1.0))
        return out

    averaged = ev.predict_items(items, tokenizer, biased, ev.EvalSettings(n_paraphrases=1)).set_index("item_id")
    for iid, t in truth.items():
        single = 0.4 * np.array(t) + 0.6 * np.eye(len(t))[0]  # identity order only
        assert np.argmax(single) == 0 != np.argmax(t)
        avg = np.array(averaged.loc[iid, "probs"])
        assert np.argmax(avg) == np.argmax(t)
        np.testing.assert_allclose(avg, 0.4 * np.array(t) + 0.6 / len(t), atol=1e-9)
        assert metrics.js_distance(avg, t) < metrics.js_distance(single, t)


def test_random_orders_are_seeded_and_valid():
    a = ev.option_orders(5, "random", seed=3, item_id="x")
    assert a == ev.option_orders(5, "random", seed=3, item_id="x")
    assert all(sorted(o) == list(range(5)) for o in a) and len(a) == 5
    assert ev.option_orders(3, "cyclic") == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    with pytest.raises(ev.EvaluationError):
        ev.option_orders(1, "cyclic")


# ----------------------------------------------------------------------------- runs and keying

def _run(root, name, adapter=True, manifest=True, done=True, params=None):
    d = root / name
    d.mkdir(parents=True)
    if adapter:
        (d / "adapter").mkdir()
        (d / "adapter" / "adapter_config.json").write_text("{}")
        (d / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    if manifest:
        p = params or {"method": "sft", "value_set": "germany", "seed": 0, "model_profile": "smollm2-135m"}
        (d / "manifest.json").write_text(json.dumps({"parameters": p}))
    if done:
        (d / "DONE").write_text("")
    return d


def _data_root(root):
    """A saved germany/sft dataset and its fingerprint (discover_runs refuses runs whose
    recorded training-data fingerprint differs from the data on disk)."""
    from valuealign import training

    data = root / "_alignment"
    training.synthetic_alignment_data("sft", value_set="germany").save_to_disk(str(data / "germany" / "sft"))
    return data, training.data_fingerprint("germany", "sft", root=data).combined


def test_discover_runs_reports_and_skips_bad_folders(tmp_path):
    data, fp = _data_root(tmp_path)
    _run(tmp_path, "smollm2-135m__sft__germany__s0__aaaa",
         params={"method": "sft", "value_set": "germany", "seed": 0, "model_profile": "smollm2-135m",
                 "data_fingerprint": fp})
    _run(tmp_path, "no-manifest", manifest=False)
    _run(tmp_path, "unfinished", done=False)
    _run(tmp_path, "bad-manifest", params={"method": "sft"})
    (tmp_path / "_baselines").mkdir()
    runs, skipped = ev.discover_runs(["*"], tmp_path, data_root=data)
    assert [r.run_id for r in runs] == ["smollm2-135m__sft__germany__s0__aaaa"]
    assert runs[0].method == "sft" and runs[0].value_set == "germany"
    reasons = dict(zip(skipped["run"], skipped["reason"], strict=True))
    assert set(reasons) == {"no-manifest", "unfinished", "bad-manifest"}
    assert "manifest" in reasons["no-manifest"] and "DONE" in reasons["unfinished"]
    _, skipped = ev.discover_runs(["does-not-exist"], tmp_path)
    assert skipped["run"].tolist() == ["does-not-exist"]
    with pytest.raises(ev.EvaluationError, match="no-manifest"):
        ev.discover_runs(["*"], tmp_path, strict=True, data_root=data)
    # a run marked done without its adapter is damage (issue 19.1): never skipped quietly
    _run(tmp_path, "no-adapter", adapter=False)
    for strict in (False, True):
        with pytest.raises(ev.EvaluationError, match="no-adapter"):
            ev.discover_runs(["*"], tmp_path, strict=strict, data_root=data)


def test_summary_is_keyed_and_never_mixed(tmp_path):
    def rows(h, v):
        return pd.DataFrame({"run": ["r1", "r1"], "split": ["test", "test_cluster"], "eval_hash": [h, h],
                             "metric": ["js_alignment"] * 2, "mean": [v, v]})

    ev.update_summary(rows("aaa", 0.5), tmp_path)
    ev.update_summary(rows("aaa", 0.6), tmp_path)  # same key: replaced
    assert ev.load_summary(runs_dir=tmp_path)["mean"].tolist() == [0.6, 0.6]
    ev.update_summary(rows("bbb", 0.7), tmp_path)  # other parameters: kept apart
    with pytest.raises(ev.EvaluationError, match="2 evaluations"):
        ev.load_summary(runs_dir=tmp_path)
    assert ev.load_summary("bbb", tmp_path)["mean"].tolist() == [0.7, 0.7]
    # rows of another target value set under the same key add up (sweep cells), not overwrite
    ev.update_summary(rows("bbb", 0.8).assign(target_value_set="germany"), tmp_path)
    assert sorted(ev.load_summary("bbb", tmp_path)["mean"].tolist()) == [0.7, 0.7, 0.8, 0.8]
    # a missing identity value (baselines have no value set) is part of the key: re-writing replaces
    base = rows("ccc", 0.1).assign(value_set=[None, None], target_value_set=["germany", None])
    ev.update_summary(base, tmp_path)
    ev.update_summary(base.assign(mean=0.2), tmp_path)
    assert ev.load_summary("ccc", tmp_path)["mean"].tolist() == [0.2, 0.2]
    s1 = ev.EvalSettings(n_paraphrases=2)
    assert s1.key({"a": "1"}) != ev.EvalSettings(n_paraphrases=3).key({"a": "1"}) != s1.key({"a": "2"})


def test_steerability_and_oracle_on_synthetic_populations():
    """Two populations that disagree; predictions equal to A's answers must show a positive
    diagonal advantage for A, and the oracle must pick the group most like A on train items."""
    ids = [f"i{k}" for k in range(8)]
    rng = np.random.default_rng(0)
    a = {i: rng.dirichlet([1, 1, 1]).tolist() for i in ids}
    b = {i: list(reversed(a[i])) for i in ids}
    targets = pd.DataFrame([{"value_set": "a", "item_id": i, "shares": a[i]} for i in ids]
                           + [{"value_set": "b", "item_id": i, "shares": b[i]} for i in ids])
    items = items_frame([(f"q{k}", ["x", "y", "z"]) for k in range(8)]).assign(
        item_id=ids, split=["train"] * 4 + ["test"] * 4, stratum="s", ordinal=False)
    preds = pd.DataFrame({"item_id": ids, "probs": [a[i] for i in ids]})
    table = ev.score_predictions(preds, items, targets, ["a", "b"]).assign(value_set="a")
    matrix, adv = ev.steerability(table, n_boot=200)
    assert matrix.loc["a", "a"] == pytest.approx(1.0)
    assert adv.iloc[0]["advantage"] > 0 and adv.iloc[0]["ci_low"] > 0
    # a base model that already answers like A: the raw advantage is all prior, the net one is 0
    base = table.assign(value_set=None, method="base")
    _, adv = ev.steerability(table, n_boot=200, base_table=base)
    assert adv.iloc[0]["advantage"] > 0 and adv.iloc[0]["net_advantage"] == pytest.approx(0.0)
    dist = pd.DataFrame([{"item_id": i, "group": "A-like", "shares": a[i]} for i in ids]
                        + [{"item_id": i, "group": "B-like", "shares": b[i]} for i in ids])
    inputs = {"targets": targets, "distributions": dist,
              "value_sets": pd.DataFrame({"value_set": ["a", "b"], "group": ["A0", "B0"], "weight": [1.0, 1.0]}),
              "splits": items[["item_id", "split"]]}
    pred, info = ev.oracle_predictions(inputs, "a", items[items["split"] == "test"])
    assert info["nearest_group"] == "A-like" and info["share_items_direct"] == 1.0
    assert pred["probs"].tolist() == [pytest.approx(a[i]) for i in ids[4:]]


def test_value_sets_and_item_selection():
    vs_table = pd.DataFrame({"value_set": ["united-states", "germany", "france-britain"],
                             "group": ["United States", "Germany", "France"], "weight": [1.0, 1.0, 0.5]})
    assert ev.resolve_value_sets(["United States", "germany", "France+Britain"], vs_table) == [
        "united-states", "germany", "france-britain"]
    assert ev.resolve_value_sets([], vs_table) == sorted(vs_table["value_set"])
    with pytest.raises(ev.EvaluationError, match="Narnia"):
        ev.resolve_value_sets(["Narnia"], vs_table)
    items = items_frame()
    splits = pd.DataFrame({"item_id": items["item_id"], "split": ["test", "test", "test_cluster", "train"],
                           "stratum": "s"})
    targets = pd.DataFrame({"value_set": "germany", "item_id": items["item_id"],
                            "shares": [[1 / len(o)] * len(o) for o in items["options"]]})
    inputs = {"items": items, "splits": splits, "targets": targets}
    sel = ev.select_items(inputs, ["germany"], ["test", "test_cluster"], max_items=1)
    assert sel.groupby("split").size().to_dict() == {"test": 1, "test_cluster": 1}
    sel = ev.select_items(inputs, ["germany"], ["test"], max_items=0, max_options=3)
    assert sel["item_id"].tolist() == ["t-1"]  # t-0 has 4 options
    with pytest.raises(ev.EvaluationError, match="eval_splits"):
        ev.select_items(inputs, ["germany"], ["holdout"], max_items=0)


# ----------------------------------------------------------------------------- statistics (issue 13)

def _rows(run, method, value_set, target, split, scores, seed=None, strata=None):
    """Item-table rows of one condition: ``scores`` maps item id -> js_alignment."""
    return pd.DataFrame({
        "run": run, "method": method, "value_set": value_set, "seed": seed, "split": split,
        "target_value_set": target, "item_id": list(scores), "js_alignment": list(scores.values()),
        "w1_alignment": np.nan, "stratum": strata if strata is not None else "s",
    })


def test_prompted_gain_is_paired_on_its_own_persona_only():
    """Planted: prompted-as-US beats base on US items by +0.10, prompted-as-Germany scores
    0.30 below base on US items. "prompted (US) - base" must be +0.10 over n items, not a
    mix of both personas (-0.10 over 2n items)."""
    ids = [f"i{k}" for k in range(8)]
    base = dict.fromkeys(ids, 0.5)
    table = pd.concat([
        _rows(ev.BASELINES_RUN, "base", None, "united-states", "test", base),
        _rows(ev.BASELINES_RUN, "prompted", "united-states", "united-states", "test",
              {i: v + 0.10 for i, v in base.items()}),
        _rows(ev.BASELINES_RUN, "prompted", "germany", "united-states", "test",
              {i: v - 0.30 for i, v in base.items()}),
    ], ignore_index=True)
    comp = ev.compare_to_baselines(table, n_boot=200)
    row = comp[(comp["method"] == "prompted") & (comp["value_set"] == "united-states")
               & (comp["versus"] == "base") & (comp["metric"] == "js_alignment")].iloc[0]
    assert row["mean_diff"] == pytest.approx(0.10)
    assert row["n_items"] == len(ids)
    with pytest.raises(ev.EvaluationError, match="several conditions"):
        ev.paired_difference(table, {"method": "prompted", "split": "test"}, {"method": "base"})


def _two_seed_table(split="test", strata=None):
    """Two seeds of SFT on US whose means differ (0.3 vs 0.7), items tight within a seed."""
    ids = [f"i{k}" for k in range(12)]
    rng = np.random.default_rng(0)
    parts = [_rows(ev.BASELINES_RUN, "base", None, "united-states", split, dict.fromkeys(ids, 0.4), strata=strata),
             _rows(ev.BASELINES_RUN, "prompted", "united-states", "united-states", split,
                   dict.fromkeys(ids, 0.45), strata=strata)]
    for s, level in ((0, 0.3), (1, 0.7)):
        parts.append(_rows(f"sft-us-s{s}", "sft", "united-states", "united-states", split,
                           {i: level + rng.normal(0, 0.005) for i in ids}, seed=s, strata=strata))
    return pd.concat(parts, ignore_index=True)


def test_seed_spread_is_in_the_interval_not_averaged_away():
    """Old plot_alignment averaged the per-seed CI bounds: two seeds at 0.3 and 0.7 gave an
    interval of width ~0.01 around 0.5. The two-level bootstrap must span the seeds."""
    import matplotlib.pyplot as plt

    summary = ev.method_summary(_two_seed_table(), n_boot=500)
    sft = summary[summary["method"] == "sft"].iloc[0]
    assert sft["n_seeds"] == 2 and sft["mean"] == pytest.approx(0.5, abs=0.01)
    assert sft["seed_sd"] == pytest.approx(np.std([0.3, 0.7], ddof=1), abs=0.01)
    assert sft["ci_low"] < 0.35 and sft["ci_high"] > 0.65 and sft["ci_unit"] == "seeds x items"
    base = summary[summary["method"] == "base"].iloc[0]
    assert base["n_seeds"] == 1 and np.isnan(base["seed_sd"])  # one seed: sd not estimable
    assert ev.format_mean_sd(base["mean"], base["seed_sd"]) == "0.400 ± n/a"
    fig = ev.plot_alignment(summary)
    bars = [c for c in fig.axes[0].collections if len(c.get_segments())]
    spans = [seg[1][1] - seg[0][1] for c in bars for seg in c.get_segments()]
    assert max(spans) > 0.3  # the plotted interval is the two-level one
    plt.close(fig)
    gains = ev.gains_table(_two_seed_table(), n_boot=500)
    g = gains[(gains["method"] == "sft") & (gains["versus"] == "base")].iloc[0]
    assert g["gain"] == pytest.approx(0.1, abs=0.01) and g["ci_low"] < -0.05 and g["ci_high"] > 0.25
    assert set(gains["versus"]) == {"base", "prompted"}
    assert "p_holm" in gains.columns


def test_held_out_clusters_resample_whole_strata():
    """Three strata whose items agree within a stratum (0.1, 0.5, 0.9): resampling items
    gives a narrow interval (~+-0.12); resampling strata a wide one (the truth: 3 clusters)."""
    values = np.repeat([0.1, 0.5, 0.9], 10)
    strata = np.repeat(["a", "b", "c"], 10)
    ids = [f"i{k}" for k in range(30)]
    table = _rows(ev.BASELINES_RUN, "base", None, "germany", "test_cluster", dict(zip(ids, values, strict=True)),
                  strata=strata)
    table = table.assign(**{m: 0.5 for m in ev.METRICS if m != "js_alignment"})  # the other metrics
    keys = ["run", "method", "split", "target_value_set"]
    clu = ev.summarise(table, keys, n_boot=2000).set_index("metric").loc["js_alignment"]
    itm = ev.summarise(table.assign(split="test"), keys, n_boot=2000).set_index("metric").loc["js_alignment"]
    assert itm["ci_high"] - itm["ci_low"] < 0.35
    assert clu["ci_high"] - clu["ci_low"] > 0.5
    assert clu["ci_unit"] == "strata" and clu["n_units"] == 3 and itm["ci_unit"] == "items"
    mean, lo, hi, n = stats.bootstrap_ci(values, 2000, clusters=strata)
    assert n == 30 and hi - lo > 0.5
    # one stratum: nothing to resample, no interval
    assert np.isnan(stats.bootstrap_ci(values[:10], 200, clusters=strata[:10])[1])
    # paired differences on that split resample strata and test per-stratum means
    other = table.assign(method="prompted", value_set="germany", js_alignment=table["js_alignment"] + 0.05)
    d = ev.paired_difference(pd.concat([table, other]), {"method": "prompted", "split": "test_cluster"},
                             {"method": "base", "split": "test_cluster"})
    assert d["ci_unit"] == "strata" and d["n_units"] == 3 and np.isnan(d["p_wilcoxon"])  # 3 strata < 5


def test_holm_adjustment_against_a_hand_computed_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    p = [0.01, 0.04, float("nan"), 0.03, 0.005]
    adj = stats.holm_adjust(p)
    assert adj[[0, 1, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adj[2])
    assert stats.holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    with pytest.raises(stats.StatisticsError, match=r"\[0, 1\]"):
        stats.holm_adjust([1.5])
    ids = [f"i{k}" for k in range(8)]
    table = pd.concat([_rows(ev.BASELINES_RUN, "base", None, "us", "test", dict.fromkeys(ids, 0.5)),
                       _rows("r1", "sft", "us", "us", "test", {i: 0.5 + 0.01 * k for k, i in enumerate(ids)})])
    comp = ev.compare_to_baselines(table, n_boot=100)
    js = comp[comp["metric"] == "js_alignment"]
    assert js["p_holm"].tolist() == pytest.approx(stats.holm_adjust(js["p_wilcoxon"]).tolist(), nan_ok=True)


def test_best_run_is_chosen_on_validation_and_reported_on_test():
    """KTO looks best on the test items but SFT is best on validation: the pick is SFT, and
    its test number is reported (not the maximum over test)."""
    summary = pd.DataFrame([
        ("validation", "us", "sft", 0.70), ("validation", "us", "kto", 0.60),
        ("test", "us", "sft", 0.62), ("test", "us", "kto", 0.80),
        ("validation", "us", "base", 0.90), ("test", "us", "base", 0.50),
    ], columns=["split", "value_set", "method", "mean"]).assign(seed_sd=np.nan, n_seeds=1)
    best = ev.best_on_validation(summary)
    assert (best["method"], best["chosen_on"], best["mean"]) == ("sft", "validation", pytest.approx(0.62))
    with pytest.raises(ev.EvaluationError, match="validation"):
        ev.best_on_validation(summary[summary["split"] == "test"])


def test_js_base_e_column_matches_scipy_default():
    p, q = [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]
    m = metrics.item_metrics(p, q, ordinal=False)
    assert m["js_alignment_e"] == pytest.approx(1 - jensenshannon(p, q), abs=1e-9)  # natural log
    assert m["js_alignment"] == pytest.approx(1 - jensenshannon(p, q, base=2), abs=1e-9)
    assert "js_alignment_e" in ev.METRICS


def test_entropy_difference_stays_bounded_on_peaked_items():
    """A uniform model against (.98, .01, .01, 0): the old ratio was 12.4; the difference is
    H(uniform over 4) - H(pop) = 2 - 0.161 bits."""
    pop = [0.98, 0.01, 0.01, 0.0]
    h_pop = -(0.98 * np.log2(0.98) + 2 * 0.01 * np.log2(0.01))
    m = metrics.item_metrics([0.25] * 4, pop, ordinal=False)
    assert m["entropy_diff_bits"] == pytest.approx(2.0 - h_pop)
    assert "entropy_ratio" not in m and "entropy_diff_bits" in ev.METRICS


def test_eval_key_depends_on_value_sets_and_items():
    s = ev.EvalSettings(max_eval_items=5)
    inputs = {"items.parquet": "abc"}
    k = s.key(inputs, ["germany"], ["test:i1", "test:i2"])
    assert k == s.key(inputs, ["germany"], ["test:i2", "test:i1"])  # order does not matter
    assert k != s.key(inputs, ["germany"], ["test:i1", "test:i3"])
    assert k != s.key(inputs, ["germany", "united-states"], ["test:i1", "test:i2"])

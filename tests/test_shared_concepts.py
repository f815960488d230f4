"""One home per concept that several stages share (issue 18): ids, row schema, KTO weights,
metrics and model inference are written once and the stages agree on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from valuealign import (
    consultation,
    datasets,
    evaluation,
    ids,
    inference,
    metrics,
    models,
    rows,
    training,
)


def test_a_value_set_spec_names_the_same_id_in_notebooks_02_and_04() -> None:
    """Notebook 02 names a mixture by its members; notebook 04 finds it again from the profile entry."""
    groups = pd.DataFrame({"group": ["France", "Great Britain", "United States"], "group_type": "country"})
    made = datasets.parse_value_sets(["France+Great Britain", "united-states"], groups)
    made_ids = [v.value_set for v in made]
    assert made_ids == ["france-great-britain", "united-states"]
    table = pd.DataFrame({"value_set": made_ids})
    assert evaluation.resolve_value_sets(["France+Great Britain", "United States"], table) == made_ids
    assert [ids.value_set_id(s) for s in ("France+Great Britain", " United States ")] == made_ids


def test_an_id_needs_a_letter_or_digit() -> None:
    assert ids.slugify("scoop-hivemind.ubi") == "scoop-hivemind-ubi"
    with pytest.raises(ids.EmptySlugError, match="empty id"):
        ids.slugify(" -- ")


def test_stable_seeds_do_not_depend_on_the_hash_seed() -> None:
    """Fixed numbers: a change of the rule would move every split and shift of notebook 02."""
    assert ids.stable_int(0, "split", "x") == ids.stable_int("0", "split", "x")
    assert ids.stable_int(0, "split", "x") != ids.stable_int(0, "split", "y")
    a, b = ids.rng_for(1, "order", "q1").integers(10**6, size=3), ids.rng_for(1, "order", "q1").integers(10**6, size=3)
    assert list(a) == list(b)


def test_every_trainer_column_is_a_written_column() -> None:
    """What notebook 03 reads (TRAINER_COLUMNS) is what notebooks 02 and 05 write (ROW_COLUMNS)."""
    assert set(rows.ROW_COLUMNS) == set(rows.TRAINER_COLUMNS) == set(rows.METHODS)
    for method in rows.METHODS:
        written = rows.ROW_COLUMNS[method]
        assert written[: len(rows.TRAINER_COLUMNS[method])] == list(rows.TRAINER_COLUMNS[method])
        assert written[-len(rows.PROVENANCE_COLUMNS):] == list(rows.PROVENANCE_COLUMNS)


@pytest.mark.parametrize(("n_d", "n_u"), [(3, 9), (9, 3), (5, 5), (1, 7)])
def test_kto_weights_balance_the_weighted_counts(n_d: int, n_u: int) -> None:
    w_d, w_u = rows.kto_class_weights(n_d, n_u)
    assert w_d * n_d == pytest.approx(w_u * n_u) and min(w_d, w_u) == 1.0
    assert rows.kto_class_weights(n_d, n_u, desirable=2.0) == (2.0, pytest.approx(2.0 * n_d / n_u))
    assert rows.kto_class_weights(n_d, n_u, 2.0, 0.5) == (2.0, 0.5)
    with pytest.raises(rows.KtoBalanceError, match="0 undesirable"):
        rows.kto_class_weights(n_d, 0)


def test_survey_and_consultation_stages_write_one_kto_record() -> None:
    """The same labels give the same kto_weights.json fields in notebook 02 and notebook 05, and
    the weights notebook 03 derives from the rows themselves."""
    labels = [True] * 3 + [False] * 9
    survey = datasets.kto_weights([{"label": x} for x in labels], threshold=1.0)
    polis = consultation.kto_weights(pd.DataFrame({"label": labels + [True], "split": ["train"] * 12 + ["validation"]}))
    assert polis == {k: survey[k] for k in polis}
    assert set(survey) - set(polis) == {"rule", "computed_on"}
    assert training.kto_weights({"label": labels}) == (
        pytest.approx(survey["desirable_weight"]), pytest.approx(survey["undesirable_weight"]))


def test_training_target_distance_and_model_score_are_one_metric() -> None:
    """Notebook 02's distance of a training target and notebook 04's score use one JS distance:
    alignment = 1 - distance, whichever stage computes it."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
        table = datasets.mean_jsd(pd.DataFrame({"value_set": ["a", "b"], "item_id": ["i", "i"], "shares": [p, q]}),
                                  ["a", "b"])
        d = float(table[(table.value_set_a == "a") & (table.value_set_b == "b")]["mean_js_distance"].iloc[0])
        assert d == metrics.js_distance(p, q)
        assert evaluation.item_metrics(q, p, ordinal=False)["js_alignment"] == pytest.approx(1 - d, abs=1e-15)


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = models.load_tokenizer("smollm2-135m")
    import torch

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


def test_greedy_replies_of_training_are_the_greedy_answers_of_evaluation(tiny_model) -> None:
    """Notebook 03's before/after examples and notebook 04's drift check read one greedy decoder."""
    model, tok = tiny_model
    conversations = [[{"role": "user", "content": q}] for q in ("Is family important?", "Name a colour.", "Hi")]
    replies = inference.greedy_replies(model, tok, conversations, max_new_tokens=6)
    texts = [inference.chat_text(tok, c) for c in conversations]
    answers = inference.greedy_answers(model, tok, texts, max_new_tokens=6, batch_size=8)
    assert replies == [tok.decode(a, skip_special_tokens=True).strip() for a in answers]
    assert all(0 < len(a) <= 6 for a in answers)


def test_completion_logprob_is_the_sum_of_the_answer_token_logprobs(tiny_model) -> None:
    """The sequence log-probability of an answer equals the per-token teacher-forced log-probs."""
    model, tok = tiny_model
    prompt = [{"role": "user", "content": "Which option?"}]
    text = inference.chat_text(tok, prompt)
    full = inference.chat_text(tok, prompt + [{"role": "assistant", "content": "B"}], generation_prompt=False)
    answer = tok(full, add_special_tokens=False).input_ids[len(tok(text, add_special_tokens=False).input_ids):]
    per_token = inference.answer_logprobs(model, tok, [text], [answer])[0]
    expected = float(sum(per_token[j, t].item() for j, t in enumerate(answer)))
    assert inference.completion_logprob(model, tok, prompt, "B") == pytest.approx(expected, abs=1e-4)


def test_base_2_distance_keeps_the_numbers_the_datasets_were_built_with() -> None:
    """Notebook 02 clusters countries by UMAP over mean JS distances, which turns a last-bit
    change into other clusters, datasets and run ids. Base 2 is the per-term log2 sum that
    built the shipped datasets; on this pair the ln-then-divide form differs in the last bit."""
    p, q = [0.129, 0.622, 0.249], [0.46, 0.205, 0.335]
    assert metrics.js_distance(p, q) == 0.3939241586287392
    pa, qa = np.asarray(p) / sum(p), np.asarray(q) / sum(q)
    m = 0.5 * (pa + qa)
    natural = 0.5 * float(np.sum(pa * np.log(pa / m))) + 0.5 * float(np.sum(qa * np.log(qa / m)))
    assert metrics.js_distance(p, q, base=np.e) == pytest.approx(np.sqrt(natural), abs=1e-15)
    assert np.sqrt(natural / np.log(2)) != metrics.js_distance(p, q)  # the pair tells the two forms apart

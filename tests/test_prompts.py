"""Tests of the shared prompt templates (valuealign.prompts)."""

from __future__ import annotations

import pytest

from valuealign import prompts

QUESTION = "Is it important to have a strong leader?"
OPTIONS = ["Very important", "Somewhat important", "Not important", "Don't know"]


def test_letters_and_paraphrases():
    assert prompts.LETTERS == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert len(prompts.PARAPHRASES) >= 3
    rendered = {
        prompts.render_messages(QUESTION, OPTIONS, [0, 1, 2, 3], p)[0]["content"]
        for p in range(len(prompts.PARAPHRASES))
    }
    assert len(rendered) == len(prompts.PARAPHRASES)  # paraphrases differ
    for text in rendered:
        assert QUESTION in text and "letter" in text.lower()


def test_order_places_options_under_letters():
    order = [2, 0, 3, 1]
    msgs = prompts.render_messages(QUESTION, OPTIONS, order, 0)
    assert msgs[0]["role"] == "user" and len(msgs) == 1
    text = msgs[0]["content"]
    for pos, j in enumerate(order):
        assert f"{prompts.LETTERS[pos]}. {OPTIONS[j]}" in text
        assert prompts.label_for(order, j) == prompts.LETTERS[pos]
        assert prompts.option_for(order, prompts.LETTERS[pos]) == j


def test_persona_line():
    text = prompts.render_messages(QUESTION, OPTIONS, [0, 1, 2, 3], 1, persona="a person from Germany")
    assert "Answer as a person from Germany" in text[0]["content"]
    plain = prompts.render_messages(QUESTION, OPTIONS, [0, 1, 2, 3], 1)
    assert "Answer as" not in plain[0]["content"]


def test_answer_message_is_letter_alone():
    assert prompts.answer_message("B") == [{"role": "assistant", "content": "B"}]


@pytest.mark.parametrize(
    "order, pid, match",
    [([0, 1, 1, 3], 0, "permutation"), ([0, 1, 2], 0, "permutation"), ([0, 1, 2, 3], 99, "paraphrase_id")],
)
def test_bad_input(order, pid, match):
    with pytest.raises(prompts.PromptError, match=match):
        prompts.render_messages(QUESTION, OPTIONS, order, pid)


def test_label_for_unknown_index():
    with pytest.raises(prompts.PromptError, match="option index 7"):
        prompts.label_for([0, 1, 2], 7)

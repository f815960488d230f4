"""Scoring on the model that was trained (issue 13, point 10).

1. The option letter the scorer reads is the token the model was trained to produce: with a
   Llama-2 / Mistral SentencePiece tokenizer (built offline here with that family's rules: BPE
   with byte fallback, Metaspace ``▁`` spaces, the real chat templates), the answer "B" after
   ``[/INST]`` is the piece ``▁B``, as trl's prompt-completion tokenisation trains it.
2. A run trained on a 4-bit base is scored on the 4-bit base (``eval_quantization``), and the
   quantisation is part of the evaluation key.
"""

from __future__ import annotations

import string

import numpy as np
import pytest

from valuealign import evaluation as ev
from valuealign import inference, models, prompts

torch = pytest.importorskip("torch")

# The chat templates of meta-llama/Llama-2-13b-chat-hf and mistralai/Mistral-7B-Instruct-v0.3
# (reduced to user/assistant turns): the answer is written as " " + content after [/INST].
LLAMA2_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + message['content'].strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content']|trim + eos_token }}"
    "{% endif %}{% endfor %}"
)


def sentencepiece_tokenizer(family: str):
    """A Llama-family tokenizer with a tiny vocabulary: every printable character, the 256
    byte-fallback pieces and the word-initial pieces ``▁A`` ... ``▁Z``, ``▁Yes``, ``▁No``.
    Mistral v0.3 has ``[INST]``/``[/INST]`` as control tokens; Llama-2 spells them out."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in sorted(set(string.printable) - set(string.whitespace)) + ["▁"]:
        vocab.setdefault(c, len(vocab))
    merges = []
    for c in string.ascii_uppercase:
        vocab["▁" + c] = len(vocab)
        merges.append(("▁", c))
    for left, right in (("▁Y", "e"), ("▁Ye", "s"), ("▁N", "o")):
        vocab[left + right] = len(vocab)
        merges.append((left, right))
    tok = LlamaTokenizer(vocab=vocab, merges=merges)
    if family == "mistral":
        tok.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]"]})
        tok.chat_template = MISTRAL_TEMPLATE
    else:
        tok.chat_template = LLAMA2_TEMPLATE
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def trained_answer_ids(tok, messages: list[dict], answer: str) -> list[int]:
    """The completion tokens trl's SFT trains for a conversational prompt-completion row:
    the tokenised prompt+completion after its common prefix with the tokenised prompt."""
    def ids(x):
        return list(x["input_ids"] if hasattr(x, "keys") else x)

    prompt = ids(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
    full = ids(tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True))
    n = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), min(len(prompt), len(full)))
    return full[n:]


QUESTIONS = [
    ("How important is family in your life?", ["Very", "Rather", "Not very", "Not at all"]),
    ("Should the government reduce income differences?", ["Yes", "No", "Don't know"]),
    ("Is it ever justified to cheat on taxes?", ["Never", "Sometimes", "Always"]),
]


def survey_messages():
    for pid in range(2):
        for q, o in QUESTIONS:
            yield prompts.render_messages(q, o, list(range(len(o))), pid)


@pytest.mark.parametrize("family", ["llama-2", "mistral"])
def test_scorer_reads_the_answer_token_the_model_is_trained_on(family):
    tok = sentencepiece_tokenizer(family)
    assert inference.answer_prefix(tok) == " "
    for msgs in survey_messages():
        text = inference.chat_text(tok, msgs)
        assert text.endswith("[/INST]")
        for letter in "ABC":
            read = inference.label_token_ids(tok, text, letter)
            trained = trained_answer_ids(tok, msgs, letter)
            assert read == trained[: len(read)] and len(read) == 1, (read, trained)
            assert tok.convert_ids_to_tokens(read) == ["▁" + letter]
        # the dilemma answers follow the same rule
        assert tok.convert_ids_to_tokens(inference.label_token_ids(tok, text, "Yes")) == ["▁Yes"]


def test_chatml_answer_has_no_prefix_and_is_unchanged():
    """SmolLM2 (ChatML): the answer follows ``assistant\\n`` directly; the letter's token is
    still the one trl trains."""
    tok = models.load_tokenizer("smollm2-135m")
    assert inference.answer_prefix(tok) == ""
    msgs = next(survey_messages())
    text = inference.chat_text(tok, msgs)
    for letter in "ABC":
        assert inference.label_token_ids(tok, text, letter) == trained_answer_ids(tok, msgs, letter)[:1]


def _tiny_llama(vocab_size: int, pad_id: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=pad_id, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("family", ["llama-2", "mistral"])
def test_valid_mass_near_one_for_a_model_trained_to_answer_b(family):
    """Real optimisation on trl's tokens of the assistant turn "B": the scorer must see the
    trained answer (valid_mass ~1, P(B) ~1). Reading the bare ``B`` piece instead (the old
    logic) puts ~0 mass on the valid letters."""
    tok = sentencepiece_tokenizer(family)
    msgs = list(survey_messages())
    texts = [inference.chat_text(tok, m) for m in msgs]
    target = trained_answer_ids(tok, msgs[0], "B")[0]
    assert all(trained_answer_ids(tok, m, "B")[0] == target for m in msgs)
    model = _tiny_llama(len(tok), tok.pad_token_id, seed=1).train()
    ids, mask = inference.pad_left([tok(t, add_special_tokens=False).input_ids for t in texts], tok.pad_token_id)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    y = torch.full((len(texts),), target)
    for _ in range(30):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05
    model.eval()
    labels = [list(prompts.LETTERS[: len(o)]) for _ in range(2) for _, o in QUESTIONS]
    scores = inference.score_labels(model, tok, texts, labels, batch_size=4)
    for sc in scores:
        assert sc.valid_mass > 0.9, sc.valid_mass
        assert sc.probs[1] > 0.95
    np.testing.assert_allclose(
        [s.logprobs for s in scores[:1]][0],
        inference.score_labels_per_option(model, tok, texts[:1], labels[:1])[0].logprobs, atol=1e-4)


# ----------------------------------------------------------------------------- quantisation

def _run(tmp_path, run_id: str, quantization: str | None) -> ev.RunInfo:
    params = {"method": "sft", "value_set": "germany", "model_profile": "smollm2-135m"}
    if quantization is not None:
        params["quantization"] = quantization
    return ev.RunInfo(run_id, tmp_path / run_id, "sft", "germany", 0, "smollm2-135m", None,
                      {"parameters": params})


def test_as_trained_reads_each_runs_training_quantization(tmp_path):
    four = [_run(tmp_path, "sft-a", "4bit"), _run(tmp_path, "sft-b", "4bit")]
    assert ev.scoring_quantization("as_trained", four) == "4bit"
    assert ev.scoring_quantization("as_trained", [_run(tmp_path, "sft-c", "none")]) == "none"
    assert ev.scoring_quantization("as_trained", []) == "none"
    assert ev.scoring_quantization("none", four) == "none"  # forced
    with pytest.raises(ev.EvaluationError, match=r"4bit: sft-a, sft-b; none: sft-c"):
        ev.scoring_quantization("as_trained", [*four, _run(tmp_path, "sft-c", "none")])
    with pytest.raises(ev.EvaluationError, match=r"sft-d/manifest.json: parameters.quantization is None"):
        ev.scoring_quantization("as_trained", [_run(tmp_path, "sft-d", None)])
    with pytest.raises(ev.EvaluationError, match="eval_quantization: '8bit'"):
        ev.scoring_quantization("8bit", four)


def test_quantization_is_part_of_the_eval_key():
    assert ev.EvalSettings(quantization="4bit").key() != ev.EvalSettings(quantization="none").key()
    assert ev.load_kwargs("4bit")["quantization"] == "4bit"
    with pytest.raises(ev.EvaluationError, match="resolved"):
        ev.EvalSettings(quantization="as_trained")


def test_bundled_model_scored_on_its_4bit_base_on_cpu(tmp_path):
    """bitsandbytes runs NF4 on CPU: the bundled SmolLM2 loads in 4-bit through the scoring
    loader (with an adapter, as a QLoRA run is evaluated), the scorer runs, and its numbers
    differ from the float32 model's: scoring on the wrong weights is a different model."""
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig, get_peft_model

    tok = models.load_tokenizer("smollm2-135m")
    texts = [inference.chat_text(tok, m) for m in list(survey_messages())[:2]]
    labels = [list(prompts.LETTERS[: len(QUESTIONS[0][1])]), list(prompts.LETTERS[: len(QUESTIONS[1][1])])]
    full = models.load_causal_lm("smollm2-135m", **ev.load_kwargs("none"))
    assert not models.is_4bit(full)
    ref = inference.score_labels(full, tok, texts, labels)
    adapter = tmp_path / "adapter"
    get_peft_model(full, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    del full
    quant = models.load_with_adapter("smollm2-135m", adapter, **ev.load_kwargs("4bit"))
    assert models.is_4bit(quant)
    got = inference.score_labels(quant, tok, texts, labels)
    for g, r in zip(got, ref, strict=True):
        assert 0 < g.valid_mass <= 1 and np.isfinite(g.logprobs).all()
        assert np.abs(g.logprobs - r.logprobs).max() > 1e-3  # NF4 rounding changes the scores

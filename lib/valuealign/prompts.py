"""The one prompt-template module shared by dataset building, training and evaluation.

Why one module: a model aligned on prompts rendered one way and evaluated on prompts rendered
another way would be scored on a format shift, not on its values. Training data (notebook 02),
fine-tuning (03) and evaluation (04) all render survey items through :func:`render_messages`;
the public consultation (05) renders its topic prompts through :func:`render_topic_messages`.

Why paraphrases and shuffled option orders: a small model readily learns "answer B" or a
surface cue of one wording instead of the population's opinion. Each training row records
its ``paraphrase_id`` and ``option_order`` so position balance can be checked and evaluation
can average over orders.

Conventions: option labels are single capital letters; ``order`` is a permutation of
``range(len(options))`` and the option shown at position ``i`` (letter ``LETTERS[i]``) is
``options[order[i]]``. The assistant's answer (the completion) is the letter alone, e.g.
``"B"``, which is what evaluation scores as the next token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Each template gets ``{question}``, ``{options}`` (one "A. text" line per option) and
# ``{letters}`` (e.g. "A, B, C or D"). All end by asking for the letter only.
PARAPHRASES: tuple[str, ...] = (
    "{question}\n\n{options}\n\nAnswer with the letter of your choice ({letters}) only.",
    "Survey question: {question}\n\nOptions:\n{options}\n\n"
    "Which option do you choose? Reply with a single letter ({letters}).",
    "Please answer the following question.\n\n{question}\n\n{options}\n\n"
    "Respond only with the letter ({letters}) of the option that fits your view best.",
    "Here is a question from an opinion survey:\n{question}\n\nPossible answers:\n{options}\n\n"
    "Give just the letter of your answer ({letters}).",
)

PERSONA_LINE = "Answer as {persona} would."


class PromptError(ValueError):
    """A prompt cannot be rendered from the given question/options/order; the message says why."""


def _check_order(order: Sequence[int], n_options: int) -> list[int]:
    order = [int(i) for i in order]
    if sorted(order) != list(range(n_options)):
        raise PromptError(
            f"option order {order} is not a permutation of range({n_options}) "
            f"(one index per option)"
        )
    return order


def _letters_text(n: int) -> str:
    letters = list(LETTERS[:n])
    if n == 1:
        return letters[0]
    return ", ".join(letters[:-1]) + " or " + letters[-1]


def render_prompt(
    question: str,
    options: Sequence[str],
    order: Sequence[int],
    paraphrase_id: int,
    persona: str | None = None,
) -> str:
    """The user message text (see :func:`render_messages`)."""
    n = len(options)
    if n < 2:
        raise PromptError(f"an item needs at least 2 options, got {n}: {list(options)!r}")
    if n > len(LETTERS):
        raise PromptError(f"an item may have at most {len(LETTERS)} options, got {n}")
    if not 0 <= int(paraphrase_id) < len(PARAPHRASES):
        raise PromptError(
            f"paraphrase_id {paraphrase_id} out of range [0, {len(PARAPHRASES) - 1}]"
        )
    order = _check_order(order, n)
    lines = "\n".join(f"{LETTERS[i]}. {str(options[j]).strip()}" for i, j in enumerate(order))
    text = PARAPHRASES[int(paraphrase_id)].format(
        question=str(question).strip(), options=lines, letters=_letters_text(n)
    )
    if persona:
        text = PERSONA_LINE.format(persona=persona.strip()) + "\n\n" + text
    return text


def render_messages(
    question: str,
    options: list[str],
    order: list[int],
    paraphrase_id: int,
    persona: str | None = None,
) -> list[dict]:
    """Chat messages ``[{"role": "user", "content": ...}]`` for one survey item.

    ``persona`` (e.g. ``"a person from Germany"``) prepends an "Answer as ... would." line:
    the prompting baseline that needs no fine-tuning.
    """
    return [{"role": "user", "content": render_prompt(question, options, order, paraphrase_id, persona)}]


def cyclic_order(n_options: int, shift: int) -> list[int]:
    """Cyclic shift ``shift`` of the survey's own option order: ``[shift, shift+1, ...] mod n``.

    The one definition of the layouts an item is shown in: notebook 04 scores every item in all
    ``n`` shifts (each option once at every letter, so a pure letter bias cancels), and the
    training rows of notebook 02 walk the same shifts (:func:`training_variant`).
    """
    if n_options < 1:
        raise PromptError(f"an item needs at least one option, got {n_options}")
    return [(int(shift) + i) % n_options for i in range(n_options)]


def training_variant(n_options: int, k: int, start: int = 0) -> tuple[list[int], int]:
    """The k-th training prompt of an item: (option order, paraphrase id).

    Row k shows cyclic shift ``(start + k) mod n`` with paraphrase ``(k // n) mod P``: the rows
    walk the evaluation's (shift, paraphrase) grid, all shifts of paraphrase 0 first. Why: over
    any n consecutive rows each option appears once at every letter (no position cue), and a
    model trained on an item has seen the very layouts notebook 04 scores it in. ``start`` (seeded
    per item by the caller) decides which shift comes first, so that an item with fewer rows than
    options does not always show its first options at the first letters (survey orders are not
    random: the popular answer often comes first). The earlier rows (rotations of a seeded random
    permutation: layouts the evaluation never shows) left the positive control (a run scored on
    its own train items) at no gain after several epochs; with these layouts it gains (README,
    "The demo profile").
    """
    return cyclic_order(n_options, (start + k) % n_options), (k // n_options) % len(PARAPHRASES)


def label_for(order: Sequence[int], option_index: int) -> str:
    """The letter under which original option ``option_index`` is shown for this ``order``."""
    order = [int(i) for i in order]
    try:
        return LETTERS[order.index(int(option_index))]
    except ValueError:
        raise PromptError(f"option index {option_index} is not in option order {order}") from None


def option_for(order: Sequence[int], letter: str) -> int:
    """Inverse of :func:`label_for`: the original option index shown under ``letter``."""
    pos = LETTERS.find(letter.strip().upper()) if len(letter.strip()) == 1 else -1
    if pos < 0 or pos >= len(order):
        raise PromptError(f"letter {letter!r} is not a label for {len(order)} options")
    return int(order[pos])


def answer_message(letter: str) -> list[dict]:
    """The completion: one assistant message whose content is the letter alone."""
    return [{"role": "assistant", "content": letter}]


# Prompts asking for a view on the conversation's topic; the completion is a statement.
TOPIC_PROMPTS: tuple[str, ...] = (
    "What is your view on this topic: {topic}? Answer with one short statement of your opinion.",
    "A public consultation asks for opinions on: {topic}.\n\nShare your view in one or two sentences.",
    "Topic for discussion: {topic}\n\nWhat do you think? State your position briefly.",
)


def render_topic_messages(topic: str, paraphrase_id: int) -> list[dict[str, str]]:
    """The prompt of a consultation row: one user message asking for a view on the topic."""
    if not 0 <= int(paraphrase_id) < len(TOPIC_PROMPTS):
        raise ValueError(f"paraphrase_id {paraphrase_id} out of range [0, {len(TOPIC_PROMPTS) - 1}]")
    topic = re.sub(r"\s+", " ", str(topic)).strip().rstrip("?.")
    return [{"role": "user", "content": TOPIC_PROMPTS[int(paraphrase_id)].format(topic=topic)}]


# DailyDilemmas (notebook 04): a yes/no question, the answers named in both orders.
DILEMMA_TEMPLATES: tuple[str, ...] = (
    "{question}\n\nAnswer Yes or No.",
    "{question}\n\nAnswer No or Yes.",
)


def dilemma_messages(question: str) -> list[list[dict[str, str]]]:
    """One user message per :data:`DILEMMA_TEMPLATES`; the scores of both are averaged, as option
    orders are for survey items, so an order bias between "Yes" and "No" cancels."""
    return [[{"role": "user", "content": tpl.format(question=question)}] for tpl in DILEMMA_TEMPLATES]

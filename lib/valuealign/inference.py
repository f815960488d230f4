"""Running a chat model: its prompt text, next-token and sequence log-probabilities, greedy replies.

One home for every forward pass the stages make. Why: training (notebook 03) must raise
exactly the probabilities evaluation (04) reads, at the same position and with the same tokens;
the distributional loss, the before/after examples and the evaluation's scoring therefore all
render prompts with :func:`chat_text` and place answers with :func:`label_token_ids`. Torch is
imported inside the functions (importing it costs seconds; stages that never run a model need
not pay it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from valuealign.errors import EvaluationError


class InferenceError(EvaluationError):
    """A tokenizer or chat template cannot render or score what was asked; the message says what."""


def chat_text(tokenizer: Any, messages: list[dict], generation_prompt: bool = True) -> str:
    """The conversation as the chat model sees it: with ``generation_prompt`` (the default) the
    prompt string exactly as the model sees it before answering; without, a finished
    conversation (the assistant's answer included), as trl renders a training row."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


_PROBE_ANSWER = "Q7"  # an answer no chat template rewrites; only its position in the rendering matters


def answer_prefix(tokenizer: Any) -> str:
    """The text a chat template puts between the generation prompt and the assistant's answer.

    Why: training (trl, prompt-completion) learns the tokens of the *assistant turn*, and
    templates differ in where the answer starts. ChatML ends the generation prompt with
    ``assistant\\n`` and the answer follows directly (prefix ``""``); Llama-2 and Mistral end it
    with ``[/INST]`` and write the answer as ``" " + content``, so a SentencePiece tokenizer
    makes the answer "B" the piece ``▁B``, not ``B``. Reading ``B`` scores a token the model
    never learnt to produce (``valid_mass`` near 0). ``""`` when the tokenizer has no chat
    template or the template renders the prompt alone differently (then nothing can be said).
    """
    if not getattr(tokenizer, "chat_template", None):
        return ""
    from jinja2.exceptions import TemplateError

    user = [{"role": "user", "content": "Which option?"}]
    try:
        prompt = chat_text(tokenizer, user)
        full = chat_text(tokenizer, user + [{"role": "assistant", "content": _PROBE_ANSWER}], generation_prompt=False)
    except (TemplateError, ValueError):
        return ""
    if not full.startswith(prompt) or _PROBE_ANSWER not in full[len(prompt):]:
        return ""
    return full[len(prompt):].split(_PROBE_ANSWER, 1)[0]


def label_token_ids(tokenizer: Any, prompt_text: str, label: str, prefix: str | None = None) -> list[int]:
    """Token ids of ``label`` as the model would produce them after ``prompt_text``: the answer
    is placed as the chat template places an assistant answer (``prefix``, default
    :func:`answer_prefix`) and tokenised in context, so a tokenizer that merges across the
    boundary or marks a leading space (SentencePiece ``▁B``) is handled. These are the tokens
    trl's prompt-completion training puts after the prompt."""
    prefix = answer_prefix(tokenizer) if prefix is None else prefix
    p = tokenizer(prompt_text, add_special_tokens=False).input_ids
    f = tokenizer(prompt_text + prefix + label, add_special_tokens=False).input_ids
    if len(f) > len(p) and f[: len(p)] == p:
        return list(f[len(p):])
    ids = tokenizer(label, add_special_tokens=False).input_ids
    if not ids:
        raise InferenceError(f"label {label!r} has no tokens for this tokenizer")
    return list(ids)


@dataclass
class LabelScores:
    """Log-probabilities of each label (full label sequence) and the mass they cover."""

    logprobs: np.ndarray
    valid_mass: float
    multi_token: bool = False

    @property
    def probs(self) -> np.ndarray:
        """Renormalised over the valid labels."""
        z = self.logprobs - self.logprobs.max()
        e = np.exp(z)
        return e / e.sum()


# A scorer maps (prompt texts, label lists) to LabelScores; the model-backed one is the default,
# tests plant synthetic ones (e.g. a position-biased scorer) to check the averaging.
Scorer = Callable[[Sequence[str], Sequence[Sequence[str]]], list[LabelScores]]


def forward_last(model: Any, input_ids: Any, attention_mask: Any, keep: int) -> Any:
    """Logits of the last ``keep`` positions (left padding: they are the real last tokens)."""
    import torch

    device = device_of(model)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        try:
            out = model(input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids, logits_to_keep=keep)
        except TypeError:  # models without logits_to_keep
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    return out.logits[:, -keep:, :].float().cpu()


def device_of(model: Any) -> Any:
    """The device of the model's first parameter (``"cpu"`` for a parameterless stand-in)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Token id rows padded on the left into (input_ids, attention_mask): the last position of
    every row is its real last token, which next-token scoring reads."""
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[i, n - len(s):] = 1
    return ids, mask


def score_labels(model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[Sequence[str]],
                 batch_size: int = 8) -> list[LabelScores]:
    """Score every label of every prompt.

    Prompts whose labels are all distinct single tokens are scored together, ``batch_size``
    prompts per forward pass, reading the next-token distribution at the last position (the
    common case: one pass scores all options). A prompt with a multi-token label gets one
    batched pass over its (prompt + label) sequences and each label's full-sequence
    log-probability; its ``valid_mass`` is the total probability of the label sequences.
    Prompts are sorted by length so that batches carry little padding.
    """
    import torch

    if len(texts) != len(labels):
        raise InferenceError(f"{len(texts)} prompts but {len(labels)} label lists")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    enc = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    prefix = answer_prefix(tokenizer)
    lab_ids = [[label_token_ids(tokenizer, t, lab, prefix) for lab in labs]
               for t, labs in zip(texts, labels, strict=True)]
    single = [all(len(x) == 1 for x in li) and len({x[0] for x in li}) == len(li) for li in lab_ids]
    results: list[LabelScores | None] = [None] * len(texts)

    fast = sorted((i for i in range(len(texts)) if single[i]), key=lambda i: len(enc[i]))
    for start in range(0, len(fast), max(1, batch_size)):
        idx = fast[start:start + batch_size]
        ids, mask = pad_left([enc[i] for i in idx], pad)
        logp = torch.log_softmax(forward_last(model, ids, mask, 1)[:, -1, :], dim=-1)
        for row, i in enumerate(idx):
            tok_ids = torch.tensor([x[0] for x in lab_ids[i]])
            lp = logp[row, tok_ids].double().numpy()
            results[i] = LabelScores(lp, float(np.exp(lp).sum()))

    for i in (i for i in range(len(texts)) if not single[i]):
        seqs = [enc[i] + li for li in lab_ids[i]]
        m = max(len(li) for li in lab_ids[i])
        lp_all = []
        for s0 in range(0, len(seqs), max(1, batch_size)):
            chunk = seqs[s0:s0 + batch_size]
            ids, mask = pad_left(chunk, pad)
            logits = forward_last(model, ids, mask, m + 1)
            logp = torch.log_softmax(logits, dim=-1)
            for r, li in enumerate(lab_ids[i][s0:s0 + batch_size]):
                n = len(li)
                pos = [m - n + j for j in range(n)]  # index in the kept window predicting li[j]
                lp_all.append(float(sum(logp[r, p, t].item() for p, t in zip(pos, li, strict=True))))
        lp = np.asarray(lp_all, dtype=float)
        results[i] = LabelScores(lp, float(np.exp(lp).sum()), multi_token=True)
    return [r for r in results if r is not None]


def score_labels_per_option(model: Any, tokenizer: Any, texts: Sequence[str],
                            labels: Sequence[Sequence[str]]) -> list[LabelScores]:
    """The naive reference: one forward pass per (prompt, option). Used by the benchmark and
    by tests as an independent computation of the same numbers."""
    import torch

    out = []
    prefix = answer_prefix(tokenizer)
    for t, labs in zip(texts, labels, strict=True):
        p = tokenizer(t, add_special_tokens=False).input_ids
        lps = []
        for lab in labs:
            li = label_token_ids(tokenizer, t, lab, prefix)
            ids = torch.tensor([p + li]).to(device_of(model))
            with torch.inference_mode():
                logits = model(input_ids=ids).logits[0].float().cpu()
            logp = torch.log_softmax(logits, dim=-1)
            lps.append(float(sum(logp[len(p) - 1 + j, tok].item() for j, tok in enumerate(li))))
        lp = np.asarray(lps)
        out.append(LabelScores(lp, float(np.exp(lp).sum()), multi_token=any(
            len(label_token_ids(tokenizer, t, lab, prefix)) > 1 for lab in labs)))
    return out


def greedy_continuations(model: Any, tokenizer: Any, texts: Sequence[str], max_new_tokens: int,
                         batch_size: int = 8, use_cache: bool | None = None) -> list[list[int]]:
    """Greedy continuations of ``texts`` (token ids after each prompt, ``max_new_tokens`` long;
    a row that ended early is filled with the pad token, as ``generate`` fills it).

    ``use_cache``: ``None`` keeps the model's setting; a model being trained with gradient
    checkpointing has it off, and generating with it on there is much faster."""
    import torch

    cache = {} if use_cache is None else {"use_cache": use_cache}
    out: list[list[int]] = []
    for s in range(0, len(texts), max(1, batch_size)):
        enc = tokenizer(list(texts[s:s + batch_size]), return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device_of(model))
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, **cache,
                                 temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id)
        out.extend(gen[:, enc["input_ids"].shape[1]:].cpu().tolist())
    return out


def greedy_answers(model: Any, tokenizer: Any, texts: Sequence[str], max_new_tokens: int = 16,
                   batch_size: int = 8) -> list[list[int]]:
    """The model's own greedy continuations (token ids, up to and including the first end token)."""
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    out: list[list[int]] = []
    for row in greedy_continuations(model, tokenizer, texts, max_new_tokens, batch_size):
        ans = []
        for t in row:
            ans.append(t)
            if t in eos:
                break
        out.append(ans)
    return out


def greedy_replies(model: Any, tokenizer: Any, conversations: Sequence[list[dict]],
                   max_new_tokens: int) -> list[str]:
    """The model's greedy reply to each conversation, decoded without special tokens (one batch)."""
    texts = [chat_text(tokenizer, m) for m in conversations]
    rows = greedy_continuations(model, tokenizer, texts, max_new_tokens, batch_size=max(1, len(texts)),
                                use_cache=True)
    return [tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]


def completion_logprob(model: Any, tokenizer: Any, prompt: list[dict], answer: str) -> float:
    """Summed log-probability of the assistant turn ``answer`` after ``prompt`` (as SFT trains it)."""
    import torch

    prompt_text = chat_text(tokenizer, prompt, True)
    full_text = chat_text(tokenizer, prompt + [{"role": "assistant", "content": answer}], False)
    if not full_text.startswith(prompt_text):
        raise InferenceError("chat template does not extend the prompt with the answer; cannot score it")
    p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids], device=device_of(model))
    with torch.no_grad():
        logits = model(input_ids=x).logits.float()
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = x[0, 1:]
    token_lp = logp.gather(1, targets[:, None])[:, 0]
    return float(token_lp[len(p_ids) - 1:].sum())


def answer_logprobs(model: Any, tokenizer: Any, texts: Sequence[str], answers: Sequence[Sequence[int]],
                    batch_size: int = 8) -> list[Any]:
    """Per answer position, the model's full next-token log-distribution (teacher forcing)."""
    import torch

    pad = tokenizer.pad_token_id
    res = []
    for s in range(0, len(texts), batch_size):
        seqs, lens = [], []
        for t, a in zip(texts[s:s + batch_size], answers[s:s + batch_size], strict=True):
            seqs.append(tokenizer(t, add_special_tokens=False).input_ids + list(a))
            lens.append(len(a))
        ids, mask = pad_left(seqs, pad)
        m = max(lens)
        logp = torch.log_softmax(forward_last(model, ids, mask, m + 1), dim=-1)
        for r, n in enumerate(lens):
            res.append(logp[r, m - n: m].clone())  # position j predicts answer token j
    return res

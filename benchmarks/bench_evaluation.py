"""Benchmark of the evaluation scorer on the bundled model (CPU): items/s of

* ``batched``: one forward pass per batch of prompts, all option letters read from the
  next-token distribution at the last position (``valuealign.inference.score_labels``);
* ``per_option``: the naive loop, one forward pass per (prompt, option), scoring prompt+letter;
* ``generate``: generate-then-parse, the distribution estimated from ``N_SAMPLES`` sampled
  answers per prompt (the only way generation gives a distribution), letters parsed from text.

Same items and prompts for all three (one paraphrase, identity order). Also: how time grows
with the number of options (items with exactly K options) and of items. Writes
``benchmarks/results/evaluation.json``. Run: ``.venv/bin/python benchmarks/bench_evaluation.py``.
"""

from __future__ import annotations

import platform
import re
import time

import numpy as np
import pandas as pd
import torch

from valuealign import inference, metrics, models, paths, prompts, provenance

N_SAMPLES = 8
REPEATS = 2
BATCH = 8
torch.manual_seed(0)


def prompts_for(items: pd.DataFrame, tok) -> tuple[list[str], list[list[str]]]:
    texts, labels = [], []
    for r in items.itertuples():
        k = len(r.options)
        texts.append(inference.chat_text(tok, prompts.render_messages(r.question, list(r.options), list(range(k)), 0)))
        labels.append(list(prompts.LETTERS[:k]))
    return texts, labels


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def generate_parse(model, tok, texts, labels):
    dists, parsed = [], 0
    for s in range(0, len(texts), BATCH):
        enc = tok(texts[s:s + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=3, do_sample=True, temperature=1.0, top_k=0,
                                 num_return_sequences=N_SAMPLES, pad_token_id=tok.pad_token_id)
        outs = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, labs in enumerate(labels[s:s + BATCH]):
            counts = np.zeros(len(labs))
            for o in outs[j * N_SAMPLES:(j + 1) * N_SAMPLES]:
                m = re.match(r"\s*([A-Z])\b", o)
                if m and m.group(1) in labs:
                    counts[labs.index(m.group(1))] += 1
                    parsed += 1
            dists.append(counts / counts.sum() if counts.sum() else np.full(len(labs), np.nan))
    return dists, parsed / (len(texts) * N_SAMPLES)


def main() -> None:
    torch.set_num_threads(2)
    tok = models.load_tokenizer("smollm2-135m")
    model = models.load_causal_lm("smollm2-135m")
    items = pd.read_parquet(paths.ITEMS).sort_values("item_id")
    items["k"] = items["options"].map(len)
    k_items = {k: items[items["k"] == k].head(16) for k in (2, 4, 8)}
    result: dict = {"model": "smollm2-135m (float32)", "device": "cpu", "threads": torch.get_num_threads(),
                    "batch_size": BATCH, "repeats_best_of": REPEATS, "machine": platform.platform(), "generate_samples_per_prompt": N_SAMPLES,
                    "load_average_before": list(__import__("os").getloadavg()),
                    "note": "2 shared CPU cores; other jobs ran at the same time, so absolute numbers are noisy; "
                            "ratios were measured back to back on the same items"}

    # warm-up (first-call overheads are not part of any method)
    t0, l0 = prompts_for(k_items[4].head(2), tok)
    inference.score_labels(model, tok, t0, l0, BATCH)

    # headline: 8 items with 4 options
    texts, labels = prompts_for(k_items[4].head(8), tok)
    # each method twice, interleaved, best time kept: the machine is shared, and min-of-runs is
    # the least contention-sensitive estimate
    t_fast = t_slow = t_gen = float("inf")
    for _ in range(REPEATS):
        fast, t = timed(lambda: inference.score_labels(model, tok, texts, labels, BATCH))
        t_fast = min(t_fast, t)
        slow, t = timed(lambda: inference.score_labels_per_option(model, tok, texts, labels))
        t_slow = min(t_slow, t)
        (gen, parse_rate), t = timed(lambda: generate_parse(model, tok, texts, labels))
        t_gen = min(t_gen, t)
    diff = max(float(np.abs(a.probs - b.probs).max()) for a, b in zip(fast, slow, strict=True))
    js_gen = [metrics.js_distance(g, f.probs) for g, f in zip(gen, fast, strict=True) if np.isfinite(g).all()]
    n = len(texts)
    result["headline"] = {
        "items": n, "options_per_item": 4,
        "items_per_s": {"batched": n / t_fast, "per_option": n / t_slow, "generate": n / t_gen},
        "seconds": {"batched": t_fast, "per_option": t_slow, "generate": t_gen},
        "speedup_vs_per_option": t_slow / t_fast, "speedup_vs_generate": t_gen / t_fast,
        "max_abs_prob_diff_batched_vs_per_option": diff,
        "generate_parse_rate": parse_rate,
        "generate_mean_js_distance_to_exact": float(np.mean(js_gen)) if js_gen else None,
    }
    print(result["headline"])

    # growth with the number of options (2 items each, exactly K options)
    rows = []
    for k, df in k_items.items():
        if len(df) < 2:
            continue
        tx, lb = prompts_for(df.head(2), tok)
        _, tf = timed(lambda tx=tx, lb=lb: inference.score_labels(model, tok, tx, lb, BATCH))
        _, ts = timed(lambda tx=tx, lb=lb: inference.score_labels_per_option(model, tok, tx, lb))
        rows.append({"options": k, "items": 2, "batched_s": tf, "per_option_s": ts, "speedup": ts / tf})
        print(rows[-1])
    result["by_options"] = rows

    # growth with the number of items (4 options); the 8-item per-option point is the headline's
    rows = []
    for n_items in (2, 4, 8, 16):
        tx, lb = prompts_for(k_items[4].head(n_items), tok)
        _, tf = timed(lambda tx=tx, lb=lb: inference.score_labels(model, tok, tx, lb, BATCH))
        if n_items <= 4:
            _, ts = timed(lambda tx=tx, lb=lb: inference.score_labels_per_option(model, tok, tx, lb))
        else:
            ts = t_slow if n_items == 8 else None
        rows.append({"items": n_items, "options": 4, "batched_s": tf, "per_option_s": ts,
                     "batched_items_per_s": n_items / tf, "per_option_items_per_s": n_items / ts if ts else None})
        print(rows[-1])
    result["by_items"] = rows
    result["load_average_after"] = list(__import__("os").getloadavg())
    target = paths.BENCHMARK_RESULTS / "evaluation.json"
    provenance.write_json(result, target)
    print(f"wrote {paths.relative(target)}")


if __name__ == "__main__":
    main()

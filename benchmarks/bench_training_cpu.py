"""CPU benchmark of one LoRA training step per method on the bundled SmolLM2-135M-Instruct.

Seconds per optimizer step and peak RSS for SFT, DPO and KTO at batch 4 and sequence length
~256 tokens (prompt + answer, chat template included), through the same code path as notebook 03
(``valuealign.training.train``). Each method runs in its own process so its peak RSS is its own.
Writes ``benchmarks/results/training_cpu.json``.

    .venv/bin/python benchmarks/bench_training_cpu.py [--steps 3] [--methods sft dpo kto dist]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCH = 4
LENGTH = 256


def _filler_for_length(tokenizer, target: int) -> tuple[int, int]:
    """Filler words that bring one DPO/SFT row (prompt + answer) to ``target`` tokens."""
    from valuealign import training

    for words in range(0, 1000, 4):
        row = training.synthetic_alignment_data("sft", n_items=1, filler_words=words)["train"][0]
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n >= target:
            return words, n
    raise RuntimeError("could not reach the target length")


def one_method(method: str, steps: int) -> dict:
    import torch
    from transformers import TrainerCallback

    from valuealign import models, training

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tok = models.load_tokenizer("smollm2-135m")
    words, n_tokens = _filler_for_length(tok, LENGTH)
    data = training.synthetic_alignment_data(method, n_items=24, filler_words=words)
    times: list[float] = []

    class Timer(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    p = training.TrainParams(model_profile="smollm2-135m", method=method, value_set="bench",
                             quantization="none", lora_r=16, lora_alpha=16, learning_rate=1e-4,
                             max_steps=steps, train_batch_size=BATCH, max_length=LENGTH + 8,
                             beta=0.1 if method in ("dpo", "kto") else 0.0, save_steps=10_000)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = training.train(p, data, runs_root=Path(tmp), callbacks=[Timer()], progress=False)
        total = time.perf_counter() - t0
    timed = times[1:] or times  # the first step pays one-off costs (allocations, kernels)
    return {
        "method": method, "batch": BATCH, "tokens_per_sequence": n_tokens,
        "sequences_per_row": {"sft": 1, "dpo": 2, "kto": 2, "dist": 1}[method],
        "steps": res.global_step, "step_seconds": [round(t, 2) for t in times],
        "seconds_per_step": round(statistics.median(timed), 2),
        "first_step_seconds": round(times[0], 2),
        "run_total_seconds": round(total, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["sft", "dpo", "kto"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_method(args.child, args.steps)))
        return 0
    from valuealign import paths, provenance

    rows = []
    for method in args.methods:
        out = subprocess.run([sys.executable, __file__, "--child", method, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{method}: {rows[-1]['seconds_per_step']} s/step, peak RSS {rows[-1]['peak_rss_gb']} GB")
    result = {
        "benchmark": "LoRA training step, bundled SmolLM2-135M-Instruct, CPU, float32",
        "model": "smollm2-135m", "lora": {"r": 16, "alpha": 16, "target": "all-linear"},
        "batch": BATCH, "sequence_length": LENGTH, "methods": rows,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "packages": provenance.package_versions(("torch", "transformers", "trl", "peft")),
        "note": "DPO and KTO score two sequences per row (chosen+rejected; completion+KL pair) and "
                "run a reference forward with the adapter off. The build machine is shared: "
                "timings are noisy (see load average).",
        "made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target = paths.BENCHMARK_RESULTS / "training_cpu.json"
    provenance.write_json(result, target)
    print(f"-> {paths.relative(target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

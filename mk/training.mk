# Training targets: the QLoRA GPU benchmark (random-weight Llama 7B/13B shapes, nothing downloaded).
# Run on a CUDA machine; on CPU the script stops with a clear error. `make bench` runs the CPU
# benchmarks (benchmarks/bench_*.py, including bench_training_cpu.py).

.PHONY: bench-gpu bench-gpu-quick

bench-gpu: $(STAMPS)/venv ## QLoRA peak memory + tokens/s, 7B and 13B, batch 1/4/8, SFT+DPO at 2048 (CUDA) -> benchmarks/results/gpu_qlora.json
	$(PY) benchmarks/gpu_qlora.py

bench-gpu-quick: $(STAMPS)/venv ## the same for 7B, batch 1 and 4 only (< 4 min on an H100)
	$(PY) benchmarks/gpu_qlora.py --quick

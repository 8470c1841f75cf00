"""The GPU section: the training figures on CUDA with bf16, MFU against the card's peak.

Skipped on a machine without CUDA (reported as "skipped: no CUDA device"). On a GPU it
runs the training comparison of bench_training (aicd packing + length grouping vs HF
Trainer dynamic padding, same model and data) under bf16 autocast, timed by wall clock
with CUDA synchronised (CPU time says nothing about GPU work), and reports MFU (4N per
real token, LoRA) against the card's dense bf16 peak from the table below, and against
the bf16 matmul FLOP/s measured in the same run.
"""

import logging
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Figure, Goal, alternate, not_run, rate_figure

log = logging.getLogger(__name__)

NAME = "gpu"
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0, "L40S": 362.0,
                    "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def declared() -> list[Figure]:
    return [Figure(NAME, "real tokens/s on CUDA bf16, packing + grouping vs HF Trainer", "tok/s",
                   Goal(">=", 2.0, text=">= 2x")),
            Figure(NAME, "MFU (4N/token, LoRA) vs the card's bf16 peak", "FLOP/s", Goal(">=", 0.5, text=">= 50%")),
            Figure(NAME, "MFU (4N/token, LoRA) vs measured bf16 matmul FLOP/s", "FLOP/s")]


def card_peak(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return PEAK_BF16_TFLOPS[key] * 1e12
    return None


def run(repeats: int) -> list[Figure]:
    import torch

    if not torch.cuda.is_available():
        return not_run(declared(), "no CUDA device on this machine", status="skipped")
    from benchmarks import bench_training as bt
    from benchmarks.models import matmul_flops, non_embedding_params

    def wall_synced() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    speed_decl, card_decl, matmul_decl = declared()
    device = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="aicd-bench-gpu-") as tmp:
        base, tokenizer, examples = bt.setup(Path(tmp), "mid", device="cuda")
        real_tokens = sum(ex.length for ex in examples[: len(examples) // bt.BATCH * bt.BATCH])
        trial = alternate(lambda m: bt.hf_trainer_epoch(m, tokenizer, examples, Path(tmp), bf16=True),
                          lambda m: bt.aicd_epoch(m, tokenizer, examples, device="cuda", bf16=True),
                          repeats=repeats, clock=wall_synced, prepare_baseline=lambda: bt.lora(base),
                          prepare_treatment=lambda: bt.lora(base))
        speed = rate_figure(NAME, speed_decl.name, "tok/s", trial, real_tokens, speed_decl.goal,
                            baseline_label="HF Trainer", treatment_label="aicd")
        speed.note = f"{device}; wall clock with CUDA synchronised (the CPU-time columns hold wall time here)"
        flops = 4 * non_embedding_params(base) * speed.treatment
        peak = card_peak(device)
        measured = matmul_flops(4096, seconds=2.0, dtype=torch.bfloat16, device="cuda")
    card = Figure(NAME, card_decl.name, "FLOP/s", card_decl.goal, baseline=peak, treatment=flops,
                  baseline_label="card peak", treatment_label="model")
    if peak is None:
        card.status, card.note = "not run", f"no bf16 peak known for {device!r}; add it to PEAK_BF16_TFLOPS"
    matmul = Figure(NAME, matmul_decl.name, "FLOP/s", None, baseline=measured, treatment=flops,
                    baseline_label="bf16 matmul 4096", treatment_label="model")
    return [speed, card, matmul]

"""Models, data and machine peaks shared by the benchmarks.

The tokenizer comes from tests/tiny_models.py (a BPE trained on local text); the
models are random Llamas built from a config, large enough that compute dominates
Python overhead on a CPU yet small enough that ``make bench`` stays within minutes.
"""

import logging
import random
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("what is the best way to reset my password and keep the account safe when i travel abroad "
         "this drug worked wonders with no side effects but the pills were expensive and hard to swallow "
         "artificial intelligence studies machines that learn from data and make decisions").split()

# (hidden, intermediate, layers, heads, kv heads): "mid" for training/serving, "small" for quick work.
SIZES = {"mid": (512, 1376, 4, 8, 4), "small": (256, 688, 2, 4, 2)}


def train_tokenizer():
    """The BPE tokenizer of the tiny test models (one implementation, reused)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from tiny_models import train_tokenizer as train

    return train()


def make_llama(path: Path, size: str = "mid", seed: int = 0, max_positions: int = 1024,
               vocab_size: int | None = None) -> Path:
    """A random Llama of the given size with the test tokenizer, saved as safetensors.

    ``vocab_size`` above the tokenizer's gives the LM head a real model's width (the
    extra rows are never produced by the tokenizer, but cost what they cost).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv = SIZES[size]
    tokenizer = train_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=max(vocab_size or 0, len(tokenizer)), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                         max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    from aicd.components.provenance import write_base_card

    (Path(path) / "card.json").unlink(missing_ok=True)  # a rebuilt folder is recorded afresh
    write_base_card(path, name=f"bench-llama-{size}")  # models load only when a card or a pin vouches for them
    return path


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def instruction_rows(n: int, seed: int = 0, min_words: int = 4, max_words: int = 120) -> list[dict]:
    """Instruction/response rows with widely varying lengths (long-tailed, as real chat data)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        total = min(max_words, max(min_words, int(rng.lognormvariate(3.2, 0.8))))
        split = max(1, total // 3)
        rows.append({"id": f"r{i}", "instruction": sentence(rng, split), "response": sentence(rng, total - split),
                     "source": "bench"})
    return rows


def non_embedding_params(model) -> int:
    """N of the 4N/6N FLOPs-per-token rule: parameters outside the embedding tables."""
    total = 0
    for name, param in model.named_parameters():
        if "embed_tokens" in name:
            continue
        total += param.numel()
    return total


def matmul_flops(size: int = 512, seconds: float = 1.5, dtype=None, device: str = "cpu") -> float:
    """FLOP/s of square matmuls on this device, measured now (CPU time on CPU, one thread)."""
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
        clock = time.perf_counter
    else:
        clock = time.process_time
    n, start = 0, clock()
    while clock() - start < seconds:
        for _ in range(8):
            a @ b
        n += 8
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * size**3 * n / (clock() - start)

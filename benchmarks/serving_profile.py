"""Where the predictor's CPU goes: its engine and decoding loop called directly, no HTTP.

For the same prompts over the served adapters (one thread): one request at a time against
batches of ``batch`` rows of mixed adapters, each split into prefill (the same requests with
``max_tokens`` 0: tokenised prompts through the model once) and decoding (the rest); the CPU
of one decoding step of one row and of ``batch`` rows; the LM head's matrix product alone at
1 and ``batch`` rows against the machine's square fp32 matmul rate; and the top functions
of a cProfile of one batched run. ``python -m benchmarks.serving_profile`` prints it as JSON
for the bench's own mid Llama with a 32,000-token head.
"""

import cProfile
import io
import json
import pstats
import time
from pathlib import Path
from typing import Any


def _cpu(fn, repeats: int = 3) -> float:
    """Median process CPU seconds of ``fn()``."""
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        runs.append(time.process_time() - start)
    return sorted(runs)[len(runs) // 2]


def _head_gflops(engine: Any, rows: int) -> tuple[float, float]:
    """(ms, GFLOP/s) of the LM head's product for ``rows`` hidden states."""
    import torch

    from aicd.components.serving.decoding import output_head

    core = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    head, hidden = output_head(core), torch.randn(rows, core.config.hidden_size)
    weight = core.get_output_embeddings().weight
    with torch.inference_mode():
        seconds = _cpu(lambda: [head(hidden) for _ in range(20)]) / 20
    return seconds * 1000, 2 * rows * weight.numel() / seconds / 1e9


def profile_engine(engine: Any, prompts: list[list[int]], adapters: list[str | None], max_tokens: int,
                   batch: int, repeats: int = 3) -> dict[str, Any]:
    """The CPU split of ``prompts`` (token ids; prompt i to ``adapters[i % len]``) served one at a time and in
    mixed-adapter batches of ``batch``; answers of both must be equal (``same_answers``)."""
    import torch

    from aicd.components.serving.decoding import GenItem
    from benchmarks.models import matmul_flops

    torch.set_num_threads(1)
    tags = [adapters[i % len(adapters)] for i in range(len(prompts))]

    def one(tokens: int):
        return [engine.generate(tags[i], [GenItem(p, tokens)])[0] for i, p in enumerate(prompts)]

    def batched(tokens: int):
        items = [GenItem(p, tokens) for p in prompts]
        return [r for i in range(0, len(items), batch) for r in engine.generate_mixed(tags[i:i + batch],
                                                                                       items[i:i + batch])]

    same = [r.text for r in one(max_tokens)] == [r.text for r in batched(max_tokens)]
    out: dict[str, Any] = {"requests": len(prompts), "max_tokens": max_tokens, "batch": batch, "same_answers": same}
    for name, fn in (("one_at_a_time", one), ("batched", batched)):
        total = _cpu(lambda fn=fn: fn(max_tokens), repeats)
        prefill = _cpu(lambda fn=fn: fn(0), repeats)
        steps = len(prompts) * max_tokens if name == "one_at_a_time" else -(-len(prompts) // batch) * max_tokens
        out[name] = {"cpu_s": total, "prefill_cpu_s": prefill, "decode_cpu_s": total - prefill,
                     "decode_step_ms": 1000 * (total - prefill) / steps}
    for rows in (1, batch):
        ms, gflops = _head_gflops(engine, rows)
        out[f"head_{rows}_rows"] = {"ms": ms, "gflop_per_s": gflops}
    out["square_matmul_gflop_per_s"] = matmul_flops(512, seconds=0.5) / 1e9
    profiler = cProfile.Profile()
    profiler.enable()
    batched(max_tokens)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
    out["cprofile_top"] = text.getvalue().strip().splitlines()[-13:]
    return out


def ceiling(profile: dict[str, Any]) -> dict[str, float]:
    """Requests/s ratios the split allows: as measured, and with batched decoding steps at the square
    matmul rate (the FLOPs of a batched step are those of ``batch`` single-row steps)."""
    one, batched = profile["one_at_a_time"], profile["batched"]
    flops_per_row_step = 2 * profile.get("params_per_token", 0)
    at_peak = (flops_per_row_step * profile["requests"] * profile["max_tokens"]
               / (profile["square_matmul_gflop_per_s"] * 1e9)) if flops_per_row_step else None
    out = {"measured": one["cpu_s"] / batched["cpu_s"],
           "decode_free": one["cpu_s"] / batched["prefill_cpu_s"]}
    if at_peak:
        out["decode_at_square_matmul_rate"] = one["cpu_s"] / (batched["prefill_cpu_s"] + at_peak)
    return out


def load_engine(base: Path, adapters: dict[str, Path]) -> Any:
    """The predictor's engine with the base and every adapter attached (verified), as the server loads them."""
    from aicd.components.serving.config import ServeConfig
    from aicd.components.serving.engine import Engine

    engine = Engine(ServeConfig(base=str(base), adapters={k: str(v) for k, v in adapters.items()}))
    engine.load_base()
    for name, path in adapters.items():
        engine.attach(engine.verify(name, str(path)))
    return engine


def main() -> None:
    import tempfile

    from benchmarks.bench_serving import ADAPTERS, BATCH, MAX_TOKENS, REQUESTS, VOCAB, make_adapters, prompts
    from benchmarks.models import make_llama

    with tempfile.TemporaryDirectory(prefix="aicd-serving-profile-") as tmp:
        base = make_llama(Path(tmp) / "base", "mid", vocab_size=VOCAB)
        engine = load_engine(base, make_adapters(base, Path(tmp)))
        ids = [engine.tokenizer(p)["input_ids"] for p in prompts(REQUESTS, seed=7)]
        profile = profile_engine(engine, ids, [f"a{i}" for i in range(ADAPTERS)], MAX_TOKENS, BATCH)
        profile["params_per_token"] = params_per_token(engine)
        profile["ceiling"] = ceiling(profile)
    print(json.dumps(profile, indent=2))


def params_per_token(engine: Any) -> int:
    """Weights one token multiplies through: every parameter but the input embedding (LoRA included)."""
    core = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    embed = core.get_input_embeddings().weight.numel()
    lora = sum(p.numel() for n, p in engine.model.named_parameters() if "lora_" in n) // max(1, len(engine.adapters))
    return sum(p.numel() for n, p in core.named_parameters() if "lora_" not in n) - embed + lora


def engine_figure(base: Path, adapters: dict[str, Path], fig: Any, texts: list[str]) -> Any:
    """The engine's CPU split (serving_profile.py): why batching gains what it gains on this CPU."""
    from benchmarks.bench_serving import ADAPTERS, BATCH, MAX_TOKENS

    engine = load_engine(base, adapters)
    ids = [engine.tokenizer(p)["input_ids"] for p in texts]
    profile = profile_engine(engine, ids, [f"a{i}" for i in range(ADAPTERS)], MAX_TOKENS, BATCH)
    profile["params_per_token"] = params_per_token(engine)
    profile["ceiling"] = bound = ceiling(profile)
    one, batched = profile["one_at_a_time"], profile["batched"]
    fig.baseline, fig.treatment = one["cpu_s"], batched["cpu_s"]
    fig.baseline_label, fig.treatment_label = "one-at-a-time", f"mixed batches of {BATCH}"
    fig.details = profile
    fig.note = (f"prefill {one['prefill_cpu_s']:.2f} vs {batched['prefill_cpu_s']:.2f} s, decoding "
                f"{one['decode_cpu_s']:.2f} vs {batched['decode_cpu_s']:.2f} s; a decoding step of 1 row "
                f"{one['decode_step_ms']:.1f} ms, of {BATCH} rows {batched['decode_step_ms']:.1f} ms; LM head "
                f"{profile['head_8_rows']['gflop_per_s']:.0f} GFLOP/s at {BATCH} rows vs square matmul "
                f"{profile['square_matmul_gflop_per_s']:.0f}; ceiling of the req/s ratio: "
                f"{bound.get('decode_at_square_matmul_rate', 0):.1f}x with batched decoding at the square matmul rate, "
                f"{bound['decode_free']:.1f}x with free decoding")
    if not profile["same_answers"]:
        fig.status, fig.note = "invalid", "correctness check failed: batched and one-at-a-time answers differ"
    return fig


if __name__ == "__main__":
    main()

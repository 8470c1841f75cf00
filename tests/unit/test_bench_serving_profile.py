"""benchmarks/serving_profile.py on the tiny model: the engine's CPU split and the ceiling it implies."""

import pytest
from helpers.adapters import make_lora_adapter

from benchmarks.serving_profile import ceiling, load_engine, params_per_token, profile_engine


def test_the_split_adds_up_and_both_sides_answer_alike(tiny_causal_lm, tmp_path):
    adapters = {name: make_lora_adapter(tiny_causal_lm, tmp_path / name, seed=seed)
                for name, seed in (("a1", 1), ("a2", 2))}
    engine = load_engine(tiny_causal_lm, adapters)
    ids = [engine.tokenizer(p)["input_ids"] for p in ("What is AI?", "Tell me a joke.", "How are you?")]
    profile = profile_engine(engine, ids, ["a1", "a2"], max_tokens=4, batch=2, repeats=1)
    assert profile["same_answers"] is True
    for side in ("one_at_a_time", "batched"):
        split = profile[side]
        assert 0 < split["prefill_cpu_s"] < split["cpu_s"]
        assert split["decode_cpu_s"] == pytest.approx(split["cpu_s"] - split["prefill_cpu_s"])
    assert profile["one_at_a_time"]["decode_step_ms"] == pytest.approx(
        1000 * profile["one_at_a_time"]["decode_cpu_s"] / 12)  # 3 requests x 4 steps
    assert profile["head_2_rows"]["gflop_per_s"] > 0 and profile["square_matmul_gflop_per_s"] > 0
    core = engine.model.get_base_model()
    assert params_per_token(engine) < sum(p.numel() for p in core.parameters())


def test_the_ceiling_arithmetic():
    profile = {"requests": 4, "max_tokens": 10, "square_matmul_gflop_per_s": 1.0, "params_per_token": 5e6,
               "one_at_a_time": {"cpu_s": 2.0}, "batched": {"cpu_s": 1.0, "prefill_cpu_s": 0.2}}
    bound = ceiling(profile)
    # decoding at the square rate: 2 * 5e6 FLOPs x 40 row-steps / 1e9 FLOP/s = 0.4 s, plus 0.2 s prefill
    assert bound == {"measured": 2.0, "decode_free": 10.0, "decode_at_square_matmul_rate": pytest.approx(2 / 0.6)}

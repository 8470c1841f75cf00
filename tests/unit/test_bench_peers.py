"""The peer comparisons of the performance suite on a tiny model, so the benchmark code cannot rot.

Real TRL ``SFTTrainer``, real HF ``Trainer``, real lm-eval ``HFLM`` and aicd's own loop and
scoring on the tiny random Llama of tests/tiny_models.py. Timings are never asserted: what is
checked is that every side does the same work and that each peer's correctness check passes
on honest results and fails on tampered ones. Also: the multi-side rotation, the power-law
fit and the growth plots of benchmarks/scale.py.
"""

import copy

import pytest
from tiny_models import make_causal_lm

from benchmarks import bench_training, harness, peers, scale


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from aicd.components.models import load_causal_lm
    from aicd.components.spec import TaskSpec
    from aicd.components.training.examples import encode_rows
    from benchmarks.models import instruction_rows

    base, tokenizer, _ = load_causal_lm(str(make_causal_lm(tmp_path_factory.mktemp("tiny") / "model")))
    rows = instruction_rows(2 * bench_training.BATCH, seed=1, max_words=30)
    examples = encode_rows(rows, tokenizer, TaskSpec(type="causal-lm", max_length=128), "train").examples
    return base, tokenizer, examples


def test_rotate_runs_every_side_in_turn_and_pairs_two():
    calls, now = [], [0.0]

    def clock():
        return now[0]

    def side(name, cost):
        def run(state):
            calls.append(name)
            now[0] += cost
            return state
        return run, lambda: name

    samples = harness.rotate({"a": side("a", 3), "b": side("b", 1), "c": side("c", 2)}, repeats=3, clock=clock)
    assert calls == ["a", "b", "c"] * 4  # warm-up round, then three timed rounds
    trial = harness.pair(samples, "a", "b")
    assert [s.cpu for s in trial.baseline] == [3, 3, 3] and [s.cpu for s in trial.treatment] == [1, 1, 1]
    assert trial.baseline_result == "a" and trial.treatment_result == "b"
    with pytest.raises(ValueError, match="at least 3"):
        harness.rotate({"a": side("a", 1)}, repeats=2)


@pytest.mark.slow
def test_training_peers_do_the_same_work_and_their_checks_hold(tiny, tmp_path):
    base, tokenizer, examples = tiny
    real_tokens = sum(ex.length for ex in examples)
    sides = bench_training.sides(base, tokenizer, examples, tmp_path)
    assert list(sides) == ["hf", "trl-bfd", "trl-padding_free", "aicd"]
    results = {name: run(prepare()) for name, (run, prepare) in sides.items()}
    checks = bench_training.checks(base, tokenizer, examples, real_tokens)
    ours = results["aicd"]
    assert ours["steps"] == 2 and ours["tokens"] == real_tokens
    for peer in ("hf", "trl-bfd", "trl-padding_free"):
        checks[peer](results[peer], ours)  # raises AssertionError if the peer's figure would be invalid
    assert results["trl-bfd"]["tokens"] == real_tokens  # TRL packed every real token, none dropped

    tampered = copy.copy(results["trl-padding_free"])
    tampered["losses"] = [x * 1.01 for x in tampered["losses"]]
    with pytest.raises(AssertionError, match="per-step losses differ"):
        checks["trl-padding_free"](tampered, ours)
    short = {**results["trl-bfd"], "steps": 1}
    with pytest.raises(AssertionError, match="optimizer steps 1"):
        checks["trl-bfd"](short, ours)


@pytest.mark.slow
def test_lm_eval_scores_the_same_tokens_as_aicd(tiny):
    from aicd.components.evaluation.inference import build_sequences, score_causal_lm
    from benchmarks.bench_evaluation import same_nll_as_peer
    from benchmarks.models import instruction_rows

    model, tokenizer, _ = tiny
    rows = instruction_rows(6, seed=4, max_words=20)
    prompts, responses = [r["instruction"] for r in rows], [r["response"] for r in rows]
    ours = score_causal_lm(model, tokenizer, prompts, responses, max_length=128, batch_size=8)
    theirs = peers.lm_eval_nll(peers.lm_eval_model(model, tokenizer, batch_size=4),
                               build_sequences(tokenizer, prompts, responses, 128))
    same_nll_as_peer(theirs, ours)
    with pytest.raises(AssertionError, match="NLL differs from lm-eval's"):
        same_nll_as_peer(([x + 1e-3 for x in theirs[0]], theirs[1]), ours)


def test_power_law_fit_recovers_the_exponent_and_flags_superlinear_growth(tmp_path):
    a, b = scale.power_law([10, 20, 40, 80], [3 * n**1.5 for n in [10, 20, 40, 80]])
    assert a == pytest.approx(3.0) and b == pytest.approx(1.5)
    linear = scale.Sweep("ingest-rows", "rows", [10, 100, 1000, 10000], cpu_s=[0.01, 0.1, 1.0, 10.0],
                         peak_mb=[50, 50, 50, 50])
    quadratic = scale.Sweep("training-seq-length", "tokens", [64, 128, 256, 512], cpu_s=[1, 4, 16, 64],
                            peak_mb=[10, 20, 40, 80])
    text = scale.table([linear, quadratic])
    assert "| ingest-rows |" in text and "| 1.00; 1.00 |" in text and "linear or better" in text
    assert "| 2.00; 2.00 |" in text and "FASTER THAN LINEAR in work" in text
    # linear, then attention's quadratic part shows at the largest size: the fit (1.10) alone would hide it
    late = scale.Sweep("training-seq-length", "tokens", [64, 128, 256, 512], cpu_s=[1, 2, 4, 10], peak_mb=[1] * 4)
    assert "FASTER THAN LINEAR at the largest sizes" in scale.table([late])
    png = scale.plot(quadratic, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_partial_sweep_run_keeps_the_other_sweeps_of_the_previous_results(tmp_path):
    ingest = scale.Sweep("ingest-rows", "rows", [10, 100, 1000, 10000], [0.01, 0.1, 1.0, 10.0], [5, 5, 5, 5])
    scale.write([ingest], tmp_path, elapsed=1.0)
    training = scale.Sweep("training-examples", "examples", [8, 16, 32, 64], [1, 2, 4, 8], [10, 10, 10, 10])
    scale.write([training], tmp_path, elapsed=1.0)
    kept = scale.merged([], tmp_path)
    assert [s.name for s in kept] == ["ingest-rows", "training-examples"]
    text = (tmp_path / "scale.md").read_text()
    assert "| ingest-rows |" in text and "| training-examples |" in text
    assert (tmp_path / "scale-ingest-rows.png").exists() and (tmp_path / "scale-training-examples.png").exists()

"""evaluate_model on tiny models: the report contract, batching, the probe, bad inputs."""

import json
import shutil

import numpy as np
import pytest
from helpers.artifacts import make_adapter
from helpers.data import TOPIC_QA as QA
from helpers.data import causal_dataset, classification_dataset
from helpers.specs import small_spec

from aicd.components.cards import write_card
from aicd.components.data.format import write_dataset
from aicd.components.errors import EvaluationError, ModelError
from aicd.components.evaluation import metrics as M
from aicd.components.evaluation.evaluate import evaluate_model


@pytest.fixture
def causal_setup(tmp_path, tiny_causal_lm, support_bot_spec):
    return small_spec(support_bot_spec, tiny_causal_lm), causal_dataset(tmp_path / "data")


@pytest.fixture
def cls_setup(tmp_path, tiny_encoder, review_sentiment_spec):
    return small_spec(review_sentiment_spec, tiny_encoder), classification_dataset(tmp_path / "data")


def test_causal_report_follows_the_contract(tmp_path, causal_setup):
    spec, data = causal_setup
    report = evaluate_model(spec, data, tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert on_disk == report and report["complete"] is True and report["n"] == 6
    assert {"token_f1", "exact_match", "rouge_l", "chrf", "bleu", "nll", "perplexity",
            "latency_p50_ms", "latency_p95_ms", "peak_memory_mb", "model_size_mb"} <= set(report["metrics"])
    ex = report["examples"]
    # The reported value is recomputed here from the stored predictions and references.
    f1 = [M.token_f1(p, r) for p, r in zip(ex["predictions"], [a for _, a, _ in QA])]
    assert report["metrics"]["token_f1"]["value"] == pytest.approx(np.mean(f1))
    m = report["metrics"]["perplexity"]
    assert m["low"] <= m["value"] <= m["high"] and m["value"] > 1.0
    assert set(report["slices"]) == {"topic=ai", "topic=sports", "topic=greetings", "topic=humor"}
    assert report["slices"]["topic=sports"]["n"] == 2
    assert report["behavioural"]["case-invariance"]["n"] == 6
    assert report["probe"] is None and report["model"]["digest"] is None
    assert report["decoding"] == {"do_sample": False, "max_new_tokens": 6}
    assert "<|assistant|>" in report["prompt_example"] and "{% for m in messages %}" in report["prompt_template"]
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    # Deterministic: the same evaluation gives the same predictions and intervals.
    again = evaluate_model(spec, data, tmp_path / "eval2")
    assert again["examples"] == report["examples"]
    assert again["metrics"]["token_f1"] == report["metrics"]["token_f1"]


def test_classification_report(tmp_path, cls_setup):
    spec, data = cls_setup
    report = evaluate_model(spec, data, tmp_path / "eval")
    assert {"accuracy", "macro_f1", "precision/negative", "recall/positive"} <= set(report["metrics"])
    cls = report["classification"]
    assert np.array(cls["confusion_matrix"]).sum() == 6
    ex = report["examples"]
    assert report["metrics"]["accuracy"]["value"] == pytest.approx(
        np.mean([p == r for p, r in zip(ex["predictions"], ex["references"])]))
    assert set(report["behavioural"]) == {"shouting-invariance", "obvious-cases", "no-collapse"}
    assert report["behavioural"]["obvious-cases"]["n"] == 2
    # the trivial baselines, scored on the same rows, with the paired difference to the model
    assert set(report["baselines"]) == {"majority", "stratified"}
    majority = report["baselines"]["majority"]
    assert majority["predicted"] == {"positive": 6} or len(majority["predicted"]) == 1
    versus = majority["vs_candidate"]["macro_f1"]
    assert versus["diff"] == pytest.approx(versus["candidate"] - versus["baseline"])
    assert versus["candidate"] == pytest.approx(report["metrics"]["macro_f1"]["value"])


def test_adapter_probe_passes_for_an_applied_adapter(tmp_path, causal_setup, tiny_causal_lm):
    spec, data = causal_setup
    adapter = make_adapter(tiny_causal_lm, tmp_path / "adapter")
    report = evaluate_model(spec, data, tmp_path / "eval", model=adapter)
    assert report["probe"]["passed"] and report["probe"]["changed"] == report["probe"]["total"] == 2
    assert report["model"]["digest"].startswith("sha256:") and report["system"]["adapter_size_mb"] > 0


def test_light_evaluation_has_the_same_metrics_without_the_gate_only_parts(tmp_path, causal_setup, tiny_causal_lm):
    """The light mode (choosing between trained methods) skips behavioural checks, probe and latency
    timing; every per-example score is the full evaluation's."""
    spec, data = causal_setup
    adapter = make_adapter(tiny_causal_lm, tmp_path / "adapter")
    full = evaluate_model(spec, data, tmp_path / "full", model=adapter)
    light = evaluate_model(spec, data, tmp_path / "light", model=adapter, light=True)
    assert (light["light"], full["light"]) == (True, False)
    assert light["behavioural"] == {} and full["behavioural"]["case-invariance"]["n"] > 0
    assert light["probe"] is None and full["probe"]["passed"]
    assert "latency_p50_ms" not in light["metrics"] and "latency_p50_ms" in full["metrics"]
    assert light["examples"] == full["examples"]
    for metric in ("token_f1", "rouge_l", "chrf", "nll"):
        assert light["metrics"][metric] == full["metrics"][metric]


def test_probe_catches_a_zero_initialised_lora(tmp_path, causal_setup, tiny_causal_lm):
    spec, data = causal_setup
    adapter = make_adapter(tiny_causal_lm, tmp_path / "adapter", applied=False)
    with pytest.raises(EvaluationError, match="the adapter is not applied: outputs with and without it are the "
                                              "same on 2 of 2 probe prompt"):
        evaluate_model(spec, data, tmp_path / "eval", model=adapter)
    assert not (tmp_path / "eval").exists()


def test_probe_catches_an_adapter_made_for_another_base(tmp_path, causal_setup, tiny_causal_lm):
    """Weights saved for other module paths (another architecture) load as a silent no-op in PEFT."""
    from safetensors.torch import load_file, save_file

    spec, data = causal_setup
    adapter = make_adapter(tiny_causal_lm, tmp_path / "adapter")
    weights = adapter / "adapter_model.safetensors"
    renamed = {k.replace("model.layers", "transformer.h"): v for k, v in load_file(weights).items()}
    save_file(renamed, weights)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["init_lora_weights"] = True  # as a trained adapter's config says (B starts at zero)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    write_card(adapter, "adapter", task="causal-lm", base_model=str(tiny_causal_lm), method="lora")
    with pytest.raises(EvaluationError, match="the adapter is not applied"):
        evaluate_model(spec, data, tmp_path / "eval", model=adapter)


def test_classifier_adapter_probe(tmp_path, cls_setup, tiny_encoder):
    spec, data = cls_setup
    labels = spec["task"]["labels"]
    adapter = make_adapter(tiny_encoder, tmp_path / "adapter", classification=True, labels=labels)
    report = evaluate_model(spec, data, tmp_path / "eval", model=adapter)
    assert report["probe"]["passed"] and report["probe"]["total"] == 4


@pytest.mark.parametrize("packed,system", [(True, "You are a friendly support assistant."), (True, None),
                                           (False, "Be brief.")])
def test_batched_scoring_and_generation_equal_one_at_a_time(tiny_causal_lm, packed, system, monkeypatch):
    from aicd.components.evaluation import inference
    from aicd.components.evaluation.inference import generate_greedy, score_causal_lm
    from aicd.components.models import format_prompt, load_causal_lm

    monkeypatch.setattr(inference, "PACK_TOKENS", 40)  # several packed rows, not one
    model, tok, _ = load_causal_lm(str(tiny_causal_lm))
    prompts = [format_prompt(tok, q, None, system) for q, _, _ in QA]
    answers = [a for _, a, _ in QA]
    prefix = inference.shared_prefix(inference.build_sequences(tok, prompts, answers, 256))
    assert prefix == (len(tok(format_prompt(tok, "", None, system))["input_ids"]) - 2 if system else 1)
    batched = score_causal_lm(model, tok, prompts, answers, batch_size=4, packed=packed)
    single = score_causal_lm(model, tok, prompts, answers, batch_size=1, scored_logits_only=False)
    assert batched[1] == single[1]
    assert np.allclose(batched[0], single[0], atol=1e-5)
    many = generate_greedy(model, tok, prompts, max_new_tokens=8, batch_size=4)
    one = generate_greedy(model, tok, prompts, max_new_tokens=8, batch_size=1)
    assert many.texts == one.texts and many.tokens == one.tokens
    # Scores react to the answer: scoring other answers gives other NLLs.
    assert score_causal_lm(model, tok, prompts, answers[::-1], batch_size=4)[0] != batched[0]


def test_empty_split_is_a_clear_error(tmp_path, causal_setup):
    spec, _ = causal_setup
    rows = [{"id": "a", "instruction": "hi", "response": "hello", "topic": "x", "source": "t"}]
    data = tmp_path / "empty-test"
    write_dataset(data, {"train": rows}, task="causal-lm")
    with pytest.raises(EvaluationError, match=r"split 'test' of .* has no rows: nothing to evaluate"):
        evaluate_model(spec, data, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_labels_outside_the_task_are_a_clear_error(tmp_path, cls_setup):
    spec, _ = cls_setup
    rows = [{"id": "a", "text": "fine", "label": "mixed", "source": "t"}]
    data = tmp_path / "odd"
    write_dataset(data, {"test": rows}, task="text-classification")
    with pytest.raises(EvaluationError, match=r"label\(s\) \['mixed'\] that are not in `task.labels`"):
        evaluate_model(spec, data, tmp_path / "eval")


def test_a_head_without_the_task_labels_is_a_clear_error(tmp_path, cls_setup, tiny_encoder):
    from aicd.components.models import load_classifier

    spec, data = cls_setup
    model, tok, _ = load_classifier(str(tiny_encoder), ["negative", "positive"])
    out = tmp_path / "two-class"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_card(out, "model", task="text-classification", labels=["negative", "positive"], base_model=None)
    with pytest.raises(EvaluationError, match=r"trained without label\(s\) \['neutral'\]"):
        evaluate_model(spec, data, tmp_path / "eval", model=out)
    write_card(out, "model", task="text-classification", base_model=None)  # no labels on the card
    with pytest.raises(ModelError, match=r"has labels \['negative', 'positive'\], the task has"):
        evaluate_model(spec, data, tmp_path / "eval", model=out)


def test_missing_slice_column_is_a_clear_error(tmp_path, causal_setup):
    spec, data = causal_setup
    spec["metrics"]["slices"] = ["region"]
    with pytest.raises(EvaluationError, match=r"has no column\(s\) \['region'\]"):
        evaluate_model(spec, data, tmp_path / "eval")


def test_artifact_of_another_candidate_is_refused(tmp_path, causal_setup, tiny_causal_lm):
    spec, data = causal_setup
    other = tmp_path / "other-base"
    shutil.copytree(tiny_causal_lm, other)
    spec["candidates"].append({"name": "other", "uri": str(other)})
    adapter = make_adapter(tiny_causal_lm, tmp_path / "adapter")
    with pytest.raises(EvaluationError, match="was trained on base .* not on the candidate's"):
        evaluate_model(spec, data, tmp_path / "eval", model=adapter, candidate="other")


def test_packed_scoring_feeds_tokens_shared_beyond_the_system_prompt_once(tiny_causal_lm):
    """A question asked twice (two reference answers, one the start of the other) and the system prompt:
    the prefix tree feeds what they share once, and every NLL still equals one-at-a-time scoring."""
    from aicd.components.evaluation import inference
    from aicd.components.evaluation.inference import build_sequences, pack_rows, score_causal_lm
    from aicd.components.models import format_prompt, load_causal_lm

    model, tok, _ = load_causal_lm(str(tiny_causal_lm))
    system = "You are a friendly support assistant."
    questions = ["How do I reset my password?", "How do I reset my password?", "Where is my order?",
                 "How do I reset my password?"]
    answers = ["Use the link on the login page.", "Use the link", "It ships tomorrow.", "Ask support."]
    prompts = [format_prompt(tok, q, None, system) for q in questions]
    seqs = build_sequences(tok, prompts, answers, 256)
    [row] = pack_rows(seqs, 8, inference.PACK_TOKENS)
    prompt = len(tok(prompts[0])["input_ids"])
    assert sum(shared for _, shared in row) >= 2 * prompt + inference.shared_prefix(seqs)
    packed = score_causal_lm(model, tok, prompts, answers, batch_size=8)
    single = score_causal_lm(model, tok, prompts, answers, batch_size=1, scored_logits_only=False)
    assert packed[1] == single[1]
    assert np.allclose(packed[0], single[0], rtol=1e-5, atol=0)

"""Leaderboard (candidates, TF-IDF baseline, selection under constraints) and the search."""

import json

import pytest
from helpers.artifacts import make_adapter
from helpers.data import causal_dataset, classification_dataset
from helpers.specs import small_spec

from aicd.components.cards import verify_card
from aicd.components.errors import EvaluationError, ModelError
from aicd.components.evaluation.evaluate import as_spec
from aicd.components.evaluation.leaderboard import (
    benchmark_candidates,
    evaluate_base,
    read_base_ref,
    select_candidate,
    write_chosen_model,
    write_leaderboard,
)
from aicd.components.evaluation.search import plan_trials, search_hyperparameters, trial_spec
from aicd.components.labeling.review import leaderboard_reports


def _entry(name, selectable=True, **metrics):
    return {"name": f"{name}/m", "candidate": name, "mode": "m", "selectable": selectable, "metrics": metrics,
            "intervals": {k: [v, v] for k, v in metrics.items()}}


@pytest.mark.parametrize("weights,constraints,chosen", [
    ({}, {}, "b"),                                                  # primary macro_f1 only
    ({}, {"latency_p95_ms": 100}, "a"),                             # b is too slow
    ({"macro_f1": 1.0, "latency_p95_ms": 0.01}, {}, "a"),           # 0.6-0.2 > 0.7-3.0
    ({}, {"accuracy": 0.65}, "a"),                                  # a lower bound for higher-is-better
])
def test_selection_weights_and_constraints(review_sentiment_spec, weights, constraints, chosen):
    review_sentiment_spec["metrics"].update(selection_weights=weights, constraints=constraints)
    review_sentiment_spec["candidates"] = [{"name": "a", "uri": "pkg://a"}, {"name": "b", "uri": "pkg://b"}]
    spec = as_spec(review_sentiment_spec)
    entries = [_entry("a", macro_f1=0.6, accuracy=0.7, latency_p95_ms=20.0),
               _entry("b", macro_f1=0.7, accuracy=0.6, latency_p95_ms=300.0),
               _entry("tfidf", selectable=False, macro_f1=0.9, accuracy=0.9, latency_p95_ms=1.0)]
    board = select_candidate(spec, entries)
    assert board["chosen"]["candidate"] == chosen
    assert board["entries"][0]["name"] == "tfidf/m" and board["baseline_beats_chosen"] is True


def test_no_eligible_candidate_is_a_clear_error(review_sentiment_spec):
    review_sentiment_spec["metrics"]["constraints"] = {"latency_p95_ms": 1}
    with pytest.raises(EvaluationError, match=r"no candidate meets .*a/m: latency_p95_ms 20 > 1"):
        select_candidate(as_spec(review_sentiment_spec), [_entry("a", macro_f1=0.5, latency_p95_ms=20.0)])


def test_classification_leaderboard_with_probe_and_baseline(tmp_path, tiny_encoder, review_sentiment_spec):
    spec = small_spec(review_sentiment_spec, tiny_encoder)
    board = benchmark_candidates(spec, classification_dataset(tmp_path / "data"), tmp_path / "bench")
    names = {e["name"] for e in board["entries"]}
    assert names == {"tiny/linear-probe", "tfidf-logreg/baseline"}
    # The baseline memorises this tiny train split (the validation rows are in it): it must be perfect.
    base = next(e for e in board["entries"] if e["mode"] == "baseline")
    assert base["metrics"]["accuracy"] == 1.0 and base["selectable"] is False
    assert board["chosen"]["name"] == "tiny/linear-probe"
    on_disk = json.loads((tmp_path / "bench" / "leaderboard" / "leaderboard.json").read_text())
    assert on_disk["chosen"] == board["chosen"]
    assert "data:image/png;base64," in (tmp_path / "bench" / "leaderboard" / "leaderboard.html").read_text()
    probe_card = json.loads((tmp_path / "bench" / "candidates" / "tiny" / "models" / "tiny" / "card.json").read_text())
    assert probe_card["method"] == "linear-probe" and probe_card["kind"] == "model"
    # the leaderboard folder holds every entry's report, by a path relative to it: it moves as one
    folder = tmp_path / "bench" / "leaderboard"
    assert all(e["report"].startswith("reports/") for e in on_disk["entries"])
    moved = folder.rename(tmp_path / "moved")
    assert set(leaderboard_reports(moved)) == names
    # the chosen probe, delivered: a verified copy of its model folder, with the same digest
    assert write_chosen_model(board, tmp_path / "model") == {"kind": "model", "digest": probe_card["digest"]}
    assert verify_card(tmp_path / "model")["digest"] == probe_card["digest"]
    assert read_base_ref(tmp_path / "model") is None


def test_linear_probe_on_a_decoder_reads_the_last_real_token(tmp_path, tiny_causal_lm, review_sentiment_spec):
    """A decoder classifier (the example's SmolLM2) applies its ``score`` head at every position and keeps
    each row's last non-padding one: the probe trains on exactly those vectors, so the saved model predicts
    what the trained head predicts, whatever the padding."""
    import torch

    from aicd.components.evaluation.baselines import _head_inputs, train_linear_probe
    from aicd.components.evaluation.evaluate import evaluate_model
    from aicd.components.models import load_model_artifact
    from aicd.components.spec import parse_spec

    spec = parse_spec(small_spec(review_sentiment_spec, tiny_causal_lm))
    data = classification_dataset(tmp_path / "data")
    probe = train_linear_probe(spec, data, "tiny", tmp_path / "probe", steps=30)
    model, tokenizer, card = load_model_artifact(probe, list(spec.task.labels))
    assert card["method"] == "linear-probe" and type(model).__name__ == "LlamaForSequenceClassification"
    texts = ["Great.", "This drug did nothing at all for my pain, and the side effects were awful."]
    pooled = _head_inputs(model, tokenizer, texts, spec.task.max_length)  # padded together
    alone = torch.cat([_head_inputs(model, tokenizer, [t], spec.task.max_length) for t in texts])
    assert pooled.shape == (2, model.config.hidden_size)
    assert torch.allclose(pooled, alone, atol=1e-5)  # padding does not move the vector a row is read at
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    assert torch.allclose(logits, model.score(pooled), atol=1e-5)
    report = evaluate_model(spec, data, tmp_path / "eval", model=probe, split="test")
    assert report["n"] > 0 and report["model"]["name"] == "tiny-linear-probe"


def test_causal_leaderboard_zero_and_few_shot(tmp_path, tiny_causal_lm, support_bot_spec):
    spec = small_spec(support_bot_spec, tiny_causal_lm)
    board = benchmark_candidates(spec, causal_dataset(tmp_path / "data"), tmp_path / "bench")
    assert {e["mode"] for e in board["entries"]} == {"zero-shot", "few-shot-2"}
    few = json.loads((tmp_path / "bench" / "candidates" / "tiny" / "few-shot-2" / "report.json").read_text())
    # the two train pairs are earlier chat turns of the prompt
    assert few["prompt_example"].count("<|user|>") == 3 and few["prompt_example"].count("<|assistant|>") == 3
    assert few["model"]["mode"] == "few-shot-2" and few["model"]["shots"] == 2

    # a bare base model is delivered as a reference to its candidate in the mode it was chosen in,
    # and evaluating that reference reproduces the leaderboard's few-shot figures
    entry = next(e for e in board["entries"] if e["mode"] == "few-shot-2")
    chosen = {**board, "chosen": {**board["chosen"], "name": entry["name"], "mode": "few-shot-2",
                                  "shot_examples": entry["shot_examples"], "model_dir": None}}
    assert write_chosen_model(chosen, tmp_path / "ref") == {"kind": "base", "digest": None}
    ref = read_base_ref(tmp_path / "ref")
    assert ref == {"candidate": "tiny", "mode": "few-shot-2", "shot_examples": entry["shot_examples"]}
    assert len(ref["shot_examples"]) == 2
    again = evaluate_base(as_spec(spec), tmp_path / "data", tmp_path / "again", ref["candidate"], ref["mode"],
                          ref["shot_examples"], "validation")
    assert again["prompt_example"] == few["prompt_example"]
    assert again["examples"]["predictions"] == few["examples"]["predictions"]
    primary = spec["metrics"]["primary"]
    assert again["metrics"][primary]["value"] == entry["metrics"][primary]


def test_bad_base_reference(tmp_path):
    (tmp_path / "base-model.json").write_text(json.dumps({"candidate": "a", "shot_examples": [["only a question"]]}))
    with pytest.raises(ModelError, match="`shot_examples` is not a list of \\[question, answer\\]"):
        read_base_ref(tmp_path)


def test_leaderboard_with_a_missing_report_writes_nothing(tmp_path, review_sentiment_spec):
    review_sentiment_spec["candidates"] = [{"name": "a", "uri": "pkg://a"}]
    board = select_candidate(as_spec(review_sentiment_spec),
                             [{**_entry("a", macro_f1=0.5, latency_p95_ms=1.0),
                               "report": str(tmp_path / "gone" / "report.json")}])
    with pytest.raises(EvaluationError, match="report .*gone/report.json of leaderboard entry 'a/m' does not exist"):
        write_leaderboard(board, tmp_path / "board")
    assert not (tmp_path / "board").exists()
    with pytest.raises(EvaluationError, match="the model .*gone of the chosen entry 'a/m' cannot be used: .*card"):
        write_chosen_model({**board, "chosen": {**board["chosen"], "model_dir": str(tmp_path / "gone")}},
                           tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("strategy,trials,expected", [
    ("grid", 10, [{"alpha": 8, "learning_rate": 0.1}, {"alpha": 8, "learning_rate": 0.2},
                  {"alpha": 16, "learning_rate": 0.1}, {"alpha": 16, "learning_rate": 0.2}]),
    ("grid", 2, [{"alpha": 8, "learning_rate": 0.1}, {"alpha": 8, "learning_rate": 0.2}]),
])
def test_plan_trials(support_bot_spec, strategy, trials, expected):
    support_bot_spec["training"].update(search_space={"learning_rate": [0.1, 0.2], "alpha": [8, 16]},
                                        search_strategy=strategy, search_trials=trials)
    assert plan_trials(as_spec(support_bot_spec)) == expected


def test_random_search_is_seeded_and_bad_fields_are_named(support_bot_spec):
    support_bot_spec["training"].update(search_space={"learning_rate": [0.1, 0.2, 0.3], "r": [4, 8]},
                                        search_strategy="random", search_trials=3)
    spec = as_spec(support_bot_spec)
    assert plan_trials(spec) == plan_trials(spec) and len(plan_trials(spec)) == 3
    assert trial_spec(spec, {"r": 4, "learning_rate": 0.3}, "lora-r8")["training"]["methods"][0]["r"] == 4
    support_bot_spec["training"]["search_space"] = {"colour": [1]}
    with pytest.raises(EvaluationError, match=r"`training.search_space.colour` is not a training or method field"):
        plan_trials(as_spec(support_bot_spec))


def test_search_trains_evaluates_and_picks_by_the_contract(tmp_path, tiny_causal_lm, support_bot_spec):
    """A stand-in train_fn (real PEFT adapters; the training area tests train_adapter itself)."""
    spec = small_spec(support_bot_spec, tiny_causal_lm)
    spec["training"]["search_space"] = {"learning_rate": [0.001, 0.002]}
    data = causal_dataset(tmp_path / "data")
    seen = []

    def train(trial, out):
        seen.append(trial["training"]["learning_rate"])
        return make_adapter(tiny_causal_lm, out)

    result = search_hyperparameters(spec, data, tmp_path / "search", train_fn=train)
    assert seen == [0.001, 0.002] and len(result["trials"]) == 2
    assert result["best"]["params"] in ({"learning_rate": 0.001}, {"learning_rate": 0.002})
    assert (tmp_path / "search" / "trial-1" / "eval" / "report.json").is_file()

"""`training.head_init: linear-probe` (LP-FT): the new head is first fitted to the frozen model's features of
the training rows, then the whole adapter fine-tunes from there at the method's rate."""

import pytest
from helpers.adapters import LABELS
from helpers.data import make_dataset, review_rows
from helpers.specs import classification_spec

from aicd.components.errors import SpecError, TrainingError
from aicd.components.models import load_model_artifact
from aicd.components.spec import parse_spec

LORA = {"name": "lora", "method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def _accuracy(model, tokenizer, rows) -> float:
    import torch

    with torch.inference_mode():
        enc = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
        predicted = model(**enc).logits.argmax(-1).tolist()
    return sum(LABELS[p] == r["label"] for p, r in zip(predicted, rows)) / len(rows)


@pytest.mark.parametrize("model, methods", [("tiny_causal_lm", [LORA]), ("tiny_encoder", None)])
def test_the_head_starts_as_the_probe_of_the_frozen_model(model, methods, tmp_path, request):
    """Before any training step the classifier already answers the training rows (three texts, one label
    each: separable), while a random head does not; the base weights are untouched and the head then
    trains at the method's rate, not 20x."""
    import torch

    from aicd.components.training.adapter import classifier_options, find_method, init_head_from_probe, load_base

    folder = request.getfixturevalue(model)
    raw = classification_spec(folder, tmp_path / "ck", head_init="linear-probe")
    if methods:
        raw["training"]["methods"] = methods
    spec = parse_spec(raw)
    method = spec.training.methods[-1]
    classifier, tokenizer, _ = load_base(spec, find_method(spec, method.name), str(folder))
    classifier.eval()
    rows = review_rows()
    assert _accuracy(classifier, tokenizer, rows) < 1.0
    body = {k: v.clone() for k, v in classifier.state_dict().items() if "score" not in k and "classifier" not in k}
    options = classifier_options(spec, method, rows)
    init_head_from_probe(classifier, tokenizer, rows, spec.task, options["class_weights"])
    assert _accuracy(classifier, tokenizer, rows) == 1.0
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in body.items())
    assert options["head_learning_rate"] == pytest.approx(spec.training.learning_rate)


def test_an_adapter_trained_from_the_probe_records_it(tiny_causal_lm, tmp_path, caplog):
    from aicd.components.training.adapter import train_adapter

    data = make_dataset(tmp_path / "ds", review_rows(), task="text-classification")
    spec = classification_spec(tiny_causal_lm, tmp_path / "ck", max_steps=2, head_init="linear-probe",
                               methods=[LORA], learning_rate=0.0005)
    with caplog.at_level("INFO", logger="aicd.components.training.adapter"):
        result = train_adapter(spec, data, "lora", tmp_path / "lpft", progress=False)
    assert "classifier head starts as a linear probe on 24 training rows" in caplog.text
    assert result.first_loss < 0.3  # a random head starts near ln 3 = 1.1 on three balanced classes
    model, tokenizer, card = load_model_artifact(tmp_path / "lpft", LABELS)
    assert card["hyperparameters"]["head_init"] == "linear-probe"
    assert _accuracy(model.eval(), tokenizer, review_rows()) == 1.0


def test_a_head_that_is_not_linear_is_refused_with_the_fix(tiny_causal_lm, tmp_path):
    import torch

    from aicd.components.training.adapter import find_method, init_head_from_probe, load_base

    spec = parse_spec(classification_spec(tiny_causal_lm, tmp_path / "ck", head_init="linear-probe",
                                          methods=[LORA]))
    classifier, tokenizer, _ = load_base(spec, find_method(spec, "lora"), str(tiny_causal_lm))
    classifier.score = torch.nn.Sequential(torch.nn.Linear(classifier.score.in_features, 3))
    with pytest.raises(TrainingError, match="fits a linear head; this llama model's head is a Sequential\n  fix: "
                                            "use head_init: random"):
        init_head_from_probe(classifier, tokenizer, review_rows(), spec.task)


def test_linear_probe_init_is_refused_for_causal_lm(support_bot_spec):
    support_bot_spec["training"]["head_init"] = "linear-probe"
    with pytest.raises(SpecError, match="`training.head_init` applies to text-classification only"):
        parse_spec(support_bot_spec)

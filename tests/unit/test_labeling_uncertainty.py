"""The current model scores rows for uncertainty sampling (tiny random models)."""

import math
import shutil

import pytest

from aicd.components.cards import write_card
from aicd.components.labeling.uncertainty import model_uncertainty
from aicd.components.spec import TaskSpec

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture
def classifier_artifact(tiny_encoder, tmp_path):
    """A full-weights classifier artifact with a fixed (saved) head, so scores are reproducible."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_encoder), num_labels=3, id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)})
    out = tmp_path / "clf"
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tiny_encoder)).save_pretrained(out)
    write_card(out, "model", task="text-classification", labels=LABELS)
    return out, model


def test_classifier_uncertainty_is_one_minus_margin(classifier_artifact):
    import torch
    from transformers import AutoTokenizer

    path, model = classifier_artifact
    rows = [{"id": "a", "text": "This drug worked wonders"}, {"id": "b", "text": "Terrible medicine"},
            {"id": "c", "text": None}]
    scores = model_uncertainty(TaskSpec(type="text-classification", labels=LABELS), path, rows)
    assert set(scores) == {"a", "b"}
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model.eval()
    for row in rows[:2]:
        with torch.no_grad():
            probs = torch.softmax(model(**tokenizer(row["text"], return_tensors="pt")).logits[0], -1).tolist()
        top = sorted(probs, reverse=True)
        assert scores[row["id"]] == pytest.approx(1 - (top[0] - top[1]), abs=1e-5)


def test_causal_lm_uncertainty_is_response_nll(tiny_causal_lm, tmp_path):
    path = tmp_path / "lm"
    shutil.copytree(tiny_causal_lm, path)
    write_card(path, "model", task="causal-lm")
    rows = [{"id": "a", "instruction": "What is AI?", "response": "Artificial intelligence."},
            {"id": "b", "instruction": "How are you?", "response": "Fine, thanks."},
            {"id": "c", "instruction": "No answer", "response": None}]
    scores = model_uncertainty(TaskSpec(type="causal-lm"), path, rows)
    assert set(scores) == {"a", "b"}
    # a random model over a ~256-token vocabulary: mean NLL near ln(vocab)
    assert all(1.0 < v < 2 * math.log(300) for v in scores.values())

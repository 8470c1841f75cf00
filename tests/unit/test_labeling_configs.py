"""Labeling configurations from the spec, and reading annotation results back."""

import xml.etree.ElementTree as ET

import pytest

from aicd.components.errors import LabelingError
from aicd.components.labeling.configs import label_config, labeling_of, read_value, result_for, task_kind
from aicd.components.spec import parse_spec


def test_choices_config_lists_labels_escaped():
    xml = label_config("choices", ["neg", 'say "hi" & <bye>'])
    root = ET.fromstring(xml)
    choices = root.find("Choices")
    assert choices.get("name") == "label" and choices.get("toName") == "text" and choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == ["neg", 'say "hi" & <bye>']
    assert root.find("Text").get("value") == "$text"


@pytest.mark.parametrize("kind, control, to_name", [
    ("rating", "Rating", "response"),
    ("pairwise", "Pairwise", "text1,text2"),
])
def test_generation_configs(kind, control, to_name):
    root = ET.fromstring(label_config(kind))
    assert root.find(control).get("toName") == to_name
    assert {t.get("value") for t in root.findall("Text")} <= {"$instruction", "$response", "$prompt", "$left",
                                                                "$right"}


def test_task_kind_follows_spec(support_bot_spec, review_sentiment_spec):
    spec, labeling = labeling_of(support_bot_spec)
    assert task_kind(spec.task, labeling) == "pairwise"
    support_bot_spec["labeling"]["generation_mode"] = "rating"
    spec, labeling = labeling_of(support_bot_spec)
    assert task_kind(spec.task, labeling) == "rating"
    spec, labeling = labeling_of(review_sentiment_spec)
    assert task_kind(spec.task, labeling) == "choices"


def test_spec_without_labeling_section(support_bot_spec):
    del support_bot_spec["labeling"]
    with pytest.raises(LabelingError, match="has no `labeling` section"):
        labeling_of(parse_spec(support_bot_spec))


LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize("kind, result, value, problem", [
    ("choices", result_for("choices", "positive"), "positive", None),
    ("choices", result_for("choices", "postive"), None, "label 'postive' is not one of task.labels"),
    ("choices", [], None, "empty result"),
    ("choices", None, None, "empty result"),
    ("choices", [{"from_name": "sentiment", "value": {"choices": ["positive"]}}], None,
     "no result from the control 'label' (found sentiment)"),
    ("choices", [{"from_name": "label", "value": {"choices": ["positive", "negative"]}}], None,
     "expected exactly one choice, got 2"),
    ("rating", result_for("rating", 4), 4, None),
    ("rating", result_for("rating", 9), None, "rating 9 is not an integer from 1 to 5"),
    ("pairwise", result_for("pairwise", "right"), "right", None),
    ("pairwise", result_for("pairwise", "both"), None, "pairwise selection 'both'"),
])
def test_read_value(kind, result, value, problem):
    read = read_value(kind, result, LABELS)
    assert read.value == value
    if problem is None:
        assert read.problem is None
    else:
        assert problem in read.problem

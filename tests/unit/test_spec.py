"""Spec validation: good specs pass, each bad one gets its exact message."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aicd.components.errors import SpecError
from aicd.components.spec import load_spec, parse_spec, spec_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["support-bot", "review-sentiment"])
def test_examples_validate(name):
    spec = load_spec(ROOT / "examples" / name / "spec.yaml")
    assert spec.name == name
    # The dict form round-trips: pipelines pass it as one parameter.
    assert parse_spec(spec_dict(spec)) == spec


def _set(spec: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = spec
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


_DELETE = object()

BAD = [
    ("training.methods.0.r", 0, "`training.methods.0.r` must be a positive integer, got 0"),
    ("task.type", "translation",
     "`task.type` must be one of 'causal-lm' or 'text-classification', got 'translation'"),
    ("name", "Support Bot",
     "`name` must be lowercase letters, digits and '-' (a Kubernetes name), got 'Support Bot'"),
    ("data.sources", [], "`data.sources` must have at least 1 item(s); add one"),
    ("candidates", _DELETE, "`candidates` is required; add it to the spec"),
    ("task.colour", "blue", "`task.colour` is not a known field; remove it or check its spelling"),
    ("data.split.train", 0.9,
     "`data.split` ratios must add up to 1, got 1.1 (train 0.9 + validation 0.1 + test 0.1)"),
    ("metrics.primary", "macro_f1",
     "`metrics.primary` must be a causal-lm metric (bleu, chrf, exact_match, nll, perplexity, "
     "preference_accuracy, rouge_l, token_f1), got 'macro_f1'"),
    ("metrics.gates.thresholds", {"accurasy": 0.5},
     "`metrics.gates.thresholds.accurasy` is not a metric of this task; use one of: adapter_size_mb, bleu, "
     "chrf, exact_match, latency_p50_ms, latency_p95_ms, model_size_mb, nll, peak_memory_mb, perplexity, "
     "preference_accuracy, rouge_l, token_f1, tokens_per_second"),
    ("metrics.gates.non_inferiority.chrf", 10,
     "`metrics.gates.non_inferiority.chrf` is 10, but chrf is a fraction in [0, 1] (chrF and BLEU are "
     "sacrebleu's scores / 100); write 0.1 for 10 points"),
    ("metrics.gates.thresholds", {"token_f1": 5},
     "`metrics.gates.thresholds.token_f1` is 5, but token_f1 is a fraction in [0, 1] (chrF and BLEU are "
     "sacrebleu's scores / 100); write 0.05 for 5 points"),
    ("delivery.canary.steps", [10, 50],
     "`delivery.canary.steps` must rise strictly and end at 100, got [10, 50]; e.g. [10, 50, 100]"),
    ("training.learning_rate", "fast", "`training.learning_rate` must be a number, got 'fast'"),
    ("task.prompt_template", "Q: {question}",
     "`task.prompt_template` must contain {instruction}; add it where the user's request goes"),
    ("training.methods.0.method", "lora2",
     "`training.methods.0.method` must be one of 'lora', 'dora', 'rslora', 'ia3', 'full', 'qlora' or 'dpo', "
     "got 'lora2'"),
    ("labeling.pii_patterns", {"card": "[0-9"},
     "`labeling.pii_patterns.card` is not a valid regular expression (unterminated character set at "
     "position 0); fix the pattern"),
    ("labeling.token_kind", "pat", "`labeling.token_kind` must be one of 'auto', 'personal' or 'legacy', got 'pat'"),
]


@pytest.mark.parametrize("field,value,message", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_message(support_bot_spec, field, value, message):
    _set(support_bot_spec, field, value)
    with pytest.raises(SpecError) as info:
        parse_spec(support_bot_spec)
    assert info.value.problems == [message]


def test_classification_needs_labels(review_sentiment_spec):
    review_sentiment_spec["task"]["labels"] = ["positive"]
    with pytest.raises(SpecError) as info:
        parse_spec(review_sentiment_spec)
    assert info.value.problems == [
        "`task.labels` needs at least two labels for text-classification, got 1; "
        "list the classes, e.g. [negative, positive]"]


def test_five_mistakes_reported_together(support_bot_spec):
    for field, value, _ in BAD[:5]:
        _set(support_bot_spec, field, value)
    with pytest.raises(SpecError) as info:
        parse_spec(support_bot_spec)
    assert sorted(info.value.problems) == sorted(m for _, _, m in BAD[:5])
    assert str(info.value).startswith("spec: 5 problems:")


def test_not_a_mapping():
    with pytest.raises(SpecError) as info:
        parse_spec(["a", "list"])
    assert info.value.problems == ["the spec must be a YAML mapping of sections, got list"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aicd.pipelines.cli", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_validate_examples():
    result = _cli("validate", *sorted(str(p) for p in (ROOT / "examples").glob("*/spec.yaml")))
    assert result.returncode == 0, result.stderr
    assert "support-bot: causal-lm" in result.stdout
    assert "review-sentiment: text-classification" in result.stdout


def test_cli_validate_reports_all_problems_without_traceback(tmp_path, support_bot_spec):
    for field, value, _ in BAD[:5]:
        _set(support_bot_spec, field, value)
    bad = tmp_path / "spec.yaml"
    bad.write_text(yaml.safe_dump(support_bot_spec))
    result = _cli("validate", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}: 5 problems:" in result.stderr
    for _, _, message in BAD[:5]:
        assert message in result.stderr


@pytest.mark.parametrize("content,message", [
    ("task: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "the spec must be a YAML mapping of sections, got list"),
])
def test_cli_validate_unreadable(tmp_path, content, message):
    bad = tmp_path / "spec.yaml"
    bad.write_text(content)
    result = _cli("validate", str(bad))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_validate_missing_file(tmp_path):
    result = _cli("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "does not exist; pass the path of a spec.yaml" in result.stderr

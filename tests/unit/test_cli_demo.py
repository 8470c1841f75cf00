"""Pieces of `make demo` that run without a model: the local GitOps repository."""

import subprocess
from pathlib import Path

import pytest

from aicd.components.errors import DeliveryError
from aicd.pipelines.gitops import ensure_gitops_repo, head_commit

ROOT = Path(__file__).resolve().parents[2]


def test_gitops_repo_is_created_once_with_the_manifests(tmp_path):
    repo = tmp_path / "gitops.git"
    assert ensure_gitops_repo(repo, "main", ROOT / "manifests") is True
    sha, subject = head_commit(repo, "main")
    assert subject == "Seed GitOps repository with the aicd manifests"
    files = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "-r", "--name-only", "main"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "manifests/overlays/production/kustomization.yaml" in files
    assert "manifests/base/kustomization.yaml" in files
    assert ensure_gitops_repo(repo, "main", ROOT / "manifests") is False
    assert head_commit(repo, "main")[0] == sha


@pytest.mark.parametrize("setup, message", [
    (lambda p: (p / "gitops.git").mkdir() or (p / "gitops.git" / "notes.txt").write_text("x"),
     "exists but is not a bare git repository"),
    (lambda p: None, "has no overlays/ to seed the GitOps repository with"),
])
def test_gitops_repo_bad_places(tmp_path, setup, message):
    setup(tmp_path)
    manifests = tmp_path / "empty-manifests"
    manifests.mkdir()
    with pytest.raises(DeliveryError, match=message):
        ensure_gitops_repo(tmp_path / "gitops.git", "main", manifests)


def test_demo_budget_only_lowers_and_says_what_it_changed(support_bot_spec):
    from aicd.components.spec import parse_spec
    from aicd.pipelines.demo import apply_budget

    support_bot_spec["metrics"]["max_examples"] = 10  # already below the budget: kept
    spec, changes = apply_budget(parse_spec(support_bot_spec), {"training": {"max_steps": 5, "batch_size": 64},
                                                                "metrics": {"max_examples": 24}})
    assert (spec.training.max_steps, spec.training.batch_size, spec.metrics.max_examples) == (5, 8, 10)
    assert changes == ["training.max_steps: 60 -> 5"]


@pytest.mark.parametrize("environ, threads", [({}, "1"), ({"OMP_NUM_THREADS": "2"}, "2")])
def test_demo_steps_use_one_torch_thread_unless_told_otherwise(environ, threads):
    from aicd.pipelines.demo import demo_threads

    assert demo_threads(environ) == threads
    assert environ["OMP_NUM_THREADS"] == threads  # what the steps' subprocesses inherit


def test_demo_summary_shows_every_compared_metric_with_its_verdict(support_bot_spec):
    from aicd.components.spec import parse_spec
    from aicd.pipelines.demo import compared_metrics

    def row(c, h, lo, hi, higher=True):
        return {"candidate": c, "champion": h, "diff": c - h, "low": lo, "high": hi, "higher_is_better": higher}

    comparison = {"n": 24, "confidence": 0.95, "metrics": {
        "nll": row(2.62, 2.87, -0.39, -0.13, higher=False), "token_f1": row(0.109, 0.097, -0.026, 0.053),
        "chrf": row(0.094, 0.15, -0.089, -0.022), "precision/x": row(0.5, 0.5, 0, 0)}}
    lines = compared_metrics(comparison, parse_spec(support_bot_spec))
    assert "  precision/x" not in lines  # per-class rows stay in the HTML report
    # as the terminal shows them: rich markup rendered (an unescaped "[gate: ...]" would vanish)
    shown = {key: _rendered(value) for key, value in lines.items()}
    assert shown["  nll"] == "2.6200 vs 2.8700, diff -0.2500 (95% CI [-0.390, -0.130]) + significantly better " \
                             "[gate: superiority]"
    assert shown["  chrf"].endswith("- significantly worse [gate: non-inferiority]")
    assert "no significant difference [gate: non-inferiority]" in shown["  token_f1"]


def _rendered(markup: str) -> str:
    from rich.console import Console

    console = Console(record=True, width=400, color_system=None)
    console.print(markup, highlight=False, soft_wrap=True)
    return console.export_text().strip()


@pytest.mark.parametrize("summary, missing, line, code", [
    ({"gate": "passed", "promoted commit": "abc123"}, [], "finished: the adapter was gated, promoted through Git", 0),
    # a second `make demo` on the same workdir: the same files again, only the card's timing differs
    ({"gate": "already serving sha256:ab: nothing to promote"}, [],
     "finished: already serving sha256:ab: nothing to promote (no new GitOps commit, no canary)", 0),
    ({"gate": "FAILED"}, [], "finished, but the gate rejected the adapter, so nothing was promoted", 1),
    ({"gate": "already serving sha256:ab: nothing to promote"}, ["train_adapter missing"], "INCOMPLETE", 1),
])
def test_demo_verdict_exit_code(summary, missing, line, code):
    from aicd.pipelines.demo import demo_verdict

    got_line, got_code = demo_verdict(summary, missing)
    assert got_line.startswith(line) and got_code == code


def test_run_summary_says_what_the_gate_decided(tmp_path):
    from kfp.dsl import Artifact

    from aicd.pipelines.local import LocalRun, TaskRecord
    from aicd.pipelines.progress import gate_lines

    def gate(name, **meta):
        serving = ["already serving sha256:ab: nothing to promote (...)"]
        reasons = serving if meta.get("already_serving") else ["r1", "r2"]
        blessing = Artifact(uri=str(tmp_path / name), metadata={"reasons": reasons, **meta})
        return TaskRecord(name, "ran", 0.1, {"blessing": blessing, "Output": meta.get("passed", False)})

    run = LocalRun("aicd-finetune", tmp_path, [
        TaskRecord("train-adapter", "ran", 1.0),
        gate("gate-candidate", passed=False, already_serving="sha256:ab"),
        gate("gate-candidate-2", passed=True, already_serving=""),
        gate("gate-candidate-3", passed=False, already_serving="")])
    assert gate_lines(run) == ["gate-candidate: already serving sha256:ab: nothing to promote (...)",
                               "gate-candidate-2: passed: r1; r2", "gate-candidate-3: FAILED: r1; r2"]

"""`aicd run` checks what it can before any step runs; `aicd init-gitops`; progress lines while steps run."""

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from aicd.pipelines import cli
from aicd.pipelines.local import TaskRecord
from aicd.pipelines.progress import StepPrinter, describe_progress

ROOT = Path(__file__).resolve().parents[2]


def _spec_file(tmp_path: Path, support_bot_spec: dict, repo: Path) -> Path:
    support_bot_spec["delivery"]["gitops"]["repo"] = str(repo)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(support_bot_spec))
    return path


def test_a_missing_gitops_repository_fails_in_seconds_and_names_init_gitops(tmp_path, support_bot_spec, capsys):
    """The new-user path: an own spec whose GitOps repository does not exist yet. Before: 10 minutes of
    training, then find-champion failed. Now: no step runs, and the message says how to create it."""
    repo = tmp_path / "my-gitops.git"
    spec = _spec_file(tmp_path, support_bot_spec, repo)
    started = time.monotonic()
    code = cli.main(["run", "finetune", "--local", "--spec", str(spec), "--workdir", str(tmp_path / "work")])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1, err
    assert "found before any step ran" in err
    assert f"`delivery.gitops.repo` {repo} does not exist yet" in err
    assert f"`aicd init-gitops {repo} --branch main`" in err
    assert not (tmp_path / "work" / "runs").exists() or not any((tmp_path / "work" / "runs").iterdir())
    assert seconds < 120  # no step ran: no training (a loose bound; the point is nothing was trained)


def test_init_gitops_seeds_the_repository_from_manifests_then_preflight_passes(tmp_path, support_bot_spec, capsys):
    from aicd.components.spec import load_spec
    from aicd.pipelines.preflight import preflight

    repo = tmp_path / "my-gitops.git"
    assert cli.main(["init-gitops", str(repo), "--manifests", str(ROOT / "manifests")]) == 0
    assert f"GitOps repository {repo} created (branch main" in capsys.readouterr().out
    files = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "-r", "--name-only", "main"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "manifests/overlays/production/kustomization.yaml" in files
    assert cli.main(["init-gitops", str(repo), "--manifests", str(ROOT / "manifests")]) == 0  # idempotent
    assert "exists already" in capsys.readouterr().out
    preflight(load_spec(_spec_file(tmp_path, support_bot_spec, repo)), "finetune")  # no error


def test_preflight_lists_every_problem_at_once(tmp_path, support_bot_spec):
    from aicd.components.spec import parse_spec
    from aicd.pipelines.preflight import PreflightError, preflight

    support_bot_spec["candidates"][0]["uri"] = str(tmp_path / "no-model")
    support_bot_spec["data"]["sources"][0]["uri"] = "pkg://no_such_package_here/data"
    support_bot_spec["delivery"]["gitops"]["repo"] = str(tmp_path / "nope.git")
    support_bot_spec["labeling"]["url"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(PreflightError) as err:
        preflight(parse_spec(support_bot_spec), "continuous")
    message = str(err.value)
    assert "4 problem(s)" in message, message
    assert f"`candidates.{support_bot_spec['candidates'][0]['name']}.uri`" in message
    assert "`data.sources[0].uri`: package 'no_such_package_here'" in message
    assert "Label Studio at `labeling.url` http://127.0.0.1:9 is not reachable" in message
    assert "aicd init-gitops" in message


def test_preflight_names_a_cardless_unpinned_candidate_and_accepts_it_pinned(tmp_path, support_bot_spec):
    """Issue 17: the folder would be refused when it loads; `aicd run` says so before any step, with the fix."""
    from aicd.components.cards import content_digest
    from aicd.components.spec import parse_spec
    from aicd.pipelines.preflight import check_uris

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    support_bot_spec["candidates"][0]["uri"] = str(folder)
    problems = check_uris(parse_spec(support_bot_spec))
    name = support_bot_spec["candidates"][0]["name"]
    assert len(problems) == 1 and problems[0].startswith(f"`candidates.{name}.uri`: model '{folder}'"), problems
    assert "has no card.json and no pinned digest" in problems[0] and f"`aicd digest {folder}`" in problems[0]
    support_bot_spec["candidates"][0]["digest"] = content_digest(folder)
    assert check_uris(parse_spec(support_bot_spec)) == []


def test_a_remote_gitops_repository_that_does_not_answer_is_named(tmp_path, support_bot_spec):
    from aicd.components.spec import parse_spec
    from aicd.pipelines.preflight import check_gitops

    support_bot_spec["delivery"]["gitops"]["repo"] = "http://127.0.0.1:9/team/gitops.git"
    problems = check_gitops(parse_spec(support_bot_spec), timeout=20)
    assert len(problems) == 1 and "is not a reachable git repository" in problems[0]


def test_progress_words_from_the_training_bar():
    line = "train:  40%|####      | 40/100 [00:10<00:15,  4.00it/s, loss=1.2345, tok_s=512]"
    assert describe_progress(line, 8) == ("step 40/100, loss 1.2345, 32.0 examples/s, 4.00 steps/s, 512 tokens/s, "
                                          "00:15 left")
    assert describe_progress("train:   0%|  | 0/5 [00:00<?, ?it/s]") == "step 0/5"
    assert describe_progress("loading the base model") == "loading the base model"
    assert describe_progress("}") == ""  # the end of a step's JSON output says nothing


def test_a_heartbeat_line_while_a_step_runs_even_without_a_terminal(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("train:  40%|####      | 2/5 [00:10<00:15,  0.20it/s, loss=2.5000, tok_s=40]\r")
    console = Console(file=open(tmp_path / "out.txt", "w"), force_terminal=False, width=200)
    printer = StepPrinter(console, heartbeat_seconds=0.2, total=3, examples_per_step=4)
    printer("start", TaskRecord("ingest-dataset", "running", 0.0, log_file=str(tmp_path / "none.log")))
    printer("end", TaskRecord("ingest-dataset", "ran", 0.1))
    printer("start", TaskRecord("train-adapter", "running", 0.0, log_file=str(log)))
    time.sleep(0.7)
    printer("end", TaskRecord("train-adapter", "ran", 0.7))
    printer.close()
    console.file.close()
    out = (tmp_path / "out.txt").read_text()
    assert "progress: 1 of 3 step(s) done; train-adapter running" in out
    assert "step 2/5, loss 2.5000, 0.8 examples/s, 0.20 steps/s, 40 tokens/s, 00:15 left" in out

"""The `aicd` CLI: run/compile/submit argument handling, clear errors and exit codes.

No KFP API server can run on this machine: `submit` is tested with a fake object
standing in for kfp.Client (it records the calls and reads the compiled package).
"""

from pathlib import Path

import pytest
import yaml
from kfp import dsl

from aicd.pipelines import cli, stages, submit
from aicd.pipelines.stages import load_pipeline_arguments

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "examples" / "support-bot" / "spec.yaml")


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def echo_name(name: str, task: dict) -> str:
    return f"{name}: {task['type']}"


def _toy(name: str):
    @dsl.pipeline(name=f"aicd-{name}")
    def toy(name: str, task: dict, data: dict, candidates: list, metrics: dict, training: dict, delivery: dict,
            labeling: dict):
        echo_name(name=name, task=task)
    return toy


class FakeKfpClient:
    """Stands in for kfp.Client (the KFP API server); records what aicd sends."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def _package(self, path: str) -> dict:
        return yaml.safe_load(open(path).read().split("\n---\n")[0])

    def create_run_from_pipeline_package(self, pipeline_file, arguments=None, run_name=None, experiment_name=None,
                                         namespace=None, **_):
        if self.fail:
            raise self.fail
        self.calls.append(("run", {"package": self._package(pipeline_file), "arguments": arguments,
                                   "run_name": run_name, "experiment": experiment_name, "namespace": namespace}))
        return type("RunPipelineResult", (), {"run_id": "run-123"})()

    def get_experiment(self, experiment_id=None, experiment_name=None, namespace=None):
        raise ValueError(f"No experiment is found with name {experiment_name}")

    def create_experiment(self, name, description=None, namespace=None):
        self.calls.append(("experiment", {"name": name, "namespace": namespace}))
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, experiment_id, job_name, cron_expression=None, params=None,
                             pipeline_package_path=None, max_concurrency=None, no_catchup=None, **_):
        self.calls.append(("recurring", {"experiment_id": experiment_id, "job_name": job_name,
                                         "cron": cron_expression, "params": params, "max_concurrency": max_concurrency,
                                         "package": self._package(pipeline_package_path)}))
        return type("RecurringRun", (), {"recurring_run_id": "rr-9"})()


@pytest.fixture
def fake_kfp(monkeypatch):
    client = FakeKfpClient()
    hosts = []

    def make_client(host, namespace=None, token=None):
        hosts.append((host, namespace, token))
        return client

    monkeypatch.setattr(submit, "make_client", make_client)
    monkeypatch.setattr(stages, "build_pipeline", lambda name, platform=None: _toy(name))
    client.hosts = hosts
    return client


def test_submit_finetune_creates_one_run(fake_kfp, capsys):
    code = cli.main(["submit", "finetune", "--host", "http://127.0.0.1:1/pipeline", "--spec", SPEC,
                     "--namespace", "team-a"])
    assert code == 0
    assert fake_kfp.hosts == [("http://127.0.0.1:1/pipeline", "team-a", None)]
    [(kind, call)] = fake_kfp.calls
    assert kind == "run"
    assert call["package"]["pipelineInfo"]["name"] == "aicd-finetune"
    assert call["arguments"] == load_pipeline_arguments(SPEC)
    assert (call["run_name"], call["experiment"]) == ("support-bot-finetune", "support-bot")
    assert "submitted run support-bot-finetune (run-123)" in capsys.readouterr().out


def test_submit_continuous_creates_a_recurring_run(fake_kfp):
    code = cli.main(["submit", "continuous", "--host", "http://127.0.0.1:1", "--spec", SPEC,
                     "--schedule", "0 30 2 * * *"])
    assert code == 0
    assert [k for k, _ in fake_kfp.calls] == ["experiment", "recurring"]
    recurring = fake_kfp.calls[1][1]
    assert recurring["experiment_id"] == "exp-1"
    assert recurring["cron"] == "0 30 2 * * *"
    assert recurring["max_concurrency"] == 1
    assert recurring["params"] == load_pipeline_arguments(SPEC)
    assert recurring["package"]["pipelineInfo"]["name"] == "aicd-continuous"


def test_submit_refused_is_a_clear_error(fake_kfp, capsys):
    fake_kfp.fail = ConnectionError("connection refused")
    assert cli.main(["submit", "poc", "--host", "http://127.0.0.1:1", "--spec", SPEC]) == 1  # a domain error
    err = capsys.readouterr().err
    assert "aicd submit: error: the KFP endpoint refused support-bot-poc: ConnectionError: connection refused" in err
    assert "fix: check --host" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message, code", [
    (["run", "finetune"], "`aicd run finetune` needs --local", 2),
    (["run", "nosuch", "--local", "--spec", SPEC],
     "unknown pipeline 'nosuch'\n  fix: use one of: poc, scoping, finetune", 2),
    (["compile", "nosuch"], "unknown pipeline 'nosuch'", 2),
    (["compile", "poc", "--profile", "nope.yaml"], "nope.yaml does not exist; pass a profile such as", 1),
    (["run", "finetune", "--local", "--spec", "nope.yaml"], "nope.yaml does not exist; pass the path of a spec.yaml",
     1),
    (["submit", "poc", "--host", "http://127.0.0.1:1", "--spec", SPEC, "--token-secret", "kfp-token"],
     "secret 'kfp-token' (key 'token') is not available", 1),
])
def test_bad_input_is_one_message_and_exit_1_or_2(argv, message, code, capsys, monkeypatch, tmp_path):
    """Exit 2 when the command line is wrong (a usage error), 1 when what it names is (a domain error)."""
    monkeypatch.setenv("AICD_SECRETS_DIR", str(tmp_path))
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_serve_passes_every_option_to_the_predictor(capsys):
    """`aicd serve` is the serving area's entry point: its options and its errors."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m aicd.components.serving" in capsys.readouterr().out
    assert cli.main(["serve", "--base", "/nonexistent/model", "--port", "0"]) == 2
    assert "aicd serve: error: '/nonexistent/model' does not exist" in capsys.readouterr().err


def test_canary_without_a_canary_in_git_is_a_clear_error(tmp_path, support_bot_spec, capsys):
    from aicd.pipelines.gitops import ensure_gitops_repo

    repo = tmp_path / "gitops.git"
    ensure_gitops_repo(repo, "main", ROOT / "manifests")
    support_bot_spec["delivery"]["gitops"]["repo"] = str(repo)
    support_bot_spec["delivery"]["canary"]["interval_seconds"] = 0.01
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(support_bot_spec))
    code = cli.main(["canary", "--spec", str(spec), "--prometheus", "http://127.0.0.1:9", "--max-intervals", "1"])
    err = capsys.readouterr().err
    assert code == 1, err  # a delivery error
    assert err.startswith("aicd canary: error: no canary is declared in manifests/overlays/production")
    assert "Traceback" not in err


def test_run_local_prints_progress_and_summary_and_reruns_from_cache(monkeypatch, tmp_path, capsys):
    from aicd.pipelines import cache

    monkeypatch.setattr(stages, "build_pipeline", lambda name, platform=None: _toy(name))
    monkeypatch.setattr(cache, "source_digest", lambda: "toy")  # the toy imports no aicd code
    # the toy needs no GitOps repository (preflight has tests of its own: test_cli_preflight.py)
    argv = ["run", "finetune", "--local", "--spec", SPEC, "--workdir", str(tmp_path), "--skip-preflight"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "> echo-name ..." in out and "echo-name: done in" in out
    assert "0 of 1 step(s) from the cache" in out
    summaries = sorted(tmp_path.glob("runs/*/summary.json"))
    assert len(summaries) == 1
    assert '"Output": "support-bot: causal-lm"' in summaries[0].read_text()
    assert cli.main(argv) == 0
    assert "1 of 1 step(s) from the cache" in capsys.readouterr().out


def test_version_is_the_installed_distribution(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aicd {version('aicd')}"


@pytest.mark.parametrize("argv", [["submit", "poc", "--host", "http://127.0.0.1:1"], ["canary"]])
def test_submit_and_canary_require_a_spec(argv, capsys):
    """No silent default to the example spec: a usage error (exit 2) naming --spec."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "the following arguments are required: --spec" in capsys.readouterr().err

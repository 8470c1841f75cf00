"""The content-hash cache of local runs, on small real components under kfp.local.

The components here are test doubles for pipeline steps (they write and read real
artifacts in subprocesses); the pipelines of aicd are run in test_pipelines_finetune.py.
"""

import json
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from aicd.pipelines import local
from aicd.pipelines.cache import run_outputs
from aicd.pipelines.local import PipelineRunError
from aicd.pipelines.platform import Platform


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def write_rows(n: int, rows: Output[Dataset]):
    import json
    import os
    import random
    import time

    os.makedirs(rows.path)
    with open(os.path.join(rows.path, "rows.jsonl"), "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"i": i, "noise": random.random(), "time": time.time()}) + "\n")
    rows.metadata["n"] = n


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def count_rows(rows: Input[Dataset], fail: bool, scores: Output[Metrics]) -> int:
    import os

    if fail:
        raise SystemExit("count_rows was asked to fail")
    n = sum(1 for _ in open(os.path.join(rows.path, "rows.jsonl")))
    scores.log_metric("rows", n)
    return n


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def announce(count: int) -> str:
    return f"{count} rows"


def _pipeline(platform: Platform):
    @dsl.pipeline(name="cache-probe")
    def cache_probe(n: int, fail: bool = False):
        made = platform.apply(write_rows(n=n), "data")
        counted = platform.apply(count_rows(rows=made.outputs["rows"], fail=fail), "evaluate")
        with dsl.If(counted.outputs["Output"] > 0):
            platform.apply(announce(count=counted.outputs["Output"]), "deliver", cache=False)
    return cache_probe


def run_local(*args, **kwargs):
    """These components import nothing from aicd: a fixed code digest keeps edits elsewhere out of the keys."""
    return local.run_local(*args, code_digest="toy-components", **kwargs)


@pytest.fixture
def pipeline():
    return _pipeline(Platform())


def test_second_run_skips_cacheable_steps_with_identical_outputs(pipeline, tmp_path):
    first = run_local(pipeline, {"n": 3}, tmp_path)
    assert [(t.name, t.status) for t in first.tasks] == [("write-rows", "ran"), ("count-rows", "ran"),
                                                         ("announce", "ran")]
    second = run_local(pipeline, {"n": 3}, tmp_path)
    # write_rows writes random noise: only the cache can give the same bytes again.
    assert [(t.name, t.status) for t in second.tasks] == [("write-rows", "cached"), ("count-rows", "cached"),
                                                          ("announce", "ran")]  # caching off: always runs
    assert run_outputs(second) == run_outputs(first)
    assert second.root != first.root
    assert Path(second.artifact_path("write-rows", "rows")).is_relative_to(second.root)
    assert first.task("count-rows").outputs["scores"].metadata == {"rows": 3}
    # each step that ran is charged its subprocess's CPU (a Python start alone costs more than 10 ms);
    # a step from the cache ran nothing
    assert all(t.cpu_seconds > 0.01 for t in first.tasks)
    assert second.task("write-rows").cpu_seconds == 0.0


def test_changed_parameter_misses_and_upstream_change_propagates(pipeline, tmp_path):
    run_local(pipeline, {"n": 3}, tmp_path)
    changed = run_local(pipeline, {"n": 4}, tmp_path)
    assert [t.status for t in changed.tasks] == ["ran", "ran", "ran"]
    assert changed.task("announce").outputs["Output"] == "4 rows"


def test_false_condition_skips_the_guarded_step(pipeline, tmp_path):
    run = run_local(pipeline, {"n": 0}, tmp_path)
    assert [t.name for t in run.tasks] == ["write-rows", "count-rows"]


def test_no_cache_runs_everything(pipeline, tmp_path):
    run_local(pipeline, {"n": 2}, tmp_path)
    again = run_local(pipeline, {"n": 2}, tmp_path, cache=False)
    assert [t.status for t in again.tasks] == ["ran", "ran", "ran"]


def test_failed_step_names_itself_shows_its_log_and_is_not_cached(pipeline, tmp_path):
    with pytest.raises(PipelineRunError) as err:
        run_local(pipeline, {"n": 2, "fail": True}, tmp_path)
    message = str(err.value)
    assert message.startswith("step count-rows of pipeline cache-probe failed")
    assert "count_rows was asked to fail" in message
    entries = list((tmp_path / "cache").glob("*/*/outputs.json"))
    assert [json.loads(e.read_text())["outputs"].keys() for e in entries] == [{"rows"}]  # only write_rows
    retry = run_local(pipeline, {"n": 2}, tmp_path)
    assert [t.status for t in retry.tasks] == ["cached", "ran", "ran"]


def test_changed_code_digest_misses(pipeline, tmp_path):
    run_local(pipeline, {"n": 2}, tmp_path)
    again = local.run_local(pipeline, {"n": 2}, tmp_path, code_digest="edited")
    assert [t.status for t in again.tasks] == ["ran", "ran", "ran"]


def test_damaged_cache_entry_is_a_miss(pipeline, tmp_path):
    run_local(pipeline, {"n": 2}, tmp_path)
    for entry in (tmp_path / "cache").glob("*/*/outputs.json"):
        entry.write_text("{not json")
    again = run_local(pipeline, {"n": 2}, tmp_path)
    assert [t.status for t in again.tasks] == ["ran", "ran", "ran"]


@dsl.component(base_image="python:3.11")
def double(value: int) -> int:
    """A component compiled with kfp's default per-step ``pip install kfp`` preamble."""
    return 2 * value


@dsl.component(base_image="python:3.11", packages_to_install=["six==1.16.0"])
def needs_six(value: int) -> int:
    return value


def _command(component) -> list[str]:
    executor = next(iter(component.pipeline_spec.deployment_spec["executors"].values()))
    return list(executor["container"]["command"])


@pytest.mark.parametrize("component, stripped", [(double, True), (needs_six, False), (write_rows, False)])
def test_only_the_redundant_kfp_install_is_dropped(component, stripped):
    command = _command(component)
    assert local.without_kfp_install(command) == (command[3:] if stripped else command)
    if stripped:
        assert "pip install" in command[2] and command[3:5] == ["sh", "-ec"]


@dsl.pipeline(name="install-probe")
def install_probe(value: int):
    double(value=double(value=value).output)


def test_steps_run_without_pip_and_still_cache(tmp_path, monkeypatch):
    # A pip that cannot load its configuration fails: the steps pass only because pip never runs.
    (tmp_path / "broken-pip.conf").write_text("[global\nbroken")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "broken-pip.conf"))
    first = run_local(install_probe, {"value": 3}, tmp_path)
    assert [(t.status, t.outputs["Output"]) for t in first.tasks] == [("ran", 6), ("ran", 12)]
    second = run_local(install_probe, {"value": 3}, tmp_path)
    assert [t.status for t in second.tasks] == ["cached", "cached"]
    assert run_outputs(second) == run_outputs(first)
    changed = run_local(install_probe, {"value": 4}, tmp_path)
    assert [(t.status, t.outputs["Output"]) for t in changed.tasks] == [("ran", 8), ("ran", 16)]

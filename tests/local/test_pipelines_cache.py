"""The content-hash cache of local runs, on small real components under kfp.local.

The components here are test doubles for pipeline steps (they write and read real
artifacts in subprocesses); the pipelines of aicd are run in test_pipelines_finetune.py.
"""

import json
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from aicd.pipelines.cache import path_digest
from aicd.pipelines import local
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


def _fingerprint(run) -> dict:
    """Every output of every task: parameters as values, artifacts by content digest and metadata."""
    out = {}
    for task in run.tasks:
        for name, value in task.outputs.items():
            out[f"{task.name}.{name}"] = ((path_digest(value.path), value.metadata) if hasattr(value, "path")
                                          else value)
    return out


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
    assert _fingerprint(second) == _fingerprint(first)
    assert second.root != first.root
    assert Path(second.artifact_path("write-rows", "rows")).is_relative_to(second.root)
    assert first.task("count-rows").outputs["scores"].metadata == {"rows": 3}


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

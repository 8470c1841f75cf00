"""End to end: evaluated candidate -> gate -> promote into a bare repo -> canary analysis -> Git decision.

Real parts: the git CLI with bare repositories, the aicd predictor (`python -m
aicd.components.serving`, tiny model plus a real PEFT adapter) started with the very
arguments the promotion wrote into Git, and the Debian Prometheus binary scraping
them on 127.0.0.1. Only Kubernetes is absent: the test starts the stable and canary
predictors itself, as KServe would from the InferenceService, and plays the gateway's
traffic split. The candidate's evaluation report is built in the contract's shape.
"""

import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from delivery_world import (
    HOST,
    PROMETHEUS,
    ROOT,
    deliver,
    ensure_gitops_repo,
    free_port,
    make_adapter,
    make_spec,
    overlay,
    prometheus_config,
    start_predictor,
    stop,
    subjects,
    traffic,
    wait_for_rates,
    wait_ready,
)

from aicd.components.delivery import isvc
from aicd.components.delivery.canary import analyse_canary, run_canary
from aicd.components.errors import DeliveryError
from aicd.components.spec import parse_spec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not Path(PROMETHEUS).is_file():
        message = f"no Prometheus binary at {PROMETHEUS}: run `make services` or set PROMETHEUS_BIN"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from tiny_models import make_causal_lm

    tmp = tmp_path_factory.mktemp("delivery-e2e")
    tiny = make_causal_lm(tmp / "tiny")
    card = make_adapter(tiny, tmp / "adapter")
    raw = yaml.safe_load((ROOT / "examples/support-bot/spec.yaml").read_text())
    prom_port = free_port()
    prom_url = f"http://{HOST}:{prom_port}"
    repos = {name: tmp / f"{name}.git" for name in ("good", "bad", "quiet", "disliked")}
    specs = {name: make_spec(raw, repos[name], name, prom_url, tiny) for name in repos}
    specs["disliked"] = make_spec(raw, repos["disliked"], "disliked", prom_url, tiny, min_feedback_score=0.5)
    for name, repo in repos.items():
        ensure_gitops_repo(repo, "main", ROOT / "manifests")
        deliver(specs[name], tmp / "adapter", card)
    declared = overlay(repos["good"])["spec"]
    procs = []
    try:
        stable = start_predictor(declared["predictor"]["model"]["args"], tmp / "stable.log")
        good = start_predictor(declared["canary"][0]["predictor"]["model"]["args"], tmp / "good.log")
        bad_args = overlay(repos["bad"])["spec"]["canary"][0]["predictor"]["model"]["args"]
        bad = start_predictor(bad_args, tmp / "bad.log", ["--fault-rate", "0.5"])
        procs += [p for p, _ in (stable, good, bad)]
        (tmp / "prom").mkdir()
        serving = {"good": good, "bad": bad, "quiet": good, "disliked": good}  # canary process per repo
        targets = []
        for name, repo in repos.items():
            declared = overlay(repo)["spec"]
            targets += [(stable[1], declared["predictor"]["labels"]),
                        (serving[name][1], declared["canary"][0]["predictor"]["labels"])]
        (tmp / "prom/prometheus.yml").write_text(prometheus_config(targets))
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp}/prom/prometheus.yml",
                                 f"--storage.tsdb.path={tmp}/prom/data", f"--web.listen-address={HOST}:{prom_port}",
                                 "--storage.tsdb.retention.time=1h"],
                                stdout=open(tmp / "prom.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(prom)
        for (proc, address), name in ((stable, "stable"), (good, "good"), (bad, "bad")):
            wait_ready(proc, address, tmp / f"{name}.log")
        halt = threading.Event()
        loader = threading.Thread(target=traffic, args=([(stable[1], "good", 2, "up"), (good[1], "good", 1, "down"),
                                                         (bad[1], "bad", 1, None)], halt))
        loader.start()
        try:
            wait_for_rates(prom_url)
            yield {"specs": specs, "repos": repos, "prometheus": prom_url, "digest": card["digest"]}
        finally:
            halt.set()
            loader.join()
    finally:
        for proc in procs:
            stop(proc)


def test_good_canary_is_stepped_then_promoted(world):
    spec, repo = world["specs"]["good"], world["repos"]["good"]
    seen = []
    final = run_canary(spec.delivery, max_intervals=30, on_step=seen.append)
    # On a loaded machine an interval can see fewer than min_requests: it waits (inconclusive, no commit).
    decisive = [s.action for s in seen if s.action != "wait"]
    assert decisive == ["step", "promote"], [(s.action, s.interval.reasons) for s in seen]
    assert final.interval.decision == "pass" and final.interval.error_rate == 0.0
    doc = overlay(repo)["spec"]
    assert doc["canary"] == []
    assert doc["predictor"]["annotations"][isvc.MODEL_ID] == world["digest"]
    assert doc["predictor"]["labels"][isvc.ROLE] == "stable"
    decided = [s for s in subjects(repo) if " interval " not in s]  # inconclusive intervals: evidence commits
    assert decided[:2] == [f"aicd: canary {world['digest'][7:19]} promote to champion",
                                  f"aicd: canary {world['digest'][7:19]} step 50% -> 100%"]


def test_bad_canary_is_rolled_back(world):
    spec, repo = world["specs"]["bad"], world["repos"]["bad"]
    step = run_canary(spec.delivery, max_intervals=30)  # inconclusive intervals (too little traffic) just wait
    assert (step.action, step.interval.decision) == ("rollback", "fail")
    assert step.interval.error_rate > spec.delivery.canary.max_error_rate
    assert any(r.startswith("5xx ratio") and "vs stable 0.000%" in r for r in step.interval.reasons)
    doc = overlay(repo)["spec"]
    assert doc["canary"] == [] and doc["predictor"]["annotations"][isvc.MODEL_ID].startswith("base:")
    assert subjects(repo)[0] == f"aicd: canary {world['digest'][7:19]} rollback"


def test_disliked_canary_is_rolled_back_on_feedback(world):
    """Same healthy predictor as the good case, but its users vote it down: the feedback gate rolls it back."""
    step = run_canary(world["specs"]["disliked"].delivery, max_intervals=30)
    assert (step.action, step.interval.decision) == ("rollback", "fail")
    assert step.interval.error_rate == 0.0 and step.interval.feedback_score == 0.0
    assert [r for r in step.interval.reasons if r.startswith("feedback score 0.00 (min 0.5)")]
    assert subjects(world["repos"]["disliked"])[0] == f"aicd: canary {world['digest'][7:19]} rollback"


def test_too_little_traffic_is_inconclusive(world):
    spec = world["specs"]["quiet"].model_copy(deep=True)
    raw = spec.model_dump(mode="json")
    raw["delivery"]["canary"]["min_requests"] = 100000
    spec = parse_spec(raw)
    before = subjects(world["repos"]["quiet"])
    declared = overlay(world["repos"]["quiet"])
    step = analyse_canary(spec.delivery)
    assert (step.action, step.interval.decision, step.inconclusive) == ("wait", "inconclusive", 1)
    assert "fewer than delivery.canary.min_requests=100000" in step.interval.reasons[0]
    # the interval is recorded as an empty commit (its evidence and counters); the overlay is unchanged
    assert subjects(world["repos"]["quiet"]) == [f"aicd: canary {world['digest'][7:19]} interval 1: inconclusive",
                                                 *before]
    assert overlay(world["repos"]["quiet"]) == declared


@pytest.mark.parametrize("case, match", [
    ("down", "Prometheus at http://127.0.0.1:1 is unreachable"),
    ("no-data", "has no data for the stable and canary predictors of 'nowhere'"),
    ("bad-query", None),
])
def test_prometheus_problems_commit_nothing(world, case, match):
    repo = world["repos"]["quiet"]
    raw = world["specs"]["quiet"].model_dump(mode="json")
    if case == "down":
        raw["delivery"]["prometheus_url"] = "http://127.0.0.1:1"
    elif case == "no-data":
        raw["delivery"]["serving"]["name"] = "nowhere"
    before = subjects(repo)
    if case == "bad-query":
        from aicd.components.delivery.analysis import query

        with pytest.raises(DeliveryError, match="Prometheus refused the query 'sum\\(' : HTTP 400 bad_data|HTTP 400"):
            query(world["prometheus"], "sum(")
    else:
        with pytest.raises(DeliveryError, match=match):
            analyse_canary(parse_spec(raw).delivery)
    assert subjects(repo) == before

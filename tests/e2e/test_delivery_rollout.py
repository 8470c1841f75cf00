"""The rollout: promoted canary -> wait until live and Ready -> Prometheus each interval -> Git decision.

Real parts: the `rollout` pipeline under kfp.local for every case (test_delivery_canary.py drives the
same loop as `aicd canary` runs it),
bare Git repositories as the GitOps remotes, the aicd predictor (tiny model plus a real PEFT
adapter) started with the arguments the promotion wrote into Git, the Debian Prometheus
scraping it, and a real kube-apiserver 1.20.2 holding the InferenceServices.

Stand-ins, for what needs a controller: the test plays KServe (a thread applies the overlay's
InferenceService from Git to the API server and writes its status: Ready, or not Ready for the
canary that never becomes Ready) and starts the predictors itself; it plays the gateway's split
with one client thread per predictor. A hanging canary is a real predictor process stopped with
SIGSTOP (it answers neither requests nor scrapes).
"""

import os
import signal
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
    git,
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

from aicd.components.spec import parse_spec
from aicd.pipelines.local import run_local
from aicd.pipelines.platform import Platform
from aicd.pipelines.stages import build_pipeline, pipeline_arguments

pytestmark = pytest.mark.e2e
NAMESPACE = "aicd"
# rollout -> (canary predictor process, canary overrides, sync timeout)
CASES = {"good": ("good", {}, 120), "bad": ("bad", {}, 120), "notready": (None, {}, 4), "hang": ("hang", {}, 120),
         "quiet": ("good", {"min_requests": 100000, "max_inconclusive_intervals": 2}, 120),
         "retry": ("bad", {"max_failed_intervals": 2}, 120)}


def play_kserve(kubeconfig: Path, repos: dict[str, Path], halt: threading.Event) -> None:
    """KServe's part: the InferenceService Git declares is applied, then its status written (Ready,
    except for `notready`, whose revision never becomes ready)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
    args = ("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices")
    while not halt.is_set():
        for name, repo in repos.items():
            doc = overlay(repo)
            doc["metadata"].update(name=name, namespace=NAMESPACE)
            try:
                live = api.get_namespaced_custom_object(*args, name)
            except ApiException:
                live = api.create_namespaced_custom_object(*args, doc)
            if live["spec"] != doc["spec"] or live["metadata"].get("annotations") != doc["metadata"].get("annotations"):
                doc["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                live = api.replace_namespaced_custom_object(*args, name, doc)
            generation = live["metadata"]["generation"]
            if (live.get("status") or {}).get("observedGeneration") != generation:
                ready = {"type": "Ready", "status": "True"} if name != "notready" else {
                    "type": "Ready", "status": "False", "reason": "RevisionMissing",
                    "message": "revision notready-predictor-canary is not ready"}
                api.patch_namespaced_custom_object_status(*args, name, {"status": {
                    "observedGeneration": generation, "conditions": [ready]}})
        halt.wait(0.5)


def specs_for(raw: dict, repos: dict[str, Path], prom_url: str, tiny: Path, kubeconfig: Path) -> dict:
    specs = {}
    for name, (_, canary, timeout) in CASES.items():
        # The test's clients are closed loops (one per predictor), not a gateway holding the split, so a
        # slower canary gets fewer requests than its share: only a canary that answers almost none fails.
        canary = {"min_traffic_share": 0.05, **canary}
        spec = make_spec(raw, repos[name], name, prom_url, tiny, **canary).model_dump(mode="json", exclude_none=True)
        spec["delivery"]["sync"] = {"via": "inferenceservice", "kubeconfig": str(kubeconfig),
                                    "timeout_seconds": timeout, "poll_seconds": 0.5}
        specs[name] = parse_spec(spec)
    return specs


@pytest.fixture(scope="module")
def world(tmp_path_factory, kube_apiserver):  # noqa: F811
    if not Path(PROMETHEUS).is_file():
        message = f"no Prometheus binary at {PROMETHEUS}: run `make services` or set PROMETHEUS_BIN"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from tiny_models import make_causal_lm

    kube_apiserver.ensure_namespace(NAMESPACE)
    tmp = tmp_path_factory.mktemp("rollout-e2e")
    tiny = make_causal_lm(tmp / "tiny")
    card = make_adapter(tiny, tmp / "adapter")
    raw = yaml.safe_load((ROOT / "examples/support-bot/spec.yaml").read_text())
    prom_port = free_port()
    prom_url = f"http://{HOST}:{prom_port}"
    repos = {name: tmp / f"{name}.git" for name in CASES}
    specs = specs_for(raw, repos, prom_url, tiny, kube_apiserver.kubeconfig)
    for name, repo in repos.items():
        ensure_gitops_repo(repo, "main", ROOT / "manifests")
        deliver(specs[name], tmp / "adapter", card)
    procs, halt, threads = {}, threading.Event(), []
    try:
        procs["stable"] = start_predictor(overlay(repos["good"])["spec"]["predictor"]["model"]["args"],
                                          tmp / "stable.log")
        for name, extra in (("good", []), ("bad", ["--fault-rate", "0.5"]), ("hang", [])):
            args = overlay(repos[name])["spec"]["canary"][0]["predictor"]["model"]["args"]
            procs[name] = start_predictor(args, tmp / f"{name}.log", extra)
        targets = []
        for name, (proc_name, _, _) in CASES.items():
            declared = overlay(repos[name])["spec"]
            targets.append((procs["stable"][1], declared["predictor"]["labels"]))
            if proc_name:
                targets.append((procs[proc_name][1], declared["canary"][0]["predictor"]["labels"]))
        (tmp / "prom").mkdir()
        (tmp / "prom/prometheus.yml").write_text(prometheus_config(targets))
        procs["prometheus"] = (subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp}/prom/prometheus.yml", f"--storage.tsdb.path={tmp}/prom/data",
             f"--web.listen-address={HOST}:{prom_port}", "--storage.tsdb.retention.time=1h"],
            stdout=open(tmp / "prom.log", "w"), stderr=subprocess.STDOUT, start_new_session=True), "")
        for name in ("stable", "good", "bad", "hang"):
            wait_ready(*procs[name], tmp / f"{name}.log")
        for address, model, weight in ((procs["stable"][1], "good", 2), (procs["good"][1], "good", 1),
                                       (procs["bad"][1], "bad", 1), (procs["hang"][1], "hang", 1)):
            threads.append(threading.Thread(target=traffic, args=([(address, model, weight, None)], halt)))
        threads.append(threading.Thread(target=play_kserve, args=(kube_apiserver.kubeconfig, repos, halt)))
        for thread in threads:
            thread.start()
        for name in ("bad", "hang"):
            wait_for_rates(prom_url, name)
        yield {"specs": specs, "repos": repos, "digest": card["digest"], "procs": procs, "tmp": tmp}
    finally:
        halt.set()
        for name, (proc, _) in procs.items():
            if name == "hang" and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
            stop(proc)
        for thread in threads:
            thread.join(timeout=30)


def rollout(world, name: str, **arguments):
    pipeline = build_pipeline("rollout", Platform())
    sections = pipeline_arguments(world["specs"][name])  # the rollout reads only `delivery` of them
    run = run_local(pipeline, {**sections, "model_id": world["digest"], **arguments},
                    world["tmp"] / f"work-{name}", cache=False)
    task = run.task("roll-out-canary")
    return task.outputs["Output"], Path(task.outputs["evidence"].path).read_text()


def trailers(repo: Path, rev: str = "main") -> dict[str, str]:
    out = git("--git-dir", str(repo), "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def test_good_canary_is_promoted_by_the_rollout_pipeline(world):
    action, evidence = rollout(world, "good")
    assert action == "promote", evidence
    repo, short = world["repos"]["good"], world["digest"][7:19]
    decided = [s for s in subjects(repo) if " interval " not in s]
    assert decided[:2] == [f"aicd: canary {short} promote to champion", f"aicd: canary {short} step 50% -> 100%"]
    assert overlay(repo)["spec"]["canary"] == []
    assert "**promote**" in evidence and "| 50% | pass | step |" in evidence and "| 100% | pass | promote |" in evidence
    assert 'aicd_requests_total{isvc="good",role="canary",code=~"5.."}' in evidence


def test_5xx_canary_is_rolled_back_relative_to_stable(world):
    action, evidence = rollout(world, "bad")
    assert action == "rollback", evidence
    assert trailers(world["repos"]["bad"])["Aicd-Canary-Decision"] == "rollback"
    assert "| 50% | fail | rollback |" in evidence and "vs stable 0.000% (max +5.000%)" in evidence


def test_canary_that_never_becomes_ready_is_rolled_back(world):
    action, evidence = rollout(world, "notready")
    assert action == "rollback", evidence
    assert "| not-ready | rollback |" in evidence, evidence
    assert "not live and Ready within delivery.sync.timeout_seconds=4" in evidence
    assert "RevisionMissing" in evidence
    assert overlay(world["repos"]["notready"])["spec"]["canary"] == []
    assert trailers(world["repos"]["notready"])["Aicd-Canary-Decision"] == "rollback"


def test_hanging_canary_is_rolled_back(world):
    proc, _ = world["procs"]["hang"]
    os.killpg(proc.pid, signal.SIGSTOP)          # hangs: no answers, no scrapes
    action, evidence = rollout(world, "hang", max_intervals=5)
    assert action == "rollback", evidence
    assert "| down | rollback |" in evidence and "the canary predictor is down" in evidence, evidence
    assert subjects(world["repos"]["hang"])[0] == f"aicd: canary {world['digest'][7:19]} rollback (down)"


def test_low_traffic_is_inconclusive_then_ends_by_policy(world):
    action, evidence = rollout(world, "quiet")
    assert action == "rollback", evidence
    rows = [line.split(" | ")[2:4] for line in evidence.splitlines() if line.startswith("| 1 |") or
            line.startswith("| 2 |")]
    assert rows == [["inconclusive", "wait"], ["inconclusive", "rollback"]], evidence
    short = world["digest"][7:19]
    assert subjects(world["repos"]["quiet"])[:2] == [f"aicd: canary {short} rollback (inconclusive 2 times, policy)",
                                                     f"aicd: canary {short} interval 1: inconclusive"]
    assert trailers(world["repos"]["quiet"])["Aicd-Canary-Inconclusive"] == "2"


def test_retried_step_resumes_the_analysis_from_git(world):
    """The first attempt ends after one failed interval (as a killed pod would); the retry reads the
    counter back from Git, so its first failed interval is the second and rolls back."""
    action, evidence = rollout(world, "retry", max_intervals=1)
    assert action == "wait" and "| 1 | 50% | fail | wait |" in evidence, evidence
    assert trailers(world["repos"]["retry"])["Aicd-Canary-Failed"] == "1"
    action, evidence = rollout(world, "retry")
    assert action == "rollback", evidence
    assert "| 2 | 50% | fail | rollback |" in evidence
    assert trailers(world["repos"]["retry"])["Aicd-Canary-Failed"] == "2"

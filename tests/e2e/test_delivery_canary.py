"""End to end: evaluated candidate -> gate -> promote into a bare repo -> canary analysis -> Git decision.

Real parts: the git CLI with bare repositories, the aicd predictor (`python -m
aicd.components.serving`, tiny model plus a real PEFT adapter) started with the very
arguments the promotion wrote into Git, and the Debian Prometheus binary scraping
them on 127.0.0.1. Only Kubernetes is absent: the test starts the stable and canary
predictors itself, as KServe would from the InferenceService, and plays the gateway's
traffic split. The candidate's evaluation report is built in the contract's shape.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import yaml

from aicd.components.cards import write_card
from aicd.components.delivery import isvc
from aicd.components.delivery.canary import analyse_canary, run_canary
from aicd.components.delivery.gate import gate_candidate
from aicd.components.delivery.gitops import promote_adapter, promote_base_model
from aicd.components.errors import DeliveryError
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
OVERLAY = "manifests/overlays/production/inferenceservice.yaml"
PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def git(*args) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def make_adapter(base: Path, out: Path) -> dict:
    """A real (untrained) LoRA adapter on the tiny model, as a Model artifact with a card."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(str(out), safe_serialization=True)
    return write_card(out, "adapter", task="causal-lm", base_model=str(base), base_digest="sha256:tiny",
                      method="lora", hyperparameters={"r": 4}, data_fingerprint="fp-e2e", metrics={})


def evaluated(model: dict) -> dict:
    """The candidate's evaluation report, in the contract's shape."""
    return {"kind": "evaluation", "task": "causal-lm", "split": "test", "n": 48, "complete": True, "model": model,
            "metrics": {"token_f1": {"value": 0.3, "low": 0.25, "high": 0.35},
                        "rouge_l": {"value": 0.3, "low": 0.25, "high": 0.35}},
            "behavioural": {"case-invariance": {"pass_rate": 1.0, "min_pass_rate": 0.5, "passed": True}},
            "probe": {"passed": True, "changed": 2, "total": 2}}


COMPARISON = {"n": 48, "confidence": 0.95, "metrics": {
    m: {"candidate": 0.3, "champion": 0.28, "diff": 0.02, "low": -0.005, "high": 0.045, "higher_is_better": True}
    for m in ("token_f1", "rouge_l", "chrf")}}
# the support-bot gates demand a significantly lower held-out answer NLL
COMPARISON["metrics"]["nll"] = {"candidate": 2.6, "champion": 2.9, "diff": -0.3, "low": -0.4, "high": -0.2,
                                "higher_is_better": False}


def make_spec(raw: dict, repo: Path, isvc_name: str, prometheus: str, tiny: Path, **canary) -> object:
    raw = dict(raw)
    raw["candidates"] = [{"name": "tiny", "uri": str(tiny)}]
    raw["delivery"] = {"gitops": {"repo": str(repo), "path": "manifests/overlays/production"},
                       "serving": {"name": isvc_name}, "prometheus_url": prometheus,
                       "canary": {"steps": [50, 100], "interval_seconds": 6, "min_requests": 6,
                                  "max_error_rate": 0.05, "max_latency_ratio": 5.0, **canary}}
    return parse_spec(raw)


def deliver(spec, adapter: Path, card: dict) -> None:
    """The gate and promotion path: first champion (base model), then the adapter as canary at 50%."""
    base = {"name": "tiny", "uri": spec.candidates[0].uri, "digest": None}
    first = gate_candidate(spec, evaluated(base), COMPARISON, None)
    assert first["passed"], first["reasons"]
    promote_base_model(spec, first)
    blessing = gate_candidate(spec, evaluated({"name": "lora", "uri": str(adapter), "digest": card["digest"]}),
                              COMPARISON, card["digest"], champion=base)
    assert blessing["passed"], blessing["reasons"]
    result = promote_adapter(spec, blessing, adapter)
    assert (result.action, result.after.traffic) == ("canary", 50)


def overlay(repo: Path) -> dict:
    return yaml.safe_load(git("--git-dir", str(repo), "show", f"main:{OVERLAY}"))


def subjects(repo: Path) -> list[str]:
    return git("--git-dir", str(repo), "log", "--format=%s", "main").splitlines()


def start_predictor(args: list[str], log: Path, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    """The predictor with the arguments Git declares (as KServe would run it), on a loopback port."""
    port = free_port()
    cmd = [sys.executable, "-m", "aicd.components.serving", *args, "--host", HOST, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"{HOST}:{port}"


def wait_ready(proc: subprocess.Popen, address: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"predictor exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"predictor at {address} not ready: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def prometheus_config(targets: list[tuple[str, dict]]) -> str:
    """Static scrape jobs; each target's labels come from the predictor Git declares for it, as the
    monitoring component's relabelling derives them from the pod labels (aicd.dev/service, aicd.dev/role)."""
    scrape = [{"job_name": f"{labels[isvc.SERVICE]}-{labels[isvc.ROLE]}", "scrape_interval": "1s",
               "scrape_timeout": "1s", "static_configs": [{"targets": [address], "labels": {
                   "isvc": labels[isvc.SERVICE], "role": labels[isvc.ROLE]}}]} for address, labels in targets]
    return yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape})


def traffic(targets: list[tuple[str, str, int, str | None]], stop_event: threading.Event) -> None:
    """The gateway's split, weighted round robin of small completions over (address, model, weight, rating):
    each answered request of a target with a rating gets that user feedback."""
    order = [(address, model, rating) for address, model, weight, rating in targets for _ in range(weight)]
    i = 0
    with requests.Session() as session:
        while not stop_event.is_set():
            address, model, rating = order[i % len(order)]
            body = {"model": model, "prompt": "What is AI?", "max_tokens": 2}
            try:
                resp = session.post(f"http://{address}/openai/v1/completions", json=body, timeout=10)
                if rating and resp.status_code == 200:
                    session.post(f"http://{address}/v1/feedback", json={"id": resp.json()["id"], "rating": rating},
                                 timeout=10).raise_for_status()
            except requests.RequestException:
                pass
            i += 1
            time.sleep(0.02)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not Path(PROMETHEUS).is_file():
        pytest.skip(f"no Prometheus binary at {PROMETHEUS}: run `make services` or set PROMETHEUS_BIN")
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
        loader = threading.Thread(target=traffic, args=([(stable[1], "good", 2, "up"), (good[1], "good", 1, "down"), (bad[1], "bad", 1, None)], halt))
        loader.start()
        try:
            _wait_for_rates(prom_url)
            yield {"specs": specs, "repos": repos, "prometheus": prom_url, "digest": card["digest"]}
        finally:
            halt.set()
            loader.join()
    finally:
        for proc in procs:
            stop(proc)


def _wait_for_rates(url: str) -> None:
    query = 'sum(increase(aicd_requests_total{isvc="bad",role="canary"}[4s]))'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
        if result and float(result[0]["value"][1]) > 0:
            return
        time.sleep(0.5)
    raise AssertionError("Prometheus never had request rates for the canary")


def test_good_canary_is_stepped_then_promoted(world):
    spec, repo = world["specs"]["good"], world["repos"]["good"]
    seen = []
    final = run_canary(spec, max_intervals=12, on_step=seen.append)
    # On a loaded machine an interval can see fewer than min_requests: it waits (inconclusive, no commit).
    decisive = [s.action for s in seen if s.action != "wait"]
    assert decisive == ["step", "promote"], [(s.action, s.interval.reasons) for s in seen]
    assert final.interval.decision == "pass" and final.interval.error_rate == 0.0
    doc = overlay(repo)["spec"]
    assert doc["canary"] == []
    assert doc["predictor"]["annotations"][isvc.MODEL_ID] == world["digest"]
    assert doc["predictor"]["labels"][isvc.ROLE] == "stable"
    assert subjects(repo)[:2] == [f"aicd: canary {world['digest'][7:19]} promote to champion",
                                  f"aicd: canary {world['digest'][7:19]} step 50% -> 100%"]


def test_bad_canary_is_rolled_back(world):
    spec, repo = world["specs"]["bad"], world["repos"]["bad"]
    step = run_canary(spec, max_intervals=8)  # inconclusive intervals (too little traffic) just wait
    assert (step.action, step.interval.decision) == ("rollback", "fail")
    assert step.interval.error_rate > spec.delivery.canary.max_error_rate
    assert any(r.startswith("error rate") for r in step.interval.reasons)
    doc = overlay(repo)["spec"]
    assert doc["canary"] == [] and doc["predictor"]["annotations"][isvc.MODEL_ID].startswith("base:")
    assert subjects(repo)[0] == f"aicd: canary {world['digest'][7:19]} rollback"


def test_disliked_canary_is_rolled_back_on_feedback(world):
    """Same healthy predictor as the good case, but its users vote it down: the feedback gate rolls it back."""
    step = run_canary(world["specs"]["disliked"], max_intervals=8)
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
    step = analyse_canary(spec)
    assert (step.action, step.interval.decision, step.commit) == ("wait", "inconclusive", None)
    assert "fewer than delivery.canary.min_requests=100000" in step.interval.reasons[0]
    assert subjects(world["repos"]["quiet"]) == before


@pytest.mark.parametrize("case, match", [
    ("down", "Prometheus at http://127.0.0.1:1 is unreachable"),
    ("no-data", "has no data for the canary predictor of 'nowhere'"),
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
        from aicd.components.delivery.canary import query

        with pytest.raises(DeliveryError, match="Prometheus refused the query 'sum\\(' : HTTP 400 bad_data|HTTP 400"):
            query(world["prometheus"], "sum(")
    else:
        with pytest.raises(DeliveryError, match=match):
            analyse_canary(parse_spec(raw))
    assert subjects(repo) == before

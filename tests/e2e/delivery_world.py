"""Shared parts of the delivery end-to-end tests: real predictors, Prometheus and bare Git repositories.

Only Kubernetes controllers are absent: the tests start the stable and canary predictors
themselves, as KServe would from the InferenceService Git declares, and play the gateway's
traffic split.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import requests
import yaml
from helpers.ports import free_port

from aicd.components.cards import write_card
from aicd.components.delivery import isvc
from aicd.components.delivery.gate import gate_candidate
from aicd.components.delivery.gitops import promote_adapter, promote_base_model
from aicd.components.spec import parse_spec
from aicd.pipelines.gitops import ensure_gitops_repo  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = "manifests/overlays/production/inferenceservice.yaml"
PROMETHEUS = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
HOST = "127.0.0.1"


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
    for m in ("token_f1", "rouge_l")}}


# The gates the delivery tests pass with COMPARISON (the example's own gates are the evaluation tests' concern).
GATES = {"thresholds": {"token_f1": 0.05}, "non_inferiority": {"token_f1": 0.05, "rouge_l": 0.05}}


def make_spec(raw: dict, repo: Path, isvc_name: str, prometheus: str, tiny: Path, **canary) -> object:
    raw = dict(raw)
    raw["candidates"] = [{"name": "tiny", "uri": str(tiny)}]
    raw["metrics"] = {**raw["metrics"], "gates": GATES}
    raw["delivery"] = {"gitops": {"repo": str(repo), "path": "manifests/overlays/production"},
                       "serving": {"name": isvc_name}, "prometheus_url": prometheus,
                       "canary": {"steps": [50, 100], "interval_seconds": 6, "min_requests": 3,
                                  "max_error_rate": 0.05, "max_latency_ratio": 5.0,
                                  # a loaded CI machine can serve few requests in a window: keep waiting
                                  "max_inconclusive_intervals": 30, **canary}}
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


def wait_for_rates(url: str, isvc_name: str = "bad") -> None:
    query = 'sum(increase(aicd_requests_total{isvc="' + isvc_name + '",role="canary"}[4s]))'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
        if result and float(result[0]["value"][1]) > 0:
            return
        time.sleep(0.5)
    raise AssertionError("Prometheus never had request rates for the canary")

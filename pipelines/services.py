"""`aicd serve`, `aicd canary`, and a predictor the demo starts on 127.0.0.1 and stops again."""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aicd.components.errors import ServingError

log = logging.getLogger(__name__)
HOST = "127.0.0.1"


def serve(argv: list[str]) -> int:
    """The serving area's entry point (same options as ``python -m aicd.components.serving``)."""
    from aicd.components.serving.server import serve as serve_main

    return serve_main(list(argv))


def canary(spec_path: str, prometheus_url: str | None = None, max_intervals: int | None = None) -> int:
    """Step the canary of the spec's InferenceService through Git, analysing Prometheus between steps.

    Exit code 0 when the canary was promoted (or is still stepping after ``max_intervals``), 1 when
    it was rolled back.
    """
    from aicd.components.delivery.canary import run_canary
    from aicd.components.spec import load_spec

    spec = load_spec(spec_path)

    def show(step) -> None:
        interval = step.interval
        reasons = "; ".join(interval.reasons)
        print(f"canary interval {step.number}: {step.action} (traffic {step.traffic}%, {interval.decision}, "
              f"{interval.requests:.0f} requests{', commit ' + step.commit[:12] if step.commit else ''})"
              f"{': ' + reasons if reasons else ''}",
              flush=True)

    print(f"canary of {spec.delivery.serving.name}: steps {spec.delivery.canary.steps}, every "
          f"{spec.delivery.canary.interval_seconds:g}s, Prometheus {prometheus_url or spec.delivery.prometheus_url}")
    last = run_canary(spec.delivery, prometheus_url, max_intervals, on_step=show)
    print(f"canary finished: {last.action}")
    return 1 if last.action == "rollback" else 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Predictor:
    url: str
    pid: int
    log_file: Path

    @property
    def openai_base(self) -> str:
        return f"{self.url}/openai/v1"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_predictor(base: str, adapters: dict[str, str], log_dir: Path, *, task: str = "causal-lm",
                      model_name: str = "base", timeout: float = 300.0) -> Iterator[Predictor]:
    """Start the predictor on a free loopback port, wait until it is ready, stop it by PID after."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "predictor.log"
    cmd = [sys.executable, "-m", "aicd.components.serving", "--base", base, "--task", task, "--host", HOST,
           "--port", str(port), "--model-name", model_name, "--log-dir", str(log_dir)]
    for name, uri in adapters.items():
        cmd += ["--adapter", f"{name}={uri}"]
    with open(log_file, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    predictor = Predictor(url=f"http://{HOST}:{port}", pid=proc.pid, log_file=log_file)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(predictor.url):
            if proc.poll() is not None:
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
                raise ServingError(f"the predictor exited with code {proc.returncode} before it was ready:\n{tail}",
                                   f"see {log_file}")
            if time.monotonic() > deadline:
                raise ServingError(f"the predictor was not ready after {timeout:.0f}s", f"see {log_file}")
            time.sleep(0.5)
        yield predictor
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a server by its PID: SIGTERM, then SIGKILL if it is still running after ``grace`` seconds."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def ask(predictor: Predictor, model: str, question: str, max_tokens: int = 48, system: str | None = None) -> str:
    """One chat completion through the official OpenAI client (with the spec's system prompt, as trained)."""
    from openai import OpenAI

    client = OpenAI(base_url=predictor.openai_base, api_key="not-needed-on-loopback", max_retries=0, timeout=120)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
    return (reply.choices[0].message.content or "").strip()

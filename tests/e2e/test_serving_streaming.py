"""A real predictor process (tiny base + 2 adapters, --mix-adapters, continuous batching) on 127.0.0.1:
a streamed answer shows up in /metrics as one time-to-first-token and one inter-token gap per further
piece; concurrent requests over several adapters answer as each does alone."""

import concurrent.futures
import json
import re
import time

import httpx
import pytest
from helpers.adapters import make_lora_adapter
from helpers.predictor import predictor

pytestmark = [pytest.mark.e2e]
PROMPTS = ["What is AI?", "Tell me a joke.", "How are you?", "Hello there, friend", "Where is the doctor?"]


@pytest.fixture(scope="module")
def served(tiny_causal_lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    args = ["--base", str(tiny_causal_lm), "--mix-adapters", "--max-batch-size", "4", "--max-batch-wait-ms", "5"]
    for name, seed in (("a1", 1), ("a2", 2)):
        args += ["--adapter", f"{name}={make_lora_adapter(tiny_causal_lm, root / name, seed=seed)}"]
    with predictor(args, root) as url:
        yield url


def _metric(text: str, name: str, adapter: str) -> float:
    found = re.search(rf'^{name}{{adapter="{adapter}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _streamed(url: str, body: dict) -> tuple[list[str], float]:
    """The non-empty pieces of a streamed completion and the request's wall time (s)."""
    pieces, started = [], time.perf_counter()
    with httpx.stream("POST", f"{url}/openai/v1/completions", json={**body, "stream": True}, timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                text = json.loads(line[6:])["choices"][0]["text"]
                pieces += [text] if text else []
    return pieces, time.perf_counter() - started


def test_a_stream_is_counted_in_the_latency_histograms_of_metrics(served):
    names = ("aicd_time_to_first_token_seconds_count", "aicd_time_to_first_token_seconds_sum",
             "aicd_inter_token_latency_seconds_count", "aicd_inter_token_latency_seconds_sum")
    before = httpx.get(f"{served}/metrics", timeout=10).text
    pieces, wall = _streamed(served, {"model": "a2", "prompt": "Tell me a joke.", "max_tokens": 12})
    after = httpx.get(f"{served}/metrics", timeout=10).text
    first_n, first_s, gap_n, gap_s = (_metric(after, n, "a2") - _metric(before, n, "a2") for n in names)
    assert len(pieces) >= 2, f"precondition: the tiny model streams several pieces, got {pieces}"
    assert first_n == 1 and gap_n == len(pieces) - 1
    assert 0 < first_s <= wall and 0 <= gap_s <= wall and first_s + gap_s <= wall
    assert 'aicd_time_to_first_token_seconds_bucket{adapter="a2",le="+Inf"}' in after
    assert 'aicd_inter_token_latency_seconds_bucket{adapter="a2",le="+Inf"}' in after
    plain = httpx.post(f"{served}/openai/v1/completions", timeout=60,
                       json={"model": "a2", "prompt": "Tell me a joke.", "max_tokens": 12}).json()
    assert "".join(pieces) == plain["choices"][0]["text"]
    again = httpx.get(f"{served}/metrics", timeout=10).text  # a whole answer is no stream: no first token
    assert _metric(again, names[0], "a2") == _metric(after, names[0], "a2")


def test_concurrent_requests_over_adapters_answer_as_alone(served):
    """Rows of different adapters share batches (and join running ones); each answer is its own."""
    jobs = [(model, prompt) for prompt in PROMPTS for model in ("base", "a1", "a2")]

    def ask(job: tuple[str, str]) -> str:
        model, prompt = job
        body = {"model": model, "prompt": prompt, "max_tokens": 10 + len(prompt) % 5, "temperature": 0}
        resp = httpx.post(f"{served}/openai/v1/completions", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.json()["choices"][0]["text"]

    alone = [ask(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(ask, jobs))
    assert together == alone
    assert len({alone[i] for i in range(3)}) == 3, "precondition: the adapters answer differently"

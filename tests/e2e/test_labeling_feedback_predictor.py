"""A real predictor's payload log with user feedback becomes a feedback data set.

The aicd predictor (components/serving) serves the tiny random Llama on 127.0.0.1 with
payload logging; users send chat requests and feedback through its HTTP API;
collect_feedback turns the log into a data set version.
"""

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from helpers.ports import free_port

from aicd.components.data.format import SPLITS, read_quarantine, read_split
from aicd.components.labeling.feedback import collect_feedback
from aicd.pipelines.services import stop_process

pytestmark = pytest.mark.e2e


@pytest.fixture
def predictor(tiny_causal_lm, tmp_path):
    port, log_dir = free_port(), tmp_path / "logs"
    out = open(tmp_path / "predictor.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "aicd.components.serving", "--base", str(tiny_causal_lm),
                             "--host", "127.0.0.1", "--port", str(port), "--model-name", "support-bot",
                             "--log-dir", str(log_dir), "--max-new-tokens-limit", "16"],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("predictor did not start: " + (tmp_path / "predictor.log").read_text()[-3000:])
            time.sleep(0.25)
        yield url, log_dir
    finally:
        stop_process(proc, grace=20)


def chat(url: str, text: str) -> dict:
    resp = requests.post(f"{url}/openai/v1/chat/completions", timeout=60,
                         json={"model": "support-bot", "max_tokens": 8,
                               "messages": [{"role": "user", "content": text}]})
    assert resp.status_code == 200, resp.text
    return resp.json()


def feedback(url: str, rid: str, rating: str, correction: str | None = None) -> None:
    resp = requests.post(f"{url}/v1/feedback", json={"id": rid, "rating": rating, "correction": correction},
                         timeout=10)
    assert resp.status_code < 300, resp.text


def test_predictor_log_with_feedback_becomes_a_dataset(predictor, support_bot_spec, tmp_path):
    url, log_dir = predictor
    liked = chat(url, "What is AI? Write to me at jane@example.com")
    fixed = chat(url, "Tell me a joke")
    disliked = chat(url, "How are you?")
    chat(url, "No feedback on this one")
    feedback(url, liked["id"], "up")
    feedback(url, fixed["id"], "down", "Why did the computer see a doctor? It had a virus.")
    feedback(url, disliked["id"], "down")

    result = collect_feedback(support_bot_spec, log_dir, tmp_path / "feedback")
    rows = {r["id"]: r for s in SPLITS for r in read_split(tmp_path / "feedback", s)}
    assert set(rows) == {liked["id"], fixed["id"]} and result.rows == 2
    up = rows[liked["id"]]
    assert up["instruction"] == "What is AI? Write to me at [EMAIL]"
    assert up["response"] == liked["choices"][0]["message"]["content"] and up["source"] == "feedback:up"
    corrected = rows[fixed["id"]]
    assert corrected["response"] == "Why did the computer see a doctor? It had a virus."
    assert corrected["rejected"] == fixed["choices"][0]["message"]["content"]
    assert [q["kind"] for q in read_quarantine(tmp_path / "feedback")] == ["thumbs-down"]
    card = json.loads((tmp_path / "feedback" / "card.json").read_text())
    assert card["feedback"]["requests"] == 4 and card["feedback"]["feedback"] == 3
    assert card["feedback"]["masked"]["email"] == 1
    assert "jane@example.com" not in "".join(p.read_text(errors="ignore")
                                             for p in (tmp_path / "feedback").iterdir() if p.suffix == ".jsonl")

"""The payload log stays bounded (rotation by size and age, a disk budget, masking) and
collect_feedback reads it in bounded memory (a 1 GB log, streamed, in a subprocess whose
peak resident memory is measured)."""

import json
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from aicd.components.data.format import SPLITS, read_split
from aicd.components.labeling.feedback import collect_feedback, read_log
from aicd.components.serving.telemetry import PayloadLog


def _request(log: PayloadLog, rid: str, prompt: str = "hi", answer: str = "hello") -> None:
    log.request(rid, "base", "/openai/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": prompt}], "user": "alice@example.com"},
                {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}, 1.0)


def test_rotation_by_size_keeps_every_record_readable(tmp_path):
    log = PayloadLog(tmp_path, max_bytes=4096, budget_bytes=1 << 30)
    for i in range(100):
        _request(log, f"r{i:03d}")
    log.feedback("r000", "up", None, "base")
    rotated = sorted(tmp_path.glob("payloads-*.jsonl"))
    assert len(rotated) >= 5 and all(p.stat().st_size <= 4096 for p in rotated)
    assert (tmp_path / "payloads.jsonl").stat().st_size <= 4096
    requests, feedback, bad, count = read_log(tmp_path)  # the live file and the rotated ones, joined
    assert count == 100 and set(feedback) == {"r000"} and set(requests) == {"r000"} and not bad


def test_rotation_by_age(tmp_path, monkeypatch):
    log = PayloadLog(tmp_path, max_age_s=60)
    _request(log, "r1")
    monkeypatch.setattr(time, "time", lambda: log._opened + 61)
    _request(log, "r2")
    assert len(list(tmp_path.glob("payloads-*.jsonl"))) == 1
    assert json.loads((tmp_path / "payloads.jsonl").read_text())["id"] == "r2"


def test_the_disk_budget_deletes_the_oldest_rotated_files(tmp_path):
    log = PayloadLog(tmp_path, max_bytes=2048, budget_bytes=8192)
    for i in range(300):
        _request(log, f"r{i:03d}")
    total = sum(p.stat().st_size for p in tmp_path.glob("payloads*.jsonl"))
    assert total <= 8192 + 2048
    requests, _, _, count = read_log(tmp_path)
    assert 0 < count < 300  # the oldest were dropped, the newest kept
    last = [json.loads(line)["id"] for line in (tmp_path / "payloads.jsonl").read_text().splitlines()]
    assert last[-1] == "r299"


def test_configured_fields_are_masked_before_writing(tmp_path):
    log = PayloadLog(tmp_path, mask_fields=("user", "content"))
    _request(log, "r1", prompt="my card is 4111 1111 1111 1111")
    raw = (tmp_path / "payloads.jsonl").read_text()
    assert "4111" not in raw and "alice@example.com" not in raw
    record = json.loads(raw)
    assert record["request"]["messages"][0] == {"role": "user", "content": "[masked]"}
    assert record["request"]["user"] == "[masked]" and record["request"]["model"] == "m"


GIB = 1 << 30
FEEDBACK = 500
PEAK_LIMIT_MB = 300


def _write_big_log(path, size: int) -> int:
    """A payload log of at least ``size`` bytes of chat requests (~640 bytes each); FEEDBACK of them, spread
    evenly, get a thumbs-up."""
    pad = "x" * 300
    line = ('{{"type": "request", "id": "r{0:09d}", "time": "2026-01-01T00:00:00Z", "adapter": "base", '
            '"endpoint": "/openai/v1/chat/completions", "request": {{"model": "m", "messages": [{{"role": "user", '
            '"content": "question {0}"}}]}}, "response": {{"choices": [{{"index": 0, "message": {{"role": '
            '"assistant", "content": "answer {0} ' + pad + '"}}}}]}}, "latency_ms": 1.0}}\n')
    written, n = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while written < size:
            block = "".join(line.format(i) for i in range(n, n + 20_000))
            fh.write(block)
            written += len(block)
            n += 20_000
        for i in range(0, FEEDBACK * (n // FEEDBACK), n // FEEDBACK):
            fh.write(json.dumps({"type": "feedback", "id": f"r{i:09d}", "time": "2026-01-01T00:01:00Z",
                                 "rating": "up", "correction": None}) + "\n")
    return n


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_1_gb_log_is_collected_in_bounded_memory(tmp_path, support_bot_spec):
    """A 1 GiB payload log (about 1.7 million requests, 500 with feedback) is collected by a subprocess
    whose peak resident memory (VmHWM) stays under 300 MB: the log is streamed twice (feedback, then
    the requests that have feedback), never held whole. Reading it whole took several GB."""
    requests = _write_big_log(tmp_path / "payloads.jsonl", GIB)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(support_bot_spec))
    script = textwrap.dedent(f"""
        import json, yaml
        from aicd.components.labeling.feedback import collect_feedback
        spec = yaml.safe_load(open({str(tmp_path / "spec.yaml")!r}))
        result = collect_feedback(spec, {str(tmp_path)!r}, {str(tmp_path / "out")!r})
        peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
        print(json.dumps({{"rows": result.rows, "peak_mb": peak}}))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    finally:
        (tmp_path / "payloads.jsonl").unlink()  # 1 GiB: never left behind in the temporary folder
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"1 GiB log, {requests} requests: peak RSS {figures['peak_mb']} MB")
    assert figures["peak_mb"] < PEAK_LIMIT_MB, figures
    rows = [r for s in SPLITS for r in read_split(tmp_path / "out", s)]
    assert figures["rows"] == len(rows) == FEEDBACK and requests >= 1_500_000


def test_collect_feedback_joins_rotated_files(tmp_path, support_bot_spec):
    log = PayloadLog(tmp_path, max_bytes=1024)
    for i in range(20):
        _request(log, f"r{i:02d}", prompt=f"question number {i}", answer=f"answer number {i}")
    log.feedback("r00", "up", None, "base")
    result = collect_feedback(support_bot_spec, tmp_path, tmp_path / "out")
    assert result.rows == 1 and len(list(tmp_path.glob("payloads-*.jsonl"))) >= 3

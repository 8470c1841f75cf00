"""The predictor (``python -m aicd.components.serving``) as a real process on 127.0.0.1 for the tests."""

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aicd.pipelines.services import stop_process
from helpers.ports import free_port


@contextmanager
def predictor(args: list[str], workdir: Path, timeout: float = 180.0):
    """Start ``python -m aicd.components.serving`` and yield its URL once /v2/health/ready says 200."""
    port = free_port()
    log_file = workdir / f"predictor-{port}.log"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log_file, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "aicd.components.serving", "--host", "127.0.0.1",
                                 "--port", str(port), *args], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"predictor exited with {proc.returncode}:\n{log_file.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"predictor not ready after {timeout:.0f} s:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        stop_process(proc)

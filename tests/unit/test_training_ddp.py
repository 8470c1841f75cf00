"""Distributed: 2 processes under torchrun (gloo, CPU) end where 1 process with the same global batch ends."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.data import causal_rows, make_dataset
from helpers.specs import causal_spec
from safetensors.torch import load_file


def _run(prefix: list[str], spec: dict, tmp: Path, name: str) -> dict:
    spec_file = tmp / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out, summary = tmp / name, tmp / f"{name}.json"
    cmd = prefix + ["-m", "aicd.components.training", "train-adapter", "--spec", str(spec_file), "--dataset",
                    str(tmp / "ds"), "--method", "lora", "--out", str(out), "--checkpoint-root",
                    str(tmp / f"ck-{name}"), "--no-progress", "--summary", str(summary)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Own process group: on a timeout the workers torchrun started are killed with it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"{name} run timed out: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return load_file(str(out / "adapter_model.safetensors")), json.loads((out / "card.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_causal_lm, tmp_path):
    make_dataset(tmp_path / "ds", causal_rows(32))
    # Early stopping on: every rank validates and all must keep the same step (their losses are averaged).
    common = {"max_steps": 4, "learning_rate": 0.01, "warmup_ratio": 0.0, "early_stopping_patience": 1,
              "methods": [{"name": "lora", "method": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]}]}
    # Global batch 8 either way: 1 process x 4 examples x 2 accumulation steps, or 2 processes x 4.
    one, one_card = _run([sys.executable], causal_spec(tiny_causal_lm, tmp_path, batch_size=4,
                                                       gradient_accumulation=2, **common), tmp_path, "one")
    with socket.socket() as sock:  # a free port on loopback for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(port)]
    two, two_card = _run(torchrun, causal_spec(tiny_causal_lm, tmp_path, batch_size=4, **common), tmp_path, "two")
    (steps_one, vals_one), (steps_two, vals_two) = (zip(*c["metrics"]["val_losses"]) for c in (one_card, two_card))
    assert steps_one == steps_two == (2, 4)
    assert vals_two == pytest.approx(vals_one, rel=1e-5)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    assert any("lora_B" in k and one[k].abs().max() > 1e-3 for k in one)  # the adapters did train

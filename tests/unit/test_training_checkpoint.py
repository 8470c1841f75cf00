"""Checkpoints: atomic, verified, resumed exactly (SIGTERM in process, SIGKILL of a subprocess)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.data import causal_rows, make_dataset
from helpers.specs import causal_spec
from safetensors.torch import load_file

from aicd.components.spec import load_spec
from aicd.components.training import loop as loop_module
from aicd.components.training.adapter import train_adapter
from aicd.components.training.checkpoint import (
    SLOW_WRITE_ENV,
    checkpoint_folder,
    checkpoint_key,
    latest_checkpoint,
    list_checkpoints,
)
from aicd.components.training.loop import TrainingInterrupted

ROOT = Path(__file__).resolve().parents[2]


def _spec(model_dir, root, **training):
    settings = {"max_steps": 8, "batch_size": 4, "learning_rate": 0.01,
                "methods": [{"name": "lora", "method": "lora", "r": 4, "dropout": 0.1,
                             "target_modules": ["q_proj", "v_proj"]}], **training}
    return causal_spec(model_dir, root, **settings)


def _adapter(out: Path) -> dict:
    return load_file(str(out / "adapter_model.safetensors"))


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_key_is_stable_and_specific():
    training = {"learning_rate": 0.001, "methods": [{"name": "a"}]}
    key = checkpoint_key(training, "fp1", {"method": "lora"})
    assert key == checkpoint_key(dict(reversed(training.items())), "fp1", {"method": "lora"})
    assert key != checkpoint_key(training, "fp2", {"method": "lora"})
    assert key != checkpoint_key(training, "fp1", {"method": "dora"})
    assert checkpoint_folder("pvc://claim/ckpt", key) == Path(os.environ.get("AICD_PVC_ROOT", "/mnt/pvc")) / \
        "claim/ckpt" / key


def test_sigterm_saves_a_checkpoint_and_resume_is_bitwise_equal(tiny_causal_lm, tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "ds", causal_rows())
    train_adapter(_spec(tiny_causal_lm, tmp_path / "ck-ref"), data, "lora", tmp_path / "ref", progress=False)

    real_step = loop_module._step
    calls = []

    def step_then_sigterm(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls.append(loss)
        if len(calls) == 3:  # SIGTERM arrives during step 3 (checkpoints are every 2 steps)
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    spec = _spec(tiny_causal_lm, tmp_path / "ck")
    monkeypatch.setattr(loop_module, "_step", step_then_sigterm)
    with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 3 of 8; checkpoint saved in"):
        train_adapter(spec, data, "lora", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(loop_module, "_step", real_step)
    result = train_adapter(spec, data, "lora", tmp_path / "out", progress=False)
    assert result.resumed_from == 3
    assert _bitwise_equal(_adapter(tmp_path / "out"), _adapter(tmp_path / "ref"))
    # The loss history survived the interruption too.
    assert len(result.losses) == 8 and result.losses[:3] == calls[:3]


def test_damaged_checkpoints_are_skipped_and_temporaries_removed(tiny_causal_lm, tmp_path):
    data = make_dataset(tmp_path / "ds", causal_rows())
    spec = _spec(tiny_causal_lm, tmp_path / "ck", max_steps=4, checkpoint={"every_steps": 1, "keep": 3,
                                                                        "root": str(tmp_path / "ck")})
    result = train_adapter(spec, data, "lora", tmp_path / "out", progress=False)
    folder = result.checkpoint_dir
    assert [p.name for p in list_checkpoints(folder)] == ["step-00000004", "step-00000003", "step-00000002"]
    (folder / "step-00000004" / "trainable.safetensors").write_bytes(b"torn write")
    (folder / ".step-00000005.abc.tmp").mkdir()
    assert latest_checkpoint(folder).name == "step-00000003"
    assert not (folder / ".step-00000005.abc.tmp").exists()


def _cli(spec_file: Path, data: Path, out: Path, ck: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aicd.components.training", "train-adapter", "--spec", str(spec_file),
           "--dataset", str(data), "--method", "lora", "--out", str(out), "--checkpoint-root", str(ck),
           "--no-progress"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, proc, timeout=120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bitwise_equal(tiny_causal_lm, tmp_path):
    data = make_dataset(tmp_path / "ds", causal_rows())
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tiny_causal_lm, tmp_path / "unused", max_steps=12,
                                              checkpoint={"every_steps": 2, "keep": 2})))
    env = {**os.environ, "OMP_NUM_THREADS": "1", SLOW_WRITE_ENV: "0.25"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the OMP_NUM_THREADS=1 subprocesses
    try:  # the uninterrupted reference, in this process
        train_adapter(load_spec(spec_file), data, "lora", tmp_path / "ref", checkpoint_root=str(tmp_path / "ck-ref"),
                      progress=False)
    finally:
        torch.set_num_threads(threads)

    ck = tmp_path / "ck"
    folders = lambda: [p for p in ck.glob("*") if p.is_dir()]  # noqa: E731
    temporaries = lambda: [t for f in folders() for t in f.glob(".step-*.tmp")]  # noqa: E731
    rng = random.Random(os.getpid())
    kills = 0
    # 1st run: killed while a checkpoint is being written. 2nd: at a random moment after it resumed.
    proc = _cli(spec_file, data, tmp_path / "out", ck, env)
    assert _wait_for(lambda: temporaries(), proc), "no checkpoint write was seen"
    proc.kill(), proc.wait()
    kills += 1
    torn = temporaries()
    assert torn, "the kill should leave a half-written temporary checkpoint"
    proc = _cli(spec_file, data, tmp_path / "out", ck, env)
    assert _wait_for(lambda: not any(t.exists() for t in torn), proc), "leftover temporaries were not cleaned"
    time.sleep(rng.uniform(0.2, 1.5))
    if proc.poll() is None:
        proc.kill(), proc.wait()
        kills += 1
    proc = _cli(spec_file, data, tmp_path / "out", ck, env)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert kills >= 1
    assert _bitwise_equal(_adapter(tmp_path / "out"), _adapter(tmp_path / "ref"))
    assert not temporaries()

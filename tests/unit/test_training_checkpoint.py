"""Checkpoints: atomic, verified, resumed exactly (SIGTERM in process, SIGKILL of a subprocess)."""

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.data import causal_rows, make_dataset
from helpers.specs import causal_spec
from safetensors.torch import load_file

from aicd.components.cards import CRASH_ENV
from aicd.components.spec import load_spec
from aicd.components.training import loop as loop_module
from aicd.components.training.adapter import train_adapter
from aicd.components.training.checkpoint import checkpoint_folder, checkpoint_key, latest_checkpoint, list_checkpoints
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


STEPS, KILLS, SEED = 10, 22, 20261206
PHASES = ("step", "files", "card", "renamed")  # in run order within one step (checkpoint every step)


def _point(step: int, phase: str) -> str:
    return f"step:{step}" if phase == "step" else f"checkpoint:{step}:{phase}"


def _last_complete(step: int, phase: str) -> int:
    """The newest complete checkpoint when a kill lands at (step, phase): step's own once renamed."""
    return step if phase == "renamed" else step - 1


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_22_seeded_sigkills_each_resume_from_the_last_complete_checkpoint_and_end_bitwise_equal(
        tiny_causal_lm, tmp_path):
    """22 real SIGKILLs at seeded points spread over a 10-step run (after an optimizer step, inside the
    checkpoint write before its card, after the card before the rename, after the rename): every run
    after a kill must log that it resumed from the last complete checkpoint (never step 0, never a torn
    one), and the final adapter is bitwise equal to an uninterrupted run. Code that ignored checkpoints
    and retrained from step 0 would fail the resume assertions."""
    data = make_dataset(tmp_path / "ds", causal_rows())
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tiny_causal_lm, tmp_path / "unused", max_steps=STEPS,
                                              checkpoint={"every_steps": 1, "keep": 2})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the OMP_NUM_THREADS=1 subprocesses
    try:  # the uninterrupted reference, in this process
        train_adapter(load_spec(spec_file), data, "lora", tmp_path / "ref", checkpoint_root=str(tmp_path / "ck-ref"),
                      progress=False)
    finally:
        torch.set_num_threads(threads)

    points = [(step, phase) for step in range(1, STEPS + 1) for phase in PHASES][:-1]  # not the very end
    plan = sorted(random.Random(SEED).sample(points, KILLS), key=points.index)
    ck, resumed_at = tmp_path / "ck", None
    for step, phase in [*plan, (None, None)]:
        run_env = {**env, CRASH_ENV: _point(step, phase)} if step else env
        proc = _cli(spec_file, data, tmp_path / "out", ck, run_env)
        stderr = proc.communicate(timeout=600)[1]
        resumed = re.findall(r"resuming from \S*step-(\d{8})", stderr)
        if resumed_at is None:
            assert not resumed, stderr[-2000:]  # the first run starts fresh
        else:
            assert [int(r) for r in resumed] == [resumed_at], (step, phase, stderr[-2000:])
        if step is None:
            assert proc.returncode == 0, stderr[-3000:]
            break
        assert proc.returncode == -signal.SIGKILL, (step, phase, proc.returncode, stderr[-3000:])
        resumed_at = _last_complete(step, phase) or None
        folders = [p for p in ck.iterdir() if p.is_dir()] if ck.exists() else []
        latest = latest_checkpoint(folders[0]) if folders else None
        assert (latest.name if latest else None) == (f"step-{resumed_at:08d}" if resumed_at else None), (step, phase)
    assert len(plan) == KILLS >= 20
    assert _bitwise_equal(_adapter(tmp_path / "out"), _adapter(tmp_path / "ref"))

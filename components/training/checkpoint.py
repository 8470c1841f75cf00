"""Atomic, verifiable training checkpoints under a stable key.

A checkpoint is a directory ``step-00000020`` written under a temporary name and
renamed into place (:func:`aicd.components.cards.atomic_dir`) with a card holding the
sha256 of every file, so a run killed mid-write never leaves one that looks complete.
It holds the trainable weights (safetensors), the optimizer state (loaded with
``weights_only=True``), the scheduler, the loop's counters and every RNG state.

The folder is ``<training.checkpoint.root>/<key>``, where the key hashes the spec's
training section, the data fingerprint and the method: a KFP retry of the same step
finds its checkpoints again and resumes.
"""

import hashlib
import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_dir, clean_stale_temporaries, crash_point, verify_card, write_card
from aicd.components.errors import IntegrityError

log = logging.getLogger(__name__)
_STEP = re.compile(r"^step-(\d{8})$")
# Fault injection for tests: seconds to sleep inside a checkpoint write (widens the window a kill can hit).
SLOW_WRITE_ENV = "AICD_TRAIN_SLOW_CHECKPOINT_S"


def checkpoint_key(training: dict, data_fingerprint: str, method: Any) -> str:
    """A stable key of (training section, data fingerprint, method)."""
    blob = json.dumps({"training": training, "data": data_fingerprint, "method": method},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def checkpoint_folder(root: str, key: str) -> Path:
    """``root/key``; ``pvc://claim/path`` roots live under ``AICD_PVC_ROOT`` (default /mnt/pvc)."""
    if root.startswith("pvc://"):
        base = Path(os.environ.get("AICD_PVC_ROOT", "/mnt/pvc")) / root[len("pvc://"):]
    else:
        base = Path(root.removeprefix("file://")).expanduser()
    return base / key


def _rng_state() -> tuple[dict, dict]:
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    np_state = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_version, py_internal, py_gauss = random.getstate()
    meta = {"python": [py_version, list(py_internal), py_gauss], "numpy": [np_state[0], *np_state[2:]]}
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["cuda"]))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def trainable_state(model, device: str | None = None) -> dict:
    """Copies of the trainable parameters (all that training changes; an adapter's few MB where the whole
    state dict is the base model too), on ``device`` when given (the best weights wait on the CPU)."""
    return {name: p.detach().to(device or p.device, copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, state: dict, keep: int,
                    extra: dict | None = None) -> Path:
    """Write ``folder/step-NNNNNNNN`` atomically, then keep only the newest ``keep``."""
    import torch
    from safetensors.torch import save_file

    final = folder / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        for name, tensors in (extra or {}).items():
            save_file(tensors, str(tmp / f"{name}.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        rng, rng_meta = _rng_state()
        save_file(rng, str(tmp / "rng.safetensors"))
        if os.environ.get(SLOW_WRITE_ENV):
            time.sleep(float(os.environ[SLOW_WRITE_ENV]))
        crash_point(f"checkpoint:{step}:files")
        body = {"step": step, "loop": state, "scheduler": scheduler.state_dict(), "rng": rng_meta}
        (tmp / "state.json").write_text(json.dumps(body, sort_keys=True))
        write_card(tmp, "checkpoint", step=step)
        crash_point(f"checkpoint:{step}:card")
    crash_point(f"checkpoint:{step}:renamed")
    for old in list_checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint saved: %s", final)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete-looking checkpoint folders, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint whose files match its card; removes leftovers of interrupted writes."""
    removed = clean_stale_temporaries(folder)
    if removed:
        log.warning("removed %d leftover temporary checkpoint(s) in %s", len(removed), folder)
    for path in list_checkpoints(folder):
        try:
            verify_card(path, kind="checkpoint")
            return path
        except IntegrityError as err:
            log.warning("skipping damaged checkpoint %s: %s", path, err)
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[dict, dict]:
    """Restore weights, optimizer, scheduler and RNG; return (loop state, extra tensors)."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    body = json.loads((path / "state.json").read_text())
    scheduler.load_state_dict(body["scheduler"])
    _set_rng_state(load_file(str(path / "rng.safetensors")), body["rng"])
    extra = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")
             if p.stem not in ("trainable", "rng")}
    return body["loop"], extra

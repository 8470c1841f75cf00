"""What every training entry point shares: the accelerator, seeds, memory, OOM errors, output.

The Model artifact (docs/contracts.md) is written here and only here: weights (PEFT
adapter files or full safetensors), the tokenizer used in training, and ``card.json``.
"""

import contextlib
import logging
import random
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aicd.components.cards import artifact_digest, atomic_dir, sha256_file, write_card
from aicd.components.errors import TrainingError

log = logging.getLogger(__name__)
_DIGESTS: dict[tuple, str] = {}


@dataclass
class TrainResult:
    """What a training run produced, with the figures KFP shows as metrics."""

    model_dir: Path
    card: dict[str, Any]
    method: str
    steps: int
    first_loss: float | None
    final_loss: float | None
    tokens_per_second: float
    seconds: float
    trainable_parameters: int
    peak_memory_mb: float
    resumed_from: int | None = None
    checkpoint_dir: Path | None = None
    best_val_loss: float | None = None
    losses: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Scalar metrics (KFP Metrics.log_metric takes numbers only)."""
        out = {"train_loss_first": self.first_loss, "train_loss_final": self.final_loss,
               "tokens_per_second": self.tokens_per_second, "train_seconds": self.seconds,
               "steps": self.steps, "trainable_parameters": self.trainable_parameters,
               "peak_memory_mb": self.peak_memory_mb, "best_val_loss": self.best_val_loss}
        return {k: float(v) for k, v in out.items() if v is not None}

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_dir"], data["checkpoint_dir"] = str(self.model_dir), str(self.checkpoint_dir)
        data.pop("card")
        return data


def make_accelerator():
    """CPU or GPU accelerator; bf16 autocast on GPUs that support it. Works under torchrun."""
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(cpu=not cuda, mixed_precision=precision)


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def oom_as_error(where: str):
    """Turn an out-of-memory failure into a TrainingError that says what to lower."""
    import torch

    try:
        yield
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise TrainingError(f"{where} ran out of memory ({type(err).__name__})",
                            "lower training.batch_size or task.max_length, raise training.gradient_accumulation, "
                            "or request more memory in training.resources") from err


def base_digest(model_dir: str | Path) -> str:
    """Digest of a base model folder's weights and config (cached per file size and mtime)."""
    root = Path(model_dir)
    files = sorted(p for p in root.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json"))
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _DIGESTS:
        _DIGESTS[key] = artifact_digest({p.name: sha256_file(p) for p in files})
    return _DIGESTS[key]


def write_model_artifact(out_dir: str | Path, model, tokenizer, kind: str, **card: Any) -> dict[str, Any]:
    """Save weights + tokenizer + card atomically; ``kind`` is ``adapter`` or ``model``."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        sort_peft_sets(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        drop_load_settings(tmp)
        written = write_card(tmp, kind, **card)
    log.info("wrote %s artifact %s (%s)", kind, out_dir, written["digest"])
    return written


def sort_peft_sets(model, folder: Path) -> None:
    """Write the set-valued fields of each adapter's ``adapter_config.json`` (``target_modules``, ...) sorted.

    peft writes a set in its iteration order, which follows the process's string hash seed: the same
    adapter trained twice got another ``adapter_config.json`` half of the time, so another content
    digest, and the gate took a retrained copy of the champion for a new model.
    """
    import json

    for name, config in (getattr(model, "peft_config", None) or {}).items():
        sets = [key for key, value in config.to_dict().items() if isinstance(value, set)]
        path = folder / ("" if name == "default" else name) / "adapter_config.json"
        if not sets or not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in sets:
            data[key] = sorted(data[key], key=str)
        path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


# from_pretrained() arguments about where and how to load, which transformers copies into the saved
# tokenizer_config.json (HF_HUB_OFFLINE=1 in the images turns on local_files_only): not the model's.
LOAD_SETTINGS = ("local_files_only", "cache_dir", "force_download", "proxies", "token", "use_auth_token")


def drop_load_settings(folder: Path) -> None:
    """Remove :data:`LOAD_SETTINGS` from ``tokenizer_config.json``: the same training in a step's image
    (offline) and in a local process wrote two tokenizer configs, so two content digests."""
    import json

    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if any(key in data for key in LOAD_SETTINGS):
        path.write_text(json.dumps({k: v for k, v in data.items() if k not in LOAD_SETTINGS}, indent=2,
                                   sort_keys=True) + "\n", encoding="utf-8")


def artifact_size_mb(path: str | Path) -> float:
    """Size of the weights in a Model artifact (adapter or full), in MiB."""
    weights = [p for p in Path(path).glob("*.safetensors")]
    return sum(p.stat().st_size for p in weights) / 2**20

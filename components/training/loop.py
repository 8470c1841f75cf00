"""The training loop: accelerate for devices and DDP, exact resume, SIGTERM checkpoints.

The same function runs as one process or under ``torchrun`` with several: every rank
takes its share of the global batch from the :class:`BatchPlan` and divides its summed
loss by the token count of the whole global batch, so N ranks with batch B give the same
update as one process with batch N*B (up to floating-point summation order).
"""

import contextlib
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aicd.components.cards import crash_point
from aicd.components.errors import TrainingError
from aicd.components.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_state
from aicd.components.training.packing import BatchPlan, collate, mask_format

log = logging.getLogger(__name__)


class TrainingInterrupted(TrainingError):
    """SIGTERM arrived: a checkpoint was saved and the run stopped; running again resumes."""


@dataclass
class LoopConfig:
    steps: int
    learning_rate: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "cosine"
    max_grad_norm: float | None = 1.0
    packing: bool = True
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 50
    keep: int = 2
    eval_every: int | None = None
    patience: int | None = None
    progress: bool = True
    # Classification: a loss weight per class, and the learning rate of peft's modules_to_save (the head).
    class_weights: list[float] | None = None
    head_learning_rate: float | None = None
    # Full fine-tuning: encoder layer i of n learns at learning_rate * layer_lr_decay ** (n - i).
    layer_lr_decay: float | None = None


@dataclass
class LoopResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    tokens: int = 0  # real (non-padding) tokens processed in this session, all ranks
    seconds: float = 0.0
    resumed_from: int | None = None
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_val_loss: float | None = None
    stopped_early: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def first_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


def summed_loss(model, batch: dict, class_weight=None):
    """Sum of the per-target cross-entropies of a batch (response tokens or examples); ``class_weight``
    (a tensor, one weight per class) weights each example of a classifier by its class."""
    import torch.nn.functional as F

    labels = batch.pop("labels")
    if labels.dim() == 1:  # one class per example
        return F.cross_entropy(model(**batch).logits.float(), labels, weight=class_weight, reduction="sum")
    targets = labels[:, 1:]
    if _keeps_logits(model):
        # Project to the vocabulary only where a target follows (the response tokens): the
        # lm_head and the softmax are skipped for prompt and padding positions.
        keep = (targets != -100).any(0).nonzero().squeeze(1)
        logits = model(**batch, use_cache=False, logits_to_keep=keep).logits.float()
        targets = targets[:, keep]
    else:
        logits = model(**batch, use_cache=False).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


def validation_loss(model, examples, batch_size: int, pad_id: int, packing: bool,
                    class_weights: list[float] | None = None) -> float:
    """Mean loss per target over the validation examples (no gradients, eval mode), with the
    training's ``class_weights`` when it has them, so it measures what training minimises."""
    import torch

    from aicd.components.training.examples import target_count

    model.eval()
    device = next(model.parameters()).device
    weight = torch.tensor(class_weights, device=device) if class_weights else None
    fmt = mask_format(model)
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i:i + batch_size], pad_id, packing, *fmt)
            total += summed_loss(model, {k: v.to(device) for k, v in batch.items()}, weight).item()
    return total / max(1, target_count(examples))


def _keeps_logits(model) -> bool:
    """Whether the causal LM's forward takes ``logits_to_keep`` (through DDP and peft wrappers)."""
    import inspect

    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    kind = type(inner)
    if kind not in _KEEPS:
        _KEEPS[kind] = "logits_to_keep" in inspect.signature(inner.forward).parameters
    return _KEEPS[kind]


_KEEPS: dict[type, bool] = {}


def make_scheduler(optimizer, kind: str, warmup_ratio: float, steps: int):
    from transformers import get_scheduler

    name = "constant_with_warmup" if kind == "constant" else kind
    return get_scheduler(name, optimizer, num_warmup_steps=int(warmup_ratio * steps), num_training_steps=steps)


@contextlib.contextmanager
def _sigterm_flag():
    """Yield a one-item list that becomes [True] when SIGTERM arrives (main thread only)."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        log.warning("SIGTERM received: saving a checkpoint after this step")
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _any(accelerator, value: bool) -> bool:
    if accelerator.num_processes == 1:
        return value
    import torch

    return bool(accelerator.reduce(torch.tensor([float(value)]), "sum").item() > 0)


def _resume(cfg: LoopConfig, accelerator, model, optimizer, scheduler) -> tuple[dict, dict]:
    if cfg.checkpoint_dir is None:
        return {}, {}
    if accelerator.is_main_process:
        latest_checkpoint(cfg.checkpoint_dir)  # cleans leftovers of interrupted writes
    accelerator.wait_for_everyone()
    path = latest_checkpoint(cfg.checkpoint_dir) if accelerator.is_main_process else None
    path = _broadcast_path(accelerator, path)
    if path is None:
        return {}, {}
    log.info("resuming from %s", path)
    return load_checkpoint(path, model, optimizer, scheduler)


def _broadcast_path(accelerator, path):
    if accelerator.num_processes == 1:
        return path
    from accelerate.utils import broadcast_object_list

    box = [str(path) if path else None]
    broadcast_object_list(box, from_process=0)
    return Path(box[0]) if box[0] else None


def run_loop(model, plan: BatchPlan, cfg: LoopConfig, accelerator, pad_id: int, eval_fn=None) -> LoopResult:
    """Train ``model`` (its trainable parameters) for ``cfg.steps`` optimizer steps."""
    import torch
    from tqdm.auto import tqdm

    if getattr(model, "hf_quantizer", None) is None:  # quantized (QLoRA) models are placed at load time
        model.to(accelerator.device)  # before the optimizer, so restored state lands on the same device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters", "check training.methods[].target_modules")
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg.scheduler, cfg.warmup_ratio, cfg.steps)
    state, extra = _resume(cfg, accelerator, model, optimizer, scheduler)
    start = state.get("step", 0)
    result = LoopResult(steps=cfg.steps, losses=list(state.get("losses", [])),
                        resumed_from=start or None, val_losses=[tuple(v) for v in state.get("val_losses", [])],
                        best_val_loss=state.get("best_val_loss"), stopped_early=state.get("stopped_early", False))
    best, bad_evals = extra.get("best"), state.get("bad_evals", 0)
    wrapped = accelerator.prepare(model)
    wrapped.train()
    fmt = mask_format(model)
    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not (cfg.progress and accelerator.is_main_process))
    began = time.perf_counter()
    with _sigterm_flag() as stop:
        for step in range(start, start if result.stopped_early else cfg.steps):
            loss = _step(wrapped, plan, step, accelerator, pad_id, cfg, fmt, params, optimizer, scheduler, result)
            crash_point(f"step:{step + 1}")  # kill drills (cards.CRASH_ENV); a no-op otherwise
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{result.tokens / (time.perf_counter() - began):.0f}")
            done = step + 1 == cfg.steps
            if eval_fn is not None and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or done):
                val = float(eval_fn(model))
                if accelerator.num_processes > 1:  # one figure on every rank, so all ranks stop together
                    val = accelerator.reduce(torch.tensor([val], device=accelerator.device), "mean").item()
                wrapped.train()
                result.val_losses.append((step + 1, val))
                if result.best_val_loss is None or val < result.best_val_loss:
                    result.best_val_loss, bad_evals = val, 0
                    best = trainable_state(model, "cpu")
                else:
                    bad_evals += 1
                result.stopped_early = cfg.patience is not None and bad_evals >= cfg.patience
            interrupted = _any(accelerator, stop[0])
            if cfg.checkpoint_dir is not None and (
                    (step + 1) % cfg.checkpoint_every == 0 or done or interrupted or result.stopped_early):
                body = {"step": step + 1, "losses": result.losses, "val_losses": result.val_losses,
                        "best_val_loss": result.best_val_loss, "bad_evals": bad_evals,
                        "stopped_early": result.stopped_early}
                if accelerator.is_main_process:
                    save_checkpoint(cfg.checkpoint_dir, step + 1, model, optimizer, scheduler, body, cfg.keep,
                                    {"best": best} if best is not None else None)
                accelerator.wait_for_everyone()
            if interrupted:
                raise TrainingInterrupted(f"stopped by SIGTERM after step {step + 1} of {cfg.steps}; "
                                          f"checkpoint saved in {cfg.checkpoint_dir}",
                                          "run the same step again (a KFP retry does) to resume from it")
            if result.stopped_early:
                log.info("early stopping after step %d: validation loss did not improve for %d evaluations",
                         step + 1, bad_evals)
                break
    bar.close()
    result.seconds = time.perf_counter() - began
    if best is not None:  # the weights of the best validation loss
        unexpected = model.load_state_dict(best, strict=False).unexpected_keys
        if unexpected:
            raise TrainingError(f"the best validation weights do not fit the model: {unexpected[:3]}",
                                f"delete the checkpoints in {cfg.checkpoint_dir} and train again")
    return result


def param_groups(model, cfg: LoopConfig) -> list[dict]:
    """The optimizer's groups: the adapter, and peft's modules_to_save (a classifier's new head) at
    ``cfg.head_learning_rate`` when set; or, with ``cfg.layer_lr_decay``, one group per depth."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.layer_lr_decay:
        return layer_decay_groups(named, cfg.learning_rate, cfg.layer_lr_decay)
    head = [p for n, p in named if "modules_to_save" in n]
    if not cfg.head_learning_rate or not head:
        return [{"params": [p for _, p in named]}]
    rest = [p for n, p in named if "modules_to_save" not in n]
    return [{"params": rest}, {"params": head, "lr": cfg.head_learning_rate}]


_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
# Embeddings by name: BERT's *_embeddings, Llama's embed_tokens, GPT-2's wte/wpe.
_EMBEDDING = re.compile(r"embed|(?:^|\.)(?:wte|wpe)\.")


def layer_decay_groups(named: list, learning_rate: float, decay: float) -> list[dict]:
    """Layer-wise learning-rate decay: the head, pooler and final norm at ``learning_rate``, layer i of
    n at ``learning_rate * decay ** (n - i)``, the embeddings at ``decay ** (n + 1)``: the lower layers,
    general features already, move least (ULMFiT's discriminative fine-tuning, ELECTRA's decay)."""
    index = {n: int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))}
    if not index:
        raise TrainingError("`training.layer_lr_decay` needs numbered layers (`.layer.N.`, `.layers.N.`, `.h.N.` "
                            f"or `.block.N.`), and no trainable weight of this model has one (e.g. {named[0][0]!r})",
                            "remove `training.layer_lr_decay` for this model")
    layers = max(index.values()) + 1
    groups: dict[int, list] = {}
    for name, param in named:
        depth = layers - index[name] if name in index else (layers + 1 if _EMBEDDING.search(name) else 0)
        groups.setdefault(depth, []).append(param)
    return [{"params": params, "lr": learning_rate * decay ** depth} for depth, params in sorted(groups.items())]


def _step(wrapped, plan, step, accelerator, pad_id, cfg, fmt, params, optimizer, scheduler, result) -> float:
    """One optimizer step over this rank's micro-batches; returns the global mean loss."""
    import torch

    micro = plan.micro_batches(step, accelerator.process_index)
    total = plan.global_targets(step)
    scale = accelerator.num_processes / total
    summed = 0.0
    weight = torch.tensor(cfg.class_weights, device=accelerator.device) if cfg.class_weights else None
    for a, examples in enumerate(micro):
        batch = {k: v.to(accelerator.device) for k, v in collate(examples, pad_id, cfg.packing, *fmt).items()}
        sync = a == len(micro) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(wrapped), accelerator.autocast():
            loss = summed_loss(wrapped, batch, weight)
            accelerator.backward(loss * scale)
        summed += loss.item()
    if cfg.max_grad_norm:
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = sum(plan.examples[i].length for i in plan.global_indices(step))
    if accelerator.num_processes > 1:
        summed = accelerator.reduce(torch.tensor([summed], device=accelerator.device), "sum").item()
    mean = summed / total
    result.losses.append(mean)
    result.tokens += tokens
    return mean

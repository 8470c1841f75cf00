"""train_adapter: fine-tune a base model with one method of the spec into a Model artifact."""

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from aicd.components.cards import read_card
from aicd.components.data.format import read_split
from aicd.components.errors import TrainingError
from aicd.components.spec import MethodSpec, Spec, parse_spec
from aicd.components.training.checkpoint import checkpoint_folder, checkpoint_key
from aicd.components.training.examples import check_length, encode_rows
from aicd.components.training.loop import LoopConfig, run_loop, validation_loss
from aicd.components.training.methods import apply_method, require_qlora
from aicd.components.training.packing import BatchPlan
from aicd.components.training.runtime import (
    TrainResult,
    base_digest,
    make_accelerator,
    oom_as_error,
    peak_memory_mb,
    seed_all,
    write_model_artifact,
)

log = logging.getLogger(__name__)
# A classifier's new head starts random: by default it learns this many times faster than the adapter.
HEAD_LR_FACTOR = 20.0


def find_method(spec: Spec, name: str) -> MethodSpec:
    for method in spec.training.methods:
        if method.name == name:
            return method
    known = ", ".join(m.name for m in spec.training.methods)
    raise TrainingError(f"method {name!r} is not in `training.methods` (known: {known})",
                        "pass the name of one of the spec's methods")


def _load_qlora_base(uri: str, digest: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from aicd.components.models import load_tokenizer
    from aicd.components.uris import resolve_model

    model_dir = resolve_model(uri, digest)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=quant,
                                                 device_map={"": int(os.environ.get("LOCAL_RANK", "0"))},
                                                 trust_remote_code=False, use_safetensors=True)
    return model, load_tokenizer(model_dir), model_dir


def load_base(spec: Spec, method: MethodSpec, uri: str):
    """(model, tokenizer, local dir) of the base model for the task and method."""
    from aicd.components.models import load_causal_lm, load_classifier, task_tokenizer

    if method.method == "qlora":
        if spec.task.type != "causal-lm":
            raise TrainingError("method qlora is supported for causal-lm tasks only", "use lora for classification")
        require_qlora(f"training.methods.{method.name}")
        return _load_qlora_base(uri, spec.pin(uri))
    if spec.task.type == "text-classification":
        if method.method == "dpo":
            raise TrainingError("method dpo is supported for causal-lm tasks only", "use lora for classification")
        model, tokenizer, model_dir = load_classifier(uri, spec.task.labels, spec.pin(uri),
                                                     head_seed=spec.training.seed)
        tokenizer = task_tokenizer(tokenizer, spec.task, saved=True)
        if spec.training.head_init == "label-words":
            init_head_from_label_words(model, tokenizer, spec.task)
        return model, tokenizer, model_dir
    return load_causal_lm(uri, digest=spec.pin(uri))


def init_head_from_label_words(model, tokenizer, task) -> None:
    """Start a decoder classifier's head (``score``, on the normed last-token state, as the LM head is) with
    each class's row set to the output embedding of its label's first token, the token that would follow
    ``task.text_template``: the untrained classifier is then the model's own choice among the labels."""
    import torch

    head, embeddings = getattr(model, "score", None), model.get_input_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.in_features != embeddings.weight.shape[1]:
        raise TrainingError(f"`training.head_init: label-words` needs a decoder classifier whose head `score` "
                            f"reads the last token's state; this {model.config.model_type} model has none",
                            "use head_init: random for this model")
    if not getattr(model.config, "tie_word_embeddings", False):
        raise TrainingError(f"`training.head_init: label-words` needs the model's output embedding (tied to its "
                            f"input embedding); this {model.config.model_type} model has a separate LM head, which "
                            "its classifier does not load", "use head_init: random for this model")
    space = "" if (task.text_template or "").endswith((" ", "\n")) else " "
    firsts = [tokenizer(space + label, add_special_tokens=False)["input_ids"][0] for label in task.labels]
    with torch.no_grad():
        head.weight.copy_(embeddings.weight[firsts])
        if head.bias is not None:
            head.bias.zero_()
    shared = sorted({label for label, first in zip(task.labels, firsts) if firsts.count(first) > 1})
    if shared:
        log.warning("labels %s start with the same token, so their head rows start equal: only training tells "
                    "them apart (label words that differ in their first token give the head a real start)", shared)
    log.info("classifier head starts from the label words' embeddings (first tokens %s)",
             tokenizer.convert_ids_to_tokens(firsts))


def init_head_from_probe(model, tokenizer, rows: list[dict[str, Any]], task, class_weights=None) -> None:
    """Linear probing, then fine-tuning (LP-FT): fit the new linear head to the frozen model's features of
    the training rows (what the head reads: a decoder's last-token state, an encoder's pooled vector), so
    fine-tuning starts from the probe's answer instead of a random head whose first large gradients
    reshape the pre-trained features to fit it (Kumar et al., ICLR 2022)."""
    import torch

    from aicd.components.errors import EvaluationError
    from aicd.components.evaluation.baselines import _head_inputs, classification_head, fit_head

    try:
        head = classification_head(model)
    except EvaluationError as err:
        raise TrainingError(f"`training.head_init: linear-probe` needs a classification head: {err}",
                            "use head_init: random for this model") from err
    if not isinstance(head, torch.nn.Linear):
        raise TrainingError(f"`training.head_init: linear-probe` fits a linear head; this "
                            f"{model.config.model_type} model's head is a {type(head).__name__}",
                            "use head_init: random for this model")
    labels = list(task.labels)
    y = torch.tensor([labels.index(str(r[task.label_field])) for r in rows])
    was_training = model.training
    model.eval()
    try:
        features = _head_inputs(model, tokenizer, [str(r[task.text_field]) for r in rows], task.max_length).clone()
    finally:
        model.train(was_training)
    weight = torch.tensor(class_weights, dtype=features.dtype) if class_weights else None
    loss = fit_head(head, features, y, weight)
    accuracy = float((head(features).argmax(-1) == y).float().mean())
    log.info("classifier head starts as a linear probe on %d training rows (loss %.4f, train accuracy %.3f)",
             len(y), loss, accuracy)


def hyperparameters(spec: Spec, method: MethodSpec, steps: int, world: int) -> dict[str, Any]:
    t = spec.training
    return {**method.model_dump(mode="json"), "learning_rate": method.learning_rate or t.learning_rate,
            "steps": steps, "batch_size": t.batch_size, "gradient_accumulation": t.gradient_accumulation,
            "world_size": world, "global_batch": t.batch_size * t.gradient_accumulation * world,
            "epochs": t.epochs, "max_steps": t.max_steps, "warmup_ratio": t.warmup_ratio,
            "weight_decay": t.weight_decay, "scheduler": t.scheduler, "seed": t.seed, "packing": t.packing,
            "group_by_length": t.group_by_length, "max_length": spec.task.max_length,
            "uppercase_augmentation": t.uppercase_augmentation, "lowercase": spec.task.lowercase,
            "text_template": spec.task.text_template, "head_init": t.head_init,
            "layer_lr_decay": t.layer_lr_decay if method.method == "full" else None,
            "early_stopping_patience": t.early_stopping_patience}


def validation_examples(spec: Spec, dataset_dir: str | Path, tokenizer) -> list:
    """The validation split encoded as training encodes (what early stopping measures); [] and a warning
    when the split is empty."""
    rows = read_split(dataset_dir, "validation")
    if not rows:
        log.warning("training.early_stopping_patience is set but the validation split is empty: "
                    "no validation, the last step's weights are kept")
        return []
    return encode_rows(rows, tokenizer, spec.task, "validation").examples


def classifier_options(spec: Spec, method: MethodSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """LoopConfig's class weights (``training.class_weighting``) and head learning rate of a classifier."""
    t = spec.training
    if spec.task.type != "text-classification":
        return {}
    out: dict[str, Any] = {}
    if method.method != "full":
        factor = 1.0 if t.head_init != "random" else HEAD_LR_FACTOR  # a head that starts at an answer
        out["head_learning_rate"] = t.head_learning_rate or factor * (method.learning_rate or t.learning_rate)
    if t.class_weighting == "balanced":
        labels = list(spec.task.labels)
        counts = Counter(str(r[spec.task.label_field]) for r in rows)
        out["class_weights"] = [len(rows) / (len(labels) * counts[c]) if counts[c] else 0.0 for c in labels]
        log.info("balanced class weights %s", dict(zip(labels, (round(w, 3) for w in out["class_weights"]))))
    return out


def uppercase_copies(rows: list[dict[str, Any]], spec: Spec) -> list[dict[str, Any]]:
    """``rows`` and, after them, an upper-case copy of ``training.uppercase_augmentation`` of them (a draw
    seeded by ``training.seed``); the copies keep their label and get the id ``<id>:upper``."""
    import random

    share, text = spec.training.uppercase_augmentation, spec.task.text_field
    picked = sorted(random.Random(spec.training.seed).sample(range(len(rows)), round(share * len(rows))))
    copies = [{**rows[i], text: str(rows[i][text]).upper(), "id": f"{rows[i].get('id', i)}:upper"} for i in picked]
    log.info("uppercase augmentation: %d of %d training rows added again in upper case", len(copies), len(rows))
    return rows + copies


def train_adapter(spec: Spec | dict, dataset_dir: str | Path, method_name: str, out_dir: str | Path, *,
                  base_uri: str | None = None, checkpoint_root: str | None = None,
                  progress: bool = True, start_adapter: str | Path | None = None) -> TrainResult:
    """Train one of the spec's methods on the data set's train split; write the Model artifact.

    Runs as one process or under torchrun (every rank calls it; rank 0 writes). Resumes from
    the newest checkpoint under ``training.checkpoint.root`` (or ``checkpoint_root``).
    """
    spec = parse_spec(spec) if isinstance(spec, dict) else spec
    method, t = find_method(spec, method_name), spec.training
    where = f"training.methods.{method.name}"
    if method.method == "dpo":
        return train_preference(spec, dataset_dir, method, out_dir, base_uri=base_uri, start_adapter=start_adapter)
    if start_adapter is not None:
        log.info("%s (%s) trains from the base model: only dpo methods continue the champion", method.name,
                 method.method)
    if method.method == "qlora":
        require_qlora(where)
    uri = base_uri or spec.candidate().uri
    rows = read_split(dataset_dir, "train")
    fingerprint = read_card(dataset_dir).get("fingerprint", "")
    accelerator = make_accelerator()
    model, tokenizer, model_dir = load_base(spec, method, uri)
    check_length(spec.task, model)
    train_rows = uppercase_copies(rows, spec) if t.uppercase_augmentation else rows
    examples = encode_rows(train_rows, tokenizer, spec.task).examples
    val = validation_examples(spec, dataset_dir, tokenizer) if t.early_stopping_patience else []
    options = classifier_options(spec, method, rows)
    if spec.task.type == "text-classification" and t.head_init == "linear-probe":
        init_head_from_probe(model, tokenizer, train_rows, spec.task, options.get("class_weights"))
    seed_all(t.seed)
    model = apply_method(model, method, spec.task.type, where)
    plan = BatchPlan(examples, t.batch_size, t.gradient_accumulation, accelerator.num_processes, t.seed,
                     t.group_by_length)
    steps = plan.steps_for(t.epochs, t.max_steps)
    key = checkpoint_key(spec.model_dump(mode="json")["training"], fingerprint,
                         {"method": method.model_dump(mode="json"), "base": uri, "task": spec.task.model_dump()})
    folder = checkpoint_folder(checkpoint_root or t.checkpoint.root, key)
    cfg = LoopConfig(steps=steps, learning_rate=method.learning_rate or t.learning_rate,
                     weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio, scheduler=t.scheduler,
                     packing=t.packing, checkpoint_dir=folder, checkpoint_every=t.checkpoint.every_steps,
                     keep=t.checkpoint.keep, progress=progress,
                     layer_lr_decay=t.layer_lr_decay if method.method == "full" else None,
                     eval_every=t.checkpoint.every_steps if val else None,
                     patience=t.early_stopping_patience if val else None, **options)

    def evaluate(m):
        return validation_loss(m, val, t.batch_size, tokenizer.pad_token_id, t.packing, options.get("class_weights"))

    log.info("training %s (%s) on %d examples: %d steps of %d examples, checkpoints in %s",
             method.name, method.method, len(examples), steps, plan.global_batch, folder)
    with oom_as_error(f"training {method.name}"):
        loop = run_loop(model, plan, cfg, accelerator, tokenizer.pad_token_id, evaluate if val else None)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = TrainResult(Path(out_dir), {}, method.name, len(loop.losses), loop.first_loss, loop.final_loss,
                         loop.tokens_per_second, loop.seconds, trainable, peak_memory_mb(),
                         loop.resumed_from, folder, loop.best_val_loss, loop.losses)
    hyper = hyperparameters(spec, method, steps, accelerator.num_processes)
    if val and loop.val_losses:
        hyper.update(steps_run=len(loop.losses), stopped_early=loop.stopped_early)
        log.info("kept the weights of step %d (validation loss %.4f of %s)",
                 min(loop.val_losses, key=lambda sv: sv[1])[0], loop.best_val_loss,
                 ", ".join(f"{v:.4f}" for _, v in loop.val_losses))
    if accelerator.is_main_process:
        kind = "model" if method.method == "full" else "adapter"
        result.card = write_model_artifact(
            out_dir, model, tokenizer, kind, task=spec.task.type,
            labels=list(spec.task.labels) or None, base_model=uri, base_digest=base_digest(model_dir),
            base_pin=spec.pin(uri), method=method.method, method_name=method.name,
            hyperparameters=hyper, data_fingerprint=fingerprint,
            metrics={**result.metrics(), **({"val_losses": loop.val_losses} if val else {})},
            prompt_template=spec.task.prompt_template,
            system_prompt=spec.task.system_prompt)
    accelerator.wait_for_everyone()
    return result


def train_preference(spec: Spec, dataset_dir: str | Path, method: MethodSpec, out_dir: str | Path, *,
                     base_uri: str | None = None, start_adapter: str | Path | None = None) -> TrainResult:
    """A dpo method: from the champion adapter (``start_adapter``, when it is an adapter on the same base)
    or a fresh LoRA on the base, trained on the train split's preference pairs; the reference model
    is that starting point (:mod:`aicd.components.training.preference`, :mod:`.start`)."""
    from aicd.components.training.preference import train_dpo
    from aicd.components.training.start import load_start

    if spec.task.type != "causal-lm":
        raise TrainingError("method dpo is supported for causal-lm tasks only", "use lora for classification")
    uri = base_uri or spec.candidate().uri
    rows = read_split(dataset_dir, "train")
    if spec.training.early_stopping_patience:
        log.warning("%s (dpo) does not validate: training.early_stopping_patience applies to every other "
                    "method and to training from scratch", method.name)
    seed_all(spec.training.seed)
    model, tokenizer, model_dir, start = load_start(uri, start_adapter, spec.pin(uri))
    if start.adapter is None:
        model = apply_method(model, method, "causal-lm", f"training.methods.{method.name}")
    else:
        log.info("%s continues the champion's adapter: its own r, alpha and target modules, not the method's",
                 method.name)
    figures = train_dpo(spec, rows, method, model, tokenizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    losses = figures["losses"]
    result = TrainResult(Path(out_dir), {}, method.name, figures["steps"], losses[0], losses[-1], 0.0,
                         figures["seconds"], trainable, peak_memory_mb(), losses=losses)
    params = {**hyperparameters(spec, method, figures["steps"], 1), "pairs": figures["pairs"], "start": start.record}
    result.card = write_model_artifact(
        out_dir, model, tokenizer, "adapter", task=spec.task.type, labels=None, base_model=uri,
        base_digest=base_digest(model_dir), base_pin=spec.pin(uri), method=method.method, method_name=method.name,
        hyperparameters=params,
        data_fingerprint=read_card(dataset_dir).get("fingerprint", ""), metrics=result.metrics(),
        prompt_template=spec.task.prompt_template, system_prompt=spec.task.system_prompt)
    return result

"""train_from_scratch (stage 4): a small Llama defined in the spec, with its own BPE tokenizer.

The tokenizer is trained on the data set's train split with the ``tokenizers`` library
(deterministic, so a resumed run rebuilds the same one); the model is initialised from
``training.from_scratch`` and trained with the shared loop: warm-up + cosine schedule,
gradient accumulation, checkpoints and resume, and early stopping on validation loss.
The result is the same Model artifact as train_adapter, with ``kind: model``.
"""

import logging
from pathlib import Path

from aicd.components.cards import read_card
from aicd.components.data.format import read_split
from aicd.components.errors import TrainingError
from aicd.components.spec import Spec, parse_spec
from aicd.components.training.checkpoint import checkpoint_folder, checkpoint_key
from aicd.components.training.examples import encode_rows
from aicd.components.training.loop import LoopConfig, run_loop, validation_loss
from aicd.components.training.packing import BatchPlan
from aicd.components.training.runtime import (
    TrainResult,
    make_accelerator,
    oom_as_error,
    peak_memory_mb,
    seed_all,
    write_model_artifact,
)

log = logging.getLogger(__name__)
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(spec: Spec, tokenizer):
    """A randomly initialised Llama (causal LM or classifier) sized by training.from_scratch."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    arch = spec.training.from_scratch
    labels = {i: name for i, name in enumerate(spec.task.labels)}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
                         num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_heads,
                         intermediate_size=arch.intermediate_size, max_position_embeddings=arch.max_position_embeddings,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    if spec.task.type == "text-classification":
        config.id2label, config.label2id = labels, {v: k for k, v in labels.items()}
        return LlamaForSequenceClassification(config)
    return LlamaForCausalLM(config)


def _texts(rows: list[dict], spec: Spec) -> list[str]:
    inp, out = spec.task.fields
    fields = (inp,) if spec.task.type == "text-classification" else (inp, out)
    return [str(row[f]) for row in rows for f in fields]


def train_from_scratch(spec: Spec | dict, dataset_dir: str | Path, out_dir: str | Path, *,
                       checkpoint_root: str | None = None, progress: bool = True) -> TrainResult:
    """Train the spec's from-scratch model on the data set; write a ``kind: model`` artifact."""
    spec = parse_spec(spec) if isinstance(spec, dict) else spec
    t, arch = spec.training, spec.training.from_scratch
    if arch is None:
        raise TrainingError("`training.from_scratch` is not set, so there is no model to train from scratch",
                            "add training.from_scratch (hidden_size, num_layers, ...) to the spec")
    if spec.task.max_length > arch.max_position_embeddings:
        raise TrainingError(f"`task.max_length` is {spec.task.max_length}, above "
                            f"`training.from_scratch.max_position_embeddings` ({arch.max_position_embeddings})",
                            "lower task.max_length or raise max_position_embeddings")
    rows = read_split(dataset_dir, "train")
    if not rows:
        encode_rows(rows, None, spec.task)  # raises the empty-split error
    fingerprint = read_card(dataset_dir).get("fingerprint", "")
    accelerator = make_accelerator()
    tokenizer = train_tokenizer(_texts(rows, spec), arch.vocab_size)
    examples = encode_rows(rows, tokenizer, spec.task).examples
    val_rows = read_split(dataset_dir, "validation")
    val = encode_rows(val_rows, tokenizer, spec.task, "validation").examples if val_rows else []
    seed_all(t.seed)
    model = build_model(spec, tokenizer)
    plan = BatchPlan(examples, t.batch_size, t.gradient_accumulation, accelerator.num_processes, t.seed,
                     t.group_by_length)
    steps = plan.steps_for(t.epochs, t.max_steps)
    key = checkpoint_key(spec.model_dump(mode="json")["training"], fingerprint,
                         {"method": "from-scratch", "task": spec.task.model_dump()})
    folder = checkpoint_folder(checkpoint_root or t.checkpoint.root, key)
    cfg = LoopConfig(steps=steps, learning_rate=t.learning_rate, weight_decay=t.weight_decay,
                     warmup_ratio=t.warmup_ratio, scheduler=t.scheduler, packing=t.packing, checkpoint_dir=folder,
                     checkpoint_every=t.checkpoint.every_steps, keep=t.checkpoint.keep, progress=progress,
                     eval_every=t.checkpoint.every_steps if val else None, patience=t.early_stopping_patience)
    if not val:
        log.warning("the validation split is empty: no early stopping")

    def evaluate(m):
        return validation_loss(m, val, t.batch_size, tokenizer.pad_token_id, t.packing)

    with oom_as_error("training from scratch"):
        loop = run_loop(model, plan, cfg, accelerator, tokenizer.pad_token_id, evaluate if val else None)
    n_params = sum(p.numel() for p in model.parameters())
    result = TrainResult(Path(out_dir), {}, "from-scratch", len(loop.losses), loop.first_loss, loop.final_loss,
                         loop.tokens_per_second, loop.seconds, n_params, peak_memory_mb(), loop.resumed_from,
                         folder, loop.best_val_loss, loop.losses)
    if accelerator.is_main_process:
        hyper = {**arch.model_dump(mode="json"), "learning_rate": t.learning_rate, "steps": steps,
                 "steps_run": len(loop.losses), "batch_size": t.batch_size, "scheduler": t.scheduler,
                 "gradient_accumulation": t.gradient_accumulation, "warmup_ratio": t.warmup_ratio,
                 "early_stopping_patience": t.early_stopping_patience, "stopped_early": loop.stopped_early,
                 "seed": t.seed, "max_length": spec.task.max_length}
        result.card = write_model_artifact(
            out_dir, model, tokenizer, "model", task=spec.task.type, labels=list(spec.task.labels) or None,
            base_model=None, base_digest=None, method="from-scratch", method_name="from-scratch",
            hyperparameters=hyper, data_fingerprint=fingerprint,
            metrics={**result.metrics(), "val_losses": loop.val_losses},
            prompt_template=spec.task.prompt_template, system_prompt=spec.task.system_prompt)
    accelerator.wait_for_everyone()
    return result

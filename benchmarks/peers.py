"""The tools a user would pick instead of aicd, driven on aicd's own model, data and settings.

Training: TRL's ``SFTTrainer`` (best-fit-decreasing packing, or padding-free batches) and the
plain HF ``Trainer`` with dynamic padding, on already-tokenized examples with aicd's labels
(completion-only loss), the same LoRA, learning rate, schedule, clipping and optimizer steps.
TRL's defaults that change the work are turned off for the comparison: gradient checkpointing
(aicd does not recompute activations) and bf16 autocast (aicd trains in fp32 here).
Evaluation: lm-evaluation-harness's ``HFLM`` log-likelihood requests, already tokenized as
aicd tokenizes them, so both score exactly the same tokens.

Each builder runs outside the timing (``prepare``); the timed part is ``.train()`` or the
scoring call.
"""

import logging
from pathlib import Path

log = logging.getLogger(__name__)

TRL_MODES = ("bfd", "padding_free")


def _subject(name: str):
    from benchmarks.harness import SubjectMissing

    try:
        if name == "trl":
            import trl
            return trl
        import lm_eval.models.huggingface as hf
        return hf
    except ImportError as err:
        raise SubjectMissing(name, str(err)) from err


def _dataset(examples, order: list[int]):
    from datasets import Dataset

    return Dataset.from_list([{"input_ids": examples[i].input_ids,
                               "completion_mask": [int(label != -100) for label in examples[i].labels]}
                              for i in order])


def _quiet(trainer):
    """Per-step losses are logged to the trainer's history; nothing is printed."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _common(workdir: Path, lr: float, cpu: bool = True) -> dict:
    return dict(output_dir=str(workdir), num_train_epochs=1, learning_rate=lr, lr_scheduler_type="cosine",
                max_grad_norm=1.0, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
                dataloader_num_workers=0, seed=0, use_cpu=cpu)


def trl_trainer(model, tokenizer, examples, order: list[int], workdir: Path, mode: str, batch: int, lr: float,
                steps: int, max_length: int = 512):
    """TRL's SFTTrainer in ``mode``: "bfd" packs the epoch into rows of ``max_length`` (best-fit
    decreasing, padding-free rows), as many rows per step as make ``steps`` optimizer steps;
    "padding_free" flattens each batch of ``batch`` examples (in ``order``) into one row."""
    trl = _subject("trl")
    if mode not in TRL_MODES:
        raise ValueError(f"TRL mode must be one of {TRL_MODES}, got {mode!r}")
    data = _dataset(examples, order)
    if mode == "bfd":
        from trl.data_utils import pack_dataset

        rows = len(pack_dataset(data, max_length, strategy="bfd"))
        mode_args = dict(packing=True, packing_strategy="bfd", max_length=max_length,
                         per_device_train_batch_size=-(-rows // steps))
    else:
        mode_args = dict(packing=False, padding_free=True, max_length=None, per_device_train_batch_size=batch,
                         train_sampling_strategy="sequential")
    args = trl.SFTConfig(**_common(workdir / f"trl-{mode}", lr), bf16=False, gradient_checkpointing=False,
                         completion_only_loss=True, **mode_args)
    return _quiet(trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer))


def hf_trainer(model, tokenizer, examples, workdir: Path, batch: int, lr: float, bf16: bool = False):
    """transformers.Trainer, DataCollatorForSeq2Seq dynamic padding, random order (what a user writes);
    ``bf16`` on CUDA (benchmarks/bench_gpu.py)."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    args = TrainingArguments(**_common(workdir / "hf-trainer", lr, cpu=not bf16), per_device_train_batch_size=batch,
                             train_sampling_strategy="random", bf16=bf16)
    rows = [{"input_ids": ex.input_ids, "attention_mask": [1] * ex.length, "labels": ex.labels} for ex in examples]
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return _quiet(Trainer(model=model, args=args, train_dataset=rows, data_collator=collator))


def train(trainer) -> dict:
    """The timed part: one epoch; per-step losses, steps, real tokens fed, and the trained model."""
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"losses": losses, "steps": out.global_step, "model": trainer.model,
            "tokens": sum(len(ids) for ids in trainer.train_dataset["input_ids"])
            if hasattr(trainer.train_dataset, "column_names") else None}


# --- evaluation ---------------------------------------------------------------------------

def lm_eval_model(model, tokenizer, batch_size: int = 8):
    """lm-eval's HFLM around the already-loaded model (no hub access)."""
    hf = _subject("lm-eval")
    return hf.HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")


def lm_eval_nll(lm, seqs: list[tuple[list[int], int]]) -> tuple[list[float], list[int]]:
    """Per-example mean NLL of the response tokens from HFLM's log-likelihood requests.

    ``seqs`` are aicd's (token ids, prompt length); each becomes the request
    (context = prompt tokens, continuation = response tokens), as ``HFLM.loglikelihood``
    builds them after tokenizing.
    """
    requests = [(("", ""), ids[:plen], ids[plen:]) for ids, plen in seqs]
    results = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    counts = [len(ids) - plen for ids, plen in seqs]
    return [-logprob / n for (logprob, _), n in zip(results, counts)], counts

"""Training throughput: aicd's loop with padding-free packing and length grouping
against the plain HF Trainer with dynamic padding, same model, LoRA config, data and batch size.

Both sides train one epoch over the same examples (so they process exactly the same real
tokens) from a fresh LoRA on the same base. Real tokens/s = non-padding tokens / CPU s.
MFU: 4N FLOPs per real token (LoRA: forward 2N + backward through the frozen base 2N,
N = parameters outside the embedding table) at the treatment's rate, against square
fp32 matmul FLOP/s measured in this same run on one thread.
Correctness: on the same examples and weights, the packed loss equals the padded loss.
"""

import copy
import logging
import tempfile
from pathlib import Path

from benchmarks.harness import Figure, Goal, SubjectMissing, alternate, apply_check, median, rate_figure

log = logging.getLogger(__name__)

BATCH = 8
EXAMPLES = 32  # four optimizer steps of 8 per run
MAX_WORDS = 80
LR = 1e-3
NAME = "training"


def declared() -> list[Figure]:
    return [Figure(NAME, "real tokens/s, packing + length grouping vs HF Trainer dynamic padding", "tok/s",
                   Goal(">=", 2.0, text=">= 2x")),
            Figure(NAME, "MFU (4N/token, LoRA) vs measured matmul FLOP/s", "FLOP/s",
                   Goal(">=", 0.5, text=">= 50%"))]


def _subject():
    try:
        from aicd.components.training.examples import encode_rows
        from aicd.components.training.loop import LoopConfig, run_loop, summed_loss
        from aicd.components.training.methods import apply_method
        from aicd.components.training.packing import BatchPlan, collate
    except ImportError as err:
        raise SubjectMissing("components/training", str(err)) from err
    return encode_rows, LoopConfig, run_loop, summed_loss, apply_method, BatchPlan, collate


def setup(workdir: Path, size: str = "mid", device: str = "cpu", dtype: str = "float32"):
    """(base model, tokenizer, examples) for the comparison."""
    from aicd.components.models import load_causal_lm
    from aicd.components.spec import TaskSpec
    from benchmarks.models import instruction_rows, make_llama

    encode_rows = _subject()[0]
    model_dir = make_llama(workdir / f"llama-{size}", size)
    base, tokenizer, _ = load_causal_lm(str(model_dir), dtype=dtype)
    base.to(device)
    task = TaskSpec(type="causal-lm", max_length=512)
    examples = encode_rows(instruction_rows(EXAMPLES, seed=1, max_words=MAX_WORDS), tokenizer, task).examples
    return base, tokenizer, examples


def lora(base):
    from aicd.components.spec import MethodSpec

    apply_method = _subject()[4]
    return apply_method(copy.deepcopy(base), MethodSpec(name="lora", method="lora", r=8, alpha=16), "causal-lm")


def hf_trainer_epoch(model, tokenizer, examples, workdir: Path, bf16: bool = False) -> dict:
    """The baseline: transformers.Trainer, DataCollatorForSeq2Seq dynamic padding, one epoch."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(workdir / "hf-trainer"), per_device_train_batch_size=BATCH,
                             num_train_epochs=1, learning_rate=LR, lr_scheduler_type="cosine", max_grad_norm=1.0,
                             train_sampling_strategy="random", report_to=[], save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, dataloader_num_workers=0, seed=0, bf16=bf16,
                             use_cpu=not bf16)
    rows = [{"input_ids": ex.input_ids, "attention_mask": [1] * ex.length, "labels": ex.labels} for ex in examples]
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    out = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    return {"loss": out.training_loss, "steps": out.global_step}


def aicd_epoch(model, tokenizer, examples, device: str = "cpu", bf16: bool = False) -> dict:
    """The treatment: aicd's run_loop with packing and length-grouped batches, one epoch."""
    from accelerate import Accelerator

    _, LoopConfig, run_loop, _, _, BatchPlan, _ = _subject()
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if bf16 else "no")
    plan = BatchPlan(examples, batch_size=BATCH, group_by_length=True, seed=0)
    cfg = LoopConfig(steps=len(examples) // BATCH, learning_rate=LR, packing=True, progress=False)
    result = run_loop(model, plan, cfg, accelerator, tokenizer.pad_token_id)
    return {"loss": sum(result.losses) / len(result.losses), "steps": result.steps, "tokens": result.tokens}


def packed_equals_padded(base, tokenizer, examples, tol: float = 1e-4) -> tuple[float, float]:
    """Per-token loss of the same examples packed and padded (same weights); assert they agree."""
    import torch

    *_, summed_loss, _, _, collate = _subject()
    chunk = examples[:BATCH]
    model = lora(base).eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        packed = summed_loss(model, {k: v.to(device) for k, v in collate(chunk, tokenizer.pad_token_id, True).items()})
        padded = summed_loss(model, {k: v.to(device) for k, v in collate(chunk, tokenizer.pad_token_id, False).items()})
    packed, padded = float(packed), float(padded)
    assert abs(packed - padded) <= tol * abs(padded), f"packed loss {packed:.6f} != padded loss {padded:.6f}"
    return packed, padded


def based_on(figure: Figure):
    """A check that fails when the figure this one is computed from is invalid."""
    def check(baseline, treatment):
        assert figure.status == "ok", f"the figure it is computed from is {figure.status}"
    return check


def run(repeats: int) -> list[Figure]:
    from benchmarks.models import matmul_flops, non_embedding_params

    _subject()
    with tempfile.TemporaryDirectory(prefix="aicd-bench-train-") as tmp:
        workdir = Path(tmp)
        base, tokenizer, examples = setup(workdir)
        real_tokens = sum(ex.length for ex in examples[: len(examples) // BATCH * BATCH])
        trial = alternate(lambda m: hf_trainer_epoch(m, tokenizer, examples, workdir),
                          lambda m: aicd_epoch(m, tokenizer, examples),
                          repeats=repeats, prepare_baseline=lambda: lora(base), prepare_treatment=lambda: lora(base))
        counted = trial.treatment_result["tokens"]

        def same_work_and_loss(baseline, treatment):
            assert counted == real_tokens, f"aicd counted {counted} real tokens, the epoch has {real_tokens}"
            assert baseline["steps"] == treatment["steps"], f"steps {baseline['steps']} != {treatment['steps']}"
            packed_equals_padded(base, tokenizer, examples)

        speed = rate_figure(NAME, declared()[0].name, "tok/s", trial, real_tokens, declared()[0].goal,
                            check=same_work_and_loss, baseline_label="HF Trainer", treatment_label="aicd")
        speed.note = (f"{len(examples)} examples, {real_tokens} real tokens per epoch, batch {BATCH}, "
                      f"{non_embedding_params(base) / 1e6:.1f}M non-embedding params; " + speed.note).strip("; ")
        peak = matmul_flops(512)
        flops_per_token = 4 * non_embedding_params(base)
        mfu = Figure(NAME, declared()[1].name, "FLOP/s", declared()[1].goal, baseline=peak,
                     treatment=flops_per_token * speed.treatment, baseline_label="matmul",
                     treatment_label="model", wall_treatment=flops_per_token * speed.wall_treatment)
        mfu.details = {"flops_per_token": flops_per_token, "matmul_size": 512,
                       "hf_trainer_mfu": flops_per_token * speed.baseline / peak}
        apply_check(mfu, based_on(speed), None, None)
        log.info("training: baseline %.0f tok/s, treatment %.0f tok/s (median CPU s %.2f / %.2f)",
                 speed.baseline, speed.treatment, median(speed.details["cpu_s"]["baseline"]),
                 median(speed.details["cpu_s"]["treatment"]))
        return [speed, mfu]

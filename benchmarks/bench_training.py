"""Training throughput: aicd's loop (padding-free packing, length grouping) against the tools a
user would pick instead, in one run: TRL's SFTTrainer in its two CPU modes (best-fit-decreasing
packing; padding-free batches) and the plain HF Trainer with dynamic padding (benchmarks/peers.py).

Every side trains one epoch over the same examples (the same real tokens, the same number of
optimizer steps) from the same LoRA initialisation on the same base, fp32, one thread; the
sides take turns (A B C D A B C D ...). Real tokens/s = non-padding tokens / CPU s.
MFU: 4N FLOPs per real token (LoRA: forward 2N + backward through the frozen base 2N,
N = parameters outside the embedding table) at aicd's rate, against square fp32 matmul
FLOP/s on one thread. The matmul peak is a side of the same rotation (a fixed number of
512x512 matmuls, about a second, right after each aicd epoch), so every aicd trial has a peak
measured under the same load; MFU is the median of the per-round ratios (the load on a shared
machine moves between minutes, not between neighbouring trials).

Correctness, each peer row: TRL padding-free sees aicd's batches in aicd's order, so its loss
at every step must equal aicd's (relative STEP_TOLERANCE). TRL bfd and the HF Trainer batch
differently, so after the last step the trained adapter's loss over the epoch's examples must
equal aicd's within TRAINED_TOLERANCE; and on the same examples and weights aicd's packed loss
equals the padded loss.
"""

import copy
import logging
import tempfile
from pathlib import Path

from benchmarks.harness import Figure, Goal, SubjectMissing, apply_check, median, rate_figure

log = logging.getLogger(__name__)

BATCH = 8
EXAMPLES = 32  # four optimizer steps of 8 per run
MAX_WORDS = 80
LR = 1e-3
NAME = "training"
STEP_TOLERANCE = 1e-3  # TRL logs losses rounded to 4 significant digits
TRAINED_TOLERANCE = 0.01
MATMUL = 512  # the square matmul whose fp32 FLOP/s is the peak


def declared() -> list[Figure]:
    return [Figure(NAME, "real tokens/s, packing + length grouping vs HF Trainer dynamic padding", "tok/s",
                   Goal(">=", 2.0, text=">= 2x")),
            Figure(NAME, "real tokens/s, aicd vs TRL SFTTrainer, best-fit-decreasing packing", "tok/s"),
            Figure(NAME, "real tokens/s, aicd vs TRL SFTTrainer, padding-free batches (same steps, same losses)",
                   "tok/s"),
            Figure(NAME, "real tokens/s, aicd vs TRL SFTTrainer's best CPU mode", "tok/s",
                   Goal(">=", 1.2, text=">= 1.2x")),
            Figure(NAME, "MFU (4N/token, LoRA) vs measured matmul FLOP/s", "FLOP/s",
                   Goal(">=", 0.6, text=">= 60%"))]


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
    """The HF Trainer baseline built and run in one go (benchmarks/bench_gpu.py)."""
    from benchmarks.peers import hf_trainer, train

    return train(hf_trainer(model, tokenizer, examples, workdir, BATCH, LR, bf16=bf16))


def aicd_plan(examples):
    BatchPlan = _subject()[5]
    return BatchPlan(examples, batch_size=BATCH, group_by_length=True, seed=0)


def aicd_epoch(model, tokenizer, examples, device: str = "cpu", bf16: bool = False) -> dict:
    """The treatment: aicd's run_loop with packing and length-grouped batches, one epoch."""
    from accelerate import Accelerator

    _, LoopConfig, run_loop, *_ = _subject()
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if bf16 else "no")
    cfg = LoopConfig(steps=len(examples) // BATCH, learning_rate=LR, packing=True, progress=False)
    result = run_loop(model, aicd_plan(examples), cfg, accelerator, tokenizer.pad_token_id)
    return {"loss": sum(result.losses) / len(result.losses), "losses": result.losses, "steps": result.steps,
            "tokens": result.tokens, "model": model}


def epoch_loss(model, tokenizer, examples) -> float:
    """Per-token loss of ``model`` over all ``examples`` (packed, batches of BATCH, no gradient)."""
    import torch

    from aicd.components.training.examples import target_count

    *_, summed_loss, _, _, collate = _subject()
    total = 0.0
    with torch.no_grad():
        model.eval()
        for i in range(0, len(examples), BATCH):
            total += float(summed_loss(model, collate(examples[i:i + BATCH], tokenizer.pad_token_id, True)))
    return total / target_count(examples)


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


def seeded_lora(base):
    """The same LoRA initialisation for every side (peft draws A at random)."""
    import torch

    torch.manual_seed(0)
    return lora(base)


def sides(base, tokenizer, examples, workdir: Path) -> dict:
    """The sides, name -> (timed run, untimed prepare): HF Trainer, TRL bfd, TRL padding-free, aicd."""
    from benchmarks.peers import hf_trainer, train, trl_trainer

    steps = len(examples) // BATCH
    order = [i for step in range(steps) for i in aicd_plan(examples).global_indices(step)]
    trl = {mode: (lambda m=mode: trl_trainer(seeded_lora(base), tokenizer, examples, order, workdir, m, BATCH, LR,
                                               steps)) for mode in ("bfd", "padding_free")}
    return {"hf": (train, lambda: hf_trainer(seeded_lora(base), tokenizer, examples, workdir, BATCH, LR)),
            "trl-bfd": (train, trl["bfd"]), "trl-padding_free": (train, trl["padding_free"]),
            "aicd": (lambda m: aicd_epoch(m, tokenizer, examples), lambda: seeded_lora(base))}


def checks(base, tokenizer, examples, real_tokens: int) -> dict:
    """The correctness check of each peer's figure (against aicd's last run)."""
    def same_work(peer, ours):
        assert ours["tokens"] == real_tokens, f"aicd counted {ours['tokens']} real tokens, the epoch has {real_tokens}"
        assert peer["steps"] == ours["steps"], f"optimizer steps {peer['steps']} != aicd's {ours['steps']}"
        assert peer["tokens"] in (None, real_tokens), f"the peer's epoch has {peer['tokens']} tokens, not {real_tokens}"

    def same_trained_loss(peer, ours):
        same_work(peer, ours)
        theirs, mine = epoch_loss(peer["model"], tokenizer, examples), epoch_loss(ours["model"], tokenizer, examples)
        assert abs(theirs - mine) <= TRAINED_TOLERANCE * mine, \
            f"loss after step {ours['steps']}: peer {theirs:.5f}, aicd {mine:.5f} (tolerance {TRAINED_TOLERANCE:g})"

    def same_step_losses(peer, ours):
        same_work(peer, ours)
        worst = max(abs(a - b) / abs(b) for a, b in zip(peer["losses"], ours["losses"], strict=True))
        assert worst <= STEP_TOLERANCE, (f"per-step losses differ by up to {worst:.2e} (relative): peer "
                                         f"{[round(x, 4) for x in peer['losses']]}, aicd "
                                         f"{[round(x, 4) for x in ours['losses']]}")

    def hf_check(peer, ours):
        same_trained_loss(peer, ours)
        packed_equals_padded(base, tokenizer, examples)

    return {"hf": hf_check, "trl-bfd": same_trained_loss, "trl-padding_free": same_step_losses}


def run(repeats: int) -> list[Figure]:
    from benchmarks.harness import pair, rotate
    from benchmarks.models import non_embedding_params

    _subject()
    decl = declared()
    with tempfile.TemporaryDirectory(prefix="aicd-bench-train-") as tmp:
        workdir = Path(tmp)
        base, tokenizer, examples = setup(workdir)
        examples = examples[: len(examples) // BATCH * BATCH]
        real_tokens = sum(ex.length for ex in examples)
        samples = rotate({**sides(base, tokenizer, examples, workdir), "matmul": matmul_side()}, repeats=repeats)
        check = checks(base, tokenizer, examples, real_tokens)
        labels = {"hf": "HF Trainer", "trl-bfd": "TRL bfd", "trl-padding_free": "TRL padding-free"}
        figs = {peer: rate_figure(NAME, fig.name, "tok/s", pair(samples, peer, "aicd"), real_tokens, fig.goal,
                                  check=check[peer], baseline_label=labels[peer], treatment_label="aicd")
                for peer, fig in zip(labels, decl)}
        best = max(("trl-bfd", "trl-padding_free"), key=lambda peer: figs[peer].baseline)
        best_fig = rate_figure(NAME, decl[3].name, "tok/s", pair(samples, best, "aicd"), real_tokens, decl[3].goal,
                               check=check[best], baseline_label=labels[best], treatment_label="aicd")
        speed = figs["hf"]
        speed.note = (f"{len(examples)} examples, {real_tokens} real tokens per epoch, batch {BATCH}, "
                      f"{len(examples) // BATCH} optimizer steps, "
                      f"{non_embedding_params(base) / 1e6:.1f}M non-embedding params; " + speed.note).strip("; ")
        for peer in ("trl-bfd", "trl-padding_free"):
            figs[peer].note = ("TRL 1.x, fp32, no gradient checkpointing; " + figs[peer].note).strip("; ")
        best_fig.note = (f"TRL's best mode here: {labels[best]}; " + best_fig.note).strip("; ")
        mfu = mfu_figure(decl[4], speed, samples, 4 * non_embedding_params(base) * real_tokens)
        log.info("training: tok/s %s", {k: round(real_tokens / median([s.cpu for s in v])) for k, v in samples.items()
                                        if k != "matmul"})
        return [speed, figs["trl-bfd"], figs["trl-padding_free"], best_fig, mfu]


def matmul_side(seconds: float = 1.0):
    """The matmul peak as a side of the rotation: (run, None); a run does a fixed number of square fp32
    matmuls (about ``seconds`` of CPU, calibrated once) and returns the FLOPs it did."""
    import torch

    from benchmarks.models import matmul_flops

    flops = 2 * MATMUL**3
    count = max(8, round(matmul_flops(MATMUL, seconds=0.3) * seconds / flops))
    a, b = torch.randn(MATMUL, MATMUL), torch.randn(MATMUL, MATMUL)

    def run() -> float:
        for _ in range(count):
            a @ b
        return float(flops * count)
    return run, None


def mfu_figure(decl: Figure, speed: Figure, samples: dict, epoch_flops: float) -> Figure:
    """MFU from paired trials: each aicd epoch's model FLOP/s over the matmul FLOP/s of the trial right
    after it, the median of those ratios (``epoch_flops``: 4N x the epoch's real tokens)."""
    model = [epoch_flops / s.cpu for s in samples["aicd"]]
    peaks = [s.result / s.cpu for s in samples["matmul"]]
    paired = [m / p for m, p in zip(model, peaks, strict=True)]
    peak, mfu_paired = median(peaks), median(paired)
    # The ratio (the goal's quantity) is the paired median; the treatment is that share of the median peak.
    mfu = Figure(NAME, decl.name, "FLOP/s", decl.goal, baseline=peak, treatment=mfu_paired * peak,
                 baseline_label="matmul", treatment_label="model",
                 wall_baseline=median([s.result / s.wall for s in samples["matmul"]]),
                 wall_treatment=median([epoch_flops / s.wall for s in samples["aicd"]]))
    mfu.details = {"matmul_size": MATMUL, "epoch_flops": epoch_flops, "paired_mfu": paired,
                   "model_flops_per_s": model, "matmul_flops_per_s": peaks,
                   "mfu_of_medians": median(model) / peak,
                   "hf_trainer_mfu": speed.baseline * epoch_flops / speed.details["work_per_run"] / peak}
    mfu.note = (f"paired MFU per round {', '.join(f'{x:.3f}' for x in paired)} (median {mfu_paired:.3f}); "
                f"matmul {min(peaks) / 1e9:.1f}-{max(peaks) / 1e9:.1f} GFLOP/s across rounds")
    apply_check(mfu, based_on(speed), None, None)
    return mfu

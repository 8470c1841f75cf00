"""How cost grows with the work: ``python -m benchmarks.scale`` (``make bench-scale``).

Sweeps ingest (rows), evaluation scoring (examples) and training (sequence length; examples)
over four or more sizes. Every point runs in a fresh interpreter on one torch thread: CPU
seconds of the work alone (imports and model loading excluded) and its peak memory (the
kernel's peak-RSS mark is reset just before the work, so the figure is the work's own
high-water mark above what was resident). A power law ``y = a * size^b`` is fitted by least
squares in log-log space; the exponent ``b`` goes in the table and each sweep is plotted
(log-log, fitted line) as a PNG in benchmarks/results/. Work grows linearly with size in
every sweep (rows, examples, or tokens), so a time exponent above LINEAR_FLAG, fitted or
between the two largest sizes, is flagged as faster than linear in work.
"""

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import RESULTS_DIR, ROOT_DIR

log = logging.getLogger("benchmarks.scale")

LINEAR_FLAG = 1.15  # a fitted time exponent above this is "faster than linear in work"
SWEEPS = {
    "ingest-rows": (10_000, 30_000, 100_000, 300_000, 1_000_000),
    "evaluation-examples": (25, 50, 100, 200, 400),
    "training-seq-length": (64, 128, 256, 512),
    "training-examples": (8, 16, 32, 64),
}
TRAIN_EXAMPLES = 16  # per point of the sequence-length sweep
TRAIN_LENGTH = 128  # tokens per example in the examples sweep
BATCH = 8


@dataclass
class Sweep:
    name: str
    unit: str
    sizes: list[int]
    cpu_s: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    work: list[int] = field(default_factory=list)

    def fit(self, values: list[float]) -> tuple[float, float]:
        return power_law(self.sizes, values)


def power_law(sizes: list[float], values: list[float]) -> tuple[float, float]:
    """(a, b) of ``value = a * size^b``, least squares on logs (values floored at 1e-9)."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-9)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return math.exp(my - b * mx), b


# --- probes: one point, run in a fresh interpreter ----------------------------------------

def _reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; return the current RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _timed(work) -> dict:
    rss = _reset_peak()
    cpu = time.process_time()
    done = work()
    cpu = time.process_time() - cpu
    return {"cpu_s": cpu, "peak_mb": (_status("VmHWM") - rss) / 2**20, "work": done}


def probe_ingest(size: int, workdir: Path) -> dict:
    from aicd.components.data.ingest import ingest_dataset
    from benchmarks.bench_data import spec, write_jsonl

    write_jsonl(workdir / "warm.jsonl", 100)
    ingest_dataset(spec(str(workdir / "warm.jsonl")), workdir / f"warm-{size}")  # lazy imports, outside the figure
    path = workdir / f"rows-{size}.jsonl"
    write_jsonl(path, size)
    the_spec = spec(str(path))
    out = _timed(lambda: sum(ingest_dataset(the_spec, workdir / f"dataset-{size}").counts.values()))
    assert out["work"] == size, f"ingest kept {out['work']} of {size} rows"
    return out


def probe_evaluation(size: int, workdir: Path) -> dict:
    from aicd.components.evaluation.inference import build_sequences, score_causal_lm
    from aicd.components.models import load_causal_lm
    from benchmarks.bench_evaluation import VOCAB
    from benchmarks.models import instruction_rows

    model, tokenizer, _ = load_causal_lm(str(workdir / f"llama-mid-{VOCAB}"))
    rows = instruction_rows(size, seed=3, max_words=60)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["instruction"]}], tokenize=False,
                                             add_generation_prompt=True) for r in rows]
    responses = [r["response"] for r in rows]
    score_causal_lm(model, tokenizer, prompts[:2], responses[:2], max_length=256, batch_size=8)  # warm-up
    out = _timed(lambda: score_causal_lm(model, tokenizer, prompts, responses, max_length=256, batch_size=8))
    out["work"] = sum(len(ids) for ids, _ in build_sequences(tokenizer, prompts, responses, 256))
    return out


def probe_training(examples: int, length: int, workdir: Path) -> dict:
    """One epoch of aicd's loop (LoRA, packing, batch 8) over ``examples`` of exactly ``length`` tokens."""
    import random

    from accelerate import Accelerator

    from aicd.components.models import load_causal_lm
    from aicd.components.training.examples import Example
    from aicd.components.training.loop import LoopConfig, run_loop
    from aicd.components.training.packing import BatchPlan
    from benchmarks.bench_training import seeded_lora

    base, tokenizer, _ = load_causal_lm(str(workdir / "llama-mid"))
    rng = random.Random(examples * 1000 + length)

    def epoch(n: int, tokens: int):
        """The timed epoch, its data and fresh LoRA built first."""
        data = [Example(input_ids=ids, labels=[-100] * (tokens // 4) + ids[tokens // 4:])
                for ids in ([rng.randrange(3, len(tokenizer)) for _ in range(tokens)] for _ in range(n))]
        cfg = LoopConfig(steps=max(1, n // BATCH), learning_rate=1e-3, packing=True, progress=False)
        plan, model = BatchPlan(data, batch_size=BATCH, group_by_length=True, seed=0), seeded_lora(base)
        return lambda: run_loop(model, plan, cfg, Accelerator(cpu=True), tokenizer.pad_token_id).tokens

    epoch(BATCH, 16)()  # warm-up: lazy imports and first-call costs stay out of the figure
    out = _timed(epoch(examples, length))
    assert out["work"] == examples * length, f"trained on {out['work']} tokens, expected {examples * length}"
    return out


def probe(sweep: str, size: int, workdir: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    if sweep == "ingest-rows":
        return probe_ingest(size, workdir)
    if sweep == "evaluation-examples":
        return probe_evaluation(size, workdir)
    if sweep == "training-seq-length":
        return probe_training(TRAIN_EXAMPLES, size, workdir)
    if sweep == "training-examples":
        return probe_training(size, TRAIN_LENGTH, workdir)
    raise ValueError(f"unknown sweep {sweep!r}; one of {', '.join(SWEEPS)}")


# --- the sweep, the fit, the plots --------------------------------------------------------

UNITS = {"ingest-rows": "rows", "evaluation-examples": "examples", "training-seq-length": "tokens per example",
         "training-examples": "examples"}


def run_point(sweep: str, size: int, workdir: Path) -> dict:
    env_cmd = [sys.executable, "-m", "benchmarks.scale", "--probe", sweep, str(size), str(workdir)]
    done = subprocess.run(env_cmd, capture_output=True, text=True, cwd=ROOT_DIR, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{sweep} at {size}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep_all(names: list[str], workdir: Path) -> list[Sweep]:
    from benchmarks.bench_evaluation import VOCAB
    from benchmarks.models import make_llama

    make_llama(workdir / "llama-mid", "mid")
    make_llama(workdir / f"llama-mid-{VOCAB}", "mid", vocab_size=VOCAB)
    out = []
    for name in names:
        sweep = Sweep(name, UNITS[name], list(SWEEPS[name]))
        for size in sweep.sizes:
            point = run_point(name, size, workdir)
            log.info("%s %s: %.2f CPU s, peak +%.0f MB", name, size, point["cpu_s"], point["peak_mb"])
            sweep.cpu_s.append(point["cpu_s"])
            sweep.peak_mb.append(point["peak_mb"])
            sweep.work.append(point["work"])
        out.append(sweep)
    return out


def plot(sweep: Sweep, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, values, label in ((axes[0], sweep.cpu_s, "CPU s"), (axes[1], sweep.peak_mb, "peak memory MB")):
        a, b = sweep.fit(values)
        ax.loglog(sweep.sizes, [max(v, 1e-3) for v in values], "o", label="measured")
        ax.loglog(sweep.sizes, [a * s**b for s in sweep.sizes], "-", label=f"fit: exponent {b:.2f}")
        ax.set_xlabel(sweep.unit)
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{sweep.name} (one core)")
    fig.tight_layout()
    path = out_dir / f"scale-{sweep.name}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def end_exponent(sizes: list[float], values: list[float]) -> float:
    """The slope in log-log space between the two largest sizes: growth where it matters most."""
    return math.log(max(values[-1], 1e-9) / max(values[-2], 1e-9)) / math.log(sizes[-1] / sizes[-2])


def table(sweeps: list[Sweep]) -> str:
    lines = ["| sweep | sizes | CPU s | time exponent (fit; last step) | peak MB | memory exponent | flag |",
             "|---|---|---|---|---|---|---|"]
    for s in sweeps:
        bt, bm, end = s.fit(s.cpu_s)[1], s.fit(s.peak_mb)[1], end_exponent(s.sizes, s.cpu_s)
        flag = ("FASTER THAN LINEAR in work" if bt > LINEAR_FLAG else
                "FASTER THAN LINEAR at the largest sizes" if end > LINEAR_FLAG else "linear or better")
        lines.append(f"| {s.name} | {', '.join(f'{n:,}' for n in s.sizes)} {s.unit} | "
                     f"{', '.join(f'{v:.2f}' for v in s.cpu_s)} | {bt:.2f}; {end:.2f} | "
                     f"{', '.join(f'{v:.0f}' for v in s.peak_mb)} | {bm:.2f} | {flag} |")
    return "\n".join(lines)


def merged(sweeps: list[Sweep], out_dir: Path) -> list[Sweep]:
    """This run's sweeps, plus those of the previous scale.json in ``out_dir`` that were not re-run
    (``--only`` re-measures some sweeps and keeps the others), in the order of SWEEPS."""
    path, ran = out_dir / "scale.json", {s.name for s in sweeps}
    kept = []
    if path.exists():
        for old in json.loads(path.read_text())["sweeps"]:
            if old["name"] not in ran and old["name"] in SWEEPS:
                kept.append(Sweep(old["name"], old["unit"], old["sizes"], old["cpu_s"], old["peak_mb"],
                                  old.get("work", [])))
    return sorted(sweeps + kept, key=lambda s: list(SWEEPS).index(s.name))


def write(sweeps: list[Sweep], out_dir: Path, elapsed: float) -> Path:
    from benchmarks.report import machine

    out_dir.mkdir(parents=True, exist_ok=True)
    sweeps = merged(sweeps, out_dir)
    for s in sweeps:
        plot(s, out_dir)
    info = machine()
    md = ["# How cost grows with the work", "", __doc__.split("\n\n", 1)[1].strip(), "", "## Machine", ""]
    md += [f"- {k}: {v}" for k, v in info.items()] + [f"- sweep wall time: {elapsed:.0f} s", "", "## Growth", ""]
    md += [table(sweeps), ""]
    md += [f"![{s.name}](scale-{s.name}.png)" for s in sweeps]
    path = out_dir / "scale.md"
    path.write_text("\n".join(md) + "\n")
    (out_dir / "scale.json").write_text(json.dumps(
        {"machine": info, "sweeps": [{**s.__dict__, "time_exponent": s.fit(s.cpu_s)[1],
                                      "memory_exponent": s.fit(s.peak_mb)[1]} for s in sweeps]}, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SWEEPS),
                        help="run only these sweeps (the others are kept from the previous scale.json)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where scale.md, scale.json and PNGs go")
    parser.add_argument("--probe", nargs=3, metavar=("SWEEP", "SIZE", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        name, size, workdir = args.probe
        print(json.dumps(probe(name, int(size), Path(workdir))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aicd-bench-scale-") as tmp:
        sweeps = sweep_all(args.only or list(SWEEPS), Path(tmp))
    path = write(sweeps, args.out, time.perf_counter() - started)
    print(table(merged(sweeps, args.out)))
    print(f"\nresults in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

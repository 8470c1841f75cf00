"""The one measuring method of the performance suite (issue 10).

A benchmark runs its baseline and its treatment alternately (warm-up, then
A B A B ...), at least three times each, and records process CPU time (with
torch on one thread) and wall-clock time of every run. Ratios are computed from
the medians of CPU time, because on a shared machine wall-clock varies several
times between repeats while single-thread CPU time varies a few percent; wall
figures are reported beside them. Every speed figure carries a correctness
check: if the baseline's and treatment's results differ, the figure is invalid
and its goal is not met.
"""

import json
import logging
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIN_REPEATS = 3
ROOT_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT_DIR / "benchmarks" / "results"


class SubjectMissing(Exception):
    """The code a benchmark measures has not landed (or cannot be imported)."""

    def __init__(self, subject: str, detail: str = ""):
        self.subject = subject
        super().__init__(f"{subject} missing" + (f" ({detail})" if detail else ""))


# --- clocks -------------------------------------------------------------------------------

def children_cpu() -> float:
    """User + system CPU seconds of this process's finished, waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu() -> float:
    """CPU seconds of this process (all its threads)."""
    return time.process_time()


def process_and_children_cpu() -> float:
    return process_cpu() + children_cpu()


def pid_cpu(pid: int) -> Callable[[], float]:
    """A clock reading the CPU seconds of another running process (a server), plus our own."""
    import psutil

    proc = psutil.Process(pid)

    def clock() -> float:
        times = proc.cpu_times()
        return process_cpu() + times.user + times.system + times.children_user + times.children_system
    return clock


def one_thread() -> None:
    """Pin torch (and the BLAS under it) to one thread so CPU time is comparable."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


# --- measuring ----------------------------------------------------------------------------

@dataclass
class Sample:
    cpu: float
    wall: float
    result: Any = field(default=None, repr=False)


@dataclass
class Trial:
    """Every timed run of one comparison, in the order they ran."""

    baseline: list[Sample]
    treatment: list[Sample]
    order: list[str]

    @property
    def baseline_result(self) -> Any:
        return self.baseline[-1].result if self.baseline else None

    @property
    def treatment_result(self) -> Any:
        return self.treatment[-1].result


def measure(fn: Callable[[], Any], clock: Callable[[], float] = process_and_children_cpu) -> Sample:
    """Run ``fn`` once; its CPU seconds (by ``clock``) and wall seconds."""
    cpu0, wall0 = clock(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - wall0
    return Sample(cpu=clock() - cpu0, wall=wall, result=result)


def _bind(run: Callable[..., Any], prepare: Callable[[], Any] | None) -> Callable[[], Callable[[], Any]]:
    """A factory of the timed callable: ``prepare()`` runs untimed, its result goes to ``run``."""
    def make() -> Callable[[], Any]:
        if prepare is None:
            return run
        state = prepare()
        return lambda: run(state)
    return make


def alternate(baseline: Callable[..., Any], treatment: Callable[..., Any], repeats: int = MIN_REPEATS,
              warmup: int = 1, clock: Callable[[], float] = process_and_children_cpu,
              prepare_baseline: Callable[[], Any] | None = None,
              prepare_treatment: Callable[[], Any] | None = None) -> Trial:
    """Warm both up, then run A B A B ... ``repeats`` times each (never fewer than 3).

    ``prepare_*`` (optional) build fresh state before every run, outside the timing;
    the run then receives that state as its one argument.
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be at least {MIN_REPEATS}, got {repeats}")
    make_base, make_treat = _bind(baseline, prepare_baseline), _bind(treatment, prepare_treatment)
    for _ in range(warmup):
        make_base()()
        make_treat()()
    trial = Trial(baseline=[], treatment=[], order=[])
    for _ in range(repeats):
        trial.baseline.append(measure(make_base(), clock))
        trial.order.append("baseline")
        trial.treatment.append(measure(make_treat(), clock))
        trial.order.append("treatment")
    return trial


def repeat(fn: Callable[[], Any], repeats: int = MIN_REPEATS, warmup: int = 1,
           clock: Callable[[], float] = process_and_children_cpu) -> Trial:
    """A treatment with no baseline (an absolute goal): warm-up, then ``repeats`` timed runs."""
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be at least {MIN_REPEATS}, got {repeats}")
    for _ in range(warmup):
        fn()
    samples = [measure(fn, clock) for _ in range(repeats)]
    return Trial(baseline=[], treatment=samples, order=["treatment"] * repeats)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# --- figures and goals --------------------------------------------------------------------

@dataclass
class Goal:
    """A bound on one quantity of a figure: ``ratio``, ``treatment`` or ``difference`` (T - B)."""

    op: str  # ">=" or "<="
    value: float
    on: str = "ratio"
    text: str = ""

    def __post_init__(self):
        if self.op not in (">=", "<="):
            raise ValueError(f"goal op must be '>=' or '<=', got {self.op!r}")
        if self.on not in ("ratio", "treatment", "difference"):
            raise ValueError(f"goal must be on ratio, treatment or difference, got {self.on!r}")

    def met(self, quantity: float | None) -> bool | None:
        if quantity is None:
            return None
        return quantity >= self.value if self.op == ">=" else quantity <= self.value

    def describe(self) -> str:
        if self.text:
            return self.text
        what = {"ratio": "ratio", "treatment": "treatment", "difference": "T-B"}[self.on]
        return f"{what} {self.op} {self.value:g}"


@dataclass
class Figure:
    """One line of the results table."""

    benchmark: str
    name: str
    unit: str
    goal: Goal | None = None
    baseline: float | None = None
    treatment: float | None = None
    baseline_label: str = ""
    treatment_label: str = ""
    wall_baseline: float | None = None
    wall_treatment: float | None = None
    status: str = "ok"  # ok | invalid | not run | skipped | error
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.treatment is None or self.baseline == 0:
            return None
        return self.treatment / self.baseline

    @property
    def wall_ratio(self) -> float | None:
        if self.wall_baseline is None or self.wall_treatment is None or self.wall_baseline == 0:
            return None
        return self.wall_treatment / self.wall_baseline

    def quantity(self) -> float | None:
        if self.goal is None:
            return None
        if self.goal.on == "ratio":
            return self.ratio
        if self.goal.on == "treatment":
            return self.treatment
        if self.baseline is None or self.treatment is None:
            return None
        return self.treatment - self.baseline

    @property
    def met(self) -> bool | None:
        """True/False against the goal; None when there is no goal or nothing was measured.

        An invalid figure (its correctness check failed) never meets its goal.
        """
        if self.goal is None or self.status in ("not run", "skipped", "error"):
            return None
        if self.status == "invalid":
            return False
        return self.goal.met(self.quantity())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["goal"] = None if self.goal is None else {**asdict(self.goal), "describe": self.goal.describe()}
        out["ratio"], out["wall_ratio"], out["met"] = self.ratio, self.wall_ratio, self.met
        return out


def rate_figure(benchmark: str, name: str, unit: str, trial: Trial, work: float, goal: Goal | None,
                check: Callable[[Any, Any], None] | None = None, **labels: str) -> Figure:
    """Work per second from the medians of CPU time (and of wall time beside it).

    ``work`` is what one run does (tokens, rows, requests), the same for both sides.
    ``check(baseline_result, treatment_result)`` raises AssertionError when they differ.
    """
    def rate(samples: list[Sample], attr: str) -> float | None:
        return work / median([getattr(s, attr) for s in samples]) if samples else None

    fig = Figure(benchmark, name, unit, goal, baseline=rate(trial.baseline, "cpu"),
                 treatment=rate(trial.treatment, "cpu"), wall_baseline=rate(trial.baseline, "wall"),
                 wall_treatment=rate(trial.treatment, "wall"), **labels)
    fig.details = {"work_per_run": work, "order": trial.order,
                   "cpu_s": {"baseline": [s.cpu for s in trial.baseline],
                             "treatment": [s.cpu for s in trial.treatment]},
                   "wall_s": {"baseline": [s.wall for s in trial.baseline],
                              "treatment": [s.wall for s in trial.treatment]}}
    apply_check(fig, check, trial.baseline_result, trial.treatment_result)
    return fig


def apply_check(fig: Figure, check: Callable[[Any, Any], None] | None, baseline: Any, treatment: Any) -> Figure:
    """Run the correctness check; a failure marks the figure invalid with the reason."""
    if check is None:
        return fig
    try:
        check(baseline, treatment)
    except AssertionError as err:
        fig.status = "invalid"
        fig.note = f"correctness check failed: {err}".strip()
    else:
        fig.details["check"] = "passed"
    return fig


def not_run(figures: list[Figure], reason: str, status: str = "not run") -> list[Figure]:
    for fig in figures:
        fig.status, fig.note = status, reason
    return figures


# --- the machine and the results ----------------------------------------------------------

def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu_model, "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(), "python": platform.python_version(),
    }
    try:
        import psutil
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["memory_gb"] = None
    for module in ("torch", "transformers", "peft", "kfp", "kserve"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            info[module] = None
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["cuda"] = None
    return info


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"{value / 1e9:.2f}G"
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _verdict(fig: Figure) -> str:
    if fig.status in ("not run", "skipped", "error"):
        return f"{fig.status}: {fig.note}" if fig.note else fig.status
    if fig.met is None:
        return "no goal"
    word = "MET" if fig.met else "NOT MET"
    return f"{word} (invalid: {fig.note})" if fig.status == "invalid" else word


COLUMNS = ("figure", "unit", "baseline", "treatment", "ratio", "goal", "met", "wall B / T")


def table_rows(figures: list[Figure]) -> list[tuple[str, ...]]:
    rows = []
    for fig in figures:
        wall = "-" if fig.wall_baseline is None and fig.wall_treatment is None else \
            f"{_fmt(fig.wall_baseline)} / {_fmt(fig.wall_treatment)}"
        if fig.goal is not None and fig.goal.on == "difference":
            diff = fig.quantity()
            ratio = "-" if diff is None else f"T-B {diff:+.3g}"
        else:
            ratio = "-" if fig.ratio is None else f"{fig.ratio:.3g}x"
        base = _fmt(fig.baseline) + (f" ({fig.baseline_label})" if fig.baseline_label else "")
        treat = _fmt(fig.treatment) + (f" ({fig.treatment_label})" if fig.treatment_label else "")
        cells = (f"{fig.benchmark}: {fig.name}", fig.unit, base, treat, ratio,
                 fig.goal.describe() if fig.goal else "-", _verdict(fig), wall)
        rows.append(tuple(" ".join(cell.split()) for cell in cells))
    return rows


def markdown(figures: list[Figure], info: dict[str, Any], elapsed_s: float | None = None) -> str:
    lines = ["# aicd performance suite results", ""]
    lines.append("Ratios are treatment / baseline, from medians of process CPU time with torch on one "
                 "thread (baseline and treatment alternated, warm-up then at least 3 repeats each). "
                 "Wall-clock figures are shown beside them for reference only.")
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    if elapsed_s is not None:
        lines.append(f"- suite wall time: {elapsed_s:.0f} s")
    lines += ["", "## Figures", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(figures)]
    met = [f for f in figures if f.met is True]
    missed = [f for f in figures if f.met is False]
    absent = [f for f in figures if f.status in ("not run", "skipped", "error")]
    lines += ["", "## Summary", "",
              f"- goals met: {len(met)}: " + (", ".join(f"{f.benchmark}: {f.name}" for f in met) or "none"),
              f"- goals not met: {len(missed)}: " + (", ".join(f"{f.benchmark}: {f.name}" for f in missed)
                                                     or "none"),
              f"- not measured: {len(absent)}: " + (", ".join(f"{f.benchmark}: {f.name} ({f.note})"
                                                              for f in absent) or "none")]
    notes = [f for f in figures if f.note and f.status in ("ok", "invalid")]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {f.benchmark}: {f.name}: {f.note}" for f in notes]
    return "\n".join(lines) + "\n"


def text_table(figures: list[Figure]) -> str:
    rows = [COLUMNS] + table_rows(figures)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_results(figures: list[Figure], out_dir: str | Path = RESULTS_DIR, info: dict[str, Any] | None = None,
                  elapsed_s: float | None = None, name: str = "results") -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (atomically); return their paths."""
    from aicd.components.cards import atomic_write_text

    out_dir = Path(out_dir)
    info = machine() if info is None else info
    payload = {"kind": "benchmarks", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": info, "elapsed_s": elapsed_s, "method": {
                   "ratio": "treatment / baseline of medians of process CPU time",
                   "order": "warm-up, then baseline and treatment alternated", "min_repeats": MIN_REPEATS},
               "figures": [fig.to_dict() for fig in figures]}
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    atomic_write_text(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    atomic_write_text(md_path, markdown(figures, info, elapsed_s))
    return json_path, md_path

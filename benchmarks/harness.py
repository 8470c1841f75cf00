"""The one measuring method of the performance suite.

A benchmark runs its baseline and its treatment alternately (warm-up, then
A B A B ...), at least three times each, and records process CPU time (with
torch on one thread) and wall-clock time of every run. Ratios are computed from
the medians of CPU time, because on a shared machine wall-clock varies several
times between repeats while single-thread CPU time varies a few percent; wall
figures are reported beside them. Every speed figure carries a correctness
check: if the baseline's and treatment's results differ, the figure is invalid
and its goal is not met.
"""

import logging
import os
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


def rotate(sides: dict[str, tuple[Callable[..., Any], Callable[[], Any] | None]], repeats: int = MIN_REPEATS,
           warmup: int = 1, clock: Callable[[], float] = process_and_children_cpu) -> dict[str, list[Sample]]:
    """More than two sides (peers): warm each up, then run them in turn, A B C A B C ...

    ``sides`` maps a name to (run, prepare); as in :func:`alternate`, ``prepare()`` builds
    fresh state outside the timing and ``run`` receives it. Use :func:`pair` for a ratio.
    """
    if repeats < MIN_REPEATS:
        raise ValueError(f"repeats must be at least {MIN_REPEATS}, got {repeats}")
    makers = {name: _bind(run, prepare) for name, (run, prepare) in sides.items()}
    for _ in range(warmup):
        for make in makers.values():
            make()()
    samples: dict[str, list[Sample]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, make in makers.items():
            samples[name].append(measure(make(), clock))
    return samples


def pair(samples: dict[str, list[Sample]], baseline: str, treatment: str) -> Trial:
    """The trial of two sides of a :func:`rotate` run (they ran interleaved with the others)."""
    order = [side for _ in samples[treatment] for side in ("baseline", "treatment")]
    return Trial(baseline=samples[baseline], treatment=samples[treatment], order=order)


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

"""The benchmark harness on trivial workloads: alternation, medians, ratios, goals, output files.

Timings are never asserted: a fake clock advanced by the workloads themselves makes
the medians and ratios exact.
"""

import json

import pytest

from benchmarks import harness, report, run
from benchmarks.harness import Figure, Goal, SubjectMissing


class FakeClock:
    """A CPU clock that only moves when a workload says how long it 'took'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def workload(self, name: str, costs: list[float], calls: list[str]):
        costs = list(costs)

        def fn():
            calls.append(name)
            self.now += costs.pop(0)
            return name
        return fn


def test_alternate_runs_warmup_then_a_b_a_b():
    clock, calls = FakeClock(), []
    base = clock.workload("A", [9, 2, 4, 3, 7], calls)
    treat = clock.workload("B", [9, 1, 1, 5, 7], calls)
    trial = harness.alternate(base, treat, repeats=4, warmup=1, clock=clock)
    assert calls[:2] == ["A", "B"]  # warm-up of both sides first
    assert calls[2:] == ["A", "B"] * 4
    assert trial.order == ["baseline", "treatment"] * 4
    assert [s.cpu for s in trial.baseline] == [2, 4, 3, 7]
    assert [s.cpu for s in trial.treatment] == [1, 1, 5, 7]
    assert trial.baseline_result == "A" and trial.treatment_result == "B"


def test_prepare_runs_untimed_before_every_run_and_feeds_the_run():
    clock, calls = FakeClock(), []

    def prepare():
        calls.append("prepare")
        clock.now += 1000  # setup cost must not be counted
        return len(calls)

    def run(state):
        calls.append(f"run{state}")
        clock.now += 2
        return state

    trial = harness.alternate(run, lambda: clock.now, repeats=3, warmup=1, clock=clock, prepare_baseline=prepare)
    assert [s.cpu for s in trial.baseline] == [2, 2, 2]
    assert calls.count("prepare") == 4  # warm-up + 3 timed runs
    assert [s.result for s in trial.baseline] == [3, 5, 7]  # each run got its own fresh state


@pytest.mark.parametrize("repeats", [0, 1, 2])
def test_alternate_refuses_fewer_than_three_repeats(repeats):
    with pytest.raises(ValueError, match="repeats must be at least 3"):
        harness.alternate(lambda: None, lambda: None, repeats=repeats)


def test_rate_figure_uses_medians_of_cpu_time():
    clock, calls = FakeClock(), []
    base = clock.workload("A", [0, 2, 100, 3], calls)  # medians ignore the outlier: 3
    treat = clock.workload("B", [0, 1, 1, 50], calls)  # median 1
    trial = harness.alternate(base, treat, repeats=3, warmup=1, clock=clock)
    fig = harness.rate_figure("demo", "throughput", "items/s", trial, work=6.0, goal=Goal(">=", 2.5))
    assert fig.baseline == pytest.approx(2.0)
    assert fig.treatment == pytest.approx(6.0)
    assert fig.ratio == pytest.approx(3.0)
    assert fig.met is True
    assert fig.details["cpu_s"]["baseline"] == [2, 100, 3]
    assert fig.wall_baseline is not None and fig.wall_treatment is not None


def test_repeat_measures_a_treatment_without_baseline():
    clock, calls = FakeClock(), []
    trial = harness.repeat(clock.workload("T", [50, 2, 4, 8], calls), repeats=3, clock=clock)
    assert calls == ["T"] * 4 and trial.order == ["treatment"] * 3
    fig = harness.rate_figure("data", "rows/s", "rows/s", trial, work=400.0, goal=Goal(">=", 50, on="treatment"))
    assert fig.baseline is None and fig.ratio is None
    assert fig.treatment == pytest.approx(100.0)
    assert fig.met is True


def test_failed_correctness_check_marks_figure_invalid_and_unmet():
    clock, calls = FakeClock(), []
    trial = harness.alternate(clock.workload("A", [1] * 4, calls), clock.workload("B", [0.1] * 4, calls),
                              clock=clock)

    def same(a, b):
        assert a == b, f"outputs differ: {a!r} != {b!r}"

    fig = harness.rate_figure("demo", "speed", "x/s", trial, work=1.0, goal=Goal(">=", 2.0), check=same)
    assert fig.ratio == pytest.approx(10.0)
    assert fig.status == "invalid"
    assert fig.met is False
    assert "outputs differ: 'A' != 'B'" in fig.note


def test_passing_correctness_check_is_recorded():
    clock, calls = FakeClock(), []
    trial = harness.alternate(clock.workload("A", [1] * 4, calls), clock.workload("A", [1] * 4, calls),
                              clock=clock)
    fig = harness.rate_figure("demo", "speed", "x/s", trial, 1.0, Goal(">=", 2.0), check=lambda a, b: None)
    assert fig.status == "ok" and fig.details["check"] == "passed"
    assert fig.met is False  # ratio 1 < 2


@pytest.mark.parametrize("goal, baseline, treatment, met", [
    (Goal(">=", 2.0), 10.0, 20.0, True),
    (Goal(">=", 2.0), 10.0, 19.9, False),
    (Goal("<=", 1 / 3), 300.0, 100.0, True),
    (Goal("<=", 1 / 3), 300.0, 101.0, False),
    (Goal(">=", 50_000, on="treatment"), None, 60_000.0, True),
    (Goal(">=", 50_000, on="treatment"), None, 40_000.0, False),
    (Goal("<=", 1.0, on="difference"), 0.5, 1.4, True),
    (Goal("<=", 1.0, on="difference"), 0.5, 1.6, False),
    (Goal(">=", 2.0), None, 5.0, None),  # no baseline: no ratio, nothing to judge
])
def test_goal_logic(goal, baseline, treatment, met):
    fig = Figure("b", "f", "u", goal, baseline=baseline, treatment=treatment)
    assert fig.met is met


@pytest.mark.parametrize("status", ["not run", "skipped", "error"])
def test_unmeasured_figures_have_no_verdict(status):
    fig = Figure("b", "f", "u", Goal(">=", 2.0), baseline=1.0, treatment=5.0, status=status)
    assert fig.met is None


@pytest.mark.parametrize("kwargs, message", [
    ({"op": "<", "value": 1.0}, "goal op must be"),
    ({"op": ">=", "value": 1.0, "on": "wall"}, "goal must be on ratio"),
])
def test_bad_goal_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Goal(**kwargs)


def test_write_results_json_and_markdown(tmp_path):
    figures = [
        Figure("training", "real tokens/s", "tok/s", Goal(">=", 2.0, text=">= 2x"), baseline=100.0,
               treatment=250.0, wall_baseline=90.0, wall_treatment=200.0),
        Figure("serving", "memory", "MB", Goal("<=", 1 / 3), baseline=400.0, treatment=200.0),
        Figure("pipelines", "overhead", "s/step", Goal("<=", 1.0, on="difference"), baseline=0.25, treatment=0.75),
        harness.not_run([Figure("data", "rows/s", "rows/s", Goal(">=", 5e4, on="treatment"))],
                        "components/data missing")[0],
    ]
    info = {"cpu_model": "Test CPU", "cores": 2, "memory_gb": 1.0, "python": "3.11", "torch": "2.13.0"}
    json_path, md_path = report.write_results(figures, tmp_path / "out", info, elapsed_s=12.0)
    payload = json.loads(json_path.read_text())
    assert payload["machine"] == info
    assert [f["met"] for f in payload["figures"]] == [True, False, True, None]
    assert payload["figures"][0]["ratio"] == pytest.approx(2.5)
    assert payload["figures"][3]["status"] == "not run"
    md = md_path.read_text()
    assert "| pipelines: overhead | s/step | 0.25 | 0.75 | T-B +0.5 | T-B <= 1 | MET |" in md
    assert "- cpu_model: Test CPU" in md
    assert "| training: real tokens/s | tok/s | 100 | 250 | 2.5x | >= 2x | MET | 90.0 / 200 |" in md
    assert "| serving: memory | MB | 400 | 200 | 0.5x |" in md and "NOT MET" in md
    assert "not run: components/data missing" in md
    assert "goals met: 2: training: real tokens/s, pipelines: overhead" in md
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_machine_description_names_cpu_memory_and_versions():
    info = report.machine()
    for key in ("cpu_model", "cores", "memory_gb", "python", "torch"):
        assert key in info
    assert info["cores"] >= 1


def test_measure_with_real_clock_returns_result_and_nonnegative_times():
    sample = harness.measure(lambda: sum(range(10_000)))
    assert sample.result == sum(range(10_000))
    assert sample.cpu >= 0 and sample.wall >= 0


class _Module:
    def __init__(self, behaviour):
        self.behaviour = behaviour

    @staticmethod
    def declared():
        return [Figure("x", "speed", "x/s", Goal(">=", 2.0))]

    def run(self, repeats):
        return self.behaviour(repeats)


def _missing(repeats):
    raise SubjectMissing("components/x", "no module named aicd.components.x.thing")


def _broken(repeats):
    raise RuntimeError("boom")


def _works(repeats):
    return [Figure("x", "speed", "x/s", Goal(">=", 2.0), baseline=1.0, treatment=float(repeats))]


@pytest.mark.parametrize("behaviour, status, note, met", [
    (_missing, "not run", "components/x missing", None),
    (_broken, "error", "RuntimeError: boom", None),
    (_works, "ok", "", True),
])
def test_runner_reports_missing_and_broken_benchmarks(monkeypatch, behaviour, status, note, met):
    monkeypatch.setattr(run.importlib, "import_module", lambda name: _Module(behaviour))
    [fig] = run.run_one("x", 3)
    assert fig.status == status
    assert note in fig.note
    assert fig.met is met


def test_main_writes_results_and_refuses_too_few_repeats(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(run.importlib, "import_module", lambda name: _Module(_works))
    assert run.main(["--only", "data", "--out", str(tmp_path), "--name", "r", "--repeats", "4"]) == 0
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["figures"][0]["treatment"] == 4.0 and payload["figures"][0]["met"] is True
    assert "goals met: 1, not met: 0, not measured: 0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run.main(["--repeats", "2", "--out", str(tmp_path)])
    assert "--repeats must be at least 3" in capsys.readouterr().err

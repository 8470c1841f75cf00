"""What a person sees while a local run goes: one line per step, then a summary."""

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aicd.pipelines.local import LocalRun, TaskRecord

_MARK = {"ran": "[green]done[/]", "cached": "[cyan]cached[/]", "failed": "[red]FAILED[/]"}


class StepPrinter:
    """A ``run_local`` listener: prints when each step starts and how it ended."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=False, highlight=False)
        self._started: dict[str, float] = {}

    def __call__(self, event: str, record: TaskRecord) -> None:
        if event == "start":
            self._started[record.name] = time.monotonic()
            self.console.print(f"[bold]>[/] {record.name} ...")
            return
        self.console.print(f"  {record.name}: {_MARK.get(record.status, record.status)} in {record.seconds:.1f}s")


def _plain(value: Any) -> Any:
    if hasattr(value, "path"):
        return str(value.path)
    return value


def key_metrics(run: LocalRun, limit: int = 12) -> dict[str, Any]:
    """Numbers worth showing: metrics-artifact metadata and numeric or boolean step outputs."""
    found: dict[str, Any] = {}
    for task in run.tasks:
        for name, value in task.outputs.items():
            meta = getattr(value, "metadata", None)
            if getattr(value, "schema_title", "") == "system.Metrics" and meta:
                for metric, number in meta.items():
                    if isinstance(number, (int, float)):
                        found[f"{task.name}.{metric}"] = number
            elif isinstance(value, (bool, int, float)):
                found[f"{task.name}.{name}"] = value
    return dict(list(found.items())[:limit])


def render_summary(run: LocalRun, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    table = Table(title=f"{run.pipeline}: {len(run.tasks)} step(s) in {run.seconds:.1f}s", title_justify="left")
    table.add_column("step")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("artifacts")
    for task in run.tasks:
        paths = [f"{n}: {_plain(v)}" for n, v in task.outputs.items() if hasattr(v, "path") and Path(v.path).exists()]
        table.add_row(task.name, _MARK.get(task.status, task.status), f"{task.seconds:.1f}", "\n".join(paths))
    console.print(table)
    metrics = key_metrics(run)
    if metrics:
        console.print("key metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
    cached = sum(t.status == "cached" for t in run.tasks)
    console.print(f"{cached} of {len(run.tasks)} step(s) from the cache; artifacts under {run.root}")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(run: LocalRun, path: str | Path) -> Path:
    """The run as JSON (what ran, outputs, seconds) for scripts and benchmarks."""
    from aicd.components.cards import atomic_write_text

    data = {"pipeline": run.pipeline, "root": str(run.root), "seconds": run.seconds,
            "tasks": [{"name": t.name, "status": t.status, "seconds": t.seconds, "log": t.log_file,
                       "outputs": {k: _plain(v) for k, v in t.outputs.items()}} for t in run.tasks]}
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)

"""What a person sees while a local run goes: one line per step, then a summary."""

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aicd.pipelines.local import LocalRun, TaskRecord

_MARK = {"ran": "[green]done[/]", "cached": "[cyan]cached[/]", "failed": "[red]FAILED[/]"}


class StepPrinter:
    """A ``run_local`` listener: a line when each step starts and ends; on a terminal, a live status
    line between them with the elapsed time and the last line of the step's log. With
    ``heartbeat_seconds``, also a progress line at least that often while steps run (terminal or
    not): steps done of ``total``, and for a training step its step, loss, speed and time left."""

    def __init__(self, console: Console | None = None, heartbeat_seconds: float | None = None,
                 total: int | None = None, examples_per_step: int | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.heartbeat_seconds = heartbeat_seconds
        self.total = total
        self.examples_per_step = examples_per_step
        self.done = 0
        self._running: dict[str, TaskRecord] = {}
        self._started: dict[str, float] = {}
        self._status = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._beat: threading.Thread | None = None

    def __call__(self, event: str, record: TaskRecord) -> None:
        if event == "start":
            self._running[record.name] = record
            self._started[record.name] = time.monotonic()
            self.console.print(f"[bold]>[/] {record.name} ...")
            self._live()
            self._heartbeat()
            return
        self._running.pop(record.name, None)
        self.done += 1
        if not self._running:
            self._quiet()
        self.console.print(f"  {record.name}: {_MARK.get(record.status, record.status)} in {record.seconds:.1f}s"
                           + (f" ({record.cpu_seconds:.1f}s CPU)" if record.cpu_seconds else ""))

    def progress_line(self) -> str:
        """Steps done (of the total) and what each running step is doing, from the end of its log."""
        of = f" of {self.total}" if self.total else ""
        parts = [f"{self.done}{of} step(s) done"]
        for name, record in list(self._running.items()):
            elapsed = _clock(time.monotonic() - self._started.get(name, time.monotonic()))
            detail = describe_progress(_last_line(record.log_file), self.examples_per_step)
            parts.append(f"{name} running {elapsed}" + (f": {detail}" if detail else ""))
        return "  progress: " + "; ".join(parts)

    def _heartbeat(self) -> None:
        if not self.heartbeat_seconds or self._beat is not None:
            return

        def beat() -> None:
            while not self._closed.wait(self.heartbeat_seconds):
                if self._running:
                    self.console.print(self.progress_line())

        self._beat = threading.Thread(target=beat, daemon=True)
        self._beat.start()

    def close(self) -> None:
        """Stop the heartbeat and the live line (the run ended)."""
        self._closed.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        self._quiet()

    def _line(self) -> str:
        parts = []
        for name, record in self._running.items():
            last = _last_line(record.log_file)
            parts.append(f"{name} {time.monotonic() - self._started[name]:.0f}s" + (f" | {last}" if last else ""))
        return "  ".join(parts)[: max(20, self.console.width - 4)]

    def _live(self) -> None:
        if not self.console.is_terminal or self._thread is not None:
            return
        self._stop.clear()
        self._status = self.console.status(self._line())
        self._status.start()

        def refresh() -> None:
            while not self._stop.wait(1.0):
                self._status.update(self._line())

        self._thread = threading.Thread(target=refresh, daemon=True)
        self._thread.start()

    def _quiet(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._status.stop()
        self._thread = self._status = None


# tqdm's line, e.g. "train:  40%|####      | 40/100 [00:10<00:15,  4.00it/s, loss=1.2345, tok_s=512]"
_TQDM = re.compile(r"(?P<n>\d+)/(?P<total>\d+) \[(?P<elapsed>[\d:]+)<(?P<left>[\d:?]+),\s*"
                   r"(?P<rate>[\d.]+|\?)(?P<unit>it/s|s/it)(?:, (?P<post>[^\]]*))?\]")


def describe_progress(line: str, examples_per_step: int | None = None) -> str:
    """A training progress bar's line as words (step n/total, loss, speed, time left); else the line."""
    match = _TQDM.search(line or "")
    if match is None:  # a log line says something; a stray brace or bar fragment does not
        return line if re.search(r"[A-Za-z]{3}", line or "") else ""
    parts = [f"step {match['n']}/{match['total']}"]
    post = dict(p.split("=", 1) for p in (match["post"] or "").split(", ") if "=" in p)
    if "loss" in post:
        parts.append(f"loss {post['loss']}")
    if match["rate"] != "?":
        steps_per_s = float(match["rate"]) if match["unit"] == "it/s" else 1.0 / max(float(match["rate"]), 1e-9)
        if examples_per_step:
            parts.append(f"{steps_per_s * examples_per_step:.1f} examples/s")
        parts.append(f"{steps_per_s:.2f} steps/s")
    if "tok_s" in post:
        parts.append(f"{post['tok_s']} tokens/s")
    if "?" not in match["left"]:
        parts.append(f"{match['left']} left")
    return ", ".join(parts)


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes else f"{sec}s"


def _last_line(path: str | None) -> str:
    """The last non-empty line of a log file (read from its end)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 2048))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][-120:] if lines else ""


def _plain(value: Any) -> Any:
    if hasattr(value, "path"):
        return str(value.path)
    return value


KEY_FIRST = ("token_f1", "rouge_l", "accuracy", "macro_f1", "gate_passed", "train_loss_final", "train_seconds",
             "steps", "rows_train", "rows_test")


def key_metrics(run: LocalRun, limit: int = 12) -> dict[str, Any]:
    """Numbers worth showing: metrics-artifact metadata and numeric or boolean step outputs,
    the usual headline figures (KEY_FIRST) first."""
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
            elif name == "dataset" and meta:
                found.update({f"{task.name}.{k}": v for k, v in meta.items() if k.startswith("rows_")})
    rank = {name: i for i, name in enumerate(KEY_FIRST)}
    ordered = sorted(found.items(), key=lambda kv: rank.get(kv[0].rsplit(".", 1)[-1], len(rank)))
    return dict(ordered[:limit])


def render_summary(run: LocalRun, console: Console | None = None) -> None:
    console = console or Console(highlight=False, soft_wrap=True)
    table = Table(title=f"{run.pipeline}: {len(run.tasks)} step(s) in {run.seconds:.1f}s", title_justify="left")
    table.add_column("step")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column(f"artifacts (under {run.root})", overflow="fold")
    for task in run.tasks:
        paths = [f"{n}: {_relative(v.path, run.root)}" for n, v in task.outputs.items()
                 if hasattr(v, "path") and Path(v.path).exists()]
        table.add_row(task.name, _MARK.get(task.status, task.status), f"{task.seconds:.1f}", "\n".join(paths))
    console.print(table)
    metrics = key_metrics(run)
    if metrics:
        console.print("key metrics: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
    for line in gate_lines(run):
        console.print(line)
    cached = sum(t.status == "cached" for t in run.tasks)
    console.print(f"{cached} of {len(run.tasks)} step(s) from the cache; artifacts under {run.root}")


def gate_lines(run: LocalRun) -> list[str]:
    """What each gate decided, from its blessing's metadata: passed, FAILED, or already serving (the
    candidate is the serving champion's model: nothing to promote), with the reasons."""
    lines = []
    for task in run.tasks:
        meta = getattr(task.outputs.get("blessing"), "metadata", None)
        if not task.name.startswith("gate-candidate") or not meta:
            continue
        reasons = "; ".join(map(str, meta.get("reasons") or []))
        if meta.get("already_serving") and not meta.get("passed"):
            lines.append(f"{task.name}: {reasons}")  # the reason starts "already serving <digest>"
        else:
            verdict = "passed" if meta.get("passed") else "FAILED"
            lines.append(f"{task.name}: {verdict}: {reasons}" if reasons else f"{task.name}: {verdict}")
    return lines


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(run: LocalRun, path: str | Path) -> Path:
    """The run as JSON (what ran, outputs, seconds) for scripts and benchmarks."""
    from aicd.components.cards import atomic_write_text

    data = {"pipeline": run.pipeline, "root": str(run.root), "seconds": run.seconds,
            "tasks": [{"name": t.name, "status": t.status, "seconds": t.seconds, "cpu_seconds": t.cpu_seconds,
                       "log": t.log_file,
                       "outputs": {k: _plain(v) for k, v in t.outputs.items()}} for t in run.tasks]}
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)

"""Per-step profile of `make demo`: wall and CPU seconds of each finetune task, before and after.

`aicd demo` writes ``<workdir>/runs/<run>/summary.json`` (pipelines/progress.py ``write_summary``) with
each task's wall seconds and ``cpu_seconds`` (user+sys of the step's subprocess). This prints them
as a markdown table, one run or two side by side::

    .venv/bin/python -m benchmarks.demo_profile BEFORE/summary.json [AFTER/summary.json]

CPU seconds are what predict the wall time on a quiet machine (kfp.local runs steps one at a
time; torch uses both cores); on a shared machine wall time mostly measures the other users.
The figures measured here are in benchmarks/results/demo-profile.md.
"""

import argparse
import json
import sys
from pathlib import Path


def load_profile(path: str | Path) -> dict[str, tuple[float, float]]:
    """``{task: (wall s, CPU s)}`` in the run's order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {t["name"]: (float(t["seconds"]), float(t.get("cpu_seconds") or 0.0)) for t in data["tasks"]}


def profile_table(runs: list[dict[str, tuple[float, float]]], labels: list[str]) -> str:
    """Markdown: one row per task (union of the runs, first-seen order) and a total row."""
    names = list(dict.fromkeys(name for run in runs for name in run))
    head = "| step | " + " | ".join(f"{label} wall s | {label} CPU s" for label in labels) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(runs)]
    for name in names + ["total"]:
        cells = []
        for run in runs:
            wall, cpu = (sum(v[0] for v in run.values()), sum(v[1] for v in run.values())) if name == "total" \
                else run.get(name, (None, None))
            cells += ["-" if wall is None else f"{wall:.1f}", "-" if cpu is None else f"{cpu:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", help="summary.json of a demo run (before, then after)")
    args = parser.parse_args(argv)
    labels = ["before", "after"] if len(args.summaries) == 2 else [f"run {i + 1}" for i in range(len(args.summaries))]
    print(profile_table([load_profile(p) for p in args.summaries], labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())

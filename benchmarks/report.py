"""The results of a suite run: the machine's description, the table, JSON and Markdown files."""

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import MIN_REPEATS, RESULTS_DIR, Figure


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
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("torch", "transformers", "peft", "accelerate", "kfp", "kserve"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = None
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

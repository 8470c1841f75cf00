"""Write and read evaluation outputs: report.json, report.html (plots), card.json.

The JSON shape is fixed in docs/contracts.md; the HTML embeds its plots as base64
PNG (matplotlib, Agg backend) so it is one self-contained file.
"""

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_dir, atomic_write_text, read_verified_json, write_card
from aicd.components.errors import EvaluationError, IntegrityError

REPORT = "report.json"
HTML = "report.html"


def png(fig) -> str:
    """A matplotlib figure as an <img> tag with a base64 PNG."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _figure(width: float = 6.0, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def metric_bars(metrics: dict[str, dict[str, float]], title: str) -> str:
    names = [n for n, v in metrics.items() if 0.0 <= v["value"] <= 1.0]  # fractions; sizes and times are tabled
    fig, ax = _figure(max(4.0, 0.6 * len(names) + 2), 3.0)
    values = [metrics[n]["value"] for n in names]
    err = [[v - metrics[n]["low"] for n, v in zip(names, values)],
           [metrics[n]["high"] - v for n, v in zip(names, values)]]
    ax.bar(names, values, yerr=err, capsize=4, color="#4c72b0")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    return png(fig)


def _confusion(summary: dict[str, Any]) -> str:
    fig, ax = _figure(4.0, 3.5)
    matrix, labels = summary["confusion_matrix"], summary["labels"]
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center")
    ax.set_title("confusion matrix")
    return png(fig)


def _latency(latencies: list[float]) -> str:
    fig, ax = _figure(5.0, 2.5)
    ax.hist(latencies, bins=min(30, max(5, len(latencies) // 3)), color="#55a868")
    ax.set_xlabel("latency (ms)")
    ax.set_title("single-request latency")
    return png(fig)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{cells}</table>"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_html(report: dict[str, Any], latencies: list[float] | None = None) -> str:
    """A self-contained HTML page: metrics with intervals, slices, checks, plots."""
    model = report["model"]
    parts = [f"<h1>Evaluation of {html.escape(str(model.get('name')))}</h1>",
             f"<p>task {report['task']}, split {report['split']}, n={report['n']}, "
             f"complete={report['complete']}, digest {html.escape(str(model.get('digest')))}</p>",
             _table([[k, v["value"], v["low"], v["high"]] for k, v in report["metrics"].items()],
                    ["metric", "value", "low (95%)", "high (95%)"]),
             metric_bars({k: v for k, v in report["metrics"].items() if "/" not in k}, "metrics, 95% bootstrap CI")]
    if report.get("classification"):
        per_class = report["classification"]["per_class"]
        parts += ["<h2>Per class</h2>", _table([[label, v["precision"], v["recall"], v["f1"], v["support"]]
                                                for label, v in per_class.items()],
                                               ["class", "precision", "recall", "F1", "support"]),
                  _confusion(report["classification"])]
    if report.get("baselines"):
        parts += ["<h2>Trivial baselines (same rows; model minus baseline, paired)</h2>", _table(
            [[name, metric, row["baseline"], row["diff"], row["low"], row["high"]]
             for name, b in report["baselines"].items() for metric, row in b["vs_candidate"].items()],
            ["baseline", "metric", "baseline value", "model - baseline", "low (95%)", "high (95%)"])]
    if report["slices"]:
        rows = [[name, s["n"]] + [s["metrics"].get(m, {}).get("value") for m in _slice_metrics(report)]
                for name, s in report["slices"].items()]
        parts += ["<h2>Slices</h2>", _table(rows, ["slice", "n"] + _slice_metrics(report))]
    if report["behavioural"]:
        parts += ["<h2>Behavioural checks</h2>", _table(
            [[k, v["pass_rate"], v["min_pass_rate"], v["passed"]] for k, v in report["behavioural"].items()],
            ["check", "pass rate", "minimum", "passed"])]
    if report.get("probe"):
        parts.append(f"<h2>Adapter probe</h2><p>{html.escape(json.dumps(report['probe']))}</p>")
    parts += ["<h2>System</h2>", _table([[k, v] for k, v in report["system"].items()], ["metric", "value"])]
    if latencies:
        parts.append(_latency(latencies))
    parts.append(f"<h2>Prompt template</h2><pre>{html.escape(str(report.get('prompt_template')))}</pre>")
    style = "body{font-family:sans-serif;max-width:960px;margin:auto}td,th{padding:2px 8px;border:1px solid #ccc}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" + \
        "\n".join(parts) + "</body></html>"


def _slice_metrics(report: dict[str, Any]) -> list[str]:
    first = next(iter(report["slices"].values()))
    return [m for m in first["metrics"] if "/" not in m]


def write_report(report: dict[str, Any], out_dir: str | Path, latencies: list[float] | None = None) -> Path:
    """Write report.json, report.html and an ``evaluation`` card atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        atomic_write_text(tmp / REPORT, json.dumps(report, indent=2, sort_keys=True) + "\n")
        atomic_write_text(tmp / HTML, render_html(report, latencies))
        write_card(tmp, "evaluation", task=report["task"], split=report["split"], n=report["n"],
                   model=report["model"], complete=report["complete"])
    return out_dir / REPORT


def load_report(path: str | Path) -> dict[str, Any]:
    """A report from its file or its evaluation folder; refuses incomplete reports."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT
    if not path.is_file():
        raise EvaluationError(f"{path} does not exist", "pass the output folder of evaluate_model or its report.json")
    try:
        report = read_verified_json(path.parent, path.name, kind="evaluation")
    except IntegrityError as err:
        raise IntegrityError(f"refusing the report {path}: {err.message}",
                             "pass the evaluation folder exactly as evaluate_model wrote it (with its card.json), "
                             "or run evaluate_model again") from None
    if not isinstance(report, dict) or report.get("kind") != "evaluation" or "examples" not in report:
        raise EvaluationError(f"{path} is not an evaluation report", "pass report.json written by evaluate_model")
    if report.get("complete") is not True:
        raise EvaluationError(f"{path} is marked incomplete", "run the evaluation again until it completes")
    return report

"""Compare trained methods: a table and a Pareto plot of quality against cost.

Inputs are the summaries the train_adapter step returns (method, digest, training
figures) and the evaluate_model step's summaries (model digest and metrics), joined
on the artifact digest. A method is on the Pareto front when no other method is at
least as good on quality and at most as costly on every cost, and strictly better on one.
"""

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_write_text
from aicd.components.errors import TrainingError
from aicd.components.spec import METRICS

log = logging.getLogger(__name__)
COSTS = ("train_seconds", "peak_memory_mb", "adapter_size_mb")


def _loads(item: Any) -> dict:
    return json.loads(item) if isinstance(item, str) else dict(item)


def comparison_rows(trainings: list, evaluations: list, primary: str) -> list[dict]:
    """One row per trained method: quality (the primary metric) and costs."""
    evals = {}
    for item in evaluations:
        summary = _loads(item)
        evals[(summary.get("model") or {}).get("digest")] = summary.get("metrics", {})
    rows = []
    for item in trainings:
        t = _loads(item)
        metrics = evals.get(t["digest"])
        if metrics is None:
            raise TrainingError(f"no evaluation of method {t['method']!r} (digest {t['digest']})",
                                "evaluate every trained Model artifact before comparing them")
        rows.append({"method": t["method"], "kind": t.get("method_kind", ""), "digest": t["digest"],
                     "quality": metrics.get(primary), **{c: t["metrics"].get(c) for c in COSTS},
                     "train_loss_final": t["metrics"].get("train_loss_final")})
    return rows


def pareto_front(rows: list[dict], higher_is_better: bool = True) -> list[dict]:
    """Mark each row ``pareto: bool``; rows missing a figure are never dominated by it."""
    def better_or_equal(a, b):
        q = (a["quality"] >= b["quality"]) if higher_is_better else (a["quality"] <= b["quality"])
        return q and all((a[c] or 0) <= (b[c] or 0) for c in COSTS)

    def strictly(a, b):
        return a["quality"] != b["quality"] or any((a[c] or 0) != (b[c] or 0) for c in COSTS)

    for row in rows:
        row["pareto"] = row["quality"] is not None and not any(
            other is not row and other["quality"] is not None and better_or_equal(other, row) and strictly(other, row)
            for other in rows)
    return rows


def _plot_png(rows: list[dict], primary: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=(4 * len(COSTS), 3.5))
    for ax, cost in zip(axes, COSTS):
        for row in rows:
            if row["quality"] is None or row[cost] is None:
                continue
            ax.scatter(row[cost], row["quality"], marker="*" if row["pareto"] else "o", s=80)
            ax.annotate(row["method"], (row[cost], row["quality"]), fontsize=8)
        ax.set_xlabel(cost)
        ax.set_ylabel(primary)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_comparison(trainings: list, evaluations: list, primary: str, table_path: str | Path,
                     html_path: str | Path) -> list[dict]:
    """Write the table (JSON) and the HTML page with the Pareto plot; return the rows."""
    higher = METRICS.get(primary, True)
    rows = pareto_front(comparison_rows(trainings, evaluations, primary), higher)
    rows.sort(key=lambda r: (not r["pareto"], r["quality"] is None,
                             -(r["quality"] or 0) if higher else r["quality"] or 0))
    atomic_write_text(table_path, json.dumps({"primary": primary, "rows": rows}, indent=2) + "\n")
    head = "".join(f"<th>{h}</th>" for h in ("method", primary, *COSTS, "pareto"))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>"
                                    for k in ("method", "quality", *COSTS, "pareto")) + "</tr>" for r in rows)
    page = (f"<html><body><h2>Methods: {html.escape(primary)} against cost</h2>"
            f"<img src='data:image/png;base64,{_plot_png(rows, primary)}'/>"
            f"<table border=1><tr>{head}</tr>{body}</table></body></html>")
    atomic_write_text(html_path, page)
    return rows


def best_method(rows: list[dict], primary: str) -> dict:
    """The row to deliver: the best quality on the primary metric (ties: the cheaper training, then the name)."""
    scored = [r for r in rows if r["quality"] is not None]
    if not scored:
        raise TrainingError(f"no trained method has a {primary} score to choose by",
                            f"check that the evaluation computes {primary} (metrics.primary) for these models")
    sign = -1 if METRICS.get(primary, True) else 1
    return min(scored, key=lambda r: (sign * r["quality"], r.get("train_seconds") or 0, r["method"]))


def copy_chosen(rows: list[dict], primary: str, models: list[str | Path], out_dir: str | Path) -> dict:
    """Copy the chosen method's Model artifact (found among ``models`` by card digest) to ``out_dir``."""
    import shutil

    from aicd.components.cards import atomic_dir, verify_card

    chosen = best_method(rows, primary)
    by_digest = {verify_card(m)["digest"]: Path(m) for m in models}
    if chosen["digest"] not in by_digest:
        raise TrainingError(f"the chosen method {chosen['method']!r} has no Model artifact with digest "
                            f"{chosen['digest']}", "pass every trained Model artifact to the choice")
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(by_digest[chosen["digest"]], tmp, dirs_exist_ok=True)
    log.info("chose method %s: %s %.4g of %d method(s)", chosen["method"], primary, chosen["quality"], len(rows))
    return chosen

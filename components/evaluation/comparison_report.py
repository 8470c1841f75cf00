"""What a paired comparison says, for people: every metric with its interval and a verdict, and the
examples that changed most (``comparison.html`` beside ``comparison.json``).

``verdict`` reads a comparison row: ``better`` / ``worse`` when the whole interval lies on one side
of zero (significant at the comparison's confidence), ``no significant difference`` otherwise.
System metrics have no interval; their verdict says so.
"""

import html
from typing import Any

import numpy as np

from aicd.components.spec import SYSTEM_METRICS

# The per-example score the gains and losses are ranked by, in order of preference.
FOCUS = ("token_f1", "rouge_l", "chrf", "accuracy")
EXTREMES = 5


def verdict(metric: str, row: dict[str, Any]) -> str:
    if metric.split("/")[0] in SYSTEM_METRICS:
        return "point value (no interval)"
    better_low = row["low"] > 0 if row.get("higher_is_better", True) else row["high"] < 0
    worse = row["high"] < 0 if row.get("higher_is_better", True) else row["low"] > 0
    return "significantly better" if better_low else "significantly worse" if worse else "no significant difference"


def extremes(a: dict[str, Any], b: dict[str, Any], k: int = EXTREMES) -> dict[str, Any] | None:
    """The ``k`` examples where candidate ``a`` gained most over champion ``b`` and lost most, by the
    first per-example score of FOCUS both have; side by side (reference, candidate, champion)."""
    metric = next((m for m in FOCUS if m in a["scores"] and m in b["scores"]), None)
    if metric is None or a.get("predictions") is None or b.get("predictions") is None:
        return None
    diff = np.asarray(a["scores"][metric], dtype=float) - np.asarray(b["scores"][metric], dtype=float)
    order = np.argsort(diff, kind="stable")

    def row(i: int) -> dict[str, Any]:
        return {"id": a["ids"][i], "reference": (a.get("references") or [None] * len(diff))[i],
                "candidate": a["predictions"][i], "champion": b["predictions"][i],
                "candidate_score": float(a["scores"][metric][i]), "champion_score": float(b["scores"][metric][i]),
                "diff": float(diff[i])}

    gains = [row(int(i)) for i in order[::-1][:k] if diff[i] > 0]
    losses = [row(int(i)) for i in order[:k] if diff[i] < 0]
    return {"metric": metric, "gains": gains, "losses": losses}


def _cell(value: Any) -> str:
    return html.escape(f"{value:.4g}" if isinstance(value, float) else str(value))


def _examples(title: str, rows: list[dict[str, Any]], metric: str) -> str:
    if not rows:
        return f"<h3>{title}</h3><p>none</p>"
    head = ["id", f"{metric} diff", "reference", "candidate", "champion"]
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in (
        r["id"], r["diff"], r["reference"], f"{r['candidate']} ({r['candidate_score']:.3g})",
        f"{r['champion']} ({r['champion_score']:.3g})")) + "</tr>" for r in rows)
    return f"<h3>{title}</h3><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{body}</table>"


def render_comparison_html(comparison: dict[str, Any]) -> str:
    """A self-contained page: the metric table with verdicts, then the largest gains and losses."""
    rows = "".join(
        f"<tr class='{verdict(m, r).split()[-1]}'>" + "".join(f"<td>{_cell(c)}</td>" for c in (
            m, r["candidate"], r["champion"], r["diff"], r["low"], r["high"], verdict(m, r))) + "</tr>"
        for m, r in comparison["metrics"].items())
    level = f"{comparison['confidence']:.0%}"
    parts = [f"<h1>Candidate vs champion (paired, n={comparison['n']})</h1>",
             "<table><tr>" + "".join(f"<th>{h}</th>" for h in (
                 "metric", "candidate", "champion", "difference", f"low ({level})", f"high ({level})",
                 "verdict")) + f"</tr>{rows}</table>"]
    ext = comparison.get("extremes")
    if ext:
        parts += [f"<h2>Examples that changed most ({html.escape(ext['metric'])})</h2>",
                  _examples("largest gains", ext["gains"], ext["metric"]),
                  _examples("largest losses", ext["losses"], ext["metric"])]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;border:1px solid #ccc;"
             "vertical-align:top}tr.better td{background:#e6f4ea}tr.worse td{background:#fce8e6}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" + \
        "\n".join(parts) + "</body></html>"

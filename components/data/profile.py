"""profile_dataset: an HTML report of a data set with embedded plots.

The figures are drawn from the card's own numbers (``length_histogram``,
``label_distribution`` or ``slice_distribution``, ``rows_per_source``,
``quarantine_counts``), so the report and the card always agree. Plots are PNGs
(matplotlib, Agg canvas) embedded as base64, so the KFP UI shows the file as is.
"""

import base64
import html
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.cards import atomic_write_text, verify_card
from aicd.components.data.format import read_quarantine

log = logging.getLogger(__name__)
_SAMPLES = 20


@dataclass
class ProfileResult:
    path: Path
    plots: list[str]
    fingerprint: str


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4))
    return fig, fig.add_subplot()


def _bars(title: str, counts: dict[str, int], xlabel: str) -> str:
    fig, ax = _figure()
    if counts:
        names = list(counts)
        ax.barh(names[::-1], [counts[n] for n in names][::-1], color="#4c72b0")
    else:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _png(fig)


def _lengths(card: dict[str, Any]) -> str:
    fig, ax = _figure()
    for field, hist in card.get("length_histogram", {}).items():
        edges, counts = hist.get("edges", []), hist.get("counts", [])
        if counts:
            ax.stairs(counts, edges, label=field, fill=False, linewidth=1.5)
    ax.set_title("Length histogram")
    ax.set_xlabel(f"tokens ({card.get('token_count', 'approx')})")
    ax.set_ylabel("rows")
    if card.get("length_histogram"):
        ax.legend()
    return _png(fig)


def _labels(card: dict[str, Any]) -> tuple[str, str]:
    """The label distribution per split, or for a task without labels the first slice column."""
    fig, ax = _figure()
    dist = card.get("label_distribution_by_split") or {}
    if not dist and card.get("label_distribution"):
        dist = {"all": card["label_distribution"]}
    if dist:
        title = "Label distribution by split"
        labels = sorted({label for counts in dist.values() for label in counts})
        left = [0] * len(labels)
        for split, counts in dist.items():
            values = [counts.get(label, 0) for label in labels]
            ax.barh(labels, values, left=left, label=split)
            left = [a + b for a, b in zip(left, values)]
        ax.legend()
    else:
        slices = card.get("slice_distribution") or {}
        column = next(iter(slices), None)
        title = f"Distribution of `{column}`" if column else "Label distribution (no labels)"
        counts = slices.get(column, {}) if column else {}
        names = sorted(counts, key=counts.get)
        ax.barh(names, [counts[n] for n in names], color="#55a868")
        if not counts:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("rows")
    return title, _png(fig)


def figures(card: dict[str, Any]) -> dict[str, str]:
    """Title -> base64 PNG of the four plots of a data set card."""
    label_title, label_png = _labels(card)
    return {
        "Length histogram": _lengths(card),
        label_title: label_png,
        "Rows per source": _bars("Rows per source", card.get("rows_per_source", {}), "rows"),
        "Quarantine reasons": _bars("Quarantine reasons", card.get("quarantine_counts", {}), "rows"),
    }


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render_html(card: dict[str, Any], quarantine: list[dict[str, Any]]) -> str:
    plots = figures(card)
    summary = _table([("fingerprint", card.get("fingerprint")), ("parent", card.get("parent")),
                      ("task", card.get("task")), ("counts", card.get("counts")),
                      ("rows read", card.get("rows_read")), ("bad fraction", card.get("bad_fraction")),
                      ("duplicate fraction", card.get("duplicate_fraction")),
                      ("rows per source", card.get("rows_per_source")),
                      ("quarantine reasons", card.get("quarantine_counts")),
                      ("repairs", card.get("repairs")), ("split", card.get("split")),
                      ("length stats", json.dumps(card.get("length_stats")))])
    images = "".join(f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{png}">'
                     f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, png in plots.items())
    samples = "".join(
        f"<tr><td>{html.escape(str(q.get('reason')))}</td><td>{html.escape(str(q.get('file')))}:"
        f"{q.get('line')}</td><td>{html.escape(str(q.get('detail')))}</td></tr>" for q in quarantine)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data set profile {html.escape(str(card.get('fingerprint'))[:19])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}
figure{{display:inline-block;margin:0.5em}}</style></head>
<body><h1>Data set profile</h1>{summary}<h2>Figures</h2>{images}
<h2>First quarantined rows</h2><table><tr><th>reason</th><th>where</th><th>detail</th></tr>{samples}</table>
</body></html>
"""


def profile_dataset(dataset_dir: str | Path, out_html: str | Path) -> ProfileResult:
    """Verify the data set's card and write its HTML profile report to ``out_html``."""
    card = verify_card(dataset_dir, kind="dataset")
    page = render_html(card, read_quarantine(dataset_dir, limit=_SAMPLES))
    atomic_write_text(out_html, page)
    plots = re.findall(r'<img alt="([^"]*)"', page)
    log.info("profile of %s written to %s (%d plots)", card.get("fingerprint"), out_html, len(plots))
    return ProfileResult(Path(out_html), plots, card["fingerprint"])

"""Inter-annotator agreement and conflict resolution.

- Cohen's kappa for two annotators, over the items both labeled:
  ``(p_o - p_e) / (1 - p_e)``.
- Krippendorff's alpha (nominal) for any number of annotators, with missing values:
  ``1 - D_o / D_e`` from the coincidence matrix (Krippendorff 2011, "Computing
  Krippendorff's alpha-reliability").

Both are None when undefined (every value the same category: no variation to agree on).
"""

from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# item id -> annotator id -> value
Ratings = Mapping[str, Mapping[Hashable, Hashable]]


def cohen_kappa(a: list[Hashable], b: list[Hashable]) -> float | None:
    """Cohen's kappa of two annotators' values on the same items (paired lists)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs paired values, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha_nominal(ratings: Ratings) -> float | None:
    """Krippendorff's alpha for nominal data; items with fewer than two values are skipped."""
    coincidence: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for values_by_annotator in ratings.values():
        values = list(values_by_annotator.values())
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidence[(c, k)] += 1.0 / (m - 1)
    totals: dict[Hashable, float] = defaultdict(float)
    for (c, _), weight in coincidence.items():
        totals[c] += weight
    n = sum(totals.values())
    if n <= 1:
        return None
    disagree_observed = sum(w for (c, k), w in coincidence.items() if c != k)
    disagree_expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (n - 1)
    if disagree_expected == 0:
        return None
    return 1.0 - disagree_observed / disagree_expected


def agreement(ratings: Ratings) -> dict[str, Any]:
    """Agreement figures of a labeling round, as recorded on the data set card.

    ``method`` is ``cohen_kappa`` when exactly two annotators labeled the shared items,
    ``krippendorff_alpha`` (nominal) for more; ``value`` is that method's figure.
    """
    shared = {item: dict(v) for item, v in ratings.items() if len(v) >= 2}
    annotators = sorted({a for v in ratings.values() for a in v}, key=str)
    pairs = sum(len(v) * (len(v) - 1) / 2 for v in shared.values())
    agreeing = sum(sum(1 for i, x in enumerate(vals) for y in vals[i + 1:] if x == y)
                   for vals in (list(v.values()) for v in shared.values()))
    out: dict[str, Any] = {
        "annotators": len(annotators),
        "items": len(ratings),
        "items_with_overlap": len(shared),
        "percent_agreement": round(agreeing / pairs, 6) if pairs else None,
        "krippendorff_alpha": _round(krippendorff_alpha_nominal(shared)),
        "cohen_kappa": None,
    }
    if len(annotators) == 2:
        first, second = annotators
        both = [v for v in shared.values() if first in v and second in v]
        out["cohen_kappa"] = _round(cohen_kappa([v[first] for v in both], [v[second] for v in both]))
        out["method"], out["value"] = "cohen_kappa", out["cohen_kappa"]
    else:
        out["method"], out["value"] = "krippendorff_alpha", out["krippendorff_alpha"]
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


@dataclass(frozen=True)
class Resolution:
    """The value agreed for one item, or why it needs a person to adjudicate."""

    value: Hashable | None
    votes: dict[str, int]
    reason: str | None = None  # set when the item needs adjudication


def resolve(values: list[Hashable], mode: Literal["majority", "adjudicate"],
            ground_truth: Hashable | None = None) -> Resolution:
    """Resolve one item's values: an adjudicator's ground truth wins, then majority or unanimity."""
    votes = Counter(values)
    table = {str(k): n for k, n in sorted(votes.items(), key=lambda kv: (-kv[1], str(kv[0])))}
    if ground_truth is not None:
        return Resolution(ground_truth, table)
    if len(votes) == 1:
        return Resolution(values[0], table)
    if mode == "adjudicate":
        return Resolution(None, table, f"annotators disagree ({_fmt(table)}); adjudicate it in Label Studio "
                                       "(mark one annotation as ground truth) and import again")
    (top, top_n), (_, second_n) = votes.most_common(2)
    if top_n == second_n:
        return Resolution(None, table, f"no majority ({_fmt(table)}); add an annotation or mark one as "
                                       "ground truth in Label Studio and import again")
    return Resolution(top, table)


def _fmt(table: dict[str, int]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in table.items())

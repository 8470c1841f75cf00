"""Decisions the pipelines take between steps (plain functions; steps.py wraps them)."""

import logging
from dataclasses import dataclass
from typing import Any

from aicd.components.errors import DataError
from aicd.components.spec import LabelingSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    new_rows: int
    threshold: int
    reason: str


def enough_new_data(spec: dict[str, Any], labeled_rows: int, feedback_rows: int) -> RetrainDecision:
    """Retrain once ``labeling.retrain_min_new_rows`` new labeled or feedback rows arrived since the last version."""
    if labeled_rows < 0 or feedback_rows < 0:
        raise DataError(f"new row counts must not be negative, got labeled={labeled_rows}, feedback={feedback_rows}",
                        "pass the counts import_labels and collect_feedback returned")
    section = spec.get("labeling")
    threshold = LabelingSpec.model_validate(section).retrain_min_new_rows if section else \
        LabelingSpec.model_fields["retrain_min_new_rows"].default
    new_rows = int(labeled_rows) + int(feedback_rows)
    retrain = new_rows >= threshold
    reason = (f"{new_rows} new row(s) ({labeled_rows} labeled + {feedback_rows} feedback) "
              f"{'>=' if retrain else '<'} labeling.retrain_min_new_rows={threshold}")
    log.info("retrain: %s: %s", retrain, reason)
    return RetrainDecision(retrain, new_rows, threshold, reason)

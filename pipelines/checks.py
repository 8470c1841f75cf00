"""Decisions the pipelines take between steps (plain functions; steps.py wraps them)."""

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
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


def base_model_uri(spec: dict[str, Any]) -> str:
    """The base model fine-tuning starts from: the spec's first candidate's URI."""
    candidates = spec.get("candidates") or []
    return str(candidates[0].get("uri", "")) if candidates and isinstance(candidates[0], dict) else ""


def enough_new_data(spec: dict[str, Any], labeled_rows: int, feedback_rows: int,
                    trained_base: str = "") -> RetrainDecision:
    """Retrain once ``labeling.retrain_min_new_rows`` new labeled or feedback rows arrived since the last
    version, or when the base model is no longer the one the last training started from
    (``trained_base``; '' when unknown). A new base model version is a new URI (pin revisions:
    ``hf://org/model@rev``, a new package version's ``pkg://`` path, a new ``pvc://`` folder)."""
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
    base = base_model_uri(spec)
    if trained_base and base and trained_base != base:
        retrain = True
        reason = f"the base model changed since the last training ({trained_base} -> {base}); {reason}"
    log.info("retrain: %s: %s", retrain, reason)
    return RetrainDecision(retrain, new_rows, threshold, reason)


@dataclass(frozen=True)
class TrainingPlan:
    """What a continuous run trains: ``training.methods`` by name, in the spec's order (none: no training)."""

    methods: list[str]
    reason: str

    @property
    def retrain(self) -> bool:
        return bool(self.methods)


def plan_training(spec: dict[str, Any], labeled_rows: int, feedback_rows: int, new_pairs: int = 0,
                  trained_base: str = "") -> TrainingPlan:
    """The supervised methods when :func:`enough_new_data` says so; the dpo methods once
    ``labeling.retrain_min_new_pairs`` new preference pairs arrived (a log line says when too few did)."""
    from aicd.components.spec import TrainingSpec

    if new_pairs < 0:
        raise DataError(f"the new preference pair count must not be negative, got {new_pairs}",
                        "pass the count count_new_pairs returned")
    rows = enough_new_data(spec, labeled_rows, feedback_rows, trained_base)
    methods = TrainingSpec.model_validate(spec["training"]).methods if spec.get("training") else []
    dpo = [m.name for m in methods if m.method == "dpo"]
    chosen = [m.name for m in methods if m.method != "dpo"] if rows.retrain else []
    reason = rows.reason
    if dpo:
        section = spec.get("labeling")
        threshold = LabelingSpec.model_validate(section).retrain_min_new_pairs if section else \
            LabelingSpec.model_fields["retrain_min_new_pairs"].default
        if new_pairs >= threshold:
            chosen += dpo
            reason += (f"; {new_pairs} new preference pair(s) to train on >= "
                       f"labeling.retrain_min_new_pairs={threshold}: training dpo method(s) {', '.join(dpo)}")
        else:
            reason += (f"; too few new preference pairs to train dpo method(s) {', '.join(dpo)} on: {new_pairs} < "
                       f"labeling.retrain_min_new_pairs={threshold} (collect more corrections and thumbs up/down "
                       "on the same prompts, or import labeled pairs)")
            log.info("dpo skipped: %d new preference pair(s) < labeling.retrain_min_new_pairs=%d", new_pairs,
                     threshold)
    order = [m.name for m in methods]
    chosen.sort(key=order.index)
    log.info("training plan: %s: %s", ", ".join(chosen) or "nothing", reason)
    return TrainingPlan(chosen, reason)


def new_preference_pairs(task: dict[str, Any], versions: list[str | Path],
                         previous: list[str | Path | None]) -> int:
    """Preference pairs (prompt, chosen, rejected) in the train split of the labeled and feedback
    ``versions`` that the ``previous`` versions (what the last training used; None for none) did not
    hold. The train split only: that is what a dpo method learns from (held-out pairs are for the
    preference metric)."""
    from aicd.components.labeling.versions import normalise, read_version
    from aicd.components.spec import TaskSpec
    from aicd.components.training.preference import preference_pairs

    spec = TaskSpec.model_validate(task)

    def keys(path: str | Path | None) -> set[tuple[str, str, str]]:
        if path is None:
            return set()
        _, splits = read_version(path)
        pairs = preference_pairs(splits["train"], spec)
        return {(normalise(p.prompt), normalise(p.chosen), normalise(p.rejected)) for p in pairs}

    seen = set().union(*(keys(p) for p in previous))
    return len(set().union(*(keys(v) for v in versions)) - seen)


# --- What the continuous pipeline last trained on -------------------------------------------------
# A recurring run gets the same parameters every time, so the versions it counts new rows from
# are kept by the pipeline itself under ``state_uri``: ``<state>/trained/{labels,feedback}``,
# replaced together (one atomic rename) after each training.

TRAINED = "trained"


def state_dir(state_uri: str) -> Path:
    """The local folder of a state URI (a path, ``file://`` or ``pvc://claim/path``); it need not exist
    yet, but a pvc:// claim must be mounted."""
    from aicd.components.errors import UriError

    uri = state_uri.strip()
    if uri.startswith("pvc://"):
        rest = uri[len("pvc://"):].strip("/")
        claim = rest.split("/", 1)[0]
        root = Path(os.environ.get("AICD_PVC_ROOT", "/mnt/pvc"))
        if not claim or not (root / claim).is_dir():
            raise UriError(f"state URI {state_uri!r}: claim {claim!r} is not mounted ({root / claim} does not exist)",
                           "mount the claim for the labeling steps with the platform profile's `volumes`, "
                           "or set AICD_PVC_ROOT")
        return root / rest
    if "://" in uri and not uri.startswith("file://"):
        raise UriError(f"state URI {state_uri!r}: the continuous pipeline keeps its state on a volume",
                       "give a local path or a pvc://<claim>/<path> URI (or '' to keep no state)")
    return Path(uri.removeprefix("file://")).expanduser()


def previous_versions(state_uri: str, previous_labels: str = "", previous_feedback: str = "") -> tuple[str, str, str]:
    """(labels URI, feedback URI, base model URI) of the last training: the URIs new rows are counted
    from are the ones given, else the versions the last training used (kept under ``state_uri``), else
    '' (count every row: nothing trained yet); the base model is the recorded one, or ''."""
    labels, feedback, base_model = previous_labels.strip(), previous_feedback.strip(), ""
    if state_uri.strip():
        trained = state_dir(state_uri) / TRAINED
        base = state_uri.strip().rstrip("/") + f"/{TRAINED}"
        if (trained / "labels" / "card.json").is_file() and (trained / "feedback" / "card.json").is_file():
            if not (labels and feedback):
                log.info("counting new rows from the last trained versions in %s", trained)
            labels, feedback = labels or f"{base}/labels", feedback or f"{base}/feedback"
            try:
                base_model = str(json.loads((trained / "trained.json").read_text()).get("base_model") or "")
            except (OSError, ValueError, AttributeError):
                log.warning("%s is unreadable: the base model of the last training is unknown",
                            trained / "trained.json")
        elif not (labels and feedback):
            log.info("no trained versions in %s yet: every labeled and feedback row counts as new", trained)
    return labels, feedback, base_model


def record_trained_versions(state_uri: str, labels_dir: str | Path, feedback_dir: str | Path,
                            model_digest: str = "", base_model: str = "") -> Path:
    """Keep the labeled and feedback versions a training used under ``state_uri`` (both or neither)."""
    from aicd.components.cards import atomic_dir, verify_card

    target = state_dir(state_uri) / TRAINED
    cards = {name: verify_card(src, kind="dataset") for name, src in (("labels", labels_dir),
                                                                     ("feedback", feedback_dir))}
    with atomic_dir(target) as tmp:
        shutil.copytree(labels_dir, tmp / "labels")
        shutil.copytree(feedback_dir, tmp / "feedback")
        (tmp / "trained.json").write_text(json.dumps(
            {"labels": cards["labels"].get("fingerprint"), "feedback": cards["feedback"].get("fingerprint"),
             "model": model_digest, "base_model": base_model}, indent=2) + "\n")
    log.info("recorded the trained versions in %s", target)
    return target

"""collect_feedback: the predictor's payload log and user feedback -> a feedback data set.

The log is ``payloads.jsonl`` (docs/contracts.md): ``request`` lines and ``feedback``
lines joined by request id (the latest feedback on a request wins). What becomes what:

- thumbs up: a row (instruction = the user's prompt, response = the model's answer);
- a correction (with either rating): a row whose response is the correction, and a
  preference pair (``prompt``, ``chosen`` = correction, ``rejected`` = the model's answer);
- thumbs down without a correction: no training target, so it is *quarantined* with
  its reason and kept there as a negative signal (the model's answer is bad); when the
  same prompt has an accepted answer in the log, that pair becomes a preference row.

Every text is masked with ``labeling.pii_patterns`` (``[EMAIL]``, ``[PHONE]``, ...)
before anything is written. Rows go to splits by a salted hash of the normalised
prompt (``data.split``), so one prompt never lands in two splits.
"""

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.errors import DataError, LabelingError
from aicd.components.labeling.configs import labeling_of
from aicd.components.labeling.payloads import exchange_of
from aicd.components.labeling.versions import (
    normalise,
    parent_fingerprint,
    read_version,
    row_hash_of,
    split_of,
    write_version,
)
from aicd.components.spec import Spec

log = logging.getLogger(__name__)
PAYLOADS = "payloads.jsonl"
ROTATED = "payloads*.jsonl"  # the live log and its rotated files (telemetry.PayloadLog)
FEEDBACK_SOURCE = "feedback:"  # the ``source`` of a row collected from the payload log
LINE_LIMIT = 8 << 20  # bytes of one log line (the predictor logs at most 1 MiB of a response)
_TYPE = re.compile(rb'"type":\s*"(\w+)"')


@dataclass
class FeedbackResult:
    out_dir: str
    fingerprint: str
    rows: int
    new_rows: int
    preference_pairs: int
    quarantined: int
    masked: dict[str, int]


class Masker:
    """Replace every match of the spec's PII patterns with ``[NAME]``; counts what it masked."""

    def __init__(self, patterns: dict[str, str]):
        self.patterns = [(name, re.compile(p)) for name, p in patterns.items()]
        self.counts: Counter[str] = Counter()

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for name, pattern in self.patterns:
            text, n = pattern.subn(f"[{name.upper()}]", text)
            self.counts[name] += n
        return text


def log_files(log_path: str | Path) -> list[Path]:
    """The payload log files at ``log_path``: a ``payloads.jsonl`` file, or a folder holding the log and its
    rotated files (``payloads-<time>.jsonl``) and/or one sub-folder per predictor pod (the payload-logs
    claim, manifests/base/servingruntime.yaml)."""
    path = Path(log_path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LabelingError(f"payload log {path} does not exist",
                            "pass the predictor's --log-dir folder, its payloads.jsonl, or the payload-logs "
                            "claim (one sub-folder per pod)")
    files = [f for f in [*sorted(path.glob(ROTATED)), *sorted(path.glob(f"*/{ROTATED}"))] if f.is_file()]
    if not files:
        raise LabelingError(f"payload log folder {path} holds no {PAYLOADS}, neither itself nor in a "
                            "sub-folder (one per predictor pod)",
                            "pass the folder the predictor's --log-dir points at, or the payload-logs claim")
    return files


def _lines(files: list[Path]) -> Iterator[tuple[dict[str, Any], str | None, bytes]]:
    """(where, type or None when unreadable, line) of every line, streamed; a line over LINE_LIMIT bytes is
    skipped to its end unread."""
    for path in files:
        with open(path, "rb") as fh:
            number = 0
            while line := fh.readline(LINE_LIMIT + 1):
                number += 1
                where = {"file": str(path), "line": number} if len(files) > 1 else {"line": number}
                if len(line) > LINE_LIMIT and not line.endswith(b"\n"):
                    while (rest := fh.readline(LINE_LIMIT + 1)) and not rest.endswith(b"\n"):
                        pass
                    yield where, None, b"too-long"
                    continue
                if line.strip():
                    kind = _TYPE.search(line[:200])
                    yield where, kind.group(1).decode() if kind else "", line


def read_log(log_path: str | Path) -> tuple[dict[str, dict], dict[str, dict], list[dict[str, Any]], int]:
    """(requests that have feedback, by id; latest feedback by id; unreadable lines as quarantine records;
    number of requests in the log), streamed in two passes so memory grows with the feedback, not the log.

    Several files (one per predictor pod, and rotated ones) are joined: feedback may reach another pod
    than its request; the feedback with the latest ``time`` wins (in one file, the later line).
    """
    files = log_files(log_path)
    feedback, bad = {}, []
    for where, kind, line in _lines(files):  # pass 1: feedback (small), and every unreadable line
        record = _record(where, kind, line, bad, wanted="feedback")
        if record is not None:
            rid = str(record["id"])
            if rid not in feedback or str(record.get("time")) >= str(feedback[rid].get("time")):
                feedback[rid] = record  # later feedback replaces earlier
    requests, count = {}, 0
    for where, kind, line in _lines(files):  # pass 2: only the requests that have feedback
        if kind != "request":
            continue
        count += 1
        record = _record(where, kind, line, [], wanted="request")
        if record is not None and str(record["id"]) in feedback:
            requests[str(record["id"])] = record
    return requests, feedback, bad, count


def _record(where: dict, kind: str | None, line: bytes, bad: list, wanted: str) -> dict[str, Any] | None:
    if kind is None:
        bad.append({"kind": "unreadable-line", **where, "reason": f"longer than {LINE_LIMIT} bytes"})
        return None
    if kind not in ("request", "feedback", ""):
        kind = ""
    if kind and kind != wanted:
        return None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        bad.append({"kind": "unreadable-line", **where, "reason": f"not JSON ({getattr(err, 'msg', err)})"})
        return None
    if not isinstance(record, dict) or record.get("type") not in ("request", "feedback") or not record.get("id"):
        bad.append({"kind": "unreadable-line", **where, "reason": "neither a request nor a feedback record with "
                    "an id"})
        return None
    return record if record["type"] == wanted else None


def _label_problem(spec: Spec, label: str | None) -> str | None:
    if spec.task.type != "text-classification" or label in spec.task.labels:
        return None
    return f"label {label!r} is not one of task.labels {spec.task.labels}"


def _rows(spec: Spec, requests: dict[str, dict], feedback: dict[str, dict], mask: Masker):
    """Training rows and quarantine records from joined requests and feedback."""
    instr, resp = spec.task.fields
    rows, quarantine, downs = [], [], []
    for rid, fb in sorted(feedback.items(), key=lambda kv: str(kv[1].get("time"))):
        request = requests.get(rid)
        base = {"id": rid, "request_time": None, "feedback_time": fb.get("time"), "rating": fb.get("rating")}
        if request is None:
            quarantine.append({"kind": "orphan-feedback", **base,
                               "reason": f"feedback on request {rid!r}, which is not in the log (rotated away?)"})
            continue
        base.update(request_time=request.get("time"), adapter=request.get("adapter"))
        prompt, answer, problem = exchange_of(request)
        if problem is not None:
            quarantine.append({"kind": "unusable-request", **base, "reason": problem})
            continue
        prompt, answer = mask(prompt), mask(answer)
        correction = mask(fb.get("correction")) if isinstance(fb.get("correction"), str) else None
        problem = _label_problem(spec, correction if correction and correction.strip() else answer)
        if problem and (correction or fb.get("rating") == "up"):
            quarantine.append({"kind": "unknown-label", **base, instr: prompt, "reason": problem})
        elif correction and correction.strip():
            generation = spec.task.type == "causal-lm"
            rows.append({**base, instr: prompt, resp: correction, "source": f"{FEEDBACK_SOURCE}correction",
                         "prompt": prompt if generation else None, "chosen": correction if generation else None,
                         "rejected": answer if generation else None})
        elif fb.get("rating") == "up":
            rows.append({**base, instr: prompt, resp: answer, "source": f"{FEEDBACK_SOURCE}up",
                         "prompt": None, "chosen": None, "rejected": None})
        elif fb.get("rating") == "down":
            downs.append({**base, instr: prompt, resp: answer})
        else:
            quarantine.append({"kind": "unknown-rating", **base,
                               "reason": f"rating {fb.get('rating')!r} is neither 'up' nor 'down'"})
    return rows, quarantine, downs


def _pair_downvotes(rows: list[dict], downs: list[dict], spec: Spec) -> list[dict[str, Any]]:
    """Thumbs-down answers become preference pairs when the prompt has an accepted answer."""
    instr, resp = spec.task.fields
    accepted = {normalise(r[instr]): r for r in rows}
    quarantine = []
    for down in downs:
        good = accepted.get(normalise(down[instr]))
        if good is not None and spec.task.type == "causal-lm" and good.get("rejected") is None:
            good.update(prompt=good[instr], chosen=good[resp], rejected=down[resp])
        quarantine.append({"kind": "thumbs-down", **down,
                           "reason": "thumbs down without a correction: kept as a negative signal, "
                                     "not a training target"})
    return quarantine


def collect_feedback(spec: Spec | dict[str, Any], log_path: str | Path, out_dir: str | Path,
                     parent_dir: str | Path | None = None) -> FeedbackResult:
    """Turn a payload log with feedback into a data set version (on top of ``parent_dir`` if given)."""
    spec, labeling = labeling_of(spec)
    requests, feedback, bad, request_count = read_log(log_path)
    total = request_count + len(feedback) + len(bad)
    if total and len(bad) / total > spec.data.quality.max_bad_fraction:
        raise DataError(f"payload log {log_path}: {len(bad)} of {total} lines are unreadable "
                        f"(first: {bad[0].get('file', 'line')}{':' if 'file' in bad[0] else ' '}{bad[0]['line']}, "
                        f"{bad[0]['reason']})",
                        "pass the predictor's payloads.jsonl, or raise `data.quality.max_bad_fraction`")
    mask = Masker(labeling.pii_patterns)
    rows, quarantine, downs = _rows(spec, requests, feedback, mask)
    quarantine = bad + quarantine + _pair_downvotes(rows, downs, spec)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}
    parent, sources, seen, row_hash = None, [], set(), spec.data.row_hash
    if parent_dir is not None:
        parent_card, splits = read_version(parent_dir)
        parent, sources = parent_fingerprint(parent_card), list(parent_card.get("sources") or [])
        row_hash = row_hash_of(parent_card)  # new rows are split as the parent's were
        seen = {str(r["id"]) for rs in splits.values() for r in rs}
    pairs_seen = {(normalise(r[spec.task.fields[0]]), normalise(r[spec.task.fields[1]]))
                  for rs in splits.values() for r in rs}
    new_rows = 0
    for row in rows:
        key = (normalise(row[spec.task.fields[0]]), normalise(row[spec.task.fields[1]]))
        if row["id"] in seen or key in pairs_seen:
            continue  # already in the parent version, or the same exchange again
        pairs_seen.add(key)
        splits[split_of(row[spec.task.fields[0]], spec.data.split, row_hash)].append(row)
        new_rows += 1
    source = {"name": "payload-log", "kind": "payload-log", "uri": str(log_path), "requests": request_count,
              "feedback": len(feedback), "rows_new": new_rows}
    card = write_version(out_dir, spec.task, splits, quarantine, parent, sources + [source], row_hash=row_hash,
                         feedback={"requests": request_count, "feedback": len(feedback), "new_rows": new_rows,
                                   "masked": dict(mask.counts)})
    n_rows = sum(len(r) for r in splits.values())
    n_pairs = sum(1 for rs in splits.values() for r in rs if r.get("rejected"))
    log.info("feedback: %d rows (%d new), %d preference pairs, %d quarantined", n_rows, new_rows, n_pairs,
             len(quarantine))
    return FeedbackResult(str(out_dir), card["fingerprint"], n_rows, new_rows, n_pairs, len(quarantine),
                          dict(mask.counts))


@dataclass
class MergeResult:
    out_dir: str
    fingerprint: str
    rows: int
    added: int


def add_feedback(spec: Spec | dict[str, Any], dataset_dir: str | Path, feedback_dir: str | Path,
                 out_dir: str | Path) -> MergeResult:
    """The data set version at ``dataset_dir`` (e.g. the labeled one) with the feedback version's rows
    added, each in the split collect_feedback gave it: what fine-tuning trains on.

    A feedback row whose id, or whose (instruction, response) pair, the data set already has is left
    out. Quarantines are kept from both; the card's parent is the data set's fingerprint. A feedback
    version made under another row-hash scheme than the data set has its rows split again under the
    data set's scheme (see :func:`_split_in`).
    """
    spec, _ = labeling_of(spec)
    instr, resp = spec.task.fields
    card, splits = read_version(dataset_dir)
    feedback_card, feedback_splits = read_version(feedback_dir)
    scheme, feedback_scheme = row_hash_of(card), row_hash_of(feedback_card)
    seen = {str(r["id"]) for rows in splits.values() for r in rows}
    pairs = {(normalise(str(r.get(instr) or "")), normalise(str(r.get(resp) or "")))
             for rows in splits.values() for r in rows}
    new: list[tuple[str, dict[str, Any]]] = []
    for name, rows in feedback_splits.items():
        for row in rows:
            key = (normalise(str(row.get(instr) or "")), normalise(str(row.get(resp) or "")))
            if str(row["id"]) in seen or key in pairs:
                continue
            seen.add(str(row["id"]))
            pairs.add(key)
            new.append((name, row))
    if feedback_scheme != scheme:
        new = _split_in(spec, new, feedback_scheme, scheme, feedback_dir, dataset_dir)
    for name, row in new:
        splits[name].append(row)
    added = len(new)
    from aicd.components.data.format import read_quarantine

    quarantine = read_quarantine(dataset_dir) + read_quarantine(feedback_dir)
    source = {"name": "feedback", "kind": "feedback-version", "fingerprint": parent_fingerprint(feedback_card),
              "rows_added": added}
    extra = {k: card[k] for k in ("labeling", "agreement") if card.get(k) is not None}
    out = write_version(out_dir, spec.task, splits, quarantine, parent_fingerprint(card),
                        list(card.get("sources") or []) + [source], row_hash=scheme, **extra)
    rows = sum(len(r) for r in splits.values())
    log.info("training data: %d rows, %d of them added from feedback", rows, added)
    return MergeResult(str(out_dir), out["fingerprint"], rows, added)


def _split_in(spec: Spec, new: list[tuple[str, dict[str, Any]]], feedback_scheme: str, scheme: str,
              feedback_dir: str | Path, dataset_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """Feedback rows (split under ``feedback_scheme``) split again under the data set's ``scheme``.

    Rows collected from the payload log keep their id (the request's id, no digest) and get the split
    ``scheme`` gives their instruction, as collect_feedback would have under it: otherwise a prompt the
    data set's scheme puts in test could be trained on. Rows the feedback version inherited from an
    ingested or labeled ancestor carry ids digested under ``feedback_scheme``, which cannot be made
    again here: such a row refuses the merge (before anything is written).
    """
    foreign = [row for _, row in new if not str(row.get("source") or "").startswith(FEEDBACK_SOURCE)]
    if foreign:
        raise DataError(f"feedback version {feedback_dir} was made under data.row_hash {feedback_scheme!r} "
                        f"and data set {dataset_dir} under {scheme!r}; {len(foreign)} of its new rows (first "
                        f"id {foreign[0]['id']!r}) came from a {feedback_scheme} data set, with ids of that "
                        "scheme",
                        f"collect the feedback again on top of a {scheme} version (or without a parent), or add "
                        f"it to a data set made under {feedback_scheme}")
    log.info("feedback made under row hash %s: %d new rows split again under the data set's %s",
             feedback_scheme, len(new), scheme)
    instr = spec.task.fields[0]
    return [(split_of(str(row.get(instr) or ""), spec.data.split, scheme), row) for _, row in new]

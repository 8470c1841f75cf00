"""Shared builders for the data tests (imported by test_data_*.py; holds no tests itself)."""

import copy
import json
from pathlib import Path
from typing import Any

GOOD_REVIEWS = [
    ("g1", "the tablets helped my back pain a lot", "positive"),
    ("g2", "awful nausea every single morning", "negative"),
    ("g3", "no change at all after two weeks", "neutral"),
    ("g4", "sleeping much better since the dose changed", "positive"),
    ("g5", "rash on both arms so I stopped", "negative"),
    ("g6", "works for headaches but costs too much", "neutral"),
]
GOOD_PAIRS = [
    ("p1", "What is AI?", "The study of machines that think."),
    ("p2", "Do you like sports?", "I enjoy watching football."),
    ("p3", "How are you today?", "Fine, thank you for asking."),
    ("p4", "Tell me a joke", "Why did the robot cross the road?"),
    ("p5", "What is your name?", "I am the support assistant."),
]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def good_review_rows(with_id: bool = True) -> list[dict[str, Any]]:
    return [{**({"id": i} if with_id else {}), "text": t, "label": label} for i, t, label in GOOD_REVIEWS]


def good_pair_rows() -> list[dict[str, Any]]:
    return [{"id": i, "instruction": q, "response": a} for i, q, a in GOOD_PAIRS]


def with_data(spec: dict[str, Any], sources: list[dict[str, Any]], **data: Any) -> dict[str, Any]:
    """A copy of an example spec whose `data` section reads ``sources``; ``data`` overrides the rest."""
    spec = copy.deepcopy(spec)
    quality = {"max_bad_fraction": 1.0, "min_tokens": 1, "max_tokens": 64, **data.pop("quality", {})}
    spec["data"] = {"sources": sources, "quality": quality, **data}
    return spec


def write(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)

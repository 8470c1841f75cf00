"""Builders of test data: rows, JSONL files and specs with data sources (no tests here)."""

import copy
import json
from pathlib import Path
from typing import Any

from aicd.components.data.format import write_dataset

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


# Training: question/answer pairs and reviews repeated into small data sets.
CHAT_QA = [("What is AI?", "Artificial intelligence is the study of machines that think."),
      ("How are you?", "I am fine, thank you for asking."),
      ("Tell me a joke.", "Why did the computer go to the doctor? It had a virus."),
      ("Do you like sports?", "I enjoy watching football and tennis."),
      ("What is your name?", "My name is the support assistant."),
      ("Hi", "Hello!")]
CHAT_REVIEWS = [("This drug worked wonders and I have no side effects.", "positive"),
           ("Terrible medicine, awful side effects and no relief at all.", "negative"),
           ("The pill was okay, nothing special, some mild headaches.", "neutral")]


def causal_rows(n: int = 24) -> list[dict]:
    return [{"id": f"q{i}", "instruction": CHAT_QA[i % len(CHAT_QA)][0], "response": CHAT_QA[i % len(CHAT_QA)][1],
             "source": "test",
             "topic": ("ai", "chat")[i % 2]}
            for i in range(n)]


def make_dataset(path: Path, rows: list[dict], task: str = "causal-lm", fingerprint: str = "fp-test") -> Path:
    write_dataset(path, {"train": rows, "validation": rows[:6], "test": rows[:6]}, fingerprint=fingerprint, task=task)
    return path


def review_rows(n: int = 24) -> list[dict]:
    return [{"id": f"r{i}", "text": CHAT_REVIEWS[i % 3][0], "label": CHAT_REVIEWS[i % 3][1], "source": "test"}
            for i in range(n)]


# Evaluation: six questions with topics (for slices) and six reviews.
TOPIC_QA = [("What is AI?", "Artificial intelligence is the study of machines.", "ai"),
      ("Do you like sports?", "I enjoy watching football.", "sports"),
      ("How are you?", "I am fine, thank you.", "greetings"),
      ("Tell me a joke.", "Why did the computer go to the doctor?", "humor"),
      ("What is your name?", "My name is the support assistant.", "greetings"),
      ("Do you like tennis?", "Yes, tennis is fun.", "sports")]
TOPIC_REVIEWS = [("This drug worked wonders and I have no side effects.", "positive"),
           ("Terrible medicine, awful side effects.", "negative"),
           ("The pill was okay, nothing special.", "neutral"),
           ("No relief at all, awful.", "negative"),
           ("I feel great, it worked.", "positive"),
           ("Some mild headaches, okay overall.", "neutral")]


def causal_dataset(path: Path, n: int = 6) -> Path:
    rows = [{"id": f"q{i}", "instruction": q, "response": a, "topic": t, "source": "test"}
            for i, (q, a, t) in enumerate((TOPIC_QA * 4)[:n])]
    write_dataset(path, {"train": rows, "validation": rows, "test": rows}, task="causal-lm")
    return path


def classification_dataset(path: Path, n: int = 6) -> Path:
    rows = [{"id": f"r{i}", "text": t, "label": lab, "source": "test"}
            for i, (t, lab) in enumerate((TOPIC_REVIEWS * 4)[:n])]
    write_dataset(path, {"train": rows * 3, "validation": rows, "test": rows}, task="text-classification")
    return path

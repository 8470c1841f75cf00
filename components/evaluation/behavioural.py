"""Behavioural checks of a model (invariance, minimum functionality) as pass rates.

Invariance: a perturbation of the input must not change the prediction (the label,
or the normalised answer). Minimum functionality: given cases must produce the
expected label, or an answer containing the expected text.
"""

import random
import string
from collections.abc import Callable, Sequence
from typing import Any

from aicd.components.errors import EvaluationError
from aicd.components.evaluation.metrics import normalize_answer

# Invariance checks perturb at most this many evaluation examples (generation is slow).
MAX_INVARIANCE_EXAMPLES = 32


def _typo(text: str, seed: int) -> str:
    """Swap two adjacent letters inside one word of four letters or more (reproducible)."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return text
    rng = random.Random(seed)
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


PERTURBATIONS: dict[str, Callable[[str, int], str]] = {
    "lowercase": lambda t, _: t.lower(),
    "uppercase": lambda t, _: t.upper(),
    "strip-punctuation": lambda t, _: t.translate(str.maketrans("", "", string.punctuation)),
    "typo": _typo,
    "add-whitespace": lambda t, _: "  " + t.replace(" ", "  ") + " ",
}


def _same(a: str, b: str, classification: bool) -> bool:
    return a == b if classification else normalize_answer(a) == normalize_answer(b)


def _case_input(case: dict[str, str], input_field: str, check: str) -> tuple[str, str]:
    text = case.get(input_field) or case.get("input") or case.get("text") or case.get("instruction")
    if text is None or "expected" not in case:
        raise EvaluationError(f"`metrics.behavioural` check {check!r} has a case without "
                              f"`{input_field}` (or `input`) and `expected`: {case}",
                              f"write each case as {{{input_field}: ..., expected: ...}}")
    return text, case["expected"]


def run_checks(checks: Sequence[Any], predict: Callable[[list[str]], list[str]], inputs: list[str],
               predictions: list[str], *, classification: bool, input_field: str,
               seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{name: {pass_rate, min_pass_rate, passed, n}}`` for the spec's behavioural checks."""
    out = {}
    for check in checks:
        if check.kind == "invariance":
            if check.perturbation is None:
                raise EvaluationError(f"`metrics.behavioural` check {check.name!r} is an invariance check "
                                      "without a `perturbation`", f"set one of {', '.join(PERTURBATIONS)}")
            k = min(len(inputs), MAX_INVARIANCE_EXAMPLES)
            perturbed = [PERTURBATIONS[check.perturbation](x, seed + i) for i, x in enumerate(inputs[:k])]
            after = predict(perturbed)
            passes = [_same(a, b, classification) for a, b in zip(predictions[:k], after)]
        else:
            if not check.cases:
                raise EvaluationError(f"`metrics.behavioural` check {check.name!r} has no `cases`",
                                      "add cases with an input and the expected output")
            pairs = [_case_input(c, input_field, check.name) for c in check.cases]
            after = predict([text for text, _ in pairs])
            passes = [(got == expected) if classification else expected.lower() in got.lower()
                      for got, (_, expected) in zip(after, pairs)]
        rate = sum(passes) / len(passes) if passes else 0.0
        out[check.name] = {"pass_rate": rate, "min_pass_rate": check.min_pass_rate,
                           "passed": bool(passes) and rate >= check.min_pass_rate, "n": len(passes)}
    return out

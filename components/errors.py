"""The one error hierarchy of aicd (modelled on kserve's ``errors.py``).

Every error a user can cause is an :class:`AicdError`: its message names what is
wrong, and ``hint`` says how to fix it. The CLI prints ``str(error)`` and exits
non-zero; nothing else turns these into tracebacks.
"""


class AicdError(Exception):
    """Base class: a problem a person can fix, with a message that says how.

    The CLI exits 1 on one of these (spec, data, a refused gate, delivery...) and 2 on a
    :class:`UsageError` (the command line itself is wrong), as argparse does.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  fix: {hint}")


class UsageError(AicdError):
    """The command line is wrong: a missing option, an unknown pipeline or command."""

    exit_code = 2


class SpecError(AicdError):
    """The spec is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}:\n{lines}")


class UriError(AicdError):
    """A model or data URI cannot be resolved to a local directory."""


class IntegrityError(AicdError):
    """An artifact's files do not match its card (tampered, missing or extra files)."""


class DataError(AicdError):
    """Input data is unusable as a whole (missing, empty, or too many bad rows)."""


class ModelError(AicdError):
    """A model cannot be loaded or does not fit the task (head, modules, length)."""


class TrainingError(AicdError):
    """A training run cannot start or cannot go on."""


class EvaluationError(AicdError):
    """An evaluation cannot produce complete, trustworthy results."""


class DeliveryError(AicdError):
    """Gate, promotion or canary analysis cannot proceed safely."""


class LabelingError(AicdError):
    """Label Studio or the feedback sources cannot be used as asked."""


class ServingError(AicdError):
    """The predictor cannot load or serve what it was asked to."""


class ImageError(AicdError):
    """A role image is missing, or its reference (registry, tag, digest) is invalid."""

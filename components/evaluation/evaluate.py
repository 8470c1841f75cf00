"""evaluate_model: the one evaluation contract (offline, on the gate, against a live canary).

Scores a base candidate, a Model artifact (adapter or full weights) or a live
endpoint on one split with the spec's metrics, and writes the report described in
docs/contracts.md. Deterministic: fixed seeds, greedy decoding, the prompt template
recorded. Any failure raises :class:`EvaluationError` before anything is written.
"""

import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aicd.components.errors import EvaluationError
from aicd.components.evaluation import metrics as M
from aicd.components.evaluation.backends import Backend, CausalLMBackend, ClassifierBackend, weights_mb
from aicd.components.evaluation.behavioural import run_checks
from aicd.components.evaluation.report import write_report
from aicd.components.evaluation.trivial import COLLAPSE_CHECK, collapse_check, score_baselines
from aicd.components.spec import Spec, parse_spec

log = logging.getLogger(__name__)
# Local latency is timed on this many single requests (half as many for generation).
LATENCY_EXAMPLES = 16


def as_spec(spec: Spec | dict) -> Spec:
    return spec if isinstance(spec, Spec) else parse_spec(spec)


def load_rows(spec: Spec, dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The split's rows (first ``metrics.max_examples``), checked for the task's fields and labels."""
    from aicd.components.data.format import read_split

    rows = read_split(dataset_dir, split)
    if not rows:
        raise EvaluationError(f"split {split!r} of {dataset_dir} has no rows: nothing to evaluate",
                              "rebuild the data set with more data, or evaluate another split")
    rows = rows[:spec.metrics.max_examples] if spec.metrics.max_examples else rows
    fields = spec.task.fields + tuple(spec.metrics.slices)
    missing = [f for f in fields if f not in rows[0]]
    if missing:
        raise EvaluationError(f"split {split!r} of {dataset_dir} has no column(s) {missing} "
                              f"(columns: {sorted(rows[0])})",
                              "fix `task` fields or `metrics.slices` to name columns of the data set")
    if spec.task.type == "text-classification":
        unknown = sorted({str(r[spec.task.label_field]) for r in rows} - set(spec.task.labels))
        if unknown:
            raise EvaluationError(f"split {split!r} has label(s) {unknown} that are not in `task.labels` "
                                  f"{spec.task.labels}", "add them to `task.labels` or rebuild the data set")
    return rows


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self):
        import psutil

        self._proc, self._stop, self.peak = psutil.Process(), threading.Event(), 0
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def request_latencies(backend: Backend, inputs: list[str], outputs, classification: bool) -> list[float]:
    """Latency of single requests (ms): an endpoint's own requests, or one-at-a-time calls of a local model.

    The batched pass measures throughput; a served request is not batched with 31 others, so
    local latency is timed on the first LATENCY_EXAMPLES inputs one at a time (warm).
    """
    from aicd.components.evaluation.endpoints import EndpointBackend

    if isinstance(backend, EndpointBackend):
        return list(outputs.latencies_ms)
    k = LATENCY_EXAMPLES if classification else LATENCY_EXAMPLES // 2
    return [backend.predict([x]).latencies_ms[0] for x in inputs[:k]]


def _system(outputs, latencies: list[float], memory: PeakMemory,
            sizes: dict[str, float | None]) -> dict[str, float | None]:
    lat = np.asarray(latencies, dtype=float)
    timed = lat.size > 0  # a light evaluation times no single requests
    return {"latency_p50_ms": float(np.percentile(lat, 50)) if timed else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if timed else None,
            "tokens_per_second": outputs.tokens / outputs.seconds if outputs.seconds > 0 and outputs.tokens else None,
            "peak_memory_mb": memory.mb, **sizes}


def _slices(spec: Spec, rows, examples, labels) -> dict[str, dict[str, Any]]:
    out = {}
    for field in spec.metrics.slices:
        values = np.array([str(r[field]) for r in rows])
        for value in sorted(set(values)):
            subset = np.flatnonzero(values == value)
            out[f"{field}={value}"] = {"n": int(len(subset)), "metrics": M.bootstrap_metrics(
                examples, labels, spec.metrics.bootstrap_samples, spec.metrics.seed, subset=subset)}
    return out


def _predict(backend: Backend, inputs: list[str], ids: list[str] | None = None):
    from aicd.components.evaluation.endpoints import EndpointBackend

    return backend.predict(inputs, ids) if isinstance(backend, EndpointBackend) else backend.predict(inputs)


def train_labels(spec: Spec, dataset_dir: str | Path) -> list[str] | None:
    """The labels of the train split (what the trivial baselines learn from), or None for causal-lm
    tasks and data sets without a train split."""
    from aicd.components.data.format import read_split

    if spec.task.type != "text-classification":
        return None
    try:
        rows = read_split(dataset_dir, "train")
    except FileNotFoundError:
        return None
    return [str(r[spec.task.label_field]) for r in rows if spec.task.label_field in r] or None


def _classification_extras(spec: Spec, examples: dict[str, Any], labels: list[str],
                           train: Sequence[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trivial baselines on the same rows (train-split frequencies; the evaluated rows' own when
    there is no train split) and the collapse check."""
    baselines = score_baselines(examples, labels, train or examples["references"], spec.metrics.bootstrap_samples,
                                spec.metrics.seed)
    return baselines, collapse_check(examples["predictions"], examples["references"])


def run_evaluation(spec: Spec, rows: Sequence[dict[str, Any]], backend: Backend, split: str,
                   probe: dict[str, Any] | None = None,
                   train: Sequence[str] | None = None, light: bool = False) -> tuple[dict[str, Any], list[float]]:
    """The report (docs/contracts.md) of ``backend`` on ``rows``, and the single-request latencies.

    ``train`` holds the train split's labels, from which the trivial baselines of a classification
    report (:mod:`aicd.components.evaluation.trivial`) take their class frequencies. ``light`` (the
    choice between trained methods) leaves out what only the gate reads: the behavioural checks and
    the single-request latency timing; the report says ``"light": true`` and no gate passes it.
    """
    if "torch" in sys.modules:  # local models; endpoints and the TF-IDF baseline need no torch
        sys.modules["torch"].manual_seed(spec.metrics.seed)
    classification = spec.task.type == "text-classification"
    in_field, out_field = spec.task.fields
    ids = [str(r.get(spec.task.id_field or "id", i)) for i, r in enumerate(rows)]
    inputs, refs = [str(r[in_field]) for r in rows], [str(r[out_field]) for r in rows]
    with PeakMemory() as memory:
        outputs = _predict(backend, inputs, ids)
        latencies = [] if light else request_latencies(backend, inputs, outputs, classification)
        nll = None if classification else backend.score(inputs, refs)
    preds = outputs.texts
    examples: dict[str, Any] = {"ids": ids, "predictions": preds, "references": refs}
    if classification:
        examples["scores"] = {"accuracy": [float(p == r) for p, r in zip(preds, refs)]}
    else:
        examples["scores"] = M.generation_scores(preds, refs)
        if nll is not None:
            examples["scores"]["nll"], examples["token_counts"] = nll
    labels = list(spec.task.labels) if classification else None
    if classification:
        unknown = sorted(set(preds) - set(labels))
        if unknown:
            raise EvaluationError(f"the model predicted label(s) {unknown} that are not in `task.labels`",
                                  "evaluate a model trained for the task's labels")
    metrics = M.bootstrap_metrics(examples, labels, spec.metrics.bootstrap_samples, spec.metrics.seed)
    system = _system(outputs, latencies, memory, backend.sizes)
    metrics.update({k: {"value": v, "low": v, "high": v} for k, v in system.items() if v is not None})
    behavioural = {} if light else run_checks(spec.metrics.behavioural, lambda xs: backend.predict(xs).texts,
                                              inputs, preds, classification=classification, input_field=in_field,
                                              seed=spec.metrics.seed)
    report = {
        "kind": "evaluation", "task": spec.task.type, "split": split, "n": len(rows), "complete": True,
        "light": light,
        "model": backend.model_info, "metrics": metrics, "examples": examples,
        "slices": _slices(spec, rows, examples, labels), "behavioural": behavioural, "probe": probe,
        "system": system, "prompt_template": backend.prompt_template,
        "prompt_example": backend.example_prompt(inputs[0]),
        "seed": spec.metrics.seed, "decoding": {"do_sample": False, "max_new_tokens": spec.metrics.max_new_tokens},
        "confidence": 0.95, "bootstrap_samples": spec.metrics.bootstrap_samples,
    }
    preference = _preference(spec, rows, backend) if not classification else None
    if preference is not None:
        report["preference"] = preference
        metrics["preference_accuracy"] = {k: preference[k] for k in ("value", "low", "high")}
    if classification:
        report["classification"] = M.classification_summary(preds, refs, labels)
        report["baselines"], behavioural[COLLAPSE_CHECK] = _classification_extras(spec, examples, labels, train)
    return report, latencies


def _preference(spec: Spec, rows, backend: Backend) -> dict[str, Any] | None:
    """The preference metric on the rows' pairs, for a local causal LM (an endpoint gives no log-probs)."""
    from aicd.components.training.preference import preference_report

    if getattr(backend, "model", None) is None:
        return None
    return preference_report(backend.model, backend.tokenizer, spec, list(rows))


def _probe_texts(spec: Spec, rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(spec.metrics.probe_prompts) or [str(r[spec.task.fields[0]]) for r in rows[:4]]


def open_local(spec: Spec, rows, model: str | Path | None, candidate: str | None,
               batch_size: int | None = None, shots: Sequence[tuple[str, str]] = (),
               probe_adapter: bool = True) -> tuple[Backend, dict | None]:
    """A local backend for a Model artifact or a base candidate, and the adapter probe's result (None
    without ``probe_adapter``)."""
    from aicd.components.cards import model_content_digest, read_card
    from aicd.components.evaluation.inference import check_head_labels
    from aicd.components.evaluation.probe import adapter_probe
    from aicd.components.models import load_causal_lm, load_classifier, load_model_artifact, task_tokenizer
    from aicd.components.uris import locate_model

    classification = spec.task.type == "text-classification"
    cand = spec.candidate(candidate)
    probe = None
    if model is None:
        load = (load_classifier(cand.uri, list(spec.task.labels), cand.digest) if classification
                else load_causal_lm(cand.uri, digest=cand.digest))
        net, tokenizer, base_dir = load
        tokenizer = task_tokenizer(tokenizer, spec.task)
        info = {"name": cand.name, "uri": cand.uri, "digest": None, "base_model": cand.uri}
        sizes = {"model_size_mb": weights_mb(base_dir), "adapter_size_mb": None}
    else:
        _check_card(spec, read_card(model), model, cand.uri if candidate else None)
        net, tokenizer, card = load_model_artifact(model, list(spec.task.labels) if classification else None)
        base = card.get("base_model") or str(model)
        info = {"name": card.get("name") or card.get("method_name") or Path(model).name, "uri": str(model),
                "digest": card["digest"], "content_digest": model_content_digest(card), "base_model": base}
        adapter = card.get("kind") == "adapter"
        sizes = {"model_size_mb": weights_mb(locate_model(base) if adapter else Path(model)),
                 "adapter_size_mb": weights_mb(Path(model)) if adapter else None}
        if adapter and probe_adapter:
            template = cand.prompt_template or spec.task.prompt_template
            texts = _probe_texts(spec, rows)
            if not classification:
                texts = [CausalLMBackend(model=net, tokenizer=tokenizer, template=template,
                                         system=spec.task.system_prompt, model_info={}).example_prompt(t)
                         for t in texts]
            probe = adapter_probe(net, tokenizer, texts, classification=classification,
                                  add_special_tokens=template is not None, where=str(model))
    if classification:
        check_head_labels(net, spec.task.labels, info["name"])
        return ClassifierBackend(model_info=info, sizes=sizes, model=net, tokenizer=tokenizer,
                                 max_length=spec.task.max_length, batch_size=batch_size or 32), probe
    return CausalLMBackend(model_info=info, sizes=sizes, model=net, tokenizer=tokenizer,
                           template=cand.prompt_template or spec.task.prompt_template, system=spec.task.system_prompt,
                           shots=shots, max_new_tokens=spec.metrics.max_new_tokens, max_length=spec.task.max_length,
                           batch_size=batch_size or 8), probe


def _check_card(spec: Spec, card: dict[str, Any], model, expected_base: str | None) -> None:
    from aicd.components.uris import locate_model

    task = card.get("task", "causal-lm")
    if task != spec.task.type:
        raise EvaluationError(f"{model} is a {task} model, the spec's task is {spec.task.type}",
                              "evaluate a model trained for this spec")
    if spec.task.type == "text-classification" and card.get("labels") is not None:
        missing = sorted(set(spec.task.labels) - set(card["labels"]))
        if missing:
            raise EvaluationError(f"{model} was trained without label(s) {missing} (its labels: {card['labels']})",
                                  "retrain it on the task's labels, or fix `task.labels`")
    base = card.get("base_model")
    if expected_base and base and locate_model(base).resolve() != locate_model(expected_base).resolve():
        raise EvaluationError(f"{model} was trained on base {base!r}, not on the candidate's {expected_base!r}",
                              "evaluate it against the candidate it was trained on")


def endpoint_tokenizer(task: str, base_uri: str):
    """The tokenizer an endpoint's NLL is scored with (the candidate's base model), or None when it is not at hand."""
    if task != "causal-lm":
        return None
    from aicd.components.models import load_tokenizer
    from aicd.components.uris import locate_model

    try:
        return load_tokenizer(locate_model(base_uri))
    except Exception as err:  # noqa: BLE001 - no tokenizer only means no NLL for this endpoint
        log.warning("no NLL for the endpoint: the tokenizer of %s could not be loaded (%s)", base_uri, err)
        return None


def evaluate_model(spec: Spec | dict, dataset_dir: str | Path, out_dir: str | Path, *,
                   model: str | Path | None = None, candidate: str | None = None, endpoint: str | None = None,
                   endpoint_model: str | None = None, split: str | None = None,
                   batch_size: int | None = None, light: bool = False) -> dict[str, Any]:
    """Evaluate a Model artifact, a base candidate (``model=None``) or a live ``endpoint``; write the report.

    ``light``: the metrics only, to choose between trained methods (no behavioural checks, adapter
    probe or latency timing: see :func:`run_evaluation`); a gate refuses such a report.

    Returns the report (also written as ``out_dir/report.json`` with ``report.html``).
    """
    spec = as_spec(spec)
    split = split or spec.metrics.split
    if model is not None and endpoint is not None:
        raise EvaluationError("evaluate_model got both a model and an endpoint", "pass one of them")
    rows = load_rows(spec, dataset_dir, split)
    started = time.monotonic()
    if endpoint is not None:
        from aicd.components.evaluation.endpoints import EndpointBackend

        cand = spec.candidate(candidate)
        backend, probe = EndpointBackend(
            model_info={"name": endpoint_model or cand.name, "uri": endpoint, "digest": None, "base_model": cand.uri},
            url=endpoint, model_name=endpoint_model or cand.name, task=spec.task.type,
            template=cand.prompt_template or spec.task.prompt_template, system=spec.task.system_prompt,
            max_new_tokens=spec.metrics.max_new_tokens, max_length=spec.task.max_length,
            tokenizer=endpoint_tokenizer(spec.task.type, cand.uri)), None
    else:
        backend, probe = open_local(spec, rows, model, candidate, batch_size, probe_adapter=not light)
    report, latencies = run_evaluation(spec, rows, backend, split, probe, train_labels(spec, dataset_dir), light)
    write_report(report, out_dir, latencies)
    log.info("evaluated %s on %d %s examples in %.1fs: %s", report["model"]["name"], report["n"], split,
             time.monotonic() - started, {k: round(v["value"], 4) for k, v in report["metrics"].items()
                                           if k == spec.metrics.primary})
    return report

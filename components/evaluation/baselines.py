"""Cheap models the leaderboard needs: a TF-IDF baseline and a linear probe on an encoder.

- ``TfidfBackend``: TF-IDF (word 1-2 grams) plus logistic regression (scikit-learn),
  trained on the train split; the classical baseline every classifier must beat.
- ``train_linear_probe``: the encoder stays frozen; only its classification head is
  trained (full batch, cross-entropy with balanced class weights) on features computed
  once. The result is a real Model artifact (full weights, safetensors) that
  evaluate_model, the gate and the predictor load like any other.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.errors import EvaluationError
from aicd.components.evaluation.backends import Backend
from aicd.components.evaluation.inference import Outputs
from aicd.components.spec import Spec

log = logging.getLogger(__name__)
# Train on at most this many rows (first in split order): the probe must stay short.
MAX_PROBE_ROWS = 512
PROBE_STEPS = 300
PROBE_LR = 1e-2


def _train_rows(spec: Spec, dataset_dir: str | Path, limit: int | None) -> tuple[list[str], list[str]]:
    from aicd.components.data.format import read_split

    rows = read_split(dataset_dir, "train")[:limit] if limit else read_split(dataset_dir, "train")
    text, label = spec.task.fields
    labels = [str(r[label]) for r in rows]
    if len(set(labels)) < 2:
        raise EvaluationError(f"the train split of {dataset_dir} has {len(set(labels))} class(es): "
                              "a baseline needs at least two", "rebuild the data set with more labeled rows")
    return [str(r[text]) for r in rows], labels


@dataclass
class TfidfBackend(Backend):
    pipeline: Any = None

    def predict(self, inputs: Sequence[str]) -> Outputs:
        t0 = time.perf_counter()
        labels = [str(x) for x in self.pipeline.predict(list(inputs))]
        seconds = time.perf_counter() - t0
        return Outputs(labels, [seconds * 1000] * len(labels), 0, seconds)


def tfidf_baseline(spec: Spec, dataset_dir: str | Path, seed: int = 0) -> TfidfBackend:
    """Fit TF-IDF + logistic regression on the train split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if spec.task.type != "text-classification":
        raise EvaluationError("the TF-IDF baseline applies to text-classification only",
                              "leave it out for causal-lm specs")
    texts, labels = _train_rows(spec, dataset_dir, None)
    pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=50000),
                             LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed))
    pipeline.fit(texts, labels)
    clf = pipeline[-1]
    size = (clf.coef_.nbytes + clf.intercept_.nbytes + len(pipeline[0].vocabulary_) * 16) / 2**20
    return TfidfBackend(model_info={"name": "tfidf-logreg", "uri": "sklearn:tfidf+logistic-regression",
                                    "digest": None, "base_model": None},
                        prompt_template=None, sizes={"model_size_mb": size, "adapter_size_mb": None},
                        pipeline=pipeline)


def classification_head(model):
    """The new head of a ``*ForSequenceClassification`` model: ``classifier`` on BERT-style encoders,
    ``score`` on decoders (Llama, Qwen, ...)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise EvaluationError(f"{type(model).__name__} has no `classifier` or `score` head for the linear probe",
                          "use a BERT-style encoder or a decoder with a sequence-classification head")


def _pooled(model, hidden, input_ids):
    """The vector of each row a decoder's head is read at: its last token that is not padding, as
    ``*ForSequenceClassification`` pools its logits (a linear head commutes with that choice)."""
    import torch

    pad = model.config.pad_token_id
    if pad is None:
        return hidden[:, -1]
    positions = torch.arange(input_ids.shape[-1])
    last = (positions * (input_ids != pad)).argmax(-1)
    return hidden[torch.arange(hidden.shape[0]), last]


def _head_inputs(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 32):
    """What the classification head receives for each text (captured with a forward hook), pooled to
    one vector a text where the head reads every position (decoders); rows in the order of ``texts``.
    Texts are batched by token length, so little compute goes to padding."""
    import torch

    head = classification_head(model)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    captured = []
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                enc = tokenizer.pad({"input_ids": [encoded[i] for i in order[start:start + batch_size]]},
                                    return_tensors="pt")
                model(**enc)
                if captured[-1].dim() == 3:
                    captured[-1] = _pooled(model, captured[-1], enc["input_ids"])
    finally:
        hook.remove()
    if captured[0].dim() != 2:
        raise EvaluationError(f"{type(model).__name__}'s head takes {captured[0].dim()}-d input; the linear probe "
                              "needs a pooled vector", "use a BERT-style encoder, or fine-tune with a LoRA method")
    features = torch.empty(len(order), captured[0].shape[-1], dtype=captured[0].dtype)
    features[torch.tensor(order)] = torch.cat(captured)
    return features


def fit_head(head, features, y, weight=None, steps: int = PROBE_STEPS, lr: float = PROBE_LR) -> float:
    """Fit ``head`` (its weights only) to ``features`` -> class indices ``y`` by full-batch Adam on the
    (optionally class-weighted) cross-entropy; the final loss."""
    import torch

    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = loss_fn(head(features), y)
            loss.backward()
            optimizer.step()
    return float(loss.detach())


def train_linear_probe(spec: Spec, dataset_dir: str | Path, candidate: str, out_dir: str | Path, *,
                       max_rows: int = MAX_PROBE_ROWS, steps: int = PROBE_STEPS) -> Path:
    """Train only the head of an encoder candidate; write a full-weights Model artifact."""
    import torch

    from aicd.components.cards import atomic_dir, read_card, write_card
    from aicd.components.models import load_classifier, task_tokenizer

    cand = spec.candidate(candidate)
    labels = list(spec.task.labels)
    texts, y_names = _train_rows(spec, dataset_dir, max_rows)
    torch.manual_seed(spec.metrics.seed)
    model, tokenizer, _ = load_classifier(cand.uri, labels, cand.digest)
    tokenizer = task_tokenizer(tokenizer, spec.task)
    features = _head_inputs(model, tokenizer, texts, spec.task.max_length).clone()
    y = torch.tensor([labels.index(v) for v in y_names])
    counts = torch.bincount(y, minlength=len(labels)).float()
    weight = torch.where(counts > 0, len(y) / (len(labels) * counts.clamp(min=1)), torch.zeros_like(counts))
    loss = fit_head(classification_head(model), features, y, weight, steps)
    log.info("linear probe of %s on %d rows: final loss %.4f", cand.name, len(y), loss)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_card(tmp, "model", task="text-classification", labels=labels, base_model=cand.uri,
                   name=f"{cand.name}-linear-probe", method="linear-probe",
                   hyperparameters={"rows": len(y), "steps": steps, "learning_rate": PROBE_LR, "optimizer": "adam"},
                   data_fingerprint=read_card(dataset_dir).get("fingerprint"), metrics={"train_loss": float(loss)})
    return Path(out_dir)

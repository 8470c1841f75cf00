"""One base model in memory, N LoRA adapters on top of it (peft multi-adapter).

Every adapter is an aicd Model artifact whose card is verified (every file's sha256)
before its weights are read, whose task must match the server's and whose base model
must be the server's base. Inference runs one batch at a time in the server's single
model thread: ``set_adapter`` (or ``disable_adapter`` for the base) selects the adapter
of the whole batch, so the batcher groups requests by adapter; with ``--mix-adapters`` a
generation batch holds rows of any adapters (peft's mixed-adapter batches). Generation is
continuous (running.py): rows join the running batch between steps and leave when done.
"""

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicd.components.cards import CARD, read_card, verify_card
from aicd.components.errors import IntegrityError, ServingError
from aicd.components.models import adapter_pooling, load_causal_lm, load_classifier, load_tokenizer
from aicd.components.pooling import CONFIG_KEY
from aicd.components.provenance import BASE_KIND
from aicd.components.serving.config import ServeConfig
from aicd.components.serving.decoding import GenItem, GenResult
from aicd.components.serving.mixed_lora import StackedLora, supported
from aicd.components.serving.running import Job, More, run_jobs
from aicd.components.uris import CACHE_KINDS, locate_model, resolve_model, resolve_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adapter:
    """A verified adapter artifact, ready to be attached to the base."""

    name: str
    path: Path
    card: dict[str, Any]
    template_tokenizer: Any  # the tokenizer whose chat template this adapter was trained with

    @property
    def digest(self) -> str:
        return self.card["digest"]


def verify_adapter(name: str, uri: str, task: str, base_dir: Path, labels: list[str]) -> Adapter:
    """Resolve and verify an adapter artifact for this server; raise with the fix when it does not fit."""
    path = resolve_path(uri)
    if not (path / CARD).is_file():
        raise IntegrityError(f"adapter {name!r} ({uri}) has no {CARD}: it is not an aicd Model artifact",
                             "serve the Model artifact a training step wrote (a folder with card.json)")
    card = verify_card(path, kind="adapter")
    pickled = sorted(f for f in card["files"] if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")))
    if pickled or "adapter_model.safetensors" not in card["files"]:
        found = f"it holds {', '.join(pickled)}" if pickled else "it has no adapter_model.safetensors"
        raise ServingError(f"adapter {name!r}: only safetensors weights are served, {found}",
                           "save the adapter with safe_serialization=True (train_adapter does)")
    if card.get("task", "causal-lm") != task:
        raise ServingError(f"adapter {name!r} is a {card.get('task')!r} adapter, the server runs {task!r}",
                           "start the server with the adapter's --task, or serve a matching adapter")
    base_uri = card.get("base_model")
    if not base_uri:
        raise ServingError(f"adapter {name!r}: card.json names no base_model", "produce the adapter again")
    try:
        adapter_base = locate_model(base_uri).resolve()  # compared only: the base was verified as --base
    except ServingError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to resolve means "not this base"
        raise ServingError(f"adapter {name!r} was trained on {base_uri!r}, which cannot be resolved here ({err})",
                           "serve it with that base model") from err
    if adapter_base != base_dir.resolve():
        raise ServingError(f"adapter {name!r} was trained on {base_uri!r}, not on this server's base ({base_dir})",
                           "serve it on a server started with --base " + base_uri)
    if task == "text-classification" and sorted(card.get("labels") or []) != sorted(labels):
        raise ServingError(f"adapter {name!r} has labels {card.get('labels')}, the server serves {labels}",
                           "pass --labels matching the adapter, or serve adapters trained for these labels")
    template = load_tokenizer(path) if (path / "tokenizer_config.json").exists() else None
    return Adapter(name=name, path=path, card=card, template_tokenizer=template)


class Engine:
    """The model, its tokenizer and its attached adapters. Not thread-safe: call from one thread."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.task = config.task
        self.labels: list[str] = list(config.labels)
        self.model: Any = None
        self.tokenizer: Any = None
        self.base_dir: Path | None = None
        self.base_card: dict[str, Any] | None = None
        self.base_digest: str | None = None  # the card's digest of whatever vouched for the base
        self.adapters: dict[str, Adapter] = {}
        self.serve_base = True
        self.max_positions = 512
        self._stacked: StackedLora | bool | None = None  # batched mixed-adapter LoRA, built on first use

    # -- loading ----------------------------------------------------------------------------
    def load_base(self) -> None:
        """Load (and verify, for an aicd artifact) the base model."""
        self.base_dir = resolve_model(self.config.base, self.config.base_digest)  # verified: pin, card or RECORD
        if (self.base_dir / CARD).is_file():
            card = read_card(self.base_dir)
            self.base_digest = card.get("digest")
            if card.get("kind") not in ("model", BASE_KIND, *CACHE_KINDS):  # a provided, downloaded or converted base
                raise ServingError(f"--base {self.config.base} is a {card.get('kind')!r} artifact",
                                   "pass the base model as --base and the adapter as --adapter NAME=URI")
            if card.get("kind") == "model":
                self.base_card = card
                self.labels = self.labels or list(card.get("labels") or [])
        if self.task == "text-classification":
            self._load_classifier_base()
        else:
            self.model, self.tokenizer, _ = load_causal_lm(self.config.base, digest=self.config.base_digest)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        log.info("base model %s loaded from %s", self.config.base, self.base_dir)

    def _load_classifier_base(self) -> None:
        from transformers import AutoConfig

        arch = AutoConfig.from_pretrained(str(self.base_dir), trust_remote_code=False).architectures or []
        trained_head = any(a.endswith("ForSequenceClassification") for a in arch)
        if not self.labels:
            raise ServingError("text-classification needs labels and none were found",
                               "pass --labels a,b,c or serve adapters whose card lists labels")
        self.model, self.tokenizer, _ = load_classifier(self.config.base, self.labels, self.config.base_digest)
        # A plain encoder gets a random head: serving it as "base" would answer nonsense.
        self.serve_base = trained_head

    def resolve_labels_from(self, adapters: dict[str, str]) -> None:
        """Text-classification without --labels takes them from the first adapter's card."""
        if self.task != "text-classification" or self.labels or not adapters:
            return
        first = next(iter(adapters.values()))
        with contextlib.suppress(Exception):  # a broken card is reported by verify_adapter
            self.labels = list(read_card(resolve_path(first)).get("labels") or [])

    def verify(self, name: str, uri: str) -> Adapter:
        adapter = verify_adapter(name, uri, self.task, self.base_dir, self.labels)
        pooling = getattr(getattr(self.model, "config", None), CONFIG_KEY, None)
        if self.task == "text-classification" and pooling and adapter_pooling(adapter.path) is None:
            raise ServingError(f"adapter {name!r} was trained on the encoder's [CLS] pooler (it saved the pooler), "
                               f"and this server's base feeds the head the {pooling} of the token vectors",
                               "train the adapter again on this base (training now uses the base's pooling)")
        return adapter

    def attach(self, adapter: Adapter) -> None:
        """Load a verified adapter's weights next to the others (same base in memory)."""
        from peft import PeftModel

        if adapter.name in self.adapters:
            raise ServingError(f"adapter {adapter.name!r} is already served", "remove it first, or use a new name")
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(adapter.path), adapter_name=adapter.name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(adapter.path), adapter_name=adapter.name,
                                                   is_trainable=False)
        self.model.eval()
        self.adapters[adapter.name] = adapter
        self._stacked = None
        log.info("adapter %s attached (%s)", adapter.name, adapter.digest)

    def detach(self, name: str) -> None:
        if name not in self.adapters:
            raise ServingError(f"adapter {name!r} is not served", f"served adapters: {', '.join(self.adapters)}")
        self.model.delete_adapter(name)
        del self.adapters[name]
        self._stacked = None
        log.info("adapter %s removed", name)

    # -- inference --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _selected(self, adapter: str | None):
        """Run the block with one adapter active, or with adapters disabled for the base."""
        from peft import PeftModel

        if adapter is None:
            if isinstance(self.model, PeftModel):
                with self.model.disable_adapter():
                    yield
            else:
                yield
            return
        if adapter not in self.adapters:
            raise ServingError(f"adapter {adapter!r} is not served")
        self.model.set_adapter(adapter)
        yield

    def adapter_tokenizer(self, adapter: str | None):
        """The tokenizer ``adapter`` was trained with (saved in its folder), else the base's: an adapter
        reads text as its training did (``task.lowercase``, for one)."""
        chosen = self.adapters[adapter].template_tokenizer if adapter in self.adapters else None
        return chosen if chosen is not None else self.tokenizer

    def template_tokenizer(self, adapter: str | None):
        chosen = self.adapter_tokenizer(adapter)
        return chosen if getattr(chosen, "chat_template", None) else self.tokenizer

    def generate(self, adapter: str | None, items: list[GenItem]) -> list[GenResult | Exception]:
        """Decode a batch (left padding), each item with its own sampling, limits and stops (decoding.py)."""
        return self.generate_mixed([adapter] * len(items), items)

    def generate_mixed(self, adapters: list[str | None], items: list[GenItem]) -> list[GenResult | Exception]:
        """One batch whose rows use different adapters of the base (None: the base), in one forward pass per
        step: peft's mixed-adapter batches apply each row's own LoRA weights in every layer."""
        results: list[GenResult | Exception | None] = [None] * len(items)

        def keep(i: int):
            return lambda result: results.__setitem__(i, result)
        self.run_jobs([Job(a, item, keep(i)) for i, (a, item) in enumerate(zip(adapters, items))])
        return results

    def run_jobs(self, jobs: list[Job], more: More | None = None, max_rows: int = 0, stop=None) -> None:
        """Decode ``jobs`` as one running batch (running.py); ``more`` hands over rows that join it between
        steps, of any served adapter. Each job's ``finish`` gets its answer as soon as its row stops."""
        gone = sorted({j.tag for j in jobs if j.tag is not None and j.tag not in self.adapters})
        if gone:
            raise ServingError(f"adapter {gone[0]!r} is not served")
        core = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        run_jobs(core, self.tokenizer, jobs, self._rows_context, more, max_rows, stop)

    @contextlib.contextmanager
    def _rows_context(self, tags: list[str | None]):
        """The adapters of a forward's rows: one selected for all; when they differ, stacked LoRA products
        (mixed_lora.py), or peft's per-row hooks for adapters those do not cover."""
        if len(set(tags)) == 1:
            with self._selected(tags[0]):
                yield
            return
        if self._stacked is None:
            self._stacked = StackedLora(self.model) if supported(self.model, list(self.adapters)) else False
        if self._stacked:
            with self._stacked.rows(tags, list(self.adapters)):
                yield
            return
        names = ["__base__" if a is None else a for a in tags]
        with self.model._enable_peft_forward_hooks(adapter_names=names):
            yield

    def classify(self, adapter: str | None, texts: list[str]) -> list[tuple[str, list[float]]]:
        """(label, probabilities in label order) of each text."""
        import torch

        limit = min(self.max_positions, 512)
        tokenizer = self.adapter_tokenizer(adapter)
        enc = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        with torch.inference_mode(), self._selected(adapter):
            probs = torch.softmax(self.model(**enc).logits.float(), dim=-1)
        id2label = self.model.config.id2label
        return [(id2label[int(row.argmax())], [round(float(p), 6) for p in row]) for row in probs]

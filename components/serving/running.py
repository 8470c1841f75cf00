"""Continuous batching: a running batch that rows join between decoding steps and leave when done.

One KV cache (transformers' ``DynamicCache``, left-padded) holds every active row. A row
that arrives while the batch runs is prefilled with the others that arrived with it (one
forward of their own prompts), picks its first token, and its cache is merged into the
running one (the shorter side padded on the left, masked); the next decoding step then
feeds every row's last token in one forward pass. A row that stopped leaves at once: its
request is answered (``finish``) and its cache rows are dropped, so no step computes for
it and the batch never waits for its longest row before taking new work. Columns that only
padding holds after rows left are trimmed.

``context(tags)`` wraps every forward with the adapters of its rows (``tags``, one per row:
the mixed-adapter hooks, or nothing when one adapter is selected for the whole run). Rows
whose logits only feed a greedy choice skip the full-vocabulary log-softmax: argmax of the
logits is the token ``generate`` picks.
"""

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

from aicd.components.errors import ServingError
from aicd.components.serving.decoding import GenItem, GenResult, Row, output_head, score_prompts

log = logging.getLogger(__name__)

Finish = Callable[[GenResult | Exception], None]


@dataclass
class Job:
    """One row to decode: its adapter tag, its item and where its answer goes (called once)."""

    tag: Any
    item: GenItem
    finish: Finish

    def gone(self) -> bool:
        """Nobody waits for the answer any more (the batcher's finisher knows when a request was dropped)."""
        gone = getattr(self.finish, "gone", None)
        return bool(gone is not None and gone())


More = Callable[[int], list[Job]]  # room -> jobs that arrived meanwhile (at most room)
Context = Callable[[list[Any]], AbstractContextManager]


def joinable(past: Any) -> bool:
    """Rows can join a cache only when every layer is a plain growing ``DynamicLayer`` (no sliding window)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(past, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _pad_left(t, width: int, dim: int):
    import torch

    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class RunningBatch:
    """The decoding state of the active rows; call from the model thread only."""

    def __init__(self, core: Any, tokenizer: Any, context: Context):
        self.core, self.tokenizer, self.context = core, tokenizer, context
        self.body, self.head = core.base_model, output_head(core)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos_ids = core.generation_config.eos_token_id if getattr(core, "generation_config", None) else None
        eos_ids = eos_ids if eos_ids is not None else tokenizer.eos_token_id
        self.eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) - {None}
        self.rows: list[Row] = []
        self.jobs: list[Job] = []
        self.ids = self.mask = self.positions = self.past = None
        self.can_join = False  # the model's cache takes rows mid-run (a plain DynamicCache)
        self._tags: list[Any] | None = None  # the rows the adapter context was entered for
        self._stack = ExitStack()

    def __len__(self) -> int:
        """Rows still decoding."""
        return sum(not r.done for r in self.rows)

    def admit(self, jobs: list[Job]) -> None:
        """Prefill ``jobs`` together, pick their first tokens and merge them into the running batch. If that
        fails, only ``jobs`` get the error: rows already running go on (it is raised when none run)."""
        import torch

        rows = [Row(job.item, self.tokenizer, self.eos) for job in jobs]
        items = [job.item for job in jobs]
        width = max(len(i.prompt_ids) for i in items)
        ids = torch.tensor([[self.pad] * (width - len(i.prompt_ids)) + i.prompt_ids for i in items])
        mask = torch.tensor([[0] * (width - len(i.prompt_ids)) + [1] * len(i.prompt_ids) for i in items])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            self._use([job.tag for job in jobs])
            out = self.body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            score_prompts(rows, out.last_hidden_state, self.head, width)
            picked = self._pick(rows, jobs, out.last_hidden_state[:, -1])
        except Exception as err:  # noqa: BLE001 - these rows are not in the batch yet: answer them here
            for job in jobs:
                job.finish(err)
            if not self.rows:
                raise
            log.warning("%d joining rows failed (%s); the %d running rows go on", len(jobs), err, len(self))
            return
        self.can_join = joinable(out.past_key_values)
        self._merge(rows, jobs, torch.tensor(picked)[:, None], mask, positions[:, -1:], out.past_key_values)
        self._leave()

    def step(self) -> None:
        """One decoding step of every active row."""
        import torch

        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=self.mask.dtype)], dim=1)
        self.positions = self.positions + 1
        self._use([job.tag for job in self.jobs])
        out = self.body(input_ids=self.ids, attention_mask=self.mask, position_ids=self.positions,
                        past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        self.ids = torch.tensor(self._pick(self.rows, self.jobs, out.last_hidden_state[:, -1]))[:, None]
        self._leave()

    def _use(self, tags: list[Any]) -> None:
        """Enter the adapter context of these rows, unless it is already entered (selecting adapters or
        registering peft's hooks walks every module: done when the rows change, not at every step)."""
        if tags == self._tags:
            return
        self.release()
        self._stack.enter_context(self.context(tags))
        self._tags = tags

    def release(self) -> None:
        self._stack.close()
        self._stack, self._tags = ExitStack(), None

    def _pick(self, rows: list[Row], jobs: list[Job], hidden) -> list[int]:
        """Each live row's next token (``pad`` for a row that stopped); log-softmax only for rows that use it.
        A row whose request was cancelled or abandoned stops here."""
        import torch

        live = [r for r in rows if not r.done]
        if not live:
            return [self.pad] * len(rows)
        logits = self.head(hidden).float()
        wants = [b for b, r in enumerate(rows) if not r.done and not r.plain_greedy]
        logp = torch.log_softmax(logits[wants], dim=-1) if wants else None
        picked = []
        for b, (row, job) in enumerate(zip(rows, jobs)):
            token = self.pad
            if not row.done and ((row.item.cancel is not None and row.item.cancel.is_set()) or job.gone()):
                row.done, row.closed = True, True  # nobody listens: stop without emitting
            if not row.done:
                token = row.advance(logp[wants.index(b)] if b in wants else logits[b], self.pad)
            picked.append(token)
        return picked

    def _merge(self, rows: list[Row], jobs: list[Job], ids, mask, positions, past) -> None:
        import torch

        if not self.rows:
            self.rows, self.jobs, self.ids, self.mask = rows, jobs, ids, mask
            self.positions, self.past = positions, past
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(mask, width, 1)], dim=0)
        for mine, theirs in zip(self.past.layers, past.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)], dim=0)
        self.ids = torch.cat([self.ids, ids], dim=0)
        self.positions = torch.cat([self.positions, positions], dim=0)
        self.rows, self.jobs = self.rows + rows, self.jobs + jobs

    def _leave(self) -> None:
        """Answer the rows that stopped and drop them (and all-padding columns) from the state. A cache other
        than plain growing layers (sliding windows...) keeps its shape: its finished rows stay, fed padding."""
        import torch

        for row, job in zip(self.rows, self.jobs):
            if row.done and not row.answered:
                row.answered = True
                row._emit()
                job.finish(row.error or row.result())
        keep = [b for b, r in enumerate(self.rows) if not r.done]
        if not keep:
            self.rows, self.jobs = [], []
            self.ids = self.mask = self.positions = self.past = None
            return
        if len(keep) == len(self.rows) or not self.can_join:
            return
        self.rows = [self.rows[b] for b in keep]
        self.jobs = [self.jobs[b] for b in keep]
        index = torch.tensor(keep)
        self.mask, self.ids, self.positions = self.mask[index], self.ids[index], self.positions[index]
        first = int(self.mask.any(dim=0).int().argmax())  # leading columns that hold only padding
        for layer in self.past.layers:
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]
        self.mask = self.mask[:, first:]

    def close(self, error: Exception) -> None:
        """Fail every row still active (the batch itself broke)."""
        for row, job in zip(self.rows, self.jobs):
            if not row.answered:
                job.finish(error)
        self.rows, self.jobs, self.ids, self.mask, self.positions, self.past = [], [], None, None, None, None


def run_jobs(core: Any, tokenizer: Any, jobs: list[Job], context: Context, more: More | None = None,
             max_rows: int = 0, stop: threading.Event | None = None) -> None:
    """Decode ``jobs``; between steps take new jobs from ``more`` (up to ``max_rows`` active), until no row
    is left and none arrived. Every job's ``finish`` is called exactly once, as soon as its row stops. Once
    ``stop`` is set (the server shuts down), the rows still decoding fail with a ServingError."""
    import torch

    batch = RunningBatch(core, tokenizer, context)
    try:
        with torch.inference_mode():
            batch.admit(jobs)
            while True:
                room = max_rows - len(batch)
                joined = more(room) if more is not None and room > 0 and batch.can_join else []
                if joined:
                    batch.admit(joined)
                if not len(batch):
                    break
                if stop is not None and stop.is_set():
                    batch.close(ServingError("the server is shutting down; this request was not finished",
                                             "send it again: another replica, or this one after its restart, "
                                             "answers it"))
                    break
                batch.step()
    except Exception as err:  # noqa: BLE001 - every unanswered row of the broken batch gets the error
        batch.close(err)
        raise
    finally:
        batch.release()

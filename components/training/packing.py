"""Data order and batches: length-grouped sampling, padding-free packing, dynamic padding.

Packing bin-packs a micro-batch's examples into rows of bounded length. Without
FlashAttention's varlen kernels, position_ids alone would let a token attend to the
examples packed before it, so each row gets an exact block-diagonal causal mask (a 4D
additive mask, accepted by every attention implementation) and position_ids that restart
at 0 for each example: the packed loss equals the per-example loss.

The order of examples is a pure function of (seed, epoch), never of RNG state, so a
resumed run sees exactly the batches an uninterrupted run would, on any number of ranks.
"""

import math
from dataclasses import dataclass, field

from aicd.components.training.examples import IGNORE, Example, target_count

_MEGABATCH = 16  # global batches per length-sorted group


def block_diagonal_mask(lengths: list[int], dtype=None):
    """(1, 1, T, T) mask: token i attends to j iff same example and j <= i.

    Additive (0 or the dtype's minimum) for a float ``dtype`` (default float32), which
    every attention implementation accepts; boolean (True = attend) for ``torch.bool``,
    which SDPA takes in any compute dtype (bf16 autocast on GPUs).
    """
    return row_masks([lengths], dtype)


def row_masks(rows: list[list[int]], dtype=None, width: int | None = None):
    """(R, 1, W, W) block-diagonal causal masks, one per row of segment ``lengths``.

    Positions past a row's segments (right padding up to ``width``) form one more segment
    of their own, so no row of the mask is empty (an all-masked row would make NaNs).
    """
    import torch

    dtype = dtype or torch.float32
    width = width or max(sum(r) for r in rows)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, lengths in enumerate(rows):
        seg[i, :sum(lengths)] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    allowed = (seg[:, :, None] == seg[:, None, :]) & torch.ones(width, width, dtype=torch.bool).tril()
    if dtype == torch.bool:
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def bin_rows(lengths: list[int], bound: int) -> list[list[int]]:
    """First-fit-decreasing: indices into ``lengths`` grouped in rows of at most ``bound`` tokens.

    Deterministic (ties keep the input order); an example longer than ``bound`` gets a row
    of its own (callers pass a bound of at least the longest example).
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for k in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        for r, free in enumerate(room):
            if lengths[k] <= free:
                rows[r].append(k)
                room[r] -= lengths[k]
                break
        else:
            rows.append([k])
            room.append(bound - lengths[k])
    return rows


def pack(examples: list[Example], dtype=None, mask: bool = True, row_length: int | None = None) -> dict:
    """Padding-free rows: input_ids, labels, position_ids and per-row block-diagonal masks.

    The examples are bin-packed (first-fit-decreasing) into rows of at most ``row_length``
    tokens (default and minimum: the longest example), so attention costs the square of a
    row, not of the whole micro-batch. Rows are right-padded to the longest row (labels
    ignored there). ``mask=False`` leaves the mask out for FlashAttention, whose varlen
    kernels take the example boundaries from the restarting position_ids: everything
    then goes in one row, as those kernels expect.
    """
    import torch

    longest = max(ex.length for ex in examples)
    total = sum(ex.length for ex in examples)
    bound = total if not mask else max(row_length or longest, longest)
    rows = [[examples[k] for k in row] for row in bin_rows([ex.length for ex in examples], bound)]
    width = max(sum(ex.length for ex in row) for row in rows)
    ids, labels, positions = [], [], []
    for row in rows:
        fill = width - sum(ex.length for ex in row)
        ids.append([t for ex in row for t in ex.input_ids] + [examples[0].input_ids[-1]] * fill)
        labels.append([t for ex in row for t in ex.labels] + [IGNORE] * fill)
        positions.append([p for ex in row for p in range(ex.length)] + list(range(fill)))
    batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
             "position_ids": torch.tensor(positions)}
    if mask:
        batch["attention_mask"] = row_masks([[ex.length for ex in row] for row in rows], dtype, width)
    return batch


def pad(examples: list[Example], pad_id: int) -> dict:
    """Right-padded rows with a 2D mask (dynamic padding to the longest example)."""
    import torch

    width = max(ex.length for ex in examples)
    ids = [ex.input_ids + [pad_id] * (width - ex.length) for ex in examples]
    mask = [[1] * ex.length + [0] * (width - ex.length) for ex in examples]
    batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if isinstance(examples[0].labels, int):
        batch["labels"] = torch.tensor([ex.labels for ex in examples])
    else:
        batch["labels"] = torch.tensor([ex.labels + [IGNORE] * (width - ex.length) for ex in examples])
    return batch


def collate(examples: list[Example], pad_id: int, packing: bool, dtype=None, mask: bool = True,
            row_length: int | None = None) -> dict:
    """Packed rows for causal-LM examples when packing is on, padded rows otherwise."""
    if packing and not isinstance(examples[0].labels, int):
        return pack(examples, dtype, mask, row_length)
    return pad(examples, pad_id)


def mask_format(model) -> tuple:
    """(dtype, mask) for pack(): the packed format the model's attention implementation takes."""
    import torch

    config = getattr(model, "config", None)
    impl = str(getattr(config, "_attn_implementation", "") or "")
    if impl.startswith("flash_attention"):
        return None, False
    if impl == "sdpa":
        return torch.bool, True
    return next(model.parameters()).dtype, True


def epoch_order(lengths: list[int], seed: int, epoch: int, global_batch: int, group_by_length: bool) -> list[int]:
    """A permutation of the examples for one epoch, length-grouped if asked."""
    import torch

    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    if not group_by_length:
        return order
    size = global_batch * _MEGABATCH
    groups = [sorted(order[i:i + size], key=lambda k: -lengths[k]) for i in range(0, len(order), size)]
    return [k for group in groups for k in group]


@dataclass
class BatchPlan:
    """Which examples each rank sees at each optimizer step (a pure function of the step)."""

    examples: list[Example]
    batch_size: int  # per rank and micro-step
    accumulation: int = 1
    world: int = 1
    seed: int = 0
    group_by_length: bool = True
    _orders: dict[int, list[int]] = field(default_factory=dict, repr=False)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulation * self.world

    def steps_for(self, epochs: float, max_steps: int | None) -> int:
        if max_steps is not None:
            return max_steps
        return max(1, math.ceil(epochs * len(self.examples) / self.global_batch))

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            lengths = [ex.length for ex in self.examples]
            self._orders = {epoch: epoch_order(lengths, self.seed, epoch, self.global_batch, self.group_by_length)}
        return self._orders[epoch]

    def global_indices(self, step: int) -> list[int]:
        n = len(self.examples)
        start = step * self.global_batch
        return [self._order(p // n)[p % n] for p in range(start, start + self.global_batch)]

    def micro_batches(self, step: int, rank: int = 0) -> list[list[Example]]:
        """This rank's micro-batches of a step: chunk (a * world + rank) of the global batch."""
        idx = self.global_indices(step)
        out = []
        for a in range(self.accumulation):
            k = (a * self.world + rank) * self.batch_size
            out.append([self.examples[i] for i in idx[k:k + self.batch_size]])
        return out

    def global_targets(self, step: int) -> int:
        """Loss terms in the whole global batch: each rank normalises by this same number."""
        return target_count([self.examples[i] for i in self.global_indices(step)])

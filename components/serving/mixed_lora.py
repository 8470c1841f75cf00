"""Rows of different LoRA adapters in one forward pass, in a few batched products per layer.

peft's mixed-adapter batches (``adapter_names``) run, in every LoRA layer and for every
adapter in the batch, a gather of its rows, both LoRA products, the scaling and an indexed
add: about 24 small operations per layer for 4 adapters, which at 8 rows per decoding step
cost more than the products themselves. Here each layer's adapters are stacked once
(``A`` as ``[adapters + 1, r, in]``, ``B`` times its scaling as ``[adapters + 1, out, r]``,
entry 0 all zeros for the base, ranks padded with zeros) and, for a batch's rows, picked
once per batch composition; a forward then adds ``bmm(bmm(x, A_rows^T), B_rows^T)`` to the
base layer's output: two products per layer. peft's layers run with adapters disabled
(base output only) and a forward hook adds the rows' LoRA deltas.

Only plain LoRA on ``nn.Linear`` layers qualifies (no DoRA or other variants, no bias
training); ``supported`` says so and the engine falls back to peft's mixed batches otherwise.
"""

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)
BASE = "__base__"


def _lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import Linear as LoraLinear

    return [m for m in model.modules() if isinstance(m, LoraLinear)]


def supported(model: Any, adapters: list[str]) -> bool:
    """Every LoRA layer is a plain Linear LoRA for every served adapter (no variant, no dropout in use), and
    none is the output head: the head also runs on one request's prompt positions (echo logprobs), which
    the per-row hook would pair with the batch's adapters."""
    import torch

    layers = _lora_layers(model)
    if not layers:
        return False
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    for layer in layers:
        if head is not None and (layer is head or layer.base_layer is head):
            return False
        if not isinstance(layer.base_layer, torch.nn.Linear) or getattr(layer, "lora_variant", {}):
            return False
        if any(layer.use_dora.get(a, False) for a in adapters):
            return False
    return True


class StackedLora:
    """Each LoRA layer's adapters stacked for batched rows; rebuilt when the served adapters change."""

    def __init__(self, model: Any):
        self.model = model
        self.names: tuple[str, ...] = ()
        self.layers: list[Any] = []
        self.stacks: dict[int, tuple[Any, Any]] = {}  # id(layer) -> (A [n+1, r, in], B*s [n+1, out, r])

    def _build(self, names: tuple[str, ...]) -> None:
        import torch

        self.stacks, self.layers = {}, _lora_layers(self.model)
        for layer in self.layers:
            rank = max([layer.lora_A[a].weight.shape[0] for a in names if a in layer.lora_A] or [1])
            base = layer.base_layer
            a_stack = base.weight.new_zeros((len(names) + 1, rank, base.in_features))
            b_stack = base.weight.new_zeros((len(names) + 1, base.out_features, rank))
            with torch.no_grad():
                for k, name in enumerate(names, start=1):
                    if name in layer.lora_A:
                        r = layer.lora_A[name].weight.shape[0]
                        a_stack[k, :r] = layer.lora_A[name].weight
                        b_stack[k, :, :r] = layer.lora_B[name].weight * layer.scaling[name]
            self.stacks[id(layer)] = (a_stack, b_stack)
        self.names = names

    @contextlib.contextmanager
    def rows(self, tags: list[str | None], served: list[str]):
        """Within the block, a forward's row ``i`` uses adapter ``tags[i]`` (None: the base)."""
        import torch

        names = tuple(sorted(served))
        if names != self.names:
            self._build(names)
        index = torch.tensor([0 if t is None else names.index(t) + 1 for t in tags])
        picked = {key: (a.index_select(0, index).transpose(1, 2), b.index_select(0, index).transpose(1, 2))
                  for key, (a, b) in self.stacks.items()}

        def add_delta(layer, args, output):
            a_rows, b_rows = picked[id(layer)]
            x = args[0]
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            delta = torch.bmm(torch.bmm(flat.to(a_rows.dtype), a_rows), b_rows)
            return output + delta.reshape(output.shape).to(output.dtype)

        handles = [layer.register_forward_hook(add_delta) for layer in self.layers]
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for handle in handles:
                handle.remove()

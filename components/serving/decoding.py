"""The predictor's decoding loop: per-request sampling, log-probabilities, stops and streaming.

Rows run through the model together with a KV cache, one token per step (running.py: rows
join a running batch between steps and leave it when they stop). Each row decodes on its own
terms:

- ``temperature`` 0 is greedy (argmax); above 0 the row samples from softmax(logits / T)
  restricted to the smallest set of tokens whose probability reaches ``top_p``, drawing
  from its own ``torch.Generator`` seeded by the request's ``seed`` (a fresh random seed
  when none is given): the same seed, batch composition and adapter give the same text.
- ``presence_penalty``/``frequency_penalty`` lower the logits of tokens already generated
  (once, and per occurrence), as OpenAI describes, before greedy choice or sampling.
- Reported log-probabilities are those of the model itself (log-softmax of the raw logits,
  before temperature and top_p), as the evaluation backend scores them.
- ``echo`` rows get the log-probability of every prompt token after the first, from the
  same forward pass that starts generation.
- A row stops at EOS (the EOS token counts in ``completion_tokens`` and has its log-probability
  entry, as OpenAI and vLLM report it; the text does not hold it), at its ``max_tokens`` or
  when its text contains a stop sequence (the text is cut before it; ``finish_reason``
  "stop").
- ``sink`` (streaming) receives each new piece of text as soon as it is certain: text that
  could still turn out to be the start of a stop sequence, or an incomplete UTF-8
  character (a trailing run of U+FFFD), is held back until it cannot; the pieces add up to
  the final text.
- ``cancel`` (a ``threading.Event``) set by the caller, e.g. when a streaming client went
  away, stops its row at the next step so the model thread does not decode for nobody.
"""

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEED_MODULUS = 1 << 64  # torch.Generator takes seeds in [-2**63, 2**64); OpenAI seeds wrap into it
Sink = Callable[[str, "GenResult | None"], None]  # (new text, the final result once the row stopped)


@dataclass(frozen=True)
class Sampling:
    """How one request decodes (OpenAI's fields, validated by the API)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # None: no log-probabilities; k: the chosen token's and the top k
    presence_penalty: float = 0.0  # subtracted once from the logit of every token already generated
    frequency_penalty: float = 0.0  # subtracted per occurrence of a token already generated
    echo: bool = False  # log-probabilities of the prompt tokens too


@dataclass(frozen=True)
class GenItem:
    """One generation request after tokenization."""

    prompt_ids: list[int]
    max_tokens: int
    stop: tuple[str, ...] = ()
    sampling: Sampling = Sampling()
    sink: Sink | None = field(default=None, compare=False)
    cancel: threading.Event | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TokenLogprob:
    """A token, its log-probability (None for the first prompt token) and the top alternatives."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenResult:
    text: str
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    tokens: tuple[TokenLogprob, ...] | None = None  # generated tokens (when logprobs were asked)
    prompt: tuple[TokenLogprob, ...] | None = None  # prompt tokens (echo with logprobs)


def _top(logp, k: int) -> tuple[tuple[int, float], ...]:
    if k <= 0:
        return ()
    values, ids = logp.topk(k)
    return tuple((int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist()))


def prompt_logprobs(logp_rows, prompt_ids: list[int], k: int) -> tuple[TokenLogprob, ...]:
    """Prompt tokens with their log-probabilities; ``logp_rows[j]`` predicts token ``j + 1``."""
    first = TokenLogprob(prompt_ids[0], None, ())
    return (first, *(TokenLogprob(t, float(logp_rows[j, t]), _top(logp_rows[j], k))
                     for j, t in enumerate(prompt_ids[1:])))


class Row:
    """The decoding state of one request."""

    def __init__(self, item: GenItem, tokenizer, eos: set[int]):
        import torch

        self.item, self.tokenizer, self.eos = item, tokenizer, eos
        s = item.sampling
        self.generator = None
        if s.temperature > 0:
            self.generator = torch.Generator().manual_seed(s.seed % SEED_MODULUS if s.seed is not None
                                                          else random.getrandbits(63))
        self.new: list[int] = []
        self.error: Exception | None = None  # what ended this row alone, if anything did
        self.eos_count = 0  # 1 once the row generated EOS (counted, not in the text)
        self.logprobs: list[TokenLogprob] = []
        self.prompt: tuple[TokenLogprob, ...] | None = None
        self.sent = 0  # characters already given to the sink
        self.closed = False  # the final result went to the sink
        self.answered = False  # the request got its result (running.py)
        self.done = item.max_tokens == 0
        self.reason = "length"
        self.text = ""
        self.hold = max((len(x) for x in item.stop), default=1) - 1
        # greedy without log-probabilities or penalties: the argmax of the raw logits is the answer
        self.plain_greedy = self.generator is None and s.logprobs is None and not (
            s.presence_penalty or s.frequency_penalty)

    def pick(self, logits) -> int:
        import torch

        s = self.item.sampling
        if self.new and (s.presence_penalty or s.frequency_penalty):
            counts = torch.bincount(torch.tensor(self.new), minlength=logits.shape[-1])[:logits.shape[-1]].float()
            logits = logits - s.presence_penalty * (counts > 0).float() - s.frequency_penalty * counts
        if self.generator is None:
            return int(logits.argmax())
        # In float64 (a float32 temperature of 1e-230 is 0) and shifted so the largest logit is 0: a tiny
        # temperature sends the others to -inf, not every logit to +-inf (NaN); sampling tends to greedy.
        probs = torch.softmax((logits.double() - logits.max()) / s.temperature, dim=-1)
        if s.top_p < 1.0:
            ordered, index = probs.sort(descending=True)
            keep = ordered.cumsum(-1) - ordered < s.top_p  # the smallest prefix reaching top_p (at least one)
            probs = torch.zeros_like(probs).scatter(0, index[keep], ordered[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def advance(self, logp, pad: int) -> int:
        """Pick and take the next token; an error ends this row alone (``pad`` feeds its slot after)."""
        try:
            token = self.pick(logp)
            self.push(token, logp)
            return token
        except Exception as err:  # noqa: BLE001 - handed to this row's request, not to the whole batch
            self.error, self.done, self.closed = err, True, True
            return pad

    def push(self, token: int, logp) -> None:
        """Take the next token; stop the row at EOS, at max_tokens or at a stop sequence."""
        k = self.item.sampling.logprobs
        if k is not None:
            self.logprobs.append(TokenLogprob(token, float(logp[token]), _top(logp, k)))
        if token in self.eos:
            self.done, self.reason, self.eos_count = True, "stop", 1
            self._emit()
            return
        self.new.append(token)
        self.text = self.tokenizer.decode(self.new, skip_special_tokens=True)
        cut = min((c for c in (self.text.find(x) for x in self.item.stop) if c >= 0), default=-1)
        if cut >= 0:
            self.text, self.done, self.reason = self.text[:cut], True, "stop"
            self._trim_to_text()
        elif len(self.new) >= self.item.max_tokens:
            self.done = True
        self._emit()

    def _trim_to_text(self) -> None:
        """After a stop cut, keep the tokens that made the kept text (the last may carry the stop's start)."""
        keep = len(self.new)
        while keep > 0 and len(self.tokenizer.decode(self.new[:keep - 1], skip_special_tokens=True)) >= len(
                self.text):
            keep -= 1
        self.new = self.new[:keep]
        self.logprobs = self.logprobs[:keep]

    def _emit(self) -> None:
        if self.item.sink is None or self.closed:
            return
        end = len(self.text) if self.done else len(self.text) - self.hold
        if not self.done:  # a partial UTF-8 character may decode as several U+FFFD
            end = min(end, len(self.text.rstrip("\ufffd")))
        if end > self.sent:
            self.item.sink(self.text[self.sent:end], None)
            self.sent = end
        if self.done:
            self.closed = True
            self.item.sink("", self.result())

    def result(self) -> GenResult:
        wants = self.item.sampling.logprobs is not None
        return GenResult(text=self.text, completion_tokens=len(self.new) + self.eos_count, finish_reason=self.reason,
                         tokens=tuple(self.logprobs) if wants else None, prompt=self.prompt)


def score_prompts(rows: list["Row"], hidden, head, width: int) -> None:
    """Prompt log-probabilities of the echo rows from the first forward pass."""
    import torch

    for b, row in enumerate(rows):
        s = row.item.sampling
        if not (s.echo and s.logprobs is not None):
            continue
        n = len(row.item.prompt_ids)
        logp = torch.log_softmax(head(hidden[b, width - n:width - 1]).float(), dim=-1)
        row.prompt = prompt_logprobs(logp, row.item.prompt_ids, s.logprobs)


def output_head(core: Any) -> Callable:
    """Hidden states -> logits as the family's own forward computes them: the output embedding, then
    Cohere's ``logit_scale`` (times), Granite's ``logits_scaling`` (divided by) and Gemma 2's
    ``final_logit_softcapping`` (cap * tanh(logits / cap)) when the model's config has them."""
    import torch

    linear, config = core.get_output_embeddings(), getattr(core, "config", None)
    scale = getattr(config, "logit_scale", None)
    divide = getattr(config, "logits_scaling", None)
    cap = getattr(config, "final_logit_softcapping", None)

    plain = type(linear) is torch.nn.Linear and linear.bias is None

    def head(hidden):
        # weight @ hidden^T: on CPU the few-rows product of a wide head runs up to 2x faster this way round
        # than linear() (its rows agree with linear()'s as closely as linear()'s agree across batch sizes)
        logits = torch.mm(linear.weight, hidden.t()).t() if plain and hidden.dim() == 2 else linear(hidden)
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
    return head

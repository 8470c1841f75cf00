"""Live endpoints as evaluation backends: OpenAI-compatible and KServe v2 URLs.

- ``.../v1/completions``: ``{"model", "prompt", "max_tokens", "temperature": 0}`` ->
  ``choices[0].text`` (the prompt is the spec's template applied, or the raw instruction);
- ``.../v1/chat/completions``: ``{"model", "messages", ...}`` -> ``choices[0].message.content``
  (the server applies its chat template);
- ``.../v2/models/<name>/infer``: one BYTES input ``text`` with the instruction or text,
  ``parameters.max_new_tokens``; the answer or label is ``outputs[0].data[0]``.

Requests are greedy (temperature 0). Any connection error, HTTP error or malformed
answer raises :class:`EvaluationError`: no partial report.

NLL of the reference answers (``score``) goes through the completions route of an
OpenAI-compatible endpoint (a chat URL's sibling ``/completions``) with ``echo: true,
max_tokens: 0, logprobs: 0`` and the token ids the local backend would score (the
prompt, the answer and EOS, built with ``tokenizer``: the served base model's): the
endpoint returns every prompt token's log-probability, so the NLL is the local
backend's for the same model, adapter and text. Without a tokenizer, or for KServe v2,
there is no NLL.
"""

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aicd.components.errors import EvaluationError
from aicd.components.evaluation.backends import Backend, build_prompt
from aicd.components.evaluation.inference import Outputs, build_sequences

log = logging.getLogger(__name__)
_V2 = re.compile(r"/v2/models/(?P<name>[^/]+)(/versions/[^/]+)?/infer/?$")


def endpoint_protocol(url: str) -> str:
    """``openai-chat``, ``openai-completions`` or ``kserve-v2`` from the URL's path."""
    if not re.match(r"^https?://", url or ""):
        raise EvaluationError(f"endpoint {url!r} is not an http(s) URL",
                              "pass e.g. http://host/openai/v1/chat/completions or http://host/v2/models/NAME/infer")
    path = url.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/completions"):
        return "openai-completions"
    if _V2.search(path):
        return "kserve-v2"
    raise EvaluationError(f"endpoint {url!r} is neither an OpenAI-compatible nor a KServe v2 inference URL",
                          "end it with /v1/completions, /v1/chat/completions or /v2/models/<name>/infer")


@dataclass
class EndpointBackend(Backend):
    url: str = ""
    model_name: str = "model"
    task: str = "causal-lm"
    template: str | None = None
    system: str | None = None
    max_new_tokens: int = 48
    timeout: float = 60.0
    tokenizer: Any = None  # the served base model's, for scoring (NLL) through echo + logprobs
    max_length: int = 256
    score_batch: int = 16

    def __post_init__(self):
        self.protocol = endpoint_protocol(self.url)
        if self.task == "text-classification" and self.protocol != "kserve-v2":
            raise EvaluationError(f"endpoint {self.url!r}: text-classification is evaluated through KServe v2",
                                  "pass the model's /v2/models/<name>/infer URL")
        self.prompt_template = "chat template of the server" if self.protocol == "openai-chat" else \
            (self.template or "{instruction}")

    def _body(self, text: str) -> dict[str, Any]:
        if self.protocol == "kserve-v2":
            return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
                    "parameters": {"max_new_tokens": self.max_new_tokens}}
        common = {"model": self.model_name, "max_tokens": self.max_new_tokens, "temperature": 0}
        if self.protocol == "openai-chat":
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
                {"role": "user", "content": text}]
            return {**common, "messages": messages}
        prompt = self.template.format(instruction=text) if self.template else text
        return {**common, "prompt": prompt}

    def _answer(self, data: Any) -> tuple[str, int]:
        if self.protocol == "kserve-v2":
            value = data["outputs"][0]["data"][0]
            return str(value), 0
        choice = data["choices"][0]
        text = choice["message"]["content"] if self.protocol == "openai-chat" else choice["text"]
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        if not isinstance(text, str):
            raise TypeError(f"answer is {type(text).__name__}, not a string")
        return text.strip(), tokens

    def _request(self, session, text: str, example: str) -> tuple[str, int, float]:
        t0 = time.perf_counter()
        resp = self._post(session, self.url, self._body(text), example)
        elapsed = (time.perf_counter() - t0) * 1000
        try:
            text_out, tokens = self._answer(resp.json())
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise EvaluationError(f"endpoint {self.url} gave a malformed {self.protocol} answer for example "
                                  f"{example!r} ({type(err).__name__}: {err}): {resp.text[:200]!r}",
                                  "check that the URL's protocol matches the server") from err
        return text_out, tokens, elapsed

    def _post(self, session, url: str, body: dict[str, Any], example: str):
        import requests

        try:
            resp = session.post(url, json=body, timeout=self.timeout)
        except requests.RequestException as err:
            raise EvaluationError(f"endpoint {url} did not answer for example {example!r}: {err}",
                                  "check that the server is up and the URL is right; "
                                  "no partial report was written") from err
        if resp.status_code >= 400:
            raise EvaluationError(f"endpoint {url} answered HTTP {resp.status_code} for example "
                                  f"{example!r}: {resp.text[:200]!r}",
                                  "fix the server (its logs say why); no partial report was written")
        return resp

    def predict(self, inputs: Sequence[str], ids: Sequence[str] | None = None) -> Outputs:
        import requests

        texts, latencies, tokens, started = [], [], 0, time.perf_counter()
        with requests.Session() as session:
            for k, text in enumerate(inputs):
                answer, n, ms = self._request(session, text, ids[k] if ids else f"#{k}")
                texts.append(answer)
                latencies.append(ms)
                tokens += n
        return Outputs(texts, latencies, tokens, time.perf_counter() - started)

    def score(self, inputs: Sequence[str], targets: Sequence[str]) -> tuple[list[float], list[int]] | None:
        """Per-example mean NLL of each target and the scored token counts, from the endpoint's echoed
        prompt log-probabilities (None without a tokenizer or for KServe v2)."""
        import requests

        if self.tokenizer is None or self.protocol == "kserve-v2":
            return None
        url = re.sub(r"/chat/completions/?$", "/completions", self.url.split("?", 1)[0])
        prompts = [build_prompt(self.tokenizer, x, self.template, self.system) for x in inputs]
        seqs = build_sequences(self.tokenizer, prompts, targets, self.max_length, self.template is not None)
        nll: list[float] = []
        with requests.Session() as session:
            for start in range(0, len(seqs), self.score_batch):
                batch = seqs[start:start + self.score_batch]
                body = {"model": self.model_name, "prompt": [tokens for tokens, _ in batch], "echo": True,
                        "max_tokens": 0, "logprobs": 0, "temperature": 0}
                if start == 0:  # the first request says whether the server scores prompts at all
                    resp = self._post_or_refused(session, url, body)
                    if resp is None:
                        return None
                else:
                    resp = self._post(session, url, body, f"#{start}")
                choices = sorted(resp.json()["choices"], key=lambda c: c["index"])
                scored = [_mean_nll(c, tokens, plen) for c, (tokens, plen) in zip(choices, batch)]
                if None in scored or len(scored) != len(batch):
                    raise EvaluationError(f"endpoint {url} returned no prompt log-probabilities for echo + logprobs",
                                          "score through an aicd predictor (or a server that supports echo)")
                nll += scored
        return nll, [len(tokens) - plen for tokens, plen in seqs]

    def _post_or_refused(self, session, url: str, body: dict[str, Any]):
        """The answer, or None (no NLL, with a warning) when the server refuses echo + logprobs by name or
        answers without prompt log-probabilities; any other error (a wrong model name, a prompt over the
        token window) raises EvaluationError with the server's message."""
        import requests

        try:
            resp = session.post(url, json=body, timeout=self.timeout)
        except requests.RequestException as err:
            raise EvaluationError(f"endpoint {url} did not answer the scoring request: {err}",
                                  "check that the server is up; no partial report was written") from err
        if resp.status_code >= 500:
            raise EvaluationError(f"endpoint {url} answered HTTP {resp.status_code} to the scoring request: "
                                  f"{resp.text[:200]!r}", "fix the server (its logs say why)")
        if resp.status_code >= 400 and not _refuses_echo(resp.text):
            raise EvaluationError(f"endpoint {url} answered HTTP {resp.status_code} to the scoring request: "
                                  f"{_error_message(resp.text)!r}",
                                  "fix the request the message names (model name, token window); only a refusal "
                                  "of echo/logprobs means the server does not score prompts")
        try:
            first = resp.json()["choices"][0] if resp.status_code < 400 else {}
        except (ValueError, KeyError, IndexError, TypeError):
            first = {}
        if _mean_nll(first, body["prompt"][0], 1) is None:
            log.warning("endpoint %s does not score prompts (echo + logprobs): HTTP %d %s; the report has no NLL",
                        url, resp.status_code, resp.text[:200])
            return None
        return resp


def _mean_nll(choice: dict[str, Any], tokens: list[int], plen: int) -> float | None:
    scored = ((choice.get("logprobs") or {}).get("token_logprobs") or [])[plen:len(tokens)]
    if len(scored) != len(tokens) - plen or any(not isinstance(x, int | float) for x in scored):
        return None
    return -sum(scored) / len(scored)


def _error_message(text: str) -> str:
    """The message of an OpenAI-shaped error body ({"error": {"message"}} or {"error": "..."}), else the text."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text[:200]
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:200] if message else text[:200]


def _refuses_echo(text: str) -> bool:
    """Whether an error answer refuses echo or logprobs (the server cannot score prompts)."""
    message = _error_message(text).lower()
    return "echo" in message or "logprob" in message

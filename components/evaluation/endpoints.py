"""Live endpoints as evaluation backends: OpenAI-compatible and KServe v2 URLs.

- ``.../v1/completions``: ``{"model", "prompt", "max_tokens", "temperature": 0}`` ->
  ``choices[0].text`` (the prompt is the spec's template applied, or the raw instruction);
- ``.../v1/chat/completions``: ``{"model", "messages", ...}`` -> ``choices[0].message.content``
  (the server applies its chat template);
- ``.../v2/models/<name>/infer``: one BYTES input ``text`` with the instruction or text,
  ``parameters.max_new_tokens``; the answer or label is ``outputs[0].data[0]``.

Requests are greedy (temperature 0). Any connection error, HTTP error or malformed
answer raises :class:`EvaluationError`: no partial report.
"""

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aicd.components.errors import EvaluationError
from aicd.components.evaluation.backends import Backend
from aicd.components.evaluation.inference import Outputs

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
        import requests

        t0 = time.perf_counter()
        try:
            resp = session.post(self.url, json=self._body(text), timeout=self.timeout)
        except requests.RequestException as err:
            raise EvaluationError(f"endpoint {self.url} did not answer for example {example!r}: {err}",
                                  "check that the server is up and the URL is right; "
                                  "no partial report was written") from err
        elapsed = (time.perf_counter() - t0) * 1000
        if resp.status_code >= 400:
            raise EvaluationError(f"endpoint {self.url} answered HTTP {resp.status_code} for example "
                                  f"{example!r}: {resp.text[:200]!r}",
                                  "fix the server (its logs say why); no partial report was written")
        try:
            text_out, tokens = self._answer(resp.json())
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise EvaluationError(f"endpoint {self.url} gave a malformed {self.protocol} answer for example "
                                  f"{example!r} ({type(err).__name__}: {err}): {resp.text[:200]!r}",
                                  "check that the URL's protocol matches the server") from err
        return text_out, tokens, elapsed

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

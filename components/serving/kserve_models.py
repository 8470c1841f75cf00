"""KServe v1 and v2 inference for text-classification, through kserve's own data plane.

Each served name (the base, when it has a trained head, and every adapter) is a
``kserve.Model`` in kserve's ModelRepository, so ``/v1/models/NAME:predict``,
``/v2/models/NAME/infer`` and their readiness routes are kserve's. Inputs:

- v1: ``{"instances": ["text", ...]}`` (or ``[{"text": "..."}, ...]``) ->
  ``{"predictions": [{"label": "positive", "probabilities": {"negative": 0.1, ...}}]}``
- v2: one BYTES input (named ``text``, shape ``[N]``) -> output ``label`` (BYTES ``[N]``);
  ``probabilities`` (FP32 ``[N, len(labels)]``, in label order) when the request lists it in
  ``outputs`` (``[{"name": "label"}, {"name": "probabilities"}]``).
"""

import uuid
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotFound

from aicd.components.errors import ServingError
from aicd.components.serving.service import Service

MAX_INSTANCES = 1024
V2_OUTPUTS = ("label", "probabilities")


def _texts(values: Any, where: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise InvalidInput(f"{where} must be a non-empty list of strings")
    if len(values) > MAX_INSTANCES:
        raise InvalidInput(f"{where} has {len(values)} items; send at most {MAX_INSTANCES} per request")
    texts = []
    for i, value in enumerate(values):
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            value = value["text"]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if not isinstance(value, str):
            raise InvalidInput(f"{where}[{i}] must be a string (or {{\"text\": string}}), got {type(value).__name__}")
        texts.append(value)
    return texts


def v2_texts(request: InferRequest) -> list[str]:
    if len(request.inputs) != 1:
        raise InvalidInput(f"expected exactly one input tensor (BYTES, named 'text'), got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {tensor.name!r} must have datatype BYTES (the texts), got {tensor.datatype}")
    data = tensor.data
    if isinstance(data, list) and data and isinstance(data[0], list):  # shape [N, 1]
        data = [x for row in data for x in row]
    texts = _texts(data, f"input {tensor.name!r} data")
    count = 1
    for dim in tensor.shape or []:
        count *= dim if isinstance(dim, int) else 0
    if count != len(texts):
        raise InvalidInput(f"input {tensor.name!r} has shape {tensor.shape} but {len(texts)} values; "
                           f"send shape [{len(texts)}]")
    return texts


def v2_outputs(request: InferRequest) -> list[str]:
    wanted = [o.name for o in request.request_outputs or []] or ["label"]
    unknown = [name for name in wanted if name not in V2_OUTPUTS]
    if unknown:
        raise InvalidInput(f"unknown output(s) {', '.join(unknown)}; this model has {', '.join(V2_OUTPUTS)}")
    return wanted


def v2_response(request: InferRequest, name: str, results: list[tuple[str, list[float]]]) -> InferResponse:
    count, width = len(results), len(results[0][1])
    tensors = {"label": InferOutput("label", [count], "BYTES", [label for label, _ in results]),
               "probabilities": InferOutput("probabilities", [count, width], "FP32",
                                            [p for _, row in results for p in row])}
    return InferResponse(response_id=request.id or uuid.uuid4().hex, model_name=name,
                         infer_outputs=[tensors[n] for n in v2_outputs(request)])


class ServedModel(Model):
    """One served name; inference goes through the shared batcher of the service."""

    def __init__(self, name: str, service: Service):
        super().__init__(name)
        self.service = service
        self.ready = False

    def load(self) -> bool:
        self.ready = self.service.ready
        return self.ready

    async def _classify(self, texts: list[str]) -> list[tuple[str, list[float]]]:
        if self.service.config.task != "text-classification":
            raise InvalidInput(f"{self.name!r} is a causal-lm model: use POST /openai/v1/completions or "
                               "/openai/v1/chat/completions")
        tokenizer = self.service.engine.tokenizer
        for i, text in enumerate(texts):  # a batch of only empty rows has no shape the model accepts
            if not tokenizer(text, add_special_tokens=True)["input_ids"]:
                raise InvalidInput(f"text {i} is empty after tokenization; send some text")
        try:
            return await self.service.classify(self.name, texts)
        except ServingError:
            raise ModelNotFound(self.name) from None

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None):
        if isinstance(payload, InferRequest):
            texts = v2_texts(payload)
            v2_outputs(payload)  # refuse unknown outputs before the work
            return v2_response(payload, self.name, await self._classify(texts))
        if isinstance(payload, bytes | str):
            raise InvalidInput("the body was not read as JSON: send Content-Type: application/json")
        if not isinstance(payload, dict) or "instances" not in payload:
            raise InvalidInput('expected a JSON object with "instances": a list of texts')
        results = await self._classify(_texts(payload["instances"], '"instances"'))
        names = self.service.engine.labels
        return {"predictions": [{"label": label, "probabilities": dict(zip(names, row))} for label, row in results]}

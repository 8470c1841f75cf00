"""The prompt and the answer of one logged request, whatever protocol it came through.

The predictor logs the request and response bodies as received and sent
(docs/contracts.md): OpenAI chat and completions, KServe v1 (``instances`` /
``predictions``) and v2 (``inputs`` / ``outputs``). A request with several
prompts cannot be matched to one feedback, so it is reported as unusable.
"""

from typing import Any

Exchange = tuple[str | None, str | None, str | None]  # prompt, answer, problem


def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("text", "prompt", "instruction", "content", "label", "prediction", "generated_text"):
            if isinstance(value.get(key), str):
                return value[key]
    return None


def _single(items: Any, what: str) -> tuple[Any, str | None]:
    if not isinstance(items, list) or not items:
        return None, f"no {what}"
    if len(items) > 1:
        return None, f"{len(items)} {what} in one request: feedback cannot say which one it is about"
    return items[0], None


def _openai(request: dict, response: dict) -> Exchange:
    if "messages" in request:
        users = [m for m in request["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        prompt = _text_of(users[-1]) if users else None
    else:
        prompt, problem = _single(request["prompt"] if isinstance(request["prompt"], list) else [request["prompt"]],
                                  "prompts")
        if problem:
            return None, None, problem
    choices = response.get("choices") or []
    if len(choices) != 1:
        return None, None, f"the response has {len(choices)} choices, expected one"
    choice = choices[0] if isinstance(choices[0], dict) else {}
    answer = _text_of(choice.get("message")) if "message" in choice else choice.get("text")
    return prompt, answer, None


def _kserve(request: dict, response: dict) -> Exchange:
    if "instances" in request:
        item, problem = _single(request["instances"], "instances")
        out, problem_out = _single(response.get("predictions"), "predictions")
    else:
        tensor, problem = _single(request.get("inputs"), "inputs")
        item, problem = _single((tensor or {}).get("data"), "input values") if not problem else (None, problem)
        out_tensor, problem_out = _single(response.get("outputs"), "outputs")
        if not problem_out:
            out, problem_out = _single((out_tensor or {}).get("data"), "output values")
    if problem or problem_out:
        return None, None, problem or problem_out
    return _text_of(item), _text_of(out), None


def exchange_of(record: dict[str, Any]) -> Exchange:
    """(prompt, answer, None), or (None, None, why it is unusable) for one request record."""
    request, response = record.get("request"), record.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        return None, None, "the request or the response body is missing (an error answer?)"
    if "error" in response:
        return None, None, f"the request failed ({str(response['error'])[:80]})"
    if "messages" in request or "prompt" in request:
        prompt, answer, problem = _openai(request, response)
    elif "instances" in request or "inputs" in request:
        prompt, answer, problem = _kserve(request, response)
    else:
        return None, None, f"unknown request shape on {record.get('endpoint')!r} (keys: {', '.join(sorted(request))})"
    if problem:
        return None, None, problem
    if not prompt or not prompt.strip():
        return None, None, "the request has no prompt text"
    if answer is None:
        return None, None, "the response has no answer text"
    return prompt, answer, None

"""Run inside the predictor container's network namespace (nsenter --net): wait until
/v2/health/ready says 200, then ask every served model through the official openai client.
Prints one JSON line: {"ready_after_s", "models", "answers": {model: {"text", "tokens"}}, "chat"}.
Usage: python serve_client.py URL TIMEOUT_S PROMPT
"""

import json
import sys
import time

import httpx
import openai


def main(url: str, timeout: float, prompt: str) -> int:
    started = time.monotonic()
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            print(json.dumps({"error": f"not ready after {timeout:.0f} s"}))
            return 1
        time.sleep(0.5)
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0, timeout=120)
    models = sorted(m.id for m in client.models.list())
    answers = {}
    for model in models:
        done = client.completions.create(model=model, prompt=prompt, max_tokens=8)
        answers[model] = {"text": done.choices[0].text, "tokens": done.usage.completion_tokens, "model": done.model}
    chat = client.chat.completions.create(model=models[-1], max_tokens=6,
                                          messages=[{"role": "user", "content": prompt}])
    print(json.dumps({"ready_after_s": round(time.monotonic() - started, 1), "models": models, "answers": answers,
                      "chat": chat.choices[0].message.role}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))

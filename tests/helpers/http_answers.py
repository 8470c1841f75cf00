"""Answers of the small HTTP stand-ins tests start (``http.server`` handlers on 127.0.0.1)."""

import json
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler


def send(handler: BaseHTTPRequestHandler, status: int, payload: bytes,
         headers: Iterable[tuple[str, str]] = ()) -> None:
    """Write one complete answer: status, ``headers``, a Content-Length and ``payload``."""
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def send_json(handler: BaseHTTPRequestHandler, status: int, body) -> None:
    """Answer ``body`` serialised as JSON with its content type."""
    send(handler, status, json.dumps(body).encode(), [("Content-Type", "application/json")])

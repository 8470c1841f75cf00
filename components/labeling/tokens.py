"""Label Studio API tokens: personal access tokens and legacy tokens.

Label Studio 1.23 disables legacy tokens (``Authorization: Token <40 hex>``) for new
organisations and issues personal access tokens instead: a long-lived JWT *refresh*
token, exchanged at ``POST /api/token/refresh/`` for a *Bearer* access token that
lives five minutes. :class:`Credentials` holds either kind, keeps the access token
fresh, and never shows a token in its ``repr``, its logs or its errors.

The kind is read from the token's form unless ``labeling.token_kind`` names it: a JWT
(three base64url parts whose payload says ``token_type: refresh``) is a personal
access token; anything else is a legacy token.
"""

import base64
import binascii
import json
import logging
import re
import time
from typing import Any, Literal

import requests

from aicd.components.errors import LabelingError

log = logging.getLogger(__name__)

TokenKind = Literal["auto", "personal", "legacy"]
REFRESH_PATH = "/api/token/refresh/"
# Refresh this long before the access token expires (at most a fifth of its lifetime).
REFRESH_MARGIN = 30.0
CREATE_PAT = ("create a personal access token in Label Studio (user icon > Account & Settings > Personal Access "
              "Token; copy it, it is shown once) and put it into key `token` of the Secret named by "
              "`labeling.token_secret`")
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT (not verified: the server does that), or None if ``token`` is not one."""
    if not _JWT.match(token):
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def token_kind(token: str, declared: TokenKind = "auto") -> Literal["personal", "legacy"]:
    """The kind of ``token``, checked against ``labeling.token_kind``; a clear error on a mismatch."""
    claims = jwt_claims(token)
    if declared == "legacy":
        if claims is not None:
            raise LabelingError("`labeling.token_kind` is legacy, but the Secret holds a personal access token "
                                "(a JWT)", "set `labeling.token_kind` to personal or auto")
        return "legacy"
    if claims is None:
        if declared == "personal":
            raise LabelingError("`labeling.token_kind` is personal, but the token in the Secret is not a personal "
                                "access token (a JWT of three dot-separated parts; this looks like a legacy token)",
                                CREATE_PAT)
        return "legacy"
    if claims.get("token_type") == "access":
        raise LabelingError("the Secret holds a short-lived access token (it expires within minutes), not a "
                            "personal access token", CREATE_PAT)
    return "personal"


class Credentials:
    """One token and, for a personal access token, the current Bearer access token."""

    def __init__(self, token: str, kind: TokenKind = "auto"):
        self.kind = token_kind(token, kind)
        self._token = token
        self._access: str | None = None
        self._expires = 0.0
        self._margin = 0.0
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r}, refreshes={self.refreshes})"

    def stale(self) -> bool:
        """True when a personal token's access token is missing or about to expire."""
        return self.kind == "personal" and (self._access is None or time.time() >= self._expires - self._margin)

    def header(self) -> str:
        return f"Token {self._token}" if self.kind == "legacy" else f"Bearer {self._access}"

    def refresh(self, session: requests.Session, url: str, timeout: float) -> None:
        """Exchange the refresh token for a new access token (``POST /api/token/refresh/``)."""
        try:
            resp = session.post(f"{url}{REFRESH_PATH}", json={"refresh": self._token}, timeout=timeout)
        except requests.RequestException as err:
            raise LabelingError(f"Label Studio at {url} is unreachable ({type(err).__name__} on POST {REFRESH_PATH})",
                                "start Label Studio, or fix `labeling.url` to the address it listens on") from None
        if resp.status_code in (400, 401, 403):
            raise LabelingError(f"Label Studio at {url} refused the personal access token (HTTP {resp.status_code} "
                                f"on POST {REFRESH_PATH}: it was revoked, has expired, or belongs to another "
                                "Label Studio server)", CREATE_PAT)
        access = _access_from(resp, url)
        claims = jwt_claims(access) or {}
        now = time.time()
        expires = float(claims.get("exp", now + 300))
        lifetime = max(expires - float(claims.get("iat", now)), 0.0)
        self._access, self._expires, self._margin = access, expires, min(REFRESH_MARGIN, lifetime / 5)
        self.refreshes += 1
        log.info("Label Studio access token refreshed (valid %.0f s)", expires - now)


def _access_from(resp: requests.Response, url: str) -> str:
    """The ``access`` token of a refresh answer, or an error that shows no token."""
    problem = f"HTTP {resp.status_code}"
    if resp.ok:
        try:
            access = resp.json().get("access")
        except (ValueError, AttributeError):
            access = None
        if isinstance(access, str) and jwt_claims(access) is not None:
            return access
        problem = "an answer without an access token"
    raise LabelingError(f"Label Studio at {url} answered POST {REFRESH_PATH} with {problem}",
                        "check that `labeling.url` points at Label Studio 1.23 or later, which issues personal "
                        "access tokens, or use a legacy token (`labeling.token_kind: legacy`)")

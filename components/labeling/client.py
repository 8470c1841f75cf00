"""A small Label Studio client over its HTTP API (plain ``requests``, no SDK).

It covers what the labeling steps need: projects (get or create by title, labeling
configuration, delete), tasks (list, import), annotations (create, export). Every
failure becomes a :class:`~aicd.components.errors.LabelingError` that says what went
wrong and how to fix it: server unreachable, wrong token (401), a deleted project
(404, which Label Studio answers with an HTML page on import and export).

The API token is read by Secret name (``labeling.token_secret``), never from the spec: a
personal access token (the default of Label Studio 1.23) or a legacy token, see
:mod:`.tokens`. No token is ever logged or put into an error message.
"""

import json
import logging
import re
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from aicd.components.errors import AicdError, LabelingError
from aicd.components.labeling.tokens import CREATE_PAT, Credentials, TokenKind
from aicd.components.secrets import read_secret
from aicd.components.spec import LabelingSpec

log = logging.getLogger(__name__)

PAGE_SIZE = 100
IMPORT_CHUNK = 500
EXPORT_CHUNK = 200  # task ids per export request (``ids[]`` in the query string)
# Retried with backoff: 5xx of requests that are safe to repeat (never a POST: an import would duplicate).
RETRY_STATUS = (500, 502, 503, 504)
RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
# The key, in every task's data, that identifies the row a task was made from.
ID_KEY = "aicd_id"


def _detail(resp: requests.Response) -> str:
    """The server's explanation of an error: the JSON `detail`, or the text without HTML."""
    if "html" in resp.headers.get("content-type", ""):
        title = re.search(r"<title>(.*?)</title>", resp.text or "", re.S | re.I)
        return f"an HTML page titled {' '.join(title.group(1).split())!r}" if title else "an HTML page"
    try:
        body = resp.json()
    except ValueError:
        text = re.sub(r"<[^>]+>", " ", resp.text or "")
        text = " ".join(text.split())
        return (text[:160] + "...") if len(text) > 160 else text or "(empty body)"
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("error") or ""
        if body.get("validation_errors"):
            detail = f"{detail}: {json.dumps(body['validation_errors'], ensure_ascii=False)}"
        return str(detail) or json.dumps(body)[:200]
    return json.dumps(body)[:200]


class LabelStudio:
    """Talks to one Label Studio server with one API token (see :mod:`.tokens` for the two kinds).

    A personal access token is exchanged for a Bearer access token before the first call,
    again shortly before it expires, and once more when the server answers 401 anyway
    (a revoked access token, clock skew). Connection errors, and 5xx answers to requests
    that are safe to repeat, are retried with exponential backoff; 4xx answers never are,
    and neither is a POST the server may have applied (an import would duplicate tasks).
    """

    def __init__(self, url: str, token: str, timeout: float = 30.0, token_kind: TokenKind = "auto",
                 retries: int = 4, backoff: float = 0.5):
        if not url.startswith(("http://", "https://")):
            raise LabelingError(f"`labeling.url` must start with http:// or https://, got {url!r}",
                                "set it to the Label Studio address, e.g. http://127.0.0.1:8080")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.credentials = Credentials(token, token_kind)
        self._session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, other=0,
                      backoff_factor=backoff, status_forcelist=RETRY_STATUS, allowed_methods=RETRY_METHODS,
                      raise_on_status=False, respect_retry_after_header=True)
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, HTTPAdapter(max_retries=retry))

    @classmethod
    def from_spec(cls, labeling: LabelingSpec, timeout: float = 30.0) -> "LabelStudio":
        """A client for ``labeling.url`` with the token of Secret ``labeling.token_secret``."""
        try:
            token = read_secret(labeling.token_secret)
        except AicdError as err:
            raise LabelingError(f"the Label Studio API token (`labeling.token_secret` = "
                                f"{labeling.token_secret!r}) is not available: {err.message}", err.hint) from None
        return cls(labeling.url, token, timeout, labeling.token_kind)

    def close(self) -> None:
        self._session.close()

    # -- transport ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request with a current Authorization header; transport failures become LabelingErrors."""
        try:
            if self.credentials.stale():
                self.credentials.refresh(self._session, self.url, self.timeout)
            headers = {"Authorization": self.credentials.header()}
            return self._session.request(method, f"{self.url}{path}", headers=headers, timeout=self.timeout,
                                         **kwargs)
        except requests.ConnectionError as err:
            raise LabelingError(f"Label Studio at {self.url} is unreachable ({type(err).__name__} on {method} {path})",
                                "start Label Studio, or fix `labeling.url` to the address it listens on") from None
        except requests.Timeout:
            raise LabelingError(f"Label Studio at {self.url} did not answer {method} {path} within {self.timeout:g} s",
                                "check that the server is not overloaded, then retry") from None

    def _refused(self, resp: requests.Response, method: str, path: str) -> LabelingError:
        """The error for a 401/403: which token was refused and how to get one that works."""
        detail = _detail(resp)
        what = f"HTTP {resp.status_code} on {method} {path}: {detail}"
        if self.credentials.kind == "legacy" and "legacy token authentication has been disabled" in detail:
            return LabelingError(f"Label Studio at {self.url} refused the legacy API token ({what}): this "
                                 "organization accepts personal access tokens only", CREATE_PAT)
        if self.credentials.kind == "legacy":
            return LabelingError(f"Label Studio at {self.url} refused the API token ({what})",
                                 f"{CREATE_PAT} (or, where the organization enables legacy tokens, the "
                                 "token of Account & Settings > Legacy Token)")
        return LabelingError(f"Label Studio at {self.url} refused the personal access token ({what})",
                             "check that the token's user may do this, and that an administrator has enabled "
                             "personal access tokens (Organization > Settings > Access Token Settings); the Secret "
                             "is named by `labeling.token_secret`")

    def _call(self, method: str, path: str, what: str, ok_404: bool = False, **kwargs: Any) -> Any:
        """One API call; the parsed JSON body (None for 204 or an allowed 404)."""
        resp = self._send(method, path, **kwargs)
        if resp.status_code == 401 and self.credentials.kind == "personal":
            log.info("Label Studio answered 401 to %s %s: refreshing the access token once", method, path)
            self.credentials.refresh(self._session, self.url, self.timeout)
            resp = self._send(method, path, **kwargs)
        if resp.status_code in (401, 403):
            raise self._refused(resp, method, path)
        if resp.status_code == 404:
            if ok_404:
                return None
            raise LabelingError(f"{what} was not found in Label Studio at {self.url} "
                                f"(HTTP 404 on {method} {path}: {_detail(resp)})",
                                "the project was probably deleted; run export_for_labeling again to "
                                "re-create it, or check `labeling.project`")
        if resp.status_code >= 400:
            raise LabelingError(f"Label Studio rejected {method} {path} for {what} "
                                f"(HTTP {resp.status_code}: {_detail(resp)})",
                                "check the labeling configuration and the task data" if resp.status_code < 500
                                else "Label Studio failed on its side (retried); check its log, then run again")
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise LabelingError(f"Label Studio answered {method} {path} with non-JSON ({_detail(resp)})",
                                "check that `labeling.url` points at Label Studio itself, not a proxy page") from None

    # -- projects ----------------------------------------------------------------------------

    def version(self) -> str:
        return str(self._call("GET", "/api/version", "the server version").get("release", "?"))

    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project with exactly this title, or None."""
        page = 1
        while True:
            body = self._call("GET", "/api/projects/", "the project list",
                              params={"title": title, "page": page, "page_size": PAGE_SIZE})
            for project in body.get("results", []):
                if project.get("title") == title:
                    return project
            if not body.get("next"):
                return None
            page += 1

    def project(self, project_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/projects/{project_id}/", f"project {project_id}")

    def get_or_create_project(self, title: str, label_config: str, description: str = "",
                              settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Find the project by title (bringing its configuration and settings up to date) or create it."""
        if not 3 <= len(title) <= 50:
            raise LabelingError(f"`labeling.project` must be 3 to 50 characters (a Label Studio title), got {title!r}",
                                "choose a longer or shorter project title")
        wanted = {"label_config": label_config, **(settings or {})}
        project = self.find_project(title)
        if project is None:
            log.info("creating Label Studio project %r", title)
            return self._call("POST", "/api/projects/", f"new project {title!r}",
                              json={"title": title, "description": description, **wanted})
        changed = {k: v for k, v in wanted.items()
                   if (str(project.get(k, "")).strip() != str(v).strip())}
        if changed:
            log.info("updating %s of project %r (id %s)", ", ".join(changed), title, project["id"])
            project = self._call("PATCH", f"/api/projects/{project['id']}/", f"project {title!r}", json=changed)
        return project

    def delete_project(self, project_id: int) -> None:
        self._call("DELETE", f"/api/projects/{project_id}/", f"project {project_id}")

    # -- tasks and annotations ---------------------------------------------------------------

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of a project (id, data, annotation counts), page by page."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._call("GET", "/api/tasks/", f"the tasks of project {project_id}",
                              params={"project": project_id, "page": page, "page_size": PAGE_SIZE})
            batch = body.get("tasks", [])
            out.extend(batch)
            if not batch or len(out) >= int(body.get("total", 0)):
                return out
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> int:
        """Import tasks (each ``{"data": {...}}``); the number Label Studio created."""
        created = 0
        for start in range(0, len(tasks), IMPORT_CHUNK):
            chunk = tasks[start:start + IMPORT_CHUNK]
            body = self._call("POST", f"/api/projects/{project_id}/import", f"project {project_id}", json=chunk)
            created += int((body or {}).get("task_count", len(chunk)))
        return created

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of a project with its annotations (the JSON export), ``EXPORT_CHUNK`` tasks a request.

        Page by page, so a large project never needs one request longer than the timeout, and
        each page is authorised on its own (the access token may be refreshed between pages).
        Each task appears once: pages are disjoint sets of ids, and a task deleted meanwhile
        is simply absent.
        """
        self.project(project_id)  # a deleted project is a 404, not an empty export
        ids = sorted({int(t["id"]) for t in self.tasks(project_id)})
        out: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), EXPORT_CHUNK):
            chunk = ids[start:start + EXPORT_CHUNK]
            body = self._call("GET", f"/api/projects/{project_id}/export", f"project {project_id}",
                              params={"exportType": "JSON", "download_all_tasks": "true", "ids[]": chunk})
            if not isinstance(body, list):
                raise LabelingError(f"the export of project {project_id} is not a list of tasks",
                                    "check the Label Studio version (aicd is tested with 1.23)")
            out.update((int(task["id"]), task) for task in body if int(task["id"]) in chunk)
        log.info("exported %d tasks of project %s in %d requests", len(out), project_id,
                 -(-len(ids) // EXPORT_CHUNK))
        return [out[i] for i in ids if i in out]

    def annotate(self, task_id: int, result: list[dict[str, Any]], completed_by: int | None = None,
                 ground_truth: bool = False) -> dict[str, Any]:
        """Create an annotation on a task, as the user ``completed_by`` would."""
        payload: dict[str, Any] = {"result": result, "ground_truth": ground_truth}
        if completed_by is not None:
            payload["completed_by"] = completed_by
        return self._call("POST", f"/api/tasks/{task_id}/annotations/", f"task {task_id}", json=payload)

    def create_user(self, email: str, first_name: str = "") -> int:
        """Create an annotator account (admin token needed); its id for ``completed_by``."""
        for user in self._call("GET", "/api/users/", "the user list") or []:
            if user.get("email") == email:
                return int(user["id"])
        body = self._call("POST", "/api/users/", f"user {email}",
                          json={"email": email, "username": email.split("@")[0], "first_name": first_name})
        return int(body["id"])

"""A small Label Studio client over its HTTP API (plain ``requests``, no SDK).

It covers what the labeling steps need: projects (get or create by title, labeling
configuration, delete), tasks (list, import), annotations (create, export). Every
failure becomes a :class:`~aicd.components.errors.LabelingError` that says what went
wrong and how to fix it: server unreachable, wrong token (401), a deleted project
(404, which Label Studio answers with an HTML page on import and export).

The API token is read by Secret name (``labeling.token_secret``), never from the spec.
"""

import json
import logging
import re
from typing import Any

import requests

from aicd.components.errors import AicdError, LabelingError
from aicd.components.secrets import read_secret
from aicd.components.spec import LabelingSpec

log = logging.getLogger(__name__)

PAGE_SIZE = 100
IMPORT_CHUNK = 500
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
    """Talks to one Label Studio server with one API token (``Token`` header)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        if not url.startswith(("http://", "https://")):
            raise LabelingError(f"`labeling.url` must start with http:// or https://, got {url!r}",
                                "set it to the Label Studio address, e.g. http://127.0.0.1:8080")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Token {token}"

    @classmethod
    def from_spec(cls, labeling: LabelingSpec, timeout: float = 30.0) -> "LabelStudio":
        """A client for ``labeling.url`` with the token of Secret ``labeling.token_secret``."""
        try:
            token = read_secret(labeling.token_secret)
        except AicdError as err:
            raise LabelingError(f"the Label Studio API token (`labeling.token_secret` = "
                                f"{labeling.token_secret!r}) is not available: {err.message}", err.hint) from None
        return cls(labeling.url, token, timeout)

    def close(self) -> None:
        self._session.close()

    # -- transport ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, ok_404: bool = False, **kwargs: Any) -> Any:
        """One API call; the parsed JSON body (None for 204 or an allowed 404)."""
        url = f"{self.url}{path}"
        try:
            resp = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as err:
            raise LabelingError(f"Label Studio at {self.url} is unreachable ({type(err).__name__} on {method} {path})",
                                "start Label Studio, or fix `labeling.url` to the address it listens on") from None
        except requests.Timeout:
            raise LabelingError(f"Label Studio at {self.url} did not answer {method} {path} within {self.timeout:g} s",
                                "check that the server is not overloaded, then retry") from None
        if resp.status_code in (401, 403):
            raise LabelingError(f"Label Studio at {self.url} refused the API token (HTTP {resp.status_code} on "
                                f"{method} {path}: {_detail(resp)})",
                                "put a valid token (Account & Settings > Access Token, legacy tokens enabled) "
                                "into the Secret named by `labeling.token_secret`")
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
                                "check the labeling configuration and the task data")
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
        """Every task of a project with its annotations (the JSON export)."""
        body = self._call("GET", f"/api/projects/{project_id}/export", f"project {project_id}",
                          params={"exportType": "JSON", "download_all_tasks": "true"})
        if not isinstance(body, list):
            raise LabelingError(f"the export of project {project_id} is not a list of tasks",
                                "check the Label Studio version (aicd is tested with 1.23)")
        return body

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

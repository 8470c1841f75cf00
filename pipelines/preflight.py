"""Checks ``aicd run`` makes before any step runs: everything that can be checked cheaply.

A run that trains for ten minutes and then fails on a GitOps repository that does not
exist costs a new user ten minutes; these checks cost seconds. Each problem names the fix;
all of them are reported at once.
"""

import logging
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from aicd.components.errors import AicdError, IntegrityError, UriError
from aicd.components.spec import Spec

log = logging.getLogger(__name__)
# What each pipeline needs besides its spec: GitOps (it promotes), Label Studio (it labels), Prometheus.
NEEDS: dict[str, set[str]] = {
    "poc": {"labeling"},
    "scoping": {"labeling", "gitops"},
    "finetune": {"gitops"},
    "redesign": {"gitops"},
    "continuous": {"labeling", "gitops"},
    "rollout": {"gitops", "prometheus"},
}


class PreflightError(AicdError):
    """Something a run needs is missing or unreachable; found before any step ran."""


def default_manifests() -> Path:
    """The project's kustomize tree: ./manifests when run from the project, else the source tree's."""
    here = Path("manifests")
    if (here / "overlays").is_dir():
        return here.resolve()
    return Path(__file__).resolve().parents[1] / "manifests"


def is_local_repo(repo: str) -> bool:
    """A path, not a URL or an scp-like ``host:path``."""
    return "://" not in repo and ":" not in repo.split("/")[0] or repo.startswith("file://")


def check_gitops(spec: Spec, timeout: float = 10.0) -> list[str]:
    """The GitOps repository exists and has the branch (``git ls-remote``, no prompt)."""
    gitops = spec.delivery.gitops
    repo = gitops.repo
    if is_local_repo(repo):
        path = Path(repo.removeprefix("file://")).expanduser()
        if not path.exists():
            return [f"`delivery.gitops.repo` {repo} does not exist yet; create it, seeded with the project's "
                    f"manifests/ as the demo does: `aicd init-gitops {repo} --branch {gitops.branch}`"]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    try:
        done = subprocess.run(["git", "ls-remote", "--heads", repo, gitops.branch], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        return ["git is not installed; install it (apt-get install git)"]
    except subprocess.TimeoutExpired:
        return [f"`delivery.gitops.repo` {repo} did not answer in {timeout:g}s; check the URL and the network"]
    if done.returncode:
        return [f"`delivery.gitops.repo` {repo} is not a reachable git repository ({done.stderr.strip()[:200]}); "
                f"check the URL and credentials, or for a local path run `aicd init-gitops {repo}`"]
    if not done.stdout.strip():
        return [f"`delivery.gitops.repo` {repo} has no branch {gitops.branch!r}; set `delivery.gitops.branch` "
                "to an existing branch, or push one seeded with manifests/"]
    return []


def check_http(what: str, field: str, url: str, path: str, timeout: float = 5.0) -> list[str]:
    """``url`` answers HTTP at ``path`` (any status below 500: it is up, credentials aside)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout):  # noqa: S310 - the spec's own URL
            return []
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return []
        problem = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        problem = str(getattr(err, "reason", err))
    return [f"{what} at `{field}` {url} is not reachable ({problem}); start it (see docs/), or fix the URL"]


def check_labeling_token(spec: Spec) -> list[str]:
    """The Secret named by ``labeling.token_secret`` holds a token this Label Studio accepts (one
    authenticated call: a wrong or revoked token fails here, not at the first labeling step)."""
    from aicd.components.labeling.client import LabelStudio

    try:
        client = LabelStudio.from_spec(spec.labeling, timeout=10.0)
        try:
            client.find_project(spec.labeling.project)
        finally:
            client.close()
    except AicdError as err:
        return [f"Label Studio token: {err.message}" + (f"; {err.hint}" if err.hint else "")]
    return []


def check_uris(spec: Spec) -> list[str]:
    """Every candidate and data source URI resolves here (remote ones are only checked for their scheme:
    resolving them means downloading), and a local candidate folder has a card or a pin (its files are
    hashed when it loads)."""
    from aicd.components.cards import CARD
    from aicd.components.provenance import unvouched
    from aicd.components.uris import REMOTE_SCHEMES, _scheme, resolve_path

    problems = []
    fields = [(f"candidates.{c.name}.uri", c.uri, c.digest) for c in spec.candidates]
    fields += [(f"data.sources[{i}].uri", s.uri, "data") for i, s in enumerate(spec.data.sources)]
    for field, uri, pin in fields:
        try:
            if _scheme(uri) in REMOTE_SCHEMES:
                continue
            path = resolve_path(uri)
            if not pin and _scheme(uri) != "pkg://" and not (path / CARD).is_file():
                raise unvouched(uri, path)
        except (UriError, IntegrityError) as err:
            problems.append(f"`{field}`: {err.message}" + (f"; {err.hint}" if err.hint else ""))
    return problems


def preflight(spec: Spec, pipeline: str) -> None:
    """Raise PreflightError listing every problem that would fail ``pipeline`` later; log what was checked."""
    needs = NEEDS.get(pipeline, set())
    problems = check_uris(spec)
    if "gitops" in needs:
        problems += check_gitops(spec)
    if "labeling" in needs:
        if spec.labeling is None:
            problems.append(f"pipeline {pipeline} labels data, but the spec has no `labeling` section; add "
                            "`labeling: {project: <title>}`")
        else:
            reachable = check_http("Label Studio", "labeling.url", spec.labeling.url, "/health")
            problems += reachable or check_labeling_token(spec)
    if "prometheus" in needs:
        problems += check_http("Prometheus", "delivery.prometheus_url", spec.delivery.prometheus_url,
                               "/-/ready")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise PreflightError(f"pipeline {pipeline} cannot run with this spec ({len(problems)} problem(s), found "
                             f"before any step ran):\n{lines}")
    log.info("preflight of %s: URIs resolve%s", pipeline, "".join(f", {n} reachable" for n in sorted(needs)))

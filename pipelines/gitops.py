"""A local bare GitOps repository for the demo and local runs, seeded with manifests/.

In a cluster the GitOps repository exists already (the platform team's); locally
``ensure_gitops_repo`` creates a bare repository that promotion pushes to, with the
project's kustomize tree (``manifests/``) as its first commit, so the overlay the
promotion edits is there.
"""

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from aicd.components.errors import DeliveryError

log = logging.getLogger(__name__)
_ENV = {"GIT_AUTHOR_NAME": "aicd", "GIT_AUTHOR_EMAIL": "aicd@localhost", "GIT_COMMITTER_NAME": "aicd",
        "GIT_COMMITTER_EMAIL": "aicd@localhost", "GIT_TERMINAL_PROMPT": "0"}


def _git(args: list[str], cwd: Path | None = None) -> str:
    import os

    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **_ENV}, check=False)
    if result.returncode:
        raise DeliveryError(f"git {' '.join(args)} failed: {result.stderr.strip()}",
                            "check that git is installed and the GitOps folder is writable")
    return result.stdout.strip()


def ensure_gitops_repo(repo: str | Path, branch: str, manifests: str | Path) -> bool:
    """Create a bare repository at ``repo`` holding ``manifests/`` on ``branch``; False if it exists."""
    repo, manifests = Path(repo), Path(manifests)
    if (repo / "HEAD").is_file():
        return False
    if repo.exists() and any(repo.iterdir()):
        raise DeliveryError(f"{repo} exists but is not a bare git repository",
                            "remove it or point delivery.gitops.repo at a bare repository")
    if not (manifests / "overlays").is_dir():
        raise DeliveryError(f"{manifests} has no overlays/ to seed the GitOps repository with",
                            "run from the project root (the folder with manifests/)")
    repo.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aicd-gitops-seed-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(manifests, work / "manifests")
        _git(["init", "-q", "-b", branch, str(work)])
        _git(["add", "manifests"], cwd=work)
        _git(["commit", "-q", "-m", "Seed GitOps repository with the aicd manifests"], cwd=work)
        staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", dir=repo.parent))
        try:
            _git(["clone", "-q", "--bare", str(work), str(staging)])
            staging.rename(repo) if not repo.exists() else _replace_empty(staging, repo)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.debug("created GitOps repository %s (branch %s) from %s", repo, branch, manifests)
    return True


def _replace_empty(staging: Path, repo: Path) -> None:
    repo.rmdir()
    staging.rename(repo)


def head_commit(repo: str | Path, branch: str) -> tuple[str, str]:
    """(sha, subject) of the branch tip of a bare repository."""
    out = _git(["--git-dir", str(repo), "log", "-1", "--format=%H%x00%s", branch])
    sha, _, subject = out.partition("\x00")
    return sha, subject

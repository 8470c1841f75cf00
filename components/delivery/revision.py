"""The GitOps branch's commit, resolved without a clone, and the champion declared at a given commit.

A pipeline finds the champion to beat from Git, outside the pipeline's inputs. Resolving the
branch's commit first (``git ls-remote``: one round trip, no clone) and reading the champion at
exactly that commit makes the lookup a function of its parameters: a pipeline backend that caches
on inputs (kfp.local's content cache here, KFP's cache on a cluster) can reuse it while the branch
stays where it was, and looks again as soon as any commit lands on it (a promotion, a rollback).
"""

import logging
import re
import tempfile
from pathlib import Path

from aicd.components.delivery import isvc
from aicd.components.delivery.git import check_repo_url, credentials_env, git
from aicd.components.errors import DeliveryError
from aicd.components.spec import DeliverySpec, Spec

log = logging.getLogger(__name__)


def champion_revision(delivery: DeliverySpec) -> str:
    """The commit ``delivery.gitops.branch`` points at now in the GitOps repository."""
    gitops = delivery.gitops
    check_repo_url(gitops.repo)
    with credentials_env(gitops) as env:
        out = git(["ls-remote", "--heads", gitops.repo, f"refs/heads/{gitops.branch}"], None, env, "ls-remote")
    fields = out.split()
    if not fields:
        raise DeliveryError(f"the GitOps repository has no branch {gitops.branch!r}",
                            "create it, or set `delivery.gitops.branch`")
    return fields[0]


def read_champion_at(spec: Spec, revision: str) -> isvc.ModelRef | None:
    """The champion the overlay declares at commit ``revision`` of the GitOps branch, or None."""
    from aicd.components.delivery.gitops import _clone, _overlay_file

    if not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", revision):
        raise DeliveryError(f"the GitOps revision must be a full commit id (40 or 64 hex digits), got {revision!r}",
                            "pass resolve_champion_revision's output, or '' to read the branch's tip")
    delivery = spec.delivery
    check_repo_url(delivery.gitops.repo)
    with credentials_env(delivery.gitops) as env, tempfile.TemporaryDirectory(prefix="aicd-gitops-") as tmp:
        clone = Path(tmp) / "repo"
        _clone(delivery, env, clone)
        try:
            git(["checkout", "--quiet", "--detach", revision], clone, env, "checkout")
        except DeliveryError:
            raise DeliveryError(f"the GitOps branch {delivery.gitops.branch!r} does not hold commit {revision}",
                                "the branch was rewritten since the commit was resolved: run the pipeline again "
                                "(it resolves the branch anew)") from None
        path = _overlay_file(delivery, clone)
        doc = isvc.load(path.read_text(encoding="utf-8"), path.relative_to(clone).as_posix())
    isvc.ensure_mode(doc, delivery.serving.deployment_mode, path.name)
    return isvc.champion_ref(doc)

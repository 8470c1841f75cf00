"""The git CLI with credentials from a mounted Secret, and errors a person can act on.

A token (Secret key ``token``) reaches git through ``GIT_ASKPASS``: a small script
that reads it from the child's environment, so it never appears in a URL, an
argument list or a log. An SSH key (Secret key ``ssh-privatekey``, the key of
Kubernetes' ``kubernetes.io/ssh-auth`` type, optional ``known_hosts``) is written
to a private temporary file used through ``GIT_SSH_COMMAND``.
"""

import contextlib
import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from aicd.components.errors import AicdError, DeliveryError
from aicd.components.secrets import read_secret
from aicd.components.spec import GitOpsSpec

log = logging.getLogger(__name__)
_CREDS_IN_URL = re.compile(r"(\w+://)[^/@\s]+@")
_AUTH = ("authentication failed", "could not read username", "could not read password", "permission denied",
         "invalid username or password", "http basic: access denied", "the requested url returned error: 401",
         "the requested url returned error: 403", "terminal prompts disabled")
_UNREACHABLE = ("could not resolve host", "connection refused", "does not appear to be a git repository",
                "unable to access", "repository not found", "could not read from remote repository",
                "connection timed out", "no route to host", "not found", "does not exist")
ASKPASS = '#!/bin/sh\ncase "$1" in\n  Username*) printf "%s\\n" "${AICD_GIT_USERNAME:-x-access-token}" ;;\n' \
          '  *) printf "%s\\n" "$AICD_GIT_TOKEN" ;;\nesac\n'


class PushRejected(DeliveryError):
    """The remote moved on (non-fast-forward): fetch, rebase and try again."""


def redact(text: str) -> str:
    """Remove any user:password@ from URLs in a message."""
    return _CREDS_IN_URL.sub(r"\1***@", text)


def check_repo_url(url: str) -> None:
    if _CREDS_IN_URL.search(url):
        raise DeliveryError(f"`delivery.gitops.repo` holds credentials ({redact(url)})",
                            "remove them from the URL and name a Secret in `delivery.gitops.credentials_secret`")


def _is_ssh(url: str) -> bool:
    return url.startswith("ssh://") or bool(re.match(r"^[\w.-]+@[\w.-]+:", url))


def _secret(name: str, key: str) -> str:
    try:
        return read_secret(name, key)
    except AicdError as err:
        raise DeliveryError(f"`delivery.gitops.credentials_secret` {name!r}: {err.message}", err.hint) from None


# The only variables git children inherit: never AICD_SECRET_* or other credentials of this process.
_PASSED = ("PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
           "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
           "GIT_CONFIG_GLOBAL", "GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE")
_LOOPBACK = re.compile(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|$)", re.I)


def base_env() -> dict[str, str]:
    """The environment git needs, without the rest of this process's (tokens of other Secrets)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED}
    return {**env, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def check_token_transport(url: str) -> None:
    """A token is sent only over https (or plain http to this machine's loopback)."""
    if url.lower().startswith("http://") and not _LOOPBACK.match(url):
        raise DeliveryError(f"`delivery.gitops.repo` {redact(url)} is plain http: the token would travel unencrypted",
                            "use the https:// URL of the repository (plain http is allowed only to 127.0.0.1)")


@contextlib.contextmanager
def credentials_env(gitops: GitOpsSpec) -> Iterator[dict[str, str]]:
    """Environment for git children: no prompts, and the Secret's token or SSH key if one is named."""
    env = base_env()
    with tempfile.TemporaryDirectory(prefix="aicd-git-") as tmp:
        if gitops.credentials_secret:
            if _is_ssh(gitops.repo):
                key = Path(tmp) / "id"
                key.write_text(_secret(gitops.credentials_secret, "ssh-privatekey").rstrip("\n") + "\n")
                key.chmod(0o600)
                ssh = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
                try:
                    hosts = Path(tmp) / "known_hosts"
                    hosts.write_text(read_secret(gitops.credentials_secret, "known_hosts") + "\n")
                    ssh += ["-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes"]
                except AicdError:
                    if not gitops.ssh_accept_new_host_key:
                        raise DeliveryError(
                            f"Secret {gitops.credentials_secret!r} has no `known_hosts` key: the GitOps host's "
                            "SSH key cannot be checked", "add the host's line (ssh-keyscan HOST) as key known_hosts "
                            "of the Secret, or set `delivery.gitops.ssh_accept_new_host_key: true`") from None
                    log.warning("Secret %r has no known_hosts key: accepting the host key on first use",
                                gitops.credentials_secret)
                    ssh += ["-o", "StrictHostKeyChecking=accept-new"]
                env["GIT_SSH_COMMAND"] = shlex.join(ssh)
            else:
                check_token_transport(gitops.repo)
                askpass = Path(tmp) / "askpass"
                askpass.write_text(ASKPASS)
                askpass.chmod(0o700)
                env["GIT_ASKPASS"] = str(askpass)
                env["AICD_GIT_TOKEN"] = _secret(gitops.credentials_secret, "token")
        yield env


def git(args: list[str], cwd: str | Path | None, env: dict[str, str], what: str) -> str:
    """Run one git command; classify failures into clear DeliveryErrors (secrets redacted)."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return proc.stdout
    out = redact((proc.stderr or proc.stdout).strip())
    low = out.lower()
    moved = "[rejected]" in low and ("non-fast-forward" in low or "fetch first" in low)
    if moved or "cannot lock ref" in low:  # the second: another push updated the branch at the same moment
        raise PushRejected(f"{what}: the remote branch moved on", "fetch, rebase and retry")
    if "[remote rejected]" in low or "hook declined" in low or "protected branch" in low:
        raise DeliveryError(f"{what}: the GitOps remote rejected the push: {out}",
                            "check the repository's branch protection and hooks, or use "
                            "`delivery.gitops.mode: pull-request`")
    if any(s in low for s in _AUTH):
        raise DeliveryError(f"{what}: authentication to the GitOps repository failed: {out}",
                            "check the token or SSH key in the Secret named by `delivery.gitops.credentials_secret`")
    if any(s in low for s in _UNREACHABLE):
        raise DeliveryError(f"{what}: the GitOps repository is unreachable: {out}",
                            "check `delivery.gitops.repo` and the network path to it")
    raise DeliveryError(f"{what}: git {args[0]} failed: {out}", "see the git message above")

"""Read secrets by Kubernetes Secret name, never from the spec.

In a cluster the platform profile mounts Secret ``NAME`` at
``$AICD_SECRETS_DIR/NAME/`` (default ``/var/run/secrets/aicd``), one file per key.
Locally the variable ``AICD_SECRET_<NAME>_<KEY>`` (upper case, ``-`` as ``_``)
stands in for it.
"""

import os
import re
from pathlib import Path

from aicd.components.errors import AicdError


def secret_env_name(name: str, key: str) -> str:
    return f"AICD_SECRET_{name}_{key}".upper().replace("-", "_").replace(".", "_")


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")  # DNS-1123 subdomain
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def check_secret_ref(name: str, key: str) -> None:
    """A Secret name must be a DNS-1123 subdomain and a key Kubernetes' key charset (no ``/``, not ``..``),
    so ``$AICD_SECRETS_DIR/NAME/KEY`` can never leave the secrets folder."""
    if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
        raise AicdError(f"secret name {name!r} is not a Kubernetes Secret name",
                        "use lower-case letters, digits, '-' and '.', e.g. gitops-token")
    if not isinstance(key, str) or len(key) > 253 or not _KEY.match(key) or key in (".", ".."):
        raise AicdError(f"secret key {key!r} of {name!r} is not a Kubernetes Secret key",
                        "use letters, digits, '-', '_' and '.', e.g. token")


def secrets_root() -> Path:
    """Where the platform mounts Secrets, one folder each: ``$AICD_SECRETS_DIR``, default /var/run/secrets/aicd."""
    return Path(os.environ.get("AICD_SECRETS_DIR", "/var/run/secrets/aicd"))


def read_secret(name: str, key: str = "token") -> str:
    """The value of key ``key`` of Secret ``name``; a clear error when it is absent."""
    check_secret_ref(name, key)
    env = secret_env_name(name, key)
    if os.environ.get(env):
        return os.environ[env].strip()
    root = secrets_root()
    path = root / name / key
    if root.resolve() not in path.resolve().parents:  # a link that points out (Kubernetes' own ..data links stay in)
        raise AicdError(f"secret {name!r} (key {key!r}) leaves {root}", "mount the Secret without links out of it")
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    raise AicdError(f"secret {name!r} (key {key!r}) is not available: neither {path} nor ${env} is set",
                    f"mount Secret {name!r} through the platform profile, or export {env} locally")

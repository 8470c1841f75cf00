"""Read secrets by Kubernetes Secret name, never from the spec.

In a cluster the platform profile mounts Secret ``NAME`` at
``$AICD_SECRETS_DIR/NAME/`` (default ``/var/run/secrets/aicd``), one file per key.
Locally the variable ``AICD_SECRET_<NAME>_<KEY>`` (upper case, ``-`` as ``_``)
stands in for it.
"""

import os
from pathlib import Path

from aicd.components.errors import AicdError


def secret_env_name(name: str, key: str) -> str:
    return f"AICD_SECRET_{name}_{key}".upper().replace("-", "_").replace(".", "_")


def read_secret(name: str, key: str = "token") -> str:
    """The value of key ``key`` of Secret ``name``; a clear error when it is absent."""
    env = secret_env_name(name, key)
    if os.environ.get(env):
        return os.environ[env].strip()
    root = Path(os.environ.get("AICD_SECRETS_DIR", "/var/run/secrets/aicd"))
    path = root / name / key
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    raise AicdError(f"secret {name!r} (key {key!r}) is not available: neither {path} nor ${env} is set",
                    f"mount Secret {name!r} through the platform profile, or export {env} locally")

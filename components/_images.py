"""The only place image references live: one image per runtime role.

The registry and tag are read when pipelines compile, from ``AICD_IMAGE_REGISTRY``
and ``AICD_IMAGE_TAG`` (set by ``aicd compile --registry/--tag``), so a platform
team points pipelines at its own registry without editing code. ``make images
REGISTRY=R TAG=T`` (tools/podman/images.sh) builds exactly these names.

``AICD_IMAGE_DIGESTS`` names a JSON file ``{"base": "sha256:...", ...}`` (written by
``make images push``): a role listed there is referenced by tag and digest
(``R/aicd-base:T@sha256:...``), so compiled pipelines run exactly the pushed images.
"""

import json
import os
import re

from aicd.components.errors import ImageError

DEFAULT_REGISTRY = "ghcr.io/aicd"
DEFAULT_TAG = "0.1.0"
ROLES = ("base", "train", "serve")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _digest(role: str) -> str | None:
    path = os.environ.get("AICD_IMAGE_DIGESTS")
    if not path:
        return None
    try:
        digests = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as err:
        raise ImageError(f"AICD_IMAGE_DIGESTS={path}: cannot read a JSON object of role digests ({err})",
                         "write it with `make images push`, or unset AICD_IMAGE_DIGESTS") from None
    digest = digests.get(role) if isinstance(digests, dict) else None
    if digest is not None and not _DIGEST.match(str(digest)):
        raise ImageError(f"AICD_IMAGE_DIGESTS={path}: {role!r} is {digest!r}, not sha256:<64 hex digits>",
                         "write the file with `make images push`")
    return digest


def image(role: str) -> str:
    """The image reference of a role: base (CPU steps), train (CUDA) or serve."""
    if role not in ROLES:
        raise ValueError(f"unknown image role {role!r}; use one of {', '.join(ROLES)}")
    registry = os.environ.get("AICD_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    tag = os.environ.get("AICD_IMAGE_TAG", DEFAULT_TAG)
    digest = _digest(role)
    return f"{registry}/aicd-{role}:{tag}" + (f"@{digest}" if digest else "")


# Read at import time by steps.py (KFP fixes base_image when a component is defined);
# `aicd compile` sets the environment before it imports the steps.
BASE_IMAGE = image("base")
TRAIN_IMAGE = image("train")
SERVE_IMAGE = image("serve")

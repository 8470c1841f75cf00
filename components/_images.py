"""The only place image references live: one image per runtime role.

The registry and tag are read when pipelines compile, from ``AICD_IMAGE_REGISTRY``
and ``AICD_IMAGE_TAG`` (set by ``aicd compile --registry/--tag``), so a platform
team points pipelines at its own registry without editing code.
"""

import os

DEFAULT_REGISTRY = "ghcr.io/aicd"
DEFAULT_TAG = "0.1.0"
ROLES = ("base", "train", "serve")


def image(role: str) -> str:
    """The image reference of a role: base (CPU steps), train (CUDA) or serve."""
    if role not in ROLES:
        raise ValueError(f"unknown image role {role!r}; use one of {', '.join(ROLES)}")
    registry = os.environ.get("AICD_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    tag = os.environ.get("AICD_IMAGE_TAG", DEFAULT_TAG)
    return f"{registry}/aicd-{role}:{tag}"


# Read at import time by steps.py (KFP fixes base_image when a component is defined);
# `aicd compile` sets the environment before it imports the steps.
BASE_IMAGE = image("base")
TRAIN_IMAGE = image("train")
SERVE_IMAGE = image("serve")

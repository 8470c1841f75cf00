"""The role images, built by ``make images`` (tools/podman/images.sh), and podman to run them.

The session fixture calls the same script as ``make images`` (a Makefile prerequisite of
``make test`` too): on a warm cache it finds every layer built and takes seconds. Without
podman the tests skip, and fail when the ``CI`` environment variable is set.
"""

import pytest
from podman_tools import build_images


@pytest.fixture(scope="session")
def role_images() -> dict[str, str]:
    """Role -> image name, every role image built (cached) under the default registry and tag."""
    return build_images()
